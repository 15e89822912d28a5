//! The write loop: the reader's replies first, in order (each after its storage ticket), then
//! the session's deliveries, batched into few socket writes. A delivery too large for the client
//! is dropped as if delivered; server -> client topic aliases are assigned here.

use std::collections::HashMap;
use std::sync::Arc;

use futures_lite::FutureExt;
use mqtt_proto::v5::{self, DisconnectReasonCode as Dr, Packet};
use mqtt_proto::{Protocol, QosPid, TopicName};

use super::replies::{Control, Replies};
use super::{Close, Conn, Stream};
use crate::broker::{Connected, Outgoing};
use crate::codec;
use crate::message::{now_ms, Message};
use crate::session::Kick;

/// Most deliveries taken from the session per round.
const BATCH: usize = 64;
/// Replies buffered past this are written before the next one is encoded.
const FLUSH_AT: usize = 64 * 1024;

/// Writes replies and deliveries until told to close, kicked, or the socket fails. Returns
/// whether it sent the client a DISCONNECT.
pub(super) async fn write_loop(
    conn: &Conn,
    stream: &Stream,
    replies: &Replies,
    connected: &Connected,
) -> bool {
    let broker = &conn.broker;
    let mut out = Encoder::new(conn);
    loop {
        let listener = connected.notify.listen();
        // Replies first, in order; each waits for its storage ticket.
        let mut closing = None;
        while let Some(c) = replies.pop() {
            match c {
                Control::Answer(a) => {
                    if let Some(ticket) = a.ticket {
                        if !out.is_empty() && out.write(stream).await.is_err() {
                            return false;
                        }
                        if Box::pin(broker.store.wait(ticket)).await.is_err() {
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
                    out.push_packet(&a.reply.into_packet());
                }
                Control::Close(close) => {
                    closing = Some(close);
                    break;
                }
            }
            if out.len() > FLUSH_AT && out.write(stream).await.is_err() {
                return false;
            }
        }
        if let Some(close) = closing {
            let Close::Broker { code, why } = close else {
                let _ = out.write(stream).await;
                return false;
            };
            let mut d = v5::Disconnect::new(code);
            if conn.problem_info {
                d.properties.reason_string = Some(Arc::from(why));
            }
            out.push_packet(&Packet::Disconnect(d));
            let _ = out.write(stream).await;
            return true;
        }
        if let Some(k) = crate::session::kicked(&connected.kick) {
            let code = match k {
                Kick::TakenOver => Dr::SessionTakenOver,
                Kick::Shutdown => Dr::ServerShuttingDown,
            };
            out.push_packet(&Packet::Disconnect(v5::Disconnect::new(code)));
            let r = out.write(stream).await;
            tracing::debug!(client_id = %conn.client_id, reason = ?code, result = ?r, "connection closed by the broker");
            return true;
        }
        // Boxed (like the waits): the writer's idle state stays small.
        let (deliveries, ticket) =
            Box::pin(broker.take_outgoing(&conn.client_id, conn.conn_id, BATCH)).await;
        if let Some(ticket) = ticket {
            if Box::pin(broker.store.wait(ticket)).await.is_err() {
                return false;
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
                            Box::pin(broker.complete(&conn.client_id, pid)).await;
                        }
                    }
                }
            }
        }
        if !out.is_empty() {
            if out.write(stream).await.is_err() {
                return false;
            }
            continue;
        }
        if got > 0 {
            continue;
        }
        // Nothing to do: sleep until a delivery, a reply, a kick or shutdown (all of which
        // notify the session's event, which `listener` was registered on before the checks).
        listener
            .or(async {
                broker.shutdown.listen().await;
            })
            .await;
    }
}

/// Encodes packets for this client into one buffer written with as few writes as possible;
/// keeps the server -> client topic aliases, assigned first come first served until the
/// client's Topic Alias Maximum.
struct Encoder<'a> {
    conn: &'a Conn,
    buf: Vec<u8>,
    aliases: HashMap<Arc<str>, u16>,
}

impl<'a> Encoder<'a> {
    fn new(conn: &'a Conn) -> Self {
        Encoder {
            conn,
            buf: Vec::new(),
            aliases: HashMap::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn len(&self) -> usize {
        self.buf.len()
    }

    /// Writes what is buffered; the buffer shrinks back after a burst.
    async fn write(&mut self, stream: &Stream) -> std::io::Result<()> {
        let r = stream.write_all(&self.buf).await;
        if r.is_ok() {
            self.conn.broker.stats.bytes_sent(self.buf.len());
        }
        self.buf.clear();
        if self.buf.capacity() > 256 * 1024 {
            self.buf.shrink_to(4096);
        }
        r
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
            payload: msg.payload.clone(),
            properties,
        };
        // Server -> client alias: reuse when known, assign while slots remain.
        let mut new_alias = None;
        let alias_max = conn.client_alias_max;
        if v5 && alias_max > 0 {
            if let Some(a) = self.aliases.get(&msg.topic) {
                publish.properties.topic_alias = Some(*a);
                publish.topic_name = TopicName::try_from("").unwrap_or(full_topic);
            } else if self.aliases.len() < alias_max as usize {
                let a = self.aliases.len() as u16 + 1;
                publish.properties.topic_alias = Some(a);
                new_alias = Some(a);
            }
        }
        let Some(bytes) = codec::encode(&Packet::Publish(publish), conn.proto) else {
            return false;
        };
        if bytes.len() > conn.client_max_packet {
            tracing::debug!(client_id = %conn.client_id, size = bytes.len(), "message larger than the client's maximum packet size: not sent");
            return false;
        }
        if let Some(a) = new_alias {
            self.aliases.insert(msg.topic.clone(), a);
        }
        self.buf.extend_from_slice(&bytes);
        let stats = &conn.broker.stats;
        stats.packets_sent(1);
        stats.publish_sent(qos_pid.qos() as u8, msg.payload.len());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::test_support;
    use mqtt_proto::Pid;

    fn message(topic: &str) -> Message {
        Message {
            topic: topic.into(),
            payload: bytes::Bytes::from_static(b"payload"),
            qos: 0,
            retain: false,
            received_ms: now_ms(),
            expiry_secs: None,
            publisher: "p".into(),
            from_downlink: false,
            props: None,
        }
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
        let first = decode(&t.conn, &out.buf);
        assert_eq!(&*first.topic_name, "sensors/temperature");
        assert_eq!(first.properties.topic_alias, Some(1));
        out.buf.clear();
        assert!(out.push_publish(&msg, QosPid::Level0, false, false, &[]));
        let second = decode(&t.conn, &out.buf);
        assert_eq!(&*second.topic_name, "");
        assert_eq!(second.properties.topic_alias, Some(1));
    }

    #[test]
    fn no_aliases_beyond_the_client_maximum() {
        let mut t = test_support::conn(Protocol::V500, false);
        t.conn.client_alias_max = 1;
        let mut out = Encoder::new(&t.conn);
        assert!(out.push_publish(&message("a"), QosPid::Level0, false, false, &[]));
        out.buf.clear();
        assert!(out.push_publish(&message("b"), QosPid::Level0, false, false, &[]));
        let p = decode(&t.conn, &out.buf);
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
}
