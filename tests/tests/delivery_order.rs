//! A QoS 1 message reaches an online subscriber before its publisher's PUBACK leaves: the
//! connection task that read the PUBLISH lets the subscriber's task write first (as mosquitto
//! sends to subscribers before the PUBACK), which keeps a QoS 1 delivery's latency near a QoS 0
//! one's. Raw MQTT 3.1.1 sockets, the binary on its default single executor thread: on
//! loopback a `send` puts its bytes in the peer's receive buffer before it returns, so once
//! the PUBACK can be read the delivery sent before it can be too.

use std::io::{ErrorKind, Read, Write};

use robustmq_edge_e2e::*;

#[test]
fn a_qos1_delivery_leaves_before_the_publishers_puback() {
    let broker = Broker::builder().process().start();
    let topic = b"order/t";
    let mut sub = raw_v311_client(broker.port(), "order-sub", 60);
    let mut subscribe = vec![0x82, (2 + 2 + topic.len() + 1) as u8, 0x00, 0x01, 0x00];
    subscribe.push(topic.len() as u8);
    subscribe.extend_from_slice(topic);
    subscribe.push(0x01);
    sub.write_all(&subscribe).expect("SUBSCRIBE");
    let mut suback = [0u8; 5];
    sub.read_exact(&mut suback).expect("SUBACK");
    assert_eq!(suback, [0x90, 0x03, 0x00, 0x01, 0x01]);
    let mut publisher = raw_v311_client(broker.port(), "order-pub", 60);
    // PUBLISH QoS 1: fixed header, topic, packet id, 8-byte payload.
    let len = 2 + topic.len() + 2 + 8;
    let mut early = 0;
    for i in 1..=200u16 {
        let mut p = vec![0x32, len as u8, 0x00, topic.len() as u8];
        p.extend_from_slice(topic);
        p.extend_from_slice(&i.to_be_bytes());
        p.extend_from_slice(&u64::from(i).to_be_bytes());
        publisher.write_all(&p).expect("PUBLISH");
        let mut puback = [0u8; 4];
        publisher.read_exact(&mut puback).expect("PUBACK");
        assert_eq!(puback[0], 0x40);
        // The delivery must be readable already.
        sub.set_nonblocking(true).unwrap();
        let mut delivery = vec![0u8; 2 + len];
        let got = sub.read(&mut delivery);
        sub.set_nonblocking(false).unwrap();
        match got {
            Ok(n) => {
                sub.read_exact(&mut delivery[n..])
                    .expect("the rest of the PUBLISH");
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                early += 1;
                sub.read_exact(&mut delivery).expect("the PUBLISH, late");
            }
            Err(e) => panic!("reading the delivery: {e}"),
        }
        assert_eq!(delivery[0] & 0xf0, 0x30, "a PUBLISH");
        assert_eq!(&delivery[delivery.len() - 8..], &u64::from(i).to_be_bytes());
        let pid = [delivery[4 + topic.len()], delivery[5 + topic.len()]];
        sub.write_all(&[0x40, 0x02, pid[0], pid[1]])
            .expect("PUBACK");
    }
    assert_eq!(
        early, 0,
        "{early} of 200 PUBACKs reached the publisher before the delivery"
    );
}
