use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use futures_lite::FutureExt;
use mqtt_proto::Protocol;

use crate::broker::Broker;
use crate::connection::{inbound::PANIC_TOPIC, test_support};

/// Serves the next connection of `listener` on a thread of its own, with a keep-alive sweep
/// (the server runs the broker's one; several sweeping at once only nudge more often).
fn serve_next(broker: &Arc<Broker>, listener: &TcpListener) -> std::thread::JoinHandle<()> {
    let fut = test_support::serve_accepted(broker, listener);
    let broker = broker.clone();
    std::thread::spawn(move || {
        smol::block_on(fut.or(async move { broker.keep_alives.run().await }))
    })
}

/// MQTT 3.1.1 CONNECT of a persistent session (clean session 0, keep alive 0), with a
/// retained will on `will/<id>` when `will` is set.
fn connect_packet(id: &str, will: bool) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04];
    body.push(if will { 0x24 } else { 0x00 });
    body.extend_from_slice(&[0, 0]);
    let mut field = |b: &[u8]| {
        body.extend_from_slice(&(b.len() as u16).to_be_bytes());
        body.extend_from_slice(b);
    };
    field(id.as_bytes());
    if will {
        field(format!("will/{id}").as_bytes());
        field(b"gone");
    }
    let mut p = vec![0x10, body.len() as u8];
    p.extend_from_slice(&body);
    p
}

/// Connects and sends CONNECT (the CONNACK comes once the connection is served).
fn connect(addr: std::net::SocketAddr, id: &str, will: bool) -> TcpStream {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(&connect_packet(id, will)).expect("CONNECT");
    c
}

/// Reads a CONNACK Success; whether it says session present.
fn read_connack(c: &mut TcpStream) -> bool {
    let mut ack = [0u8; 4];
    c.read_exact(&mut ack).expect("CONNACK");
    assert_eq!(
        [ack[0], ack[1], ack[3]],
        [0x20, 0x02, 0x00],
        "CONNACK {ack:?}"
    );
    ack[2] == 1
}

/// The connection's block holds its places under `limits.max_connections` and
/// `limits.max_connections_per_ip` (handed over by the permits) and gives both back when
/// the connection ends.
#[test]
fn an_ended_connection_gives_back_its_places_under_both_connection_limits() {
    let t = test_support::conn(Protocol::V311, false);
    let broker = t.conn.broker.clone();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let ip = addr.ip();
    let per_ip = broker.live.max_connections_per_ip();
    // Every place of 127.0.0.1 but one taken: the connection takes the last one.
    let others: Vec<_> = (1..per_ip)
        .map(|_| broker.try_acquire_ip(ip).expect("a place"))
        .collect();

    let mut c = connect(addr, "places", false);
    let task = serve_next(&broker, &listener);
    assert!(!read_connack(&mut c));
    assert_eq!(broker.connections.active(), 1);
    assert!(
        broker.try_acquire_ip(ip).is_none(),
        "the connection holds the last place"
    );
    drop(c);
    task.join().expect("connection task");
    assert_eq!(broker.connections.active(), 0);
    let again = broker.try_acquire_ip(ip);
    assert!(again.is_some(), "its place is free again");
    drop((again, others));
}

/// A clean MQTT 3.1.1 client "ka" with a keep-alive of 1 s, served on a thread of its own,
/// its CONNACK read.
fn connect_with_keep_alive_1s(broker: &Arc<Broker>) -> (TcpStream, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut c = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(&[
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 1, 0, 2, b'k', b'a',
    ])
    .expect("CONNECT");
    let task = serve_next(broker, &listener);
    assert!(!read_connack(&mut c));
    (c, task)
}

/// Deliveries wake the connection but are not input: a client that only receives still
/// times out one and a half keep-alive periods after its last packet.
#[test]
fn deliveries_do_not_count_as_keep_alive_activity() {
    use crate::message::Message;
    use std::time::{Duration, Instant};

    let t = test_support::conn(Protocol::V311, false);
    let broker = t.conn.broker.clone();
    let (mut c, task) = connect_with_keep_alive_1s(&broker);
    c.write_all(&[0x82, 9, 0, 1, 0, 4, b'k', b'a', b'/', b't', 0])
        .expect("SUBSCRIBE");
    let mut suback = [0u8; 5];
    c.read_exact(&mut suback).expect("SUBACK");
    let last_input = Instant::now();
    let publisher = {
        let broker = broker.clone();
        std::thread::spawn(move || {
            while last_input.elapsed() < Duration::from_secs(5) {
                let msg = Message::test("ka/t", bytes::Bytes::from_static(b"x"), 0, "test");
                smol::block_on(broker.publish(Arc::new(msg), None));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut received = 0;
    let mut buf = [0u8; 256];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    let closed_after = last_input.elapsed();
    task.join().expect("connection task");
    publisher.join().expect("publisher");
    assert!(received >= 5 * 9, "deliveries arrived: {received} bytes");
    // 1.5 s of keep-alive, then up to 0.5 s of graceful close.
    assert!(
        closed_after >= Duration::from_millis(1400) && closed_after < Duration::from_secs(3),
        "closed {closed_after:?} after the last input"
    );
}

/// A panic in a connection's task is caught: counted, the session detached as for a broken
/// connection (the will published, the persistent session kept), the socket closed, and the
/// client gets its session back when it reconnects.
#[test]
fn a_panicking_connection_detaches_its_session_and_the_client_can_resume_it() {
    let t = test_support::conn(Protocol::V311, false);
    let broker = t.conn.broker.clone();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");

    let mut c = connect(addr, "panicky", true);
    let task = serve_next(&broker, &listener);
    assert!(!read_connack(&mut c), "a new session");
    assert_eq!(broker.gauges().sessions_online, 1);
    // A QoS 0 PUBLISH on the topic whose handler panics (test builds only).
    let topic = PANIC_TOPIC.as_bytes();
    let mut publish = vec![0x30, (2 + topic.len() + 1) as u8, 0, topic.len() as u8];
    publish.extend_from_slice(topic);
    publish.push(b'!');
    c.write_all(&publish).expect("PUBLISH");
    task.join()
        .expect("the panic does not escape the connection's task");
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed without a packet: {rest:?}");

    assert_eq!(broker.stats.counters().connection_panics, 1);
    let g = broker.gauges();
    assert_eq!(g.sessions_online, 0, "the session is detached");
    assert_eq!(g.sessions_offline_persistent, 1, "and kept");
    assert_eq!(g.retained_messages, 1, "the will (retained) was published");

    let mut again = connect(addr, "panicky", false);
    let task = serve_next(&broker, &listener);
    assert!(read_connack(&mut again), "session present");
    assert_eq!(broker.gauges().sessions_online, 1);
    drop(again);
    task.join().expect("connection task");
    assert_eq!(broker.stats.counters().connection_panics, 1);
}

/// A connection that sends nothing after its CONNECT is closed by the sweep one and a half
/// keep-alive periods later, and leaves the sweep when it ends.
#[test]
fn a_silent_client_is_closed_by_the_sweep_and_leaves_it() {
    use std::time::{Duration, Instant};

    let t = test_support::conn(Protocol::V311, false);
    let broker = t.conn.broker.clone();
    let (mut c, task) = connect_with_keep_alive_1s(&broker);
    let connected = Instant::now();
    let mut buf = [0u8; 16];
    let n = c.read(&mut buf).unwrap_or(0);
    let closed_after = connected.elapsed();
    task.join().expect("connection task");
    assert_eq!(n, 0, "closed without a packet (3.1.1): {:?}", &buf[..n]);
    assert!(
        closed_after >= Duration::from_millis(1400) && closed_after < Duration::from_secs(3),
        "closed {closed_after:?} after the CONNACK"
    );
    assert_eq!(broker.keep_alives.watched(), 0, "it left the sweep");
}
