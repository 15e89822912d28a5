//! Salvage: after a damaged database was set aside (`damaged.rs`), the rows that can still be
//! read from it are copied into the new one before start-up reads it: sessions, their users,
//! QoS 2 state and queues, retained messages and the sync outbox (`edge_sync::salvage`).
//!
//! Invariants: the set-aside file is never written. redb opens it through [`Overlay`], which
//! keeps whatever redb writes (the repair after an unclean stop) in memory, at most
//! [`OVERLAY_LIMIT`] bytes. A read that fails or panics ends the copy of that table; what was
//! read before it is kept. The queues (and the sync outbox's lanes), keyed by sequence, go on
//! past a damaged page: only its own rows are lost. Then the set-aside op log's records after
//! the damaged file's mark are applied (the publishes acknowledged from it that redb had not
//! made durable); the op log file is only read too.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Mutex;

use edge_sync::salvage::{copy_seq_range, copy_table, Copied, ALL};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, StorageBackend, Value};

use super::tables::*;
use super::{damaged, lock, oplog};
use crate::error::{Error, Result};

/// Most memory the overlay holds for redb's writes to the set-aside file (its repair rewrites
/// the allocator's state, a few pages per region); beyond it the salvage gives up.
pub(super) const OVERLAY_LIMIT: usize = 64 << 20;

const PAGE: u64 = 4096;

/// redb's page cache for the set-aside file. The copy reads each page about once, in key
/// order: with redb's default (1 GiB) a 140 MB file (1,000,000 queued messages) was read into
/// memory whole, RSS 166 MB after the start.
const SOURCE_CACHE: usize = 2 << 20;

/// The set-aside file as redb's storage: reads come from the file, writes stay in memory.
#[derive(Debug)]
pub(super) struct Overlay {
    file: File,
    state: Mutex<OverlayState>,
}

#[derive(Debug)]
struct OverlayState {
    /// The length redb sees.
    len: u64,
    /// Bytes of the file still visible (a shrink then a growth reads zeros, as a file would).
    file_len: u64,
    /// Pages written, by page number.
    pages: HashMap<u64, Box<[u8]>>,
}

impl Overlay {
    pub(super) fn open(path: &Path) -> io::Result<Overlay> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Overlay {
            file,
            state: Mutex::new(OverlayState {
                len,
                file_len: len,
                pages: HashMap::new(),
            }),
        })
    }

    /// The file's bytes of page `n` (zeros beyond what is visible of it).
    fn file_page(&self, file_len: u64, n: u64) -> io::Result<Box<[u8]>> {
        let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
        let at = n * PAGE;
        if at < file_len {
            let take = (file_len - at).min(PAGE) as usize;
            self.file.read_exact_at(&mut page[..take], at)?;
        }
        Ok(page)
    }
}

impl StorageBackend for Overlay {
    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.state).len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let s = lock(&self.state);
        let end = offset.checked_add(out.len() as u64);
        if end.is_none_or(|e| e > s.len) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read beyond the end of the set-aside database",
            ));
        }
        let mut done = 0usize;
        while done < out.len() {
            let at = offset + done as u64;
            let (n, within) = (at / PAGE, (at % PAGE) as usize);
            let take = (PAGE as usize - within).min(out.len() - done);
            let dst = &mut out[done..done + take];
            match s.pages.get(&n) {
                Some(page) => dst.copy_from_slice(&page[within..within + take]),
                None if at >= s.file_len => dst.fill(0),
                None => {
                    let visible = ((s.file_len - at) as usize).min(take);
                    if let Err(e) = self.file.read_exact_at(&mut dst[..visible], at) {
                        // A bad sector: read as zeros, so that redb sees a damaged page (and
                        // the copy passes over it) instead of an I/O error, after which it
                        // refuses every read.
                        tracing::error!(offset = at, error = %e, "salvage: unreadable part of the set-aside database read as zeros");
                        dst[..visible].fill(0);
                    }
                    dst[visible..].fill(0);
                }
            }
            done += take;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = lock(&self.state);
        if len < s.len {
            s.pages.retain(|n, _| n * PAGE < len);
            let tail = (len % PAGE) as usize;
            if let Some(page) = s.pages.get_mut(&(len / PAGE)) {
                page[tail..].fill(0);
            }
            s.file_len = s.file_len.min(len);
        }
        s.len = len;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = lock(&self.state);
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let (n, within) = (at / PAGE, (at % PAGE) as usize);
            let take = (PAGE as usize - within).min(data.len() - done);
            if !s.pages.contains_key(&n) {
                if (s.pages.len() + 1) * PAGE as usize > OVERLAY_LIMIT {
                    return Err(io::Error::other(
                        "salvage: redb wrote more than the overlay holds",
                    ));
                }
                let page = self.file_page(s.file_len, n)?;
                s.pages.insert(n, page);
            }
            if let Some(page) = s.pages.get_mut(&n) {
                page[within..within + take].copy_from_slice(&data[done..done + take]);
            }
            done += take;
        }
        s.len = s.len.max(offset + data.len() as u64);
        Ok(())
    }
}

/// Copies what can be read of the set-aside database at `damaged_db` into `into` (new, tables
/// made); logs what was kept. `Err` only for a failure of `into`: what the damaged file holds
/// is best effort, and a file that cannot be opened at all (zeroed, truncated) keeps nothing.
pub(super) fn salvage(damaged_db: &Path, into: &Database) -> Result<Salvaged> {
    let mut kept = Salvaged::default();
    let opened = damaged::catching(|| {
        let overlay = Overlay::open(damaged_db).map_err(|source| Error::Io {
            what: format!("set-aside database {}", damaged_db.display()),
            source,
        })?;
        let db = Database::builder()
            .set_cache_size(SOURCE_CACHE)
            .create_with_backend(overlay)
            .map_err(|source| Error::OpenDatabase {
                path: damaged_db.display().to_string(),
                source,
            })?;
        let txn = db.begin_read()?;
        Ok((db, txn))
    });
    let (_db, src) = match opened {
        Ok(o) => o,
        Err(failure) => {
            let why = failure.into_error(damaged_db).to_string();
            edge_sync::salvage::start_above(into, edge_sync::salvage::seq_floor_now())?;
            return Ok(kept.nothing(damaged_db, &why));
        }
    };
    copy_all(&src, into, &mut kept, Some(&oplog::path_of(damaged_db)))?;
    // Durable before start-up reads it (the copies' commits did not sync).
    let mut txn = into.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    txn.commit()?;
    kept.log(damaged_db);
    Ok(kept)
}

/// Copies every table's readable rows from `src` into `into`, then applies the records of the
/// set-aside op log at `oplog_path` that `src` does not hold.
fn copy_all(
    src: &ReadTransaction,
    into: &Database,
    kept: &mut Salvaged,
    oplog_path: Option<&Path>,
) -> Result<()> {
    kept.copy(copy_table(src, into, SESSIONS, ALL)?);
    kept.copy(copy_table(src, into, SESSION_USERS, ALL)?);
    kept.copy(copy_table(src, into, QOS2_IN, ALL)?);
    kept.copy(copy_table(src, into, RETAINED, ALL)?);
    // Each session's queue on its own, past damaged pages (`copy_seq_range`): a damaged page
    // loses its own rows only. Queues of sessions not kept would be removed at load (orphans).
    for client in sessions_of(into)? {
        kept.copy(per_client(src, into, QUEUE, &client)?);
        kept.copy(per_client(src, into, QUEUE_STATE, &client)?);
    }
    copy_last_commit(src, into)?;
    if let Some(path) = oplog_path {
        // The publishes acknowledged from the op log that redb had not made durable. Without a
        // readable mark, every record of the log's generation (some maybe delivered before).
        let mark = catch_unwind(AssertUnwindSafe(|| oplog::mark_in(src)));
        let mark = mark.ok().and_then(|m| m.ok()).unwrap_or_default();
        match oplog::replay_set_aside(path, mark, into) {
            Ok(records) => kept.oplog_records = records,
            Err(e) => {
                tracing::error!(op_log = %path.display(), error = %e, "salvage: the set-aside op log's records cannot be applied");
                kept.stopped.push(("op log".into(), e.to_string()));
            }
        }
    }
    // The queues' counts (not copied: they must match the rows kept), and no packet id left
    // reserved for a delivery that was lost.
    let txn = into.begin_write()?;
    count_queues(&txn)?;
    drop_states_without_delivery(&txn)?;
    txn.commit()?;
    for c in edge_sync::salvage::sync_tables(src, into, edge_sync::salvage::seq_floor_now())? {
        kept.copy(c);
    }
    Ok(())
}

/// The rows of `def` whose key starts with `client`, past damaged pages.
fn per_client<V: Value + 'static>(
    src: &ReadTransaction,
    into: &Database,
    def: redb::TableDefinition<(&'static str, u64), V>,
    client: &str,
) -> Result<Copied> {
    let key = |seq: u64| <(&str, u64)>::as_bytes(&(client, seq));
    let seq_of = |k: &[u8]| <(&str, u64)>::from_bytes(k).1;
    let mut c = copy_seq_range(src, into, def, key, seq_of, (0, u64::MAX))?;
    if c.stopped.is_some() {
        c.table = format!("{} of {client}", c.table);
    }
    Ok(c)
}

/// Removes the `session_queue_state` rows whose delivery was not kept (the few deliveries sent
/// and not yet acknowledged: a scan of that table, not of the queue).
fn drop_states_without_delivery(txn: &redb::WriteTransaction) -> Result<()> {
    let queue = txn.open_table(QUEUE)?;
    let mut state = txn.open_table(QUEUE_STATE)?;
    let mut lost = Vec::new();
    for row in state.iter()? {
        let (key, _) = row?;
        let (client, seq) = key.value();
        if queue.get((client, seq))?.is_none() {
            lost.push((client.to_string(), seq));
        }
    }
    for (client, seq) in &lost {
        state.remove((client.as_str(), *seq))?;
    }
    Ok(())
}

/// The client ids of the sessions copied.
fn sessions_of(db: &Database) -> Result<Vec<String>> {
    let txn = db.begin_read()?;
    let t = txn.open_table(SESSIONS)?;
    let mut ids = Vec::new();
    for row in t.iter()? {
        ids.push(row?.0.value().to_string());
    }
    Ok(ids)
}

/// The time of the damaged file's last commit (the estimate of when clients were cut off).
fn copy_last_commit(src: &ReadTransaction, into: &Database) -> Result<()> {
    let read = catch_unwind(AssertUnwindSafe(|| -> Option<u64> {
        let meta = src.open_table(META).ok()?;
        let v = meta.get(LAST_COMMIT_MS).ok()??;
        Some(v.value())
    }));
    if let Ok(Some(ms)) = read {
        let txn = into.begin_write()?;
        txn.open_table(META)?.insert(LAST_COMMIT_MS, ms)?;
        txn.commit()?;
    }
    Ok(())
}

/// What a salvage kept.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Salvaged {
    /// Rows copied, over every table.
    pub rows: u64,
    /// Tables (or sessions' queues) whose copy stopped at damage, with why.
    pub stopped: Vec<(String, String)>,
    /// Records of the set-aside op log applied after the copy.
    pub oplog_records: usize,
}

impl Salvaged {
    fn copy(&mut self, c: Copied) {
        self.rows += c.rows;
        if let Some(why) = c.stopped {
            self.stopped.push((c.table, why));
        }
    }

    fn nothing(mut self, path: &Path, why: &str) -> Salvaged {
        tracing::error!(path = %path.display(), reason = why,
            "salvage: the set-aside database cannot be read; nothing of it is kept");
        self.stopped.push(("(database)".into(), why.to_string()));
        self
    }

    fn log(&self, path: &Path) {
        for (table, why) in &self.stopped {
            tracing::error!(table, reason = %why, "salvage: a table of the set-aside database is damaged; the rows after the damage are lost");
        }
        tracing::warn!(path = %path.display(), rows = self.rows, op_log_records = self.oplog_records, damaged_tables = self.stopped.len(),
            "salvage: rows that could still be read copied from the set-aside database");
    }
}

#[cfg(test)]
#[path = "salvage_tests.rs"]
mod tests;
