//! MQTT over TLS on a listener: plain TLS, mutual TLS, and bad key files named in the error.
//! Certificates are generated here; the broker binary is started as a user would start it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

mod common;
use common::{free_port, pem_identity, tls_client_config, wait_port};

struct Pki {
    ca_pem: String,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            ca,
            ca_key,
        }
    }

    /// Returns (certificate PEM, key PEM) for `name`, signed by the CA.
    fn issue(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &self.ca, &self.ca_key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `server.pem` and `server.key` (issued by `pki` for `localhost`) and `clients-ca.pem`
/// (the CA's certificate) into `dir`, for the `[listeners.tls]` tables of the tests.
fn write_server_files(dir: &Path, pki: &Pki) {
    let (cert, key) = pki.issue("localhost");
    std::fs::write(dir.join("server.pem"), cert).unwrap();
    std::fs::write(dir.join("server.key"), key).unwrap();
    std::fs::write(dir.join("clients-ca.pem"), &pki.ca_pem).unwrap();
}

struct Broker {
    child: Child,
    port: u16,
}

/// A broker whose one listener is TLS with the server files of a fresh `Pki` in a temporary
/// directory: `listener_keys` go in the listener table, `client_ca` asks for client certificates
/// of the Pki's CA, `tls_keys` go in the `tls` table. The directory lives as long as the broker.
fn start_tls(
    listener_keys: &str,
    client_ca: bool,
    tls_keys: &str,
) -> (tempfile::TempDir, Pki, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    write_server_files(dir.path(), &pki);
    let d = dir.path().display();
    let ca = if client_ca {
        format!("client_ca_file = \"{d}/clients-ca.pem\"\n")
    } else {
        String::new()
    };
    let table = format!(
        "{listener_keys}[listeners.tls]\ncert_file = \"{d}/server.pem\"\nkey_file = \"{d}/server.key\"\n{ca}{tls_keys}"
    );
    let broker = start(dir.path(), &table);
    (dir, pki, broker)
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, tls_table: &str) -> Broker {
    let port = free_port();
    let cfg = format!(
        "data_dir = \"{}\"\n[[listeners]]\nbind = \"127.0.0.1:{port}\"\n{tls_table}\n",
        dir.join("data").display()
    );
    let cfg_path = dir.join("edge.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_robustmq-edge"))
        .arg("--config")
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port, "broker");
    Broker { child, port }
}

fn client_config(ca_pem: &str, identity: Option<(String, String)>) -> Arc<rustls::ClientConfig> {
    tls_client_config(
        ca_pem,
        identity.map(|(cert, key)| pem_identity(&cert, &key)),
    )
}

/// Sends an MQTT 3.1.1 CONNECT over TLS; returns the CONNACK bytes or the error.
fn connect_over_tls(port: u16, cfg: Arc<rustls::ClientConfig>) -> Result<Vec<u8>, String> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let connect = [
        0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x04, b't',
        b'l', b's', b'1',
    ];
    tls.write_all(&connect).map_err(|e| e.to_string())?;
    let mut ack = [0u8; 4];
    tls.read_exact(&mut ack).map_err(|e| e.to_string())?;
    Ok(ack.to_vec())
}

#[test]
fn a_tls_listener_accepts_mqtt_from_a_client_that_trusts_its_ca() {
    let (_dir, pki, broker) = start_tls("", false, "");
    let ack = connect_over_tls(broker.port, client_config(&pki.ca_pem, None)).unwrap();
    assert_eq!(ack, vec![0x20, 0x02, 0x00, 0x00]);
    // A client trusting another CA is refused by its own verification.
    let other = Pki::new();
    assert!(connect_over_tls(broker.port, client_config(&other.ca_pem, None)).is_err());
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_configured_ca() {
    let (_dir, pki, broker) = start_tls("", true, "");
    assert!(
        connect_over_tls(broker.port, client_config(&pki.ca_pem, None)).is_err(),
        "a client without a certificate must not get a CONNACK"
    );
    let ack = connect_over_tls(
        broker.port,
        client_config(&pki.ca_pem, Some(pki.issue("sensor-1"))),
    )
    .unwrap();
    assert_eq!(ack, vec![0x20, 0x02, 0x00, 0x00]);
}

#[test]
fn a_missing_certificate_file_is_a_startup_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "data_dir = \"{0}/data\"\n[[listeners]]\nbind = \"127.0.0.1:{1}\"\n[listeners.tls]\ncert_file = \"{0}/nope.pem\"\nkey_file = \"{0}/nope.key\"\n",
        dir.path().display(),
        free_port()
    );
    std::fs::write(dir.path().join("edge.toml"), cfg).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_robustmq-edge"))
        .arg("--config")
        .arg(dir.path().join("edge.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listeners[0].tls.cert_file"), "{err}");
}

#[test]
fn use_identity_as_username_takes_the_user_from_the_certificate_common_name() {
    let (_dir, pki, broker) = start_tls(
        "allow_anonymous = false\n",
        true,
        "use_identity_as_username = true\n",
    );
    // A certificate naming `sensor-1` as its common name: accepted without a password.
    let named = {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["sensor-1".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sensor-1");
        let cert = params.signed_by(&key, &pki.ca, &pki.ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let ack = connect_over_tls(broker.port, client_config(&pki.ca_pem, Some(named))).unwrap();
    assert_eq!(ack, vec![0x20, 0x02, 0x00, 0x00]);
    // A certificate without a common name names no user: return code 4.
    let unnamed = {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["x".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.signed_by(&key, &pki.ca, &pki.ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let ack = connect_over_tls(broker.port, client_config(&pki.ca_pem, Some(unnamed))).unwrap();
    assert_eq!(ack, vec![0x20, 0x02, 0x00, 0x04]);
}
