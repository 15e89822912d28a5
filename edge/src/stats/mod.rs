//! Broker statistics: counters in broker-level atomics (relaxed adds, no lock and nothing per
//! connection on the publish path), gauges read from the broker state when asked
//! (`Broker::gauges`), and a bounded history of samples for the status page's chart.
//!
//! Counters only grow while the process runs (Prometheus `_total` semantics); everything is
//! read by `/metrics` (`prometheus.rs`), `/api/v1/status` (`snapshot.rs`) and `$SYS`.

pub mod history;
pub mod prometheus;
pub mod snapshot;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use history::{History, Sample};
pub use snapshot::Snapshot;

/// Why a connection was turned away before or at CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections` reached (CONNACK 0x89 / v3 3).
    MaxConnections,
    /// `limits.max_connections_per_ip` reached.
    MaxConnectionsPerIp,
    /// Too many sockets waiting for their CONNECT: closed at accept.
    TooManyPending,
    /// Bad user name or password, or not authorized (CONNACK 0x86 / 0x87).
    NotAuthorized,
    /// No CONNECT within `limits.connect_timeout_secs`.
    ConnectTimeout,
    /// TLS handshake failed or timed out.
    TlsHandshake,
    /// `proxy_protocol`: no valid PROXY header in time.
    ProxyProtocol,
    /// `proxy_protocol`: the peer is not one of the listener's `trusted_proxies`.
    UntrustedProxy,
    /// Malformed or oversized CONNECT, invalid flags or properties, or an unusable client id.
    ProtocolError,
    /// Protocol level other than 3, 4 or 5.
    UnsupportedProtocolVersion,
    /// The session could not be stored.
    StorageError,
}

impl Refused {
    pub const ALL: [Refused; 11] = [
        Refused::MaxConnections,
        Refused::MaxConnectionsPerIp,
        Refused::TooManyPending,
        Refused::NotAuthorized,
        Refused::ConnectTimeout,
        Refused::TlsHandshake,
        Refused::ProxyProtocol,
        Refused::UntrustedProxy,
        Refused::ProtocolError,
        Refused::UnsupportedProtocolVersion,
        Refused::StorageError,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Refused::MaxConnections => "max_connections",
            Refused::MaxConnectionsPerIp => "max_connections_per_ip",
            Refused::TooManyPending => "too_many_pending",
            Refused::NotAuthorized => "not_authorized",
            Refused::ConnectTimeout => "connect_timeout",
            Refused::TlsHandshake => "tls_handshake",
            Refused::ProxyProtocol => "proxy_protocol",
            Refused::UntrustedProxy => "untrusted_proxy",
            Refused::ProtocolError => "protocol_error",
            Refused::UnsupportedProtocolVersion => "unsupported_protocol_version",
            Refused::StorageError => "storage_error",
        }
    }
}

/// Why an application message was not delivered (or not stored) where it was headed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A session's queue was at `limits.max_queued_messages` / `max_queued_bytes`.
    QueueFull,
    /// The publisher may not write the topic (ACL, or `$SYS`).
    NotAuthorized,
    /// The sync outbox is full and its policy is `reject_new` (publisher told 0x97).
    QuotaExceeded,
    /// A new retained topic past `limits.max_retained_messages` (delivered, not retained).
    RetainedLimit,
    /// Larger than the subscriber's Maximum Packet Size.
    TooLargeForClient,
}

impl Dropped {
    pub const ALL: [Dropped; 5] = [
        Dropped::QueueFull,
        Dropped::NotAuthorized,
        Dropped::QuotaExceeded,
        Dropped::RetainedLimit,
        Dropped::TooLargeForClient,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Dropped::QueueFull => "queue_full",
            Dropped::NotAuthorized => "not_authorized",
            Dropped::QuotaExceeded => "quota_exceeded",
            Dropped::RetainedLimit => "retained_limit",
            Dropped::TooLargeForClient => "too_large_for_client",
        }
    }
}

/// Upper bounds (seconds) of the commit latency buckets: an fsync on an SD card takes
/// milliseconds to a second, a commit without fsync well under a millisecond.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A fixed-bucket latency histogram of atomics (Prometheus `histogram` semantics: bucket
/// counts are cumulative when rendered).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), the last one for `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// A consistent-enough copy of a [`Histogram`] (each field read once).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct HistogramSnapshot {
    /// Cumulative counts, one per [`LATENCY_BUCKETS`] entry.
    pub cumulative: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            d.as_micros().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let mut cumulative = Vec::with_capacity(LATENCY_BUCKETS.len());
        for b in &self.buckets[..LATENCY_BUCKETS.len()] {
            acc += b.load(Ordering::Relaxed);
            cumulative.push(acc);
        }
        let total = acc + self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            cumulative,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            // `count` equals the +Inf bucket; taken from the buckets so the two agree.
            count: total,
        }
    }
}

/// Per-QoS message and payload byte counters.
#[derive(Debug, Default)]
pub struct ByQos {
    messages: [AtomicU64; 3],
    payload_bytes: [AtomicU64; 3],
}

impl ByQos {
    fn add(&self, qos: u8, payload: usize) {
        let q = (qos as usize).min(2);
        self.messages[q].fetch_add(1, Ordering::Relaxed);
        self.payload_bytes[q].fetch_add(payload as u64, Ordering::Relaxed);
    }

    pub fn messages(&self) -> [u64; 3] {
        self.messages.each_ref().map(|a| a.load(Ordering::Relaxed))
    }

    pub fn payload_bytes(&self) -> [u64; 3] {
        self.payload_bytes
            .each_ref()
            .map(|a| a.load(Ordering::Relaxed))
    }
}

/// The broker's counters, one instance per broker (`Broker::stats`).
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    started_unix_ms: u64,
    /// Listeners bound, accept loops running, storage open (`/health/ready`).
    ready: AtomicBool,
    connections_total: AtomicU64,
    refused: [AtomicU64; Refused::ALL.len()],
    /// Connection tasks that panicked (caught; the session was detached as on a broken link).
    connection_panics: AtomicU64,
    /// PUBLISH packets from clients (before ACL and routing).
    pub received: ByQos,
    /// PUBLISH packets written to clients.
    pub sent: ByQos,
    packets_received: AtomicU64,
    packets_sent: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    dropped: [AtomicU64; Dropped::ALL.len()],
    /// Samples of the last hour for the status page.
    pub history: Mutex<History>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            started: Instant::now(),
            started_unix_ms: crate::message::now_ms(),
            ready: AtomicBool::new(false),
            connections_total: AtomicU64::new(0),
            refused: Default::default(),
            connection_panics: AtomicU64::new(0),
            received: ByQos::default(),
            sent: ByQos::default(),
            packets_received: AtomicU64::new(0),
            packets_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            dropped: Default::default(),
            history: Mutex::new(History::default()),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn started_unix_ms(&self) -> u64 {
        self.started_unix_ms
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// A client got CONNACK Success.
    pub fn connection_accepted(&self) {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused(&self, why: Refused) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection's task panicked; it was caught and the connection closed.
    pub fn connection_panicked(&self) {
        self.connection_panics.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self, why: Dropped) {
        self.dropped_n(why, 1);
    }

    pub fn dropped_n(&self, why: Dropped, n: u64) {
        self.dropped[why as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// One PUBLISH read from a client.
    pub fn publish_received(&self, qos: u8, payload: usize) {
        self.received.add(qos, payload);
    }

    /// One PUBLISH written to a client.
    pub fn publish_sent(&self, qos: u8, payload: usize) {
        self.sent.add(qos, payload);
    }

    /// One MQTT packet of `bytes` read from a client.
    pub fn packet_received(&self, bytes: usize) {
        self.packets_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// `packets` MQTT packets encoded for a client.
    pub fn packets_sent(&self, packets: u64) {
        self.packets_sent.fetch_add(packets, Ordering::Relaxed);
    }

    /// `bytes` written to a client's socket.
    pub fn bytes_sent(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Every counter, read once.
    pub fn counters(&self) -> Counters {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            connections_total: load(&self.connections_total),
            refused: Refused::ALL.map(|r| (r, load(&self.refused[r as usize]))),
            connection_panics: load(&self.connection_panics),
            received_messages: self.received.messages(),
            received_payload_bytes: self.received.payload_bytes(),
            sent_messages: self.sent.messages(),
            sent_payload_bytes: self.sent.payload_bytes(),
            packets_received: load(&self.packets_received),
            packets_sent: load(&self.packets_sent),
            bytes_received: load(&self.bytes_received),
            bytes_sent: load(&self.bytes_sent),
            dropped: Dropped::ALL.map(|d| (d, load(&self.dropped[d as usize]))),
        }
    }
}

/// A copy of [`Stats`]' counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Counters {
    pub connections_total: u64,
    pub refused: [(Refused, u64); Refused::ALL.len()],
    pub connection_panics: u64,
    pub received_messages: [u64; 3],
    pub received_payload_bytes: [u64; 3],
    pub sent_messages: [u64; 3],
    pub sent_payload_bytes: [u64; 3],
    pub packets_received: u64,
    pub packets_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub dropped: [(Dropped, u64); Dropped::ALL.len()],
}

impl Counters {
    pub fn messages_received(&self) -> u64 {
        self.received_messages.iter().sum()
    }

    pub fn messages_sent(&self) -> u64 {
        self.sent_messages.iter().sum()
    }
}

/// Adds a [`Sample`] to the broker's history now and every [`history::SAMPLE_INTERVAL`].
pub async fn sampler(broker: std::sync::Arc<crate::broker::Broker>) {
    loop {
        let sample = Snapshot::take(&broker).sample();
        edge_mqtt::util::lock(&broker.stats.history).push(sample);
        smol::Timer::after(history::SAMPLE_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_every_observation() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50)); // <= 0.0001
        h.observe(Duration::from_millis(3)); // <= 0.005
        h.observe(Duration::from_secs(10)); // +Inf only
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative[0], 1);
        assert_eq!(s.cumulative[3], 1, "0.0025 bucket holds only the first");
        assert_eq!(s.cumulative[4], 2, "0.005 bucket holds the first two");
        assert_eq!(
            *s.cumulative.last().unwrap(),
            2,
            "10 s is above every bound"
        );
        assert!((s.sum_seconds - 10.00305).abs() < 1e-9, "{}", s.sum_seconds);
    }

    #[test]
    fn counters_are_kept_per_reason_and_per_qos() {
        let s = Stats::new();
        s.refused(Refused::NotAuthorized);
        s.refused(Refused::NotAuthorized);
        s.dropped(Dropped::QueueFull);
        s.publish_received(1, 10);
        s.publish_received(2, 5);
        s.publish_received(1, 1);
        let c = s.counters();
        assert_eq!(c.refused[Refused::NotAuthorized as usize].1, 2);
        assert_eq!(c.refused[Refused::MaxConnections as usize].1, 0);
        assert_eq!(c.dropped[Dropped::QueueFull as usize].1, 1);
        assert_eq!(c.received_messages, [0, 2, 1]);
        assert_eq!(c.received_payload_bytes, [0, 11, 5]);
        assert_eq!(c.messages_received(), 3);
    }

    #[test]
    fn every_reason_has_a_distinct_label_at_its_own_index() {
        for (i, r) in Refused::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, d) in Dropped::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i);
        }
        let mut labels: Vec<_> = Refused::ALL.iter().map(|r| r.label()).collect();
        labels.dedup();
        assert_eq!(labels.len(), Refused::ALL.len());
    }
}
