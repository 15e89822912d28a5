//! Reading a session's queue back as its client drains it: the next deliveries after a
//! sequence number, with the packet id of those sent before. Runs on a read transaction,
//! beside the writer; the caller first waits until every op it pushed is committed.

use std::collections::HashMap;

use redb::{Database, ReadableDatabase};

use super::records::{decode, DeliveryRecord};
use super::tables::{unpack_sent_state, QUEUE, QUEUE_STATE};
use crate::error::Result;

/// Up to `max` queued deliveries of `client` with `from <= seq < until`, in order. An
/// unreadable record is logged and skipped (its sequence number is still returned, with
/// `None`, so the caller can account for it).
pub(super) fn read(
    db: &Database,
    client: &str,
    from: u64,
    until: u64,
    max: usize,
) -> Result<Vec<(u64, Option<DeliveryRecord>)>> {
    let txn = db.begin_read()?;
    let queue = txn.open_table(QUEUE)?;
    let mut out = Vec::with_capacity(max.min(1024));
    if from >= until || max == 0 {
        return Ok(out);
    }
    for row in queue.range((client, from)..(client, until))?.take(max) {
        let (k, v) = row?;
        let seq = k.value().1;
        match decode::<DeliveryRecord>("session_queue", v.value()) {
            Ok(d) => out.push((seq, Some(d))),
            Err(e) => {
                tracing::error!(client_id = client, seq, error = %e, "skipping unreadable queued message");
                out.push((seq, None));
            }
        }
    }
    let (Some(lo), Some(hi)) = (out.first().map(|r| r.0), out.last().map(|r| r.0)) else {
        return Ok(out);
    };
    let state = txn.open_table(QUEUE_STATE)?;
    let mut sent = HashMap::new();
    for row in state.range((client, lo)..=(client, hi))? {
        let (k, v) = row?;
        sent.insert(k.value().1, v.value());
    }
    if !sent.is_empty() {
        for (seq, d) in out.iter_mut() {
            if let (Some(st), Some(d)) = (sent.get(seq), d.as_mut()) {
                (d.pid, d.released) = unpack_sent_state(*st);
            }
        }
    }
    Ok(out)
}
