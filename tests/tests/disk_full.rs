//! Disk full, on a real small file system made by the test: a 8 MiB tmpfs (or, where tmpfs
//! cannot be mounted, a loop-mounted ext4 image) over the broker's data folder, filled to the
//! last byte. Needs root (mount); without it the test fails saying so, it never skips.
//!
//! Checked: QoS 1/2 publishes are refused (v5 0x97, v3 connection closed) while QoS 0 flows to
//! an online subscriber; the publish whose commit found the disk full is held, not lost, and
//! acknowledged once space returns, in order with the refusals; every acknowledged message
//! reaches the persistent subscriber, in order, and no refused one does.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use robustmq_edge_e2e::*;
use rumqttc::v5::mqttbytes::QoS as Q5;
use v5bytes::{PubAckReason, PubRecReason};

type V5Packet = rumqttc::v5::mqttbytes::v5::Packet;
type V5Event = rumqttc::v5::Event;

/// A file system mounted by the test over a folder; unmounted (lazily) when dropped.
struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    /// Mounts an 8 MiB tmpfs over `dir`, or a loop-mounted ext4 image when tmpfs is refused;
    /// panics naming both failures when neither works.
    fn mount(dir: &Path, scratch: &Path) -> SmallFs {
        let tmpfs = run(
            "mount",
            &["-t", "tmpfs", "-o", "size=8m", "tmpfs", path(dir)],
        );
        if tmpfs.is_ok() {
            return SmallFs { dir: dir.into() };
        }
        let image = scratch.join("small.img");
        let loop_mount = create_sized(&image, 8 << 20)
            .and_then(|()| run("mkfs.ext4", &["-q", "-F", path(&image)]))
            .and_then(|()| run("mount", &["-o", "loop", path(&image), path(dir)]));
        match loop_mount {
            Ok(()) => SmallFs { dir: dir.into() },
            Err(e) => panic!(
                "DISK-FULL TEST CANNOT RUN: no small file system could be made (it needs root). \
                 tmpfs: {}; loop-mounted ext4 image: {e}",
                tmpfs.err().unwrap_or_default()
            ),
        }
    }

    /// Fills the file system with a file until a write fails for lack of space, then gives
    /// `spare` bytes back (so some publishes are stored before the disk is full).
    fn fill(&self, spare: u64) -> PathBuf {
        let filler = self.dir.join("filler");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&filler)
            .expect("create filler");
        for chunk in [64 << 10, 4 << 10, 512, 1] {
            let buf = vec![0x5au8; chunk];
            loop {
                match f.write_all(&buf) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => panic!("filling the small file system: {e}"),
                }
            }
        }
        let len = f.metadata().expect("filler size").len();
        f.set_len(len.saturating_sub(spare)).expect("shrink filler");
        let _ = f.sync_all();
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", path(&self.dir)]);
    }
}

fn create_sized(p: &Path, len: u64) -> Result<(), String> {
    let f = fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
    f.set_len(len).map_err(|e| format!("{}: {e}", p.display()))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One unlabelled sample of the broker's `/metrics`.
fn disk_metric(http: u16, name: &str) -> u64 {
    let (status, text) = http_get(http, "/metrics");
    assert_eq!(status, 200, "GET /metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("{i}:").into_bytes();
    p.resize(4096, b'.');
    p
}

fn number(p: &[u8]) -> usize {
    let s = std::str::from_utf8(p).expect("utf-8 payload");
    s.split(':')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("numbered payload")
}

/// Queues a QoS 1 publish and returns the packet id rumqttc gave it.
async fn send_qos1(c: &mut V5Client, topic: &str, body: Vec<u8>) -> u16 {
    send(c, topic, Q5::AtLeastOnce, body).await
}

/// Queues a publish and returns the packet id rumqttc gave it (consuming its outgoing event).
async fn send(c: &mut V5Client, topic: &str, qos: Q5, body: Vec<u8>) -> u16 {
    c.client
        .publish(topic, qos, false, body)
        .await
        .expect("queue PUBLISH");
    c.events
        .wait_for("outgoing PUBLISH", WAIT, |e| match e {
            V5Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => Some(*pkid),
            _ => None,
        })
        .await
}

/// A persistent v5 session (expiry 1 h) subscribed to `data/#` at QoS 1, left offline to
/// keep every message; returns its options for [`reconnect_keeper`].
///
/// Returns once the broker has committed the session's departure (its commit count, read
/// from `/metrics` on `http`, passes the one after the SUBACK): filling the disk while that
/// commit runs would make the broker see the disk full before the test means it to.
async fn keeper_session(broker: &Broker, http: u16) -> rumqttc::v5::MqttOptions {
    let mut opts = v5_options(broker, &unique("keeper"));
    opts.set_session_expiry_interval(Some(3600));
    let mut keeper = V5Client::connect_with(opts.clone()).await;
    keeper.subscribe_ok("data/#", Q5::AtLeastOnce).await;
    let before = commits(http);
    keeper.disconnect().await;
    let deadline = std::time::Instant::now() + WAIT;
    while commits(http) <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the keeper's departure was not committed within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    opts
}

/// How many group commits the broker has completed.
fn commits(http: u16) -> u64 {
    disk_metric(http, "robustmq_edge_storage_commit_duration_seconds_count")
}

/// Connects the keeper again, asserting its session (and so its queue) is still there.
async fn reconnect_keeper(mut opts: rumqttc::v5::MqttOptions) -> V5Client {
    opts.set_clean_start(false);
    let keeper = V5Client::connect_with(opts).await;
    assert!(
        keeper.connack.session_present,
        "the keeper's session was lost"
    );
    keeper
}

async fn puback_of(c: &mut V5Client, pkid: u16, limit: Duration) -> Option<PubAckReason> {
    c.events
        .try_wait_for(limit, |e| match e {
            V5Event::Incoming(V5Packet::PubAck(a)) if a.pkid == pkid => Some(a.reason),
            _ => None,
        })
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_qos1_and_qos2_keeps_qos0_flowing_and_recovers_without_loss() {
    let http = free_port();
    let mut broker = Broker::builder()
        .kind(BrokerKind::Edge)
        // A 1 MiB commit journal fits the 8 MiB file system: the journaled commit path (its
        // records never find the disk full, being preallocated; the database file's writes do).
        .config_text(format!(
            "[http]\nbind = \"127.0.0.1:{http}\"\n[storage]\njournal_bytes = 1048576\n"
        ))
        .process()
        .start();
    broker.stop();
    let fs = SmallFs::mount(broker.data_dir(), &std::env::temp_dir());
    broker.restart();
    wait_port(http, "HTTP listener");
    assert!(
        broker.data_dir().join("edge.redb-journal").exists(),
        "the broker runs with its journal"
    );
    assert_eq!(disk_metric(http, "robustmq_edge_storage_disk_full"), 0);
    // The binary counts its heap (limits.max_memory); tests in process do not.
    assert!(disk_metric(http, "robustmq_edge_heap_bytes") > 0);

    // A persistent subscriber that is offline while the disk fills: every accepted message is
    // queued for it on disk. An online clean subscriber for the QoS 0 flow.
    let keeper_opts = keeper_session(&broker, http).await;
    let mut live = V5Client::subscribed(&broker, "live", "live/#", Q5::AtMostOnce).await;

    let filler = fs.fill(256 << 10);

    // Publish until one PUBACK does not come: its commit is waiting for space.
    let mut publisher = V5Client::connect(&broker, &unique("pub")).await;
    let mut acked = Vec::new();
    let stuck = loop {
        let i = acked.len();
        assert!(
            i < 4000,
            "8 MiB never filled up after {i} messages of 4 KiB"
        );
        let pkid = send_qos1(&mut publisher, &format!("data/{i}"), payload(i)).await;
        match puback_of(&mut publisher, pkid, Duration::from_secs(3)).await {
            Some(PubAckReason::Success) => acked.push(i),
            Some(other) => panic!("message {i} before the disk filled: PUBACK {other:?}"),
            None => break (i, pkid),
        }
    };
    assert!(
        acked.len() >= 10,
        "only {} messages stored before the disk was full",
        acked.len()
    );
    eprintln!("{} messages stored before the disk was full", acked.len());
    // More from the same publisher: refused, but acknowledgements keep their order, so these
    // answers wait behind the held one.
    let refused_same_conn = [stuck.0 + 1, stuck.0 + 2];
    let mut later_pkids = Vec::new();
    for i in refused_same_conn {
        later_pkids.push(send_qos1(&mut publisher, &format!("data/{i}"), payload(i)).await);
    }

    // Another v5 publisher is refused at once: QoS 1 PUBACK and QoS 2 PUBREC 0x97.
    let mut other = V5Client::connect(&broker, &unique("pub2")).await;
    let pkid = send_qos1(&mut other, "data/refused", payload(90_000)).await;
    assert_eq!(
        puback_of(&mut other, pkid, WAIT).await,
        Some(PubAckReason::QuotaExceeded),
        "QoS 1 while the disk is full"
    );
    let pkid = send(
        &mut other,
        "data/refused2",
        Q5::ExactlyOnce,
        payload(90_001),
    )
    .await;
    let rec = other
        .events
        .wait_for("PUBREC", WAIT, |e| match e {
            V5Event::Incoming(V5Packet::PubRec(r)) if r.pkid == pkid => Some(r.reason),
            _ => None,
        })
        .await;
    assert_eq!(
        rec,
        PubRecReason::QuotaExceeded,
        "QoS 2 while the disk is full"
    );

    // MQTT 3.1.1: no negative PUBACK, so the connection is closed without one.
    let mut v3 = V3Client::connect(&broker, &unique("pub3"), true).await;
    v3.publish_refused_by_close("data/v3", payload(90_002), "while the disk is full")
        .await;

    // A persistent session cannot be stored: its CONNECT is refused, not left waiting.
    let mut persistent = v5_options(&broker, &unique("persist5"));
    persistent.set_session_expiry_interval(Some(600));
    assert_refused(
        V5Client::try_connect_with(persistent).await,
        "QuotaExceeded",
        "a v5 persistent session while the disk is full",
    );
    assert_refused(
        V3Client::try_connect_with(v3_options(&broker, &unique("persist3"), false)).await,
        "ServiceUnavailable",
        "a v3.1.1 persistent session while the disk is full",
    );

    // QoS 0 keeps flowing to the online subscriber.
    send(&mut other, "live/t", Q5::AtMostOnce, b"still here".to_vec()).await;
    let got = live.recv(WAIT).await;
    assert_eq!(&got.payload[..], b"still here");

    let log = broker.log();
    assert!(log.contains("disk full"), "no disk-full log line:\n{log}");
    // ... and so do the metrics.
    assert_eq!(disk_metric(http, "robustmq_edge_storage_disk_full"), 1);
    assert!(
        disk_metric(
            http,
            "robustmq_edge_storage_disk_full_refused_publishes_total"
        ) >= 2
    );

    // Space returns: the held publish is acknowledged, then the two refusals, in order.
    fs::remove_file(&filler).expect("remove filler");
    assert_eq!(
        puback_of(&mut publisher, stuck.1, WAIT).await,
        Some(PubAckReason::Success),
        "the publish held while the disk was full is acknowledged once space returns"
    );
    acked.push(stuck.0);
    for pkid in later_pkids {
        assert_eq!(
            puback_of(&mut publisher, pkid, WAIT).await,
            Some(PubAckReason::QuotaExceeded)
        );
    }
    // Accepted again.
    let next = stuck.0 + 3;
    let pkid = send_qos1(&mut other, &format!("data/{next}"), payload(next)).await;
    assert_eq!(
        puback_of(&mut other, pkid, WAIT).await,
        Some(PubAckReason::Success),
        "PUBACK after space returned"
    );
    acked.push(next);
    assert_eq!(disk_metric(http, "robustmq_edge_storage_disk_full"), 0);
    assert_eq!(
        disk_metric(http, "robustmq_edge_storage_disk_full_episodes_total"),
        1
    );
    let log = broker.log();
    assert!(
        log.contains("disk space is back"),
        "no recovery log line:\n{log}"
    );

    // Every acknowledged message reaches the persistent subscriber, in order; no refused one.
    let mut keeper = reconnect_keeper(keeper_opts).await;
    let mut got = Vec::new();
    while got.len() < acked.len() {
        let p = keeper.recv(WAIT).await;
        got.push(number(&p.payload));
    }
    keeper
        .expect_no_publish(QUIET, "a refused message was delivered")
        .await;
    assert_eq!(got, acked);

    keeper.disconnect().await;
    broker.stop();
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_while_the_disk_is_full_exits_cleanly_and_keeps_every_acknowledged_message() {
    let http = free_port();
    let mut broker = Broker::builder()
        .kind(BrokerKind::Edge)
        .config_text(format!("[http]\nbind = \"127.0.0.1:{http}\"\n"))
        .process()
        .start();
    broker.stop();
    let fs = SmallFs::mount(broker.data_dir(), &std::env::temp_dir());
    broker.restart();
    wait_port(http, "HTTP listener");
    // The default 16 MiB journal does not fit in 8 MiB: the broker runs without it, and says so.
    assert!(
        broker.log().contains("no room for the commit journal"),
        "{}",
        broker.log()
    );
    assert!(!broker.data_dir().join("edge.redb-journal").exists());
    let keeper_opts = keeper_session(&broker, http).await;
    let filler = fs.fill(256 << 10);

    let mut publisher = V5Client::connect(&broker, &unique("pub")).await;
    let mut acked = Vec::new();
    let held = loop {
        let i = acked.len();
        assert!(i < 4000, "8 MiB never filled up after {i} messages");
        let pkid = send_qos1(&mut publisher, &format!("data/{i}"), payload(i)).await;
        match puback_of(&mut publisher, pkid, Duration::from_secs(3)).await {
            Some(PubAckReason::Success) => acked.push(i),
            Some(other) => panic!("message {i} before the disk filled: PUBACK {other:?}"),
            None => break i,
        }
    };

    // SIGTERM while a commit waits for space: the writer gives up, the broker exits by itself
    // (the harness would SIGKILL it after 10 s).
    let started = std::time::Instant::now();
    let status = broker.stop();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    eprintln!("stopped in {:?} while the disk was full", started.elapsed());

    // Space back, started again: the file is repaired and every acknowledged message is there.
    fs::remove_file(&filler).expect("remove filler");
    broker.restart();
    let mut keeper = reconnect_keeper(keeper_opts).await;
    let mut got = Vec::new();
    while let Some(p) = keeper.try_recv(Duration::from_secs(2)).await {
        got.push(number(&p.payload));
    }
    // The held message was never acknowledged: present or not, nothing else may differ.
    got.retain(|n| *n != held);
    assert_eq!(got, acked, "acknowledged messages lost or reordered");
    broker.stop();
    drop(fs);
}
