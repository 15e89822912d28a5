//! Crash tests of the commit journal: a simulated disk that keeps, at a power cut, what was
//! synced plus any subset of the later writes (some torn at 512-byte sectors), and redb
//! running on it.

use std::sync::{Arc, Mutex};

use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};

use super::*;

/// A deterministic pseudo-random source (xorshift), so that a failing seed can be rerun.
/// (Also the journal file's tests'.)
pub(in crate::storage) struct Rng(pub(in crate::storage) u64);

impl Rng {
    pub(in crate::storage) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(in crate::storage) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Clone)]
enum Change {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Sim {
    /// What reads see (the page cache).
    data: Vec<u8>,
    /// What survives a power cut for sure.
    durable: Vec<u8>,
    /// Changes since the last sync, in order.
    unsynced: Vec<Change>,
    /// Operations left before the power is cut (`None`: never).
    ops_left: Option<u64>,
    syncs: u64,
    /// Length of the longest single write.
    largest_write: usize,
    /// Calls of `len` (a `statx` on a real file).
    len_calls: u64,
}

/// One simulated file; clones share it.
#[derive(Debug, Clone, Default)]
struct SimFile(Arc<Mutex<Sim>>);

impl SimFile {
    fn with(data: Vec<u8>) -> SimFile {
        SimFile(Arc::new(Mutex::new(Sim {
            durable: data.clone(),
            data,
            ..Sim::default()
        })))
    }

    fn cut_power_after(&self, ops: u64) {
        self.0.lock().unwrap().ops_left = Some(ops);
    }

    fn syncs(&self) -> u64 {
        self.0.lock().unwrap().syncs
    }

    fn contents(&self) -> Vec<u8> {
        self.0.lock().unwrap().data.clone()
    }

    /// The file after a power cut: the synced bytes, then each later change kept, dropped or
    /// (a write) kept in part, sector by sector.
    fn after_power_cut(&self, rng: &mut Rng) -> SimFile {
        let sim = self.0.lock().unwrap();
        let mut data = sim.durable.clone();
        for change in &sim.unsynced {
            match change {
                Change::SetLen(len) => {
                    if rng.below(2) == 0 {
                        data.resize(*len as usize, 0);
                    }
                }
                Change::Write(offset, bytes) => {
                    let keep = rng.below(3);
                    for (i, sector) in bytes.chunks(512).enumerate() {
                        if keep == 0 || (keep == 2 && rng.below(2) == 0) {
                            continue;
                        }
                        let at = *offset as usize + i * 512;
                        if data.len() < at + sector.len() {
                            data.resize(at + sector.len(), 0);
                        }
                        data[at..at + sector.len()].copy_from_slice(sector);
                    }
                }
            }
        }
        SimFile::with(data)
    }

    fn step(sim: &mut Sim) -> io::Result<()> {
        match &mut sim.ops_left {
            Some(0) => Err(io::Error::other("power cut")),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl StorageBackend for SimFile {
    fn len(&self) -> io::Result<u64> {
        let mut sim = self.0.lock().unwrap();
        sim.len_calls += 1;
        Ok(sim.data.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let sim = self.0.lock().unwrap();
        let at = offset as usize;
        let src = sim
            .data
            .get(at..at + out.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut sim = self.0.lock().unwrap();
        SimFile::step(&mut sim)?;
        sim.data.resize(len as usize, 0);
        sim.unsynced.push(Change::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut sim = self.0.lock().unwrap();
        SimFile::step(&mut sim)?;
        sim.durable = sim.data.clone();
        sim.unsynced.clear();
        sim.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut sim = self.0.lock().unwrap();
        SimFile::step(&mut sim)?;
        let at = offset as usize;
        if sim.data.len() < at + data.len() {
            sim.data.resize(at + data.len(), 0);
        }
        sim.data[at..at + data.len()].copy_from_slice(data);
        sim.largest_write = sim.largest_write.max(data.len());
        sim.unsynced.push(Change::Write(offset, data.to_vec()));
        Ok(())
    }
}

/// One power-cut run's set-up: its random source (from `seed`) and two empty files.
fn rig(seed: u64) -> (Rng, SimFile, SimFile) {
    let rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (rng, SimFile::default(), SimFile::default())
}

fn journaled(main: &SimFile, journal: &SimFile, capacity: u64) -> Journaled<SimFile, SimFile> {
    Journaled::open(main.clone(), journal.clone(), capacity)
        .expect("open")
        .0
}

#[test]
fn a_sync_writes_the_journal_once_and_leaves_the_database_file_unsynced() {
    let (main, journal) = (SimFile::default(), SimFile::default());
    let j = journaled(&main, &journal, MIN_CAPACITY);
    let (main_syncs, journal_syncs) = (main.syncs(), journal.syncs());
    j.set_len(64 * 1024).unwrap();
    for page in [3u64, 9, 1, 12, 7] {
        j.write(page * 4096, &[page as u8; 4096]).unwrap();
    }
    j.sync_data().unwrap();
    assert_eq!(main.syncs(), main_syncs, "the database file is not synced");
    assert_eq!(journal.syncs(), journal_syncs + 1, "one journal sync");
    assert_eq!(j.counters().records_total(), 1);
    // Nothing written since: nothing to do.
    j.sync_data().unwrap();
    assert_eq!(journal.syncs(), journal_syncs + 1);
}

/// The database file's length is kept by the journal layer, never asked of the file during
/// commits (see `main_len`), and stays right through growth, shrinking and a failed write.
#[test]
fn the_database_length_is_kept_without_asking_the_file() {
    let (main, journal) = (SimFile::default(), SimFile::default());
    let j = journaled(&main, &journal, MIN_CAPACITY);
    let asked = main.0.lock().unwrap().len_calls;
    j.set_len(8192).unwrap();
    j.write(12_000, &[1; 100]).unwrap();
    assert_eq!(j.len().unwrap(), 12_100);
    j.write(0, &[2; 10]).unwrap();
    j.sync_data().unwrap();
    assert_eq!(j.len().unwrap(), 12_100);
    j.set_len(4096).unwrap();
    assert_eq!(j.len().unwrap(), 4096);
    assert_eq!(
        main.0.lock().unwrap().len_calls,
        asked,
        "no len() of the file"
    );
    assert_eq!(main.contents().len(), 4096);
    // A write that fails: the length is read back from the file.
    main.cut_power_after(0);
    assert!(j.write(20_000, &[3; 10]).is_err());
    assert_eq!(j.len().unwrap(), main.contents().len() as u64);
}

#[test]
fn dirty_ranges_merge_when_they_touch_or_overlap() {
    let mut st = State {
        dirty: BTreeMap::new(),
        dirty_bytes: 0,
        overflow: false,
        resized: false,
        header_written: false,
        generation: 1,
        seq: 0,
        write_at: BLOCK,
    };
    st.mark(100, 200, u64::MAX);
    st.mark(300, 400, u64::MAX);
    st.mark(200, 250, u64::MAX); // touches the first
    st.mark(50, 120, u64::MAX); // overlaps the first's start
    assert_eq!(
        st.dirty.iter().collect::<Vec<_>>(),
        [(&50, &250), (&300, &400)]
    );
    st.mark(240, 310, u64::MAX); // bridges both
    assert_eq!(st.dirty.iter().collect::<Vec<_>>(), [(&50, &400)]);
    assert_eq!(st.dirty_bytes, 350);
    st.truncate(380);
    assert_eq!(st.dirty.iter().collect::<Vec<_>>(), [(&50, &380)]);
    assert_eq!(st.dirty_bytes, 330);
    st.mark(1000, 2000, 1000);
    assert!(st.overflow, "past the limit, ranges are no longer tracked");
    assert!(st.dirty.is_empty());
}

/// Random writes and syncs, a power cut at a random point, a reopen: every byte not written
/// since the last completed sync has its value at that sync.
#[test]
fn after_a_power_cut_the_database_file_is_as_of_the_last_completed_sync() {
    for seed in 1..=300u64 {
        let (mut rng, main, journal) = rig(seed);
        // A small journal, so that checkpoints happen too.
        let j = journaled(&main, &journal, MIN_CAPACITY);
        let pages = 64 + rng.below(64);
        j.set_len(pages * 4096).unwrap();
        j.sync_data().unwrap();
        main.cut_power_after(rng.below(400));
        journal.cut_power_after(rng.below(400));
        let mut synced = main.contents();
        let mut written_since = vec![false; pages as usize * 4096];
        'run: for _ in 0..200 {
            for _ in 0..1 + rng.below(12) {
                let page = rng.below(pages);
                let len = 512 * (1 + rng.below(16));
                let at = page * 4096 + 512 * rng.below(8);
                let len = len.min(pages * 4096 - at);
                let byte = rng.next() as u8;
                if j.write(at, &vec![byte; len as usize]).is_err() {
                    break 'run;
                }
                for w in &mut written_since[at as usize..(at + len) as usize] {
                    *w = true;
                }
            }
            if j.sync_data().is_err() {
                break 'run;
            }
            synced = main.contents();
            written_since.iter_mut().for_each(|w| *w = false);
        }
        let main_after = main.after_power_cut(&mut rng);
        let journal_after = journal.after_power_cut(&mut rng);
        let _reopened = journaled(&main_after, &journal_after, MIN_CAPACITY);
        let got = main_after.contents();
        assert!(
            got.len() >= synced.len(),
            "seed {seed}: file shorter than at the sync"
        );
        for (i, (&want, &have)) in synced.iter().zip(&got).enumerate() {
            if !written_since[i] {
                assert_eq!(have, want, "seed {seed}: byte {i} lost its synced value");
            }
        }
    }
}

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

fn open_db(main: &SimFile, journal: &SimFile, capacity: u64) -> redb::Database {
    redb::Database::builder()
        .create_with_backend(journaled(main, journal, capacity))
        .expect("the database opens")
}

/// redb on the journal: commits, a power cut in the middle of one, a reopen (with redb's
/// repair): every committed row is there, with its value.
#[test]
fn every_committed_transaction_survives_a_power_cut_in_the_middle_of_the_next() {
    for seed in 1..=60u64 {
        let (mut rng, main, journal) = rig(seed);
        // 1 MiB: records of a few pages, a checkpoint every few dozen commits.
        let db = open_db(&main, &journal, MIN_CAPACITY);
        let cut_at = 50 + rng.below(3000);
        main.cut_power_after(cut_at);
        journal.cut_power_after(cut_at);
        let mut committed: Vec<(u64, u8, u16)> = Vec::new();
        let mut next_key = 0u64;
        'run: for _ in 0..400 {
            let Ok(txn) = db.begin_write() else { break };
            let rows = 1 + rng.below(40);
            let mut these = Vec::new();
            {
                let Ok(mut t) = txn.open_table(TABLE) else {
                    break;
                };
                for _ in 0..rows {
                    let (fill, len) = (rng.next() as u8, 1 + rng.below(600) as u16);
                    if t.insert(next_key, vec![fill; len as usize].as_slice())
                        .is_err()
                    {
                        break 'run;
                    }
                    these.push((next_key, fill, len));
                    next_key += 1;
                }
                // Deletes too, so that freed pages are reused.
                if committed.len() > 50 && rng.below(3) == 0 {
                    let gone = committed.remove(rng.below(committed.len() as u64) as usize);
                    if t.remove(gone.0).is_err() {
                        break 'run;
                    }
                    these.push((gone.0, 0, 0));
                }
            }
            if txn.commit().is_err() {
                break;
            }
            for row in these {
                if row.2 == 0 {
                    continue;
                }
                committed.push(row);
            }
        }
        drop(db);
        let main_after = main.after_power_cut(&mut rng);
        let journal_after = journal.after_power_cut(&mut rng);
        let db = open_db(&main_after, &journal_after, MIN_CAPACITY);
        let read = db.begin_read().unwrap();
        if committed.is_empty() {
            continue;
        }
        let t = read
            .open_table(TABLE)
            .unwrap_or_else(|e| panic!("seed {seed}: table: {e}"));
        assert!(t.len().unwrap() >= committed.len() as u64, "seed {seed}");
        for (key, fill, len) in &committed {
            let v = t
                .get(key)
                .unwrap()
                .unwrap_or_else(|| panic!("seed {seed}: committed key {key} lost"));
            assert_eq!(
                v.value(),
                vec![*fill; *len as usize].as_slice(),
                "seed {seed}"
            );
        }
    }
}

#[test]
fn a_clean_close_leaves_a_database_file_that_opens_without_the_journal() {
    let (main, journal) = (SimFile::default(), SimFile::default());
    let db = open_db(&main, &journal, MIN_CAPACITY);
    let txn = db.begin_write().unwrap();
    txn.open_table(TABLE)
        .unwrap()
        .insert(7, b"x".as_slice())
        .unwrap();
    txn.commit().unwrap();
    drop(db);
    // Only what was synced to the database file itself: the journal is not used.
    let mut rng = Rng(99);
    let alone = main.after_power_cut(&mut rng);
    let db = redb::Database::builder()
        .create_with_backend(alone)
        .expect("opens without repair");
    let read = db.begin_read().unwrap();
    let t = read.open_table(TABLE).unwrap();
    assert_eq!(t.get(7).unwrap().unwrap().value(), b"x");
}

#[test]
fn a_record_too_large_for_the_journal_is_a_checkpoint() {
    let (main, journal) = (SimFile::default(), SimFile::default());
    let j = journaled(&main, &journal, MIN_CAPACITY);
    j.set_len(4 << 20).unwrap();
    j.write(0, &vec![1u8; 2 << 20]).unwrap();
    let main_syncs = main.syncs();
    j.sync_data().unwrap();
    assert_eq!(main.syncs(), main_syncs + 1, "the database file was synced");
    assert_eq!(j.counters().checkpoints_total(), 1);
    assert_eq!(j.counters().records_total(), 0);
    // And a torn journal afterwards replays nothing of it.
    let mut rng = Rng(5);
    let (m, jn) = (
        main.after_power_cut(&mut rng),
        journal.after_power_cut(&mut rng),
    );
    let (_, replayed) = Journaled::open(m.clone(), jn, MIN_CAPACITY).unwrap();
    assert_eq!(replayed.records, 0);
    assert_eq!(&m.contents()[..4096], &[1u8; 4096][..]);
}

#[test]
fn records_of_an_earlier_generation_are_not_replayed() {
    let (main, journal) = (SimFile::default(), SimFile::default());
    let j = journaled(&main, &journal, MIN_CAPACITY);
    j.set_len(8192).unwrap();
    j.write(0, &[1u8; 4096]).unwrap();
    j.sync_data().unwrap();
    j.write(0, &[2u8; 4096]).unwrap();
    j.sync_data().unwrap();
    drop(j);
    // Reopen: the two records are replayed (the values at the last sync), then a new generation.
    let (j, replayed) = Journaled::open(main.clone(), journal.clone(), MIN_CAPACITY).unwrap();
    assert_eq!(replayed.records, 2);
    assert_eq!(&main.contents()[..4096], &[2u8; 4096][..]);
    // The old records are still in the journal's blocks, but of the old generation.
    j.write(0, &[3u8; 4096]).unwrap();
    j.sync_data().unwrap();
    drop(j);
    let (_, replayed) = Journaled::open(main.clone(), journal.clone(), MIN_CAPACITY).unwrap();
    assert_eq!(replayed.records, 1);
    assert_eq!(&main.contents()[..4096], &[3u8; 4096][..]);
}

#[test]
fn a_record_larger_than_the_stage_is_written_in_pieces_and_replays_whole() {
    let (main, journal) = (SimFile::default(), SimFile::default());
    let j = journaled(&main, &journal, 8 << 20);
    j.set_len(4 << 20).unwrap();
    j.sync_data().unwrap();
    // 1.5 MiB in 150 ranges of 10 KiB (every other 10 KiB), each byte its own value.
    let mut want = vec![0u8; 4 << 20];
    for r in 0..150usize {
        let at = r * 20 * 1024;
        let bytes: Vec<u8> = (0..10 * 1024).map(|i| (i * 7 + r) as u8).collect();
        want[at..at + bytes.len()].copy_from_slice(&bytes);
        j.write(at as u64, &bytes).unwrap();
    }
    journal.0.lock().unwrap().largest_write = 0;
    j.sync_data().unwrap();
    assert_eq!(
        j.counters().records_total(),
        2,
        "a record, not a checkpoint"
    );
    let largest = journal.0.lock().unwrap().largest_write;
    assert!(
        largest <= STAGE + BLOCK as usize,
        "a write of {largest} bytes"
    );
    // The database file as it was before those writes, and the journal: the replay restores them.
    let mut rng = Rng(3);
    let before = main.0.lock().unwrap().durable.clone();
    let (m, jn) = (SimFile::with(before), journal.after_power_cut(&mut rng));
    let (_, replayed) = Journaled::open(m.clone(), jn, 8 << 20).unwrap();
    assert_eq!(replayed.records, 2);
    assert!(m.contents() == want, "the replayed file differs");
}

#[test]
fn the_durable_hook_runs_after_each_sync_of_a_header_write_that_succeeded_and_only_then() {
    let (main, journal) = (SimFile::default(), SimFile::default());
    // The journal's sync count at each call of the hook.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let hook: DurableHook = {
        let (calls, journal) = (calls.clone(), journal.clone());
        Arc::new(move || calls.lock().unwrap().push(journal.syncs()))
    };
    let j = journaled(&main, &journal, MIN_CAPACITY).on_durable(hook);
    // What redb does when the file grows in the middle of a commit: pages written, the file
    // extended and synced, the commit's header not written yet. Not a commit point.
    j.set_len(64 * 1024).unwrap();
    j.write(8192, &[1; 4096]).unwrap();
    j.sync_data().unwrap();
    assert!(
        calls.lock().unwrap().is_empty(),
        "a sync without the header published"
    );
    // The commit's end: its header written, then the sync.
    j.write(4096, &[1; 4096]).unwrap();
    j.write(0, &[3; 512]).unwrap();
    let before = journal.syncs();
    j.sync_data().unwrap();
    assert_eq!(*calls.lock().unwrap(), vec![before + 1]);
    // A sync with nothing new: no commit point.
    j.sync_data().unwrap();
    assert_eq!(calls.lock().unwrap().len(), 1);
    // A sync that fails: no call.
    j.write(0, &[2; 512]).unwrap();
    journal.cut_power_after(0);
    assert!(j.sync_data().is_err());
    assert_eq!(calls.lock().unwrap().len(), 1);
}

/// A file system with no room left.
#[derive(Debug)]
struct Full;

impl StorageBackend for Full {
    fn len(&self) -> std::io::Result<u64> {
        Ok(0)
    }
    fn read(&self, _: u64, _: &mut [u8]) -> std::io::Result<()> {
        Ok(())
    }
    fn set_len(&self, _: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn write(&self, _: u64, _: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
    }
}

#[test]
fn preparing_a_journal_on_a_full_disk_is_a_no_space_error() {
    // What the op log's and the journal's openers turn into "running without it".
    let e = prepare_journal(&Full, 1 << 20).unwrap_err();
    assert!(crate::disk_full::is_no_space(&e), "{e}");
}
