//! Users, passwords and ACLs with real clients (rumqttc, MQTT 3.1.1 and 5.0): password files
//! made by Debian's `mosquitto_passwd` and by `robustmq-edge passwd`, CONNACK refusal codes,
//! the ACL on publish, subscribe, wills, routed and retained delivery, and reload on SIGHUP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use robustmq_edge_e2e::rumqttc::v5::mqttbytes::QoS as Q5;
use robustmq_edge_e2e::rumqttc::{LastWill, QoS};
use robustmq_edge_e2e::*;

const TEST_LIMIT: Duration = Duration::from_secs(90);

/// The store ACL of the README: sensors write under their own name, `app` reads everything
/// under `sensors/` and owns `apps/`, nobody may subscribe to `test/nosubscribe`.
const ACL: &str = "\
user app
topic read sensors/#
topic readwrite apps/#
topic deny test/nosubscribe

pattern write sensors/%u/#
pattern readwrite test/#
";

/// A password file from `robustmq-edge passwd` (always available).
fn edge_passwd(dir: &Path) -> PathBuf {
    let file = dir.join("passwd-edge");
    for (i, (user, pw)) in [("app", "app-secret"), ("s1", "s1-secret")]
        .iter()
        .enumerate()
    {
        let mut cmd = Command::new(edge_binary());
        cmd.arg("passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        cmd.arg("--password-stdin").arg(&file).arg(user);
        let out = run_with_stdin(&mut cmd, format!("{pw}\n").as_bytes());
        assert!(
            out.status.success(),
            "robustmq-edge passwd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    file
}

/// A password file from Debian's `mosquitto_passwd`, or None when it is not installed.
fn mosquitto_passwd(dir: &Path) -> Option<PathBuf> {
    let tool = Path::new("/usr/bin/mosquitto_passwd");
    if !tool.exists() {
        eprintln!("mosquitto_passwd not installed: skipping its password file");
        return None;
    }
    let file = dir.join("passwd-mosquitto");
    for (i, (user, pw)) in [("app", "app-secret"), ("s1", "s1-secret")]
        .iter()
        .enumerate()
    {
        let mut cmd = Command::new(tool);
        if i == 0 {
            cmd.arg("-c");
        }
        let st = cmd.arg("-b").arg(&file).arg(user).arg(pw).status();
        assert!(st.expect("run mosquitto_passwd").success());
    }
    Some(file)
}

struct AuthBroker {
    broker: Broker,
    _dir: tempfile::TempDir,
    acl_path: PathBuf,
}

fn start(passwd: impl FnOnce(&Path) -> Option<PathBuf>, process: bool) -> Option<AuthBroker> {
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = passwd(dir.path())?;
    let acl_path = dir.path().join("acl");
    std::fs::write(&acl_path, ACL).expect("write acl");
    let text = format!(
        "[[listeners]]\nbind = \"127.0.0.1:1883\"\nallow_anonymous = false\n\n\
         [auth]\npassword_file = {:?}\nacl_file = {:?}\n",
        pw.display().to_string(),
        acl_path.display().to_string()
    );
    let broker = Broker::builder()
        .config_text(text)
        .in_process(!process)
        .start();
    Some(AuthBroker {
        broker,
        _dir: dir,
        acl_path,
    })
}

/// [`start`] with the password file of `robustmq-edge passwd` (always available).
fn start_edge_passwd(process: bool) -> AuthBroker {
    start(|d| Some(edge_passwd(d)), process).expect("broker")
}

/// Runs `body` within `TEST_LIMIT` against [`start_edge_passwd`]`(process)`.
async fn with_acl_broker(process: bool, body: impl AsyncFnOnce(&AuthBroker)) {
    let ab = start_edge_passwd(process);
    within(TEST_LIMIT, "test", body(&ab)).await
}

/// The MQTT 5 client `app`, logged in as the user `app`.
async fn app_v5(b: &Broker) -> V5Client {
    V5Client::connect_with(v5(b, "app", Some(("app", "app-secret")))).await
}

/// [`app_v5`] subscribed to `#` at QoS 1: it receives whatever its ACL lets it read.
async fn app_reading_all(b: &Broker) -> V5Client {
    let mut app = app_v5(b).await;
    app.subscribe_ok("#", Q5::AtLeastOnce).await;
    app
}

/// Client `id` of the sensor user `s1` (MQTT 5), which the ACL lets write `sensors/s1/#`.
async fn s1_v5(b: &Broker, id: &str) -> V5Client {
    V5Client::connect_with(v5(b, id, Some(("s1", "s1-secret")))).await
}

/// Client `id` of the sensor user `s1` (MQTT 3.1.1).
async fn s1_v3(b: &Broker, id: &str) -> V3Client {
    V3Client::connect_with(v3(b, id, Some(("s1", "s1-secret")))).await
}

fn v3(b: &Broker, id: &str, user: Option<(&str, &str)>) -> rumqttc::MqttOptions {
    let mut o = v3_options(b, id, true);
    if let Some((u, p)) = user {
        o.set_credentials(u, p);
    }
    o
}

fn v5(b: &Broker, id: &str, user: Option<(&str, &str)>) -> rumqttc::v5::MqttOptions {
    let mut o = v5_options(b, id);
    if let Some((u, p)) = user {
        o.set_credentials(u, p);
    }
    o
}

async fn refusals(b: &Broker) {
    let wrong_password = V3Client::try_connect_with(v3(b, "x1", Some(("s1", "wrong")))).await;
    assert_refused(wrong_password, "BadUserNamePassword", "v3 wrong password");
    let anonymous = V3Client::try_connect_with(v3(b, "x2", None)).await;
    assert_refused(anonymous, "NotAuthorized", "v3 anonymous");
    let unknown_user = V5Client::try_connect_with(v5(b, "x3", Some(("nobody", "x")))).await;
    assert_refused(unknown_user, "BadUserNamePassword", "v5 unknown user");
    let anonymous = V5Client::try_connect_with(v5(b, "x4", None)).await;
    assert_refused(anonymous, "NotAuthorized", "v5 anonymous");
}

#[tokio::test]
async fn both_password_file_formats_authenticate_and_refuse_with_the_right_codes() {
    let makers: [fn(&Path) -> Option<PathBuf>; 2] = [|d| Some(edge_passwd(d)), mosquitto_passwd];
    for make in makers {
        let Some(ab) = start(make, true) else {
            continue;
        };
        let b = &ab.broker;
        within(TEST_LIMIT, "test", async {
            let c = s1_v3(b, "s1").await;
            c.disconnect().await;
            let c = app_v5(b).await;
            c.disconnect().await;
            refusals(b).await;
        })
        .await;
        let log = b.log();
        assert!(
            !log.contains("s1-secret") && !log.contains("wrong"),
            "no password in the log"
        );
    }
}

#[tokio::test]
async fn acl_filters_publish_subscribe_retained_routed_and_wills() {
    with_acl_broker(false, async |ab| {
        let b = &ab.broker;
        // The app reads everything it may under `#`.
        let mut app = app_reading_all(b).await;
        let mut app3 = V3Client::connect_with(v3(b, "app3", Some(("app", "app-secret")))).await;
        app3.subscribe_ok("#", QoS::AtLeastOnce).await;
        // A subscription to a denied topic: SUBACK 0x87 (v5) / 0x80 (v3).
        let codes = app.subscribe("test/nosubscribe", Q5::AtLeastOnce).await;
        assert_eq!(codes, vec![v5bytes::SubscribeReasonCode::NotAuthorized]);
        let codes = app3.subscribe("test/nosubscribe", QoS::AtLeastOnce).await;
        assert_eq!(codes, vec![rumqttc::SubscribeReasonCode::Failure]);

        // The sensor writes under its own name only; v3 denials are acknowledged and dropped.
        let mut s1 = s1_v3(b, "s1c").await;
        s1.publish("sensors/s1/t", QoS::AtLeastOnce, false, "ok")
            .await;
        s1.publish("sensors/s2/t", QoS::AtLeastOnce, false, "spoof")
            .await;
        s1.publish("apps/cmd", QoS::AtLeastOnce, false, "spoof")
            .await;
        s1.publish("$SYS/x", QoS::AtMostOnce, false, "spoof").await;
        let p = app.recv(WAIT).await;
        assert_eq!(
            (&p.topic[..], &p.payload[..]),
            (&b"sensors/s1/t"[..], &b"ok"[..])
        );
        app.expect_no_publish(QUIET, "denied publishes are dropped")
            .await;
        assert_eq!(app3.recv(WAIT).await.topic, "sensors/s1/t");

        // v5: PUBACK 0x87 for a denied QoS 1 publish.
        let mut s1v5 = s1_v5(b, "s1v5").await;
        s1v5.client
            .publish("apps/cmd", Q5::AtLeastOnce, false, "spoof")
            .await
            .expect("queue");
        let ack = s1v5
            .events
            .wait_for("PUBACK", WAIT, |e| match e {
                rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(a)) => {
                    Some(a.reason)
                }
                _ => None,
            })
            .await;
        assert_eq!(ack, rumqttc::v5::mqttbytes::v5::PubAckReason::NotAuthorized);

        // The sensor subscribes to `#` but reads only what it may (test/...), live and retained.
        app.publish("apps/secret", Q5::AtLeastOnce, true, "retained secret")
            .await;
        app.publish("test/open", Q5::AtLeastOnce, true, "retained open")
            .await;
        let mut s1sub = s1_v5(b, "s1sub").await;
        s1sub.subscribe_ok("#", Q5::AtLeastOnce).await;
        let p = s1sub.recv(WAIT).await;
        assert_eq!(&p.topic[..], b"test/open");
        s1sub
            .expect_no_publish(QUIET, "no retained message it may not read")
            .await;
        app.publish("apps/live", Q5::AtLeastOnce, false, "x").await;
        s1v5.publish("sensors/s1/live", Q5::AtLeastOnce, false, "x")
            .await;
        s1sub
            .expect_no_publish(QUIET, "no routed message it may not read")
            .await;

        // Wills: published only where the client may write.
        for (id, topic, payload) in [
            ("w1", "apps/will", "bad will"),
            ("w2", "sensors/s1/will", "good will"),
        ] {
            let mut o = v3(b, id, Some(("s1", "s1-secret")));
            o.set_last_will(LastWill::new(topic, payload, QoS::AtLeastOnce, false));
            V3Client::connect_with(o).await.drop_connection();
        }
        let mut got = Vec::new();
        while let Some(p) = app.try_recv(Duration::from_secs(2)).await {
            got.push(String::from_utf8_lossy(&p.topic).to_string());
        }
        assert!(got.contains(&"sensors/s1/will".to_string()), "{got:?}");
        assert!(!got.contains(&"apps/will".to_string()), "{got:?}");
        for c in [app, s1v5, s1sub] {
            c.disconnect().await;
        }
        app3.disconnect().await;
        s1.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn sighup_reloads_the_acl_without_dropping_connections_and_keeps_it_when_broken() {
    with_acl_broker(true, async |ab| {
        let b = &ab.broker;
        let mut app = app_reading_all(b).await;
        let mut s1 = s1_v5(b, "s1").await;
        s1.publish("sensors/s1/a", Q5::AtLeastOnce, false, "1")
            .await;
        assert_eq!(&app.recv(WAIT).await.topic[..], b"sensors/s1/a");

        // A broken ACL: the old one stays, the error names file and line.
        std::fs::write(&ab.acl_path, format!("{ACL}topic bogus x\n")).expect("write");
        hup(b).await;
        assert!(b.log().contains("ACL file not reloaded"), "{}", b.log());
        assert!(b.log().contains("line 8"), "the error names the line");
        s1.publish("sensors/s1/b", Q5::AtLeastOnce, false, "2")
            .await;
        assert_eq!(&app.recv(WAIT).await.topic[..], b"sensors/s1/b");

        // A new ACL taking write away from sensors: live connections follow it.
        std::fs::write(
            &ab.acl_path,
            ACL.replace("pattern write sensors/%u/#\n", ""),
        )
        .expect("write");
        hup(b).await;
        s1.client
            .publish("sensors/s1/c", Q5::AtLeastOnce, false, "3")
            .await
            .expect("queue");
        app.expect_no_publish(QUIET, "write revoked by the reload")
            .await;
        app.disconnect().await;
        s1.disconnect().await;
    })
    .await;
}

/// Sends SIGHUP and waits until the broker logged the end of that reload.
async fn hup(b: &Broker) {
    let before = b.log().matches("reload done").count();
    // SAFETY: signalling our own child process.
    let rc = unsafe { libc::kill(b.pid() as i32, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP");
    for _ in 0..200 {
        if b.log().matches("reload done").count() > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no reload in the log:\n{}", b.log());
}

/// A persistent session keeps its user's read rights across a broker restart: a message
/// published while its client is away (after the restart) is queued for it.
#[tokio::test]
async fn a_restored_persistent_session_is_routed_under_its_users_acl() {
    let mut ab = start_edge_passwd(false);
    within(TEST_LIMIT, "test", async {
        let b = &ab.broker;
        let mut o = v3_options(b, "app-persistent", false);
        o.set_credentials("app", "app-secret");
        let mut app = V3Client::connect_with(o).await;
        app.subscribe_ok("#", QoS::AtLeastOnce).await;
        app.disconnect().await;
    })
    .await;
    ab.broker.stop();
    ab.broker.restart();
    within(TEST_LIMIT, "test", async {
        let b = &ab.broker;
        let mut s1 = s1_v3(b, "s1-after").await;
        s1.publish("sensors/s1/t", QoS::AtLeastOnce, false, "queued")
            .await;
        let mut o = v3_options(b, "app-persistent", false);
        o.set_credentials("app", "app-secret");
        let mut app = V3Client::connect_with(o).await;
        let p = app.recv(Duration::from_secs(5)).await;
        assert_eq!(
            (&*p.topic, &p.payload[..]),
            ("sensors/s1/t", &b"queued"[..])
        );
    })
    .await;
}

/// `tests/conformance/edge.toml` is what the Eclipse Paho conformance suite runs against:
/// its `test_subscribe_failure` asserts 0x80 for `test/nosubscribe` in MQTT 5 as in 3.1.1
/// (`deny_reason = "unspecified"`), while every other topic stays open.
#[tokio::test]
async fn the_conformance_config_refuses_test_nosubscribe_with_0x80_in_v5_and_v3() {
    let root = workspace_root();
    let acl = root.join("tests/conformance/acl");
    let text = std::fs::read_to_string(root.join("tests/conformance/edge.toml"))
        .expect("read tests/conformance/edge.toml")
        .replace(
            "\"tests/conformance/acl\"",
            &format!("{:?}", acl.display().to_string()),
        );
    let b = Broker::builder().config_text(text).start();
    within(TEST_LIMIT, "test", async {
        let mut c5 = V5Client::connect(&b, "conformance-v5").await;
        let codes = c5.subscribe("test/nosubscribe", Q5::ExactlyOnce).await;
        assert_eq!(codes, vec![v5bytes::SubscribeReasonCode::Unspecified]);
        c5.subscribe_ok("TopicA/#", Q5::ExactlyOnce).await;
        let mut c3 = V3Client::connect(&b, "conformance-v3", true).await;
        let codes = c3.subscribe("test/nosubscribe", QoS::ExactlyOnce).await;
        assert_eq!(codes, vec![rumqttc::SubscribeReasonCode::Failure]);
        c3.subscribe_ok("TopicA/#", QoS::ExactlyOnce).await;
    })
    .await;
}
