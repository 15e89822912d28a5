//! Everything the operations endpoints show, taken at one moment: counters, gauges read under
//! the broker lock, storage figures and the live sync status. `/metrics` renders it as
//! Prometheus text, `/api/v1/status` as JSON (with the history for the chart).

use serde_json::{json, Value};

use super::{Counters, HistogramSnapshot, Sample};
use crate::broker::{Broker, Gauges};

/// The broker's figures at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: &'static str,
    pub uptime_secs: f64,
    pub started_unix_ms: u64,
    pub ready: bool,
    /// Connections held against `limits.max_connections` now.
    pub connections: u64,
    pub counters: Counters,
    pub gauges: Gauges,
    /// Size of `edge.redb`; `None` when it cannot be read.
    pub storage_file_bytes: Option<u64>,
    pub commit_latency: HistogramSnapshot,
    /// (deliveries, backlog reads) that waited for a commit (`broker::DrainWaits`).
    pub commit_waits: (u64, u64),
    /// Writes waiting for free space (README, "Disk full").
    pub disk: DiskFigures,
    /// Commit journal (records, checkpoints) since start; `None` without a journal.
    pub journal: Option<(u64, u64)>,
    /// Op log (records, restarts) since start; `None` without an op log.
    pub oplog: Option<(u64, u64)>,
    /// The folder this start moved a damaged database into (`storage.on_damaged`).
    pub damaged_set_aside: Option<String>,
    /// What this start salvaged from it: rows copied, and the tables (or sessions' queues)
    /// where damage lost rows.
    pub salvaged: Option<(u64, Vec<String>)>,
    /// Heap in use as counted by the broker's allocator (`None` inside tests, where it is not
    /// installed) and `limits.max_memory` (0: no bound).
    pub heap_bytes: Option<usize>,
    pub max_memory_bytes: usize,
    /// `None` when sync is off.
    pub sync: Option<edge_sync::SyncStatus>,
}

/// The disk-full state of the storage writer ([`crate::disk_full::DiskFull`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskFigures {
    pub full: bool,
    pub full_since_ms: Option<u64>,
    pub episodes: u64,
    pub write_retries: u64,
    pub refused_publishes: u64,
}

impl DiskFigures {
    fn of(d: &crate::disk_full::DiskFull) -> DiskFigures {
        DiskFigures {
            full: d.is_full(),
            full_since_ms: d.full_since_ms(),
            episodes: d.episodes_total(),
            write_retries: d.write_retries_total(),
            refused_publishes: d.refused_publishes_total(),
        }
    }
}

impl Snapshot {
    pub fn take(broker: &Broker) -> Snapshot {
        let stats = &broker.stats;
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: stats.uptime().as_secs_f64(),
            started_unix_ms: stats.started_unix_ms(),
            ready: stats.is_ready() && broker.store.is_writing(),
            connections: broker.connections.active() as u64,
            counters: stats.counters(),
            gauges: broker.gauges(),
            storage_file_bytes: std::fs::metadata(broker.cfg.db_path())
                .ok()
                .map(|m| m.len()),
            commit_latency: broker.store.commit_latency(),
            commit_waits: broker.drain_waits.counts(),
            disk: DiskFigures::of(broker.store.disk_full()),
            journal: (broker.store.journal()).map(|j| (j.records_total(), j.checkpoints_total())),
            oplog: (broker.store.oplog()).map(|l| (l.records_total(), l.restarts_total())),
            damaged_set_aside: (broker.store.damaged_set_aside()).map(|p| p.display().to_string()),
            salvaged: (broker.store.salvaged()).map(|s| {
                let damaged = s.stopped.iter().map(|(table, _)| table.clone()).collect();
                (s.rows, damaged)
            }),
            heap_bytes: crate::memory::heap_in_use(),
            max_memory_bytes: broker.cfg.limits.max_memory,
            sync: broker.sync_status(),
        }
    }

    /// The sample the history keeps of this snapshot.
    pub fn sample(&self) -> Sample {
        Sample {
            t_ms: crate::message::now_ms(),
            connections: self.connections,
            messages_received: self.counters.messages_received(),
            messages_sent: self.counters.messages_sent(),
            sync_backlog_messages: self.sync.as_ref().map_or(0, |s| s.backlog_messages),
        }
    }

    /// The `/api/v1/status` document. `history`: the samples of the last hour, oldest first;
    /// rates are per second since the newest one.
    pub fn to_json(&self, history: &[Sample]) -> Value {
        let c = &self.counters;
        let g = &self.gauges;
        let now_ms = crate::message::now_ms();
        let rate = |now: u64, then: Option<(u64, u64)>| -> f64 {
            match then {
                Some((v, t)) if now_ms > t => {
                    now.saturating_sub(v) as f64 * 1000.0 / (now_ms - t) as f64
                }
                _ => 0.0,
            }
        };
        let last = history.last();
        let by_qos = |a: &[u64; 3]| json!({"0": a[0], "1": a[1], "2": a[2]});
        let reasons = |it: &mut dyn Iterator<Item = (&'static str, u64)>| {
            Value::Object(it.map(|(k, v)| (k.to_string(), json!(v))).collect())
        };
        json!({
            "version": self.version,
            "uptime_secs": self.uptime_secs,
            "started_at_ms": self.started_unix_ms,
            "ready": self.ready,
            "broker": {
                "connections": {
                    "current": self.connections,
                    "total": c.connections_total,
                    "refused": reasons(&mut c.refused.iter().map(|(r, n)| (r.label(), *n))),
                },
                "messages": {
                    "received": c.messages_received(),
                    "sent": c.messages_sent(),
                    "received_by_qos": by_qos(&c.received_messages),
                    "sent_by_qos": by_qos(&c.sent_messages),
                    "received_payload_bytes_by_qos": by_qos(&c.received_payload_bytes),
                    "sent_payload_bytes_by_qos": by_qos(&c.sent_payload_bytes),
                    "dropped": reasons(&mut c.dropped.iter().map(|(d, n)| (d.label(), *n))),
                    "received_per_sec": rate(c.messages_received(), last.map(|s| (s.messages_received, s.t_ms))),
                    "sent_per_sec": rate(c.messages_sent(), last.map(|s| (s.messages_sent, s.t_ms))),
                },
                "network": {
                    "packets_received": c.packets_received,
                    "packets_sent": c.packets_sent,
                    "bytes_received": c.bytes_received,
                    "bytes_sent": c.bytes_sent,
                },
                "sessions": {
                    "online": g.sessions_online,
                    "offline_persistent": g.sessions_offline_persistent,
                },
                "subscriptions": g.subscriptions,
                "queued": {
                    "messages": g.queued_messages,
                    "bytes": g.queued_bytes,
                    "inflight": g.inflight_messages,
                },
                "retained_messages": g.retained_messages,
                "memory": {
                    "heap_bytes": self.heap_bytes,
                    "max_memory_bytes": self.max_memory_bytes,
                },
                "storage": {
                    "file_bytes": self.storage_file_bytes,
                    "commits": self.commit_latency.count,
                    "commit_seconds_sum": self.commit_latency.sum_seconds,
                    "disk_full": self.disk.full,
                    "disk_full_since_ms": self.disk.full_since_ms,
                    "disk_full_episodes": self.disk.episodes,
                    "disk_full_write_retries": self.disk.write_retries,
                    "disk_full_refused_publishes": self.disk.refused_publishes,
                    "journal_records": self.journal.map(|j| j.0),
                    "journal_checkpoints": self.journal.map(|j| j.1),
                    "oplog_records": self.oplog.map(|l| l.0),
                    "oplog_restarts": self.oplog.map(|l| l.1),
                    "damaged_set_aside": self.damaged_set_aside,
                    "salvaged_rows": self.salvaged.as_ref().map(|s| s.0),
                    "salvage_damaged_tables": self.salvaged.as_ref().map(|s| &s.1),
                },
            },
            "sync": self.sync,
            "history": {
                "interval_secs": super::history::SAMPLE_INTERVAL.as_secs(),
                "samples": history,
            },
        })
    }
}
