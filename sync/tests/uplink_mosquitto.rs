//! Uplink and downlink against a real mosquitto on 127.0.0.1 (what reached it is read with
//! mosquitto_sub), with a cuttable proxy standing for the upstream link.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use edge_sync::{start, LinkState, Outbox, SyncConfig};

const FWD: &str = "[[forward]]\nfilter = \"pos/#\"\nprefix = \"stores/{node_id}/\"\n";

/// First-arrival order of sequences must be 1..=n with nothing missing.
fn assert_complete_in_order(got: &[Got], n: u64) {
    let mut seen = std::collections::HashSet::new();
    let mut firsts = Vec::new();
    for g in got {
        let s = g.seq();
        if seen.insert(s) {
            firsts.push(s);
        }
    }
    let missing: Vec<u64> = (1..=n).filter(|s| !seen.contains(s)).take(10).collect();
    assert!(missing.is_empty(), "missing ids, first ones: {missing:?}");
    assert!(
        firsts.windows(2).all(|w| w[0] < w[1]),
        "first arrivals out of order"
    );
    assert_eq!(firsts.len() as u64, n);
}

#[test]
fn online_messages_are_forwarded_with_edge_msg_id() {
    let (mq, sub) = Mosquitto::with_subscriber("#");
    let t = TestDb::new();
    let c = sync_cfg(mq.port, FWD);
    let ob = t.outbox(&c);
    let bus = Arc::new(TestBus::default());
    let h = start(ob.clone(), c, t.path().to_path_buf(), bus.clone());
    assert!(wait_connected(&h));
    capture_n(&ob, &t.db, "pos/1/sale", 0, 20);
    let got = sub.wait_for(20, Duration::from_secs(10));
    assert_eq!(got.len(), 20);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.topic, "stores/n1/pos/1/sale");
        assert_eq!(g.payload, i.to_string());
        assert_eq!(
            g.msg_id().as_deref(),
            Some(format!("n1:{}", i + 1).as_str())
        );
    }
    assert!(outbox_drains(&ob, Duration::from_secs(5)));
    assert_eq!(ob.counters().acked, 20);
    // Status file and $SYS status are produced.
    assert!(wait_until(Duration::from_secs(5), || {
        edge_sync::read_status(t.path())
            .map(|s| s.acked == 20 && s.link_state == LinkState::Connected)
            .unwrap_or(false)
    }));
    assert!(!bus.status.lock().unwrap().is_empty());
    smol::block_on(h.shutdown());
}

/// mosquitto behind a proxy whose link starts cut, a subscriber to `stores/#` on it, a new
/// database and the `FWD` configuration for the proxy's port.
fn forwarding_behind_cut_link() -> (Mosquitto, Subscriber, Proxy, TestDb, SyncConfig) {
    let (mq, sub, link) = Mosquitto::behind_proxy("stores/#");
    let c = sync_cfg(link.port, FWD);
    (mq, sub, link, TestDb::new(), c)
}

#[test]
fn backlog_built_while_upstream_down_arrives_complete_and_in_order() {
    let (_mq, sub, mut link, t, c) = forwarding_behind_cut_link();
    let (ob, h) = start_sync(&t, c);
    // Upstream unreachable: thousands of messages are captured meanwhile.
    capture_n(&ob, &t.db, "pos/1/sale", 0, 3000);
    std::thread::sleep(Duration::from_millis(500));
    assert_ne!(h.status().link_state, LinkState::Connected);
    assert!(h.status().last_error.is_some());
    assert_eq!(ob.counters().backlog_messages, 3000);
    link.up();
    let got = sub.wait_for(3000, Duration::from_secs(60));
    assert_complete_in_order(&got, 3000);
    assert!(outbox_drains(&ob, Duration::from_secs(10)));
    smol::block_on(h.shutdown());
}

#[test]
fn link_cut_mid_drain_redelivers_with_no_id_missing() {
    let (_mq, sub, mut link, t, mut c) = forwarding_behind_cut_link();
    // Paced so the cut lands in the middle of the drain.
    c.max_messages_per_sec = 1000;
    let ob = t.outbox(&c);
    capture_n(&ob, &t.db, "pos/1/sale", 0, 3000);
    link.up();
    let h = start_uplink(&t, &ob, c);
    sub.wait_for(800, Duration::from_secs(20));
    link.down();
    std::thread::sleep(Duration::from_millis(500));
    let mid = sub.got.lock().unwrap().len();
    assert!(mid < 3000, "cut happened before the end ({mid})");
    link.up();
    let got = sub.wait_for(3000, Duration::from_secs(60));
    assert!(outbox_drains(&ob, Duration::from_secs(20)));
    let got = sub.wait_for(got.len(), Duration::from_millis(500));
    assert_complete_in_order(&got, 3000);
    smol::block_on(h.shutdown());
}

#[test]
fn restart_with_backlog_loses_nothing_and_counters_are_exact() {
    let (_mq, sub, mut link, t, c) = forwarding_behind_cut_link();
    let ob = t.outbox(&c);
    let h = start_uplink(&t, &ob, c.clone());
    capture_n(&ob, &t.db, "pos/1/sale", 0, 1000);
    smol::block_on(h.shutdown());
    let before = ob.counters();
    drop(ob);
    // The broker is stopped: the status command reads the database itself.
    let t = t.reopen();
    let st = edge_sync::read_status(t.path());
    // (the database is open again here, so the file is what the command sees)
    assert!(st.is_ok());
    let ob = t.outbox(&c);
    assert_eq!(ob.counters(), before);
    assert_eq!(ob.counters().backlog_messages, 1000);
    link.up();
    let h = start_uplink(&t, &ob, c);
    let got = sub.wait_for(1000, Duration::from_secs(30));
    assert_complete_in_order(&got, 1000);
    smol::block_on(h.shutdown());
}

#[test]
fn status_of_a_stopped_broker_is_read_from_the_database() {
    let t = TestDb::new();
    let c = sync_cfg(1, FWD);
    let ob = t.outbox(&c);
    capture_n(&ob, &t.db, "pos/1/sale", 0, 42);
    drop(ob);
    let dir = t.path().to_path_buf();
    let TestDb { dir: _keep, db } = t;
    drop(db);
    let s = edge_sync::read_status(&dir).unwrap();
    assert_eq!(s.link_state, LinkState::Offline);
    assert_eq!(s.backlog_messages, 42);
    assert!(s.oldest_age_ms.is_some());
}

#[test]
fn pacing_caps_the_drain_rate() {
    let (mq, sub) = Mosquitto::with_subscriber("stores/#");
    let t = TestDb::new();
    let mut c = sync_cfg(mq.port, FWD);
    c.max_messages_per_sec = 200;
    let ob = t.outbox(&c);
    capture_n(&ob, &t.db, "pos/1/sale", 0, 600);
    let t0 = Instant::now();
    let h = start_uplink(&t, &ob, c);
    let got = sub.wait_for(600, Duration::from_secs(30));
    let took = t0.elapsed();
    assert_eq!(got.len(), 600);
    // 200 burst + 400 at 200/s: at least ~2 s.
    assert!(
        took >= Duration::from_millis(1800),
        "drained too fast: {took:?}"
    );
    smol::block_on(h.shutdown());
}

#[test]
fn high_priority_live_traffic_overtakes_a_low_priority_backlog() {
    let (_mq, sub, mut link) = Mosquitto::behind_proxy("#");
    let t = TestDb::new();
    let mut c = sync_cfg(
        link.port,
        "[[forward]]\nfilter = \"alarm/#\"\npriority = 3\n[[forward]]\nfilter = \"bulk/#\"\npriority = 0\n",
    );
    c.max_messages_per_sec = 500;
    let ob = t.outbox(&c);
    capture_n(&ob, &t.db, "bulk/log", 0, 2000);
    capture_n(&ob, &t.db, "alarm/door", 0, 20);
    link.up();
    let h = start_uplink(&t, &ob, c);
    let got = sub.wait_for(2020, Duration::from_secs(30));
    assert_eq!(got.len(), 2020);
    let last_alarm = got.iter().rposition(|g| g.topic == "alarm/door").unwrap();
    assert!(
        last_alarm < 100,
        "alarms arrived late (last at {last_alarm})"
    );
    // Order inside each lane is kept.
    let bulk: Vec<u64> = got
        .iter()
        .filter(|g| g.topic == "bulk/log")
        .map(|g| g.seq())
        .collect();
    assert!(bulk.windows(2).all(|w| w[0] < w[1]));
    smol::block_on(h.shutdown());
}

#[test]
fn downlink_delivers_cloud_messages_locally_with_qos_and_retain() {
    let mq = Mosquitto::start();
    let t = TestDb::new();
    let c = sync_cfg(
        mq.port,
        "[[downlink]]\nfilter = \"cmd/{node_id}/#\"\nreplace_prefix = { from = \"cmd/{node_id}/\", to = \"cloud/cmd/\" }\nqos = 1\n",
    );
    let ob = t.outbox(&c);
    let bus = Arc::new(TestBus::default());
    let h = start(ob.clone(), c, t.path().to_path_buf(), bus.clone());
    assert!(wait_connected(&h));
    std::thread::sleep(Duration::from_millis(300)); // SUBACK
    let pub_ = |topic: &str, retain: bool| {
        let mut cmd = std::process::Command::new("mosquitto_pub");
        cmd.args([
            "-V",
            "mqttv5",
            "-h",
            "127.0.0.1",
            "-p",
            &mq.port.to_string(),
        ])
        .args(["-q", "1", "-t", topic, "-m", "reboot"]);
        if retain {
            cmd.arg("-r");
        }
        assert!(cmd.status().unwrap().success());
    };
    pub_("cmd/n1/reboot", false);
    pub_("cmd/n1/config", true);
    pub_("cmd/other/reboot", false);
    assert!(wait_until(Duration::from_secs(10), || bus
        .msgs
        .lock()
        .unwrap()
        .len()
        >= 2));
    std::thread::sleep(Duration::from_millis(300));
    let msgs = bus.msgs.lock().unwrap().clone();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(msgs[0].topic, "cloud/cmd/reboot");
    assert_eq!(msgs[0].qos, 1);
    assert!(!msgs[0].retain);
    assert_eq!(&msgs[0].payload[..], b"reboot");
    assert_eq!(msgs[1].topic, "cloud/cmd/config");
    assert!(msgs[1].retain, "retain-as-published keeps the retain flag");
    assert!(msgs[0]
        .user_properties
        .iter()
        .any(|(k, _)| k == edge_sync::DOWNLINK_MARKER));
    smol::block_on(h.shutdown());
}

#[test]
fn bad_credentials_give_a_clear_last_error() {
    let port = free_port();
    let mq = Mosquitto::start_on(
        free_port(),
        &format!("listener {port} 127.0.0.1\nallow_anonymous false\n"),
    );
    let t = TestDb::new();
    let c = sync_cfg(
        port,
        &format!("username = \"edge\"\npassword = \"wrong\"\n{FWD}"),
    );
    let (_ob, h) = start_sync(&t, c);
    assert!(wait_until(Duration::from_secs(10), || h
        .status()
        .last_error
        .is_some()));
    let e = h.status().last_error.unwrap();
    assert!(
        e.contains("not authorized") || e.contains("bad user name or password"),
        "{e}"
    );
    assert_ne!(h.status().link_state, LinkState::Connected);
    drop(mq);
    smol::block_on(h.shutdown());
}

#[test]
fn mqtt311_protocol_forwards() {
    let (mq, sub) = Mosquitto::with_subscriber("stores/#");
    let t = TestDb::new();
    let c = sync_cfg(mq.port, &format!("protocol = \"3.1.1\"\n{FWD}"));
    let ob = t.outbox(&c);
    capture_n(&ob, &t.db, "pos/1/sale", 0, 50);
    let h = start_uplink(&t, &ob, c);
    let got = sub.wait_for(50, Duration::from_secs(10));
    assert_eq!(got.len(), 50);
    assert!(outbox_drains(&ob, Duration::from_secs(5)));
    assert_eq!(h.status().protocol.as_deref(), Some("3.1.1"));
    smol::block_on(h.shutdown());
}

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn make_pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    // Distinct subject names: OpenSSL takes a leaf whose subject equals its issuer for self-signed.
    let named = |sans: Vec<String>, cn: &str| {
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p
    };
    let mut ca_params = named(Vec::new(), "edge-sync test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let srv_key = KeyPair::generate().unwrap();
    let srv = named(vec!["localhost".to_string()], "localhost")
        .signed_by(&srv_key, &ca, &ca_key)
        .unwrap();
    let cli_key = KeyPair::generate().unwrap();
    let cli = named(vec!["edge-n1".to_string()], "edge-n1")
        .signed_by(&cli_key, &ca, &ca_key)
        .unwrap();
    Pki {
        ca: ca.pem(),
        server_cert: srv.pem(),
        server_key: srv_key.serialize_pem(),
        client_cert: cli.pem(),
        client_key: cli_key.serialize_pem(),
    }
}

#[test]
fn tls_upstream_with_generated_ca_and_client_certificate() {
    let pki = make_pki();
    let certs = tempfile::tempdir().unwrap();
    let w = |name: &str, text: &str| {
        let p = certs.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ca = w("ca.pem", &pki.ca);
    let sc = w("server.pem", &pki.server_cert);
    let sk = w("server.key", &pki.server_key);
    let cc = w("client.pem", &pki.client_cert);
    let ck = w("client.key", &pki.client_key);
    let tls_port = free_port();
    let mq = Mosquitto::start_on(
        free_port(),
        &format!(
            "listener {tls_port} 127.0.0.1\nallow_anonymous true\ncafile {ca}\ncertfile {sc}\n\
             keyfile {sk}\nrequire_certificate true\n"
        ),
    );
    wait_port(tls_port, "mosquitto TLS listener");
    let sub = Subscriber::start(mq.port, "stores/#");
    let t = TestDb::new();
    let toml = format!(
        "node_id = \"n1\"\nupstreams = [\"tls://127.0.0.1:{tls_port}\"]\nstatus_interval_secs = 1\n\
         backoff = {{ initial_ms = 100, max_ms = 400 }}\n\
         tls = {{ ca_file = \"{ca}\", client_cert_file = \"{cc}\", client_key_file = \"{ck}\", server_name = \"localhost\" }}\n{FWD}"
    );
    let c = SyncConfig::from_toml_str(&toml).unwrap();
    let ob = t.outbox(&c);
    capture_n(&ob, &t.db, "pos/1/sale", 0, 100);
    let h = start_uplink(&t, &ob, c);
    let got = sub.wait_for(100, Duration::from_secs(20));
    assert_eq!(got.len(), 100, "status: {:?}", h.status());
    assert_complete_in_order(&got, 100);
    smol::block_on(h.shutdown());

    // A CA that did not sign the server: a clear TLS error, nothing sent.
    let other = make_pki();
    let bad_ca = w("other-ca.pem", &other.ca);
    let toml = format!(
        "node_id = \"n2\"\nupstreams = [\"tls://127.0.0.1:{tls_port}\"]\n\
         backoff = {{ initial_ms = 100, max_ms = 400 }}\n\
         tls = {{ ca_file = \"{bad_ca}\", client_cert_file = \"{cc}\", client_key_file = \"{ck}\", server_name = \"localhost\" }}\n{FWD}"
    );
    let c = SyncConfig::from_toml_str(&toml).unwrap();
    let t2 = TestDb::new();
    let ob = Outbox::open(t2.db.clone(), &c).unwrap();
    let h = start(
        ob.clone(),
        c,
        t2.path().to_path_buf(),
        Arc::new(TestBus::default()),
    );
    assert!(wait_until(Duration::from_secs(10), || h
        .status()
        .last_error
        .is_some()));
    let e = h.status().last_error.unwrap();
    assert!(e.contains("tls") || e.contains("handshake"), "{e}");
    assert_ne!(h.status().link_state, LinkState::Connected);
    smol::block_on(h.shutdown());
}
