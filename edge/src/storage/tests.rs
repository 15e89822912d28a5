//! Unit tests of `storage` (kept apart so that the module stays under 600 lines).

use super::writer::{gather, next_expect, GATHER_SPIN, GATHER_WAIT, STAMP_EVERY};
use super::*;
use crate::config::Durability;
use std::path::Path;
use std::time::Duration;

pub(super) fn cfg(dir: &Path) -> Config {
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

/// A session record of `protocol` with 60 s expiry and no subscriptions.
pub(super) fn session_record(protocol: u8, disconnected_ms: Option<u64>) -> SessionRecord {
    SessionRecord {
        protocol,
        expiry_secs: 60,
        subscriptions: vec![],
        disconnected_ms,
        will: None,
    }
}

/// Queues a QoS 1 message on `topic` for `client` at `seq`.
fn enqueue(client: &Arc<str>, seq: u64, topic: &str, sub_ids: Vec<u32>) -> Op {
    Op::Enqueue {
        client: client.clone(),
        seq,
        msg: msg(topic),
        qos: 1,
        retain: false,
        sub_ids,
    }
}

/// Pushes `ops` as one batch and waits for its commit.
pub(super) fn commit_ops(store: &Store, ops: Vec<Op>) {
    smol::block_on(async {
        let t = store.push(store.reserve().await, ops).expect("a ticket");
        store.wait(t).await.unwrap();
    });
}

#[test]
fn committed_ops_are_read_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, loaded) = Store::open(&cfg(dir.path())).unwrap();
        assert!(loaded.sessions.is_empty());
        let c: Arc<str> = "client".into();
        let rec = session_record(5, Some(5));
        let mut ops = vec![Op::PutSession(c.clone(), Box::new(rec))];
        for seq in 1..=3 {
            ops.push(enqueue(&c, seq, "a", vec![7]));
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
        commit_ops(&store, ops);
    }
    let (store, loaded) = Store::open(&cfg(dir.path())).unwrap();
    assert_eq!(loaded.sessions.len(), 1);
    let shape = &loaded.sessions[0].queue;
    assert_eq!(
        (shape.messages, shape.bytes, shape.first_seq, shape.next_seq),
        (2, 2 * msg("a").weight() as u64, 1, 4),
        "the queue's shape is read, not its messages"
    );
    assert_eq!(shape.sent.iter().collect::<Vec<_>>(), vec![(3, 9)]);
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
fn ids_recorded_ahead_for_a_whole_window_come_back_after_a_crash_as_one_run() {
    // What a crash in the middle of a drain leaves: 8,192 deliveries whose ids were recorded
    // ahead of their sends (consecutive ids, as a drain assigns them).
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(&cfg(dir.path())).unwrap();
        let c: Arc<str> = "client".into();
        let mut ops = vec![Op::PutSession(c.clone(), Box::new(session_record(5, None)))];
        for seq in 1..=8192u64 {
            ops.push(enqueue(&c, seq, "a", vec![]));
            ops.push(Op::MarkSent {
                client: c.clone(),
                seq,
                pid: mqtt_proto::Pid::try_from(seq as u16 + 10).unwrap(),
                released: false,
            });
        }
        commit_ops(&store, ops);
    }
    let (_store, loaded) = Store::open(&cfg(dir.path())).unwrap();
    let sent = &loaded.sessions[0].queue.sent;
    assert_eq!(sent.len(), 8192, "every recorded id stays reserved");
    assert_eq!(sent.runs(), 1, "held as one run, not 8,192 pairs");
    assert_eq!(sent.iter().last(), Some((8192, 8202)));
}

#[test]
fn with_on_damaged_stop_a_garbage_database_file_is_an_error_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.redb");
    std::fs::write(&path, b"this is not a redb file at all, not even close").unwrap();
    let before = std::fs::read(&path).unwrap();
    let mut c = cfg(dir.path());
    c.storage.on_damaged = crate::config::OnDamaged::Stop;
    let err = Store::open(&c).err().expect("must fail");
    assert!(err.to_string().contains("cannot open database"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(
        !dir.path().join("edge.redb-journal").exists(),
        "no journal created beside it"
    );
}

#[test]
fn deleting_a_session_removes_its_queue_only() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&cfg(dir.path())).unwrap();
    let rec = session_record(4, None);
    let mut ops = vec![];
    for c in ["a", "b"] {
        let c: Arc<str> = c.into();
        ops.push(Op::PutSession(c.clone(), Box::new(rec.clone())));
        ops.push(enqueue(&c, 1, "x", vec![]));
    }
    ops.push(Op::DeleteSession("a".into()));
    commit_ops(&store, ops);
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
        let ops = vec![enqueue(&"gone".into(), 1, "x", vec![])];
        commit_ops(&store, ops);
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

#[test]
fn the_next_commit_waits_for_the_batches_in_flight_only_after_a_group() {
    let imm = Durability::Immediate;
    // Two halves of a window: 32 committed, 32 queued behind: wait for all 64.
    assert_eq!(next_expect(imm, true, 32, 32, 1024), 64);
    // A lone publisher (one batch per commit) is never held back.
    assert_eq!(next_expect(imm, true, 1, 0, 1024), 0);
    assert_eq!(next_expect(imm, true, 1, 5, 1024), 0);
    // After a wait that timed out, the next commit does not wait.
    assert_eq!(next_expect(imm, false, 32, 32, 1024), 0);
    // Without fsync a commit is cheap: no waiting.
    assert_eq!(next_expect(Durability::None, true, 32, 32, 1024), 0);
    // Never more than a commit may carry.
    assert_eq!(next_expect(imm, true, 900, 900, 1024), 1024);
}

#[test]
fn a_gathering_that_nothing_answers_gives_up_after_the_commit_delay() {
    let shared = Shared::new();
    let started = std::time::Instant::now();
    let (p, gathered) = gather(&shared, lock(&shared.pending), 3, GATHER_WAIT, GATHER_SPIN);
    assert!(!gathered);
    assert!(p.batches.is_empty());
    assert!(started.elapsed() >= GATHER_WAIT);
    // Bounded (generous for a loaded machine): the delay is 200 us.
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// Another thread pushes three batches as `Store::push` does (a wake-up only when the writer
/// asked for one, `wake_at`) while this one gathers them with a 30 s bound, polling for the
/// first `spin` of it. Returns whether they came, the wake-ups sent and the time it took.
fn gather_three_pushed_by_another_thread(spin: Duration) -> (bool, usize, Duration) {
    let shared = Shared::new();
    let slots = Arc::new(Semaphore::new(3));
    std::thread::scope(|s| {
        let p = lock(&shared.pending);
        let pusher = s.spawn(|| {
            let mut wakes = 0;
            for n in 1..=3 {
                let slot = Slot(slots.try_acquire_arc().expect("a free slot"));
                let wake = lock(&shared.pending).queue((n, vec![Op::Capture(msg("g"))], slot));
                if wake {
                    shared.wake.notify_one();
                    wakes += 1;
                }
            }
            wakes
        });
        let started = std::time::Instant::now();
        let (p, gathered) = gather(&shared, p, 3, Duration::from_secs(30), spin);
        let took = started.elapsed();
        assert_eq!(p.batches.len(), 3);
        drop(p);
        (gathered, pusher.join().unwrap(), took)
    })
}

#[test]
fn a_gathering_ends_when_the_expected_batches_arrive() {
    // Asleep from the start (one core): the third push wakes the writer.
    let (gathered, wakes, took) = gather_three_pushed_by_another_thread(Duration::ZERO);
    assert!(gathered, "all three batches came");
    assert!(wakes >= 1, "the writer asleep was woken");
    assert!(took < Duration::from_secs(10));
}

#[test]
fn a_polling_gathering_sees_batches_pushed_without_a_wake_up() {
    // Polling for the whole bound: asleep, only a wake-up could end the wait before 30 s.
    let (gathered, wakes, took) = gather_three_pushed_by_another_thread(Duration::from_secs(30));
    assert!(gathered, "all three batches came");
    assert_eq!(wakes, 0, "a polling writer asks for no wake-up");
    assert!(took < Duration::from_secs(10));
}

#[test]
fn a_sleeping_writer_is_woken_by_one_push_not_by_every_push_until_it_runs() {
    let shared = Shared::new();
    let slots = Arc::new(Semaphore::new(8));
    let mut p = lock(&shared.pending);
    // The writer went to sleep waiting for 2 batches (`gather`'s sleeping part).
    p.wake_at = 2;
    let mut wakes = Vec::new();
    for n in 1..=5 {
        let slot = Slot(slots.try_acquire_arc().expect("a free slot"));
        wakes.push(p.queue((n, vec![Op::Capture(msg("w"))], slot)));
    }
    assert_eq!(wakes, [false, true, false, false, false]);
    // Asleep again (the top of the writer's loop): the next push wakes it again.
    p.batches.clear();
    p.wake_at = 1;
    let slot = Slot(slots.try_acquire_arc().expect("a free slot"));
    assert!(p.queue((6, vec![Op::Capture(msg("w"))], slot)));
}

/// A publisher with 64 batches in flight, sending the next as soon as one is acknowledged
/// (what a client with a window does): the commits carry the whole window, not two halves
/// that alternate (about 32 batches a commit before gathering).
#[test]
fn a_window_of_batches_in_flight_shares_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&cfg(dir.path())).unwrap();
    // 200 µs is a round trip on a quiet machine, not under a parallel test run: the waits
    // are lengthened so that only the gathering decides the count.
    store.set_gather_wait(Duration::from_millis(50));
    const WINDOW: usize = 64;
    const TOTAL: usize = WINDOW * 40;
    smol::block_on(async {
        let mut in_flight = VecDeque::new();
        for sent in 0..TOTAL {
            if in_flight.len() == WINDOW {
                let oldest = in_flight.pop_front().expect("a window is in flight");
                store.wait(oldest).await.unwrap();
            }
            let op = Op::Retain {
                topic: format!("w/{}", sent % 8).into(),
                msg: None,
            };
            in_flight.push_back(store.push(store.reserve().await, vec![op]).unwrap());
        }
        for t in in_flight {
            store.wait(t).await.unwrap();
        }
    });
    let commits = store.commit_latency().count as usize;
    assert!(
        commits * 60 <= TOTAL,
        "{TOTAL} batches in {commits} commits: fewer than 60 a commit"
    );
}

#[test]
fn only_publishes_awaiting_their_acknowledgement_are_gathered() {
    let c: Arc<str> = "c".into();
    assert!(Op::acknowledged(&[enqueue(&c, 1, "t", vec![])]));
    assert!(Op::acknowledged(&[Op::Capture(msg("t"))]));
    // A drain's packet ids and removals, and session changes, are not waited for.
    let mark = Op::MarkSent {
        client: c.clone(),
        seq: 1,
        pid: mqtt_proto::Pid::try_from(1).unwrap(),
        released: false,
    };
    let dequeue = Op::Dequeue {
        client: c.clone(),
        seq: 1,
        weight: 1,
    };
    assert!(!Op::acknowledged(&[mark, dequeue]));
    assert!(!Op::acknowledged(&[Op::DeleteSession(c)]));
}

/// Waits (at most 5 s) until `weak`'s message is freed; whether it was.
fn freed_soon(weak: &std::sync::Weak<Message>) -> bool {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while weak.strong_count() > 0 {
        if std::time::Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// One enqueue op of a fresh message, and a weak reference to that message.
fn enqueue_tracked(client: &Arc<str>, seq: u64) -> (Op, std::sync::Weak<Message>) {
    let op = enqueue(client, seq, "t", vec![]);
    let Op::Enqueue { msg, .. } = &op else {
        unreachable!("enqueue builds an Op::Enqueue")
    };
    let weak = Arc::downgrade(msg);
    (op, weak)
}

#[test]
fn committed_ops_wait_for_the_reaper_while_one_runs_and_are_freed_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&cfg(dir.path())).unwrap();
    let c: Arc<str> = "c".into();
    // No reaper: the writer frees them.
    let (op, weak) = enqueue_tracked(&c, 1);
    commit_ops(&store, vec![op]);
    assert!(freed_soon(&weak));

    let mut reaper = Box::pin(store.reap());
    assert!(smol::block_on(futures_lite::future::poll_once(&mut reaper)).is_none());
    let (op, weak) = enqueue_tracked(&c, 2);
    commit_ops(&store, vec![op]);
    // Handed over, held until the reaper is polled.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while store.shared.reaper.held() == 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(store.shared.reaper.held(), 1);
    assert_eq!(weak.strong_count(), 1);
    assert!(smol::block_on(futures_lite::future::poll_once(&mut reaper)).is_none());
    assert_eq!(weak.strong_count(), 0);
    assert_eq!(store.shared.reaper.held(), 0);

    // A reaper dropped: the writer frees them again.
    drop(reaper);
    let (op, weak) = enqueue_tracked(&c, 3);
    commit_ops(&store, vec![op]);
    assert!(freed_soon(&weak));
    assert_eq!(store.shared.reaper.held(), 0);
}

#[test]
fn a_reaper_that_is_not_polled_holds_at_most_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&cfg(dir.path())).unwrap();
    let c: Arc<str> = "c".into();
    let mut reaper = Box::pin(store.reap());
    assert!(smol::block_on(futures_lite::future::poll_once(&mut reaper)).is_none());
    // Batches of four 256 KiB messages: the bound is counted in bytes, not in ops.
    let payload = bytes::Bytes::from(vec![7u8; 256 * 1024]);
    let per_batch = 4;
    let batch_bytes = per_batch * (payload.len() + "t".len() + 64);
    let mut last = None;
    for b in 0..(reap::HELD_BYTES / batch_bytes + 2) {
        let (ops, weaks): (Vec<Op>, Vec<_>) = (0..per_batch)
            .map(|i| {
                let msg = Arc::new(Message::test("t", payload.clone(), 1, "p"));
                let weak = Arc::downgrade(&msg);
                let op = Op::Enqueue {
                    client: c.clone(),
                    seq: (b * per_batch + i) as u64 + 1,
                    msg,
                    qos: 1,
                    retain: false,
                    sub_ids: vec![],
                };
                (op, weak)
            })
            .unzip();
        commit_ops(&store, ops);
        last = weaks.last().cloned();
    }
    // The last batches found the bin full and were freed by the writer.
    assert!(freed_soon(&last.expect("batches were committed")));
    assert!(store.shared.reaper.held_bytes() <= reap::HELD_BYTES);
    assert!(store.shared.reaper.held_bytes() >= reap::HELD_BYTES - batch_bytes);
}

#[test]
fn a_commit_published_durable_is_acknowledgeable_while_reads_still_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&cfg(dir.path())).unwrap();
    let t = Ticket::for_test(1_000);
    // What the journal's sync does inside redb's commit (`Shared::publish_durable`).
    store.shared.committing.store(1_000, Ordering::Release);
    store.shared.publish_durable();
    assert!(store.reached_durable(t));
    assert!(!store.reached(t), "reads wait until redb shows the commit");
    smol::block_on(store.wait_durable(t)).expect("durable");
    // Published once: a second call (the writer's, after the commit) finds nothing to do.
    assert_eq!(store.shared.committing.load(Ordering::Acquire), 0);
    store.shared.publish_durable();
    assert_eq!(store.shared.durable.load(Ordering::Acquire), 1_000);
}

#[test]
fn a_commit_through_the_journal_is_published_durable_by_its_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&cfg(dir.path())).unwrap();
    assert!(
        store.journal().is_some(),
        "the default config has a journal"
    );
    let c: Arc<str> = "c".into();
    // Session changes: through redb and its journal (publishes alone go through the op log).
    let put = || {
        vec![Op::PutSession(
            c.clone(),
            Box::new(session_record(5, Some(5))),
        )]
    };
    commit_ops(&store, put());
    // The writer found the commit published already: the count the journal's call took.
    // Without the early call `waiting_at_durable` is never written; make it tell.
    store
        .shared
        .waiting_at_durable
        .store(usize::MAX, Ordering::Relaxed);
    commit_ops(&store, put());
    assert_eq!(store.shared.waiting_at_durable.load(Ordering::Relaxed), 0);
}

/// Copies the database's files named `names` from `from` to `to` (a snapshot of what a power
/// cut would leave: only synced bytes, when taken right after a sync).
fn copy_files(from: &Path, to: &Path, names: &[&str]) {
    for name in names {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

/// The publishes of a commit made durable by the op log are acknowledged before redb syncs
/// them; a power cut then leaves redb at its last durable commit, and the next start applies
/// them from the op log, once.
#[test]
fn publishes_acknowledged_from_the_op_log_survive_a_power_cut_before_redb_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let snap = tempfile::tempdir().unwrap();
    let c: Arc<str> = "client".into();
    {
        let (store, _) = Store::open(&cfg(dir.path())).unwrap();
        // A session change: redb commits it durably itself.
        let rec = session_record(5, Some(5));
        commit_ops(&store, vec![Op::PutSession(c.clone(), Box::new(rec))]);
        // What the disk holds after that sync.
        copy_files(dir.path(), snap.path(), &["edge.redb", "edge.redb-journal"]);
        // Publishes into the session: acknowledged once the op log's record is synced.
        for seq in 1..=3 {
            commit_ops(&store, vec![enqueue(&c, seq, "a", vec![])]);
        }
        copy_files(dir.path(), snap.path(), &["edge.redb-oplog"]);
    }
    let (store, loaded) = Store::open(&cfg(snap.path())).unwrap();
    assert_eq!(loaded.sessions.len(), 1);
    let shape = &loaded.sessions[0].queue;
    assert_eq!(
        (shape.messages, shape.bytes, shape.next_seq),
        (3, 3 * msg("a").weight() as u64, 4),
        "the three acknowledged publishes are queued, each counted once"
    );
    let seqs: Vec<u64> = store
        .read_queue("client", 1, 4, 10)
        .unwrap()
        .iter()
        .map(|q| q.0)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    drop(store);
    // Opened again (the replay was committed, the log started over): nothing applied twice.
    let (_, loaded) = Store::open(&cfg(snap.path())).unwrap();
    assert_eq!(loaded.sessions[0].queue.messages, 3);
}

/// A clean stop leaves an empty op log: the next start reads its header only.
#[test]
fn a_clean_stop_leaves_nothing_in_the_op_log() {
    let dir = tempfile::tempdir().unwrap();
    let c: Arc<str> = "client".into();
    {
        let (store, _) = Store::open(&cfg(dir.path())).unwrap();
        commit_ops(
            &store,
            vec![Op::PutSession(
                c.clone(),
                Box::new(session_record(5, Some(5))),
            )],
        );
        for seq in 1..=3 {
            commit_ops(&store, vec![enqueue(&c, seq, "a", vec![])]);
        }
        let log = std::fs::read(dir.path().join("edge.redb-oplog")).unwrap();
        assert!(
            log[4096..].starts_with(b"RMQEOPR1"),
            "the publishes went through the op log"
        );
    }
    let log = std::fs::read(dir.path().join("edge.redb-oplog")).unwrap();
    let generation = |b: &[u8]| u64::from_le_bytes(b[8..16].try_into().unwrap());
    let first = &log[4096..4096 + 32];
    assert!(
        !first.starts_with(b"RMQEOPR1") || generation(first) != generation(&log[..16]),
        "records of the current generation are left after a clean stop"
    );
    let (_, loaded) = Store::open(&cfg(dir.path())).unwrap();
    assert_eq!(loaded.sessions[0].queue.messages, 3);
}
