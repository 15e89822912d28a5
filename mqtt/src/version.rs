//! MQTT 3.1 / 3.1.1 next to MQTT 5.0: the one place where v3 packets are lifted to their v5 form
//! and v5 packets lowered to v3, so every user of the codec handles `v5::Packet` only and picks
//! the wire version with [`decode`] / [`encode`]. Invariants: lifting never invents a failure (a
//! v3 acknowledgement is a success), and lowering drops only what v3 cannot carry (properties,
//! reason strings, v5-only reason codes, which become the nearest v3 return code).

use mqtt_proto::{v3, v5, Protocol, VarBytes};
use thiserror::Error;

/// Why a frame or packet could not cross the codec.
#[derive(Debug, Error)]
pub enum CodecError {
    #[error(transparent)]
    V3(#[from] mqtt_proto::Error),
    #[error(transparent)]
    V5(#[from] v5::ErrorV5),
    /// The frame is shorter than its fixed header says (the caller passes whole frames).
    #[error("packet shorter than its length")]
    Truncated,
    /// The packet type does not exist in MQTT 3.x (AUTH).
    #[error("{0} has no MQTT 3.x form")]
    NoV3Form(v5::PacketType),
}

/// Decodes one whole frame sent with `proto`, as a v5 packet.
pub fn decode(frame: &[u8], proto: Protocol) -> Result<v5::Packet, CodecError> {
    if proto == Protocol::V500 {
        return v5::Packet::decode(frame)?.ok_or(CodecError::Truncated);
    }
    let p = v3::Packet::decode(frame)?.ok_or(CodecError::Truncated)?;
    Ok(lift(p))
}

/// Encodes a v5 packet for a peer speaking `proto` (the codec's buffer: no copy).
pub fn encode(p: &v5::Packet, proto: Protocol) -> Result<VarBytes, CodecError> {
    Ok(if proto == Protocol::V500 {
        p.encode()?
    } else {
        lower(p)
            .ok_or_else(|| CodecError::NoV3Form(p.get_type()))?
            .encode()?
    })
}

/// The v5 form of a v3 packet. A v3 CONNECT asks for a session that never expires by itself
/// unless it is clean (the broker caps it); a v3 SUBSCRIBE does not keep the retain flag.
pub fn lift(p: v3::Packet) -> v5::Packet {
    use v5::Packet as P;
    match p {
        v3::Packet::Connect(c) => P::Connect(v5::Connect {
            protocol: c.protocol,
            clean_start: c.clean_session,
            keep_alive: c.keep_alive,
            properties: v5::ConnectProperties {
                session_expiry_interval: Some(if c.clean_session { 0 } else { u32::MAX }),
                ..Default::default()
            },
            client_id: c.client_id,
            last_will: c.last_will.map(|w| v5::LastWill {
                qos: w.qos,
                retain: w.retain,
                topic_name: w.topic_name,
                payload: w.message,
                properties: Default::default(),
            }),
            username: c.username,
            password: c.password,
        }),
        v3::Packet::Connack(c) => P::Connack(v5::Connack::new(
            c.session_present,
            lift_connect_code(c.code),
        )),
        v3::Packet::Publish(p) => P::Publish(v5::Publish {
            dup: p.dup,
            retain: p.retain,
            qos_pid: p.qos_pid,
            topic_name: p.topic_name,
            payload: p.payload,
            properties: Default::default(),
        }),
        v3::Packet::Puback(pid) => P::Puback(v5::Puback::new_success(pid)),
        v3::Packet::Pubrec(pid) => P::Pubrec(v5::Pubrec::new_success(pid)),
        v3::Packet::Pubrel(pid) => P::Pubrel(v5::Pubrel::new_success(pid)),
        v3::Packet::Pubcomp(pid) => P::Pubcomp(v5::Pubcomp::new_success(pid)),
        v3::Packet::Subscribe(s) => P::Subscribe(v5::Subscribe::new(
            s.pid,
            s.topics
                .into_iter()
                .map(|(f, qos)| {
                    let mut o = v5::SubscriptionOptions::new(qos);
                    o.retain_as_published = false;
                    (f, o)
                })
                .collect(),
        )),
        v3::Packet::Suback(s) => P::Suback(v5::Suback::new(
            s.pid,
            s.topics.into_iter().map(lift_subscribe_code).collect(),
        )),
        v3::Packet::Unsubscribe(u) => P::Unsubscribe(v5::Unsubscribe::new(u.pid, u.topics)),
        v3::Packet::Unsuback(pid) => P::Unsuback(v5::Unsuback::new(pid, Vec::new())),
        v3::Packet::Pingreq => P::Pingreq,
        v3::Packet::Pingresp => P::Pingresp,
        v3::Packet::Disconnect => P::Disconnect(v5::Disconnect::new_normal()),
    }
}

/// The v3 form of a v5 packet, `None` for AUTH. A v5 CONNECT is sent as MQTT 3.1.1 unless it
/// names 3.1. A DISCONNECT lowers to the v3 one (a client's); MQTT 3 has no server DISCONNECT,
/// which a broker must handle by closing the connection instead.
pub fn lower(p: &v5::Packet) -> Option<v3::Packet> {
    use v3::Packet as P;
    Some(match p {
        v5::Packet::Connect(c) => P::Connect(v3::Connect {
            protocol: match c.protocol {
                Protocol::V500 => Protocol::V311,
                other => other,
            },
            clean_session: c.clean_start,
            keep_alive: c.keep_alive,
            client_id: c.client_id.clone(),
            last_will: c.last_will.as_ref().map(|w| v3::LastWill {
                qos: w.qos,
                retain: w.retain,
                topic_name: w.topic_name.clone(),
                message: w.payload.clone(),
            }),
            username: c.username.clone(),
            password: c.password.clone(),
        }),
        v5::Packet::Connack(c) => P::Connack(v3::Connack {
            session_present: c.session_present,
            code: lower_connect_code(c.reason_code),
        }),
        v5::Packet::Publish(p) => P::Publish(v3::Publish {
            dup: p.dup,
            retain: p.retain,
            qos_pid: p.qos_pid,
            topic_name: p.topic_name.clone(),
            payload: p.payload.clone(),
        }),
        v5::Packet::Puback(a) => P::Puback(a.pid),
        v5::Packet::Pubrec(a) => P::Pubrec(a.pid),
        v5::Packet::Pubrel(a) => P::Pubrel(a.pid),
        v5::Packet::Pubcomp(a) => P::Pubcomp(a.pid),
        v5::Packet::Subscribe(s) => P::Subscribe(v3::Subscribe::new(
            s.pid,
            s.topics
                .iter()
                .map(|(f, o)| (f.clone(), o.max_qos))
                .collect(),
        )),
        v5::Packet::Suback(s) => P::Suback(v3::Suback::new(
            s.pid,
            s.topics.iter().map(|c| lower_subscribe_code(*c)).collect(),
        )),
        v5::Packet::Unsubscribe(u) => P::Unsubscribe(v3::Unsubscribe::new(u.pid, u.topics.clone())),
        v5::Packet::Unsuback(u) => P::Unsuback(u.pid),
        v5::Packet::Pingreq => P::Pingreq,
        v5::Packet::Pingresp => P::Pingresp,
        v5::Packet::Disconnect(_) => P::Disconnect,
        v5::Packet::Auth(_) => return None,
    })
}

/// A v3 CONNACK return code as the v5 reason code of the same meaning.
pub fn lift_connect_code(code: v3::ConnectReturnCode) -> v5::ConnectReasonCode {
    use v3::ConnectReturnCode as C3;
    use v5::ConnectReasonCode as C5;
    match code {
        C3::Accepted => C5::Success,
        C3::UnacceptableProtocolVersion => C5::UnsupportedProtocolVersion,
        C3::IdentifierRejected => C5::ClientIdentifierNotValid,
        C3::ServerUnavailable => C5::ServerUnavailable,
        C3::BadUserNameOrPassword => C5::BadUserNameOrPassword,
        C3::NotAuthorized => C5::NotAuthorized,
    }
}

/// A v5 CONNACK reason code as the nearest v3 return code (v5-only refusals: server unavailable).
pub fn lower_connect_code(code: v5::ConnectReasonCode) -> v3::ConnectReturnCode {
    use v3::ConnectReturnCode as C3;
    use v5::ConnectReasonCode as C5;
    match code {
        C5::Success => C3::Accepted,
        C5::UnsupportedProtocolVersion => C3::UnacceptableProtocolVersion,
        C5::ClientIdentifierNotValid => C3::IdentifierRejected,
        C5::BadUserNameOrPassword => C3::BadUserNameOrPassword,
        C5::NotAuthorized | C5::Banned => C3::NotAuthorized,
        _ => C3::ServerUnavailable,
    }
}

/// A v3 SUBACK return code as the v5 reason code (a v3 failure is an unspecified error).
pub fn lift_subscribe_code(code: v3::SubscribeReturnCode) -> v5::SubscribeReasonCode {
    use v3::SubscribeReturnCode as S3;
    use v5::SubscribeReasonCode as S5;
    match code {
        S3::MaxLevel0 => S5::GrantedQoS0,
        S3::MaxLevel1 => S5::GrantedQoS1,
        S3::MaxLevel2 => S5::GrantedQoS2,
        S3::Failure => S5::UnspecifiedError,
    }
}

/// A v5 SUBACK reason code as the v3 return code (every refusal is `Failure`, 0x80).
pub fn lower_subscribe_code(code: v5::SubscribeReasonCode) -> v3::SubscribeReturnCode {
    use v3::SubscribeReturnCode as S3;
    use v5::SubscribeReasonCode as S5;
    match code {
        S5::GrantedQoS0 => S3::MaxLevel0,
        S5::GrantedQoS1 => S3::MaxLevel1,
        S5::GrantedQoS2 => S3::MaxLevel2,
        _ => S3::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_proto::{Pid, QoS, QosPid, TopicFilter, TopicName};

    fn pid(n: u16) -> Pid {
        Pid::try_from(n).unwrap()
    }

    /// Every v3 packet survives lift then lower unchanged (the v3 -> v5 -> v3 path loses nothing).
    #[test]
    fn every_v3_packet_lifts_and_lowers_back_unchanged() {
        let topic = TopicName::try_from("a/b").unwrap();
        let filter = TopicFilter::try_from("a/#").unwrap();
        let mut connect = v3::Connect::new("cid".into(), 30);
        connect.protocol = Protocol::V311;
        connect.clean_session = false;
        connect.username = Some("u".into());
        connect.password = Some(bytes::Bytes::from_static(b"p"));
        connect.last_will = Some(v3::LastWill {
            qos: QoS::Level1,
            retain: true,
            topic_name: topic.clone(),
            message: bytes::Bytes::from_static(b"bye"),
        });
        let packets = vec![
            v3::Packet::Connect(connect),
            v3::Packet::Connack(v3::Connack {
                session_present: true,
                code: v3::ConnectReturnCode::NotAuthorized,
            }),
            v3::Packet::Publish(v3::Publish::new(
                QosPid::Level2(pid(9)),
                topic,
                bytes::Bytes::from_static(b"x"),
            )),
            v3::Packet::Puback(pid(1)),
            v3::Packet::Pubrec(pid(2)),
            v3::Packet::Pubrel(pid(3)),
            v3::Packet::Pubcomp(pid(4)),
            v3::Packet::Subscribe(v3::Subscribe::new(
                pid(5),
                vec![(filter.clone(), QoS::Level2)],
            )),
            v3::Packet::Suback(v3::Suback::new(
                pid(5),
                vec![
                    v3::SubscribeReturnCode::MaxLevel1,
                    v3::SubscribeReturnCode::Failure,
                ],
            )),
            v3::Packet::Unsubscribe(v3::Unsubscribe::new(pid(6), vec![filter])),
            v3::Packet::Unsuback(pid(6)),
            v3::Packet::Pingreq,
            v3::Packet::Pingresp,
            v3::Packet::Disconnect,
        ];
        for p in packets {
            assert_eq!(lower(&lift(p.clone())).as_ref(), Some(&p));
        }
    }

    #[test]
    fn v3_codes_lift_to_the_v5_codes_of_the_same_meaning() {
        use v3::ConnectReturnCode as C3;
        use v5::ConnectReasonCode as C5;
        for (c3, c5) in [
            (C3::Accepted, C5::Success),
            (
                C3::UnacceptableProtocolVersion,
                C5::UnsupportedProtocolVersion,
            ),
            (C3::IdentifierRejected, C5::ClientIdentifierNotValid),
            (C3::ServerUnavailable, C5::ServerUnavailable),
            (C3::BadUserNameOrPassword, C5::BadUserNameOrPassword),
            (C3::NotAuthorized, C5::NotAuthorized),
        ] {
            assert_eq!(lift_connect_code(c3), c5);
            assert_eq!(lower_connect_code(c5), c3);
        }
        assert_eq!(lower_connect_code(C5::ServerBusy), C3::ServerUnavailable);
        assert_eq!(lower_connect_code(C5::Banned), C3::NotAuthorized);
        assert_eq!(
            lower_subscribe_code(v5::SubscribeReasonCode::QuotaExceeded),
            v3::SubscribeReturnCode::Failure
        );
    }

    #[test]
    fn a_clean_v3_connect_lifts_to_a_session_that_ends_with_the_connection() {
        let mut c = v3::Connect::new("cid".into(), 30);
        c.clean_session = true;
        let v5::Packet::Connect(l) = lift(v3::Packet::Connect(c.clone())) else {
            panic!("not a CONNECT")
        };
        assert_eq!(l.properties.session_expiry_interval, Some(0));
        c.clean_session = false;
        let v5::Packet::Connect(l) = lift(v3::Packet::Connect(c)) else {
            panic!("not a CONNECT")
        };
        assert_eq!(l.properties.session_expiry_interval, Some(u32::MAX));
    }

    #[test]
    fn encode_and_decode_pick_the_wire_version() {
        let connack =
            v5::Packet::Connack(v5::Connack::new(false, v5::ConnectReasonCode::ServerBusy));
        assert_eq!(
            encode(&connack, Protocol::V311).unwrap().as_ref(),
            [0x20, 0x02, 0x00, 0x03]
        );
        let back = decode(&[0x20, 0x02, 0x00, 0x05], Protocol::V311).unwrap();
        assert_eq!(
            back,
            v5::Packet::Connack(v5::Connack::new(
                false,
                v5::ConnectReasonCode::NotAuthorized
            ))
        );
        let v5_bytes = encode(&connack, Protocol::V500).unwrap();
        assert_eq!(decode(v5_bytes.as_ref(), Protocol::V500).unwrap(), connack);
        let auth = v5::Packet::Auth(v5::Auth::new_success());
        assert!(matches!(
            encode(&auth, Protocol::V311),
            Err(CodecError::NoV3Form(_))
        ));
        assert!(matches!(
            decode(&[0x20, 0x02, 0x00], Protocol::V311),
            Err(CodecError::Truncated) | Err(CodecError::V3(_))
        ));
    }

    #[test]
    fn a_v5_connect_is_lowered_as_mqtt_3_1_1() {
        let c = v5::Connect::new("cid".into(), 10);
        let Some(v3::Packet::Connect(l)) = lower(&v5::Packet::Connect(c)) else {
            panic!("not a CONNECT")
        };
        assert_eq!(l.protocol, Protocol::V311);
    }
}
