//! `latest_only` index: for each upstream topic of a conflating rule, the lane and sequence of
//! its newest outbox record. A capture replaces that record if it is still buffered; a stale
//! entry (record already acknowledged, evicted or expired) is simply overwritten.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::error::SyncError;

pub(crate) const LATEST: TableDefinition<&str, (u8, u64)> = TableDefinition::new("sync_latest");

/// The `(lane, seq)` last recorded for `topic`, if any.
pub fn get(txn: &WriteTransaction, topic: &str) -> Result<Option<(u8, u64)>, SyncError> {
    let t = txn.open_table(LATEST)?;
    let v = t.get(topic)?.map(|g| g.value());
    Ok(v)
}

/// Records `(lane, seq)` as the newest record of `topic`.
pub fn set(txn: &WriteTransaction, topic: &str, lane: u8, seq: u64) -> Result<(), SyncError> {
    let mut t = txn.open_table(LATEST)?;
    t.insert(topic, (lane, seq))?;
    Ok(())
}
