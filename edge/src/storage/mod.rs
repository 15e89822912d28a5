//! Durable state in one redb file, written by one thread with group commit.
//!
//! - `tables.rs`: the tables and the schema version; `records.rs`: what they hold.
//! - `ops.rs`: the changes ([`Op`]) and how a batch of them is applied.
//! - `load.rs`: what start-up reads (sessions and the shape of their queues, not the queues).
//! - `queue.rs`: queued deliveries read back as a client drains its session.
//! - `queue_writes.rs`: how a commit writes the queue tables (sorted runs, see below).
//! - `writer.rs`: the writer thread (group commit, gathering a publisher's window);
//!   `reap.rs`: committed ops dropped on an executor thread.
//! - `journal.rs`: the commit journal beneath redb (a durable commit is one sequential write
//!   and one fdatasync); `journal_file.rs`: the journal's file, written with `O_DIRECT`;
//!   `open.rs`: replaying it, then opening (and repairing) the file.
//! - `oplog.rs`: the op log ahead of redb: a commit that only queues publishes is made durable
//!   by a record of its ops, and redb applies them without a sync of its own.
//! - `damaged.rs`: a database whose content cannot be read, at start (set aside with its
//!   journal and op log, `storage.on_damaged`) or while running (checked at the next start);
//!   `salvage.rs`: what can still be read of a set-aside database copied into the new one.
//!
//! Cost per message (issue 9): a backlog fill inserts one `session_queue` row per message, a
//! drain one `session_queue_state` row (its packet id, recorded ahead of the send)
//! and deletes both rows once acknowledged. Written one by one, each of these descended the
//! B-tree and rewrote a leaf (~70% of a drain's instructions). A commit now collects them,
//! sorts them by key and writes runs: appends through one redb cursor (a leaf rewritten per
//! run, not per row), acknowledged rows with one range scan per run of nearby seqs. Chosen
//! over packing several messages per row or one reservation row per round because the rows,
//! their keys and their values stay as they were: files of earlier versions open unchanged,
//! crash recovery and the queue reads are untouched, and the per-row work left in the writer
//! is encoding and copying.
//!
//! Invariants:
//! - Every change is an [`Op`] pushed while the broker lock is held, so the order of ops on
//!   disk is the order of decisions in memory. A pushed batch gets a [`Ticket`]; an empty one
//!   gets none (`None`: nothing to wait for).
//! - The writer folds every queued batch (up to `max_batch` ops) into one write transaction
//!   and one fsync, then publishes the highest committed ticket. An acknowledgement that
//!   promises durability waits for its ticket ([`Store::wait`]) before it is sent.
//! - After a commit of several batches the next one waits, at most `writer::GATHER_WAIT`, for as
//!   many batches as were in flight (a publisher's window comes back as one group instead of
//!   two alternating halves, each paying an fsync); never after a lone batch, nor right after
//!   a wait that timed out. Pushes wake the writer only when it waits for them (`wake_at`).
//! - The queue of batches is bounded by a semaphore taken *before* the broker lock.
//! - A write that finds the disk full waits for space beneath redb (`disk_full`), so a commit
//!   is never lost or reordered for lack of space; [`Store::disk_full`] says when it waits.

mod damaged;
mod journal;
mod journal_file;
mod load;
mod open;
mod oplog;
mod ops;
mod queue;
mod queue_writes;
mod reap;
mod records;
mod salvage;
mod tables;
mod writer;

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
#[cfg(test)]
use std::time::Duration;
use std::time::SystemTime;

use event_listener::Event;
use redb::{Database, WriteTransaction};
use smol::lock::{Semaphore, SemaphoreGuardArc};

use crate::config::{Config, OnDamaged};
pub use crate::disk_full::DiskFull;
use crate::error::{Error, Result};
use crate::message::Message;

pub use damaged::DamageFound;
pub use journal::JournalCounters;
pub use load::{Loaded, LoadedSession, QueueShape};
use oplog::OpLog;
pub use oplog::OpLogCounters;
pub use ops::Op;
pub use records::{DeliveryRecord, SessionRecord, WillRecord};
pub use salvage::Salvaged;

/// Batches that may wait for the writer; submitters wait for a slot beyond this.
const QUEUE_SLOTS: usize = 4096;

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

    /// The ticket's number (tests that count the batches pushed).
    #[cfg(test)]
    pub(crate) fn number(self) -> u64 {
        self.0.get()
    }
}

struct Pending {
    batches: VecDeque<(u64, Vec<Op>, Slot)>,
    next_ticket: NonZeroU64,
    shutdown: bool,
    /// The writer sleeps until this many batches are queued (`usize::MAX`: it is committing,
    /// or a push already woke it: a push need not wake it). The push that reaches it wakes the
    /// writer and sets it back to `usize::MAX`: one futex wake per sleep, not one per push
    /// until the writer runs (std's `Condvar::notify_one` is a syscall even with no waiter;
    /// a backlog fill made ~7 a window).
    wake_at: usize,
}

impl Pending {
    /// Queues `batch`; returns whether the writer must be woken (`wake_at`): true once per
    /// sleep of the writer.
    fn queue(&mut self, batch: (u64, Vec<Op>, Slot)) -> bool {
        self.batches.push_back(batch);
        let wake = self.batches.len() >= self.wake_at;
        if wake {
            self.wake_at = usize::MAX;
        }
        wake
    }
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Highest ticket whose commit has ended: its changes are visible to reads (or it failed).
    committed: AtomicU64,
    /// Highest ticket whose changes are durable (may be acknowledged): ahead of `committed`
    /// between the journal's sync and the end of redb's commit ([`Shared::publish_durable`]).
    durable: AtomicU64,
    /// The last ticket of the commit in progress, until it is published durable (0: none).
    committing: AtomicU64,
    /// Acknowledged batches queued when the commit in progress was published durable
    /// (`writer::next_expect`).
    waiting_at_durable: std::sync::atomic::AtomicUsize,
    /// Notified when `committed` or `durable` moves.
    committed_event: Event,
    /// Ticket ranges whose commit failed, newest last (bounded).
    failed: Mutex<VecDeque<(u64, u64)>>,
    stopped: AtomicBool,
    /// Time of each group commit (write transaction and fsync), for `/metrics`.
    commit_latency: crate::stats::Histogram,
    /// Longest wait for a gathering, in µs: `writer::GATHER_WAIT` (tests lengthen it).
    gather_wait_us: AtomicU64,
    /// How much of a gathering's wait is polled: `writer::GATHER_SPIN` with more than one
    /// core, none on one.
    gather_spin: std::time::Duration,
    /// Takes committed ops off the writer ([`Store::reap`]).
    reaper: reap::Reaper,
}

impl Shared {
    /// Acknowledged batches ([`Op::acknowledged`]) queued now.
    fn waiting(&self) -> usize {
        (lock(&self.pending).batches.iter())
            .filter(|b| Op::acknowledged(&b.1))
            .count()
    }

    /// The commit in progress is durable: its tickets may be acknowledged. Called by the
    /// journal right after its sync (inside redb's commit, before the ~20 µs of redb's work
    /// that follows it) and by the writer after the commit; the first call publishes. Reads
    /// wait for `committed`, which only the writer moves, once redb shows the commit.
    fn publish_durable(&self) {
        let hi = self.committing.swap(0, Ordering::AcqRel);
        if hi == 0 {
            return;
        }
        // Counted before the acknowledgements may leave (see `writer::next_expect`).
        self.waiting_at_durable
            .store(self.waiting(), Ordering::Relaxed);
        self.durable.fetch_max(hi, Ordering::Release);
        self.committed_event.notify(usize::MAX);
    }

    /// Nothing queued, nothing committed, the writer not asleep on a count yet.
    fn new() -> Shared {
        Shared {
            pending: Mutex::new(Pending {
                batches: VecDeque::new(),
                next_ticket: NonZeroU64::MIN,
                shutdown: false,
                wake_at: 1,
            }),
            wake: Condvar::new(),
            committed: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            committing: AtomicU64::new(0),
            waiting_at_durable: std::sync::atomic::AtomicUsize::new(0),
            committed_event: Event::new(),
            failed: Mutex::new(VecDeque::new()),
            stopped: AtomicBool::new(false),
            commit_latency: crate::stats::Histogram::default(),
            gather_wait_us: AtomicU64::new(writer::GATHER_WAIT.as_micros() as u64),
            gather_spin: match std::thread::available_parallelism().map(|n| n.get()) {
                Ok(n) if n > 1 => writer::GATHER_SPIN,
                _ => std::time::Duration::ZERO,
            },
            reaper: reap::Reaper::default(),
        }
    }
}

pub struct Store {
    db: Arc<Database>,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    hook: Arc<Mutex<Option<Arc<dyn CommitHook>>>>,
    disk_full: Arc<DiskFull>,
    /// `None` without a commit journal (`storage.journal_bytes = 0`, or no room for it).
    journal: Option<Arc<JournalCounters>>,
    /// `None` without an op log (no journal, `durability = "none"`, or no room for it).
    oplog: Option<Arc<OpLogCounters>>,
    /// Where this start moved a damaged database (`damaged.rs`).
    set_aside: Option<PathBuf>,
    /// What this start copied from it (`salvage.rs`).
    salvaged: Option<Salvaged>,
    /// Damage found while serving (`damaged.rs`).
    damage: Arc<DamageFound>,
    /// This start checked every page for the last run's damage and kept the file.
    checked_at_start: bool,
    /// `edge.redb`.
    path: PathBuf,
}

/// What opening and loading the database made, before the writer starts.
struct Opened {
    disk_full: Arc<DiskFull>,
    shared: Arc<Shared>,
    db: Arc<Database>,
    journal: Option<Arc<JournalCounters>>,
    oplog: Option<OpLog>,
    loaded: Loaded,
    /// What was copied from a damaged database set aside by this start (`salvage.rs`).
    salvaged: Option<Salvaged>,
    /// The last run left the check marker and redb's check passed (or repaired the file).
    checked: bool,
}

impl Opened {
    /// Opens (or creates) the database, applies what the op log holds and reads it back; with
    /// `salvage_from` (a damaged database just set aside), first copies what can be read of it
    /// into the new one.
    fn open(cfg: &Config, salvage_from: Option<&Path>) -> Result<Opened> {
        let disk_full = Arc::new(DiskFull::default());
        let shared = Arc::new(Shared::new());
        let on_durable: journal::DurableHook = {
            let shared = shared.clone();
            Arc::new(move || shared.publish_durable())
        };
        let (mut db, journal) = open::open_database(cfg, &disk_full, on_durable)?;
        let db_path = cfg.db_path();
        let marker = damaged::check_marker(&db_path);
        let checked = marker.exists();
        if checked {
            tracing::warn!(path = %db_path.display(), "the last run found damage in the database: checking every page");
            match db.check_integrity() {
                Ok(true) => tracing::info!("database integrity check passed"),
                Ok(false) => {
                    tracing::warn!("database integrity check found damage and repaired it")
                }
                Err(source) => {
                    return Err(Error::OpenDatabase {
                        path: db_path.display().to_string(),
                        source,
                    })
                }
            }
            std::fs::remove_file(&marker).map_err(|source| Error::Io {
                what: format!("check marker {}", marker.display()),
                source,
            })?;
        }
        let db = Arc::new(db);
        tables::init_tables(&db)?;
        let salvaged = match salvage_from {
            Some(damaged_db) => Some(salvage::salvage(damaged_db, &db)?),
            None => None,
        };
        // Before anything reads the database: the last run's acknowledged publishes.
        let wanted = cfg.durability == crate::config::Durability::Immediate && journal.is_some();
        let oplog = oplog::recover(
            &db,
            &oplog::path_of(&cfg.db_path()),
            cfg.storage.journal_bytes,
            wanted,
        )?;
        let loaded = load::load(&db)?;
        Ok(Opened {
            disk_full,
            shared,
            db,
            journal,
            oplog,
            loaded,
            salvaged,
            checked,
        })
    }
}

impl Store {
    /// Opens (or creates) `edge.redb` and reads back everything in it. A file that exists but
    /// cannot be opened is an error and is left as found, unless its content is damaged and
    /// `storage.on_damaged = "set_aside"` (`damaged.rs`): then it is moved aside with its
    /// journal and op log, and an empty database is made in its place.
    pub fn open(cfg: &Config) -> Result<(Store, Loaded)> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| Error::Io {
            what: format!("data_dir {}", cfg.data_dir.display()),
            source: e,
        })?;
        let db_path = cfg.db_path();
        let (opened, set_aside) =
            match damaged::catching(|| Opened::open(cfg, None)) {
                Ok(o) => (o, None),
                Err(failure) => {
                    let reason = failure
                        .damage()
                        .filter(|_| cfg.storage.on_damaged == OnDamaged::SetAside);
                    let Some(reason) = reason else {
                        return Err(failure.into_error(&db_path));
                    };
                    let companions = [
                        open::journal_path(&db_path),
                        oplog::path_of(&db_path),
                        open::repair_copy_path(&db_path),
                        damaged::check_marker(&db_path),
                    ];
                    let folder = damaged::set_aside(&db_path, &companions, SystemTime::now())
                        .map_err(|e| Error::Io {
                            what: format!(
                                "setting aside the damaged database {}",
                                db_path.display()
                            ),
                            source: e,
                        })?;
                    tracing::error!(path = %db_path.display(), %reason, folder = %folder.display(),
                    "database damaged: moved aside with its journal and op log; starting with a \
                     new database and what can still be read of the old one (salvage)");
                    let salvage_from = db_path.file_name().map(|name| folder.join(name));
                    let opened = damaged::catching(|| Opened::open(cfg, salvage_from.as_deref()))
                        .map_err(|f| f.into_error(&db_path))?;
                    (opened, Some(folder))
                }
            };
        let Opened {
            disk_full,
            shared,
            db,
            journal,
            oplog,
            loaded,
            salvaged,
            checked,
        } = opened;
        let oplog_counters = oplog.as_ref().map(|l| l.counters());
        // From here a full disk makes writes wait for space; at open it is an error.
        disk_full.set_retrying(true);
        let hook: Arc<Mutex<Option<Arc<dyn CommitHook>>>> = Arc::new(Mutex::new(None));
        let damage = Arc::new(DamageFound::default());
        let writer = {
            let damage = damage.clone();
            let db = db.clone();
            let shared = shared.clone();
            let hook = hook.clone();
            let durability = cfg.durability;
            let max_batch = cfg.storage.max_batch;
            let path = db_path.clone();
            std::thread::Builder::new()
                .name("redb-writer".into())
                .spawn(move || {
                    let watch = shared.clone();
                    let run = || writer_loop(db, shared, hook, durability, max_batch, oplog);
                    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
                        // Damage in a page the commit read (or a bug): nothing more can be
                        // committed. Waiters see the writer stopped, and so does the systemd
                        // watchdog (a restart, which checks the file first).
                        let panic = edge_mqtt::util::panic_message(payload.as_ref());
                        tracing::error!(%panic, "database damaged: the storage writer panicked; storage stops here");
                        damaged::mark_for_check(&path);
                        damage.set();
                        watch.stopped.store(true, Ordering::Release);
                        watch.committed_event.notify(usize::MAX);
                    }
                })
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
                disk_full,
                journal,
                oplog: oplog_counters,
                set_aside,
                salvaged,
                damage,
                checked_at_start: checked,
                path: db_path,
            },
            loaded,
        ))
    }

    /// Sets the longest wait of a gathering (a machine too loaded for 200 µs in tests).
    #[cfg(test)]
    pub(crate) fn set_gather_wait(&self, wait: Duration) {
        let us = wait.as_micros() as u64;
        self.shared.gather_wait_us.store(us, Ordering::Relaxed);
    }

    /// Whether the writer thread still takes commits (false once it stopped).
    pub fn is_writing(&self) -> bool {
        !self.shared.stopped.load(Ordering::Acquire)
    }

    /// Durations of the group commits so far.
    pub fn commit_latency(&self) -> crate::stats::HistogramSnapshot {
        self.shared.commit_latency.snapshot()
    }

    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    /// Damage found outside the store (the sync outbox's reads, `what`): logged, and the next
    /// start checks every page first (`damaged.rs`).
    pub fn damage_hook(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let path = self.path.clone();
        let damage = self.damage.clone();
        move |what: &str| {
            tracing::error!(path = %path.display(), what, "database damaged");
            damaged::mark_for_check(&path);
            damage.set();
        }
    }

    /// Damage found while serving (a read of a queue or of the sync outbox, or the writer):
    /// the server then stops cleanly for the next start to set the file aside (`server.rs`).
    pub fn damage_found(&self) -> Arc<DamageFound> {
        self.damage.clone()
    }

    /// Whether this start ran redb's check for the damage the last run found and kept the
    /// file (it passed, or repaired it): damage found again is then not a reason to stop, or
    /// the broker would restart in a loop on damage the check cannot see.
    pub fn checked_at_start(&self) -> bool {
        self.checked_at_start
    }

    /// The folder this start moved a damaged database into (`damaged.rs`); `None` when it
    /// found none.
    pub fn damaged_set_aside(&self) -> Option<&Path> {
        self.set_aside.as_deref()
    }

    /// What this start copied from the damaged database it set aside (`salvage.rs`).
    pub fn salvaged(&self) -> Option<&Salvaged> {
        self.salvaged.as_ref()
    }

    /// What the commit journal did since open; `None` when there is none.
    pub fn journal(&self) -> Option<&Arc<JournalCounters>> {
        self.journal.as_ref()
    }

    /// What the op log did since open; `None` when there is none.
    pub fn oplog(&self) -> Option<&Arc<OpLogCounters>> {
        self.oplog.as_ref()
    }

    /// Whether writes wait for disk space, with its counters (for connections and metrics).
    pub fn disk_full(&self) -> &Arc<DiskFull> {
        &self.disk_full
    }

    /// Up to `max` queued deliveries of `client` with `from <= seq < until`, in order, read
    /// from what is committed (see `queue.rs`); `None` for an unreadable record.
    pub fn read_queue(
        &self,
        client: &str,
        from: u64,
        until: u64,
        max: usize,
    ) -> Result<Vec<(u64, Option<DeliveryRecord>)>> {
        damaged::reading(
            &self.path,
            &self.damage,
            "a read of a session's queue",
            || queue::read(&self.db, client, from, until, max),
        )
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
        let wake = p.queue((ticket.0.get(), ops, slot));
        drop(p);
        if wake {
            self.shared.wake.notify_one();
        }
        Some(ticket)
    }

    /// The ticket of the last batch pushed (`None` before the first): waiting for it covers
    /// everything queued so far.
    pub fn latest_ticket(&self) -> Option<Ticket> {
        let next = lock(&self.shared.pending).next_ticket.get();
        NonZeroU64::new(next - 1).map(Ticket)
    }

    /// Whether `ticket`'s commit has ended (committed or failed): [`Store::wait`] would not wait.
    pub fn reached(&self, ticket: Ticket) -> bool {
        self.shared.committed.load(Ordering::Acquire) >= ticket.0.get()
    }

    /// Whether `ticket`'s changes are durable (or failed): [`Store::wait_durable`] would not
    /// wait.
    pub fn reached_durable(&self, ticket: Ticket) -> bool {
        self.shared.durable.load(Ordering::Acquire) >= ticket.0.get()
    }

    /// Resolves once the batch with `ticket` (and so every earlier one) is on disk and visible
    /// to reads; an error if its commit failed.
    pub async fn wait(&self, ticket: Ticket) -> Result<()> {
        self.wait_until(ticket, &self.shared.committed).await
    }

    /// Resolves once the batch with `ticket` (and every earlier one) is on disk, maybe before
    /// reads see it (what an acknowledgement waits for); an error if its commit failed.
    pub async fn wait_durable(&self, ticket: Ticket) -> Result<()> {
        self.wait_until(ticket, &self.shared.durable).await
    }

    /// Waits until `mark` (`committed` or `durable`) reaches `ticket`.
    async fn wait_until(&self, ticket: Ticket, mark: &AtomicU64) -> Result<()> {
        let ticket = ticket.0.get();
        loop {
            if mark.load(Ordering::Acquire) >= ticket {
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
            if mark.load(Ordering::Acquire) >= ticket || self.shared.stopped.load(Ordering::Acquire)
            {
                continue;
            }
            listener.await;
        }
    }

    /// Drops committed ops on the thread that polls it (an executor thread: see `reap.rs`),
    /// for as long as it is polled. Without it the writer drops them itself.
    pub async fn reap(&self) {
        self.shared.reaper.run().await
    }

    /// Commits what is queued and stops the writer thread. A writer waiting for disk space
    /// gives up: what it held fails (was never acknowledged) and is logged.
    pub fn close(&self) {
        self.disk_full.set_retrying(false);
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

use edge_mqtt::util::lock;
use writer::writer_loop;

#[cfg(test)]
mod tests;
