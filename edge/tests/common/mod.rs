//! Helpers shared by the broker's integration tests in `edge/tests/`: raw MQTT packet building and
//! splitting (the var-int is `edge_mqtt::frame`'s, the one the broker uses), free loopback ports
//! and rustls client configurations trusting a test CA. Each test binary uses only part of it.
#![allow(dead_code)]

use std::io::Read;
use std::sync::Arc;

use edge_mqtt::frame::{read_var_int, write_var_int};

// Each test binary uses only part of them.
#[allow(unused_imports)]
pub use test_support::{free_port, run_with_stdin, wait_port, wait_port_or};

/// An MQTT string: two length bytes, then the bytes.
pub fn mqtt_str(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// Fixed header byte + remaining length (var-int) + body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    write_var_int(body.len(), &mut v);
    v.extend_from_slice(body);
    v
}

/// Splits one whole packet, (first byte, body), off the front of `buf`, if there is one.
pub fn take_packet(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    let &first = buf.first()?;
    let (used, len) = read_var_int(&buf[1..])?;
    let (start, end) = (1 + used, 1 + used + len as usize);
    if buf.len() < end {
        return None;
    }
    let body = buf[start..end].to_vec();
    buf.drain(..end);
    Some((first, body))
}

/// Reads one packet from a blocking stream: (first byte, body).
pub fn read_packet(s: &mut impl Read) -> (u8, Vec<u8>) {
    let mut buf = Vec::new();
    loop {
        if let Some(p) = take_packet(&mut buf) {
            return p;
        }
        // Header byte by byte until the remaining length is known, then the whole body.
        let want = match buf.get(1..).and_then(read_var_int) {
            Some((used, len)) => 1 + used + len as usize - buf.len(),
            None => 1,
        };
        let mut more = vec![0u8; want];
        s.read_exact(&mut more).expect("read packet");
        buf.extend_from_slice(&more);
    }
}

/// A client certificate chain and its key (DER).
pub type Identity = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// The identity in a certificate PEM and a key PEM.
pub fn pem_identity(cert_pem: &str, key_pem: &str) -> Identity {
    let chain = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .unwrap()
        .unwrap();
    (chain, key)
}

/// A rustls client trusting the CA in `ca_pem`, presenting `identity` when given.
pub fn tls_client_config(ca_pem: &str, identity: Option<Identity>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
    })
}
