//! A subscriber that stops reading must not hold the publishers it shares a topic with: its
//! queue fills to its bound and the rest is dropped for it alone, while the other subscribers
//! of the same publisher get every message (`edge/src/session/flow.rs`,
//! `limits.subscriber_stall_ms`). Before, each publish after the stuck subscriber's pause mark
//! waited the whole 5 s.

use std::time::Duration;

use edge_mqtt::frame::write_var_int;
use robustmq_edge_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// More than the stuck subscriber's socket buffers and queue mark hold (200-byte payloads).
const MESSAGES: usize = 40_000;
const TOPIC: &[u8] = b"stuck/t";

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    write_var_int(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

fn subscribe_qos0(filter: &[u8]) -> Vec<u8> {
    let mut b = 1u16.to_be_bytes().to_vec();
    b.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    b.extend_from_slice(filter);
    b.push(0);
    packet(0x82, &b)
}

fn publish_qos0(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut b = (topic.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(topic);
    b.extend_from_slice(payload);
    packet(0x30, &b)
}

/// Connects (MQTT 3.1.1, clean) with `recv_buffer` bytes of socket receive buffer if given,
/// and subscribes to [`TOPIC`] at QoS 0.
async fn subscriber(broker: &Broker, id: &str, recv_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    let mut s = socket.connect(broker.addr()).await.expect("connect");
    s.write_all(&v311_connect_packet(id, 600))
        .await
        .expect("CONNECT");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.expect("CONNACK");
    s.write_all(&subscribe_qos0(TOPIC))
        .await
        .expect("SUBSCRIBE");
    let mut suback = [0u8; 5];
    s.read_exact(&mut suback).await.expect("SUBACK");
    assert_eq!(suback[4], 0, "{id}: granted QoS 0");
    s
}

/// Reads until `n` PUBLISH packets came; returns how many did.
async fn count_publishes(mut s: TcpStream, n: usize) -> usize {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut seen = 0;
    while seen < n {
        let got = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return seen,
            Ok(got) => got,
        };
        buf.extend_from_slice(&chunk[..got]);
        let mut at = 0;
        while let Ok(Some(len)) = edge_mqtt::frame::complete_frame_len(&buf[at..], 1 << 20) {
            if buf[at] >> 4 == 3 {
                seen += 1;
            }
            at += len;
        }
        buf.drain(..at);
    }
    seen
}

#[test]
fn a_subscriber_that_stops_reading_does_not_hold_the_publisher_for_the_others() {
    broker_test(Duration::from_secs(60), |broker| async move {
        // 4 KiB of receive buffer and never read: its socket fills at once.
        let _stuck = subscriber(&broker, "stuck", Some(4096)).await;
        let healthy = subscriber(&broker, "healthy", None).await;
        let counted = tokio::spawn(count_publishes(healthy, MESSAGES));
        let mut publisher = TcpStream::connect(broker.addr()).await.expect("connect");
        publisher
            .write_all(&v311_connect_packet("publisher", 600))
            .await
            .expect("CONNECT");
        let mut connack = [0u8; 4];
        publisher.read_exact(&mut connack).await.expect("CONNACK");
        let one = publish_qos0(TOPIC, &[b'x'; 200]);
        let started = std::time::Instant::now();
        // Written from a task of its own: while the broker holds the publisher, these writes
        // block.
        tokio::spawn(async move {
            let burst: Vec<u8> = one.repeat(100);
            for _ in 0..MESSAGES / 100 {
                if publisher.write_all(&burst).await.is_err() {
                    return;
                }
            }
            // Kept open until the test ends.
            std::future::pending::<()>().await;
        });
        // Before, each publish past the stuck subscriber's pause mark waited 5 s: the rest of
        // the 40,000 would have taken hours.
        let got = within(
            Duration::from_secs(30),
            "the healthy subscriber's messages",
            counted,
        )
        .await
        .expect("reader task");
        assert_eq!(got, MESSAGES, "the healthy subscriber got every message");
        eprintln!(
            "{MESSAGES} delivered to the healthy subscriber in {:?}",
            started.elapsed()
        );
    });
}
