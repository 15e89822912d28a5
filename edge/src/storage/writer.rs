//! The writer thread: group commit. It takes every queued batch (up to `max_batch` ops) into
//! one write transaction and one fsync, then publishes the highest committed ticket.
//!
//! Gathering (issue 9, backlog fill): a publisher with a window of 64 in flight came in as
//! two alternating halves of ~32, each paying a commit (an fdatasync of ~10 pages, and the
//! writer's CPU). After a commit of several batches the next one now waits, at most
//! [`GATHER_WAIT`], for as many batches as were in flight. Never after a lone batch, nor right
//! after a wait that timed out, nor without fsync. On a machine with more than one core the
//! wait polls first ([`GATHER_SPIN`]): a thread put to sleep for it paid a wake-up per window.
//!
//! Op log (`oplog.rs`): a commit that only queues publishes is made durable by a record of its
//! ops, synced and acknowledged before redb applies them in a commit without a sync; redb
//! commits durably (and the log starts over) at least every [`CHECKPOINT_EVERY`].

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::Database;

use super::oplog::{self, OpLog};
use super::{lock, ops, CommitHook, Op, Pending, Shared, Slot};
use crate::config::Durability;
use crate::error::Result;

/// How often a commit also records its time (`last_commit_ms`, the estimate of when a crash
/// cut off the clients still connected). Every commit did: one more table written per commit,
/// about a tenth of a small commit's work, for a time only needed to the second.
pub(super) const STAMP_EVERY: Duration = Duration::from_secs(1);

/// Longest wait of a commit for the batches of the previous commit's senders (group commit
/// with a commit delay, like PostgreSQL's `commit_delay`): a publisher with a window of 64
/// in flight split into two alternating groups of ~32, each paying a commit (an fdatasync
/// of ~10 pages and ~150 us of writer CPU, most of it per commit, not per message). Waiting
/// one round trip for the acknowledged half to come back puts the whole window in one
/// commit. Only after a commit of more than one batch, and not again right after a wait that
/// timed out: a lone publisher, or clients that do not answer at once, are not delayed.
pub(super) const GATHER_WAIT: Duration = Duration::from_micros(200);

/// How much of a gathering's wait the writer polls (yielding its core between looks) instead
/// of sleeping, when the machine has more than one core: more than [`GATHER_WAIT`], so all of
/// it unless a test lengthens the wait. A window's batches come within a round trip of its
/// acknowledgements; asleep, the writer was woken by the last of them and started ~25 µs
/// later (measured on the 2-core VM: gathering 52 -> 26 µs a window, the 64-in-flight fill
/// +8% over 4 alternated rounds). Polling only ever replaces this wait, so it is bounded the
/// same way: after a commit of several batches, never after a gathering that timed out. On
/// one core polling would take the core from the connections it waits for: the writer
/// sleeps.
pub(super) const GATHER_SPIN: Duration = Duration::from_micros(250);

/// Longest time between durable commits of redb while the op log carries commits (`oplog.rs`):
/// bounds the records replayed after a crash, and the commit journal's record that makes the
/// commits in between durable.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

pub(super) fn writer_loop(
    db: Arc<Database>,
    shared: Arc<Shared>,
    hook: Arc<Mutex<Option<Arc<dyn CommitHook>>>>,
    durability: Durability,
    max_batch: usize,
    mut oplog: Option<OpLog>,
) {
    let mut unsynced = false;
    // Reused for each record's encoding.
    let mut payload = Vec::new();
    let mut stamped: Option<std::time::Instant> = None;
    // Batches the next commit waits for (see `GATHER_WAIT`); 0: take what is there.
    let mut expect = 0;
    // This thread's heap was collected since its last commit.
    let mut collected = false;
    loop {
        let mut taken: Vec<(u64, Vec<Op>, Slot)> = Vec::new();
        let mut ops = 0;
        let shutdown;
        {
            let mut p = lock(&shared.pending);
            p.wake_at = 1;
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
                } else if !collected {
                    // Idle for a second: this thread's freed heap pages go back
                    // (`heap_trim.rs`).
                    let (g, timeout) = shared
                        .wake
                        .wait_timeout(p, crate::heap_trim::COLLECT_EVERY)
                        .unwrap_or_else(|e| e.into_inner());
                    p = g;
                    if timeout.timed_out() {
                        crate::heap_trim::collect_this_thread();
                        collected = true;
                    }
                } else {
                    p = shared.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                }
            }
            collected = false;
            p.wake_at = usize::MAX;
            take(&mut p, &mut taken, &mut ops, max_batch);
            shutdown = p.shutdown && p.batches.is_empty();
        }
        if taken.is_empty() {
            if unsynced || shutdown {
                if let Err(e) = sync_now(&db) {
                    tracing::error!(error = %e, "periodic fsync failed");
                } else if let Some(log) = oplog.as_mut().filter(|l| shutdown && l.has_records()) {
                    // A clean stop leaves nothing for the next start to read.
                    if let Err(e) = log.restart() {
                        tracing::warn!(error = %e, "op log: cannot start over at shutdown");
                    }
                }
                unsynced = false;
            }
            if shutdown {
                break;
            }
            continue;
        }
        let hook = lock(&hook).clone();
        let started = std::time::Instant::now();
        // Time for redb to commit durably (and the op log to start over), with a time stamp.
        let checkpoint = (oplog.as_ref()).is_some_and(|l| l.checkpoint_due(CHECKPOINT_EVERY));
        let stamp = checkpoint || stamped.is_none_or(|t| t.elapsed() >= STAMP_EVERY);
        let log = match checkpoint {
            true => None,
            false => oplog.as_mut(),
        };
        let mut group = Group {
            shared: &shared,
            taken,
            ops,
            max_batch,
            expect,
            gathered: true,
            waited: Duration::ZERO,
            logged: false,
        };
        let result = commit(
            &db,
            &mut group,
            durability,
            hook.as_deref(),
            stamp,
            log,
            &mut payload,
        );
        let Group {
            taken,
            gathered,
            waited,
            logged,
            ..
        } = group;
        // (An op log exists only with `durability = "immediate"`: this commit synced.)
        if result.is_ok() && !logged {
            if let Some(log) = oplog.as_mut() {
                // redb's durable state holds every record now: the log may start over.
                if checkpoint || log.is_broken() {
                    if let Err(e) = log.restart() {
                        tracing::error!(error = %e, "op log: cannot start over; commits now sync the database themselves");
                        oplog = None;
                    }
                }
            }
        }
        let lo = taken.first().map(|b| b.0).unwrap_or(0);
        let carried = taken.iter().filter(|b| Op::acknowledged(&b.1)).count();
        let hi = taken.last().map(|b| b.0).unwrap_or(0);
        if stamp && result.is_ok() {
            stamped = Some(started);
        }
        shared
            .commit_latency
            .observe(started.elapsed().saturating_sub(waited));
        if let Some(h) = &hook {
            h.committed(result.is_ok());
        }
        // Published durable by the journal's sync already (its tickets acknowledged).
        let early = shared.committing.swap(0, Ordering::AcqRel) == 0;
        match result {
            Ok(()) => unsynced = durability == Durability::None,
            Err(e) if logged => {
                // Acknowledged from the op log, not in redb: later commits would be ordered
                // before them. The writer stops; the next start applies them from the log.
                // Waiters see the writer stopped; so does the systemd watchdog (a restart).
                tracing::error!(error = %e, tickets = ?(lo, hi), "redb failed to apply publishes acknowledged from the op log; storage stops here, the next start applies them");
                break;
            }
            Err(e) if early => {
                tracing::error!(error = %e, tickets = ?(lo, hi), "redb failed after the commit was synced; its publishes were acknowledged as durable");
            }
            Err(e) => {
                tracing::error!(error = %e, tickets = ?(lo, hi), "commit failed; affected publishes are not acknowledged");
                let mut f = lock(&shared.failed);
                f.push_back((lo, hi));
                while f.len() > 64 {
                    f.pop_front();
                }
            }
        }
        // Counted before the tickets are published: a batch sent in answer to this commit's
        // acknowledgements is one of the `carried` coming back, not one more in flight.
        let waiting = match early {
            true => shared.waiting_at_durable.load(Ordering::Relaxed),
            false => shared.waiting(),
        };
        expect = next_expect(durability, gathered, carried, waiting, max_batch);
        shared.durable.fetch_max(hi, Ordering::Release);
        shared.committed.store(hi, Ordering::Release);
        shared.committed_event.notify(usize::MAX);
        // Dropped once the acknowledgements may leave (for an offline session the ops hold
        // the last reference to their messages, ~5% of the writer's work), and on an executor
        // thread when a reaper runs (`reap.rs`); the slots go back at once.
        let ops = taken.into_iter().map(|(_, ops, _slot)| ops).collect();
        if let Err(ops) = shared.reaper.hand_over(ops) {
            drop(ops);
        }
    }
    shared.stopped.store(true, Ordering::Release);
    shared.committed_event.notify(usize::MAX);
}

/// How many batches the next commit waits for (0: none), after a commit that carried
/// `carried` publishers' batches ([`Op::acknowledged`]: a drain's acknowledgements and
/// packet ids are not gathered, waiting for them measured 20% slower) with `waiting` queued
/// behind it: those plus the ones this commit
/// releases are what is in flight, and the released ones come back about a round trip later.
/// None after a gathering that timed out (the senders do not answer acknowledgements at
/// once), after a lone batch, or without fsync (a commit costs little then).
pub(super) fn next_expect(
    durability: Durability,
    gathered: bool,
    carried: usize,
    waiting: usize,
    max_batch: usize,
) -> usize {
    match durability {
        Durability::Immediate if gathered && carried > 1 => (carried + waiting).min(max_batch),
        _ => 0,
    }
}

/// Waits, at most `delay` ([`GATHER_WAIT`]), until `expect` batches are queued (or shutdown),
/// polling for the first `spin` of it ([`GATHER_SPIN`]) and asleep for the rest. Returns
/// whether they came.
pub(super) fn gather<'a>(
    shared: &'a Shared,
    mut p: std::sync::MutexGuard<'a, Pending>,
    expect: usize,
    delay: Duration,
    spin: Duration,
) -> (std::sync::MutexGuard<'a, Pending>, bool) {
    let started = std::time::Instant::now();
    let deadline = started + delay;
    let spin_until = started + spin.min(delay);
    // Pushes do not wake a writer that polls.
    p.wake_at = usize::MAX;
    while p.batches.len() < expect && !p.shutdown && std::time::Instant::now() < spin_until {
        drop(p);
        std::thread::yield_now();
        p = lock(&shared.pending);
    }
    p.wake_at = expect;
    while p.batches.len() < expect && !p.shutdown {
        let now = std::time::Instant::now();
        if now >= deadline {
            return (p, false);
        }
        p = shared
            .wake
            .wait_timeout(p, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    (p, true)
}

fn sync_now(db: &Database) -> Result<()> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    txn.commit()?;
    Ok(())
}

/// Moves queued batches into `taken` while the commit stays within `max_batch` ops (a first
/// batch is always taken, whatever its size).
fn take(p: &mut Pending, taken: &mut Vec<(u64, Vec<Op>, Slot)>, ops: &mut usize, max_batch: usize) {
    while let Some(b) = p.batches.front() {
        if !taken.is_empty() && *ops + b.1.len() > max_batch {
            break;
        }
        *ops += b.1.len();
        taken.extend(p.batches.pop_front());
    }
}

/// The batches of one commit, and how gathering more of them went.
struct Group<'s> {
    shared: &'s Shared,
    taken: Vec<(u64, Vec<Op>, Slot)>,
    ops: usize,
    max_batch: usize,
    /// Batches to gather before committing (see [`GATHER_WAIT`]).
    expect: usize,
    /// False when the gathering timed out.
    gathered: bool,
    /// Time spent waiting for batches (not part of the commit's latency).
    waited: Duration,
    /// Made durable by an op-log record (redb's commit does not sync).
    logged: bool,
}

impl Group<'_> {
    /// Waits for the rest of the expected batches (see [`GATHER_WAIT`]) and takes what came.
    fn gather_rest(&mut self) {
        let remaining = self.expect.saturating_sub(self.taken.len());
        if remaining == 0 || self.ops >= self.max_batch {
            return;
        }
        let now = std::time::Instant::now();
        let p = lock(&self.shared.pending);
        if p.shutdown {
            return;
        }
        let wait = Duration::from_micros(self.shared.gather_wait_us.load(Ordering::Relaxed));
        let (mut p, came) = gather(self.shared, p, remaining, wait, self.shared.gather_spin);
        p.wake_at = usize::MAX;
        take(&mut p, &mut self.taken, &mut self.ops, self.max_batch);
        drop(p);
        self.waited = now.elapsed();
        self.gathered = came;
    }
}

/// One write transaction with the batches taken and (see [`GATHER_WAIT`]) the ones gathered,
/// written in one pass (each pass over the queue table rewrites its tail leaf and the path
/// to it: writing the gathered part as it came, 16 at a time, measured slower), then the
/// commit and its fsync.
fn commit(
    db: &Database,
    group: &mut Group<'_>,
    durability: Durability,
    hook: Option<&dyn CommitHook>,
    stamp: bool,
    log: Option<&mut OpLog>,
    payload: &mut Vec<u8>,
) -> Result<()> {
    let mut txn = db.begin_write()?;
    txn.set_durability(match durability {
        Durability::Immediate => redb::Durability::Immediate,
        Durability::None => redb::Durability::None,
    })?;
    group.gather_rest();
    let ops = || group.taken.iter().flat_map(|b| b.1.iter());
    let hi = group.taken.last().map(|b| b.0).unwrap_or(0);
    let mut mark = None;
    if let Some(log) = log {
        // Only publishes into sessions: the op log's record is synced and acknowledged, then
        // redb applies them without a sync of its own (see `oplog.rs`).
        payload.clear();
        if ops::encode_logged(ops(), payload, oplog::MAX_RECORD) && log.fits(payload.len()) {
            match log.append(payload) {
                Ok(()) => {
                    group.shared.committing.store(hi, Ordering::Release);
                    group.shared.publish_durable();
                    txn.set_durability(redb::Durability::None)?;
                    group.logged = true;
                }
                Err(e) => {
                    tracing::error!(error = %e, "op log: append failed; this commit syncs the database itself");
                }
            }
            // Also after a failed append (the record may be on disk): its ops are in this
            // commit, so the mark covers it.
            mark = Some(log.mark());
        }
    }
    ops::apply(&txn, ops(), stamp)?;
    if let Some(mark) = mark {
        oplog::write_mark(&txn, mark)?;
    }
    if let Some(hook) = hook {
        for op in ops() {
            if let Op::Capture(msg) = op {
                hook.capture(&txn, msg)?;
            }
        }
    }
    if !group.logged {
        // From here the journal's sync publishes these tickets durable
        // (`Shared::publish_durable`); only the writer's own (one-phase) commits are marked,
        // and only this late: a sync during the transaction would not cover the commit's
        // header.
        group.shared.committing.store(hi, Ordering::Release);
    }
    txn.commit()?;
    Ok(())
}
