//! Gated records: the outbox sequence of each record of a rule with a `schedule` or `upstreams`
//! gate, mapped to the rule's filter, written in the record's own transaction and removed with
//! it. Readers skip the records whose gate is closed; they stay in their lane, in order.

use std::collections::HashSet;

use redb::{ReadTransaction, ReadableTableMetadata, TableDefinition};
use redb::{Table, WriteTransaction};

use crate::error::SyncError;

pub(crate) const HELD: TableDefinition<u64, &str> = TableDefinition::new("sync_held");

/// Remembers that record `seq` belongs to the gated rule with `filter`.
pub fn set(txn: &WriteTransaction, seq: u64, filter: &str) -> Result<(), SyncError> {
    txn.open_table(HELD)?.insert(seq, filter)?;
    Ok(())
}

/// The table, to forget records as they leave the outbox.
pub fn open(txn: &WriteTransaction) -> Result<Table<'_, u64, &'static str>, SyncError> {
    Ok(txn.open_table(HELD)?)
}

/// Empties the table (no rule is gated any more: every record is free to go).
pub fn clear(txn: &WriteTransaction) -> Result<bool, SyncError> {
    let t = txn.open_table(HELD)?;
    if t.is_empty()? {
        return Ok(false);
    }
    drop(t);
    txn.delete_table(HELD)?;
    txn.open_table(HELD)?;
    Ok(true)
}

/// Reader side: which of the records read are held back now.
pub struct HeldReader<'a> {
    table: Option<redb::ReadOnlyTable<u64, &'static str>>,
    closed: &'a HashSet<String>,
}

/// What the index says about one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Not of a gated rule.
    None,
    /// Of a gated rule whose gate is open.
    Open,
    /// Of a gated rule whose gate is closed: it waits.
    Closed,
}

impl<'a> HeldReader<'a> {
    /// `closed`: filters of the rules whose gate is closed now.
    pub fn new(txn: &ReadTransaction, closed: &'a HashSet<String>) -> Result<Self, SyncError> {
        let table = match txn.open_table(HELD) {
            Ok(t) if t.is_empty()? => None,
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(HeldReader { table, closed })
    }

    pub fn gate(&self, seq: u64) -> Result<Gate, SyncError> {
        let Some(t) = &self.table else {
            return Ok(Gate::None);
        };
        Ok(match t.get(seq)? {
            None => Gate::None,
            Some(f) if self.closed.contains(f.value()) => Gate::Closed,
            Some(_) => Gate::Open,
        })
    }
}
