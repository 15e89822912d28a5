//! The changes to durable state ([`Op`]) and how the writer applies a batch of them inside its
//! write transaction. Queue changes also update `session_queue_meta` (count and bytes per
//! session), folded into one row write per session per commit.

use std::collections::HashMap;
use std::sync::Arc;

use mqtt_proto::Pid;
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::queue_writes::QueueWrites;
use super::records::{encode, DeliveryRef, SessionRecord};
use super::tables::*;
use crate::error::Result;
use crate::message::Message;

/// One change to durable state.
#[derive(Debug)]
pub enum Op {
    PutSession(Arc<str>, Box<SessionRecord>),
    /// The user name of the session's connection (None: anonymous), stored with the session.
    SessionUser(Arc<str>, Option<Arc<str>>),
    /// Removes the session with its queue and QoS 2 state.
    DeleteSession(Arc<str>),
    /// Removes the session record and user only: the queue rows stay until `DeleteSession`
    /// (or, after a crash, until start-up finds them without a session).
    ForgetSession(Arc<str>),
    Enqueue {
        client: Arc<str>,
        seq: u64,
        msg: Arc<Message>,
        qos: u8,
        retain: bool,
        sub_ids: Vec<u32>,
    },
    MarkSent {
        client: Arc<str>,
        seq: u64,
        pid: Pid,
        released: bool,
    },
    /// Forgets the packet id recorded ahead for a delivery that was never sent (its session
    /// went offline): the delivery stays queued, to be sent later with a fresh id, without DUP.
    Unreserve {
        client: Arc<str>,
        seq: u64,
    },
    /// Removes a queued delivery; `weight` is its message's `Message::weight` (the bytes the
    /// queue's meta row counted for it).
    Dequeue {
        client: Arc<str>,
        seq: u64,
        weight: u32,
    },
    Qos2In {
        client: Arc<str>,
        pid: Pid,
        present: bool,
    },
    Retain {
        topic: Arc<str>,
        msg: Option<Arc<Message>>,
    },
    /// Hand a message to the commit hook (store-and-forward capture) in this transaction.
    Capture(Arc<Message>),
}

impl Op {
    /// Whether `batch` is a publish the client awaits the acknowledgement of (queued for a
    /// persistent session, captured for sync, retained, a QoS 2 id): the batches a commit
    /// gathers (see `writer.rs`); not a drain's removals and packet ids, nor session changes.
    pub(super) fn acknowledged(batch: &[Op]) -> bool {
        batch.iter().any(|op| {
            matches!(
                op,
                Op::Enqueue { .. } | Op::Capture(_) | Op::Retain { .. } | Op::Qos2In { .. }
            )
        })
    }
}

/// How an op the op log carries (`oplog.rs`) is encoded: a publish queued for a session.
/// `LoggedRef` is written, `Logged` read back: postcard encodes both the same way (a `&str`
/// as an `Arc<str>`, a slice as a `Vec`), checked by `oplog_tests.rs`.
#[derive(serde::Serialize)]
enum LoggedRef<'a> {
    Enqueue {
        client: &'a str,
        seq: u64,
        msg: &'a Message,
        qos: u8,
        retain: bool,
        sub_ids: &'a [u32],
    },
}

#[derive(serde::Deserialize)]
enum Logged {
    Enqueue {
        client: Arc<str>,
        seq: u64,
        msg: Message,
        qos: u8,
        retain: bool,
        sub_ids: Vec<u32>,
    },
}

/// Appends the op-log encoding of every op of `ops` to `out`; false (and `out` left in any
/// state, never longer than `max`) when one of them is not carried by the op log, or the
/// encoding would pass `max` bytes: that commit syncs redb itself.
pub(super) fn encode_logged<'a>(
    ops: impl Iterator<Item = &'a Op>,
    out: &mut Vec<u8>,
    max: usize,
) -> bool {
    for op in ops {
        let Op::Enqueue {
            client,
            seq,
            msg,
            qos,
            retain,
            sub_ids,
        } = op
        else {
            return false;
        };
        let logged = LoggedRef::Enqueue {
            client,
            seq: *seq,
            msg,
            qos: *qos,
            retain: *retain,
            sub_ids,
        };
        // Sized first: `out` never grows past `max` (it stays allocated, see `MAX_RECORD`).
        let size = postcard::serialize_with_flavor(&logged, postcard::ser_flavors::Size::default());
        if size.map_or(true, |n| out.len() + n > max) {
            return false;
        }
        match postcard::to_extend(&logged, std::mem::take(out)) {
            Ok(v) => *out = v,
            Err(_) => return false,
        }
    }
    true
}

/// The ops of one op-log record, in order.
pub(super) fn decode_logged(mut payload: &[u8]) -> std::result::Result<Vec<Op>, postcard::Error> {
    let mut ops = Vec::new();
    while !payload.is_empty() {
        let (logged, rest) = postcard::take_from_bytes::<Logged>(payload)?;
        payload = rest;
        let Logged::Enqueue {
            client,
            seq,
            msg,
            qos,
            retain,
            sub_ids,
        } = logged;
        ops.push(Op::Enqueue {
            client,
            seq,
            msg: Arc::new(msg),
            qos,
            retain,
            sub_ids,
        });
    }
    Ok(ops)
}

/// Change of one session's queue meta row within a commit.
#[derive(Default)]
pub(super) struct MetaDelta {
    /// The queue was deleted first: the row starts from zero, not from what is stored.
    reset: bool,
    pub(super) messages: i64,
    pub(super) bytes: i64,
}

/// `slot`'s table, opened in `txn` on first use: a commit only pays for the tables it changes.
pub(super) fn open<'s, 't, K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &'t WriteTransaction,
    slot: &'s mut Option<Table<'t, K, V>>,
    def: TableDefinition<K, V>,
) -> Result<&'s mut Table<'t, K, V>> {
    let table = match slot.take() {
        Some(t) => t,
        None => txn.open_table(def)?,
    };
    Ok(slot.insert(table))
}

/// Applies every op of `ops`, in order, to the tables of `txn`. `stamp`: also record the time
/// of this commit (`last_commit_ms`, which dates a crash at the next start; the writer stamps
/// at most about once a second, see `STAMP_EVERY`).
pub(super) fn apply<'a>(
    txn: &WriteTransaction,
    ops: impl Iterator<Item = &'a Op>,
    stamp: bool,
) -> Result<()> {
    let (mut sessions, mut queue, mut queue_state) = (None, None, None);
    let (mut qos2, mut retained, mut users) = (None, None, None);
    if stamp {
        txn.open_table(META)?
            .insert(super::tables::LAST_COMMIT_MS, crate::message::now_ms())?;
    }
    let mut deltas: HashMap<&Arc<str>, MetaDelta> = HashMap::new();
    // Queue rows are written in key order at the end (or before a session's deletion).
    let mut writes = QueueWrites::default();
    for op in ops {
        match op {
            Op::PutSession(id, rec) => {
                open(txn, &mut sessions, SESSIONS)?.insert(&**id, encode(rec)?.as_slice())?;
            }
            Op::SessionUser(id, user) => {
                open(txn, &mut users, SESSION_USERS)?
                    .insert(&**id, encode(&user.as_deref())?.as_slice())?;
            }
            Op::ForgetSession(id) => {
                open(txn, &mut sessions, SESSIONS)?.remove(&**id)?;
                open(txn, &mut users, SESSION_USERS)?.remove(&**id)?;
            }
            Op::DeleteSession(id) => {
                if !writes.is_empty() {
                    writes.flush(txn, &mut queue, &mut queue_state, &mut deltas)?;
                }
                open(txn, &mut sessions, SESSIONS)?.remove(&**id)?;
                open(txn, &mut users, SESSION_USERS)?.remove(&**id)?;
                open(txn, &mut queue, QUEUE)?
                    .retain_in((&**id, 0u64)..=(&**id, u64::MAX), |_, _| false)?;
                open(txn, &mut queue_state, QUEUE_STATE)?
                    .retain_in((&**id, 0u64)..=(&**id, u64::MAX), |_, _| false)?;
                open(txn, &mut qos2, QOS2_IN)?
                    .retain_in((&**id, 0u16)..=(&**id, u16::MAX), |_, _| false)?;
                deltas.insert(
                    id,
                    MetaDelta {
                        reset: true,
                        ..MetaDelta::default()
                    },
                );
            }
            Op::Enqueue {
                client,
                seq,
                msg,
                qos,
                retain,
                sub_ids,
            } => {
                let rec = DeliveryRef {
                    msg,
                    qos: *qos,
                    retain: *retain,
                    sub_ids,
                    pid: 0,
                    released: false,
                };
                writes.enqueue(client, *seq, &rec, msg.weight() as u32)?;
            }
            Op::MarkSent {
                client,
                seq,
                pid,
                released,
            } => {
                let state = pack_sent_state(pid.value(), *released);
                writes.mark_sent(client, *seq, state);
            }
            Op::Unreserve { client, seq } => writes.unreserve(client, *seq),
            Op::Dequeue {
                client,
                seq,
                weight,
            } => writes.dequeue(client, *seq, *weight),
            Op::Qos2In {
                client,
                pid,
                present,
            } => {
                if *present {
                    open(txn, &mut qos2, QOS2_IN)?.insert((&**client, pid.value()), ())?;
                } else {
                    open(txn, &mut qos2, QOS2_IN)?.remove((&**client, pid.value()))?;
                }
            }
            Op::Retain { topic, msg } => match msg {
                Some(m) => {
                    open(txn, &mut retained, RETAINED)?
                        .insert(&**topic, encode(&**m)?.as_slice())?;
                }
                None => {
                    open(txn, &mut retained, RETAINED)?.remove(&**topic)?;
                }
            },
            Op::Capture(_) => {}
        }
    }
    if !writes.is_empty() {
        writes.flush(txn, &mut queue, &mut queue_state, &mut deltas)?;
    }
    if deltas.is_empty() {
        return Ok(());
    }
    let mut meta = txn.open_table(QUEUE_META)?;
    for (client, d) in deltas {
        let (n, bytes) = match d.reset {
            true => (0, 0),
            false => meta.get(&**client)?.map(|v| v.value()).unwrap_or((0, 0)),
        };
        let n = (n as i64 + d.messages).max(0) as u64;
        let bytes = (bytes as i64 + d.bytes).max(0) as u64;
        if n == 0 {
            meta.remove(&**client)?;
        } else {
            meta.insert(&**client, (n, bytes))?;
        }
    }
    Ok(())
}
