//! The queue tables' share of a commit, written in key order: the ops of a batch that touch
//! `session_queue` and `session_queue_state` are collected, sorted by key, and written as runs
//! (ops on different keys commute; the rare key touched twice in one commit, which the broker
//! does not do, is written op by op in push order). Rows appended to a session's queue go in
//! through one redb cursor, whose inserts are spliced into the tree a leaf at a time; rows
//! removed (acknowledged deliveries, mostly contiguous seqs) go in one `retain_in` scan per run
//! of nearby seqs, which rewrites each leaf once. Row by row, every insert and delete descended
//! the B-tree and rewrote its leaf: ~70% of a drain's instructions.
//!
//! Invariant: the tables end up exactly as if each op had been applied in push order, and the
//! count deltas of `session_queue_meta` only count rows that were really added or removed.

use std::ops::Bound;
use std::sync::Arc;

use redb::{CursorError, Table, WriteTransaction};

use super::ops::{open, MetaDelta};
use super::records::{encode_append, DeliveryRef};
use super::tables::{QUEUE, QUEUE_STATE};
use crate::error::{Error, Result};

/// Removals further apart than this many seqs are separate scans (the rows between them, if
/// any, are read and kept: in flight or waiting in memory, so few).
const MAX_GAP: u64 = 64;

type QueueTable<'t> = Table<'t, (&'static str, u64), &'static [u8]>;
type StateTable<'t> = Table<'t, (&'static str, u64), u32>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change<V> {
    /// Insert or overwrite; for the queue, `weight` is the message's `Message::weight`.
    Put { value: V, weight: u32 },
    /// Remove if present; `weight` is what the meta row counted for it.
    Del { weight: u32 },
}

impl<V> Change<V> {
    fn is_put(&self) -> bool {
        matches!(self, Change::Put { .. })
    }
}

#[derive(Clone, Copy)]
struct Keyed<'o, V> {
    client: &'o Arc<str>,
    seq: u64,
    change: Change<V>,
}

/// Pending changes of the two queue tables within one commit (see the module header).
#[derive(Default)]
pub(super) struct QueueWrites<'o> {
    /// `session_queue`: the value is the range of the encoded record in `records`.
    rows: Vec<Keyed<'o, (usize, usize)>>,
    /// `session_queue_state`: `pid | released << 16`.
    states: Vec<Keyed<'o, u32>>,
    records: Vec<u8>,
}

impl<'o> QueueWrites<'o> {
    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.states.is_empty()
    }

    /// A queued delivery's record (encoded now, into the commit's shared buffer).
    pub(super) fn enqueue(
        &mut self,
        client: &'o Arc<str>,
        seq: u64,
        rec: &DeliveryRef<'_>,
        weight: u32,
    ) -> Result<()> {
        let start = self.records.len();
        encode_append(rec, &mut self.records)?;
        self.rows.push(Keyed {
            client,
            seq,
            change: Change::Put {
                value: (start, self.records.len()),
                weight,
            },
        });
        Ok(())
    }

    pub(super) fn mark_sent(&mut self, client: &'o Arc<str>, seq: u64, state: u32) {
        self.states.push(Keyed {
            client,
            seq,
            change: Change::Put {
                value: state,
                weight: 0,
            },
        });
    }

    /// Removes the delivery's sent state only (its record stays queued).
    pub(super) fn unreserve(&mut self, client: &'o Arc<str>, seq: u64) {
        self.states.push(Keyed {
            client,
            seq,
            change: Change::Del { weight: 0 },
        });
    }

    /// Removes the delivery's record and its sent state.
    pub(super) fn dequeue(&mut self, client: &'o Arc<str>, seq: u64, weight: u32) {
        self.rows.push(Keyed {
            client,
            seq,
            change: Change::Del { weight },
        });
        self.states.push(Keyed {
            client,
            seq,
            change: Change::Del { weight: 0 },
        });
    }

    /// Writes everything pending and folds the queue count changes into `deltas`. Each table
    /// is opened (into its slot, kept for the rest of the commit) only if it has changes: a
    /// fill does not open `session_queue_state`.
    pub(super) fn flush<'t>(
        &mut self,
        txn: &'t WriteTransaction,
        queue: &mut Option<QueueTable<'t>>,
        state: &mut Option<StateTable<'t>>,
        deltas: &mut std::collections::HashMap<&'o Arc<str>, MetaDelta>,
    ) -> Result<()> {
        let records = std::mem::take(&mut self.records);
        let (rows, repeated) = split_repeated(std::mem::take(&mut self.rows));
        let mut queue = match rows.is_empty() && repeated.is_empty() {
            true => None,
            false => Some(open(txn, queue, QUEUE)?),
        };
        // A repeated key's ops one at a time (single-op runs), in push order.
        for run in runs(&rows).chain(repeated.chunks(1)) {
            let Some(queue) = queue.as_deref_mut() else {
                break;
            };
            let client = run[0].client;
            let (messages, bytes) = if run[0].change.is_put() {
                put_run(queue, client, run, |(s, e)| &records[s..e])?
            } else {
                del_run(queue, client, run)?
            };
            if messages != 0 {
                let d = deltas.entry(client).or_default();
                d.messages += messages;
                d.bytes += bytes;
            }
        }
        let (states, repeated) = split_repeated(std::mem::take(&mut self.states));
        let mut state = match states.is_empty() && repeated.is_empty() {
            true => None,
            false => Some(open(txn, state, QUEUE_STATE)?),
        };
        for run in runs(&states).chain(repeated.chunks(1)) {
            let Some(state) = state.as_deref_mut() else {
                break;
            };
            let client = run[0].client;
            if run[0].change.is_put() {
                put_run(state, client, run, |v| v)?;
            } else {
                del_run(state, client, run)?;
            }
        }
        // Keep the buffer's allocation for the next batch of this commit.
        self.records = records;
        self.records.clear();
        Ok(())
    }
}

/// Sorts by (client, seq) and splits off the keys changed more than once: those are returned
/// apart, by key and, per key, in push order (the sort is stable, and linear on the usual
/// input, ascending seqs per client).
fn split_repeated<V: Copy>(mut v: Vec<Keyed<'_, V>>) -> (Vec<Keyed<'_, V>>, Vec<Keyed<'_, V>>) {
    v.sort_by(|a, b| (&**a.client, a.seq).cmp(&(&**b.client, b.seq)));
    let same = |a: &Keyed<'_, V>, b: &Keyed<'_, V>| a.seq == b.seq && a.client == b.client;
    if !v.windows(2).any(|w| same(&w[0], &w[1])) {
        return (v, Vec::new());
    }
    let (mut single, mut repeated) = (Vec::with_capacity(v.len()), Vec::new());
    for group in v.chunk_by(same) {
        match group {
            [one] => single.push(*one),
            _ => repeated.extend_from_slice(group),
        }
    }
    (single, repeated)
}

/// Consecutive changes of one client and one kind; removals split where seqs are far apart.
fn runs<'a, 'o, V>(v: &'a [Keyed<'o, V>]) -> impl Iterator<Item = &'a [Keyed<'o, V>]> {
    v.chunk_by(|a, b| {
        a.client == b.client
            && match (&a.change, &b.change) {
                (Change::Put { .. }, Change::Put { .. }) => true,
                (Change::Del { .. }, Change::Del { .. }) => b.seq - a.seq <= MAX_GAP,
                _ => false,
            }
    })
}

/// Inserts the puts of `run` (ascending seqs of `client`) through a cursor. A key that already
/// has a row, or that sorts after a row the cursor has not passed, is rejected by the cursor:
/// that one is written by a plain insert and the cursor reopened after it. Returns the rows
/// added (not overwritten) and their weight.
fn put_run<'v, V, T>(
    table: &mut Table<'_, (&'static str, u64), V>,
    client: &Arc<str>,
    run: &[Keyed<'_, T>],
    value: impl Fn(T) -> V::SelfType<'v>,
) -> Result<(i64, i64)>
where
    V: redb::Value + 'static,
    T: Copy,
{
    let (mut added, mut bytes) = (0i64, 0i64);
    let mut i = 0;
    while i < run.len() {
        let mut rejected = None;
        {
            let mut cursor = table.lower_bound_mut(Bound::Included((&**client, run[i].seq)))?;
            while i < run.len() {
                // Runs are of one kind (see `runs`): a removal never shows up here.
                let Change::Put { value: v, weight } = run[i].change else {
                    i += 1;
                    continue;
                };
                match cursor.insert_before((&**client, run[i].seq), value(v)) {
                    Ok(()) => {
                        added += 1;
                        bytes += i64::from(weight);
                        i += 1;
                    }
                    Err(CursorError::UnorderedKey) => {
                        rejected = Some((v, weight));
                        break;
                    }
                    Err(CursorError::Storage(e)) => return Err(e.into()),
                    Err(e) => return Err(Error::Storage(e.into())),
                }
            }
            cursor.close()?;
        }
        if let Some((v, weight)) = rejected {
            if table.insert((&**client, run[i].seq), value(v))?.is_none() {
                added += 1;
                bytes += i64::from(weight);
            }
            i += 1;
        }
    }
    Ok((added, bytes))
}

/// Removes the rows of `run` (ascending seqs of `client`, not far apart) in one scan of their
/// range, keeping any other row in it. Returns minus the rows removed and their weight.
fn del_run<V, T>(
    table: &mut Table<'_, (&'static str, u64), V>,
    client: &Arc<str>,
    run: &[Keyed<'_, T>],
) -> Result<(i64, i64)>
where
    V: redb::Value + 'static,
{
    let (lo, hi) = (run[0].seq, run[run.len() - 1].seq);
    let (mut removed, mut bytes) = (0i64, 0i64);
    let mut next = 0;
    table.retain_in((&**client, lo)..=(&**client, hi), |(_, seq), _| {
        while next < run.len() && run[next].seq < seq {
            next += 1;
        }
        match run.get(next) {
            Some(k) if k.seq == seq => {
                removed += 1;
                if let Change::Del { weight } = k.change {
                    bytes += i64::from(weight);
                }
                false
            }
            _ => true,
        }
    })?;
    Ok((-removed, -bytes))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use redb::{Database, ReadableDatabase, ReadableTable};

    use super::super::ops::{apply, Op};
    use super::super::records::{decode, DeliveryRecord};
    use super::super::tables::{init_tables, pack_sent_state, QUEUE, QUEUE_META, QUEUE_STATE};
    use super::*;
    use crate::message::Message;

    fn msg(payload: usize) -> Arc<Message> {
        Arc::new(Message {
            received_ms: 1,
            ..Message::test("t", bytes::Bytes::from(vec![7u8; payload]), 1, "p")
        })
    }

    /// The tables as ops applied one at a time leave them (what the writer did before runs).
    #[derive(Default)]
    struct Model {
        /// Payload length, and the weight the meta row counted for the row.
        rows: BTreeMap<(String, u64), (usize, u32)>,
        states: BTreeMap<(String, u64), u32>,
        meta: HashMap<String, (i64, i64)>,
    }

    impl Model {
        fn apply(&mut self, op: &Op) {
            match op {
                Op::Enqueue {
                    client, seq, msg, ..
                } => {
                    let key = (client.to_string(), *seq);
                    let weight = msg.weight() as u32;
                    match self.rows.get_mut(&key) {
                        // Overwritten: the count keeps the weight counted first.
                        Some(row) => row.0 = msg.payload.len(),
                        None => {
                            self.rows.insert(key, (msg.payload.len(), weight));
                            let m = self.meta.entry(client.to_string()).or_default();
                            m.0 += 1;
                            m.1 += i64::from(weight);
                        }
                    }
                }
                Op::MarkSent {
                    client,
                    seq,
                    pid,
                    released,
                } => {
                    let state = pack_sent_state(pid.value(), *released);
                    self.states.insert((client.to_string(), *seq), state);
                }
                Op::Unreserve { client, seq } => {
                    self.states.remove(&(client.to_string(), *seq));
                }
                Op::Dequeue {
                    client,
                    seq,
                    weight,
                } => {
                    let key = (client.to_string(), *seq);
                    if self.rows.remove(&key).is_some() {
                        let m = self.meta.entry(client.to_string()).or_default();
                        m.0 -= 1;
                        m.1 -= i64::from(*weight);
                    }
                    self.states.remove(&key);
                }
                Op::DeleteSession(client) => {
                    self.rows.retain(|k, _| *k.0 != **client);
                    self.states.retain(|k, _| *k.0 != **client);
                    self.meta.remove(&**client);
                }
                _ => {}
            }
        }
    }

    /// A small deterministic generator (xorshift), so a failure replays.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn check(db: &Database, model: &Model) {
        let txn = db.begin_read().unwrap();
        let queue = txn.open_table(QUEUE).unwrap();
        let rows: BTreeMap<(String, u64), usize> = queue
            .iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                let (c, s) = k.value();
                let d: DeliveryRecord = decode("session_queue", v.value()).unwrap();
                ((c.to_string(), s), d.msg.payload.len())
            })
            .collect();
        let want: BTreeMap<(String, u64), usize> =
            model.rows.iter().map(|(k, v)| (k.clone(), v.0)).collect();
        assert_eq!(rows, want, "session_queue");
        let state = txn.open_table(QUEUE_STATE).unwrap();
        let states: BTreeMap<(String, u64), u32> = state
            .iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                let (c, s) = k.value();
                ((c.to_string(), s), v.value())
            })
            .collect();
        assert_eq!(states, model.states, "session_queue_state");
        let meta = txn.open_table(QUEUE_META).unwrap();
        let stored: HashMap<String, (i64, i64)> = meta
            .iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                let (n, b) = v.value();
                (k.value().to_string(), (n as i64, b as i64))
            })
            .collect();
        let expected: HashMap<String, (i64, i64)> = model
            .meta
            .iter()
            .filter(|(_, m)| m.0 > 0)
            .map(|(c, m)| (c.clone(), *m))
            .collect();
        assert_eq!(stored, expected, "session_queue_meta");
    }

    /// Commits `ops`, which `model` has seen already, and compares.
    fn commit(db: &Database, model: &Model, ops: &[Op]) {
        let txn = db.begin_write().unwrap();
        apply(&txn, ops.iter(), true).unwrap();
        txn.commit().unwrap();
        check(db, model);
    }

    /// Random batches of appends, acknowledgements (in order, out of order, far apart), sends,
    /// re-enqueued keys, forgotten ids, removals of absent rows and session deletions, for three sessions:
    /// after every commit the tables and counts equal those of applying the ops one by one.
    #[test]
    fn queue_writes_in_runs_leave_the_tables_as_ops_applied_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        init_tables(&db).unwrap();
        let clients: Vec<Arc<str>> = vec!["a".into(), "b".into(), "bb".into()];
        let mut next = [1u64; 3];
        let mut model = Model::default();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..150 {
            let mut ops = Vec::new();
            for _ in 0..rng.below(120) {
                let c = rng.below(3) as usize;
                let client = clients[c].clone();
                let hi = next[c];
                let some_seq = |r: &mut Rng| hi.saturating_sub(r.below(200)).max(1);
                let op = match rng.below(100) {
                    0..=39 => {
                        next[c] += 1;
                        Op::Enqueue {
                            client,
                            seq: next[c] - 1,
                            msg: msg(rng.below(50) as usize),
                            qos: 1,
                            retain: false,
                            sub_ids: vec![],
                        }
                    }
                    40..=44 => Op::Enqueue {
                        client,
                        seq: some_seq(&mut rng),
                        msg: msg(3),
                        qos: 1,
                        retain: false,
                        sub_ids: vec![1],
                    },
                    45..=64 => Op::MarkSent {
                        client,
                        seq: some_seq(&mut rng),
                        pid: mqtt_proto::Pid::try_from(rng.below(65535) as u16 + 1).unwrap(),
                        released: rng.below(2) == 0,
                    },
                    65..=69 => Op::Unreserve {
                        client,
                        seq: some_seq(&mut rng),
                    },
                    70..=98 => {
                        let seq = some_seq(&mut rng);
                        // What the broker passes: the weight counted for the row.
                        let weight = model
                            .rows
                            .get(&(client.to_string(), seq))
                            .map_or(0, |r| r.1);
                        Op::Dequeue {
                            client,
                            seq,
                            weight,
                        }
                    }
                    _ => Op::DeleteSession(client),
                };
                model.apply(&op);
                ops.push(op);
            }
            commit(&db, &model, &ops);
        }
        assert!(model.rows.len() > 100, "the test keeps a queue to work on");
    }

    /// The drain's shape: sends recorded ahead, acknowledgements of a contiguous range.
    #[test]
    fn a_contiguous_range_of_acknowledgements_is_removed_with_its_sent_states() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        init_tables(&db).unwrap();
        let c: Arc<str> = "client".into();
        let mut model = Model::default();
        let fill: Vec<Op> = (1..=5000)
            .map(|seq| Op::Enqueue {
                client: c.clone(),
                seq,
                msg: msg(64),
                qos: 1,
                retain: false,
                sub_ids: vec![],
            })
            .collect();
        fill.iter().for_each(|op| model.apply(op));
        commit(&db, &model, &fill);
        for round in 0..50u64 {
            let mut ops = Vec::new();
            for seq in round * 100 + 1..=round * 100 + 100 {
                ops.push(Op::MarkSent {
                    client: c.clone(),
                    seq,
                    pid: mqtt_proto::Pid::try_from((seq % 60000) as u16 + 1).unwrap(),
                    released: false,
                });
            }
            for seq in (round * 100).saturating_sub(99).max(1)..=round * 100 {
                ops.push(Op::Dequeue {
                    client: c.clone(),
                    seq,
                    weight: msg(64).weight() as u32,
                });
            }
            ops.iter().for_each(|op| model.apply(op));
            commit(&db, &model, &ops);
        }
        assert_eq!(model.rows.len(), 100);
    }
}
