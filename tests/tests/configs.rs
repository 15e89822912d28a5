//! The configuration files shipped in this repository are accepted by the broker, and the
//! command line handles configuration the way the README says.

use std::path::PathBuf;
use std::time::Duration;

use robustmq_edge_e2e::rumqttc::QoS;
use robustmq_edge_e2e::*;

const TEST_LIMIT: Duration = Duration::from_secs(60);
const RUN_LIMIT: Duration = Duration::from_secs(20);

/// `targets/*/config.toml`, the files `targets/install.sh` installs.
fn target_configs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("targets"))
        .expect("targets/")
        .flatten()
        .map(|e| e.path().join("config.toml"))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    assert!(
        v.len() >= 2,
        "expected targets/raspberry-pi and targets/arm64 configs: {v:?}"
    );
    v
}

async fn round_trip(broker: &Broker, what: &str) {
    let topic = unique("cfg");
    let mut sub = V3Client::subscribed(broker, "sub", &topic, QoS::AtLeastOnce).await;
    let mut publisher = V3Client::connect(broker, &unique("pub"), true).await;
    publisher
        .publish(&topic, QoS::AtLeastOnce, false, what.to_string())
        .await;
    assert_eq!(sub.recv(WAIT).await.payload, what.as_bytes(), "{what}");
}

#[tokio::test]
async fn every_target_config_passes_check_config_and_serves_mqtt() {
    if skip_unless_edge("target configs") {
        return;
    }
    for path in target_configs() {
        let p = path.to_str().expect("utf-8 path");
        let out = run_edge(&["--config", p, "check-config"], RUN_LIMIT);
        assert!(out.status.success(), "check-config {p}: {out:?}");
        // The real file, with only the listener and data folder overridden (it names
        // 0.0.0.0:1883 and /var/lib/robustmq-edge). The broker runs in the test process; the
        // binary's `--listen`/`--data-dir` overrides are exercised by the process-mode tests.
        // Its `[auth]` files in /etc/robustmq-edge are replaced by ones in a temporary folder:
        // an empty password file (as the .deb creates) and an ACL opening `cfg-*` topics to the
        // anonymous clients of the loopback listener.
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("passwd"), "").expect("passwd");
        std::fs::write(dir.path().join("acl"), "topic readwrite +\n").expect("acl");
        let text = std::fs::read_to_string(&path)
            .expect("read config")
            .replace("/etc/robustmq-edge/", &format!("{}/", dir.path().display()));
        assert!(text.contains("[auth]"), "{p} turns authentication on");
        let broker = Broker::builder().config_text(text).start();
        within(TEST_LIMIT, p, round_trip(&broker, p)).await;
        assert!(
            broker.data_dir().join("edge.redb").is_file(),
            "the data folder override replaces data_dir of {p}"
        );
    }
}

#[tokio::test]
async fn printed_default_config_is_a_valid_config_file() {
    if skip_unless_edge("print-config") {
        return;
    }
    let out = run_edge(&["print-config"], RUN_LIMIT);
    assert!(out.status.success(), "print-config: {out:?}");
    assert!(
        out.stdout.contains("[[listeners]]"),
        "print-config output:\n{}",
        out.stdout
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "printed.toml", &out.stdout);
    let f = file.to_str().unwrap();
    let check = run_edge(&["--config", f, "check-config"], RUN_LIMIT);
    assert!(
        check.status.success(),
        "check-config of the printed defaults: {check:?}"
    );
    let broker = Broker::builder().config_file(&file).start();
    within(
        TEST_LIMIT,
        "printed defaults",
        round_trip(&broker, "printed defaults"),
    )
    .await;
}

#[test]
fn unknown_and_invalid_keys_are_errors_naming_the_key() {
    if skip_unless_edge("config errors") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[limits]\nmax_conections = 10\n", "max_conections"),
        (
            "[storage]\ncache_size_bytes = \"big\"\n",
            "cache_size_bytes",
        ),
        ("durability = \"sometimes\"\n", "durability"),
        ("[limits]\nreceive_maximum = 0\n", "receive_maximum"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let file = write_file(dir.path(), &format!("bad{i}.toml"), text);
        let f = file.to_str().unwrap();
        let check = run_edge(&["--config", f, "check-config"], RUN_LIMIT);
        assert!(!check.status.success(), "check-config accepted {text:?}");
        assert!(
            check.stderr.contains(key),
            "check-config error must name `{key}`: {check:?}"
        );
        // Starting the broker with it fails the same way (and never serves).
        let port = free_port().to_string();
        let data = dir.path().join(format!("data{i}"));
        let listen = format!("127.0.0.1:{port}");
        let run = run_edge(
            &[
                "--config",
                f,
                "--listen",
                &listen,
                "--data-dir",
                data.to_str().unwrap(),
            ],
            RUN_LIMIT,
        );
        assert!(
            !run.status.success(),
            "broker started with {text:?}: {run:?}"
        );
        assert!(
            run.stderr.contains(key),
            "start error must name `{key}`: {run:?}"
        );
    }
}

#[tokio::test]
async fn store_gateway_example_forwards_upstream_and_delivers_downlink() {
    if skip_unless_edge("store-gateway example") {
        return;
    }
    let mosquitto = std::env::var("MOSQUITTO_BIN").unwrap_or_else(|_| "/usr/sbin/mosquitto".into());
    if !std::path::Path::new(&mosquitto).is_file() {
        eprintln!("store-gateway example: SKIPPED, no mosquitto to stand in for the cloud");
        return;
    }
    let example = workspace_root().join("examples/sync/store-gateway.toml");
    let text = std::fs::read_to_string(&example).expect("examples/sync/store-gateway.toml");
    // The "central cluster" is a local mosquitto; everything else is the example as shipped.
    let cloud = Broker::builder().kind(BrokerKind::Mosquitto).start();
    let upstream_line = text
        .lines()
        .find(|l| l.starts_with("upstreams = "))
        .expect("upstreams line in the example");
    let text = text.replace(
        upstream_line,
        &format!("upstreams = [\"tcp://127.0.0.1:{}\"]", cloud.port()),
    );
    let dir = tempfile::tempdir().unwrap();
    // Its `[auth]` files in /etc/robustmq-edge: an empty password file and an ACL letting the
    // anonymous clients of the loopback listener (this test's) read and write everything.
    write_file(dir.path(), "passwd", "");
    write_file(dir.path(), "acl", "topic readwrite #\n");
    assert!(
        text.contains("[auth]"),
        "the example turns authentication on"
    );
    let text = text.replace("/etc/robustmq-edge/", &format!("{}/", dir.path().display()));
    let file = write_file(dir.path(), "store-gateway.toml", &text);
    let check = run_edge(
        &["--config", file.to_str().unwrap(), "check-config"],
        RUN_LIMIT,
    );
    assert!(
        check.status.success(),
        "check-config of the example: {check:?}"
    );
    let edge = Broker::builder().config_file(&file).start();

    within(TEST_LIMIT, "store gateway", async {
        let mut cloud_sub =
            V3Client::subscribed(&cloud, "cloud-sub", "stores/#", QoS::AtLeastOnce).await;
        cloud_sub.subscribe_ok("retail/#", QoS::AtLeastOnce).await;
        let mut local_sub =
            V3Client::subscribed(&edge, "local-sub", "commands/#", QoS::AtLeastOnce).await;
        local_sub.subscribe_ok("prices/#", QoS::AtLeastOnce).await;

        // Uplink: local publishes reach the cloud under the rules' remote topics.
        let mut local_pub = V3Client::connect(&edge, &unique("till"), true).await;
        let sent = [
            ("sensors/fridge-1/temp", "4.2"),
            ("pos/till-3/transactions", "tx-1"),
            ("alarms/door", "open"),
            ("other/topic", "stays local"),
        ];
        let expected = [
            ("retail/store-0042/pos/till-3/transactions", "tx-1"),
            ("stores/store-0042/alarms/door", "open"),
            ("stores/store-0042/sensors/fridge-1/temp", "4.2"),
        ];
        let to = (&mut cloud_sub, "cloud", "a topic without a forward rule");
        assert_forwarded(&mut local_pub, &sent, to, &expected).await;

        // Downlink: cloud commands for this store arrive locally with the prefix replaced.
        let mut cloud_pub = V3Client::connect(&cloud, &unique("cloud-pub"), true).await;
        let sent = [
            ("commands/store-0042/doors", "lock"),
            ("commands/store-0099/doors", "other"),
            ("broadcast/prices/milk", "1.09"),
        ];
        let expected = [("commands/doors", "lock"), ("prices/milk", "1.09")];
        let to = (&mut local_sub, "local side", "another store's command");
        assert_forwarded(&mut cloud_pub, &sent, to, &expected).await;
    })
    .await;
}

/// `publisher` publishes every `(topic, payload)` of `sent` at QoS 1; the subscriber of `to`
/// (client, side, what it must not get) receives exactly `expected` (sorted by topic) within
/// 15 s, and then nothing more.
async fn assert_forwarded(
    publisher: &mut V3Client,
    sent: &[(&str, &str)],
    (subscriber, side, not_forwarded): (&mut V3Client, &str, &str),
    expected: &[(&str, &str)],
) {
    for (topic, payload) in sent {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, *payload)
            .await;
    }
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect();
    let got = subscriber
        .recv_sorted(expected.len(), Duration::from_secs(15), side)
        .await;
    assert_eq!(got, want);
    subscriber.expect_no_publish(QUIET, not_forwarded).await;
}
