//! The reader's bursts and the dispatch of each packet to its handler (one file per packet kind).
//! A handler answers with at most one reply for the writer, or ends the connection with a typed
//! [`Close`]; replies are queued in packet order, so acknowledgements keep the client's order.

mod acks;
mod disconnect;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod publish;
mod pubrel;
mod subscribe;
mod unsubscribe;

use std::time::Duration;

use mqtt_proto::v5::{DisconnectReasonCode as Dr, Packet};

use super::frame::{FrameReader, ReadError};
use super::replies::{Answer, Replies, Reply};
use super::{Close, Conn, Stream};
use crate::codec::{self, FrameError};

pub(super) use publish::message_props;
pub(super) use publish::PublishState;

/// A topic name or filter within `limits.max_topic_length` bytes and `limits.max_topic_levels`
/// levels.
pub(in crate::connection) fn topic_fits(topic: &str, limits: &crate::config::Limits) -> bool {
    topic.len() <= limits.max_topic_length
        && topic.bytes().filter(|b| *b == b'/').count() < limits.max_topic_levels
}

/// Reads and handles frames until none is left buffered (a frame begun is read to its end).
/// PUBACKs that come one after another are applied together ([`acks::handle_pubacks`]: one
/// storage batch, not one per acknowledgement), before the next other packet and when the
/// burst ends, however it ends: an acknowledgement read is never dropped.
pub(super) async fn read_burst(
    conn: &Conn,
    stream: &Stream,
    reader: &mut FrameReader,
    limit: Option<Duration>,
    publish_state: &mut publish::PublishState,
    replies: &Replies,
) -> Result<(), Close> {
    // The size this connection's CONNACK announced (limits.max_packet_size may be reloaded).
    let max_packet = conn.max_packet as usize;
    let mut acked = Vec::new();
    let ended = loop {
        let frame = match reader.next(stream, max_packet, limit).await {
            Ok(frame) => frame,
            Err(e) => break Err(read_failed(conn, e)),
        };
        conn.broker.stats.packet_received(frame.len());
        let packet = match codec::decode(frame, conn.proto) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(peer = %conn.peer, client_id = %conn.client_id, error = ?e, "malformed packet");
                break Err(Close::Broker {
                    code: Dr::MalformedPacket,
                    why: "malformed packet",
                });
            }
        };
        match packet {
            Packet::Puback(a) => acked.push(a.pid),
            packet => {
                acks::handle_pubacks(conn, &acked).await;
                acked.clear();
                if let Err(close) = handle_packet(conn, packet, publish_state, replies).await {
                    break Err(close);
                }
            }
        }
        if !reader.has_input() {
            break Ok(());
        }
    };
    acks::handle_pubacks(conn, &acked).await;
    ended
}

pub(super) fn read_failed(conn: &Conn, e: ReadError) -> Close {
    let (code, why) = match e {
        ReadError::Closed => return Close::Silent,
        ReadError::Io(e) => {
            tracing::debug!(peer = %conn.peer, error = %e, "read error");
            return Close::Silent;
        }
        ReadError::TimedOut => (Dr::KeepAliveTimeout, "keep alive timeout"),
        ReadError::Frame(FrameError::TooLarge(_)) => {
            (Dr::PacketTooLarge, "packet larger than maximum packet size")
        }
        ReadError::Frame(_) => (Dr::MalformedPacket, "malformed packet"),
    };
    Close::Broker { code, why }
}

/// A PUBLISH on this topic makes its handler panic (test builds only: panic containment).
#[cfg(test)]
pub(in crate::connection) const PANIC_TOPIC: &str = "test/panic-in-handler";

/// Handles one packet from the client: runs its handler, queues the answer, and then applies
/// the publisher flow control the handler may have asked for.
async fn handle_packet(
    conn: &Conn,
    packet: Packet,
    publish_state: &mut publish::PublishState,
    replies: &Replies,
) -> Result<(), Close> {
    #[cfg(test)]
    if matches!(&packet, Packet::Publish(p) if &*p.topic_name == PANIC_TOPIC) {
        panic!("test hook: a PUBLISH on {PANIC_TOPIC}");
    }
    let answer = match packet {
        Packet::Publish(p) => publish::handle_publish(conn, publish_state, p).await?,
        Packet::Pubrel(r) => pubrel::handle_pubrel(conn, r).await?,
        Packet::Puback(a) => {
            acks::handle_pubacks(conn, &[a.pid]).await;
            None
        }
        Packet::Pubrec(a) => acks::handle_pubrec(conn, a).await?,
        Packet::Pubcomp(a) => acks::handle_pubcomp(conn, a).await?,
        Packet::Subscribe(s) => subscribe::handle_subscribe(conn, s).await?,
        Packet::Unsubscribe(u) => unsubscribe::handle_unsubscribe(conn, u).await?,
        Packet::Pingreq => Some(Answer::now(Reply::Pingresp)),
        Packet::Disconnect(d) => return Err(disconnect::handle_disconnect(conn, &d)),
        Packet::Connect(_) => return Err(protocol_error("second CONNECT")),
        Packet::Auth(_) => return Err(protocol_error("AUTH without authentication method")),
        _ => return Err(protocol_error("packet type not sent by clients")),
    };
    if let Some(answer) = answer {
        replies.send(answer, conn.reply_cap()).await;
    }
    publish::wait_if_congested(conn, publish_state).await;
    Ok(())
}

fn protocol_error(why: &'static str) -> Close {
    Close::Broker {
        code: Dr::ProtocolError,
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::replies::Control;
    use crate::connection::test_support;
    use mqtt_proto::Protocol;

    fn handle(conn: &Conn, packet: Packet, replies: &Replies) -> Result<(), Close> {
        let mut st = publish::PublishState::default();
        smol::block_on(handle_packet(conn, packet, &mut st, replies))
    }

    #[test]
    fn a_second_connect_is_a_protocol_error() {
        let t = test_support::conn(Protocol::V500, false);
        let replies = Replies::new(Default::default());
        let connect = mqtt_proto::v5::Connect::new("again".into(), 10);
        let got = handle(&t.conn, Packet::Connect(connect), &replies);
        assert_eq!(got, Err(protocol_error("second CONNECT")));
    }

    #[test]
    fn pingreq_is_answered_with_pingresp() {
        let t = test_support::conn(Protocol::V311, false);
        let replies = Replies::new(Default::default());
        assert_eq!(handle(&t.conn, Packet::Pingreq, &replies), Ok(()));
        assert!(matches!(
            replies.pop(),
            Some(Control::Answer(a)) if a == Answer::now(Reply::Pingresp)
        ));
    }

    #[test]
    fn a_server_only_packet_from_the_client_is_a_protocol_error() {
        let t = test_support::conn(Protocol::V500, false);
        let replies = Replies::new(Default::default());
        let got = handle(&t.conn, Packet::Pingresp, &replies);
        assert!(matches!(
            got,
            Err(Close::Broker {
                code: Dr::ProtocolError,
                ..
            })
        ));
    }
}
