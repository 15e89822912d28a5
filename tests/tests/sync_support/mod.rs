//! Helpers shared by the sync end-to-end tests (`sync_e2e.rs` against mosquitto,
//! `sync_robustmq.rs` against a real RobustMQ): an MQTT 5 observer on the upstream that reads
//! the `edge-msg-id` of every forwarded message, the edge's `[sync]` config, `sync status`
//! reading (serde_json), QoS 1 publishers on the edge, and (`upstream`) mosquitto behind a
//! proxy that stands for the link.
//!
//! Each test binary uses only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use robustmq_edge_e2e::rumqttc::{self, QoS};
use robustmq_edge_e2e::*;

use rumqttc::v5::mqttbytes::QoS as Q5;

mod upstream;
#[allow(unused_imports)] // sync_robustmq.rs runs its own upstream
pub use upstream::*;

/// `node_id` of the edge in most tests.
pub const NODE: &str = "gw1";

/// One message seen on the upstream.
#[derive(Debug, Clone)]
pub struct Got {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub props: Vec<(String, String)>,
    pub at: Instant,
}

impl Got {
    pub fn msg_id(&self) -> Option<&str> {
        self.props
            .iter()
            .find(|(k, _)| k == "edge-msg-id")
            .map(|(_, v)| v.as_str())
    }

    /// The sequence of `edge-msg-id = "gw1:<seq>"` (panics when absent or foreign).
    pub fn seq(&self) -> u64 {
        self.seq_of(NODE)
    }

    /// The sequence of `edge-msg-id = "<node>:<seq>"` (panics when absent or of another node).
    pub fn seq_of(&self, node: &str) -> u64 {
        let id = self
            .msg_id()
            .unwrap_or_else(|| panic!("no edge-msg-id on {self:?}"));
        let (from, seq) = id
            .split_once(':')
            .unwrap_or_else(|| panic!("edge-msg-id `{id}` is not node:seq"));
        assert_eq!(from, node, "edge-msg-id node of {self:?}");
        seq.parse()
            .unwrap_or_else(|_| panic!("edge-msg-id `{id}`: sequence is not a number"))
    }

    pub fn number(&self) -> usize {
        payload_number(payload_text(&self.payload).as_bytes())
    }
}

/// Payloads are `<number>` optionally followed by `|` and padding.
pub fn payload_text(p: &[u8]) -> String {
    let s = String::from_utf8_lossy(p);
    s.split('|').next().unwrap_or_default().to_string()
}

pub struct Observer {
    got: Arc<Mutex<Vec<Got>>>,
    error: Arc<Mutex<Option<String>>>,
    _client: rumqttc::v5::AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Connects anonymously to 127.0.0.1:`port` and subscribes to `filters` (QoS 2, retain as
    /// published); returns once the SUBACK arrived.
    pub async fn start(port: u16, filters: &[&str]) -> Observer {
        Observer::start_with(observer_options(port), filters).await
    }

    /// Like [`Observer::start`] with the caller's options (credentials, properties).
    pub async fn start_with(o: rumqttc::v5::MqttOptions, filters: &[&str]) -> Observer {
        let (client, mut el) = rumqttc::v5::AsyncClient::new(o, 100);
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let error: Arc<Mutex<Option<String>>> = Arc::default();
        let (suback_tx, suback_rx) = tokio::sync::oneshot::channel::<()>();
        let task = {
            let got = got.clone();
            let error = error.clone();
            tokio::spawn(async move {
                let mut suback = Some(suback_tx);
                loop {
                    match el.poll().await {
                        Ok(rumqttc::v5::Event::Incoming(V5Packet::Publish(p))) => {
                            got.lock().unwrap().push(Got {
                                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                                payload: p.payload.to_vec(),
                                qos: p.qos as u8,
                                retain: p.retain,
                                props: p
                                    .properties
                                    .map(|pr| pr.user_properties)
                                    .unwrap_or_default(),
                                at: Instant::now(),
                            })
                        }
                        Ok(rumqttc::v5::Event::Incoming(V5Packet::SubAck(_))) => {
                            if let Some(tx) = suback.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            *error.lock().unwrap() = Some(e.to_string());
                            return;
                        }
                    }
                }
            })
        };
        let subs = filters
            .iter()
            .map(|f| {
                let mut f = v5bytes::Filter::new(*f, Q5::ExactlyOnce);
                f.preserve_retain = true;
                f
            })
            .collect::<Vec<_>>();
        client.subscribe_many(subs).await.expect("queue SUBSCRIBE");
        within(WAIT, "observer SUBACK from the upstream", suback_rx)
            .await
            .expect("observer ended before its SUBACK");
        Observer {
            got,
            error,
            _client: client,
            task,
        }
    }

    pub fn snapshot(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Waits until `done` holds for what arrived so far; panics after `limit`.
    pub async fn wait(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[Got]) -> bool,
    ) -> Vec<Got> {
        let t = Instant::now();
        loop {
            {
                let got = self.got.lock().unwrap();
                if done(&got) {
                    return got.clone();
                }
            }
            if let Some(e) = self.error.lock().unwrap().clone() {
                panic!("upstream observer lost its connection ({e}) while waiting for {what}");
            }
            if t.elapsed() > limit {
                let got = self.got.lock().unwrap();
                panic!(
                    "timed out after {limit:?} waiting for {what}: {} messages on the upstream, \
                     last: {:?}",
                    got.len(),
                    got.last()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` distinct payload numbers arrived.
    pub async fn wait_distinct(&self, n: usize, limit: Duration) -> Vec<Got> {
        self.wait(&format!("{n} distinct messages"), limit, |g| {
            distinct_numbers(g) >= n
        })
        .await
    }
}

/// Observer options: a unique client id, keep alive 30 s, clean start, 1 MiB packets.
pub fn observer_options(port: u16) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(unique("observer"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_start(true)
        .set_max_packet_size(Some(1 << 20));
    o
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub type V5Packet = rumqttc::v5::mqttbytes::v5::Packet;

pub fn distinct_numbers(got: &[Got]) -> usize {
    got.iter()
        .map(|g| g.number())
        .collect::<BTreeSet<_>>()
        .len()
}

/// What `check_order` found.
#[derive(Debug)]
pub struct Delivery {
    pub distinct: usize,
    pub duplicates: usize,
}

/// Checks messages seen upstream: every one carries `edge-msg-id = gw1:<seq>`; one id always
/// means one payload; first arrivals come in strictly increasing sequence and payload order
/// (order kept); every number of `expected` is present (none missing) and nothing else is.
pub fn check_delivery(
    got: &[Got],
    expected: &BTreeSet<usize>,
    allowed_extra: &BTreeSet<usize>,
) -> Delivery {
    let mut by_seq: HashMap<u64, usize> = HashMap::new();
    let mut first: Vec<(u64, usize)> = Vec::new();
    for g in got {
        let seq = g.seq();
        let n = g.number();
        match by_seq.insert(seq, n) {
            Some(prev) => assert_eq!(prev, n, "edge-msg-id {seq} carried two payloads"),
            None => first.push((seq, n)),
        }
    }
    for w in first.windows(2) {
        assert!(
            w[0].0 < w[1].0 && w[0].1 < w[1].1,
            "out of order on first arrival: (seq, payload) {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let seen: BTreeSet<usize> = first.iter().map(|f| f.1).collect();
    let missing: Vec<_> = expected.difference(&seen).take(20).collect();
    assert!(
        missing.is_empty(),
        "{} of {} messages missing upstream, first: {missing:?}",
        expected.difference(&seen).count(),
        expected.len()
    );
    let unexpected: Vec<_> = seen
        .iter()
        .filter(|n| !expected.contains(n) && !allowed_extra.contains(n))
        .take(20)
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected payloads upstream: {unexpected:?}"
    );
    let distinct = seen.len();
    Delivery {
        distinct,
        duplicates: got.len() - distinct,
    }
}

pub fn range_set(r: std::ops::Range<usize>) -> BTreeSet<usize> {
    r.collect()
}

// ------------------------------------------------------------------------------------------
// The edge: config, status, publishers
// ------------------------------------------------------------------------------------------

/// A broker config with sync to `upstream`: fast reconnects, status every second, no drain
/// pacing unless `sync_extra` sets it; `top` holds top-level tables (e.g. `[limits]`).
pub fn edge_config(top: &str, upstream: &str, sync_extra: &str, rules: &str) -> String {
    edge_config_for(NODE, top, upstream, sync_extra, rules)
}

/// [`edge_config`] for another `node_id`.
pub fn edge_config_for(
    node: &str,
    top: &str,
    upstream: &str,
    sync_extra: &str,
    rules: &str,
) -> String {
    format!(
        "{top}\n[sync]\nnode_id = \"{node}\"\nupstreams = [\"{upstream}\"]\n\
         status_interval_secs = 1\nconnect_timeout_secs = 2\n{sync_extra}\n\
         [sync.backoff]\ninitial_ms = 100\nmax_ms = 500\n{rules}"
    )
}

pub const UNPACED: &str = "max_messages_per_sec = 0\nmax_bytes_per_sec = 0\n";

/// The edge broker with `config`, in the test process (unless `E2E_PROCESS=1`).
pub fn start_edge(config: String) -> Broker {
    Broker::builder().config_text(config).start()
}

/// The edge broker with `config` as a process of its own: for tests that `kill -9` it or
/// measure it.
pub fn start_edge_process(config: String) -> Broker {
    Broker::builder().config_text(config).process().start()
}

/// `robustmq-edge sync status --data-dir DIR --json` (the status file while the broker runs,
/// the database when it is stopped).
pub fn try_sync_status(data_dir: &Path) -> Result<String, String> {
    let out = Command::new(edge_binary())
        .args(["sync", "status", "--json", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run robustmq-edge sync status");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8 status"))
    } else {
        Err(format!(
            "sync status failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub fn sync_status(data_dir: &Path) -> String {
    try_sync_status(data_dir).unwrap_or_else(|e| panic!("{e}"))
}

/// The value of `key` anywhere in the status JSON (the keys looked up are unique in it), read
/// with serde_json; None when the text is no JSON or lacks the key.
fn json_find(json: &str, key: &str) -> Option<serde_json::Value> {
    fn find(v: &serde_json::Value, key: &str) -> Option<serde_json::Value> {
        match v {
            serde_json::Value::Object(m) => m
                .get(key)
                .cloned()
                .or_else(|| m.values().find_map(|v| find(v, key))),
            serde_json::Value::Array(a) => a.iter().find_map(|v| find(v, key)),
            _ => None,
        }
    }
    find(&serde_json::from_str(json).ok()?, key)
}

/// The number `key` holds in the status JSON.
pub fn json_u64(json: &str, key: &str) -> u64 {
    json_opt_u64(json, key).unwrap_or_else(|| panic!("`{key}` is not a number in status: {json}"))
}

/// Like [`json_u64`], None when the value is `null` (or not a number).
pub fn json_opt_u64(json: &str, key: &str) -> Option<u64> {
    json_find(json, key)
        .unwrap_or_else(|| panic!("no `{key}` in status: {json}"))
        .as_u64()
}

/// The string `key` holds in the status JSON; None when it is `null`, absent or no string.
pub fn json_str(json: &str, key: &str) -> Option<String> {
    json_find(json, key)?.as_str().map(str::to_string)
}

/// Waits up to `limit` for the status in `data_dir` to show an empty outbox and, when
/// `acked` is given, exactly that many messages acknowledged upstream; returns that status.
pub async fn wait_drained(data_dir: &Path, limit: Duration, acked: Option<u64>) -> String {
    let what = match acked {
        Some(n) => format!("backlog empty, {n} acknowledged"),
        None => "backlog empty".to_string(),
    };
    wait_status(data_dir, &what, limit, |s| {
        json_u64(s, "backlog_messages") == 0 && acked.is_none_or(|n| json_u64(s, "acked") == n)
    })
    .await
}

/// Polls `sync status` until `done` holds; panics with the last status after `limit`.
pub async fn wait_status(
    data_dir: &Path,
    what: &str,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let t = Instant::now();
    loop {
        // Right after a start the first status file may not be written yet.
        let s = match try_sync_status(data_dir) {
            Ok(s) => s,
            Err(_) if t.elapsed() < limit => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => panic!("waiting for sync status: {what}: {e}"),
        };
        if done(&s) {
            return s;
        }
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for sync status: {what}; last status:\n{s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Payload `i` padded to `size` bytes (`"<i>|xxxx..."`), or just `"<i>"` when `size` is 0.
pub fn payload(i: usize, size: usize) -> Vec<u8> {
    let mut p = i.to_string().into_bytes();
    if size > p.len() + 1 {
        p.push(b'|');
        p.resize(size, b'x');
    }
    p
}

/// Result of a windowed QoS 1 publisher.
pub struct Published {
    /// Payload numbers whose PUBACK arrived.
    pub acked: BTreeSet<usize>,
    /// Why the connection ended early, if it did.
    pub error: Option<String>,
}

/// Publishes `numbers` (payloads from [`payload`]) on `topic` at QoS 1 over MQTT 3.1.1 with up
/// to 100 messages in flight, until all are acknowledged, the connection ends, or `limit`.
/// `acked_count` follows the acknowledgements live.
pub async fn publish_qos1(
    port: u16,
    topic: &str,
    numbers: std::ops::Range<usize>,
    size: usize,
    limit: Duration,
    acked_count: Arc<AtomicUsize>,
) -> Published {
    let mut o = rumqttc::MqttOptions::new(unique("pub"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(100);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 256);
    let total = numbers.len();
    let order: Vec<usize> = numbers.collect();
    let feeder = {
        let client = client.clone();
        let topic = topic.to_string();
        let order = order.clone();
        tokio::spawn(async move {
            for i in order {
                if client
                    .publish(&topic, QoS::AtLeastOnce, false, payload(i, size))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    let mut by_pkid: HashMap<u16, usize> = HashMap::new();
    let mut next = 0usize;
    let mut acked = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut error = None;
    while acked.len() < total {
        let ev = match tokio::time::timeout_at(deadline, el.poll()).await {
            Err(_) => {
                error = Some(format!(
                    "{limit:?} passed with {} of {total} acked",
                    acked.len()
                ));
                break;
            }
            Ok(Err(e)) => {
                error = Some(e.to_string());
                break;
            }
            Ok(Ok(ev)) => ev,
        };
        match ev {
            rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => {
                by_pkid.insert(pkid, order[next]);
                next += 1;
            }
            rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a)) => {
                if let Some(i) = by_pkid.remove(&a.pkid) {
                    acked.insert(i);
                    acked_count.fetch_add(1, Ordering::SeqCst);
                }
            }
            _ => {}
        }
    }
    feeder.abort();
    drop(client);
    Published { acked, error }
}

/// The next `n` messages `local` receives on topics other than `probe` (late probes of
/// [`probe_downlink`] are skipped), by topic; each wait is up to `limit`.
pub async fn recv_by_topic(
    local: &mut V5Client,
    n: usize,
    probe: &str,
    limit: Duration,
) -> BTreeMap<String, v5bytes::Publish> {
    let mut seen = BTreeMap::new();
    while seen.len() < n {
        let p = local.recv(limit).await;
        let topic = String::from_utf8_lossy(&p.topic).into_owned();
        if topic != probe {
            seen.insert(topic, p);
        }
    }
    seen
}

/// Publishes each `(topic, qos, retain, payload)` of `commands` from `cloud`, then asserts
/// each comes down to `local` (probes on `probe` aside) with that QoS, RETAIN flag and payload.
pub async fn assert_sent_down(
    cloud: &mut V5Client,
    local: &mut V5Client,
    probe: &str,
    limit: Duration,
    commands: &[(&str, Q5, bool, &str)],
) {
    for &(topic, qos, retain, payload) in commands {
        cloud.publish(topic, qos, retain, payload.to_string()).await;
    }
    let seen = recv_by_topic(local, commands.len(), probe, limit).await;
    for &(topic, qos, retain, payload) in commands {
        let p = seen
            .get(topic)
            .unwrap_or_else(|| panic!("{topic} not sent down: {seen:?}"));
        assert_eq!(
            (p.qos, p.retain, &p.payload[..]),
            (qos, retain, payload.as_bytes()),
            "{topic}"
        );
    }
}

/// Publishes probes (`qos`, payload "p") on `topic` from `cloud` until one comes down to
/// `local` within `poll`, panicking after `limit`: the edge subscribes upstream only after its
/// CONNACK, and probes sent before that are lost.
pub async fn probe_downlink(
    cloud: &mut V5Client,
    local: &mut V5Client,
    topic: &str,
    qos: Q5,
    poll: Duration,
    limit: Duration,
) {
    let t = Instant::now();
    loop {
        cloud.publish(topic, qos, false, "p").await;
        if local.try_recv(poll).await.is_some() {
            return;
        }
        assert!(t.elapsed() < limit, "downlink never delivered a probe");
    }
}

/// Publishes and asserts every message was acknowledged.
pub async fn publish_all(port: u16, topic: &str, numbers: std::ops::Range<usize>, size: usize) {
    let n = numbers.len();
    // Generous: the machine may be shared; a stall still fails.
    let limit = Duration::from_secs(10) + Duration::from_millis(4 * n as u64);
    let r = publish_qos1(port, topic, numbers, size, limit, Arc::default()).await;
    assert_eq!(r.error, None, "publisher ended early");
    assert_eq!(r.acked.len(), n);
}

/// A test CA and a server certificate it signed for DNS `localhost`, both generated here:
/// (CA PEM, server certificate PEM, server key PEM).
pub fn make_pki(name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let named = |sans: Vec<String>, cn: &str| {
        let mut p = CertificateParams::new(sans).expect("params");
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p
    };
    let mut ca_params = named(Vec::new(), &format!("{name} test CA"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("CA key");
    let ca = ca_params.self_signed(&ca_key).expect("CA cert");
    let srv_key = KeyPair::generate().expect("server key");
    let srv = named(vec!["localhost".into()], "localhost")
        .signed_by(&srv_key, &ca, &ca_key)
        .expect("server cert");
    (ca.pem(), srv.pem(), srv_key.serialize_pem())
}

pub fn write_pem(dir: &Path, name: &str, text: &str) -> PathBuf {
    write_file(dir, name, text)
}
