//! Durable, bounded, ordered outbox: one redb table per priority (key = outbox sequence) in the
//! broker's own database, plus a meta row holding the backlog counters, so opening is O(priorities)
//! and never scans records. Captures happen inside the broker's commit; the uplink deletes records
//! only after the upstream acknowledged them, in its own short write transactions.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::config::{FullPolicy, SyncConfig, MAX_PRIORITY};
use crate::error::{Rejected, SyncError};
use crate::rules::{batch, window, RuleCounters, RuleStats, Staged};
use crate::topic::{self, CompiledForward};

mod capture;
pub mod held;
mod remove;

/// Number of priority lanes (`0..=MAX_PRIORITY`).
pub const PRIORITIES: usize = MAX_PRIORITY as usize + 1;

pub(crate) const LANES: [TableDefinition<u64, &[u8]>; PRIORITIES] = [
    TableDefinition::new("sync_outbox_p0"),
    TableDefinition::new("sync_outbox_p1"),
    TableDefinition::new("sync_outbox_p2"),
    TableDefinition::new("sync_outbox_p3"),
];
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("sync_meta");
const META_KEY: &str = "state";
const META_VERSION: u32 = 1;

/// User property marking a message that came down from the cloud; never captured again.
pub const DOWNLINK_MARKER: &str = "edge-downlink";

/// A message as the broker persists it locally, offered to `Outbox::capture`.
pub struct LocalMessage<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
    pub user_properties: &'a [(String, String)],
    pub content_type: Option<&'a str>,
    pub received_at_ms: u64,
}

/// One buffered message, stored postcard-encoded under its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Topic upstream (forward rule applied at capture time).
    pub topic: String,
    pub payload: Vec<u8>,
    /// Upstream QoS (1 or 2), from the rule.
    pub qos: u8,
    pub retain: bool,
    pub user_properties: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub received_at_ms: u64,
    /// 0 = never expires.
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneMeta {
    pub messages: u64,
    pub bytes: u64,
    /// Sequence of the oldest record of the lane; 0 when the lane is empty.
    pub oldest_seq: u64,
    /// Highest sequence of the lane written to an upstream socket, as known at the last ack
    /// commit: records at or below it are redelivered with DUP after a restart.
    pub sent_upto: u64,
}

/// The meta row: everything `open` and `read_status` need, updated in the transaction that
/// changes the records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub version: u32,
    /// Next outbox sequence to hand out (starts at 1, never reused).
    pub next_seq: u64,
    pub lanes: [LaneMeta; PRIORITIES],
    pub dropped_full: u64,
    pub dropped_ttl: u64,
    pub dropped_corrupt: u64,
    pub rejected: u64,
    pub acked: u64,
    /// Last RobustMQ storage `offset` seen in a PUBACK/PUBREC, if any.
    pub last_offset: Option<u64>,
}

impl Meta {
    pub(crate) fn fresh() -> Meta {
        Meta {
            version: META_VERSION,
            next_seq: 1,
            ..Meta::default()
        }
    }
    pub fn backlog_messages(&self) -> u64 {
        self.lanes.iter().map(|l| l.messages).sum()
    }
    pub fn backlog_bytes(&self) -> u64 {
        self.lanes.iter().map(|l| l.bytes).sum()
    }
}

/// A record read from a lane, or the sequence of an undecodable one (to be dropped).
pub type LaneItem = Result<(u64, Record), u64>;

/// One `read_lane_open`: the records, the highest sequence looked at (0: none), and which of
/// the records belong to a gated rule (they may sit below records sent long before them).
#[derive(Debug, Default)]
pub struct LaneRead {
    pub items: Vec<LaneItem>,
    pub last: u64,
    pub gated: std::collections::HashSet<u64>,
}

/// Why a record left the outbox without being acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Ttl,
    Corrupt,
}

struct Pending {
    base: Meta,
    cur: Meta,
    rejected_folded: u64,
}

#[derive(Default)]
struct Counters {
    backlog_messages: AtomicU64,
    backlog_bytes: AtomicU64,
    dropped_full: AtomicU64,
    dropped_ttl: AtomicU64,
    dropped_corrupt: AtomicU64,
    /// Total rejected (persisted part + not yet persisted part).
    rejected: AtomicU64,
    /// Rejections counted by `admit` not yet written to the meta row.
    rejected_unpersisted: AtomicU64,
    acked: AtomicU64,
    next_seq: AtomicU64,
    sent_upto: [AtomicU64; PRIORITIES],
    /// Bumped after every commit that added records.
    generation: AtomicU64,
    /// `u64::MAX` = none.
    last_offset: AtomicU64,
}

/// Snapshot of the in-memory counters (exact after every commit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounters {
    pub backlog_messages: u64,
    pub backlog_bytes: u64,
    pub dropped_full: u64,
    pub dropped_ttl: u64,
    pub dropped_corrupt: u64,
    pub rejected: u64,
    pub acked: u64,
    pub next_seq: u64,
    pub last_offset: Option<u64>,
}

/// Most topics whose last deadband value is remembered (about 100 bytes each).
pub(crate) const DEADBAND_TOPICS: usize = 100_000;

pub struct Outbox {
    db: Arc<Database>,
    node_id: String,
    rules: Vec<CompiledForward>,
    rule_counters: Vec<RuleCounters>,
    /// Per local topic: last forwarded deadband value and its time (this process), at most
    /// `DEADBAND_TOPICS` topics.
    deadband: Mutex<std::collections::HashMap<String, (f64, u64)>>,
    /// Rule decisions of the open broker transaction, applied by `committed`.
    staged: Mutex<Staged>,
    /// End of the earliest stored aggregation window (`u64::MAX`: none).
    next_window_due: AtomicU64,
    capture_qos0: bool,
    /// Some rule is gated: records leaving the outbox are also removed from `held`.
    track_held: bool,
    policy: FullPolicy,
    max_bytes: u64,
    pending: Mutex<Option<Pending>>,
    c: Counters,
    /// Notified after every commit that added records.
    wake: event_listener::Event,
    sweep_cursor: Mutex<[u64; PRIORITIES]>,
    last_durable_ms: AtomicU64,
    closed: AtomicBool,
    /// Called when a read or write of the outbox finds the database damaged (`guarded`).
    damage_hook: std::sync::OnceLock<DamageHook>,
}

/// What the broker does when the outbox finds its database damaged (the argument says what was
/// being done): it has the next start check every page.
pub type DamageHook = Box<dyn Fn(&str) + Send + Sync>;

/// Estimated stored size of a message (encoded record), used by `admit`.
fn estimate(topic: &str, payload_len: usize) -> u64 {
    (topic.len() + payload_len + 24) as u64
}

use edge_mqtt::util::lock;
pub use edge_mqtt::util::now_ms;

fn read_meta_w(txn: &WriteTransaction) -> Result<Option<Meta>, SyncError> {
    let t = txn.open_table(META)?;
    let v = t.get(META_KEY)?;
    match v {
        Some(g) => Ok(Some(postcard::from_bytes(g.value())?)),
        None => Ok(None),
    }
}

pub(crate) fn write_meta(txn: &WriteTransaction, m: &Meta) -> Result<(), SyncError> {
    let bytes = postcard::to_allocvec(m)?;
    let mut t = txn.open_table(META)?;
    t.insert(META_KEY, bytes.as_slice())?;
    Ok(())
}

/// Reads the meta row through a read transaction (None when sync never ran on this database).
pub fn read_meta(txn: &ReadTransaction) -> Result<Option<Meta>, SyncError> {
    let t = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match t.get(META_KEY)? {
        Some(g) => Ok(Some(postcard::from_bytes(g.value())?)),
        None => Ok(None),
    }
}

/// `received_at_ms` of the oldest record over all lanes (O(priorities), no scan).
pub fn oldest_received_ms(txn: &ReadTransaction) -> Result<Option<u64>, SyncError> {
    let mut oldest: Option<u64> = None;
    for def in LANES {
        let t = match txn.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let first = t.first()?;
        if let Some((_, v)) = first {
            if let Ok(r) = postcard::from_bytes::<Record>(v.value()) {
                oldest = Some(oldest.map_or(r.received_at_ms, |o| o.min(r.received_at_ms)));
            }
        }
    }
    Ok(oldest)
}

/// Meta applies `f` to a lane after removing `seq` from it; recomputes the oldest sequence.
fn refresh_oldest(
    table: &redb::Table<'_, u64, &[u8]>,
    lane: &mut LaneMeta,
) -> Result<(), SyncError> {
    lane.oldest_seq = match table.first()? {
        Some((k, _)) => k.value(),
        None => 0,
    };
    Ok(())
}

impl Outbox {
    /// Creates tables if missing; recovers counters from the meta table without scanning.
    pub fn open(db: Arc<Database>, cfg: &SyncConfig) -> Result<Arc<Outbox>, SyncError> {
        let txn = db.begin_write()?;
        for def in LANES {
            txn.open_table(def)?;
        }
        let meta = match read_meta_w(&txn)? {
            Some(m) if m.version == META_VERSION => m,
            Some(m) => {
                return Err(SyncError::UnsupportedVersion {
                    found: m.version,
                    expected: META_VERSION,
                })
            }
            None => {
                // First start with sync on. Tables are empty unless the meta row was lost; in
                // that one case rebuild it by counting (logged: this is the only scan).
                let mut m = Meta::fresh();
                let mut max_seq = 0;
                for (p, def) in LANES.iter().enumerate() {
                    let t = txn.open_table(*def)?;
                    if t.is_empty()? {
                        continue;
                    }
                    tracing::warn!(lane = p, "sync outbox meta row missing: rebuilding by scan");
                    for item in t.iter()? {
                        let (k, v) = item?;
                        let lane = &mut m.lanes[p];
                        lane.messages += 1;
                        lane.bytes += v.value().len() as u64;
                        if lane.oldest_seq == 0 {
                            lane.oldest_seq = k.value();
                        }
                        max_seq = max_seq.max(k.value());
                    }
                }
                m.next_seq = max_seq + 1;
                write_meta(&txn, &m)?;
                m
            }
        };
        txn.commit()?;

        let rules = cfg
            .forward
            .iter()
            .enumerate()
            .map(|(i, r)| {
                CompiledForward::compile(cfg, r).map_err(|message| SyncError::Config {
                    key: format!("sync.forward[{i}].where"),
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let track_held = rules.iter().any(|r| r.gated);
        if !track_held {
            let txn = db.begin_write()?;
            if held::clear(&txn)? {
                tracing::info!("sync: no rule has a schedule any more: held records released");
            }
            txn.commit()?;
        }
        let due = match batch::any_stored(&db)? {
            true => 0, // the first check recomputes it
            false => window::earliest_end(&db)?,
        };
        let ob = Outbox {
            db,
            node_id: cfg.node_id.clone(),
            rule_counters: rules.iter().map(|_| RuleCounters::default()).collect(),
            rules,
            deadband: Mutex::default(),
            staged: Mutex::default(),
            next_window_due: AtomicU64::new(due),
            capture_qos0: cfg.capture_qos0,
            track_held,
            policy: cfg.full_policy,
            max_bytes: cfg.max_backlog_bytes,
            pending: Mutex::new(None),
            c: Counters::default(),
            wake: event_listener::Event::new(),
            sweep_cursor: Mutex::new([0; PRIORITIES]),
            last_durable_ms: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            damage_hook: std::sync::OnceLock::new(),
        };
        ob.c.backlog_messages
            .store(meta.backlog_messages(), Ordering::Relaxed);
        ob.c.backlog_bytes
            .store(meta.backlog_bytes(), Ordering::Relaxed);
        ob.c.dropped_full
            .store(meta.dropped_full, Ordering::Relaxed);
        ob.c.dropped_ttl.store(meta.dropped_ttl, Ordering::Relaxed);
        ob.c.dropped_corrupt
            .store(meta.dropped_corrupt, Ordering::Relaxed);
        ob.c.rejected.store(meta.rejected, Ordering::Relaxed);
        ob.c.acked.store(meta.acked, Ordering::Relaxed);
        ob.c.next_seq.store(meta.next_seq, Ordering::Relaxed);
        for (l, lane) in meta.lanes.iter().enumerate() {
            ob.c.sent_upto[l].store(lane.sent_upto, Ordering::Relaxed);
        }
        ob.c.last_offset
            .store(meta.last_offset.unwrap_or(u64::MAX), Ordering::Relaxed);
        tracing::info!(
            backlog_messages = meta.backlog_messages(),
            backlog_bytes = meta.backlog_bytes(),
            next_seq = meta.next_seq,
            "sync outbox opened"
        );
        Ok(Arc::new(ob))
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    fn rule_for(&self, topic: &str) -> Option<(usize, &CompiledForward)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| topic::matches(&r.filter, topic))
    }

    /// Per-rule counters of this process (status JSON).
    pub fn rule_stats(&self) -> Vec<RuleStats> {
        self.rules
            .iter()
            .zip(&self.rule_counters)
            .enumerate()
            .map(|(i, (r, c))| c.stats(i, &r.filter))
            .collect()
    }

    /// Cheap check on the publish path: does a forward rule take this message?
    /// (false for QoS 0 unless capture_qos0)
    pub fn wants(&self, topic: &str, qos: u8) -> bool {
        if qos == 0 && !self.capture_qos0 {
            return false;
        }
        self.rule_for(topic).is_some()
    }

    /// Called before the broker routes/acknowledges a message `wants` took. Under `reject_new`
    /// with a full backlog it answers `Rejected` (counted). Only atomics are touched.
    pub fn admit(&self, topic: &str, payload_len: usize) -> Result<(), Rejected> {
        if self.policy == FullPolicy::RejectNew {
            let used = self.c.backlog_bytes.load(Ordering::Relaxed);
            if used.saturating_add(estimate(topic, payload_len)) > self.max_bytes {
                self.c.rejected.fetch_add(1, Ordering::Relaxed);
                self.c.rejected_unpersisted.fetch_add(1, Ordering::Relaxed);
                return Err(Rejected);
            }
        }
        Ok(())
    }

    fn apply_delta(&self, base: &Meta, cur: &Meta, rejected_folded: u64) {
        fn upd(a: &AtomicU64, old: u64, new: u64) {
            if new >= old {
                a.fetch_add(new - old, Ordering::Relaxed);
            } else {
                a.fetch_sub(old - new, Ordering::Relaxed);
            }
        }
        let c = &self.c;
        upd(
            &c.backlog_messages,
            base.backlog_messages(),
            cur.backlog_messages(),
        );
        upd(&c.backlog_bytes, base.backlog_bytes(), cur.backlog_bytes());
        upd(&c.dropped_full, base.dropped_full, cur.dropped_full);
        upd(&c.dropped_ttl, base.dropped_ttl, cur.dropped_ttl);
        upd(
            &c.dropped_corrupt,
            base.dropped_corrupt,
            cur.dropped_corrupt,
        );
        // `rejected` was counted in memory by `admit` already.
        let _ = rejected_folded;
        upd(&c.acked, base.acked, cur.acked);
        c.next_seq.fetch_max(cur.next_seq, Ordering::Relaxed);
        for (l, lane) in cur.lanes.iter().enumerate() {
            c.sent_upto[l].fetch_max(lane.sent_upto, Ordering::Relaxed);
        }
        if let Some(o) = cur.last_offset {
            c.last_offset.store(o, Ordering::Relaxed);
        }
    }

    /// A listener notified after the next commit that added records.
    pub fn listen(&self) -> event_listener::EventListener {
        self.wake.listen()
    }

    pub fn counters(&self) -> OutboxCounters {
        let c = &self.c;
        let off = c.last_offset.load(Ordering::Relaxed);
        OutboxCounters {
            backlog_messages: c.backlog_messages.load(Ordering::Relaxed),
            backlog_bytes: c.backlog_bytes.load(Ordering::Relaxed),
            dropped_full: c.dropped_full.load(Ordering::Relaxed),
            dropped_ttl: c.dropped_ttl.load(Ordering::Relaxed),
            dropped_corrupt: c.dropped_corrupt.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            acked: c.acked.load(Ordering::Relaxed),
            next_seq: c.next_seq.load(Ordering::Relaxed),
            last_offset: (off != u64::MAX).then_some(off),
        }
    }

    /// Per lane, the highest sequence that may have reached an upstream before (persisted at
    /// ack commits).
    pub fn sent_upto(&self) -> [u64; PRIORITIES] {
        std::array::from_fn(|l| self.c.sent_upto[l].load(Ordering::Relaxed))
    }

    /// Changes after every commit that added records (read it before reading the lanes).
    pub fn generation(&self) -> u64 {
        self.c.generation.load(Ordering::SeqCst)
    }

    /// Reads up to `max` records (and about `max_bytes`) of lane `prio` with sequence > `after`,
    /// in order.
    /// Undecodable records are returned as `Err(seq)` so the caller drops them.
    pub fn read_lane(
        &self,
        prio: usize,
        after: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<LaneItem>, SyncError> {
        self.guarded("a read of an outbox lane", || {
            self.read_lane_unguarded(prio, after, max, max_bytes)
        })
    }

    fn read_lane_unguarded(
        &self,
        prio: usize,
        after: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<LaneItem>, SyncError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(LANES[prio.min(PRIORITIES - 1)])?;
        let mut out = Vec::with_capacity(max.min(1024));
        let mut bytes = 0usize;
        for item in t.range(after.saturating_add(1)..)? {
            if out.len() >= max || bytes >= max_bytes {
                break;
            }
            let (k, v) = item?;
            bytes += v.value().len();
            match postcard::from_bytes::<Record>(v.value()) {
                Ok(r) => out.push(Ok((k.value(), r))),
                Err(e) => {
                    tracing::error!(
                        seq = k.value(),
                        lane = prio,
                        "undecodable outbox record: {e}"
                    );
                    out.push(Err(k.value()));
                }
            }
        }
        Ok(out)
    }

    /// Like `read_lane`, skipping (without decoding) the records of rules whose filter is in
    /// `closed` (their gate is shut): they stay in the lane. At most `max_skip` are skipped per
    /// call.
    pub fn read_lane_open(
        &self,
        prio: usize,
        after: u64,
        max: usize,
        max_bytes: usize,
        closed: &std::collections::HashSet<String>,
        max_skip: usize,
    ) -> Result<LaneRead, SyncError> {
        self.guarded("a read of an outbox lane", || {
            self.read_lane_open_unguarded(prio, after, max, max_bytes, closed, max_skip)
        })
    }

    fn read_lane_open_unguarded(
        &self,
        prio: usize,
        after: u64,
        max: usize,
        max_bytes: usize,
        closed: &std::collections::HashSet<String>,
        max_skip: usize,
    ) -> Result<LaneRead, SyncError> {
        let txn = self.db.begin_read()?;
        let held = held::HeldReader::new(&txn, closed)?;
        let t = txn.open_table(LANES[prio.min(PRIORITIES - 1)])?;
        let mut out = Vec::with_capacity(max.min(1024));
        let mut gated = std::collections::HashSet::new();
        let mut bytes = 0usize;
        let mut skipped = 0usize;
        let mut last = 0u64;
        for item in t.range(after.saturating_add(1)..)? {
            if out.len() >= max || bytes >= max_bytes || skipped >= max_skip {
                break;
            }
            let (k, v) = item?;
            last = k.value();
            match held.gate(last)? {
                held::Gate::Closed => {
                    skipped += 1;
                    continue;
                }
                held::Gate::Open => {
                    gated.insert(last);
                }
                held::Gate::None => {}
            }
            bytes += v.value().len();
            match postcard::from_bytes::<Record>(v.value()) {
                Ok(r) => out.push(Ok((last, r))),
                Err(e) => {
                    tracing::error!(seq = last, lane = prio, "undecodable outbox record: {e}");
                    out.push(Err(last));
                }
            }
        }
        Ok(LaneRead {
            items: out,
            last,
            gated,
        })
    }

    /// Sets what to call when the outbox finds its database damaged (once; later calls are
    /// ignored).
    pub fn on_damage(&self, hook: DamageHook) {
        let _ = self.damage_hook.set(hook);
    }

    /// Runs `f`, a read or write of the outbox's tables off the broker's writer. redb panics on
    /// some inconsistent pages: such a panic becomes [`SyncError::Damaged`], so the uplink logs
    /// it and retries after its back-off instead of its task ending without a word (as it did);
    /// that and redb's own `Corrupted` call the damage hook.
    pub(crate) fn guarded<T>(
        &self,
        what: &'static str,
        f: impl FnOnce() -> Result<T, SyncError>,
    ) -> Result<T, SyncError> {
        let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(r) => r,
            Err(payload) => Err(SyncError::Damaged {
                what,
                panic: edge_mqtt::util::panic_message(payload.as_ref()).to_string(),
            }),
        };
        if let Err(
            e @ (SyncError::Damaged { .. } | SyncError::Storage(redb::Error::Corrupted(_))),
        ) = &r
        {
            tracing::error!(what, error = %e, "sync outbox: database damaged");
            if let Some(hook) = self.damage_hook.get() {
                hook(what);
            }
        }
        r
    }

    /// Marks the outbox closed (uplink stops waiting for it).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.wake.notify(usize::MAX);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// A durable empty commit: makes earlier non-durable ack deletions durable (shutdown).
    pub fn flush(&self) -> Result<(), SyncError> {
        let txn = self.db.begin_write()?;
        txn.commit()?;
        self.last_durable_ms.store(now_ms(), Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod guard_tests;
