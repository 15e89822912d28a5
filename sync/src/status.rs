//! Sync status: counters and link state, published under `$SYS/edge/sync/...` and written
//! atomically to `<data_dir>/sync-status.json` so `robustmq-edge sync status` can read it while
//! the broker runs; `read_status` falls back to the database itself when the broker is stopped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use redb::ReadableDatabase;
use serde::{Deserialize, Serialize};

use crate::error::SyncError;
use crate::outbox::{self, now_ms, Outbox};
use crate::rules::RuleStats;
use crate::schedule::GateStatus;

pub const STATUS_FILE: &str = "sync-status.json";
pub const DB_FILE: &str = "edge.redb";
/// Topic of the retained JSON status (QoS 0).
pub const STATUS_TOPIC: &str = "$SYS/edge/sync/status";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    #[default]
    Disconnected,
    Connecting,
    Connected,
    /// Waiting before the next connection attempt.
    Backoff,
    Stopped,
    /// Read from a stopped broker's database: no link information.
    Offline,
    /// Every upstream is outside its schedule window (`sync.upstream_schedule`).
    OutsideWindow,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DroppedCounters {
    /// Evicted (or refused at capture) by `drop_oldest` when the backlog was full.
    pub full: u64,
    /// Past the forward rule's `ttl_secs`.
    pub ttl: u64,
    /// Refused by `reject_new` (the publisher got reason 0x97).
    pub rejected: u64,
    /// Undecodable, oversized for the upstream, or with an invalid upstream topic.
    pub invalid: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub node_id: String,
    pub link_state: LinkState,
    /// Address of the current (or last tried) upstream.
    pub current_upstream: Option<String>,
    /// Negotiated MQTT protocol ("5" or "3.1.1").
    pub protocol: Option<String>,
    pub last_error: Option<String>,
    pub connected_since_ms: Option<u64>,
    pub backlog_messages: u64,
    pub backlog_bytes: u64,
    /// Age of the oldest buffered record, in milliseconds.
    pub oldest_age_ms: Option<u64>,
    /// Publishes written upstream by this process (redeliveries included).
    pub sent: u64,
    /// Of which redeliveries (DUP set).
    pub redelivered: u64,
    /// Acknowledged by the upstream and removed from the outbox (persisted, all time).
    pub acked: u64,
    pub dropped: DroppedCounters,
    /// Messages delivered locally from the cloud (this process).
    pub downlink_delivered: u64,
    /// Last RobustMQ storage offset seen in a PUBACK/PUBREC.
    pub last_offset: Option<u64>,
    /// Next outbox sequence (the last forwarded `edge-msg-id` is below it).
    pub next_seq: u64,
    pub updated_at_ms: u64,
    /// Where these figures come from.
    #[serde(default)]
    pub source: StatusSource,
    /// Per forward rule (this process): in, out, dropped by filter/deadband, conflated, bytes
    /// saved. Empty when read from a stopped broker's database.
    #[serde(default)]
    pub rules: Vec<RuleStats>,
    /// Per scheduled rule and upstream: in or out of its window, and when the next window
    /// opens (or the current one closes).
    #[serde(default)]
    pub schedules: Vec<GateStatus>,
}

/// Origin of a [`SyncStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusSource {
    /// Live counters of the running broker (directly, or its status file while it runs).
    #[default]
    Broker,
    /// The outbox meta row of a stopped broker's database: exact.
    Database,
    /// The last status file of a broker that stopped uncleanly (kill -9, power loss): its
    /// database can only be read after the repair the next start performs, so the figures are
    /// those of `updated_at_ms` and may be out of date.
    StaleStatusFile,
}

/// Link information shared by the tasks.
#[derive(Default)]
pub struct LinkInfo {
    pub state: LinkState,
    pub upstream: Option<String>,
    pub protocol: Option<String>,
    pub last_error: Option<String>,
    pub connected_since_ms: Option<u64>,
}

#[derive(Default)]
pub struct Live {
    pub link: Mutex<LinkInfo>,
    pub sent: AtomicU64,
    pub redelivered: AtomicU64,
    pub downlink_delivered: AtomicU64,
}

impl Live {
    pub fn link(&self) -> std::sync::MutexGuard<'_, LinkInfo> {
        edge_mqtt::util::lock(&self.link)
    }
    pub fn set_state(&self, s: LinkState) {
        self.link().state = s;
    }
    pub fn set_error(&self, e: impl Into<String>) {
        self.link().last_error = Some(e.into());
    }
}

/// Builds the current status (one O(priorities) read for the oldest record's age);
/// `schedules` is the schedule part, computed by the caller from its gates and clock.
pub fn snapshot(outbox: &Outbox, live: &Live, schedules: Vec<GateStatus>) -> SyncStatus {
    let c = outbox.counters();
    let now = now_ms();
    let oldest = if c.backlog_messages > 0 {
        // Guarded: a damaged first page of a lane must not end the status task (and with it
        // the expiry sweeps); the age is then unknown.
        outbox
            .guarded("reading the outbox's oldest record", || {
                outbox::oldest_received_ms(&outbox.db().begin_read()?)
            })
            .ok()
            .flatten()
    } else {
        None
    };
    let link = live.link();
    SyncStatus {
        node_id: outbox.node_id().to_string(),
        link_state: link.state,
        current_upstream: link.upstream.clone(),
        protocol: link.protocol.clone(),
        last_error: link.last_error.clone(),
        connected_since_ms: link.connected_since_ms,
        backlog_messages: c.backlog_messages,
        backlog_bytes: c.backlog_bytes,
        oldest_age_ms: oldest.map(|o| now.saturating_sub(o)),
        sent: live.sent.load(Ordering::Relaxed),
        redelivered: live.redelivered.load(Ordering::Relaxed),
        acked: c.acked,
        dropped: DroppedCounters {
            full: c.dropped_full,
            ttl: c.dropped_ttl,
            rejected: c.rejected,
            invalid: c.dropped_corrupt,
        },
        downlink_delivered: live.downlink_delivered.load(Ordering::Relaxed),
        last_offset: c.last_offset,
        next_seq: c.next_seq,
        updated_at_ms: now,
        source: StatusSource::Broker,
        rules: outbox.rule_stats(),
        schedules,
    }
}

/// Writes the status JSON atomically (tmp file, fsync-free, rename).
pub fn write_status_file(data_dir: &Path, s: &SyncStatus) -> Result<(), SyncError> {
    let json = serde_json::to_vec_pretty(s).map_err(|e| SyncError::Status(e.to_string()))?;
    let tmp: PathBuf = data_dir.join(format!("{STATUS_FILE}.tmp"));
    std::fs::write(&tmp, &json)?;
    std::fs::rename(&tmp, data_dir.join(STATUS_FILE))?;
    Ok(())
}

/// Status for `robustmq-edge sync status --data-dir DIR`.
///
/// If the database can be opened (broker stopped, no lock held), the backlog is computed from the
/// outbox meta row, and link fields come from the last status file if present. If the database is
/// locked (broker running), the status file written every `status_interval_secs` is returned.
pub fn read_status(data_dir: &Path) -> Result<SyncStatus, SyncError> {
    let file = data_dir.join(STATUS_FILE);
    let from_file = || -> Result<SyncStatus, SyncError> {
        let text = std::fs::read(&file)
            .map_err(|e| SyncError::Status(format!("{}: {e}", file.display())))?;
        serde_json::from_slice(&text)
            .map_err(|e| SyncError::Status(format!("{}: {e}", file.display())))
    };
    let db_path = data_dir.join(DB_FILE);
    if !db_path.exists() {
        return from_file();
    }
    let db = match redb::ReadOnlyDatabase::open(&db_path) {
        Ok(db) => db,
        // Left by a broker that did not stop cleanly (kill -9, power loss): no lock is held, but
        // redb needs a repair (done by the broker's next start) before the file can be read, and
        // a read-only handle cannot repair. The status file is then up to
        // `status_interval_secs` older than the crash: return it marked as such, never as if the
        // broker were running.
        Err(redb::DatabaseError::RepairAborted) => {
            let mut s = from_file().map_err(|e| {
                SyncError::Status(format!(
                    "{}: the broker is not running and the database needs the repair its next \
                     start performs; no status file either ({e})",
                    db_path.display()
                ))
            })?;
            let age_s = now_ms().saturating_sub(s.updated_at_ms) / 1000;
            s.link_state = LinkState::Offline;
            s.connected_since_ms = None;
            s.source = StatusSource::StaleStatusFile;
            let last = s.last_error.take();
            s.last_error = Some(format!(
                "broker not running, database needs repair at next start (unclean stop): \
                 figures are from the status file written {age_s} s ago{}",
                last.map(|l| format!("; last link error: {l}"))
                    .unwrap_or_default()
            ));
            return Ok(s);
        }
        // Locked by the running broker (or unreadable): the broker's status file is the answer.
        Err(e) => {
            tracing::debug!(
                "database not opened read-only ({e}); using {}",
                file.display()
            );
            return from_file();
        }
    };
    let txn = db.begin_read()?;
    let meta = outbox::read_meta(&txn)?.unwrap_or_default();
    let oldest = outbox::oldest_received_ms(&txn)?;
    let now = now_ms();
    let mut s = from_file().unwrap_or_default();
    s.link_state = LinkState::Offline;
    s.source = StatusSource::Database;
    s.connected_since_ms = None;
    s.backlog_messages = meta.backlog_messages();
    s.backlog_bytes = meta.backlog_bytes();
    s.oldest_age_ms = oldest.map(|o| now.saturating_sub(o));
    s.acked = meta.acked;
    s.dropped = DroppedCounters {
        full: meta.dropped_full,
        ttl: meta.dropped_ttl,
        rejected: meta.rejected,
        invalid: meta.dropped_corrupt,
    };
    s.last_offset = meta.last_offset;
    s.next_seq = meta.next_seq;
    s.updated_at_ms = now;
    Ok(s)
}
