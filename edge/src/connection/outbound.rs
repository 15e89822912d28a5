//! The writer's rounds: the reader's replies first, in order (each after its storage ticket), then
//! the session's deliveries, batched into few socket writes; large payloads go out from the
//! message's shared buffer (vectored write), never copied per subscriber. A delivery too large
//! for the client is dropped as if delivered; server -> client topic aliases are assigned here.

use std::collections::HashMap;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::Bytes;

use mqtt_proto::v5::{self, DisconnectReasonCode as Dr, Packet};
use mqtt_proto::{Protocol, QosPid, TopicName};

use super::replies::{Control, Replies};
use super::{Close, Conn, Stream};
use crate::broker::Outgoing;
use crate::codec;
use crate::message::{now_ms, Message};
use crate::session::{Kick, Wakeup};

/// Most deliveries taken from the session per round.
const BATCH: usize = 64;
/// Replies buffered past this are written before the next one is encoded.
const FLUSH_AT: usize = 64 * 1024;

/// What one round of the writer leaves to do.
pub(super) enum Round {
    /// Something was written or taken: look again before sleeping.
    Again,
    /// Nothing to do: sleep until woken.
    Idle,
    /// The connection ends; `true` when the client was sent a DISCONNECT.
    End(bool),
}

/// The reader's replies first, in order (each after its storage ticket), then a close or a
/// kick, then one batch of the session's deliveries.
pub(super) async fn write_round(
    conn: &Conn,
    stream: &Stream,
    replies: &Replies,
    wakeup: &Wakeup,
    out: &mut Encoder<'_>,
) -> Round {
    let broker = &conn.broker;
    let mut closing = None;
    while let Some(c) = replies.pop() {
        match c {
            Control::Answer(a) => {
                if let Some(ticket) = a.ticket {
                    // What is encoded goes out before a wait, not before every ticket: the
                    // acknowledgements of one commit leave in one write.
                    if !out.is_empty()
                        && !broker.store.reached_durable(ticket)
                        && out.write(stream).await.is_err()
                    {
                        return Round::End(false);
                    }
                    if broker.store.wait_durable(ticket).await.is_err() {
                        // Not durable: no acknowledgement. The client will resend.
                        closing = Some(Close::Broker {
                            code: Dr::UnspecifiedError,
                            why: "storage failure",
                        });
                        break;
                    }
                }
                if a.incoming_done {
                    conn.incoming_done();
                }
                out.push_reply(a.reply);
            }
            Control::Close(close) => {
                closing = Some(close);
                break;
            }
        }
        if out.len() > FLUSH_AT && out.write(stream).await.is_err() {
            return Round::End(false);
        }
    }
    if let Some(close) = closing {
        let Close::Broker { code, why } = close else {
            let _ = out.write(stream).await;
            return Round::End(false);
        };
        let mut d = v5::Disconnect::new(code);
        if conn.problem_info {
            d.properties.reason_string = Some(Arc::from(why));
        }
        out.push_packet(&Packet::Disconnect(d));
        let _ = out.write(stream).await;
        return Round::End(true);
    }
    if let Some(k) = wakeup.kicked() {
        let code = match k {
            Kick::TakenOver => Dr::SessionTakenOver,
            Kick::Shutdown => Dr::ServerShuttingDown,
        };
        out.push_packet(&Packet::Disconnect(v5::Disconnect::new(code)));
        let r = out.write(stream).await;
        tracing::debug!(client_id = %conn.client_id, reason = ?code, result = ?r, "connection closed by the broker");
        return Round::End(true);
    }
    let (deliveries, ticket) = broker
        .take_outgoing(&conn.client_id, conn.conn_id, BATCH)
        .await;
    if let Some(ticket) = ticket {
        if broker.store.wait(ticket).await.is_err() {
            return Round::End(false);
        }
    }
    let got = deliveries.len();
    for d in deliveries {
        match d {
            Outgoing::Pubrel(pid) => {
                out.push_packet(&Packet::Pubrel(v5::Pubrel::new_success(pid)));
            }
            Outgoing::Publish {
                msg,
                qos_pid,
                retain,
                dup,
                sub_ids,
            } => {
                if !out.push_publish(&msg, qos_pid, retain, dup, &sub_ids) {
                    // Too large for this client: discarded as if delivered [MQTT-3.1.2-25].
                    broker
                        .stats
                        .dropped(crate::stats::Dropped::TooLargeForClient);
                    if let Some(pid) = qos_pid.pid() {
                        broker.complete(&conn.client_id, pid).await;
                    }
                }
            }
        }
    }
    if !out.is_empty() {
        if out.write(stream).await.is_err() {
            return Round::End(false);
        }
        return Round::Again;
    }
    if got > 0 {
        Round::Again
    } else {
        Round::Idle
    }
}

/// Server -> client topic aliases: topic -> alias, allocated for the clients that accept
/// aliases (boxed: 8 bytes instead of an empty map's 48 in every idle connection).
#[allow(clippy::box_collection)]
pub(super) type Aliases = Option<Box<HashMap<Arc<str>, u16>>>;

/// Payloads of at least this many bytes are not copied into the write buffer: they go out
/// from the message's shared buffer in the same vectored write. Smaller ones are cheaper to copy
/// than to give a slice of their own.
const SHARE_PAYLOAD_FROM: usize = 512;

/// Encodes packets for this client into one buffer written with as few writes as possible;
/// large payloads stay in the message's shared buffer and are written between the encoded
/// bytes with one vectored write. Keeps the server -> client topic aliases, assigned first
/// come first served until the client's Topic Alias Maximum.
pub(super) struct Encoder<'a> {
    conn: &'a Conn,
    buf: Vec<u8>,
    /// Shared payloads, each written after `buf[..at]` (in order of `at`).
    payloads: Vec<(usize, Bytes)>,
    payload_bytes: usize,
    /// Topic -> alias; kept by the connection between busy phases.
    pub(super) aliases: Aliases,
    /// Socket writes so far, for tests.
    #[cfg(test)]
    writes: usize,
}

impl<'a> Encoder<'a> {
    pub(super) fn new(conn: &'a Conn) -> Self {
        Encoder {
            conn,
            buf: Vec::new(),
            payloads: Vec::new(),
            payload_bytes: 0,
            aliases: None,
            #[cfg(test)]
            writes: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.payloads.is_empty()
    }

    fn len(&self) -> usize {
        self.buf.len() + self.payload_bytes
    }

    /// Writes what is buffered; the buffer shrinks back after a burst.
    async fn write(&mut self, stream: &Stream) -> std::io::Result<()> {
        #[cfg(test)]
        {
            self.writes += 1;
        }
        let r = if self.payloads.is_empty() {
            stream.write_all(&self.buf).await
        } else {
            let mut slices = Vec::with_capacity(2 * self.payloads.len() + 1);
            let mut from = 0;
            for (at, payload) in &self.payloads {
                slices.push(IoSlice::new(&self.buf[from..*at]));
                slices.push(IoSlice::new(payload));
                from = *at;
            }
            slices.push(IoSlice::new(&self.buf[from..]));
            stream.write_all_vectored(&mut slices).await
        };
        if r.is_ok() {
            self.conn.broker.stats.bytes_sent(self.len());
        }
        self.buf.clear();
        self.payloads.clear();
        self.payload_bytes = 0;
        if self.buf.capacity() > 256 * 1024 {
            self.buf.shrink_to(4096);
        }
        r
    }

    /// Encodes a reply (a successful acknowledgement without the codec: see
    /// [`Reply::short_form`]).
    fn push_reply(&mut self, r: super::replies::Reply) {
        match r.short_form() {
            Some(bytes) => {
                self.buf.extend_from_slice(&bytes);
                self.conn.broker.stats.packets_sent(1);
            }
            None => self.push_packet(&r.into_packet()),
        }
    }

    fn push_packet(&mut self, p: &Packet) {
        if let Some(b) = codec::encode(p, self.conn.proto) {
            self.buf.extend_from_slice(&b);
            self.conn.broker.stats.packets_sent(1);
        }
    }

    /// Encodes one PUBLISH; `false` when it exceeds the client's maximum packet size.
    fn push_publish(
        &mut self,
        msg: &Message,
        qos_pid: QosPid,
        retain: bool,
        dup: bool,
        sub_ids: &[u32],
    ) -> bool {
        let conn = self.conn;
        let v5 = conn.proto == Protocol::V500;
        let Ok(full_topic) = TopicName::try_from(msg.topic.clone()) else {
            return false;
        };
        let mut properties = v5::PublishProperties::default();
        if v5 {
            if let Some(p) = &msg.props {
                properties.payload_is_utf8 = p.payload_is_utf8;
                properties.response_topic = p
                    .response_topic
                    .as_ref()
                    .and_then(|t| TopicName::try_from(t.clone()).ok());
                properties.correlation_data = p.correlation_data.clone();
                properties.user_properties = p
                    .user_properties
                    .iter()
                    .map(|(k, v)| v5::UserProperty {
                        name: k.clone(),
                        value: v.clone(),
                    })
                    .collect();
                properties.content_type = p.content_type.clone();
            }
            properties.message_expiry_interval = msg.remaining_expiry(now_ms()).map(|r| r.max(1));
            properties.subscription_ids = sub_ids
                .iter()
                .filter_map(|id| v5::VarByteInt::try_from(*id).ok())
                .collect();
        }
        let mut publish = v5::Publish {
            dup,
            retain,
            qos_pid,
            topic_name: full_topic.clone(),
            // Not encoded: the payload follows the head (below).
            payload: Bytes::new(),
            properties,
        };
        // Server -> client alias: reuse when known, assign while slots remain.
        let mut new_alias = None;
        let alias_max = conn.client_alias_max;
        if v5 && alias_max > 0 {
            let aliases = self.aliases.get_or_insert_with(Default::default);
            if let Some(a) = aliases.get(&msg.topic) {
                publish.properties.topic_alias = Some(*a);
                publish.topic_name = TopicName::try_from("").unwrap_or(full_topic);
            } else if aliases.len() < alias_max as usize {
                let a = aliases.len() as u16 + 1;
                publish.properties.topic_alias = Some(a);
                new_alias = Some(a);
            }
        }
        let start = self.buf.len();
        let payload = &msg.payload;
        let Some(size) =
            codec::encode_publish_head(publish, payload.len(), conn.proto, &mut self.buf)
        else {
            return false;
        };
        if size > conn.client_max_packet as usize {
            self.buf.truncate(start);
            tracing::debug!(client_id = %conn.client_id, size, "message larger than the client's maximum packet size: not sent");
            return false;
        }
        if let (Some(a), Some(aliases)) = (new_alias, &mut self.aliases) {
            aliases.insert(msg.topic.clone(), a);
        }
        if payload.len() >= SHARE_PAYLOAD_FROM {
            self.payloads.push((self.buf.len(), payload.clone()));
            self.payload_bytes += payload.len();
        } else {
            self.buf.extend_from_slice(payload);
        }
        let stats = &conn.broker.stats;
        stats.packets_sent(1);
        stats.publish_sent(qos_pid.qos() as u8, payload.len());
        true
    }

    /// The encoded bytes in write order (payloads included), for tests.
    #[cfg(test)]
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut from = 0;
        for (at, payload) in &self.payloads {
            out.extend_from_slice(&self.buf[from..*at]);
            out.extend_from_slice(payload);
            from = *at;
        }
        out.extend_from_slice(&self.buf[from..]);
        out
    }

    /// Gives the buffers back (the writer is going idle).
    pub(super) fn release(&mut self) {
        if self.is_empty() {
            self.buf = Vec::new();
            self.payloads = Vec::new();
        }
    }

    #[cfg(test)]
    fn clear(&mut self) {
        self.buf.clear();
        self.payloads.clear();
        self.payload_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::test_support;
    use mqtt_proto::Pid;

    fn message(topic: &str) -> Message {
        Message::test(topic, bytes::Bytes::from_static(b"payload"), 0, "p")
    }

    fn decode(conn: &Conn, buf: &[u8]) -> v5::Publish {
        match codec::decode(buf, conn.proto) {
            Ok(Packet::Publish(p)) => p,
            other => panic!("expected a PUBLISH, got {other:?}"),
        }
    }

    #[test]
    fn second_delivery_on_a_topic_uses_the_alias_without_the_topic_name() {
        let mut t = test_support::conn(Protocol::V500, false);
        t.conn.client_alias_max = 4;
        let mut out = Encoder::new(&t.conn);
        let msg = message("sensors/temperature");
        assert!(out.push_publish(&msg, QosPid::Level0, false, false, &[]));
        let first = decode(&t.conn, &out.bytes());
        assert_eq!(&*first.topic_name, "sensors/temperature");
        assert_eq!(first.properties.topic_alias, Some(1));
        out.clear();
        assert!(out.push_publish(&msg, QosPid::Level0, false, false, &[]));
        let second = decode(&t.conn, &out.bytes());
        assert_eq!(&*second.topic_name, "");
        assert_eq!(second.properties.topic_alias, Some(1));
    }

    #[test]
    fn no_aliases_beyond_the_client_maximum() {
        let mut t = test_support::conn(Protocol::V500, false);
        t.conn.client_alias_max = 1;
        let mut out = Encoder::new(&t.conn);
        assert!(out.push_publish(&message("a"), QosPid::Level0, false, false, &[]));
        out.clear();
        assert!(out.push_publish(&message("b"), QosPid::Level0, false, false, &[]));
        let p = decode(&t.conn, &out.bytes());
        assert_eq!((&*p.topic_name, p.properties.topic_alias), ("b", None));
    }

    #[test]
    fn delivery_over_the_client_maximum_packet_size_is_not_encoded() {
        let mut t = test_support::conn(Protocol::V500, false);
        t.conn.client_max_packet = 8;
        let mut out = Encoder::new(&t.conn);
        let qos_pid = QosPid::Level1(Pid::try_from(3).unwrap());
        assert!(!out.push_publish(&message("a/long/topic"), qos_pid, false, false, &[]));
        assert!(out.is_empty());
    }

    fn message_of(topic: &str, payload: Vec<u8>) -> Message {
        Message {
            payload: Bytes::from(payload),
            ..message(topic)
        }
    }

    #[test]
    fn a_large_payload_is_sent_from_the_message_buffer_not_copied() {
        let t = test_support::conn(Protocol::V311, false);
        let mut out = Encoder::new(&t.conn);
        let msg = message_of("big", vec![5u8; 4096]);
        let qos_pid = QosPid::Level1(Pid::try_from(3).unwrap());
        assert!(out.push_publish(&msg, qos_pid, false, false, &[]));
        assert!(
            out.buf.len() < 16,
            "only the head is encoded: {}",
            out.buf.len()
        );
        assert_eq!(out.payloads.len(), 1);
        assert_eq!(out.payloads[0].1.as_ptr(), msg.payload.as_ptr());
        assert_eq!(out.len(), out.bytes().len());
        let p = decode(&t.conn, &out.bytes());
        assert_eq!((&*p.topic_name, p.payload), ("big", msg.payload.clone()));
    }

    /// A connected pair: the client's blocking end and the broker's stream.
    fn socket_pair() -> (std::net::TcpStream, Stream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let stream = crate::transport::Transport::plain(smol::Async::new(server).unwrap());
        (client, stream)
    }

    /// The replies of tickets already committed go out together: one socket write for all of
    /// them (67c837b; before it, the writer flushed ahead of every ticket, one write per PUBACK),
    /// in the order queued.
    #[test]
    fn acknowledgements_of_committed_tickets_leave_in_one_write() {
        use std::io::Read;
        let t = test_support::conn(Protocol::V311, false);
        let store = &t.conn.broker.store;
        let tickets: Vec<_> = (0..8)
            .map(|i| {
                let slot = smol::block_on(store.reserve());
                let op = crate::storage::Op::Retain {
                    topic: format!("r/{i}").into(),
                    msg: None,
                };
                store.push(slot, vec![op]).expect("a batch gets a ticket")
            })
            .collect();
        smol::block_on(store.wait(*tickets.last().unwrap())).unwrap();
        let wakeup = Arc::new(Wakeup::default());
        let replies = Replies::new(wakeup.clone());
        for (i, ticket) in tickets.iter().enumerate() {
            let pid = Pid::try_from(i as u16 + 1).unwrap();
            let answer = super::super::replies::Answer {
                ticket: Some(*ticket),
                reply: super::super::replies::Reply::Puback(pid, v5::PubackReasonCode::Success),
                incoming_done: false,
            };
            smol::block_on(replies.send(answer, 64));
        }
        let (mut client, stream) = socket_pair();
        let mut out = Encoder::new(&t.conn);
        let round = smol::block_on(write_round(&t.conn, &stream, &replies, &wakeup, &mut out));
        assert!(matches!(round, Round::Again));
        assert_eq!(out.writes, 1, "eight acknowledgements, one socket write");
        let mut got = [0u8; 8 * 4];
        client.read_exact(&mut got).unwrap();
        for (i, puback) in got.chunks(4).enumerate() {
            assert_eq!(puback, &[0x40, 0x02, 0, i as u8 + 1], "PUBACK {i}");
        }
    }

    /// Small and shared payloads, and other packets, reach the socket in the order pushed.
    #[test]
    fn packets_and_shared_payloads_reach_the_socket_in_order() {
        use std::io::Read;
        let t = test_support::conn(Protocol::V500, false);
        let (mut client, stream) = socket_pair();
        let mut out = Encoder::new(&t.conn);
        let sizes = [10, 600, 70_000, 3, 4096, 0, 512];
        for (i, n) in sizes.iter().enumerate() {
            let msg = message_of(&format!("t/{i}"), vec![i as u8; *n]);
            assert!(out.push_publish(&msg, QosPid::Level0, false, false, &[]));
            out.push_packet(&Packet::Pingresp);
        }
        assert_eq!(out.payloads.len(), 4);
        let expected = out.bytes();
        assert_eq!(out.len(), expected.len());
        smol::block_on(out.write(&stream)).unwrap();
        assert!(out.is_empty());
        let mut got = vec![0u8; expected.len()];
        client.read_exact(&mut got).unwrap();
        assert!(
            got == expected,
            "bytes on the socket differ from the packets pushed"
        );
        let mut at = 0;
        for (i, n) in sizes.iter().enumerate() {
            let (h, rem) = codec::fixed_header(&got[at..]).unwrap().unwrap();
            let p = decode(&t.conn, &got[at..at + h + rem]);
            assert_eq!((&*p.topic_name, p.payload.len()), (&*format!("t/{i}"), *n));
            at += h + rem;
            assert_eq!(&got[at..at + 2], &[0xD0, 0x00]);
            at += 2;
        }
    }
}
