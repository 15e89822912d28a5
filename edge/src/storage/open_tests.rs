//! Opening a data dir with a commit journal: the lock, the replay after a crash, turning the
//! journal off, a journal left without its database.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, OnDamaged};
use crate::storage::{Op, SessionRecord, Store};

fn cfg(dir: &Path, journal_bytes: u64) -> Config {
    let mut c = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    c.storage.journal_bytes = journal_bytes;
    c
}

fn put_session(store: &Store, client: &str) {
    let rec = SessionRecord {
        protocol: 5,
        expiry_secs: 3600,
        subscriptions: vec![],
        disconnected_ms: Some(1),
        will: None,
    };
    smol::block_on(async {
        let ops = vec![Op::PutSession(Arc::from(client), Box::new(rec))];
        let t = store.push(store.reserve().await, ops).expect("a ticket");
        store.wait(t).await.expect("committed");
    });
}

fn session_ids(dir: &Path, journal_bytes: u64) -> Vec<String> {
    let (_store, loaded) = Store::open(&cfg(dir, journal_bytes)).expect("opens");
    let mut ids: Vec<String> = loaded
        .sessions
        .iter()
        .map(|s| s.client_id.clone())
        .collect();
    ids.sort();
    ids
}

/// What a power cut can leave: the database file as it was when the store had just opened
/// (writes since then lost), and the journal as it was after a commit.
fn power_cut_after_one_commit(crashed: &Path) {
    let live = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&cfg(live.path(), 1 << 20)).unwrap();
    let db_at_open = std::fs::read(live.path().join("edge.redb")).unwrap();
    put_session(&store, "committed");
    let journal = std::fs::read(live.path().join("edge.redb-journal")).unwrap();
    std::fs::write(crashed.join("edge.redb"), db_at_open).unwrap();
    std::fs::write(crashed.join("edge.redb-journal"), journal).unwrap();
    drop(store);
}

/// A power cut after one commit, then the database file overwritten with garbage: returns the
/// paths of the file and its journal, and the journal's bytes.
fn garbage_over_a_journaled_crash(crashed: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    power_cut_after_one_commit(crashed);
    let (db, journal) = (crashed.join("edge.redb"), crashed.join("edge.redb-journal"));
    std::fs::write(&db, vec![0x5a; 256 * 1024]).unwrap();
    let journal_before = std::fs::read(&journal).unwrap();
    (db, journal, journal_before)
}

#[test]
fn a_commit_lost_from_the_database_file_comes_back_from_the_journal() {
    let crashed = tempfile::tempdir().unwrap();
    power_cut_after_one_commit(crashed.path());
    assert_eq!(session_ids(crashed.path(), 1 << 20), ["committed"]);
    // And again after that clean stop: the file holds it on its own now.
    std::fs::remove_file(crashed.path().join("edge.redb-journal")).unwrap();
    assert_eq!(session_ids(crashed.path(), 1 << 20), ["committed"]);
}

#[test]
fn turning_the_journal_off_replays_what_it_holds_then_removes_it() {
    let crashed = tempfile::tempdir().unwrap();
    power_cut_after_one_commit(crashed.path());
    assert_eq!(session_ids(crashed.path(), 0), ["committed"]);
    assert!(!crashed.path().join("edge.redb-journal").exists());
}

#[test]
fn a_journal_without_its_database_is_removed_not_replayed() {
    let crashed = tempfile::tempdir().unwrap();
    power_cut_after_one_commit(crashed.path());
    std::fs::remove_file(crashed.path().join("edge.redb")).unwrap();
    // Replayed onto an empty file, its records would make a broken database.
    assert!(session_ids(crashed.path(), 1 << 20).is_empty());
}

#[test]
fn a_second_store_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_first, _) = Store::open(&cfg(dir.path(), 1 << 20)).unwrap();
    let err = Store::open(&cfg(dir.path(), 1 << 20))
        .err()
        .expect("the second open fails");
    assert!(err.to_string().contains("another broker"), "{err}");
}

#[test]
fn a_journal_is_never_replayed_onto_a_file_that_is_not_a_database() {
    let crashed = tempfile::tempdir().unwrap();
    let (db, journal, journal_before) = garbage_over_a_journaled_crash(crashed.path());
    let mut c = cfg(crashed.path(), 1 << 20);
    c.storage.on_damaged = OnDamaged::Stop;
    let err = Store::open(&c).err().expect("a garbage file is refused");
    assert!(err.to_string().contains("cannot open database"), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        vec![0x5a; 256 * 1024],
        "the file is untouched"
    );
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        journal_before,
        "so is the journal"
    );
}

#[test]
fn a_garbage_database_is_set_aside_with_its_journal_unreplayed() {
    let crashed = tempfile::tempdir().unwrap();
    let (_, _, journal_before) = garbage_over_a_journaled_crash(crashed.path());
    let (store, loaded) = Store::open(&cfg(crashed.path(), 1 << 20)).expect("starts empty");
    assert!(loaded.sessions.is_empty());
    let folder = store.damaged_set_aside().expect("set aside");
    assert_eq!(
        std::fs::read(folder.join("edge.redb")).unwrap(),
        vec![0x5a; 256 * 1024]
    );
    assert_eq!(
        std::fs::read(folder.join("edge.redb-journal")).unwrap(),
        journal_before,
        "the journal goes with it, as it was"
    );
}
