//! SIGHUP on the real binary: the configuration file is read again, `log.level` and live
//! limits change without dropping connections, restart-only settings are reported, and a file
//! that no longer parses changes nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use robustmq_edge_e2e::rumqttc::v5::mqttbytes::QoS as Q5;
use robustmq_edge_e2e::*;

fn config(max_connections: usize, max_packet: u32, level: &str, max_batch: usize) -> String {
    format!(
        "[limits]\nmax_connections = {max_connections}\nmax_packet_size = {max_packet}\n\n\
         [log]\nlevel = \"{level}\"\n\n[storage]\nmax_batch = {max_batch}\n"
    )
}

/// The maximum packet size the broker announced in `c`'s CONNACK.
fn max_packet_size(c: &V5Client) -> Option<u32> {
    c.connack
        .properties
        .as_ref()
        .and_then(|p| p.max_packet_size)
}

fn sighup(broker: &Broker) {
    let pid = i32::try_from(broker.pid()).expect("pid fits");
    // SAFETY: kill(2) with a pid of our own child and a valid signal number.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP {pid}");
}

/// Waits until the broker's log holds `n` occurrences of `needle`; returns the log.
async fn wait_log(broker: &Broker, needle: &str, n: usize) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = broker.log();
        if log.matches(needle).count() >= n {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "log never had {n} x {needle:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_log_level_and_max_connections_live_and_reports_restart_only_settings() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("edge.toml");
    write(&file, &config(2, 2048, "info", 1024));
    let broker = Broker::builder()
        .kind(BrokerKind::Edge)
        .config_file(&file)
        .process()
        .start();

    let mut a = V5Client::connect(&broker, &unique("a")).await;
    assert_eq!(max_packet_size(&a), Some(2048));
    let mut b = V3Client::connect(&broker, &unique("b"), true).await;
    assert!(
        V5Client::try_connect_with(v5_options(&broker, &unique("c")))
            .await
            .is_err(),
        "a third connection over max_connections = 2 was accepted"
    );
    assert!(
        !broker.log().contains("client connected"),
        "debug lines logged at log.level = info"
    );

    write(&file, &config(3, 8192, "debug", 512));
    sighup(&broker);
    let log = wait_log(&broker, "reload done", 1).await;
    assert!(
        log.contains("reload: limits.max_connections changed: 2 -> 3"),
        "{log}"
    );
    assert!(
        log.contains("reload: limits.max_packet_size changed: 2048 -> 8192"),
        "{log}"
    );
    assert!(
        log.contains("reload: storage.max_batch changed (1024 -> 512) but needs a restart"),
        "{log}"
    );
    let rust_log = std::env::var_os("RUST_LOG").is_some();
    assert!(
        log.contains(r#"reload: log.level changed: "info" -> "debug""#),
        "{log}"
    );

    // The new limit is in force, the two connections stayed up.
    // New connections are told (and get) the new packet size; older ones keep theirs.
    let mut c = V5Client::connect(&broker, &unique("c")).await;
    assert_eq!(max_packet_size(&c), Some(8192));
    c.publish("reload/c", Q5::AtLeastOnce, false, vec![b'x'; 4000])
        .await;
    a.publish("reload/a", Q5::AtLeastOnce, false, "x").await;
    b.publish("reload/b", rumqttc::QoS::AtLeastOnce, false, "y")
        .await;
    if rust_log {
        // RUST_LOG wins over log.level: the reload says so instead of changing the filter.
        wait_log(&broker, "RUST_LOG is set and overrides log.level", 1).await;
    } else {
        wait_log(&broker, "client connected", 1).await;
    }

    // A file that no longer parses: nothing changes, the error names the key.
    write(&file, "[limits]\nmax_conections = 5\n");
    sighup(&broker);
    let log = wait_log(&broker, "configuration not reloaded", 1).await;
    assert!(log.contains("limits.max_conections"), "{log}");
    assert_eq!(log.matches("reload done").count(), 1, "{log}");
    assert!(
        V5Client::try_connect_with(v5_options(&broker, &unique("d")))
            .await
            .is_err(),
        "max_connections is still 3 after a broken file"
    );
    a.publish("reload/a", Q5::AtLeastOnce, false, "z").await;
    drop(c);
}
