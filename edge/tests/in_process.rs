//! The broker started inside the test process (`server::start`) on `127.0.0.1:0`: MQTT 3.1.1
//! clients speaking raw packets publish and subscribe, `Running::shutdown` stops it, and the
//! data folder it leaves is cleanly closed and serves the next broker started on it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use robustmq_edge::config::{Config, ListenerConfig};
use robustmq_edge::server::{self, Running};

mod common;
use common::{mqtt_str, packet, read_packet};

const WAIT: Duration = Duration::from_secs(10);

fn config(data_dir: &Path) -> Config {
    Config {
        data_dir: data_dir.to_path_buf(),
        listeners: vec![ListenerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..ListenerConfig::default()
        }],
        ..Config::default()
    }
}

fn start(data_dir: &Path) -> Running {
    let broker = server::start(config(data_dir)).expect("broker starts in process");
    assert_eq!(broker.addrs().len(), 1);
    assert_ne!(broker.addrs()[0].port(), 0, "port 0 is resolved");
    broker
}

/// MQTT 3.1.1 CONNECT; returns the stream and the CONNACK's session-present flag.
fn connect(addr: SocketAddr, client_id: &str, clean: bool) -> (TcpStream, bool) {
    let mut s = TcpStream::connect(addr).expect("tcp connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut body = mqtt_str("MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(if clean { 0x02 } else { 0x00 });
    body.extend_from_slice(&60u16.to_be_bytes());
    body.extend_from_slice(&mqtt_str(client_id));
    s.write_all(&packet(0x10, &body)).unwrap();
    let (h, ack) = read_packet(&mut s);
    assert_eq!((h, ack.len(), ack[1]), (0x20, 2, 0), "CONNACK accepted");
    (s, ack[0] & 1 == 1)
}

fn subscribe(s: &mut TcpStream, pid: u16, filter: &str, qos: u8) {
    let mut body = pid.to_be_bytes().to_vec();
    body.extend_from_slice(&mqtt_str(filter));
    body.push(qos);
    s.write_all(&packet(0x82, &body)).unwrap();
    let (h, ack) = read_packet(s);
    assert_eq!(h, 0x90, "SUBACK");
    assert_eq!(ack, [&pid.to_be_bytes()[..], &[qos]].concat());
}

/// QoS 1 publish, waiting for its PUBACK (sent only once the message is on disk).
fn publish_qos1(s: &mut TcpStream, pid: u16, topic: &str, payload: &[u8]) {
    let mut body = mqtt_str(topic);
    body.extend_from_slice(&pid.to_be_bytes());
    body.extend_from_slice(payload);
    s.write_all(&packet(0x32, &body)).unwrap();
    let (h, ack) = read_packet(s);
    assert_eq!((h, ack), (0x40, pid.to_be_bytes().to_vec()), "PUBACK");
}

/// Receives a QoS 1 PUBLISH, acknowledges it, returns (topic, payload).
fn receive_qos1(s: &mut TcpStream) -> (String, Vec<u8>) {
    let (h, body) = read_packet(s);
    assert_eq!(h & 0xf6, 0x32, "QoS 1 PUBLISH, got {h:#x}");
    let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
    let topic = String::from_utf8(body[2..2 + tlen].to_vec()).unwrap();
    let pid = &body[2 + tlen..4 + tlen];
    s.write_all(&packet(0x40, pid)).unwrap();
    (topic, body[4 + tlen..].to_vec())
}

fn disconnect(mut s: TcpStream) {
    s.write_all(&[0xe0, 0x00]).unwrap();
}

/// redb's read-only open refuses (`RepairAborted`) a file that was not closed cleanly.
fn assert_closed_cleanly(data_dir: &Path) {
    redb::ReadOnlyDatabase::open(data_dir.join("edge.redb")).expect("database closed cleanly");
}

/// Starts the broker on `data_dir`, runs `clients` against its address, shuts the broker down
/// and checks that it closed its database cleanly; gives back what `clients` returned.
fn serve_once<T>(data_dir: &Path, clients: impl FnOnce(SocketAddr) -> T) -> T {
    let out = smol::block_on(async {
        let broker = start(data_dir);
        let out = clients(broker.addrs()[0]);
        broker.shutdown().await.expect("clean shutdown");
        out
    });
    assert_closed_cleanly(data_dir);
    out
}

#[test]
fn publish_subscribe_then_clean_shutdown_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut sub = serve_once(dir.path(), |addr| {
        let (mut sub, present) = connect(addr, "sub", true);
        assert!(!present);
        subscribe(&mut sub, 1, "sensors/+/temp", 1);
        let (mut publisher, _) = connect(addr, "pub", true);
        publish_qos1(&mut publisher, 7, "sensors/a/temp", b"21.5");
        assert_eq!(
            receive_qos1(&mut sub),
            ("sensors/a/temp".to_string(), b"21.5".to_vec())
        );
        disconnect(publisher);
        // `sub` stays connected: shutdown must disconnect it and still close the file.
        sub
    });
    // The server closed the client's socket on the way out.
    let mut rest = Vec::new();
    let _ = sub.read_to_end(&mut rest);
    // The same folder serves again.
    serve_once(dir.path(), |addr| {
        disconnect(connect(addr, "again", true).0)
    });
}

#[test]
fn persistent_session_and_its_queue_survive_an_in_process_restart() {
    let dir = tempfile::tempdir().unwrap();
    serve_once(dir.path(), |addr| {
        let (mut s, _) = connect(addr, "keeper", false);
        subscribe(&mut s, 1, "orders/#", 1);
        disconnect(s);
        // Queued for the offline persistent session, on disk before the PUBACK.
        let (mut p, _) = connect(addr, "pos", true);
        publish_qos1(&mut p, 1, "orders/42", b"paid");
        disconnect(p);
    });
    serve_once(dir.path(), |addr| {
        let (mut s, present) = connect(addr, "keeper", false);
        assert!(present, "session restored from the data folder");
        assert_eq!(
            receive_qos1(&mut s),
            ("orders/42".to_string(), b"paid".to_vec())
        );
        disconnect(s);
    });
}

#[test]
fn start_reports_a_busy_address_and_leaves_no_broker_running() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = config(dir.path());
    cfg.listeners[0].bind = taken.local_addr().unwrap();
    let err = match server::start(cfg) {
        Ok(_) => panic!("started on a port already in use"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("listeners.bind"), "{err}");
    // Nothing holds the database: a second broker opens it right away.
    smol::block_on(async { start(dir.path()).shutdown().await.expect("clean shutdown") });
    assert_closed_cleanly(dir.path());
}
