//! `/metrics`: a [`Snapshot`] in the Prometheus text exposition format (0.0.4). Names start
//! with `robustmq_edge_`, counters end in `_total`, units are bytes and seconds, every family
//! has HELP and TYPE lines (checked by `promtool check metrics` in tests/tests/ops_http.rs).
//!
//! Written by hand rather than with `prometheus-client`: our counters already live in the
//! broker's atomics, and the format is a few lines per family (its label families would add a
//! lock per increment on the publish path).

use std::fmt::{Display, Write};

use edge_sync::LinkState;

use super::{Snapshot, LATENCY_BUCKETS};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP robustmq_edge_{name} {help}");
        let _ = writeln!(self.0, "# TYPE robustmq_edge_{name} {kind}");
    }

    fn value(&mut self, name: &str, labels: &[(&str, &str)], v: impl Display) {
        let _ = write!(self.0, "robustmq_edge_{name}");
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {v}");
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, v: impl Display) {
        self.family(name, kind, help);
        self.value(name, &[], v);
    }

    /// A family with one value per value of the label `key` (a reason, a QoS, a state).
    fn labelled<'a, V: Display>(
        &mut self,
        (name, kind, help): (&str, &str, &str),
        key: &str,
        values: impl IntoIterator<Item = (&'a str, V)>,
    ) {
        self.family(name, kind, help);
        for (label, v) in values {
            self.value(name, &[(key, label)], v);
        }
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

const QOS: [&str; 3] = ["0", "1", "2"];

const LINK_STATES: [(LinkState, &str); 7] = [
    (LinkState::Disconnected, "disconnected"),
    (LinkState::Connecting, "connecting"),
    (LinkState::Connected, "connected"),
    (LinkState::Backoff, "backoff"),
    (LinkState::Stopped, "stopped"),
    (LinkState::Offline, "offline"),
    (LinkState::OutsideWindow, "outside_window"),
];

/// Renders every metric of `s`.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::with_capacity(8192));
    let c = &s.counters;
    let g = &s.gauges;

    o.family(
        "build_info",
        "gauge",
        "Always 1; the version is in the label.",
    );
    o.value("build_info", &[("version", s.version)], 1);
    o.single(
        "start_time_seconds",
        "gauge",
        "Start of the broker process, Unix time.",
        s.started_unix_ms as f64 / 1000.0,
    );
    o.single(
        "uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
        s.uptime_secs,
    );
    o.single(
        "ready",
        "gauge",
        "1 when listeners are up and storage is open (as /health/ready).",
        u8::from(s.ready),
    );

    o.single(
        "connections",
        "gauge",
        "MQTT connections held against limits.max_connections (CONNECT received).",
        s.connections,
    );
    o.single(
        "connections_total",
        "counter",
        "Connections accepted (CONNACK Success) since start.",
        c.connections_total,
    );
    o.labelled(
        (
            "connections_refused_total",
            "counter",
            "Connections turned away before or at CONNECT, by reason.",
        ),
        "reason",
        c.refused.iter().map(|(r, n)| (r.label(), n)),
    );
    o.single(
        "connection_panics_total",
        "counter",
        "Connection tasks that panicked (caught: logged, session detached, connection closed).",
        c.connection_panics,
    );

    let per_qos = |o: &mut Out, name: &str, help: &str, v: &[u64; 3]| {
        o.labelled((name, "counter", help), "qos", QOS.into_iter().zip(v));
    };
    per_qos(
        &mut o,
        "messages_received_total",
        "PUBLISH packets received from clients, by QoS.",
        &c.received_messages,
    );
    per_qos(
        &mut o,
        "messages_sent_total",
        "PUBLISH packets sent to clients, by QoS.",
        &c.sent_messages,
    );
    per_qos(
        &mut o,
        "payload_received_bytes_total",
        "Payload bytes of the PUBLISH packets received, by QoS.",
        &c.received_payload_bytes,
    );
    per_qos(
        &mut o,
        "payload_sent_bytes_total",
        "Payload bytes of the PUBLISH packets sent, by QoS.",
        &c.sent_payload_bytes,
    );
    o.single(
        "packets_received_total",
        "counter",
        "MQTT packets of every kind received from connected clients.",
        c.packets_received,
    );
    o.single(
        "packets_sent_total",
        "counter",
        "MQTT packets of every kind sent to connected clients.",
        c.packets_sent,
    );
    o.single(
        "network_received_bytes_total",
        "counter",
        "Bytes of the MQTT packets received from connected clients.",
        c.bytes_received,
    );
    o.single(
        "network_sent_bytes_total",
        "counter",
        "Bytes written to connected clients.",
        c.bytes_sent,
    );
    o.labelled(
        (
            "messages_dropped_total",
            "counter",
            "Application messages not delivered or not stored, by reason.",
        ),
        "reason",
        c.dropped.iter().map(|(d, n)| (d.label(), n)),
    );

    o.family(
        "sessions",
        "gauge",
        "Sessions by state: online, or offline and persistent.",
    );
    o.value("sessions", &[("state", "online")], g.sessions_online);
    o.value(
        "sessions",
        &[("state", "offline_persistent")],
        g.sessions_offline_persistent,
    );
    o.single(
        "subscriptions",
        "gauge",
        "Subscriptions of all sessions.",
        g.subscriptions,
    );
    o.single(
        "queued_messages",
        "gauge",
        "Messages waiting in session queues.",
        g.queued_messages,
    );
    o.single(
        "queued_bytes",
        "gauge",
        "Bytes of the messages waiting in session queues.",
        g.queued_bytes,
    );
    o.single(
        "inflight_messages",
        "gauge",
        "QoS 1/2 messages sent to clients and not yet acknowledged.",
        g.inflight_messages,
    );
    o.single(
        "retained_messages",
        "gauge",
        "Retained messages held ($SYS included).",
        g.retained_messages,
    );

    if let Some(bytes) = s.storage_file_bytes {
        o.single(
            "storage_file_bytes",
            "gauge",
            "Size of the database file edge.redb.",
            bytes,
        );
    }
    let h = &s.commit_latency;
    let name = "storage_commit_duration_seconds";
    o.family(
        name,
        "histogram",
        "Duration of group commits (write transaction and fsync).",
    );
    for (le, n) in LATENCY_BUCKETS.iter().zip(&h.cumulative) {
        o.value(&format!("{name}_bucket"), &[("le", &le.to_string())], n);
    }
    o.value(&format!("{name}_bucket"), &[("le", "+Inf")], h.count);
    o.value(&format!("{name}_sum"), &[], h.sum_seconds);
    o.value(&format!("{name}_count"), &[], h.count);
    if let Some((records, checkpoints)) = s.journal {
        o.single(
            "storage_journal_records_total",
            "counter",
            "Commits made durable by a record of the commit journal edge.redb-journal.",
            records,
        );
        o.single(
            "storage_journal_checkpoints_total",
            "counter",
            "Syncs of edge.redb itself that emptied the commit journal.",
            checkpoints,
        );
    }
    if let Some((records, restarts)) = s.oplog {
        o.single(
            "storage_oplog_records_total",
            "counter",
            "Commits of queued publishes made durable by a record of the op log edge.redb-oplog.",
            records,
        );
        o.single(
            "storage_oplog_restarts_total",
            "counter",
            "Times the op log started over, after a durable commit of edge.redb held its records.",
            restarts,
        );
    }
    o.single(
        "storage_damaged_set_aside",
        "gauge",
        "1 when this start found edge.redb damaged and moved it aside (storage.on_damaged), else 0.",
        u64::from(s.damaged_set_aside.is_some()),
    );
    o.single(
        "storage_salvaged_rows",
        "gauge",
        "Rows this start copied from the damaged edge.redb it set aside into the new one (0: none).",
        s.salvaged.as_ref().map_or(0, |s| s.0),
    );
    let name = "delivery_commit_waits_total";
    o.family(
        name,
        "counter",
        "Batches of deliveries (send) and backlog reads (read) that waited for a commit.",
    );
    o.value(name, &[("what", "send")], s.commit_waits.0);
    o.value(name, &[("what", "read")], s.commit_waits.1);

    if let Some(heap) = s.heap_bytes {
        o.single(
            "heap_bytes",
            "gauge",
            "Heap in use, counted by the broker's allocator (what limits.max_memory bounds).",
            heap,
        );
    }
    o.single(
        "max_memory_bytes",
        "gauge",
        "limits.max_memory: publishers pause past half of it (0: no bound).",
        s.max_memory_bytes,
    );
    let d = &s.disk;
    o.single(
        "storage_disk_full",
        "gauge",
        "1 while writes of edge.redb wait for free space (QoS 1/2 publishes are refused).",
        u8::from(d.full),
    );
    o.single(
        "storage_disk_full_episodes_total",
        "counter",
        "Times the disk was found full.",
        d.episodes,
    );
    o.single(
        "storage_disk_full_write_retries_total",
        "counter",
        "Writes tried again because the disk was full.",
        d.write_retries,
    );
    o.single(
        "storage_disk_full_refused_publishes_total",
        "counter",
        "QoS 1/2 publishes refused because the disk was full.",
        d.refused_publishes,
    );

    if let Some(st) = &s.sync {
        sync(&mut o, st);
    }
    o.0
}

fn sync(o: &mut Out, st: &edge_sync::SyncStatus) {
    o.family(
        "sync_link_state",
        "gauge",
        "Store-and-forward link state: 1 for the current one.",
    );
    for (state, label) in LINK_STATES {
        o.value(
            "sync_link_state",
            &[("state", label)],
            u8::from(st.link_state == state),
        );
    }
    if !st.schedules.is_empty() {
        o.family(
            "sync_schedule_in_window",
            "gauge",
            "1 while a scheduled forward rule or upstream is inside its time window.",
        );
        for g in &st.schedules {
            o.value(
                "sync_schedule_in_window",
                &[("kind", &g.kind), ("name", &g.name)],
                u8::from(g.window.in_window),
            );
        }
    }
    o.single(
        "sync_backlog_messages",
        "gauge",
        "Messages in the sync outbox waiting for the upstream.",
        st.backlog_messages,
    );
    o.single(
        "sync_backlog_bytes",
        "gauge",
        "Bytes in the sync outbox.",
        st.backlog_bytes,
    );
    o.single(
        "sync_backlog_oldest_age_seconds",
        "gauge",
        "Age of the oldest message in the sync outbox (0 when empty).",
        st.oldest_age_ms.unwrap_or(0) as f64 / 1000.0,
    );
    o.single(
        "sync_sent_total",
        "counter",
        "Publishes written upstream by this process, redeliveries included.",
        st.sent,
    );
    o.single(
        "sync_redelivered_total",
        "counter",
        "Publishes written upstream again (DUP) by this process.",
        st.redelivered,
    );
    o.single(
        "sync_acked_total",
        "counter",
        "Messages acknowledged by the upstream and removed from the outbox (all time).",
        st.acked,
    );
    o.single(
        "sync_downlink_delivered_total",
        "counter",
        "Messages from the upstream delivered locally by this process.",
        st.downlink_delivered,
    );
    let d = &st.dropped;
    o.labelled(
        (
            "sync_dropped_total",
            "counter",
            "Outbox messages dropped, by reason (all time).",
        ),
        "reason",
        [
            ("full", d.full),
            ("ttl", d.ttl),
            ("rejected", d.rejected),
            ("invalid", d.invalid),
        ],
    );
    if st.rules.is_empty() {
        return;
    }
    type Field = fn(&edge_sync::rules::RuleStats) -> u64;
    let families: [(&str, &str, Field); 5] = [
        (
            "sync_rule_messages_in_total",
            "Messages a forward rule matched.",
            |r| r.messages_in,
        ),
        (
            "sync_rule_messages_out_total",
            "Records a forward rule wrote to the outbox.",
            |r| r.messages_out,
        ),
        (
            "sync_rule_conflated_total",
            "Unsent records replaced by a newer one (latest_only).",
            |r| r.conflated,
        ),
        (
            "sync_rule_received_bytes_total",
            "Topic and payload bytes of the messages a rule matched.",
            |r| r.bytes_in,
        ),
        (
            "sync_rule_forwarded_bytes_total",
            "Topic and payload bytes a rule wrote to the outbox.",
            |r| r.bytes_out,
        ),
    ];
    for (name, help, field) in families {
        o.family(name, "counter", help);
        for r in &st.rules {
            let rule = r.rule.to_string();
            o.value(name, &[("rule", &rule), ("filter", &r.filter)], field(r));
        }
    }
    o.family(
        "sync_rule_dropped_total",
        "counter",
        "Messages a forward rule did not forward, by reason.",
    );
    for r in &st.rules {
        let rule = r.rule.to_string();
        for (reason, n) in [
            ("filter", r.dropped_filter),
            ("deadband", r.dropped_deadband),
        ] {
            o.value(
                "sync_rule_dropped_total",
                &[("rule", &rule), ("filter", &r.filter), ("reason", reason)],
                n,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_quotes_backslashes_and_newlines() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
