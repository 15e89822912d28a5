//! What the upstream sends, as one protocol-neutral [`Inbound`]: a frame is decoded for the
//! negotiated version by `edge_mqtt::version` (3.1.1 packets lifted to their v5 form there), then
//! mapped here from the v5 packet alone. Reason codes stay typed (`edge_mqtt::reason::Code`);
//! an acknowledgement the strict codec refuses is read by `lenient`, never a PUBLISH or PUBREL.

use bytes::Bytes;
use edge_mqtt::reason::{self, Code};
use edge_mqtt::version::{self, CodecError};
use mqtt_proto::{v5, Protocol};

use super::Proto;
use crate::error::SyncError;

/// The reason code of a PUBACK, and of a PUBREC (MQTT 5.0 gives both the same table).
pub type AckCode = Code<v5::PubackReasonCode>;

/// Inbound packets, protocol-neutral.
#[derive(Debug)]
pub enum Inbound {
    ConnAck(ConnAck),
    Publish(InPublish),
    PubAck {
        pid: u16,
        code: AckCode,
        offset: Option<u64>,
    },
    PubRec {
        pid: u16,
        code: Code<v5::PubrecReasonCode>,
        offset: Option<u64>,
    },
    PubRel {
        pid: u16,
    },
    PubComp {
        pid: u16,
        code: Code<v5::PubcompReasonCode>,
    },
    SubAck {
        codes: Vec<Code<v5::SubscribeReasonCode>>,
    },
    PingResp,
    Disconnect {
        code: Code<v5::DisconnectReasonCode>,
        reason: Option<String>,
    },
    /// A packet the client does not act on (UNSUBACK, AUTH, or one only clients send).
    Other(v5::PacketType),
}

#[derive(Debug)]
pub struct ConnAck {
    pub session_present: bool,
    /// The v5 reason code (a 3.1.1 return code lifted to the v5 code of the same meaning).
    pub code: Code<v5::ConnectReasonCode>,
    pub reason: Option<String>,
    pub receive_max: Option<u16>,
    pub max_qos: Option<u8>,
    pub max_packet_size: Option<u32>,
    pub server_keep_alive: Option<u16>,
    /// v5 Session Expiry Interval the server granted, when it differs from the one asked for.
    pub session_expiry: Option<u32>,
}

#[derive(Debug)]
pub struct InPublish {
    pub pid: Option<u16>,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    pub payload: Bytes,
    pub user_properties: Vec<(String, String)>,
}

/// Parses RobustMQ's `offset` user property, e.g. `Some("[0]")` -> 0 (also accepts `[0]`, `0`).
pub fn parse_offset(v: &str) -> Option<u64> {
    let digits: String = v
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn offset_of(props: &[v5::UserProperty]) -> Option<u64> {
    props
        .iter()
        .find(|p| &*p.name == "offset")
        .and_then(|p| parse_offset(&p.value))
}

/// A refused CONNACK in words for the status and log: `not authorized (reason code 0x87)`.
pub fn connect_refusal(code: Code<v5::ConnectReasonCode>) -> String {
    let text = match code {
        Code::Known(c) => reason::connect_text(c),
        Code::Unknown(_) => "refused",
    };
    format!("{text} (reason code {:#04x})", code.byte())
}

/// A 3.1.1 server answers our v5 CONNECT with a 2-byte 3.1.1 CONNACK (MQTT 5.0 3.1.2.2), which
/// is no valid v5 CONNACK: read it as 3.1.1 (return code 1 lifts to "unsupported protocol").
fn is_v3_connack(frame: &[u8]) -> bool {
    frame.len() == 4 && frame[0] == 0x20 && frame[1] == 2
}

/// Decodes one frame for the negotiated protocol.
pub fn decode(proto: Proto, frame: &[u8]) -> Result<Inbound, SyncError> {
    let wire = if proto == Proto::V5 && is_v3_connack(frame) {
        Protocol::V311
    } else {
        proto.protocol()
    };
    match version::decode(frame, wire) {
        Ok(p) => Ok(Inbound::from(p)),
        // Liberal where it cannot endanger data (README, "Upstream deviations").
        Err(CodecError::V5(e)) => match super::lenient::decode_v5(frame) {
            Some(ev) => {
                tracing::warn!(
                    packet = ?ev,
                    "upstream sent an invalid acknowledgement ({e}); accepted"
                );
                Ok(ev)
            }
            None => Err(SyncError::Protocol(e.to_string())),
        },
        Err(e) => Err(SyncError::Protocol(e.to_string())),
    }
}

impl From<v5::Packet> for Inbound {
    fn from(p: v5::Packet) -> Self {
        match p {
            v5::Packet::Connack(c) => Inbound::ConnAck(ConnAck {
                session_present: c.session_present,
                code: c.reason_code.into(),
                reason: c.properties.reason_string.as_ref().map(|s| s.to_string()),
                receive_max: c.properties.receive_max,
                max_qos: c.properties.max_qos.map(|q| q as u8),
                max_packet_size: c.properties.max_packet_size,
                server_keep_alive: c.properties.server_keep_alive,
                session_expiry: c.properties.session_expiry_interval,
            }),
            v5::Packet::Publish(p) => Inbound::Publish(InPublish {
                pid: p.qos_pid.pid().map(|p| p.value()),
                qos: p.qos_pid.qos() as u8,
                retain: p.retain,
                topic: p.topic_name.to_string(),
                payload: p.payload,
                user_properties: p
                    .properties
                    .user_properties
                    .iter()
                    .map(|u| (u.name.to_string(), u.value.to_string()))
                    .collect(),
            }),
            v5::Packet::Puback(a) => Inbound::PubAck {
                pid: a.pid.value(),
                code: a.reason_code.into(),
                offset: offset_of(&a.properties.user_properties),
            },
            v5::Packet::Pubrec(a) => Inbound::PubRec {
                pid: a.pid.value(),
                code: a.reason_code.into(),
                offset: offset_of(&a.properties.user_properties),
            },
            v5::Packet::Pubrel(a) => Inbound::PubRel { pid: a.pid.value() },
            v5::Packet::Pubcomp(a) => Inbound::PubComp {
                pid: a.pid.value(),
                code: a.reason_code.into(),
            },
            v5::Packet::Suback(s) => Inbound::SubAck {
                codes: s.topics.into_iter().map(Code::from).collect(),
            },
            v5::Packet::Pingresp => Inbound::PingResp,
            v5::Packet::Disconnect(d) => Inbound::Disconnect {
                code: d.reason_code.into(),
                reason: d.properties.reason_string.as_ref().map(|s| s.to_string()),
            },
            other => Inbound::Other(other.get_type()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_proto::{v3, Pid};

    #[test]
    fn robustmq_offset_property_is_parsed() {
        assert_eq!(parse_offset("Some(\"[0]\")"), Some(0));
        assert_eq!(parse_offset("Some(\"[17]\")"), Some(17));
        assert_eq!(parse_offset("[3]"), Some(3));
        assert_eq!(parse_offset("None"), None);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The CONNACK RobustMQ 0.4.11 sent to a v5 CONNECT asking for a 3600 s session, byte for
    /// byte: Session Expiry 1800, Receive Maximum 65535, Maximum QoS 2 (which MQTT 5 forbids),
    /// Retain Available, Maximum Packet Size 10 MiB, Topic Alias Maximum 65535, Wildcard /
    /// Subscription Identifier / Shared Subscription available, Server Keep Alive 30.
    #[test]
    fn robustmq_connack_bytes_decode() {
        let f = hex("202000001d110000070821ffff240225012700a0000022ffff280129012a0113001e");
        match decode(Proto::V5, &f).unwrap() {
            Inbound::ConnAck(c) => {
                assert_eq!(c.code, Code::Known(v5::ConnectReasonCode::Success));
                assert!(!c.session_present);
                assert_eq!(c.max_qos, Some(2), "Maximum QoS 2 read as QoS 2 allowed");
                assert_eq!(c.session_expiry, Some(1800));
                assert_eq!(c.receive_max, Some(65535));
                assert_eq!(c.max_packet_size, Some(10 * 1024 * 1024));
                assert_eq!(c.server_keep_alive, Some(30));
            }
            other => panic!("{other:?}"),
        }
    }

    /// RobustMQ 0.4.11's PUBACK to a v5 QoS 1 publish with packet id 1, byte for byte.
    #[test]
    fn robustmq_puback_bytes_decode_with_offset() {
        let f = hex("401a000100162600066f6666736574000b536f6d6528225b305d2229");
        match decode(Proto::V5, &f).unwrap() {
            Inbound::PubAck { pid, code, offset } => {
                assert_eq!(
                    (pid, code, offset),
                    (1, Code::Known(v5::PubackReasonCode::Success), Some(0))
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn maximum_qos_3_is_still_refused_by_the_codec_but_read_leniently() {
        // A CONNACK with Maximum QoS 3: strict decoding fails, the lenient path drops the value.
        let f = [0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x03];
        assert!(v5::Packet::decode(&f).is_err());
        match decode(Proto::V5, &f).unwrap() {
            Inbound::ConnAck(c) => assert_eq!(
                (c.code, c.max_qos),
                (Code::Known(v5::ConnectReasonCode::Success), None)
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_publish_from_upstream_is_an_error() {
        // PUBLISH with an unknown property id: never read leniently.
        let f = [0x30, 0x07, 0x00, 0x01, b'a', 0x02, 0x7F, 0x00, b'x'];
        assert!(decode(Proto::V5, &f).is_err());
    }

    #[test]
    fn v3_connack_to_v5_connect_reads_as_unsupported_protocol() {
        match decode(Proto::V5, &[0x20, 0x02, 0x00, 0x01]).unwrap() {
            Inbound::ConnAck(c) => assert_eq!(
                c.code,
                Code::Known(v5::ConnectReasonCode::UnsupportedProtocolVersion)
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mqtt311_acks_and_refusals_arrive_as_v5_codes() {
        let refused = v3::Packet::Connack(v3::Connack {
            session_present: false,
            code: v3::ConnectReturnCode::BadUserNameOrPassword,
        });
        let b = refused.encode().unwrap();
        match decode(Proto::V311, b.as_ref()).unwrap() {
            Inbound::ConnAck(c) => assert_eq!(
                connect_refusal(c.code),
                "bad user name or password (reason code 0x86)"
            ),
            other => panic!("{other:?}"),
        }
        let suback = v3::Packet::Suback(v3::Suback::new(
            Pid::try_from(2).unwrap(),
            vec![
                v3::SubscribeReturnCode::MaxLevel1,
                v3::SubscribeReturnCode::Failure,
            ],
        ));
        let b = suback.encode().unwrap();
        match decode(Proto::V311, b.as_ref()).unwrap() {
            Inbound::SubAck { codes } => {
                assert_eq!(
                    codes.iter().map(|c| c.is_failure()).collect::<Vec<_>>(),
                    [false, true]
                )
            }
            other => panic!("{other:?}"),
        }
        let b = v3::Packet::Puback(Pid::try_from(4).unwrap())
            .encode()
            .unwrap();
        match decode(Proto::V311, b.as_ref()).unwrap() {
            Inbound::PubAck { pid, code, offset } => {
                assert_eq!((pid, code.is_failure(), offset), (4, false, None))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_connack_codes_are_refusals_with_their_byte() {
        assert_eq!(
            connect_refusal(Code::Unknown(0xF0)),
            "refused (reason code 0xf0)"
        );
        assert_eq!(
            connect_refusal(Code::Known(v5::ConnectReasonCode::NotAuthorized)),
            "not authorized (reason code 0x87)"
        );
    }

    #[test]
    fn puback_offset_roundtrip() {
        let mut a = v5::Puback::new_success(Pid::try_from(7).unwrap());
        a.properties.user_properties = vec![v5::UserProperty {
            name: "offset".into(),
            value: "Some(\"[42]\")".into(),
        }];
        let bytes = v5::Packet::Puback(a).encode().unwrap();
        match decode(Proto::V5, bytes.as_ref()).unwrap() {
            Inbound::PubAck { pid, offset, .. } => {
                assert_eq!(pid, 7);
                assert_eq!(offset, Some(42));
            }
            other => panic!("{other:?}"),
        }
    }
}
