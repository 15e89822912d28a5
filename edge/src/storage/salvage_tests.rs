//! Salvage: the overlay leaves the set-aside file as found, and an intact file gives back all it
//! holds (sessions, their queues and QoS 2 ids, retained messages); a page of a queue garbled
//! after redb opened the file (its debug build reads every page at open) loses only that page's
//! messages. The copy itself is checked in `edge_sync::salvage`'s tests.

use std::path::Path;
use std::sync::Arc;

use redb::ReadableDatabase;

use mqtt_proto::Pid;

use super::*;
use crate::message::Message;
use crate::storage::tests::{cfg, commit_ops as commit, session_record};
use crate::storage::{load, Op, Store};

/// The new database a salvage copies into (tables made), in a folder of its own.
fn new_database() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("edge.redb")).unwrap();
    init_tables(&db).unwrap();
    (dir, db)
}

/// Stores an offline persistent session `client`.
fn put_session(client: &Arc<str>) -> Op {
    Op::PutSession(client.clone(), Box::new(session_record(5, Some(1))))
}

/// A QoS 1 message for `client` at `seq` whose payload names both (`msg-<client>-<seq>`).
fn enqueue(client: &Arc<str>, seq: u64) -> Op {
    Op::Enqueue {
        client: client.clone(),
        seq,
        msg: Arc::new(Message::test(
            "t",
            format!("msg-{client}-{seq:06}").into_bytes(),
            1,
            "p",
        )),
        qos: 1,
        retain: false,
        sub_ids: vec![],
    }
}

#[test]
fn the_overlay_keeps_redbs_writes_in_memory_and_the_file_as_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let original: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    std::fs::write(&path, &original).unwrap();
    let o = Overlay::open(&path).unwrap();
    assert_eq!(o.len().unwrap(), 10_000);
    // A write across a page boundary, read back with the file's bytes around it.
    o.write(4090, &[0xee; 20]).unwrap();
    let mut got = vec![0u8; 40];
    o.read(4080, &mut got).unwrap();
    assert_eq!(&got[..10], &original[4080..4090]);
    assert_eq!(&got[10..30], &[0xee; 20]);
    assert_eq!(&got[30..], &original[4110..4120]);
    // Growing reads zeros; shrinking then growing again does not bring the old bytes back.
    o.set_len(20_000).unwrap();
    let mut tail = vec![1u8; 100];
    o.read(15_000, &mut tail).unwrap();
    assert_eq!(tail, vec![0u8; 100]);
    o.set_len(5_000).unwrap();
    o.set_len(10_000).unwrap();
    let mut cut = vec![1u8; 100];
    o.read(6_000, &mut cut).unwrap();
    assert_eq!(cut, vec![0u8; 100]);
    assert!(o.read(9_990, &mut [0u8; 20]).is_err(), "beyond the end");
    drop(o);
    assert_eq!(std::fs::read(&path).unwrap(), original);
}

#[test]
fn an_intact_set_aside_database_gives_back_its_sessions_queues_and_retained_messages() {
    let old = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&cfg(old.path())).unwrap();
    let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
    let mut ops = vec![
        put_session(&a),
        put_session(&b),
        Op::SessionUser(a.clone(), Some("alice".into())),
        Op::Qos2In {
            client: a.clone(),
            pid: Pid::try_from(7).unwrap(),
            present: true,
        },
        Op::Retain {
            topic: "r/1".into(),
            msg: Some(Arc::new(Message::test("r/1", b"kept".to_vec(), 1, "p"))),
        },
    ];
    // More rows than one chunk of the copy.
    ops.extend((1..=5000).map(|s| enqueue(&a, s)));
    ops.extend((1..=3).map(|s| enqueue(&b, s)));
    commit(&store, ops);
    commit(
        &store,
        vec![Op::MarkSent {
            client: a.clone(),
            seq: 1,
            pid: Pid::try_from(1).unwrap(),
            released: false,
        }],
    );
    drop(store);
    let file = old.path().join("edge.redb");
    let before = std::fs::read(&file).unwrap();

    let (_new, db) = new_database();
    let kept = salvage(&file, &db).unwrap();
    assert_eq!(kept.stopped, vec![], "nothing damaged");
    assert!(kept.rows >= 5000 + 3 + 2, "{kept:?}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the set-aside file was written"
    );

    let loaded = load::load(&db).unwrap();
    let mut sessions: Vec<_> = loaded.sessions.iter().collect();
    sessions.sort_by(|x, y| x.client_id.cmp(&y.client_id));
    assert_eq!(sessions.len(), 2);
    let (sa, sb) = (sessions[0], sessions[1]);
    assert_eq!(sa.user, Some(Some("alice".to_string())));
    assert_eq!(sa.qos2_in, vec![Pid::try_from(7).unwrap()]);
    assert_eq!(
        (sa.queue.messages, sa.queue.first_seq, sa.queue.next_seq),
        (5000, 1, 5001)
    );
    assert_eq!(sa.queue.sent.len(), 1, "the packet id sent for seq 1");
    assert_eq!(sb.queue.messages, 3);
    assert_eq!(
        sa.queue.bytes,
        sb.queue.bytes / 3 * 5000,
        "counted again from the rows"
    );
    assert_eq!(loaded.retained.len(), 1);
}

#[test]
fn a_file_that_is_no_database_gives_back_nothing_and_is_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.redb");
    std::fs::write(&file, vec![0u8; 64 * 1024]).unwrap();
    let (_new, db) = new_database();
    let kept = salvage(&file, &db).unwrap();
    assert_eq!(kept.rows, 0);
    assert_eq!(kept.stopped.len(), 1, "{kept:?}");
    assert!(load::load(&db).unwrap().sessions.is_empty());
    // The sync outbox continues above every sequence it could have handed out.
    let meta = edge_sync::outbox::read_meta(&db.begin_read().unwrap()).unwrap();
    assert!(meta.unwrap().next_seq > 1_700_000_000_000_000);
}

#[test]
fn an_uncleanly_stopped_set_aside_database_is_repaired_in_memory_and_given_back() {
    let old = tempfile::tempdir().unwrap();
    let mut c = cfg(old.path());
    // No commit journal: every commit lands in the file itself.
    c.storage.journal_bytes = 0;
    let (store, _) = Store::open(&c).unwrap();
    let a: Arc<str> = "a".into();
    let mut ops = vec![put_session(&a)];
    ops.extend((1..=100).map(|s| enqueue(&a, s)));
    commit(&store, ops);
    // The file as a power cut leaves it: redb's "needs repair" flag set.
    let file = old.path().join("copy.redb");
    std::fs::copy(old.path().join("edge.redb"), &file).unwrap();
    drop(store);
    assert!(matches!(
        redb::ReadOnlyDatabase::open(&file),
        Err(redb::DatabaseError::RepairAborted)
    ));
    let before = std::fs::read(&file).unwrap();

    let (_new, db) = new_database();
    let kept = salvage(&file, &db).unwrap();
    assert_eq!(kept.stopped, vec![]);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the repair wrote the file"
    );
    let loaded = load::load(&db).unwrap();
    assert_eq!(loaded.sessions.len(), 1);
    assert_eq!(loaded.sessions[0].queue.messages, 100);
}

/// The overlay shared with the test, to garble a page after redb opened the file.
#[derive(Debug)]
struct Shared(Arc<Overlay>);

impl StorageBackend for Shared {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }
}

#[test]
fn a_garbled_page_of_a_queue_loses_only_its_own_messages() {
    let old = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&cfg(old.path())).unwrap();
    let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
    let mut ops = vec![put_session(&a), put_session(&b)];
    ops.extend((1..=5000).map(|s| enqueue(&a, s)));
    ops.extend((1..=50).map(|s| enqueue(&b, s)));
    commit(&store, ops);
    // Sent and not yet acknowledged: seq 1, and seq 2500, on the page garbled below.
    let sent = |seq, pid| Op::MarkSent {
        client: a.clone(),
        seq,
        pid: Pid::try_from(pid).unwrap(),
        released: false,
    };
    commit(&store, vec![sent(1, 1), sent(2500, 2)]);
    drop(store);
    let file = old.path().join("edge.redb");
    let image = std::fs::read(&file).unwrap();
    let at = image
        .windows(12)
        .position(|w| w == b"msg-a-002500")
        .expect("message 2500 is in the file") as u64;
    let overlay = Arc::new(Overlay::open(&file).unwrap());
    let src = Database::builder()
        .set_cache_size(0)
        .create_with_backend(Shared(overlay.clone()))
        .unwrap();
    let page = at / PAGE * PAGE;
    overlay.write(page, &[0xa5; PAGE as usize]).unwrap();

    let (_new, db) = new_database();
    let mut kept = Salvaged::default();
    copy_all(&src.begin_read().unwrap(), &db, &mut kept, None).unwrap();
    let damaged: Vec<&str> = kept.stopped.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(damaged, vec!["session_queue of a"], "{kept:?}");

    let loaded = load::load(&db).unwrap();
    let queue = |id: &str| {
        let s = loaded.sessions.iter().find(|s| s.client_id == id);
        s.map(|s| s.queue.clone()).expect("session kept")
    };
    let qa = queue("a");
    assert!(qa.messages < 5000 && qa.messages > 4900, "{qa:?}");
    assert_eq!(
        (qa.first_seq, qa.next_seq),
        (1, 5001),
        "the first and last kept"
    );
    assert_eq!(
        qa.sent.len(),
        1,
        "no packet id kept for a lost delivery: {qa:?}"
    );
    assert_eq!(queue("b").messages, 50);
    let r = db.begin_read().unwrap();
    let t = r.open_table(QUEUE).unwrap();
    assert!(
        t.get(("a", 2500)).unwrap().is_none(),
        "a message of the garbled page"
    );
}

#[test]
fn publishes_acknowledged_from_the_op_log_and_not_yet_in_redb_are_salvaged_too() {
    let live = tempfile::tempdir().unwrap();
    let durable = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &Path, name: &str| {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    };
    let a: Arc<str> = "a".into();
    let oplog_after;
    {
        let (store, _) = Store::open(&cfg(live.path())).unwrap();
        // A session change: redb commits it durably itself. What the disk holds after it:
        commit(&store, vec![put_session(&a)]);
        copy(live.path(), durable.path(), "edge.redb");
        copy(live.path(), durable.path(), "edge.redb-journal");
        // Publishes into the session, acknowledged once the op log's record is synced.
        for seq in 1..=3 {
            commit(&store, vec![enqueue(&a, seq)]);
        }
        oplog_after = std::fs::read(live.path().join("edge.redb-oplog")).unwrap();
    }
    // The durable state with its journal applied (a start does that), then set aside with the
    // op log as the power cut left it.
    drop(Store::open(&cfg(durable.path())).unwrap());
    let aside = tempfile::tempdir().unwrap();
    copy(durable.path(), aside.path(), "edge.redb");
    std::fs::write(aside.path().join("edge.redb-oplog"), &oplog_after).unwrap();

    let (_new, db) = new_database();
    let kept = salvage(&aside.path().join("edge.redb"), &db).unwrap();
    assert_eq!((kept.oplog_records, kept.stopped.len()), (3, 0), "{kept:?}");
    assert_eq!(
        std::fs::read(aside.path().join("edge.redb-oplog")).unwrap(),
        oplog_after,
        "the set-aside op log was written"
    );
    let loaded = load::load(&db).unwrap();
    let q = &loaded.sessions[0].queue;
    assert_eq!(
        (q.messages, q.first_seq, q.next_seq),
        (3, 1, 4),
        "counted once each"
    );
}
