//! The tables of `edge.redb` and the schema version. `session_queue_meta` holds one row per
//! session with a queue on disk, (messages, bytes), kept by the writer in the commit that
//! changes the queue, so start-up reads one row per session instead of every queued message.

use redb::{Database, ReadableTable, TableDefinition};

use super::records::{decode, DeliveryRecord};
use crate::error::{Error, Result};

pub(super) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// (client id, seq) -> [`DeliveryRecord`], in delivery order.
pub(super) const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("session_queue");
/// Packet id and release flag of deliveries sent at least once: `pid | released << 16`. Kept
/// apart from the record so that marking a send writes 4 bytes, not the whole message again.
pub(super) const QUEUE_STATE: TableDefinition<(&str, u64), u32> =
    TableDefinition::new("session_queue_state");
/// A [`QUEUE_STATE`] value: the packet id in the low 16 bits, the release flag above.
pub(super) fn pack_sent_state(pid: u16, released: bool) -> u32 {
    u32::from(pid) | u32::from(released) << 16
}

/// The packet id and release flag of a [`QUEUE_STATE`] value.
pub(super) fn unpack_sent_state(state: u32) -> (u16, bool) {
    ((state & 0xffff) as u16, state >> 16 != 0)
}

/// Client id -> (messages, bytes) in its `session_queue` range; bytes as `Message::weight`.
pub(super) const QUEUE_META: TableDefinition<&str, (u64, u64)> =
    TableDefinition::new("session_queue_meta");
pub(super) const QOS2_IN: TableDefinition<(&str, u16), ()> =
    TableDefinition::new("session_qos2_in");
pub(super) const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
/// Client id -> the user name (postcard `Option<String>`, None = anonymous) of the session's
/// last connection, so a session restored from disk is routed under its user's ACL. Kept
/// apart from `sessions` so records written by earlier versions still decode.
pub(super) const SESSION_USERS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("session_users");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The [`META`] row with the unix ms of the last commit (written at most every `STAMP_EVERY`).
pub(super) const LAST_COMMIT_MS: &str = "last_commit_ms";

/// 2: `session_queue_meta` added (a version 1 file is migrated at open).
const SCHEMA_VERSION: u64 = 2;

pub(super) fn init_tables(db: &Database) -> Result<()> {
    let txn = db.begin_write()?;
    {
        txn.open_table(SESSIONS)?;
        txn.open_table(QUEUE)?;
        txn.open_table(QUEUE_STATE)?;
        txn.open_table(QUEUE_META)?;
        txn.open_table(QOS2_IN)?;
        txn.open_table(RETAINED)?;
        txn.open_table(SESSION_USERS)?;
        let mut meta = txn.open_table(META)?;
        let version = meta.get("schema_version")?.map(|v| v.value());
        match version {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)?;
            }
            Some(1) => {
                tracing::info!("migrating the database to schema 2 (queue counts per session)");
                count_queues(&txn)?;
                meta.insert("schema_version", SCHEMA_VERSION)?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(Error::SchemaVersion {
                    found: v,
                    expected: SCHEMA_VERSION,
                })
            }
        }
    }
    txn.commit()?;
    Ok(())
}

/// Fills `session_queue_meta` from the queue itself (once, for a file of schema 1, and after a
/// salvage).
pub(super) fn count_queues(txn: &redb::WriteTransaction) -> Result<()> {
    let queue = txn.open_table(QUEUE)?;
    let mut meta = txn.open_table(QUEUE_META)?;
    let mut current: Option<(String, u64, u64)> = None;
    let mut flush = |c: Option<(String, u64, u64)>| -> Result<()> {
        if let Some((id, n, bytes)) = c {
            meta.insert(id.as_str(), (n, bytes))?;
        }
        Ok(())
    };
    for row in queue.iter()? {
        let (k, v) = row?;
        let (client, _) = k.value();
        let weight = match decode::<DeliveryRecord>("session_queue", v.value()) {
            Ok(d) => d.msg.weight() as u64,
            Err(_) => v.value().len() as u64,
        };
        match &mut current {
            Some((id, n, bytes)) if id == client => {
                *n += 1;
                *bytes += weight;
            }
            _ => {
                flush(current.take())?;
                current = Some((client.to_string(), 1, weight));
            }
        }
    }
    flush(current)
}
