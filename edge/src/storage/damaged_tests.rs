//! A damaged database at start: what counts as damage, the set-aside folder and its bound, and
//! `Store::open` on zeroed, garbled and truncated files under both `storage.on_damaged` values.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::config::{Config, OnDamaged};
use crate::storage::{Op, SessionRecord, Store};

fn cfg(dir: &Path, on_damaged: OnDamaged) -> Config {
    let mut c = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    c.storage.on_damaged = on_damaged;
    c
}

fn folders(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && p.file_name().unwrap().to_string_lossy().starts_with(PREFIX))
        .collect();
    v.sort();
    v
}

/// A persistent session's record (v5, an hour's expiry, offline).
fn stored_session() -> SessionRecord {
    SessionRecord {
        protocol: 5,
        expiry_secs: 3600,
        subscriptions: vec![],
        disconnected_ms: Some(1),
        will: None,
    }
}

/// A data dir holding one stored session whose `edge.redb` a power cut then zeroed; returns
/// the zeroed file's path and length.
fn zeroed_data_dir(dir: &Path) -> (PathBuf, usize) {
    data_dir_with_a_session(dir);
    let db = dir.join("edge.redb");
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    std::fs::write(&db, vec![0u8; len]).unwrap();
    (db, len)
}

/// A data dir as a clean stop leaves it, holding one stored session.
fn data_dir_with_a_session(dir: &Path) {
    let (store, _) = Store::open(&cfg(dir, OnDamaged::Stop)).unwrap();
    let rec = stored_session();
    smol::block_on(async {
        let ops = vec![Op::PutSession(Arc::from("kept"), Box::new(rec))];
        let t = store.push(store.reserve().await, ops).expect("a ticket");
        store.wait(t).await.expect("committed");
    });
    drop(store);
}

#[test]
fn only_damage_to_the_files_content_counts() {
    use redb::{DatabaseError, StorageError};
    let open = |source| Error::OpenDatabase {
        path: "edge.redb".into(),
        source,
    };
    let io = |kind| std::io::Error::new(kind, "x");
    let damaged = [
        open(DatabaseError::Storage(StorageError::Corrupted(
            "bad page".into(),
        ))),
        open(DatabaseError::Storage(StorageError::Io(io(
            std::io::ErrorKind::InvalidData,
        )))),
        Error::Storage(redb::Error::Corrupted("bad page".into())),
    ];
    for e in &damaged {
        assert!(damage_of(e).is_some(), "{e}");
    }
    let not_damaged = [
        open(DatabaseError::DatabaseAlreadyOpen),
        open(DatabaseError::UpgradeRequired(1)),
        open(DatabaseError::Storage(StorageError::Io(io(
            std::io::ErrorKind::PermissionDenied,
        )))),
        Error::Io {
            what: "database".into(),
            source: io(std::io::ErrorKind::Other),
        },
        Error::CommitFailed,
    ];
    for e in &not_damaged {
        assert!(damage_of(e).is_none(), "{e}");
    }
}

#[test]
fn a_panic_while_opening_is_a_failure_not_a_crash() {
    let r: Result<(), Failure> = catching(|| panic!("entered unreachable code"));
    let f = r.expect_err("caught");
    assert!(f.damage().unwrap().contains("entered unreachable code"));
    let e = f.into_error(Path::new("/d/edge.redb"));
    assert!(e.to_string().contains("/d/edge.redb"), "{e}");
}

#[test]
fn setting_aside_moves_the_database_and_its_companions_into_one_folder() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.redb");
    let journal = dir.path().join("edge.redb-journal");
    std::fs::write(&db, b"db").unwrap();
    std::fs::write(&journal, b"journal").unwrap();
    // No op log: a missing companion is no error.
    let oplog = dir.path().join("edge.redb-oplog");
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_795_600);
    let folder = set_aside(&db, &[journal.clone(), oplog], at).unwrap();
    assert_eq!(folder.file_name().unwrap(), "damaged-20251203T210000Z");
    assert!(!db.exists() && !journal.exists());
    assert_eq!(std::fs::read(folder.join("edge.redb")).unwrap(), b"db");
    assert_eq!(
        std::fs::read(folder.join("edge.redb-journal")).unwrap(),
        b"journal"
    );
    // A second one in the same second gets a folder of its own.
    std::fs::write(&db, b"db2").unwrap();
    let second = set_aside(&db, &[], at).unwrap();
    assert_eq!(second.file_name().unwrap(), "damaged-20251203T210000Z-1");
    assert_eq!(std::fs::read(second.join("edge.redb")).unwrap(), b"db2");
}

#[test]
fn only_the_newest_set_aside_folders_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.redb");
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_795_600);
    for i in 0..(KEEP as u64 + 2) {
        std::fs::write(&db, i.to_string()).unwrap();
        set_aside(&db, &[], start + Duration::from_secs(i)).unwrap();
    }
    let kept = folders(dir.path());
    assert_eq!(kept.len(), KEEP);
    // The two oldest went; the newest holds the last file.
    assert_eq!(kept[0].file_name().unwrap(), "damaged-20251203T210002Z");
    assert_eq!(
        std::fs::read(kept[KEEP - 1].join("edge.redb")).unwrap(),
        (KEEP + 1).to_string().as_bytes()
    );
    // Within one second, by counter: damaged-<t> before damaged-<t>-1 ... -10.
    let mut names: Vec<PathBuf> = ["damaged-x-10", "damaged-x-2", "damaged-x"]
        .iter()
        .map(PathBuf::from)
        .collect();
    names.sort_by_key(|p| sort_key(p));
    assert_eq!(
        names,
        ["damaged-x", "damaged-x-2", "damaged-x-10"].map(PathBuf::from)
    );
}

#[test]
fn a_zeroed_database_is_set_aside_and_the_store_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (_, len) = zeroed_data_dir(dir.path());
    let (store, loaded) = Store::open(&cfg(dir.path(), OnDamaged::SetAside)).expect("starts");
    assert!(loaded.sessions.is_empty());
    let folder = store.damaged_set_aside().expect("set aside").to_path_buf();
    assert_eq!(folders(dir.path()), std::slice::from_ref(&folder));
    assert_eq!(
        std::fs::read(folder.join("edge.redb")).unwrap(),
        vec![0u8; len]
    );
    assert!(folder.join("edge.redb-journal").is_file());
    assert!(folder.join("edge.redb-oplog").is_file());
    // The new database is a working one: it is not set aside again.
    drop(store);
    let (store, _) = Store::open(&cfg(dir.path(), OnDamaged::SetAside)).unwrap();
    assert!(store.damaged_set_aside().is_none());
    assert_eq!(folders(dir.path()).len(), 1);
}

#[test]
fn garbled_pages_that_make_redb_panic_are_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    data_dir_with_a_session(dir.path());
    let db = dir.path().join("edge.redb");
    let mut bytes = std::fs::read(&db).unwrap();
    // Everything after redb's header: its region tracker and every tree page.
    for b in bytes.iter_mut().skip(4096) {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let (store, loaded) = Store::open(&cfg(dir.path(), OnDamaged::SetAside)).expect("starts");
    assert!(loaded.sessions.is_empty());
    let folder = store.damaged_set_aside().expect("set aside");
    assert_eq!(std::fs::read(folder.join("edge.redb")).unwrap(), bytes);
}

#[test]
fn a_truncated_database_is_set_aside_whole() {
    let dir = tempfile::tempdir().unwrap();
    data_dir_with_a_session(dir.path());
    let db = dir.path().join("edge.redb");
    let bytes = std::fs::read(&db).unwrap();
    std::fs::write(&db, &bytes[..bytes.len() / 2]).unwrap();
    let (store, loaded) = Store::open(&cfg(dir.path(), OnDamaged::SetAside)).expect("starts");
    assert!(loaded.sessions.is_empty());
    let folder = store.damaged_set_aside().expect("set aside");
    // The copy a failed repair makes is put back before the file is moved.
    assert_eq!(
        std::fs::read(folder.join("edge.redb")).unwrap(),
        &bytes[..bytes.len() / 2]
    );
    assert!(!folder.join("edge.redb.before-repair").exists());
    assert!(!dir.path().join("edge.redb.before-repair").exists());
}

#[test]
fn with_stop_a_damaged_database_is_an_error_and_left_as_found() {
    let dir = tempfile::tempdir().unwrap();
    let (db, len) = zeroed_data_dir(dir.path());
    let err = Store::open(&cfg(dir.path(), OnDamaged::Stop))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("edge.redb"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), vec![0u8; len]);
    assert!(folders(dir.path()).is_empty());
}

#[test]
fn a_database_held_by_another_store_is_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    data_dir_with_a_session(dir.path());
    let (_first, _) = Store::open(&cfg(dir.path(), OnDamaged::SetAside)).unwrap();
    let err = Store::open(&cfg(dir.path(), OnDamaged::SetAside))
        .err()
        .expect("the second open fails");
    assert!(err.to_string().contains("another broker"), "{err}");
    assert!(folders(dir.path()).is_empty(), "nothing set aside");
}

#[test]
fn an_intact_database_is_never_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    data_dir_with_a_session(dir.path());
    let (store, loaded) = Store::open(&cfg(dir.path(), OnDamaged::SetAside)).unwrap();
    assert_eq!(loaded.sessions.len(), 1);
    assert!(store.damaged_set_aside().is_none());
    assert!(folders(dir.path()).is_empty());
}

#[test]
fn a_read_that_panics_is_a_damage_error_that_leaves_the_check_marker_and_is_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.redb");
    // Other errors leave no marker and signal nothing.
    let found = DamageFound::default();
    let r: Result<(), Error> = reading(&db, &found, "a test read", || Err(Error::WriterGone));
    assert!(r.is_err());
    assert!(!check_marker(&db).exists());
    assert!(!found.is_set());
    let waiting = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let woken = async {
                found.wait().await;
                true
            };
            let timeout = async {
                smol::Timer::after(Duration::from_secs(10)).await;
                false
            };
            smol::block_on(smol::future::or(woken, timeout))
        });
        let r: Result<(), Error> = reading(&db, &found, "a test read", || panic!("bad page"));
        let err = r.expect_err("an error, not a panic");
        assert!(matches!(err, Error::DamagedDatabase { .. }), "{err}");
        waiter.join()
    });
    assert!(waiting.unwrap(), "the wait for damage ended");
    assert!(check_marker(&db).is_file());
    assert!(found.is_set());
}

#[test]
fn the_check_marker_makes_the_next_start_check_an_intact_database_and_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    data_dir_with_a_session(dir.path());
    let db = dir.path().join("edge.redb");
    std::fs::write(check_marker(&db), b"").unwrap();
    let (store, loaded) = Store::open(&cfg(dir.path(), OnDamaged::SetAside)).unwrap();
    assert_eq!(loaded.sessions.len(), 1);
    assert!(store.damaged_set_aside().is_none());
    assert!(!check_marker(&db).exists(), "the marker goes once checked");
}

#[test]
fn damage_a_queue_read_finds_is_checked_at_the_next_start_and_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let client: Arc<str> = "reader".into();
    let n = 2000u64;
    {
        let (store, _) = Store::open(&cfg(dir.path(), OnDamaged::SetAside)).unwrap();
        let rec = stored_session();
        let mut ops = vec![Op::PutSession(client.clone(), Box::new(rec))];
        for seq in 1..=n {
            let msg = crate::message::Message::test(
                format!("queued/{seq:06}").as_str(),
                bytes::Bytes::from_static(b"x"),
                1,
                "p",
            );
            ops.push(Op::Enqueue {
                client: client.clone(),
                seq,
                msg: Arc::new(msg),
                qos: 1,
                retain: false,
                sub_ids: vec![],
            });
        }
        smol::block_on(async {
            let t = store.push(store.reserve().await, ops).expect("a ticket");
            store.wait(t).await.expect("committed");
        });
    }
    // Garble the page holding a message in the middle of the queue. A release build's open
    // reads only the trees' tops and start-up only the queue's ends, so the broker opens and
    // the damage shows when a client drains; a debug build of redb walks every allocated page
    // at open, so there the start finds it at once.
    let db = dir.path().join("edge.redb");
    let mut bytes = std::fs::read(&db).unwrap();
    let needle = b"queued/001000";
    let at = bytes
        .windows(needle.len())
        .rposition(|w| w == needle)
        .expect("the message is in the file");
    let page = at / 4096 * 4096;
    bytes[page..page + 4096].fill(0xA5);
    std::fs::write(&db, &bytes).unwrap();
    let (store, loaded) = Store::open(&cfg(dir.path(), OnDamaged::SetAside)).expect("opens");
    if cfg!(debug_assertions) {
        assert!(loaded.sessions.is_empty());
        let folder = store.damaged_set_aside().expect("set aside at open");
        let copy = std::fs::read(folder.join("edge.redb")).unwrap();
        assert!(
            copy[page..page + 4096].iter().all(|b| *b == 0xA5),
            "the damaged page is kept"
        );
        return;
    }
    assert_eq!(loaded.sessions.len(), 1);
    assert!(store.damaged_set_aside().is_none());
    let err = store
        .read_queue(&client, 1, n + 1, n as usize)
        .expect_err("the garbled page");
    assert!(
        damage_of(&err).is_some() || matches!(err, Error::DamagedDatabase { .. }),
        "{err}"
    );
    assert!(check_marker(&db).is_file());
    drop(store);
    let (store, loaded) = Store::open(&cfg(dir.path(), OnDamaged::SetAside)).expect("starts");
    assert!(loaded.sessions.is_empty());
    let folder = store.damaged_set_aside().expect("set aside");
    let copy = std::fs::read(folder.join("edge.redb")).unwrap();
    assert!(
        copy[page..page + 4096].iter().all(|b| *b == 0xA5),
        "the damaged page is kept"
    );
    assert!(
        folder.join("edge.redb-check").is_file(),
        "the marker goes with it"
    );
    assert!(!check_marker(&db).exists());
}

/// A commit hook that panics in the writer thread, as redb does on a damaged page.
struct PanickingHook;

impl crate::storage::CommitHook for PanickingHook {
    fn capture(
        &self,
        _txn: &redb::WriteTransaction,
        _msg: &crate::message::Message,
    ) -> std::result::Result<(), edge_sync::SyncError> {
        Ok(())
    }

    fn committed(&self, _ok: bool) {
        panic!("entered unreachable code");
    }
}

#[test]
fn a_panicking_writer_stops_storage_and_leaves_the_check_marker() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&cfg(dir.path(), OnDamaged::SetAside)).unwrap();
    store.set_hook(Arc::new(PanickingHook));
    let rec = stored_session();
    let waited = smol::block_on(async {
        let ops = vec![Op::PutSession(Arc::from("s"), Box::new(rec))];
        let t = store.push(store.reserve().await, ops).expect("a ticket");
        store.wait(t).await
    });
    assert!(waited.is_err(), "the waiter is told, not left hanging");
    assert!(!store.is_writing(), "health turns not ready");
    assert!(check_marker(&dir.path().join("edge.redb")).is_file());
}
