//! The op log: a redo log of the writer's ops, ahead of redb (issue 9, the backlog fill). A
//! commit that only queues publishes is made durable by one small record here (the encoded
//! ops, ~100 bytes a message plus payloads) and one fdatasync, and acknowledged; redb then
//! applies the same ops in a commit that does not sync, and that commit stores the record's
//! (generation, seq), the mark, in its `meta` table. redb commits durably (through
//! `journal.rs`) at least once a second, when half of the log is used, and for any commit
//! holding an op the log does not carry; after a checkpoint the log starts a new generation.
//!
//! Format: a header block (magic, generation, crc32), then records at block boundaries
//! (magic, generation, seq, payload length, crc32 of all of it, then the payload). Seqs start
//! at 1 in each generation. At open the records of the header's generation are read in order
//! up to the first that is torn, out of sequence or of another generation; those after the
//! mark are applied in one durable commit, one record at a time (`recover`).
//!
//! Invariants:
//! - A record is synced before its ops are acknowledged, and the commit that applies them
//!   carries its mark: whichever durable commit of redb comes next (the writer's, or the sync
//!   outbox's on the same file), redb's durable state says which records it holds.
//! - A new generation starts only after a durable commit that held every record.
//! - The file's `capacity` bytes are written (zeros) when it is created, so an append never
//!   finds the disk full; a record that does not fit is committed by redb instead.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, StorageBackend, WriteTransaction};

use super::journal_file::{AlignedBuf, JournalFile, ALIGN};
use super::ops::{self, decode_logged};
use super::tables::META;
use crate::error::{Error, Result};

const BLOCK: u64 = ALIGN as u64;
const HEADER_MAGIC: &[u8; 8] = b"RMQEOPL1";
const RECORD_MAGIC: &[u8; 8] = b"RMQEOPR1";
/// magic, generation, crc32 of the 16 bytes before it.
const HEADER_LEN: usize = 8 + 8 + 4;
/// magic, generation, seq, payload length, crc32 of the head before it and the payload.
const RECORD_HEAD_LEN: usize = 8 + 8 + 8 + 4 + 4;
/// Largest record: a window of 64 messages of ~3 KiB. Larger windows (large payloads) are
/// committed by redb itself: copying them into a record would cost memory (the encoding and
/// its staging stay allocated at their largest) for little gain, their time is in the bytes.
pub const MAX_RECORD: usize = 256 * 1024;

/// What the op log did since open, for `/metrics` (shared with the `Store`).
#[derive(Debug, Default)]
pub struct OpLogCounters {
    records: AtomicU64,
    restarts: AtomicU64,
}

impl OpLogCounters {
    /// Commits made durable (and acknowledged) by a record of the op log.
    pub fn records_total(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Generations started: each after a durable commit of redb that held every record.
    pub fn restarts_total(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
}

/// The op log file (see the module header).
pub struct OpLog {
    file: JournalFile,
    capacity: u64,
    generation: u64,
    /// Seq of the last record appended (or attempted) in this generation; 0: none.
    last_seq: u64,
    /// Where the next record goes.
    write_at: u64,
    /// An append failed: what it left may hide the records after it from the next open, so
    /// nothing is appended until redb commits durably and the log starts over.
    broken: bool,
    /// When the first record of this generation was appended.
    first_at: Option<std::time::Instant>,
    /// As opened: a valid header above the mark's generation and no record after it, so
    /// appends may start without a new generation (a start needs no write). Not at the
    /// mark's generation: the mark may cover a record that was torn (a failed append).
    empty_at_open: bool,
    counters: Arc<OpLogCounters>,
    stage: AlignedBuf,
}

/// Where redb's durable state stands in the op log: the last record whose ops it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub generation: u64,
    pub seq: u64,
}

impl OpLog {
    /// Opens `file` (of `capacity` bytes, see `recover`) and hands `each` the payload of every
    /// record of its current generation after `mark`, in order, one at a time: what the last
    /// run acknowledged but redb may not hold. Nothing is written until [`OpLog::restart`].
    pub fn open(
        file: JournalFile,
        capacity: u64,
        mark: Mark,
        mut each: impl FnMut(Vec<u8>) -> io::Result<()>,
    ) -> io::Result<OpLog> {
        let capacity = super::journal::capacity_of(capacity);
        let generation = read_header(&file)?;
        let mut last_seq = 0;
        if let Some(generation) = generation {
            let mut at = BLOCK;
            let mut seq = 1;
            while let Some((payload, len)) = read_record(&file, at, generation, seq)? {
                if generation != mark.generation || seq > mark.seq {
                    each(payload)?;
                }
                last_seq = seq;
                at += len;
                seq += 1;
            }
        }
        let log = OpLog {
            file,
            capacity,
            // Above the mark's: records of a new file are never taken for ones redb holds.
            generation: generation.unwrap_or(0).max(mark.generation),
            last_seq,
            write_at: BLOCK,
            broken: false,
            first_at: None,
            empty_at_open: last_seq == 0 && generation.is_some_and(|g| g > mark.generation),
            counters: Arc::default(),
            stage: AlignedBuf::default(),
        };
        Ok(log)
    }

    /// Its counters, shared.
    pub fn counters(&self) -> Arc<OpLogCounters> {
        self.counters.clone()
    }

    /// The mark of everything appended so far (what a durable commit of redb records).
    pub fn mark(&self) -> Mark {
        Mark {
            generation: self.generation,
            seq: self.last_seq,
        }
    }

    /// Whether records were appended since the last [`OpLog::restart`].
    pub fn has_records(&self) -> bool {
        self.write_at > BLOCK
    }

    /// Whether redb should commit durably and the log start over: it holds records and more
    /// than half of the file is used, or the first of them is `every` old.
    pub fn checkpoint_due(&self, every: std::time::Duration) -> bool {
        self.has_records()
            && (self.write_at > self.capacity / 2
                || self.first_at.is_some_and(|t| t.elapsed() >= every))
    }

    /// Whether an append failed since the last [`OpLog::restart`] (see `broken`).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Whether a record of `payload_len` bytes may be appended: it fits before the end of the
    /// file, and no append failed since the last restart.
    pub fn fits(&self, payload_len: usize) -> bool {
        !self.broken && self.write_at + record_len(payload_len) <= self.capacity
    }

    /// Starts a new, empty generation (a header write and a sync). Only once redb's durable
    /// state holds every record appended: their ops would not be replayed.
    pub fn restart(&mut self) -> io::Result<()> {
        let generation = self.generation + 1;
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(HEADER_MAGIC);
        h[8..16].copy_from_slice(&generation.to_le_bytes());
        let crc = crc32fast::hash(&h[..16]);
        h[16..].copy_from_slice(&crc.to_le_bytes());
        self.stage.resize(0);
        self.stage.resize(ALIGN);
        self.stage.as_mut_slice()[..HEADER_LEN].copy_from_slice(&h);
        self.file.write(0, self.stage.as_slice())?;
        self.file.sync_data()?;
        self.generation = generation;
        self.last_seq = 0;
        self.write_at = BLOCK;
        self.broken = false;
        self.first_at = None;
        self.counters.restarts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Appends one record holding `payload` and syncs it. Check [`OpLog::fits`] first. The
    /// seq is taken even when this fails: the record may be on disk, so the commit that applies
    /// its ops durably instead records a mark that covers it; then the log must start over.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        if !self.fits(payload.len()) {
            return Err(io::Error::other("op log full"));
        }
        let len = record_len(payload.len());
        self.last_seq += 1;
        let mut head = [0u8; RECORD_HEAD_LEN];
        head[..8].copy_from_slice(RECORD_MAGIC);
        head[8..16].copy_from_slice(&self.generation.to_le_bytes());
        head[16..24].copy_from_slice(&self.last_seq.to_le_bytes());
        head[24..28].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[..28]);
        crc.update(payload);
        head[28..].copy_from_slice(&crc.finalize().to_le_bytes());
        self.stage.resize(0);
        self.stage.resize(len as usize);
        let buf = self.stage.as_mut_slice();
        buf[..RECORD_HEAD_LEN].copy_from_slice(&head);
        buf[RECORD_HEAD_LEN..RECORD_HEAD_LEN + payload.len()].copy_from_slice(payload);
        let written = (self.file.write(self.write_at, self.stage.as_slice()))
            .and_then(|()| self.file.sync_data());
        self.write_at += len;
        self.broken = written.is_err();
        self.first_at.get_or_insert_with(std::time::Instant::now);
        if written.is_ok() {
            self.counters.records.fetch_add(1, Ordering::Relaxed);
        }
        written
    }
}

/// A record's size in the file: its head and payload, padded to whole blocks.
fn record_len(payload_len: usize) -> u64 {
    ((RECORD_HEAD_LEN + payload_len) as u64).div_ceil(BLOCK) * BLOCK
}

/// The header's generation; `None` for a new or unreadable file (nothing to replay).
fn read_header(file: &JournalFile) -> io::Result<Option<u64>> {
    if file.len()? < BLOCK {
        return Ok(None);
    }
    let mut h = [0u8; HEADER_LEN];
    file.read(0, &mut h)?;
    let generation = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
    Ok((&h[..8] == HEADER_MAGIC && crc32fast::hash(&h[..16]) == crc).then_some(generation))
}

/// The payload of the record `seq` of `generation` at `at`, and its size in the file; `None`
/// when there is none there (the end, a torn write, or a record of another lap).
fn read_record(
    file: &JournalFile,
    at: u64,
    generation: u64,
    seq: u64,
) -> io::Result<Option<(Vec<u8>, u64)>> {
    let file_len = file.len()?;
    if at + BLOCK > file_len {
        return Ok(None);
    }
    let mut head = [0u8; RECORD_HEAD_LEN];
    file.read(at, &mut head)?;
    let field = |r: std::ops::Range<usize>| u64::from_le_bytes(head[r].try_into().expect("8"));
    let payload_len = u32::from_le_bytes(head[24..28].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(head[28..32].try_into().expect("4 bytes"));
    if &head[..8] != RECORD_MAGIC
        || field(8..16) != generation
        || field(16..24) != seq
        || at + record_len(payload_len) > file_len
    {
        return Ok(None);
    }
    let mut payload = vec![0u8; payload_len];
    file.read(at + RECORD_HEAD_LEN as u64, &mut payload)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&head[..28]);
    h.update(&payload);
    if h.finalize() != crc {
        return Ok(None);
    }
    Ok(Some((payload, record_len(payload_len))))
}

/// Where the op log of the database at `db_path` lives: beside it.
pub fn path_of(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push("-oplog");
    PathBuf::from(name)
}

/// The op log of `db` at `path` after the last run's records were applied: what the last
/// run acknowledged through it (records after the mark in `db`) is applied in one durable
/// commit, then a new generation starts. `None` when it is not `wanted` (`durability =
/// "none"` or no commit journal): a file left by a run that used it is replayed, then removed.
pub fn recover(
    db: &Database,
    path: &Path,
    capacity: u64,
    mut wanted: bool,
) -> Result<Option<OpLog>> {
    let err = |source| Error::Io {
        what: format!("op log {}", path.display()),
        source,
    };
    if !wanted && !path.exists() {
        return Ok(None);
    }
    let file = super::open::open_rw(path).map_err(err)?;
    let file = JournalFile::new(file, path).map_err(err)?;
    let mark = read_mark(db)?;
    let (mut log, replayed) = replay(file, capacity, mark, db).map_err(err)?;
    if let Some((txn, records, ops)) = replayed {
        write_mark(&txn, log.mark())?;
        txn.commit()?;
        tracing::info!(op_log = %path.display(), records, ops,
            "op log replayed: publishes acknowledged by the last run, which did not stop cleanly");
    }
    if wanted {
        // Zeros written where the file is shorter than its capacity (a new log), not blocks
        // reserved with `fallocate` as the commit journal's are: an append never finds the
        // disk full, and it never writes a block for the first time. On ext4 that first write
        // turns a reserved block into a written one, and the record's fdatasync then also
        // wrote the inode: one more synchronous device write per record on the log's first
        // lap, ~900-1,100 in a 300,000-message fill from a new data dir (BENCHMARKS.md, "The
        // op log's first lap"). It costs a first start 16 MiB of writes, once.
        match super::journal::prepare_journal(&log.file, log.capacity) {
            Ok(()) => {}
            Err(e) if crate::disk_full::is_no_space(&e) => {
                tracing::warn!(op_log = %path.display(), error = %e,
                    "no room for the op log: running without it (every commit syncs redb)");
                wanted = false;
            }
            Err(e) => return Err(err(e)),
        }
    }
    if !wanted {
        drop(log);
        std::fs::remove_file(path).map_err(err)?;
        return Ok(None);
    }
    if !log.empty_at_open {
        log.restart().map_err(err)?;
    }
    Ok(Some(log))
}

/// A replay's write transaction, uncommitted, with the records and ops it applied.
type Replayed = (WriteTransaction, usize, usize);

/// Applies the records of `file` after `mark` to `db` as they are read (memory: one record's
/// ops at a time), in one write transaction, returned uncommitted with the counts of records
/// and ops (`None`: there were none).
fn replay(
    file: JournalFile,
    capacity: u64,
    mark: Mark,
    db: &Database,
) -> io::Result<(OpLog, Option<Replayed>)> {
    let mut txn = None;
    let (mut records, mut applied) = (0usize, 0usize);
    let log = OpLog::open(file, capacity, mark, |payload| {
        let ops = decode_logged(&payload).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("record {} of the last run cannot be read: {e}", records + 1),
            )
        })?;
        let txn = match &mut txn {
            Some(t) => t,
            None => txn.insert(db.begin_write().map_err(io::Error::other)?),
        };
        ops::apply(txn, ops.iter(), false).map_err(io::Error::other)?;
        records += 1;
        applied += ops.len();
        Ok(())
    })?;
    Ok((log, txn.map(|t| (t, records, applied))))
}

/// Salvage (`salvage.rs`): applies to `into` the records of the set-aside op log at `path`
/// after `mark` (the damaged file's, or none when it cannot be read: then every record of the
/// log's generation, some maybe applied and delivered before, at least once). The file is only
/// read. Returns the number of records applied (0: no file).
pub(super) fn replay_set_aside(path: &Path, mark: Mark, into: &Database) -> Result<usize> {
    let err = |source| Error::Io {
        what: format!("set-aside op log {}", path.display()),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(err(e)),
    };
    let capacity = file.metadata().map_err(err)?.len();
    let file = JournalFile::new(file, path).map_err(err)?;
    let (_log, replayed) = replay(file, capacity, mark, into).map_err(err)?;
    match replayed {
        Some((txn, records, _)) => {
            txn.commit()?;
            Ok(records)
        }
        None => Ok(0),
    }
}

/// The op log's mark in `txn` (none: `Mark::default()`).
pub(super) fn mark_in(txn: &redb::ReadTransaction) -> Result<Mark> {
    let meta = txn.open_table(META)?;
    let get = |k| -> Result<u64> { Ok(meta.get(k)?.map(|v| v.value()).unwrap_or(0)) };
    Ok(Mark {
        generation: get(MARK_GENERATION)?,
        seq: get(MARK_SEQ)?,
    })
}

/// The op log's mark that `db` holds (none: `Mark::default()`).
fn read_mark(db: &Database) -> Result<Mark> {
    mark_in(&db.begin_read()?)
}

/// Records `mark` in `txn` (every commit of logged ops does, so that redb's durable state,
/// whichever commit made it so, says which records it holds).
pub fn write_mark(txn: &WriteTransaction, mark: Mark) -> Result<()> {
    let mut meta = txn.open_table(META)?;
    meta.insert(MARK_GENERATION, mark.generation)?;
    meta.insert(MARK_SEQ, mark.seq)?;
    Ok(())
}

const MARK_GENERATION: &str = "oplog_generation";
const MARK_SEQ: &str = "oplog_seq";

#[cfg(test)]
#[path = "oplog_tests.rs"]
mod tests;
