//! The op log: what comes back at open (records after the mark, in order, up to a torn one),
//! its encoding of ops, and `recover` applying the last run's records exactly once.

use std::sync::Arc;

use redb::ReadableDatabase;

use super::*;
use crate::message::Message;
use crate::storage::ops::{encode_logged, Op};
use crate::storage::tables::{init_tables, QUEUE, QUEUE_META};

const CAP: u64 = 1 << 20;

/// The op log file at `path`, opened as `recover` opens it.
fn file_at(path: &Path) -> JournalFile {
    JournalFile::new(crate::storage::open::open_rw(path).unwrap(), path).unwrap()
}

fn file(dir: &tempfile::TempDir) -> JournalFile {
    file_at(&dir.path().join("oplog"))
}

/// Commits `mark` in `db`, as a commit of logged ops records it.
fn commit_mark(db: &Database, mark: Mark) {
    let txn = db.begin_write().unwrap();
    write_mark(&txn, mark).unwrap();
    txn.commit().unwrap();
}

/// Opens the log in `dir` and returns what it would replay after `mark`.
fn reopen(dir: &tempfile::TempDir, mark: Mark) -> (OpLog, Vec<Vec<u8>>) {
    let mut pending = Vec::new();
    let log = OpLog::open(file(dir), CAP, mark, |p| {
        pending.push(p);
        Ok(())
    })
    .unwrap();
    (log, pending)
}

fn enqueue(client: &str, seq: u64, payload: &'static [u8]) -> Op {
    Op::Enqueue {
        client: Arc::from(client),
        seq,
        msg: Arc::new(Message {
            received_ms: 7,
            ..Message::test("t/x", bytes::Bytes::from_static(payload), 1, "pub")
        }),
        qos: 1,
        retain: seq % 2 == 0,
        sub_ids: vec![seq as u32],
    }
}

#[test]
fn records_after_the_mark_come_back_in_order_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, pending) = reopen(&dir, Mark::default());
    assert!(pending.is_empty());
    log.restart().unwrap();
    let generation = log.mark().generation;
    for i in 1..=5u8 {
        // One record spans blocks.
        let len = if i == 3 { 9000 } else { 10 };
        log.append(&vec![i; len]).unwrap();
    }
    assert_eq!(log.mark(), Mark { generation, seq: 5 });
    drop(log);
    let (_, all) = reopen(&dir, Mark::default());
    assert_eq!(all.len(), 5);
    assert_eq!(all[2], vec![3u8; 9000]);
    let (log, after) = reopen(&dir, Mark { generation, seq: 3 });
    assert_eq!(after, vec![vec![4u8; 10], vec![5u8; 10]]);
    assert_eq!(log.mark(), Mark { generation, seq: 5 });
    // A mark of an older generation does not cover this one's records.
    let (_, other) = reopen(
        &dir,
        Mark {
            generation: generation - 1,
            seq: 9,
        },
    );
    assert_eq!(other.len(), 5);
}

#[test]
fn a_torn_record_ends_what_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = reopen(&dir, Mark::default());
    log.restart().unwrap();
    for i in 1..=4u8 {
        log.append(&[i; 100]).unwrap();
    }
    drop(log);
    // Record 3 (blocks 1..=4 hold records 1..=4) loses a byte of its payload.
    let f = file(&dir);
    f.write(3 * BLOCK + RECORD_HEAD_LEN as u64 + 5, &[0xFF])
        .unwrap();
    let (log, pending) = reopen(&dir, Mark::default());
    assert_eq!(pending, vec![vec![1u8; 100], vec![2u8; 100]]);
    assert_eq!(log.mark().seq, 2);
}

#[test]
fn a_new_generation_leaves_nothing_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = reopen(&dir, Mark::default());
    log.restart().unwrap();
    log.append(b"old").unwrap();
    log.restart().unwrap();
    assert!(!log.has_records());
    drop(log);
    let (_, pending) = reopen(&dir, Mark::default());
    assert!(
        pending.is_empty(),
        "records of the previous generation came back"
    );
}

#[test]
fn a_new_log_starts_above_the_generation_of_the_mark() {
    let dir = tempfile::tempdir().unwrap();
    // redb's mark says generation 7, seq 3: records of a recreated file must not hide below it.
    let (mut log, _) = reopen(
        &dir,
        Mark {
            generation: 7,
            seq: 3,
        },
    );
    log.restart().unwrap();
    log.append(b"new").unwrap();
    assert_eq!(
        log.mark(),
        Mark {
            generation: 8,
            seq: 1
        }
    );
    drop(log);
    let (_, pending) = reopen(
        &dir,
        Mark {
            generation: 7,
            seq: 3,
        },
    );
    assert_eq!(pending, vec![b"new".to_vec()]);
}

#[test]
fn a_record_that_does_not_fit_is_refused_and_a_half_full_log_asks_for_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = reopen(&dir, Mark::default());
    log.restart().unwrap();
    assert!(!log.fits(CAP as usize));
    assert!(log.append(&vec![1u8; CAP as usize]).is_err());
    let long = std::time::Duration::from_secs(3600);
    assert!(!log.checkpoint_due(long), "an empty log");
    while !log.checkpoint_due(long) {
        log.append(&[2u8; 4000]).unwrap();
    }
    assert!(log.write_at > CAP / 2 && log.write_at <= CAP / 2 + BLOCK);
    log.restart().unwrap();
    log.append(b"one").unwrap();
    assert!(!log.checkpoint_due(long));
    assert!(
        log.checkpoint_due(std::time::Duration::ZERO),
        "its first record is that old"
    );
}

#[test]
fn after_a_failed_append_nothing_is_appended_until_the_log_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = reopen(&dir, Mark::default());
    log.restart().unwrap();
    log.append(b"one").unwrap();
    // As a failed write or sync leaves it.
    log.broken = true;
    assert!(!log.fits(1), "appends stop");
    log.restart().unwrap();
    assert!(log.fits(1) && !log.is_broken());
}

#[test]
fn queued_publishes_encode_and_decode_to_the_same_ops() {
    let ops = vec![enqueue("a", 1, b"one"), enqueue("b", 2, b"two")];
    let mut out = Vec::new();
    assert!(encode_logged(ops.iter(), &mut out, MAX_RECORD));
    let back = decode_logged(&out).unwrap();
    assert_eq!(format!("{ops:?}"), format!("{back:?}"));
    // Anything else is not carried: that commit syncs redb itself.
    let other = [Op::DeleteSession(Arc::from("a"))];
    assert!(!encode_logged(other.iter(), &mut Vec::new(), MAX_RECORD));
    // Nor a window too large for one record, and the encoding stops before it passes the bound.
    let mut short = Vec::new();
    assert!(!encode_logged(ops.iter(), &mut short, out.len() - 1));
    assert!(short.len() < out.len() - 1, "encoded past the bound");
}

/// A database with the tables, as `Store::open` has it before `recover`.
fn database(dir: &tempfile::TempDir) -> Database {
    let db = Database::create(dir.path().join("db")).unwrap();
    init_tables(&db).unwrap();
    db
}

fn queued(db: &Database, client: &str) -> (Vec<u64>, Option<(u64, u64)>) {
    let txn = db.begin_read().unwrap();
    let rows = txn.open_table(QUEUE).unwrap();
    let seqs = rows
        .range((client, 0)..=(client, u64::MAX))
        .unwrap()
        .map(|r| r.unwrap().0.value().1)
        .collect();
    let meta = txn.open_table(QUEUE_META).unwrap();
    let counts = meta.get(client).unwrap().map(|v| v.value());
    (seqs, counts)
}

/// Appends one record per group of `ops` to the op log at `path` (as the writer does before
/// redb applies them) and returns its mark.
fn append_records(path: &Path, groups: &[Vec<Op>]) -> Mark {
    let mut log = OpLog::open(file_at(path), CAP, Mark::default(), |_| Ok(())).unwrap();
    for ops in groups {
        let mut payload = Vec::new();
        assert!(encode_logged(ops.iter(), &mut payload, MAX_RECORD));
        log.append(&payload).unwrap();
    }
    log.mark()
}

#[test]
fn recover_applies_the_records_after_the_mark_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir);
    let path = dir.path().join("db-oplog");
    let log = recover(&db, &path, CAP, true).unwrap().expect("wanted");
    drop(log);
    // Records 1 and 2 were applied in a commit that recorded the mark (1.., 2); record 3 was
    // acknowledged, then the process died before redb held it.
    let groups = vec![
        vec![enqueue("c", 1, b"1"), enqueue("c", 2, b"2")],
        vec![enqueue("c", 3, b"3")],
        vec![enqueue("c", 4, b"4"), enqueue("c", 5, b"5")],
    ];
    let mark = append_records(&path, &groups);
    let txn = db.begin_write().unwrap();
    ops::apply(&txn, groups[..2].iter().flatten(), false).unwrap();
    write_mark(&txn, Mark { seq: 2, ..mark }).unwrap();
    txn.commit().unwrap();

    let log = recover(&db, &path, CAP, true).unwrap().expect("wanted");
    let (seqs, meta) = queued(&db, "c");
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(meta.map(|m| m.0), Some(5), "queue counted once per message");
    assert!(!log.has_records(), "a new generation after the replay");
    drop(log);
    // A second start (say, a crash right after) replays nothing more.
    drop(recover(&db, &path, CAP, true).unwrap());
    assert_eq!(queued(&db, "c").1.map(|m| m.0), Some(5));
}

#[test]
fn a_log_that_is_no_longer_wanted_is_replayed_then_removed() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir);
    let path = dir.path().join("db-oplog");
    drop(recover(&db, &path, CAP, true).unwrap());
    append_records(&path, &[vec![enqueue("d", 1, b"1")]]);
    // Restarted with `durability = "none"`: the acknowledged publish is not lost.
    assert!(recover(&db, &path, CAP, false).unwrap().is_none());
    assert_eq!(queued(&db, "d").0, vec![1]);
    assert!(!path.exists());
}

#[test]
fn a_start_after_a_clean_stop_writes_nothing_but_a_torn_record_under_the_mark_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir);
    let path = dir.path().join("db-oplog");
    let mut log = recover(&db, &path, CAP, true).unwrap().expect("wanted");
    let first = log.mark().generation;
    // A clean stop: redb durable with the mark, then a new generation.
    log.append(b"x").unwrap();
    commit_mark(&db, log.mark());
    log.restart().unwrap();
    drop(log);
    let log = recover(&db, &path, CAP, true).unwrap().expect("wanted");
    assert_eq!(log.mark().generation, first + 1, "no new generation needed");
    // A failed append: its record torn, the commit that applied its ops recorded the mark.
    let mut log = log;
    log.append(b"torn").unwrap();
    commit_mark(&db, log.mark());
    drop(log);
    file_at(&path)
        .write(BLOCK + RECORD_HEAD_LEN as u64, b"?")
        .unwrap();
    let log = recover(&db, &path, CAP, true).unwrap().expect("wanted");
    // Record 1 of this generation would be taken for the torn one the mark covers.
    assert_eq!(
        log.mark(),
        Mark {
            generation: first + 2,
            seq: 0
        }
    );
}

/// Whatever a crash or a bad disk leaves in the file (bytes flipped anywhere, the file cut
/// anywhere), opening it gives back a prefix of the records written, in order, and never
/// panics; decoding garbage as ops is an error, never a panic.
#[test]
fn a_damaged_log_gives_back_a_prefix_of_its_records() {
    use crate::storage::journal::tests::Rng;
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for round in 0..60u64 {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = reopen(&dir, Mark::default());
        log.restart().unwrap();
        let written: Vec<Vec<u8>> = (0..1 + rng.below(12))
            .map(|i| vec![(round as u8) ^ (i as u8) | 1; 1 + rng.below(9000) as usize])
            .collect();
        for p in &written {
            log.append(p).unwrap();
        }
        let end = log.write_at;
        drop(log);
        let path = dir.path().join("oplog");
        let mut bytes = std::fs::read(&path).unwrap();
        match round % 3 {
            0 => bytes.truncate(rng.below(end) as usize),
            _ => {
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(end) as usize;
                    bytes[at] ^= 1 << rng.below(8);
                }
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        let (_, back) = reopen(&dir, Mark::default());
        assert!(back.len() <= written.len(), "round {round}");
        assert_eq!(back, written[..back.len()], "round {round}");
        for p in &back {
            let _ = decode_logged(p);
        }
        let garbage: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
        let _ = decode_logged(&garbage);
    }
}

#[test]
fn a_record_that_cannot_be_decoded_stops_the_start_and_stays() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir);
    let path = dir.path().join("db-oplog");
    let mut log = recover(&db, &path, CAP, true).unwrap().expect("wanted");
    // A checksummed record whose ops this version does not know (an unknown variant).
    log.append(&[0x7F, 1, 2, 3]).unwrap();
    drop(log);
    let e = recover(&db, &path, CAP, true)
        .err()
        .expect("an error, not a record dropped");
    assert!(e.to_string().contains("op log"), "{e}");
    // Still there for the next start (with the version that wrote it).
    let mut seen = 0;
    OpLog::open(file_at(&path), CAP, read_mark(&db).unwrap(), |_| {
        seen += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, 1);
}
