//! Listeners with `proxy_protocol = true` (in process): the client a PROXY header names is the
//! connection's address for the per-IP limit; a connection without a header, or from a peer
//! outside `trusted_proxies`, is refused before MQTT.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use robustmq_edge::config::{Config, ListenerConfig};
use robustmq_edge::server::{self, Running};

mod common;
use common::{mqtt_str, packet, read_packet};

const WAIT: Duration = Duration::from_secs(10);

fn start(trusted: &[&str]) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config {
        data_dir: dir.path().to_path_buf(),
        listeners: vec![ListenerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            proxy_protocol: true,
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            ..ListenerConfig::default()
        }],
        ..Config::default()
    };
    cfg.limits.max_connections_per_ip = 1;
    cfg.limits.connect_timeout_secs = 2;
    (server::start(cfg).expect("broker starts"), dir)
}

/// Sends `header` then an MQTT 3.1.1 CONNECT; returns the CONNACK's return code, or None when
/// the broker closed the connection without one.
fn connect_via(addr: SocketAddr, header: &[u8], client_id: &str) -> (TcpStream, Option<u8>) {
    let mut s = TcpStream::connect(addr).expect("tcp connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut body = mqtt_str("MQTT");
    body.extend([4, 0x02]);
    body.extend(60u16.to_be_bytes());
    body.extend(mqtt_str(client_id));
    let mut bytes = header.to_vec();
    bytes.extend(packet(0x10, &body));
    // The broker may close before reading it all (refused): that is the answer, not an error.
    let _ = s.write_all(&bytes);
    let mut first = [0u8; 1];
    match s.read(&mut first) {
        Ok(1) => {
            assert_eq!(first[0], 0x20, "CONNACK");
            let mut rest = [0u8; 3];
            s.read_exact(&mut rest).unwrap();
            (s, Some(rest[2]))
        }
        _ => (s, None),
    }
}

fn v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 40000 1883\r\n").into_bytes()
}

#[test]
fn per_ip_limits_count_the_client_the_proxy_protocol_header_names() {
    let (broker, _dir) = start(&[]);
    let addr = broker.addrs()[0];
    // One connection per client address (max_connections_per_ip = 1), though all come from
    // 127.0.0.1: the header's source is what counts.
    let (_a, code) = connect_via(addr, &v1("192.0.2.1"), "a");
    assert_eq!(code, Some(0));
    let (_b, code) = connect_via(addr, &v1("192.0.2.2"), "b");
    assert_eq!(code, Some(0));
    let (_c, code) = connect_via(addr, &v1("192.0.2.1"), "c");
    assert_eq!(
        code,
        Some(3),
        "a second connection of 192.0.2.1: server unavailable"
    );
    // A health check of the proxy (UNKNOWN) is the proxy's own address, 127.0.0.1.
    let (mut d, code) = connect_via(addr, b"PROXY UNKNOWN\r\n", "d");
    assert_eq!(code, Some(0));
    d.write_all(&packet(0xc0, &[])).unwrap();
    let (h, _) = read_packet(&mut d);
    assert_eq!(h, 0xd0, "PINGRESP: MQTT runs after the header");
}

#[test]
fn a_connection_without_a_proxy_protocol_header_is_refused() {
    let (broker, _dir) = start(&[]);
    let (_s, code) = connect_via(broker.addrs()[0], b"", "direct");
    assert_eq!(code, None, "closed without a CONNACK");
}

#[test]
fn a_peer_outside_the_trusted_proxies_is_refused_before_its_header_is_read() {
    let (broker, _dir) = start(&["10.0.0.0/8"]);
    let (_s, code) = connect_via(broker.addrs()[0], &v1("192.0.2.1"), "from-loopback");
    assert_eq!(code, None, "127.0.0.1 is not in 10.0.0.0/8");
    let (broker, _dir) = start(&["127.0.0.1"]);
    let (_s, code) = connect_via(broker.addrs()[0], &v1("192.0.2.1"), "trusted");
    assert_eq!(code, Some(0));
}
