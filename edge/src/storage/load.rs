//! What start-up reads: session records, their users and QoS 2 state, retained messages, and
//! per session only the *shape* of its queue (count, bytes, first and next sequence number, the
//! packet ids of deliveries already sent), never the queued messages themselves: those are read
//! as the client drains them (`queue.rs`). Queues left without a session are removed here.

use mqtt_proto::Pid;
use redb::{Database, ReadableDatabase, ReadableTable};

use super::records::{decode, SessionRecord};
use super::tables::*;
use crate::error::Result;
use crate::message::Message;
use crate::session::SentIds;

/// What was on disk when the broker started.
#[derive(Debug, Default)]
pub struct Loaded {
    pub sessions: Vec<LoadedSession>,
    pub retained: Vec<Message>,
    /// Unix ms of the last commit of the previous run: the best estimate of when a crash cut
    /// off the clients that were still connected.
    pub last_commit_ms: Option<u64>,
}

#[derive(Debug)]
pub struct LoadedSession {
    pub client_id: String,
    pub record: SessionRecord,
    /// The user of its last connection (`Some(None)`: anonymous); None when not recorded.
    pub user: Option<Option<String>>,
    pub queue: QueueShape,
    pub qos2_in: Vec<Pid>,
}

/// A session's queue on disk, without its messages.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueueShape {
    pub messages: usize,
    /// Sum of `Message::weight` of the queued messages.
    pub bytes: u64,
    /// Lowest queued sequence number (0 when empty).
    pub first_seq: u64,
    /// One past the highest queued sequence number (1 when empty).
    pub next_seq: u64,
    /// (seq, packet id) of deliveries sent at least once (or recorded ahead): their ids stay
    /// reserved.
    pub sent: SentIds,
}

pub(super) fn load(db: &Database) -> Result<Loaded> {
    remove_orphan_queues(db)?;
    let txn = db.begin_read()?;
    let sessions = txn.open_table(SESSIONS)?;
    let users = txn.open_table(SESSION_USERS)?;
    let queue = txn.open_table(QUEUE)?;
    let queue_state = txn.open_table(QUEUE_STATE)?;
    let queue_meta = txn.open_table(QUEUE_META)?;
    let qos2 = txn.open_table(QOS2_IN)?;
    let retained = txn.open_table(RETAINED)?;
    let meta = txn.open_table(META)?;
    let mut out = Loaded {
        last_commit_ms: meta.get(LAST_COMMIT_MS)?.map(|v| v.value()),
        ..Loaded::default()
    };
    for row in sessions.iter()? {
        let (k, v) = row?;
        let client_id = k.value().to_string();
        let record: SessionRecord = match decode("sessions", v.value()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(client_id, error = %e, "skipping unreadable session record");
                continue;
            }
        };
        let user = match users.get(client_id.as_str())? {
            Some(v) => match decode::<Option<String>>("session_users", v.value()) {
                Ok(u) => Some(u),
                Err(e) => {
                    tracing::error!(client_id, error = %e, "unreadable session user: ACL of an unknown user until it reconnects");
                    None
                }
            },
            None => None,
        };
        let id = client_id.as_str();
        let mut shape = QueueShape {
            next_seq: 1,
            ..QueueShape::default()
        };
        let mut range = queue.range((id, 0u64)..=(id, u64::MAX))?;
        if let Some(first) = range.next() {
            shape.first_seq = first?.0.value().1;
            let last = match range.next_back() {
                Some(last) => last?.0.value().1,
                None => shape.first_seq,
            };
            shape.next_seq = last + 1;
            match queue_meta.get(id)? {
                Some(m) => {
                    let (n, bytes) = m.value();
                    shape.messages = n as usize;
                    shape.bytes = bytes;
                }
                None => {
                    // Cannot happen with this version's writer; counted the slow way.
                    tracing::warn!(client_id, "queue without its count: counting it");
                    for row in queue.range((id, 0u64)..=(id, u64::MAX))? {
                        shape.messages += 1;
                        shape.bytes += row?.1.value().len() as u64;
                    }
                }
            }
            for row in queue_state.range((id, 0u64)..=(id, u64::MAX))? {
                let (k, v) = row?;
                shape.sent.push(k.value().1, unpack_sent_state(v.value()).0);
            }
        }
        let mut pids = Vec::new();
        for row in qos2.range((id, 0u16)..=(id, u16::MAX))? {
            // Only packet ids are stored, never 0.
            pids.extend(Pid::try_from(row?.0.value().1).ok());
        }
        out.sessions.push(LoadedSession {
            client_id,
            record,
            user,
            queue: shape,
            qos2_in: pids,
        });
    }
    for row in retained.iter()? {
        let (k, v) = row?;
        match decode::<Message>("retained", v.value()) {
            Ok(m) => out.retained.push(m),
            Err(e) => {
                tracing::error!(topic = k.value(), error = %e, "skipping unreadable retained message")
            }
        }
    }
    Ok(out)
}

/// A session resumed without expiry keeps its queue rows until it ends (its record is gone at
/// once); a crash in between leaves rows no session owns. They are deleted here.
fn remove_orphan_queues(db: &Database) -> Result<()> {
    let orphans: Vec<String> = {
        let txn = db.begin_read()?;
        let sessions = txn.open_table(SESSIONS)?;
        let queue_meta = txn.open_table(QUEUE_META)?;
        let mut v = Vec::new();
        for row in queue_meta.iter()? {
            let id = row?.0.value().to_string();
            if sessions.get(id.as_str())?.is_none() {
                v.push(id);
            }
        }
        v
    };
    if orphans.is_empty() {
        return Ok(());
    }
    let txn = db.begin_write()?;
    {
        let mut queue = txn.open_table(QUEUE)?;
        let mut queue_state = txn.open_table(QUEUE_STATE)?;
        let mut queue_meta = txn.open_table(QUEUE_META)?;
        for id in &orphans {
            tracing::info!(client_id = %id, "removing the queue of a session that ended");
            let id = id.as_str();
            queue.retain_in((id, 0u64)..=(id, u64::MAX), |_, _| false)?;
            queue_state.retain_in((id, 0u64)..=(id, u64::MAX), |_, _| false)?;
            queue_meta.remove(id)?;
        }
    }
    txn.commit()?;
    Ok(())
}
