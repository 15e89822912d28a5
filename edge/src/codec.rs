//! Framing and version mapping on top of the mqtt-proto codec.
//!
//! The broker speaks MQTT 5 internally: MQTT 3.1 / 3.1.1 packets are lifted to their v5 form
//! on the way in and lowered on the way out, so session logic exists once. Frames are sized
//! from the fixed header and refused before their body is buffered when over the limit.
//!
//! The codec's own gaps (several Subscription Identifiers in a PUBLISH, the v3 SUBACK failure
//! code, Maximum QoS 2 from RobustMQ) are fixed in the fork, `vendor/mqtt-proto/PATCHES.md`.

use mqtt_proto::v5::{self, Packet};
use mqtt_proto::{v3, Protocol};

/// Why a frame could not become a packet.
#[derive(Debug)]
pub enum FrameError {
    /// Remaining length says the packet is over our maximum packet size.
    TooLarge(usize),
    Malformed(String),
    /// First packet was not a CONNECT, or the protocol level is not 3, 4 or 5.
    BadConnect(String),
    UnsupportedProtocol(u8),
}

/// Parses the fixed header: `Ok(Some((header_len, remaining_len)))` once complete (the one
/// remaining-length decoder is `edge_mqtt::frame`; the size limit is checked by the caller).
pub fn fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
    match edge_mqtt::frame::fixed_header(buf, usize::MAX) {
        Ok(h) => Ok(h.map(|h| (h.header_len, h.remaining))),
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}

/// Reads the protocol level out of a complete CONNECT frame.
pub fn connect_protocol(frame: &[u8], header_len: usize) -> Result<Protocol, FrameError> {
    if frame[0] != 0x10 {
        return Err(FrameError::BadConnect(format!(
            "first packet type {} is not CONNECT",
            frame[0] >> 4
        )));
    }
    let body = &frame[header_len..];
    if body.len() < 2 {
        return Err(FrameError::Malformed("CONNECT too short".into()));
    }
    let name_len = u16::from_be_bytes([body[0], body[1]]) as usize;
    let Some(&level) = body.get(2 + name_len) else {
        return Err(FrameError::Malformed("CONNECT too short".into()));
    };
    let name = &body[2..2 + name_len];
    match Protocol::new(name, level) {
        Ok(p) => Ok(p),
        Err(_) if name == b"MQTT" || name == b"MQIsdp" => {
            Err(FrameError::UnsupportedProtocol(level))
        }
        Err(_) => Err(FrameError::BadConnect(format!(
            "unknown protocol name {:?}",
            String::from_utf8_lossy(name)
        ))),
    }
}

/// Checks the CONNECT flags byte for combinations mqtt-proto 0.4 accepts but the
/// specifications forbid: will QoS/retain without a will [MQTT-3.1.2-11, -13, -15], will QoS 3,
/// the reserved bit [MQTT-3.1.2-3], and (MQTT 3.1.1) a password without a user name
/// [MQTT-3.1.2-22].
pub fn check_connect_flags(
    frame: &[u8],
    header_len: usize,
    proto: Protocol,
) -> Result<(), FrameError> {
    let body = frame.get(header_len..).unwrap_or(&[]);
    let name_len = match body {
        [a, b, ..] => u16::from_be_bytes([*a, *b]) as usize,
        _ => return Err(FrameError::Malformed("CONNECT too short".into())),
    };
    let Some(&flags) = body.get(2 + name_len + 1) else {
        return Err(FrameError::Malformed("CONNECT too short".into()));
    };
    let will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let reason = if flags & 0x01 != 0 {
        "reserved CONNECT flag set"
    } else if !will && (will_qos != 0 || will_retain) {
        "will QoS or retain set without a will"
    } else if will_qos == 3 {
        "will QoS 3"
    } else if proto != Protocol::V500 && flags & 0x40 != 0 && flags & 0x80 == 0 {
        "password without user name"
    } else {
        return Ok(());
    };
    Err(FrameError::Malformed(reason.into()))
}

/// Decodes one complete frame sent by a client using `proto`, as a v5 packet.
pub fn decode(frame: &[u8], proto: Protocol) -> Result<Packet, FrameError> {
    let malformed = |e: String| FrameError::Malformed(e);
    if frame.first().is_some_and(|b| b >> 4 == 3) {
        return decode_publish(frame, proto);
    }
    if proto == Protocol::V500 {
        return match Packet::decode(frame) {
            Ok(Some(p)) => Ok(p),
            Ok(None) => Err(malformed("packet shorter than its length".into())),
            Err(e) => Err(malformed(e.to_string())),
        };
    }
    let p = match v3::Packet::decode(frame) {
        Ok(Some(p)) => p,
        Ok(None) => return Err(malformed("packet shorter than its length".into())),
        Err(e) => return Err(malformed(e.to_string())),
    };
    // Packets only a server sends are malformed from a client; the rest is lifted to its v5
    // form in the one place that does so for every user of the codec (edge_mqtt::version).
    match p {
        v3::Packet::Connack(_)
        | v3::Packet::Suback(_)
        | v3::Packet::Unsuback(_)
        | v3::Packet::Pingresp => Err(FrameError::Malformed(format!(
            "{:?} is not sent by clients",
            p.get_type()
        ))),
        p => Ok(edge_mqtt::version::lift(p)),
    }
}

/// PUBLISH, the hot path, through the codec's slice decoders: `Packet::decode` runs its async
/// decoder, which zero-fills a new buffer for the payload before copying into it (measured:
/// ~4,700 instructions per 4 KB message). Same checks, same result.
fn decode_publish(frame: &[u8], proto: Protocol) -> Result<Packet, FrameError> {
    let malformed = |e: String| FrameError::Malformed(e);
    let Some((header_len, remaining)) = fixed_header(frame)? else {
        return Err(malformed("packet shorter than its length".into()));
    };
    if frame.len() < header_len + remaining {
        return Err(malformed("packet shorter than its length".into()));
    }
    let frame = &frame[..header_len + remaining];
    let (remaining, var_int_len) = (remaining as u32, header_len as u32 - 1);
    let mut offset = header_len;
    if proto == Protocol::V500 {
        let header = v5::Header::new_with(frame[0], remaining, var_int_len)
            .map_err(|e| malformed(e.to_string()))?;
        return v5::Publish::decode(frame, &mut offset, header)
            .map(Packet::Publish)
            .map_err(|e| malformed(e.to_string()));
    }
    let header = v3::Header::new_with(frame[0], remaining, var_int_len)
        .map_err(|e| malformed(e.to_string()))?;
    let p =
        v3::Publish::decode(frame, &mut offset, header).map_err(|e| malformed(e.to_string()))?;
    Ok(edge_mqtt::version::lift(v3::Packet::Publish(p)))
}

/// Encodes a v5 packet for a client using `proto`. `None` when the packet has no MQTT 3 form
/// (v3 has no server DISCONNECT: the connection is just closed).
pub fn encode(p: &Packet, proto: Protocol) -> Option<Vec<u8>> {
    if proto == Protocol::V500 {
        if let Packet::Disconnect(d) = p {
            if d.properties == v5::DisconnectProperties::default() {
                // Spelled with an explicit empty property block: some clients (rumqttc 0.25)
                // cannot read the shorter, equally valid, form.
                return Some(vec![0xE0, 0x02, d.reason_code as u8, 0x00]);
            }
        }
        return Some(p.encode().ok()?.as_ref().to_vec());
    }
    // MQTT 3 has no server DISCONNECT (the connection is just closed) and no AUTH; the rest is
    // lowered by edge_mqtt::version.
    let v3p = match p {
        Packet::Disconnect(_) | Packet::Auth(_) => return None,
        p => edge_mqtt::version::lower(p)?,
    };
    Some(v3p.encode().ok()?.as_ref().to_vec())
}

/// Largest remaining length the fixed header can carry (MQTT 1.5.5).
const MAX_REMAINING_LEN: usize = 268_435_455;

/// Appends to `out` a PUBLISH for a client using `proto`, all but its payload: fixed header,
/// topic, packet id and (v5) properties, with the remaining length counting a payload of
/// `payload_len` bytes that the caller sends right after, from the message's shared buffer
/// (no copy of the payload per subscriber). `p.payload` is ignored. Returns the whole packet's
/// length, or `None` (nothing appended) when it cannot be encoded.
pub fn encode_publish_head(
    mut p: v5::Publish,
    payload_len: usize,
    proto: Protocol,
    out: &mut Vec<u8>,
) -> Option<usize> {
    use mqtt_proto::Encodable;
    let mut control = match p.qos_pid {
        mqtt_proto::QosPid::Level0 => 0x30,
        mqtt_proto::QosPid::Level1(_) => 0x32,
        mqtt_proto::QosPid::Level2(_) => 0x34,
    };
    if p.dup {
        control |= 0x08;
    }
    if p.retain {
        control |= 0x01;
    }
    // The codec encodes the body; an empty payload makes it write everything but the payload.
    let head = |body_len: usize, out: &mut Vec<u8>| -> Option<usize> {
        let remaining = body_len.checked_add(payload_len)?;
        if remaining > MAX_REMAINING_LEN {
            return None;
        }
        out.push(control);
        edge_mqtt::frame::write_var_int(remaining, out);
        Some(1 + mqtt_proto::var_int_len(remaining).ok()? + remaining)
    };
    let start = out.len();
    p.payload = bytes::Bytes::new();
    let total = if proto == Protocol::V500 {
        let total = head(p.encode_len(), out)?;
        p.encode(out).ok().map(|_| total)
    } else {
        let body = v3::Publish {
            dup: p.dup,
            retain: p.retain,
            qos_pid: p.qos_pid,
            topic_name: p.topic_name,
            payload: bytes::Bytes::new(),
        };
        let total = head(body.encode_len(), out)?;
        body.encode(out).ok().map(|_| total)
    };
    if total.is_none() {
        out.truncate(start);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_proto::{Pid, QoS, QosPid, TopicName};

    #[test]
    fn fixed_header_reports_incomplete_and_oversized_lengths() {
        assert!(fixed_header(&[0x30]).unwrap().is_none());
        assert_eq!(fixed_header(&[0x30, 0x05]).unwrap(), Some((2, 5)));
        assert_eq!(fixed_header(&[0x30, 0x80, 0x01]).unwrap(), Some((3, 128)));
        assert!(fixed_header(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }

    #[test]
    fn several_subscription_identifiers_survive_a_round_trip() {
        let ids = [1, 300, 5].map(|i| v5::VarByteInt::try_from(i).unwrap());
        let publ = v5::Publish {
            dup: false,
            retain: false,
            qos_pid: QosPid::Level1(Pid::try_from(7).unwrap()),
            topic_name: TopicName::try_from("a/b").unwrap(),
            payload: bytes::Bytes::from_static(b"xyz"),
            properties: v5::PublishProperties {
                subscription_ids: ids.to_vec(),
                ..Default::default()
            },
        };
        let p = Packet::Publish(publ.clone());
        let bytes = encode(&p, Protocol::V500).unwrap();
        let (hlen, rem) = fixed_header(&bytes).unwrap().unwrap();
        assert_eq!(hlen + rem, bytes.len());
        match v5::Packet::decode(&bytes).unwrap().unwrap() {
            Packet::Publish(back) => assert_eq!(back, publ),
            other => panic!("{other:?}"),
        }
    }

    /// Head plus the payload appended apart is byte for byte the packet the codec encodes
    /// whole, for both versions and across the remaining length's one- to three-byte forms.
    #[test]
    fn a_publish_head_followed_by_its_payload_is_the_whole_packet() {
        for proto in [Protocol::V311, Protocol::V500] {
            for len in [0, 1, 100, 121, 127, 128, 4096, 16_383, 16_384, 70_000] {
                let publ = v5::Publish {
                    dup: len % 2 == 0,
                    retain: true,
                    qos_pid: QosPid::Level1(Pid::try_from(9).unwrap()),
                    topic_name: TopicName::try_from("a/b").unwrap(),
                    payload: bytes::Bytes::from(vec![7u8; len]),
                    properties: v5::PublishProperties {
                        message_expiry_interval: Some(30),
                        ..Default::default()
                    },
                };
                let whole = encode(&Packet::Publish(publ.clone()), proto).unwrap();
                let mut out = vec![0xAA];
                let total = encode_publish_head(publ.clone(), len, proto, &mut out).unwrap();
                out.extend_from_slice(&publ.payload);
                assert_eq!(total, whole.len(), "{proto:?} {len}");
                assert_eq!(&out[1..], &whole[..], "{proto:?} {len}");
            }
        }
    }

    #[test]
    fn a_publish_over_the_remaining_length_limit_is_not_encoded() {
        let publ = v5::Publish::new(
            QosPid::Level0,
            TopicName::try_from("t").unwrap(),
            bytes::Bytes::new(),
        );
        let mut out = vec![1, 2];
        assert_eq!(
            encode_publish_head(publ, MAX_REMAINING_LEN, Protocol::V500, &mut out),
            None
        );
        assert_eq!(out, vec![1, 2]);
    }

    #[test]
    fn mqtt3_subscribe_and_connack_map_both_ways() {
        let sub = v3::Packet::Subscribe(v3::Subscribe::new(
            Pid::try_from(3).unwrap(),
            vec![(
                mqtt_proto::TopicFilter::try_from("a/#").unwrap(),
                QoS::Level1,
            )],
        ));
        let bytes = sub.encode().unwrap().as_ref().to_vec();
        let Packet::Subscribe(s) = decode(&bytes, Protocol::V311).unwrap() else {
            panic!()
        };
        assert_eq!(s.topics[0].1.max_qos, QoS::Level1);
        assert!(!s.topics[0].1.retain_as_published);
        let connack = Packet::Connack(v5::Connack::new(false, v5::ConnectReasonCode::ServerBusy));
        let out = encode(&connack, Protocol::V311).unwrap();
        assert_eq!(out, vec![0x20, 0x02, 0x00, 0x03]);
        let suback = Packet::Suback(v5::Suback::new(
            Pid::try_from(9).unwrap(),
            vec![
                v5::SubscribeReasonCode::GrantedQoS1,
                v5::SubscribeReasonCode::QuotaExceeded,
            ],
        ));
        let out = encode(&suback, Protocol::V311).unwrap();
        assert_eq!(out, vec![0x90, 0x04, 0x00, 0x09, 0x01, 0x80]);
    }

    /// A retained v5 PUBLISH (not DUP) with `properties` and the user property k = v.
    fn retained_v5_publish(
        qos_pid: QosPid,
        topic: &str,
        payload: bytes::Bytes,
        mut properties: v5::PublishProperties,
    ) -> v5::Packet {
        properties.user_properties.push(v5::UserProperty {
            name: "k".into(),
            value: "v".into(),
        });
        v5::Packet::Publish(v5::Publish {
            dup: false,
            retain: true,
            qos_pid,
            topic_name: TopicName::try_from(topic).unwrap(),
            payload,
            properties,
        })
    }

    /// Changes one to three random bytes of `frame` (not empty).
    fn mutate(rng: &mut fastrand::Rng, frame: &mut [u8]) {
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..frame.len());
            frame[at] = rng.u8(..);
        }
    }

    /// The PUBLISH fast path decodes exactly what the codec's general decoder does (same
    /// packet, same accept / refuse), on valid and mutated frames of both versions.
    #[test]
    fn publish_fast_path_agrees_with_the_codec() {
        let properties = v5::PublishProperties {
            payload_is_utf8: Some(false),
            subscription_ids: vec![v5::VarByteInt::try_from(3).unwrap()],
            ..Default::default()
        };
        let v5p = retained_v5_publish(
            QosPid::Level1(Pid::try_from(5).unwrap()),
            "a/b",
            bytes::Bytes::from(vec![1u8; 300]),
            properties,
        );
        let v3p = v3::Packet::Publish(v3::Publish::new(
            QosPid::Level2(Pid::try_from(9).unwrap()),
            TopicName::try_from("x/y/z").unwrap(),
            bytes::Bytes::from(vec![2u8; 200]),
        ));
        let seeds = [
            (Protocol::V500, v5p.encode().unwrap().as_ref().to_vec()),
            (Protocol::V311, v3p.encode().unwrap().as_ref().to_vec()),
        ];
        let mut rng = fastrand::Rng::with_seed(0xfa57);
        for i in 0..50_000 {
            let (proto, seed) = &seeds[i % 2];
            let mut f = seed.clone();
            if i >= 2 {
                mutate(&mut rng, &mut f);
                f[0] = 0x30 | (f[0] & 0x0f);
            }
            let general = if *proto == Protocol::V500 {
                v5::Packet::decode(&f).ok().flatten()
            } else {
                v3::Packet::decode(&f)
                    .ok()
                    .flatten()
                    .map(edge_mqtt::version::lift)
                    .filter(|p| matches!(p, Packet::Publish(_)))
            };
            // The general decoder reads a prefix; the fast path takes only whole frames.
            let whole = matches!(fixed_header(&f), Ok(Some((h, r))) if h + r == f.len());
            if !whole {
                continue;
            }
            assert_eq!(decode(&f, *proto).ok(), general, "{proto:?} {f:?}");
        }
    }

    /// Random and mutated frames never panic the decoder, whatever the protocol version.
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let publish = retained_v5_publish(
            QosPid::Level2(Pid::try_from(77).unwrap()),
            "a/b/c",
            bytes::Bytes::from_static(b"payload"),
            v5::PublishProperties::default(),
        );
        let seeds: Vec<Vec<u8>> = vec![
            publish.encode().unwrap().as_ref().to_vec(),
            v5::Packet::Connect(v5::Connect::new("cid".into(), 30))
                .encode()
                .unwrap()
                .as_ref()
                .to_vec(),
            v3::Packet::Connect(v3::Connect::new("cid".into(), 30))
                .encode()
                .unwrap()
                .as_ref()
                .to_vec(),
        ];
        for i in 0..200_000 {
            let mut frame = if i % 2 == 0 {
                let len = rng.usize(0..64);
                (0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>()
            } else {
                let mut f = seeds[rng.usize(..seeds.len())].clone();
                mutate(&mut rng, &mut f);
                f
            };
            if rng.bool() && !frame.is_empty() {
                frame[0] = 0x10;
            }
            if let Ok(Some((h, _))) = fixed_header(&frame) {
                let _ = connect_protocol(&frame, h.min(frame.len()));
            }
            for proto in [Protocol::V310, Protocol::V311, Protocol::V500] {
                let _ = decode(&frame, proto);
            }
        }
    }
}
