//! Salvage: copying what can still be read of a damaged database into the new one that replaces
//! it. The broker's storage sets a damaged `edge.redb` aside and calls [`copy_table`] for its own
//! tables and [`sync_tables`] for the outbox's.
//!
//! Invariants: the damaged database is only read. A read that fails or panics ends that table's
//! copy; the rows before it are kept (written in chunks of [`CHUNK_ROWS`], so memory does not grow
//! with the table). The outbox's counters are counted again from the rows kept, and its next
//! sequence never falls below one already handed out: an `edge-msg-id` is never used twice.

use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};

use edge_mqtt::util::panic_message;
use redb::{
    Database, Durability, Key, ReadTransaction, ReadableTable, TableDefinition, TableError,
    TableHandle, Value,
};

use crate::error::SyncError;
use crate::outbox::{self, Meta, LANES};
use crate::rules::{batch, latest, window};

/// Rows written to the new database per write transaction.
pub const CHUNK_ROWS: u64 = 4096;

/// What the copy of one table kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub table: String,
    pub rows: u64,
    /// Why the copy stopped before the table's end (a read failed or panicked); `None`: the
    /// whole table (or none was there).
    pub stopped: Option<String>,
    /// The encoded key of the last row copied.
    pub last_key: Option<Vec<u8>>,
}

/// Copies the rows of `def` whose encoded keys lie in `range` from `src` (the damaged database)
/// into `dst`, until the end or the first read that fails. `Err` only for a failure of `dst`.
pub fn copy_table<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &Database,
    def: TableDefinition<K, V>,
    range: (Bound<&[u8]>, Bound<&[u8]>),
) -> Result<Copied, redb::Error> {
    let mut copied = Copied {
        table: def.name().to_string(),
        rows: 0,
        stopped: None,
        last_key: None,
    };
    let src_table = match catch_unwind(AssertUnwindSafe(|| src.open_table(def))) {
        Ok(Ok(t)) => t,
        Ok(Err(TableError::TableDoesNotExist(_))) => return Ok(copied),
        Ok(Err(e)) => {
            copied.stopped = Some(e.to_string());
            return Ok(copied);
        }
        Err(p) => {
            copied.stopped = Some(format!("panicked: {}", panic_message(p.as_ref())));
            return Ok(copied);
        }
    };
    // The encoded key of the last row copied: the next chunk starts after it.
    let mut after: Option<Vec<u8>> = None;
    loop {
        let mut txn = dst.begin_write()?;
        txn.set_durability(Durability::None)?;
        let mut table = txn.open_table(def)?;
        let mut next: Option<Vec<u8>> = None;
        let mut written: Result<(), redb::StorageError> = Ok(());
        let mut rows = 0u64;
        let mut last_key = None;
        let read = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
            let lo = match &after {
                Some(b) => Bound::Excluded(K::from_bytes(b)),
                None => range.0.map(K::from_bytes),
            };
            let hi = range.1.map(K::from_bytes);
            let rows_in = src_table
                .range::<K::SelfType<'_>>((lo, hi))
                .map_err(|e| e.to_string())?;
            for row in rows_in {
                let (k, v) = row.map_err(|e| e.to_string())?;
                if let Err(e) = table.insert(k.value(), v.value()) {
                    written = Err(e);
                    return Ok(());
                }
                rows += 1;
                if rows == CHUNK_ROWS {
                    next = Some(K::as_bytes(&k.value()).as_ref().to_vec());
                    return Ok(());
                }
                last_key = Some(k);
            }
            Ok(())
        }));
        drop(table);
        written?;
        // What was read before a failure is kept too (a chunk that read nothing writes nothing:
        // a salvage of many sessions makes two copies each).
        match rows {
            0 => txn.abort()?,
            _ => txn.commit()?,
        }
        copied.rows += rows;
        if let Some(k) = next
            .clone()
            .or_else(|| last_key.map(|k| K::as_bytes(&k.value()).as_ref().to_vec()))
        {
            copied.last_key = Some(k);
        }
        match read {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                copied.stopped = Some(e);
                return Ok(copied);
            }
            Err(p) => {
                copied.stopped = Some(format!("panicked: {}", panic_message(p.as_ref())));
                return Ok(copied);
            }
        }
        match next {
            Some(n) => after = Some(n),
            None => return Ok(copied),
        }
    }
}

/// Copies the rows of `def` from `key(first)` to `key(last)`, a table whose keys end in a
/// sequence (`seq_of` reads it from an encoded key): where a read fails, the copy goes on past
/// the damage, from the first sequence after it whose read works (found by doubling the step,
/// then bisecting), so a damaged page loses only its own rows.
pub fn copy_seq_range<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &Database,
    def: TableDefinition<K, V>,
    key: impl Fn(u64) -> Vec<u8>,
    seq_of: impl Fn(&[u8]) -> u64,
    (first, last): (u64, u64),
) -> Result<Copied, redb::Error> {
    let mut total = Copied {
        table: def.name().to_string(),
        rows: 0,
        stopped: None,
        last_key: None,
    };
    let mut skipped = 0u32;
    let mut from = first;
    loop {
        let (lo, hi) = (key(from), key(last));
        let range = (Bound::Included(&lo[..]), Bound::Included(&hi[..]));
        let c = copy_table(src, dst, def, range)?;
        total.rows += c.rows;
        if c.last_key.is_some() {
            total.last_key = c.last_key.clone();
        }
        let Some(why) = c.stopped else { break };
        total.stopped.get_or_insert(why);
        skipped += 1;
        // The first sequence not read (the damage is at or after it).
        let bad = c.last_key.map_or(from, |k| seq_of(&k).saturating_add(1));
        match next_readable(src, def, &key, bad, last) {
            Some(s) => from = s,
            None => break,
        }
    }
    if let Some(why) = &mut total.stopped {
        why.push_str(&format!(" ({skipped} damaged part(s) passed over)"));
    }
    Ok(total)
}

/// The smallest sequence above `bad`, at most `last`, from which a read of `def` works (its
/// first row, or the end, is read without an error or a panic).
fn next_readable<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    def: TableDefinition<K, V>,
    key: &impl Fn(u64) -> Vec<u8>,
    bad: u64,
    last: u64,
) -> Option<u64> {
    let readable = |s: u64| {
        catch_unwind(AssertUnwindSafe(|| {
            let t = src.open_table(def).ok()?;
            let (lo, hi) = (key(s), key(last));
            let mut rows = t
                .range::<K::SelfType<'_>>((
                    Bound::Included(K::from_bytes(&lo)),
                    Bound::Included(K::from_bytes(&hi)),
                ))
                .ok()?;
            let n = rows.next();
            match n {
                Some(Err(_)) => None,
                _ => Some(()),
            }
        }))
        .ok()
        .flatten()
        .is_some()
    };
    // Doubling: `bad` stays unreadable, `good` readable.
    let (mut bad, mut step) = (bad, 1u64);
    let mut good = loop {
        let probe = bad.checked_add(step).filter(|p| *p <= last)?;
        if readable(probe) {
            break probe;
        }
        bad = probe;
        step = step.saturating_mul(2);
    };
    while good - bad > 1 {
        let mid = bad + (good - bad) / 2;
        match readable(mid) {
            true => good = mid,
            false => bad = mid,
        }
    }
    Some(good)
}

/// The whole table.
pub const ALL: (Bound<&[u8]>, Bound<&[u8]>) = (Bound::Unbounded, Bound::Unbounded);

/// Copies the sync module's tables from `src` into `dst` and writes the outbox's meta row again
/// from what was kept: its counters counted from the lanes, its next sequence at least
/// `seq_floor` when the damaged meta row could not be read (see [`seq_floor_now`]). A batch in
/// progress is kept only whole (its head and every item read). `Err` only for a failure of
/// `dst`.
pub fn sync_tables(
    src: &ReadTransaction,
    dst: &Database,
    seq_floor: u64,
) -> Result<Vec<Copied>, SyncError> {
    let mut out = Vec::new();
    for def in LANES {
        let key = |s: u64| s.to_le_bytes().to_vec();
        let seq_of = |k: &[u8]| <u64 as Value>::from_bytes(k);
        out.push(copy_seq_range(src, dst, def, key, seq_of, (0, u64::MAX))?);
    }
    out.push(copy_table(src, dst, outbox::held::HELD, ALL)?);
    out.push(copy_table(src, dst, latest::LATEST, ALL)?);
    out.push(copy_table(src, dst, window::WINDOWS, ALL)?);
    let heads = copy_table(src, dst, batch::HEADS, ALL)?;
    let items = copy_table(src, dst, batch::ITEMS, ALL)?;
    if heads.stopped.is_some() || items.stopped.is_some() {
        let txn = dst.begin_write()?;
        txn.delete_table(batch::HEADS)?;
        txn.delete_table(batch::ITEMS)?;
        txn.commit()?;
        tracing::error!(
            "salvage: the sync batches in progress could not be read whole; they are dropped"
        );
    }
    out.push(heads);
    out.push(items);
    let (old, lost) = match catch_unwind(AssertUnwindSafe(|| outbox::read_meta(src))) {
        Ok(Ok(old)) => (old, None),
        Ok(Err(e)) => (None, Some(e.to_string())),
        Err(p) => (
            None,
            Some(format!("panicked: {}", panic_message(p.as_ref()))),
        ),
    };
    let kept_records = out.iter().take(LANES.len()).any(|c| c.rows > 0);
    if old.is_none() && lost.is_none() && !kept_records {
        // Sync never ran on this database.
        return Ok(out);
    }
    out.push(Copied {
        table: "sync_meta".into(),
        rows: u64::from(old.is_some()),
        stopped: lost.map(|why| format!("{why}: counters counted again, sequence from the time")),
        last_key: None,
    });
    write_meta(dst, old, seq_floor)?;
    Ok(out)
}

/// When nothing of a damaged database could be read: the outbox of `dst` (new) starts at
/// `seq_floor` (see [`seq_floor_now`]), not at 1, whether or not sync ran before (a meta row
/// is harmless where it never runs), so that no `edge-msg-id` the cloud has seen comes again.
pub fn start_above(dst: &Database, seq_floor: u64) -> Result<(), SyncError> {
    write_meta(dst, None, seq_floor)
}

/// A sequence above any this gateway handed out before, when the meta row that held the next
/// one is lost: the time in microseconds (a gateway forwards far fewer than a million messages
/// a second). A clock far behind (no real-time clock and no network yet) gives a lower floor.
pub fn seq_floor_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The outbox's meta row in `dst`, counted from its lanes; the sequence and the counters of
/// `old` kept where it was readable.
fn write_meta(dst: &Database, old: Option<Meta>, seq_floor: u64) -> Result<(), SyncError> {
    let txn = dst.begin_write()?;
    let mut m = Meta::fresh();
    let mut max_seq = 0;
    for (p, def) in LANES.iter().enumerate() {
        let t = txn.open_table(*def)?;
        let lane = &mut m.lanes[p];
        for item in t.iter()? {
            let (k, v) = item?;
            lane.messages += 1;
            lane.bytes += v.value().len() as u64;
            if lane.oldest_seq == 0 {
                lane.oldest_seq = k.value();
            }
            max_seq = max_seq.max(k.value());
        }
    }
    let floor = match &old {
        Some(old) => old.next_seq,
        None => seq_floor,
    };
    m.next_seq = floor.max(max_seq + 1);
    if let Some(old) = old {
        for (lane, was) in m.lanes.iter_mut().zip(old.lanes) {
            lane.sent_upto = was.sent_upto;
        }
        m.dropped_full = old.dropped_full;
        m.dropped_ttl = old.dropped_ttl;
        m.dropped_corrupt = old.dropped_corrupt;
        m.rejected = old.rejected;
        m.acked = old.acked;
        m.last_offset = old.last_offset;
    }
    outbox::write_meta(&txn, &m)?;
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
#[path = "salvage_tests.rs"]
mod tests;
