use std::sync::{Arc, Mutex};

use redb::backends::InMemoryBackend;
use redb::{ReadableDatabase, ReadableTableMetadata, StorageBackend};

use super::*;
use crate::outbox::read_meta;

const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

fn memory_db() -> Database {
    Database::builder()
        .create_with_backend(InMemoryBackend::new())
        .expect("in-memory database")
}

fn put_lane(db: &Database, lane: usize, seqs: impl Iterator<Item = u64>) {
    let txn = db.begin_write().expect("write");
    {
        let mut t = txn.open_table(LANES[lane]).expect("lane");
        for s in seqs {
            t.insert(s, vec![7u8; 10 + (s % 5) as usize].as_slice())
                .expect("insert");
        }
    }
    txn.commit().expect("commit");
}

fn meta_of(db: &Database) -> Option<Meta> {
    read_meta(&db.begin_read().expect("read")).expect("meta")
}

#[test]
fn a_salvaged_outbox_keeps_its_records_counters_and_next_sequence() {
    let src = memory_db();
    // More rows than one chunk, in two lanes.
    put_lane(&src, 0, 5..=9004);
    put_lane(&src, 2, std::iter::once(10_000));
    let mut old = Meta::fresh();
    old.next_seq = 10_001;
    old.acked = 42;
    old.lanes[0].sent_upto = 100;
    let txn = src.begin_write().expect("write");
    outbox::write_meta(&txn, &old).expect("meta");
    txn.commit().expect("commit");

    let dst = memory_db();
    let copied = sync_tables(&src.begin_read().expect("read"), &dst, 1).expect("salvage");
    assert!(copied.iter().all(|c| c.stopped.is_none()), "{copied:?}");
    let lane0 = copied.iter().find(|c| c.table == "sync_outbox_p0");
    assert_eq!(lane0.map(|c| c.rows), Some(9000));

    let m = meta_of(&dst).expect("meta written");
    assert_eq!(m.next_seq, 10_001);
    assert_eq!(m.acked, 42);
    assert_eq!((m.lanes[0].messages, m.lanes[0].oldest_seq), (9000, 5));
    assert_eq!(m.lanes[0].sent_upto, 100);
    assert_eq!((m.lanes[2].messages, m.lanes[2].oldest_seq), (1, 10_000));
    let bytes: u64 = (5..=9004u64).map(|s| 10 + s % 5).sum();
    assert_eq!(m.lanes[0].bytes, bytes);
    let r = dst.begin_read().expect("read");
    let t = r.open_table(LANES[0]).expect("lane");
    assert_eq!(t.len().expect("len"), 9000);
    assert_eq!(t.first().expect("first").map(|(k, _)| k.value()), Some(5));
    assert_eq!(t.last().expect("last").map(|(k, _)| k.value()), Some(9004));
}

#[test]
fn an_outbox_whose_meta_row_is_lost_continues_above_the_floor_and_its_records() {
    let src = memory_db();
    put_lane(&src, 1, 1..=10);
    let dst = memory_db();
    let copied = sync_tables(&src.begin_read().expect("read"), &dst, 1_000_000).expect("salvage");
    let meta = copied.iter().find(|c| c.table == "sync_meta");
    assert_eq!(meta.map(|m| m.rows), Some(0), "{copied:?}");
    let m = meta_of(&dst).expect("meta written");
    assert_eq!(m.next_seq, 1_000_000);
    assert_eq!(m.lanes[1].messages, 10);

    // A floor below the records kept: the sequence continues above them.
    let dst = memory_db();
    sync_tables(&src.begin_read().expect("read"), &dst, 3).expect("salvage");
    assert_eq!(meta_of(&dst).map(|m| m.next_seq), Some(11));
}

#[test]
fn a_database_where_sync_never_ran_gets_no_outbox_meta_row() {
    let src = memory_db();
    let dst = memory_db();
    let copied = sync_tables(&src.begin_read().expect("read"), &dst, 5).expect("salvage");
    assert!(copied.iter().all(|c| c.rows == 0 && c.stopped.is_none()));
    assert_eq!(meta_of(&dst), None);
}

#[test]
fn the_sequence_floor_is_above_sequences_counted_from_one() {
    // Microseconds since 1970: far above what a gateway counting from 1 reaches.
    assert!(seq_floor_now() > 1_700_000_000_000_000);
}

/// An in-memory database file with a bad spot: once armed, reads of `bad` (a byte range) see
/// garbage, as a page a power cut garbled. (An I/O error instead would make redb refuse every
/// later read of the database; the salvage's overlay reads such a spot as zeros.)
#[derive(Debug)]
struct BadSpot {
    inner: Arc<InMemoryBackend>,
    bad: Arc<Mutex<Option<(u64, u64)>>>,
}

impl StorageBackend for BadSpot {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)?;
        if let Some((lo, hi)) = *self.bad.lock().expect("lock") {
            for (i, b) in out.iter_mut().enumerate() {
                if (lo..hi).contains(&(offset + i as u64)) {
                    *b = 0xa5;
                }
            }
        }
        Ok(())
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write(offset, data)
    }
}

const ROWS: u64 = 20_000;

/// A database of `ROWS` rows (`k` -> "row-<k>" padded to 100 bytes) whose page holding row
/// 10,000 goes bad once `arm` is called; reads bypass redb's cache.
fn with_a_bad_page() -> (Database, impl Fn()) {
    let inner = Arc::new(InMemoryBackend::new());
    let bad = Arc::new(Mutex::new(None));
    let src = Database::builder()
        .set_cache_size(0)
        .create_with_backend(BadSpot {
            inner: inner.clone(),
            bad: bad.clone(),
        })
        .expect("database");
    let txn = src.begin_write().expect("write");
    {
        let mut t = txn.open_table(T).expect("table");
        for k in 0..ROWS {
            let mut v = format!("row-{k:08}").into_bytes();
            v.resize(100, b'.');
            t.insert(k, v.as_slice()).expect("insert");
        }
    }
    txn.commit().expect("commit");
    let mut image = vec![0u8; inner.len().expect("len") as usize];
    inner.read(0, &mut image).expect("read");
    let at = image
        .windows(12)
        .position(|w| w == b"row-00010000")
        .expect("row 10000 is in the file") as u64;
    let page = at / 4096 * 4096;
    let arm = move || *bad.lock().expect("lock") = Some((page, page + 4096));
    (src, arm)
}

fn keys_of(db: &Database) -> Vec<u64> {
    let r = db.begin_read().expect("read");
    let t = r.open_table(T).expect("table");
    t.iter()
        .expect("iter")
        .map(|row| row.expect("row").0.value())
        .collect()
}

#[test]
fn a_failed_read_ends_the_copy_and_keeps_the_rows_read_before_it() {
    let (src, arm) = with_a_bad_page();
    let read = src.begin_read().expect("read");
    arm();
    let dst = memory_db();
    let copied = copy_table(&read, &dst, T, ALL).expect("the new database is fine");
    assert!(copied.stopped.is_some(), "{copied:?}");
    assert!(copied.rows > 9_000 && copied.rows <= 10_000, "{copied:?}");
    // The rows kept are the first ones, without a gap.
    assert_eq!(keys_of(&dst), (0..copied.rows).collect::<Vec<_>>());
}

#[test]
fn a_sequence_keyed_copy_goes_on_past_a_damaged_page() {
    let (src, arm) = with_a_bad_page();
    let read = src.begin_read().expect("read");
    arm();
    let dst = memory_db();
    let key = |s: u64| s.to_le_bytes().to_vec();
    let seq_of = |k: &[u8]| <u64 as Value>::from_bytes(k);
    let copied = copy_seq_range(&read, &dst, T, key, seq_of, (0, u64::MAX)).expect("copy");
    assert!(copied.stopped.is_some(), "{copied:?}");
    let kept = keys_of(&dst);
    assert_eq!(kept.len() as u64, copied.rows);
    // Only the bad page's rows (a leaf holds a few dozen of these) are lost.
    assert!(!kept.contains(&10_000));
    assert!(copied.rows > ROWS - 100, "{copied:?}");
    assert_eq!(kept.last(), Some(&(ROWS - 1)));
    let lost: Vec<u64> = (0..ROWS)
        .filter(|k| kept.binary_search(k).is_err())
        .collect();
    let (first, last) = (lost[0], lost[lost.len() - 1]);
    assert_eq!(
        last - first + 1,
        lost.len() as u64,
        "one run of lost rows: {lost:?}"
    );
}

#[test]
fn a_range_copies_only_its_keys() {
    let src = memory_db();
    let txn = src.begin_write().expect("write");
    {
        let mut t = txn.open_table(T).expect("table");
        for k in 0..100u64 {
            t.insert(k, [0u8; 1].as_slice()).expect("insert");
        }
    }
    txn.commit().expect("commit");
    let dst = memory_db();
    let (lo, hi) = (10u64.to_le_bytes(), 20u64.to_le_bytes());
    let range = (Bound::Included(&lo[..]), Bound::Excluded(&hi[..]));
    let copied = copy_table(&src.begin_read().expect("read"), &dst, T, range).expect("copy");
    assert_eq!((copied.rows, copied.stopped), (10, None));
}
