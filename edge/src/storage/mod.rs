//! Durable state in one redb file, written by one thread with group commit.
//!
//! Invariants:
//! - Every change is an [`Op`] pushed while the broker lock is held, so the order of ops on
//!   disk is the order of decisions in memory. A pushed batch gets a [`Ticket`]; an empty one
//!   gets none (`None`: nothing to wait for).
//! - The writer folds every queued batch (up to `max_batch` ops) into one write transaction
//!   and one fsync, then publishes the highest committed ticket. An acknowledgement that
//!   promises durability waits for its ticket ([`Store::wait`]) before it is sent.
//! - The queue of batches is bounded by a semaphore taken *before* the broker lock.

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use event_listener::Event;
use mqtt_proto::Pid;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use smol::lock::{Semaphore, SemaphoreGuardArc};

use crate::config::{Config, Durability};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::topic::SubOptions;

const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("session_queue");
/// Packet id and release flag of deliveries sent at least once: `pid | released << 16`. Kept
/// apart from the record so that marking a send writes 4 bytes, not the whole message again.
const QUEUE_STATE: TableDefinition<(&str, u64), u32> = TableDefinition::new("session_queue_state");
const QOS2_IN: TableDefinition<(&str, u16), ()> = TableDefinition::new("session_qos2_in");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
/// Client id -> the user name (postcard `Option<String>`, None = anonymous) of the session's
/// last connection, so a session restored from disk is routed under its user's ACL. Kept
/// apart from `sessions` so records written by earlier versions still decode.
const SESSION_USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("session_users");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const SCHEMA_VERSION: u64 = 1;
/// Batches that may wait for the writer; submitters wait for a slot beyond this.
const QUEUE_SLOTS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WillRecord {
    pub msg: Message,
    pub delay_secs: u32,
}

/// A persistent session as stored. Only sessions that outlive their connection are stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub protocol: u8,
    pub expiry_secs: u32,
    pub subscriptions: Vec<(String, SubOptions)>,
    /// `None` while connected; when the broker starts and finds `None`, the broker stopped
    /// while the client was connected, so its will is due.
    pub disconnected_ms: Option<u64>,
    pub will: Option<WillRecord>,
}

/// A message waiting for, or in flight to, one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub msg: Message,
    pub qos: u8,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    /// Packet id once sent (0 = not sent yet); kept so redelivery reuses it. Stored in
    /// `session_queue_state`, filled in when the queue is loaded.
    pub pid: u16,
    /// QoS 2: PUBREC received, PUBREL sent; only the PUBCOMP is missing.
    pub released: bool,
}

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
    pub queue: Vec<(u64, DeliveryRecord)>,
    pub qos2_in: Vec<Pid>,
}

/// One change to durable state.
#[derive(Debug)]
pub enum Op {
    PutSession(Arc<str>, Box<SessionRecord>),
    /// The user name of the session's connection (None: anonymous), stored with the session.
    SessionUser(Arc<str>, Option<Arc<str>>),
    /// Removes the session with its queue and QoS 2 state.
    DeleteSession(Arc<str>),
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
    Dequeue {
        client: Arc<str>,
        seq: u64,
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

/// Called by the writer inside each transaction: the sync outbox's capture lives here, so a
/// forwarded message enters the outbox in the very commit that acknowledges it.
pub trait CommitHook: Send + Sync + 'static {
    fn capture(
        &self,
        txn: &WriteTransaction,
        msg: &Message,
    ) -> std::result::Result<(), edge_sync::SyncError>;
    fn committed(&self, ok: bool);
}

/// A reserved place in the writer queue; obtained before taking the broker lock.
pub struct Slot(#[allow(dead_code)] SemaphoreGuardArc);

/// Names one batch of ops queued for the writer. Tickets grow in push order and the writer
/// commits in that order, so once a ticket is committed every earlier one is too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(NonZeroU64);

impl Ticket {
    /// A ticket for tests of code that only passes tickets along.
    #[cfg(test)]
    pub(crate) fn for_test(n: u64) -> Ticket {
        Ticket(NonZeroU64::new(n).expect("tickets are non-zero"))
    }
}

struct Pending {
    batches: VecDeque<(u64, Vec<Op>, Slot)>,
    next_ticket: NonZeroU64,
    shutdown: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    committed: AtomicU64,
    committed_event: Event,
    /// Ticket ranges whose commit failed, newest last (bounded).
    failed: Mutex<VecDeque<(u64, u64)>>,
    stopped: AtomicBool,
}

pub struct Store {
    db: Arc<Database>,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    hook: Arc<Mutex<Option<Arc<dyn CommitHook>>>>,
}

impl Store {
    /// Opens (or creates) `edge.redb` and reads back everything in it. A file that exists but
    /// cannot be opened is an error; it is never replaced.
    pub fn open(cfg: &Config) -> Result<(Store, Loaded)> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| Error::Io {
            what: format!("data_dir {}", cfg.data_dir.display()),
            source: e,
        })?;
        let path = cfg.db_path();
        let open_err = |e| Error::OpenDatabase {
            path: path.display().to_string(),
            source: e,
        };
        let mut builder = Database::builder();
        builder.set_cache_size(cfg.storage.cache_size_bytes);
        let db = if path.exists() {
            // A read-only open first: a file that is not a database (truncated, zeroed, foreign)
            // is refused without a single byte written. `RepairAborted` only means the last
            // run did not shut down cleanly; the writable open below repairs it.
            match redb::ReadOnlyDatabase::open(&path) {
                Ok(ro) => {
                    drop(ro);
                    builder.open(&path)
                }
                Err(redb::DatabaseError::RepairAborted) => repair(&builder, &path),
                Err(e) => return Err(open_err(e)),
            }
        } else {
            builder.create(&path)
        }
        .map_err(open_err)?;
        let db = Arc::new(db);
        init_tables(&db)?;
        let loaded = load(&db)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                batches: VecDeque::new(),
                next_ticket: NonZeroU64::MIN,
                shutdown: false,
            }),
            wake: Condvar::new(),
            committed: AtomicU64::new(0),
            committed_event: Event::new(),
            failed: Mutex::new(VecDeque::new()),
            stopped: AtomicBool::new(false),
        });
        let hook: Arc<Mutex<Option<Arc<dyn CommitHook>>>> = Arc::new(Mutex::new(None));
        let writer = {
            let db = db.clone();
            let shared = shared.clone();
            let hook = hook.clone();
            let durability = cfg.durability;
            let max_batch = cfg.storage.max_batch;
            std::thread::Builder::new()
                .name("redb-writer".into())
                .spawn(move || writer_loop(db, shared, hook, durability, max_batch))
                .map_err(|e| Error::Io {
                    what: "spawn storage writer".into(),
                    source: e,
                })?
        };
        Ok((
            Store {
                db,
                shared,
                slots: Arc::new(Semaphore::new(QUEUE_SLOTS)),
                writer: Mutex::new(Some(writer)),
                hook,
            },
            loaded,
        ))
    }

    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    pub fn set_hook(&self, hook: Arc<dyn CommitHook>) {
        *lock(&self.hook) = Some(hook);
    }

    /// Reserves a place for one batch. Await this before taking the broker lock.
    pub async fn reserve(&self) -> Slot {
        Slot(self.slots.acquire_arc().await)
    }

    /// Queues a batch; returns its ticket, or `None` when the batch was empty (nothing to
    /// wait for, and the slot is simply given back).
    pub fn push(&self, slot: Slot, ops: Vec<Op>) -> Option<Ticket> {
        if ops.is_empty() {
            return None;
        }
        let mut p = lock(&self.shared.pending);
        let ticket = Ticket(p.next_ticket);
        p.next_ticket = p.next_ticket.saturating_add(1);
        p.batches.push_back((ticket.0.get(), ops, slot));
        drop(p);
        self.shared.wake.notify_one();
        Some(ticket)
    }

    /// The ticket of the last batch pushed (`None` before the first): waiting for it covers
    /// everything queued so far.
    pub fn latest_ticket(&self) -> Option<Ticket> {
        let next = lock(&self.shared.pending).next_ticket.get();
        NonZeroU64::new(next - 1).map(Ticket)
    }

    /// Resolves once the batch with `ticket` (and so every earlier one) is on disk; an error if
    /// its commit failed.
    pub async fn wait(&self, ticket: Ticket) -> Result<()> {
        let ticket = ticket.0.get();
        loop {
            if self.shared.committed.load(Ordering::Acquire) >= ticket {
                let failed = lock(&self.shared.failed)
                    .iter()
                    .any(|(lo, hi)| (*lo..=*hi).contains(&ticket));
                return if failed {
                    Err(Error::CommitFailed)
                } else {
                    Ok(())
                };
            }
            if self.shared.stopped.load(Ordering::Acquire) {
                return Err(Error::WriterGone);
            }
            let listener = self.shared.committed_event.listen();
            if self.shared.committed.load(Ordering::Acquire) >= ticket
                || self.shared.stopped.load(Ordering::Acquire)
            {
                continue;
            }
            listener.await;
        }
    }

    /// Commits what is queued and stops the writer thread.
    pub fn close(&self) {
        lock(&self.shared.pending).shutdown = true;
        self.shared.wake.notify_one();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// Opens a database that was not closed cleanly (crash, power loss), which makes redb repair
/// it. The file is copied first: if the repair fails, the copy is put back, so a database that
/// cannot be opened is left exactly as it was found, for inspection.
fn repair(
    builder: &redb::Builder,
    path: &Path,
) -> std::result::Result<Database, redb::DatabaseError> {
    tracing::warn!(path = %path.display(), "database was not closed cleanly; repairing");
    let backup = path.with_extension("redb.before-repair");
    let copied = match std::fs::copy(path, &backup) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "could not copy the database before repair; repairing in place");
            false
        }
    };
    match builder.open(path) {
        Ok(db) => {
            if copied {
                let _ = std::fs::remove_file(&backup);
            }
            Ok(db)
        }
        Err(e) => {
            if copied {
                if let Err(re) = std::fs::rename(&backup, path) {
                    tracing::error!(error = %re, backup = %backup.display(), "could not put the original database back; it is kept beside it");
                }
            }
            Err(e)
        }
    }
}

use edge_mqtt::util::lock;

fn init_tables(db: &Database) -> Result<()> {
    let txn = db.begin_write()?;
    {
        txn.open_table(SESSIONS)?;
        txn.open_table(QUEUE)?;
        txn.open_table(QUEUE_STATE)?;
        txn.open_table(QOS2_IN)?;
        txn.open_table(RETAINED)?;
        txn.open_table(SESSION_USERS)?;
        let mut meta = txn.open_table(META)?;
        let version = meta.get("schema_version")?.map(|v| v.value());
        match version {
            None => {
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

fn decode<T: for<'a> Deserialize<'a>>(table: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|source| Error::Corrupt { table, source })
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(Error::Encode)
}

fn load(db: &Database) -> Result<Loaded> {
    let txn = db.begin_read()?;
    let sessions = txn.open_table(SESSIONS)?;
    let users = txn.open_table(SESSION_USERS)?;
    let queue = txn.open_table(QUEUE)?;
    let queue_state = txn.open_table(QUEUE_STATE)?;
    let qos2 = txn.open_table(QOS2_IN)?;
    let retained = txn.open_table(RETAINED)?;
    let meta = txn.open_table(META)?;
    let mut out = Loaded {
        last_commit_ms: meta.get("last_commit_ms")?.map(|v| v.value()),
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
        let mut sent = std::collections::HashMap::new();
        for row in queue_state.range((client_id.as_str(), 0u64)..=(client_id.as_str(), u64::MAX))? {
            let (k, v) = row?;
            sent.insert(k.value().1, v.value());
        }
        let mut q = Vec::new();
        for row in queue.range((client_id.as_str(), 0u64)..=(client_id.as_str(), u64::MAX))? {
            let (k, v) = row?;
            match decode::<DeliveryRecord>("session_queue", v.value()) {
                Ok(mut d) => {
                    let seq = k.value().1;
                    if let Some(st) = sent.get(&seq) {
                        d.pid = (*st & 0xffff) as u16;
                        d.released = st >> 16 != 0;
                    }
                    q.push((seq, d))
                }
                Err(e) => {
                    tracing::error!(client_id, error = %e, "skipping unreadable queued message")
                }
            }
        }
        let mut pids = Vec::new();
        for row in qos2.range((client_id.as_str(), 0u16)..=(client_id.as_str(), u16::MAX))? {
            // Only packet ids are stored, never 0.
            pids.extend(Pid::try_from(row?.0.value().1).ok());
        }
        out.sessions.push(LoadedSession {
            client_id,
            record,
            user,
            queue: q,
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

fn writer_loop(
    db: Arc<Database>,
    shared: Arc<Shared>,
    hook: Arc<Mutex<Option<Arc<dyn CommitHook>>>>,
    durability: Durability,
    max_batch: usize,
) {
    let mut unsynced = false;
    loop {
        let mut taken: Vec<(u64, Vec<Op>, Slot)> = Vec::new();
        let shutdown;
        {
            let mut p = lock(&shared.pending);
            while p.batches.is_empty() && !p.shutdown {
                if unsynced {
                    // durability = "none": bound the loss window to about a second.
                    let (g, timeout) = shared
                        .wake
                        .wait_timeout(p, Duration::from_secs(1))
                        .unwrap_or_else(|e| e.into_inner());
                    p = g;
                    if timeout.timed_out() && p.batches.is_empty() {
                        break;
                    }
                } else {
                    p = shared.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                }
            }
            let mut ops = 0;
            while let Some(b) = p.batches.front() {
                if !taken.is_empty() && ops + b.1.len() > max_batch {
                    break;
                }
                ops += b.1.len();
                taken.extend(p.batches.pop_front());
            }
            shutdown = p.shutdown && p.batches.is_empty();
        }
        if taken.is_empty() {
            if unsynced || shutdown {
                if let Err(e) = sync_now(&db) {
                    tracing::error!(error = %e, "periodic fsync failed");
                }
                unsynced = false;
            }
            if shutdown {
                break;
            }
            continue;
        }
        let lo = taken.first().map(|b| b.0).unwrap_or(0);
        let hi = taken.last().map(|b| b.0).unwrap_or(0);
        let hook = lock(&hook).clone();
        let result = commit(&db, &taken, durability, hook.as_deref());
        if let Some(h) = &hook {
            h.committed(result.is_ok());
        }
        match result {
            Ok(()) => unsynced = durability == Durability::None,
            Err(e) => {
                tracing::error!(error = %e, tickets = ?(lo, hi), "commit failed; affected publishes are not acknowledged");
                let mut f = lock(&shared.failed);
                f.push_back((lo, hi));
                while f.len() > 64 {
                    f.pop_front();
                }
            }
        }
        drop(taken);
        shared.committed.store(hi, Ordering::Release);
        shared.committed_event.notify(usize::MAX);
    }
    shared.stopped.store(true, Ordering::Release);
    shared.committed_event.notify(usize::MAX);
}

fn sync_now(db: &Database) -> Result<()> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    txn.commit()?;
    Ok(())
}

fn commit(
    db: &Database,
    batches: &[(u64, Vec<Op>, Slot)],
    durability: Durability,
    hook: Option<&dyn CommitHook>,
) -> Result<()> {
    let mut txn = db.begin_write()?;
    txn.set_durability(match durability {
        Durability::Immediate => redb::Durability::Immediate,
        Durability::None => redb::Durability::None,
    })?;
    {
        let mut sessions = txn.open_table(SESSIONS)?;
        let mut queue = txn.open_table(QUEUE)?;
        let mut queue_state = txn.open_table(QUEUE_STATE)?;
        let mut qos2 = txn.open_table(QOS2_IN)?;
        let mut retained = txn.open_table(RETAINED)?;
        let mut users = txn.open_table(SESSION_USERS)?;
        txn.open_table(META)?
            .insert("last_commit_ms", crate::message::now_ms())?;
        for op in batches.iter().flat_map(|b| b.1.iter()) {
            match op {
                Op::PutSession(id, rec) => {
                    sessions.insert(&**id, encode(rec)?.as_slice())?;
                }
                Op::SessionUser(id, user) => {
                    users.insert(&**id, encode(&user.as_deref())?.as_slice())?;
                }
                Op::DeleteSession(id) => {
                    sessions.remove(&**id)?;
                    users.remove(&**id)?;
                    queue.retain_in((&**id, 0u64)..=(&**id, u64::MAX), |_, _| false)?;
                    queue_state.retain_in((&**id, 0u64)..=(&**id, u64::MAX), |_, _| false)?;
                    qos2.retain_in((&**id, 0u16)..=(&**id, u16::MAX), |_, _| false)?;
                }
                Op::Enqueue {
                    client,
                    seq,
                    msg,
                    qos,
                    retain,
                    sub_ids,
                } => {
                    let rec = DeliveryRecord {
                        msg: (**msg).clone(),
                        qos: *qos,
                        retain: *retain,
                        sub_ids: sub_ids.clone(),
                        pid: 0,
                        released: false,
                    };
                    queue.insert((&**client, *seq), encode(&rec)?.as_slice())?;
                }
                Op::MarkSent {
                    client,
                    seq,
                    pid,
                    released,
                } => {
                    let state = pid.value() as u32 | (*released as u32) << 16;
                    queue_state.insert((&**client, *seq), state)?;
                }
                Op::Dequeue { client, seq } => {
                    queue.remove((&**client, *seq))?;
                    queue_state.remove((&**client, *seq))?;
                }
                Op::Qos2In {
                    client,
                    pid,
                    present,
                } => {
                    if *present {
                        qos2.insert((&**client, pid.value()), ())?;
                    } else {
                        qos2.remove((&**client, pid.value()))?;
                    }
                }
                Op::Retain { topic, msg } => match msg {
                    Some(m) => {
                        retained.insert(&**topic, encode(&**m)?.as_slice())?;
                    }
                    None => {
                        retained.remove(&**topic)?;
                    }
                },
                Op::Capture(_) => {}
            }
        }
    }
    if let Some(hook) = hook {
        for op in batches.iter().flat_map(|b| b.1.iter()) {
            if let Op::Capture(msg) = op {
                hook.capture(&txn, msg)?;
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> Config {
        Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        }
    }

    fn msg(topic: &str) -> Arc<Message> {
        Arc::new(Message {
            topic: topic.into(),
            payload: bytes::Bytes::from_static(b"hello"),
            qos: 1,
            retain: false,
            received_ms: 1,
            expiry_secs: None,
            publisher: "p".into(),
            from_downlink: false,
            props: None,
        })
    }

    #[test]
    fn committed_ops_are_read_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, loaded) = Store::open(&cfg(dir.path())).unwrap();
            assert!(loaded.sessions.is_empty());
            let c: Arc<str> = "client".into();
            let rec = SessionRecord {
                protocol: 5,
                expiry_secs: 60,
                subscriptions: vec![],
                disconnected_ms: Some(5),
                will: None,
            };
            smol::block_on(async {
                let mut ops = vec![Op::PutSession(c.clone(), Box::new(rec))];
                for seq in 1..=3 {
                    ops.push(Op::Enqueue {
                        client: c.clone(),
                        seq,
                        msg: msg("a"),
                        qos: 1,
                        retain: false,
                        sub_ids: vec![7],
                    });
                }
                ops.push(Op::Dequeue {
                    client: c.clone(),
                    seq: 2,
                });
                ops.push(Op::MarkSent {
                    client: c.clone(),
                    seq: 3,
                    pid: Pid::try_from(9).unwrap(),
                    released: true,
                });
                ops.push(Op::Retain {
                    topic: "r".into(),
                    msg: Some(msg("r")),
                });
                let slot = store.reserve().await;
                let t = store
                    .push(slot, ops)
                    .expect("a ticket for a non-empty batch");
                store.wait(t).await.unwrap();
            });
        }
        let (_store, loaded) = Store::open(&cfg(dir.path())).unwrap();
        assert_eq!(loaded.sessions.len(), 1);
        let seqs: Vec<u64> = loaded.sessions[0].queue.iter().map(|q| q.0).collect();
        assert_eq!(seqs, vec![1, 3]);
        assert_eq!(loaded.sessions[0].queue[0].1.sub_ids, vec![7]);
        let (first, third) = (
            &loaded.sessions[0].queue[0].1,
            &loaded.sessions[0].queue[1].1,
        );
        assert_eq!((first.pid, first.released), (0, false));
        assert_eq!((third.pid, third.released), (9, true));
        assert_eq!(loaded.retained.len(), 1);
    }

    #[test]
    fn a_garbage_database_file_is_an_error_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        std::fs::write(&path, b"this is not a redb file at all, not even close").unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = Store::open(&cfg(dir.path())).err().expect("must fail");
        assert!(err.to_string().contains("cannot open database"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn deleting_a_session_removes_its_queue_only() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&cfg(dir.path())).unwrap();
        let rec = SessionRecord {
            protocol: 4,
            expiry_secs: 60,
            subscriptions: vec![],
            disconnected_ms: None,
            will: None,
        };
        smol::block_on(async {
            let mut ops = vec![];
            for c in ["a", "b"] {
                let c: Arc<str> = c.into();
                ops.push(Op::PutSession(c.clone(), Box::new(rec.clone())));
                ops.push(Op::Enqueue {
                    client: c.clone(),
                    seq: 1,
                    msg: msg("x"),
                    qos: 1,
                    retain: false,
                    sub_ids: vec![],
                });
            }
            ops.push(Op::DeleteSession("a".into()));
            let t = store.push(store.reserve().await, ops).expect("a ticket");
            store.wait(t).await.unwrap();
        });
        let loaded = load(&store.database()).unwrap();
        assert_eq!(loaded.sessions.len(), 1);
        assert_eq!(loaded.sessions[0].client_id, "b");
        assert_eq!(loaded.sessions[0].queue.len(), 1);
    }
}
