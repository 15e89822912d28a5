//! Unit tests of `storage` (kept apart so that the module stays under 600 lines).

use super::*;

fn cfg(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    }
}

fn msg(topic: &str) -> Arc<Message> {
    Arc::new(Message {
        received_ms: 1,
        ..Message::test(topic, bytes::Bytes::from_static(b"hello"), 1, "p")
    })
}

#[test]
fn committed_ops_are_read_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, loaded) = Store::open(&cfg(dir.path())).unwrap();
        assert!(loaded.sessions.is_empty());
        let c: Arc<str> = "client".into();
        let rec = SessionRecord {
            protocol: 5,
            expiry_secs: 60,
            subscriptions: vec![],
            disconnected_ms: Some(5),
            will: None,
        };
        smol::block_on(async {
            let mut ops = vec![Op::PutSession(c.clone(), Box::new(rec))];
            for seq in 1..=3 {
                ops.push(Op::Enqueue {
                    client: c.clone(),
                    seq,
                    msg: msg("a"),
                    qos: 1,
                    retain: false,
                    sub_ids: vec![7],
                });
            }
            ops.push(Op::Dequeue {
                client: c.clone(),
                seq: 2,
                weight: msg("a").weight() as u32,
            });
            ops.push(Op::MarkSent {
                client: c.clone(),
                seq: 3,
                pid: mqtt_proto::Pid::try_from(9).unwrap(),
                released: true,
            });
            ops.push(Op::Retain {
                topic: "r".into(),
                msg: Some(msg("r")),
            });
            let slot = store.reserve().await;
            let t = store
                .push(slot, ops)
                .expect("a ticket for a non-empty batch");
            store.wait(t).await.unwrap();
        });
    }
    let (store, loaded) = Store::open(&cfg(dir.path())).unwrap();
    assert_eq!(loaded.sessions.len(), 1);
    let shape = &loaded.sessions[0].queue;
    assert_eq!(
        (shape.messages, shape.bytes, shape.first_seq, shape.next_seq),
        (2, 2 * msg("a").weight(), 1, 4),
        "the queue's shape is read, not its messages"
    );
    assert_eq!(shape.sent, vec![(3, 9)]);
    let rows = store.read_queue("client", 1, 4, 10).unwrap();
    let seqs: Vec<u64> = rows.iter().map(|q| q.0).collect();
    assert_eq!(seqs, vec![1, 3]);
    let (first, third) = (rows[0].1.as_ref().unwrap(), rows[1].1.as_ref().unwrap());
    assert_eq!(first.sub_ids, vec![7]);
    assert_eq!((first.pid, first.released), (0, false));
    assert_eq!((third.pid, third.released), (9, true));
    assert_eq!(
        store.read_queue("client", 2, 4, 1).unwrap()[0].0,
        3,
        "from 2, at most 1"
    );
    assert!(
        store.read_queue("client", 1, 3, 10).unwrap().len() == 1,
        "until is exclusive"
    );
    assert_eq!(loaded.retained.len(), 1);
}

#[test]
fn a_garbage_database_file_is_an_error_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.redb");
    std::fs::write(&path, b"this is not a redb file at all, not even close").unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = Store::open(&cfg(dir.path())).err().expect("must fail");
    assert!(err.to_string().contains("cannot open database"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn deleting_a_session_removes_its_queue_only() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&cfg(dir.path())).unwrap();
    let rec = SessionRecord {
        protocol: 4,
        expiry_secs: 60,
        subscriptions: vec![],
        disconnected_ms: None,
        will: None,
    };
    smol::block_on(async {
        let mut ops = vec![];
        for c in ["a", "b"] {
            let c: Arc<str> = c.into();
            ops.push(Op::PutSession(c.clone(), Box::new(rec.clone())));
            ops.push(Op::Enqueue {
                client: c.clone(),
                seq: 1,
                msg: msg("x"),
                qos: 1,
                retain: false,
                sub_ids: vec![],
            });
        }
        ops.push(Op::DeleteSession("a".into()));
        let t = store.push(store.reserve().await, ops).expect("a ticket");
        store.wait(t).await.unwrap();
    });
    let loaded = load::load(&store.database()).unwrap();
    assert_eq!(loaded.sessions.len(), 1);
    assert_eq!(loaded.sessions[0].client_id, "b");
    assert_eq!(loaded.sessions[0].queue.messages, 1);
    assert!(store.read_queue("a", 0, u64::MAX, 10).unwrap().is_empty());
}

#[test]
fn a_queue_left_without_its_session_is_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(&cfg(dir.path())).unwrap();
        smol::block_on(async {
            let ops = vec![Op::Enqueue {
                client: "gone".into(),
                seq: 1,
                msg: msg("x"),
                qos: 1,
                retain: false,
                sub_ids: vec![],
            }];
            let t = store.push(store.reserve().await, ops).expect("a ticket");
            store.wait(t).await.unwrap();
        });
        assert_eq!(store.read_queue("gone", 0, u64::MAX, 10).unwrap().len(), 1);
    }
    let (store, loaded) = Store::open(&cfg(dir.path())).unwrap();
    assert!(loaded.sessions.is_empty());
    assert!(store
        .read_queue("gone", 0, u64::MAX, 10)
        .unwrap()
        .is_empty());
}

fn last_commit_ms(store: &Store) -> Option<u64> {
    use redb::ReadableDatabase;
    let txn = store.database().begin_read().unwrap();
    let meta = txn.open_table(tables::META).unwrap();
    meta.get("last_commit_ms").unwrap().map(|v| v.value())
}

/// The time of the last commit dates a crash at the next start; it is written by the first
/// commit and then at most once per `STAMP_EVERY`, not by every commit.
#[test]
fn the_commit_time_is_recorded_at_most_once_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&cfg(dir.path())).unwrap();
    let retain = |topic: &str| Op::Retain {
        topic: topic.into(),
        msg: Some(msg(topic)),
    };
    let before = crate::message::now_ms();
    let started = std::time::Instant::now();
    smol::block_on(async {
        let t = store
            .push(store.reserve().await, vec![retain("a")])
            .unwrap();
        store.wait(t).await.unwrap();
    });
    let first = last_commit_ms(&store).expect("the first commit records its time");
    assert!(first >= before);
    smol::block_on(async {
        let t = store
            .push(store.reserve().await, vec![retain("b")])
            .unwrap();
        store.wait(t).await.unwrap();
    });
    if started.elapsed() < STAMP_EVERY {
        assert_eq!(
            last_commit_ms(&store),
            Some(first),
            "not written again so soon"
        );
    }
    std::thread::sleep(STAMP_EVERY);
    smol::block_on(async {
        let t = store
            .push(store.reserve().await, vec![retain("c")])
            .unwrap();
        store.wait(t).await.unwrap();
    });
    assert!(last_commit_ms(&store).unwrap() >= first + 1000);
}
