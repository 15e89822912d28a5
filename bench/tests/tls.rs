//! `edge-bench --tls-ca` against the real broker: MQTT over TLS and wss:// carry a measured run
//! with nothing lost, and a certificate that does not chain to the given CA fails the run with
//! the reason. The broker binary (`robustmq-edge`, built beside this one) is started here with a
//! certificate for 127.0.0.1 made by the test.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

const BENCH: &str = env!("CARGO_BIN_EXE_edge-bench");

/// The broker built with this crate's binary (same target folder).
fn broker_binary() -> PathBuf {
    let p = Path::new(BENCH).with_file_name("robustmq-edge");
    assert!(
        p.exists(),
        "{} missing: build it first (cargo build -p robustmq-edge)",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A CA certificate (PEM) and a server certificate with its key for 127.0.0.1, signed by it.
fn pki() -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), server.pem(), key.serialize_pem())
}

struct Broker {
    child: Child,
    mqtts: u16,
    wss: u16,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The broker with a TLS MQTT listener and a wss:// one, both with the certificate in `dir`.
fn start(dir: &Path) -> Broker {
    let (mqtts, wss, http) = (free_port(), free_port(), free_port());
    let d = dir.display();
    let tls =
        format!("[listeners.tls]\ncert_file = \"{d}/server.pem\"\nkey_file = \"{d}/server.key\"\n");
    let config = format!(
        "data_dir = \"{d}/data\"\n\
         [[listeners]]\nbind = \"127.0.0.1:{mqtts}\"\n{tls}\
         [[listeners]]\nbind = \"127.0.0.1:{wss}\"\nkind = \"websocket\"\n{tls}\
         [http]\nbind = \"127.0.0.1:{http}\"\n"
    );
    std::fs::write(dir.join("edge.toml"), config).unwrap();
    let child = Command::new(broker_binary())
        .arg("--config")
        .arg(dir.join("edge.toml"))
        .stdout(std::fs::File::create(dir.join("broker.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("broker.err")).unwrap())
        .spawn()
        .expect("start the broker");
    let broker = Broker { child, mqtts, wss };
    for port in [mqtts, wss] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "broker not listening on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    broker
}

fn bench(args: &[&str]) -> Output {
    Command::new(BENCH)
        .args(args)
        .output()
        .expect("run edge-bench")
}

/// The JSON line of a `--json` run.
fn json(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_measured_run_over_tls_and_over_wss_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki();
    std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
    std::fs::write(dir.path().join("server.pem"), cert).unwrap();
    std::fs::write(dir.path().join("server.key"), key).unwrap();
    let broker = start(dir.path());
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    for (port, extra) in [(broker.mqtts, None), (broker.wss, Some("/mqtt"))] {
        let port = port.to_string();
        let mut args = vec![
            "throughput",
            "--port",
            &port,
            "--tls-ca",
            ca,
            "--qos",
            "1",
            "--messages",
            "2000",
            "--json",
        ];
        if let Some(path) = extra {
            args.extend(["--websocket", path]);
        }
        let out = bench(&args);
        let line = json(&out);
        assert!(
            out.status.success(),
            "{args:?}: {line} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for want in [
            "\"received\":2000",
            "\"missing\":0",
            "\"duplicates\":0",
            "\"valid\":true",
        ] {
            assert!(line.contains(want), "{args:?}: no {want} in {line}");
        }
    }
}

#[test]
fn a_certificate_not_from_the_given_ca_fails_the_run_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = pki();
    let (other_ca, _, _) = pki();
    std::fs::write(dir.path().join("other-ca.pem"), other_ca).unwrap();
    std::fs::write(dir.path().join("server.pem"), cert).unwrap();
    std::fs::write(dir.path().join("server.key"), key).unwrap();
    let broker = start(dir.path());
    let port = broker.mqtts.to_string();
    let ca = dir.path().join("other-ca.pem");
    let out = bench(&[
        "throughput",
        "--port",
        &port,
        "--tls-ca",
        ca.to_str().unwrap(),
        "--messages",
        "10",
        "--deadline-secs",
        "20",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    // (rcgen's CAs share an empty name: the chain is found and its signature is wrong.)
    assert!(
        text.contains("TLS handshake with 127.0.0.1: invalid peer certificate"),
        "{text}"
    );
    // A file without a certificate is refused before any connection.
    let out = bench(&[
        "throughput",
        "--port",
        &port,
        "--tls-ca",
        dir.path().join("server.key").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no PEM certificate"));
}
