//! The commit journal beneath redb: a durable commit costs one sequential write and one
//! fdatasync of `edge.redb-journal` instead of an fdatasync of the ~10 pages redb scattered
//! over `edge.redb` (measured on this VM's disk: 10 scattered 4 KiB pages 276-454 µs, the same
//! 10 pages in one run 79-88 µs; on SD cards scattered writes cost far more).
//!
//! How (a redo journal of whole writes, as SQLite's WAL or InnoDB's doublewrite buffer do it):
//! - Writes go to the database file as before (the page cache), and their byte ranges are
//!   remembered. At `sync_data`, the bytes of those ranges are read back and appended to the
//!   journal as one checksummed record (with `O_DIRECT`, `journal_file.rs`), and only the
//!   journal is synced. The database file's length is kept here, not asked of the file.
//! - When the journal is full (or a record would not fit), the database file itself is synced
//!   (a checkpoint) and the journal starts over under a new generation.
//! - At open, the records of the current generation are replayed onto the database file, in
//!   order, up to the first one that is torn, out of sequence or of another generation; then a
//!   checkpoint. The file is then exactly what the last successful `sync_data` promised, the
//!   state redb itself recovers from.
//!
//! Invariants:
//! - After `sync_data` returns, every write before it is in the database file synced at a
//!   checkpoint or in a synced record of the current generation.
//! - A record holds the final bytes of every range written since the previous sync, so
//!   replaying records in order gives each byte its value at the last sync; pages written after
//!   it are pages redb's copy-on-write does not need (as without the journal, where any subset
//!   of unsynced writes may land).
//! - The journal file's `capacity` bytes are allocated at open (`fallocate`, or zeros written
//!   where the file system cannot), so a record never finds the disk full; once the journal
//!   went round once, a record rewrites written blocks and its fdatasync has no extent
//!   conversion to flush.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{BackendError, StorageBackend};

use super::journal_file::AlignedBuf;

/// Records start at block boundaries: a torn write of one record never touches the blocks of
/// the records before it.
const BLOCK: u64 = 4096;
const HEADER_MAGIC: &[u8; 8] = b"RMQEJNL1";
const RECORD_MAGIC: &[u8; 8] = b"RMQEREC1";
/// magic, generation, crc32 of the 16 bytes before it.
const HEADER_LEN: usize = 8 + 8 + 4;
/// magic, generation, seq, database length, extent count, data length, crc32 of the record.
const RECORD_HEAD_LEN: usize = 8 + 8 + 8 + 8 + 4 + 8 + 4;
/// offset (u64) and length (u32) of one range.
const EXTENT_LEN: usize = 12;
/// Most bytes of a record held in memory while it is written (a commit of many MiB, such as
/// redb's repair, is written in pieces of this size).
const STAGE: usize = 256 * 1024;
/// Smallest journal: the header block and room for a few commits.
pub const MIN_CAPACITY: u64 = 1 << 20;

/// What a replay at open did, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Replayed {
    pub records: u64,
    pub bytes: u64,
}

/// What the journal did since open, for `/metrics` (shared with the `Store`).
#[derive(Debug, Default)]
pub struct JournalCounters {
    records: AtomicU64,
    checkpoints: AtomicU64,
}

impl JournalCounters {
    /// Syncs made durable by a journal record.
    pub fn records_total(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Syncs of the database file itself (journal full, record too large, clean close).
    pub fn checkpoints_total(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }
}

/// Called after a sync that succeeded and made a write of redb's header durable (a commit
/// point: redb commits in one phase, its header written just before the commit's only sync), on
/// the syncing thread (inside redb's commit): the storage writer releases acknowledgements from
/// here instead of after redb's work that follows the sync (`writer.rs`,
/// `Shared::publish_durable`). Not after other syncs: redb also syncs in the middle of a commit
/// when the file grows (`sync_file` after the resize), before the commit's header is written;
/// acknowledging there lost the commit to a kill -9 that followed (thirteenth session).
pub type DurableHook = Arc<dyn Fn() + Send + Sync>;

/// A redb backend over `main` (the database file) that makes syncs durable through `journal`:
/// see the module header.
pub struct Journaled<M, J> {
    main: M,
    journal: J,
    capacity: u64,
    state: Mutex<State>,
    counters: Arc<JournalCounters>,
    /// The database file's length, kept here (every change goes through this layer): a
    /// `statx` of it per commit made each write change its times at full resolution (Linux's
    /// multigrain timestamps), and its inode shares an inode-table block with the journal's,
    /// which each journal sync then wrote (one more device write per commit).
    main_len: AtomicU64,
    on_durable: Option<DurableHook>,
}

struct State {
    /// Ranges of `main` written since the last sync: start -> end, disjoint, not adjacent.
    dirty: BTreeMap<u64, u64>,
    dirty_bytes: u64,
    /// Too much written since the last sync for one record: the next sync is a checkpoint, and
    /// ranges are no longer tracked (bounded memory under `durability = "none"`).
    overflow: bool,
    /// The length of `main` changed since the last sync.
    resized: bool,
    /// redb's header (the file's first block) was written since the last sync: the next sync
    /// is a commit point ([`DurableHook`]).
    header_written: bool,
    generation: u64,
    /// Sequence number of the next record in this generation.
    seq: u64,
    /// Where the next record goes in the journal.
    write_at: u64,
}

impl<M: StorageBackend, J: StorageBackend> Journaled<M, J> {
    /// Replays what `journal` holds onto `main`, makes `main` durable, and starts a new
    /// generation in a journal of `capacity` bytes (at least [`MIN_CAPACITY`]). (What
    /// `open.rs` does in steps, with a fallback when the journal finds no room.)
    #[cfg(test)]
    pub fn open(main: M, journal: J, capacity: u64) -> io::Result<(Self, Replayed)> {
        let (old_generation, replayed) = replay(&main, &journal)?;
        if replayed.records > 0 {
            main.sync_data()?;
        }
        prepare_journal(&journal, capacity)?;
        Ok((
            Journaled::start(main, journal, capacity, old_generation)?,
            replayed,
        ))
    }

    /// Starts a new generation in `journal`, which was replayed (its header's generation was
    /// `old_generation`) and prepared ([`prepare_journal`]) for `capacity` bytes.
    pub fn start(
        main: M,
        journal: J,
        capacity: u64,
        old_generation: Option<u64>,
    ) -> io::Result<Self> {
        let capacity = capacity_of(capacity);
        let generation = next_generation(old_generation);
        write_header(&journal, generation)?;
        journal.sync_data()?;
        let main_len = AtomicU64::new(main.len()?);
        let state = State {
            dirty: BTreeMap::new(),
            dirty_bytes: 0,
            overflow: false,
            resized: false,
            header_written: false,
            generation,
            seq: 0,
            write_at: BLOCK,
        };
        Ok(Journaled {
            main,
            journal,
            capacity,
            state: Mutex::new(state),
            counters: Arc::default(),
            main_len,
            on_durable: None,
        })
    }

    /// Calls `hook` after every successful sync (see [`DurableHook`]).
    pub fn on_durable(mut self, hook: DurableHook) -> Self {
        self.on_durable = Some(hook);
        self
    }

    /// Its counters, shared.
    pub fn counters(&self) -> Arc<JournalCounters> {
        self.counters.clone()
    }

    /// Syncs the database file itself and starts a new, empty generation of the journal.
    fn checkpoint(&self, st: &mut State) -> io::Result<()> {
        self.main.sync_data()?;
        st.generation = next_generation(Some(st.generation));
        write_header(&self.journal, st.generation)?;
        self.journal.sync_data()?;
        st.seq = 0;
        st.write_at = BLOCK;
        st.clear();
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Appends one record with the current bytes of every dirty range at `write_at`; returns
    /// its size in the journal. Staged through at most [`STAGE`] bytes of memory: a large commit
    /// is written in pieces and its head (which holds the checksum) last.
    fn write_record(&self, st: &State) -> io::Result<u64> {
        let extents = st.dirty.len();
        let unpadded = (RECORD_HEAD_LEN + extents * EXTENT_LEN) as u64 + st.dirty_bytes;
        let mut head = [0u8; RECORD_HEAD_LEN];
        head[0..8].copy_from_slice(RECORD_MAGIC);
        head[8..16].copy_from_slice(&st.generation.to_le_bytes());
        head[16..24].copy_from_slice(&st.seq.to_le_bytes());
        head[24..32].copy_from_slice(&self.main_len.load(Ordering::Relaxed).to_le_bytes());
        head[32..36].copy_from_slice(&(extents as u32).to_le_bytes());
        head[36..44].copy_from_slice(&st.dirty_bytes.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[..RECORD_HEAD_LEN - 4]);
        let mut out = Staged {
            journal: &self.journal,
            at: st.write_at,
            buf: AlignedBuf::with_capacity((unpadded as usize).min(STAGE + BLOCK as usize)),
        };
        out.space(RECORD_HEAD_LEN)?.copy_from_slice(&head);
        for (&start, &end) in &st.dirty {
            let extent = out.space(EXTENT_LEN)?;
            extent[..8].copy_from_slice(&start.to_le_bytes());
            extent[8..].copy_from_slice(&((end - start) as u32).to_le_bytes());
            crc.update(extent);
        }
        for (&start, &end) in &st.dirty {
            let mut pos = start;
            while pos < end {
                let n = (end - pos).min(STAGE as u64) as usize;
                let piece = out.space(n)?;
                self.main.read(pos, piece)?;
                crc.update(piece);
                pos += n as u64;
            }
        }
        let crc = crc.finalize().to_le_bytes();
        head[RECORD_HEAD_LEN - 4..].copy_from_slice(&crc);
        out.finish(st.write_at, &head)?;
        Ok(unpadded.div_ceil(BLOCK) * BLOCK)
    }

    /// Makes every write so far durable: nothing (clean), a record, or a checkpoint.
    fn sync_locked(&self, st: &mut State) -> io::Result<()> {
        if st.is_clean() {
            return Ok(());
        }
        if st.overflow || st.write_at + self.record_size(st) > self.capacity {
            // The checkpoint's sync of the database file makes the dirty ranges durable too.
            return self.checkpoint(st);
        }
        let size = self.write_record(st)?;
        self.journal.sync_data()?;
        st.write_at += size;
        st.seq += 1;
        st.clear();
        self.counters.records.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes a record of the current dirty ranges takes in the journal.
    fn record_size(&self, st: &State) -> u64 {
        let unpadded = (RECORD_HEAD_LEN + st.dirty.len() * EXTENT_LEN) as u64 + st.dirty_bytes;
        unpadded.div_ceil(BLOCK) * BLOCK
    }
}

/// A record on its way into the journal: bytes gather in `buf` and go out in whole blocks.
struct Staged<'a, J> {
    journal: &'a J,
    /// Where `buf[0]` goes in the journal.
    at: u64,
    buf: AlignedBuf,
}

impl<J: StorageBackend> Staged<'_, J> {
    /// `n` (at most [`STAGE`]) zeroed bytes at the end of the record, to fill in.
    fn space(&mut self, n: usize) -> io::Result<&mut [u8]> {
        if self.buf.len() + n > STAGE + BLOCK as usize {
            // Out in whole blocks (no partial page to read back); the rest stays.
            let whole = self.buf.len() / BLOCK as usize * BLOCK as usize;
            self.journal.write(self.at, &self.buf.as_slice()[..whole])?;
            self.at += whole as u64;
            self.buf.drain_front(whole);
        }
        let len = self.buf.len();
        self.buf.resize(len + n);
        Ok(&mut self.buf.as_mut_slice()[len..])
    }

    /// Writes the rest, padded to a whole block, then `head` (with its checksum) at `start`,
    /// the record's first bytes. A record that stayed in `buf` is written once.
    fn finish(mut self, start: u64, head: &[u8]) -> io::Result<()> {
        let padded = (self.buf.len() as u64).div_ceil(BLOCK) as usize * BLOCK as usize;
        self.buf.resize(padded);
        if self.at == start {
            self.buf.as_mut_slice()[..head.len()].copy_from_slice(head);
            return self.journal.write(self.at, self.buf.as_slice());
        }
        self.journal.write(self.at, self.buf.as_slice())?;
        self.journal.write(start, head)
    }
}

impl State {
    fn clear(&mut self) {
        self.dirty.clear();
        self.dirty_bytes = 0;
        self.overflow = false;
        self.resized = false;
        self.header_written = false;
    }

    fn is_clean(&self) -> bool {
        self.dirty.is_empty() && !self.overflow && !self.resized
    }

    /// Adds `[start, end)` to the dirty ranges, merging it with those it touches.
    fn mark(&mut self, start: u64, end: u64, limit: u64) {
        if self.overflow || start >= end {
            return;
        }
        let (mut start, mut end) = (start, end);
        // A range starting at or before `start` that reaches it.
        if let Some((&s, &e)) = self.dirty.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        // Ranges starting inside [start, end] (no allocation: this runs on every write).
        while let Some((&s, &e)) = self.dirty.range(start..=end).next() {
            self.dirty.remove(&s);
            self.dirty_bytes -= e - s;
            end = end.max(e);
        }
        self.dirty.insert(start, end);
        self.dirty_bytes += end - start;
        if self.dirty_bytes > limit {
            self.overflow = true;
            self.dirty.clear();
            self.dirty_bytes = 0;
        }
    }

    /// Drops the parts of dirty ranges at or past `len` (the file was shortened).
    fn truncate(&mut self, len: u64) {
        let past: Vec<(u64, u64)> = self.dirty.range(len..).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in past {
            self.dirty.remove(&s);
            self.dirty_bytes -= e - s;
        }
        if let Some((&s, e)) = self.dirty.range_mut(..len).next_back() {
            if *e > len {
                self.dirty_bytes -= *e - len;
                *e = len;
            }
            debug_assert!(s < len);
        }
    }
}

impl<M, J> fmt::Debug for Journaled<M, J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journaled")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<M: StorageBackend, J: StorageBackend> StorageBackend for Journaled<M, J> {
    fn len(&self) -> io::Result<u64> {
        Ok(self.main_len.load(Ordering::Relaxed))
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.main.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = edge_mqtt::util::lock(&self.state);
        let set = self.main.set_len(len);
        self.main_len.store(
            match set {
                Ok(()) => len,
                Err(_) => self.main.len()?,
            },
            Ordering::Relaxed,
        );
        set?;
        st.truncate(len);
        st.resized = true;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = edge_mqtt::util::lock(&self.state);
        let commit_point = st.header_written;
        self.sync_locked(&mut st)?;
        drop(st);
        if let Some(hook) = self.on_durable.as_ref().filter(|_| commit_point) {
            hook();
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut st = edge_mqtt::util::lock(&self.state);
        let end = offset + data.len() as u64;
        if let Err(e) = self.main.write(offset, data) {
            // It may have grown the file part of the way.
            self.main_len.store(self.main.len()?, Ordering::Relaxed);
            return Err(e);
        }
        self.main_len.fetch_max(end, Ordering::Relaxed);
        let limit = self.capacity - BLOCK;
        st.mark(offset, end, limit);
        st.header_written |= offset < BLOCK;
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        // A clean close leaves the database file complete on its own (read-only opens and
        // earlier versions read it without the journal).
        let result = {
            let mut st = edge_mqtt::util::lock(&self.state);
            self.checkpoint(&mut st)
        };
        let closed = self.main.close().and(self.journal.close());
        result.and(closed)
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.main.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.main.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.main.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.main.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.main.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.main.query_lock_range(start, end)
    }
}

/// Replays the records of the journal's current generation onto `main` (without syncing it).
/// Returns the generation found in the header (`None`: no valid header, nothing replayed).
pub fn replay<M: StorageBackend, J: StorageBackend>(
    main: &M,
    journal: &J,
) -> io::Result<(Option<u64>, Replayed)> {
    let mut replayed = Replayed::default();
    let journal_len = journal.len()?;
    let Some(generation) = read_header(journal, journal_len)? else {
        return Ok((None, replayed));
    };
    let mut at = BLOCK;
    let mut seq = 0;
    while let Some((record, next)) = read_record(journal, journal_len, at, generation, seq)? {
        main.set_len(record.main_len)?;
        let mut data_at = 0;
        for &(offset, len) in &record.extents {
            let end = data_at + len as usize;
            main.write(offset, &record.data[data_at..end])?;
            data_at = end;
        }
        replayed.records += 1;
        replayed.bytes += record.data.len() as u64;
        seq += 1;
        at = next;
    }
    Ok((Some(generation), replayed))
}

struct Record {
    main_len: u64,
    extents: Vec<(u64, u32)>,
    data: Vec<u8>,
}

fn read_header<J: StorageBackend>(journal: &J, journal_len: u64) -> io::Result<Option<u64>> {
    if journal_len < BLOCK {
        return Ok(None);
    }
    let mut h = [0u8; HEADER_LEN];
    journal.read(0, &mut h)?;
    let crc = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
    if &h[..8] != HEADER_MAGIC || crc32fast::hash(&h[..16]) != crc {
        return Ok(None);
    }
    Ok(Some(u64::from_le_bytes(
        h[8..16].try_into().expect("8 bytes"),
    )))
}

/// The record at `at` if it is whole, of `generation` and numbered `seq`, and where the next
/// one would start.
fn read_record<J: StorageBackend>(
    journal: &J,
    journal_len: u64,
    at: u64,
    generation: u64,
    seq: u64,
) -> io::Result<Option<(Record, u64)>> {
    if at + RECORD_HEAD_LEN as u64 > journal_len {
        return Ok(None);
    }
    let mut head = [0u8; RECORD_HEAD_LEN];
    journal.read(at, &mut head)?;
    let u64_at = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().expect("8 bytes"));
    let extent_count = u32::from_le_bytes(head[32..36].try_into().expect("4 bytes")) as u64;
    let data_len = u64_at(36);
    let crc = u32::from_le_bytes(head[44..48].try_into().expect("4 bytes"));
    if &head[..8] != RECORD_MAGIC || u64_at(8) != generation || u64_at(16) != seq {
        return Ok(None);
    }
    let body_len = extent_count
        .checked_mul(EXTENT_LEN as u64)
        .and_then(|e| e.checked_add(data_len));
    let Some(body_len) = body_len.filter(|&b| at + RECORD_HEAD_LEN as u64 + b <= journal_len)
    else {
        return Ok(None);
    };
    let mut body = vec![0u8; body_len as usize];
    journal.read(at + RECORD_HEAD_LEN as u64, &mut body)?;
    if record_crc(&head[..RECORD_HEAD_LEN - 4], &body) != crc {
        return Ok(None);
    }
    let table_len = extent_count as usize * EXTENT_LEN;
    let extents: Vec<(u64, u32)> = body[..table_len]
        .chunks_exact(EXTENT_LEN)
        .map(|e| {
            let offset = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
            (
                offset,
                u32::from_le_bytes(e[8..].try_into().expect("4 bytes")),
            )
        })
        .collect();
    if extents.iter().map(|e| e.1 as u64).sum::<u64>() != data_len {
        return Ok(None);
    }
    let data = body.split_off(table_len);
    let next = (at + RECORD_HEAD_LEN as u64 + body_len).div_ceil(BLOCK) * BLOCK;
    let record = Record {
        main_len: u64_at(24),
        extents,
        data,
    };
    Ok(Some((record, next)))
}

fn record_crc(head: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(body);
    h.finalize()
}

fn write_header<J: StorageBackend>(journal: &J, generation: u64) -> io::Result<()> {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(HEADER_MAGIC);
    h[8..16].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    journal.write(0, &h)
}

/// The generation after `old`; with no readable header, one from the clock, so that records
/// of an earlier life of the file (whose header was lost) never pass for current ones.
fn next_generation(old: Option<u64>) -> u64 {
    match old {
        Some(g) => g.wrapping_add(1),
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// The journal size used for a configured `capacity`: whole blocks, at least [`MIN_CAPACITY`].
pub fn capacity_of(capacity: u64) -> u64 {
    capacity.max(MIN_CAPACITY).div_ceil(BLOCK) * BLOCK
}

/// Makes the journal exactly `capacity` bytes of allocated blocks (zeros written where the file
/// is shorter, not a sparse `set_len`), so that records never find the disk full.
pub fn prepare_journal<J: StorageBackend>(journal: &J, capacity: u64) -> io::Result<()> {
    let capacity = capacity_of(capacity);
    let len = journal.len()?;
    if len >= capacity {
        if len > capacity {
            journal.set_len(capacity)?;
            journal.sync_data()?;
        }
        return Ok(());
    }
    let zeros = super::journal_file::ZeroPages::new(1 << 20)?;
    let zeros = zeros.as_slice();
    let mut at = len;
    while at < capacity {
        let n = (capacity - at).min(zeros.len() as u64) as usize;
        journal.write(at, &zeros[..n])?;
        at += n as u64;
    }
    journal.sync_data()?;
    Ok(())
}

#[cfg(test)]
#[path = "journal_tests.rs"]
pub(super) mod tests;
