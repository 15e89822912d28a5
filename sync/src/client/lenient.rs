//! Liberal reading of the acknowledgements an upstream sends, used only when the strict codec
//! refuses one. Invariant: only server-to-client control packets that carry no message data
//! (CONNACK, PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT) are read this way; their fixed
//! fields (flags, packet id, reason codes) must be well formed, while properties that are unknown,
//! repeated or out of range are skipped. PUBLISH and PUBREL are never read leniently.

use edge_mqtt::reason::Code;
use mqtt_proto::v5::PacketType;

use super::inbound::{parse_offset, ConnAck, Inbound};

/// How a property's value is laid out (MQTT 5.0, table 2-4).
#[derive(Clone, Copy)]
enum Layout {
    Byte,
    U16,
    U32,
    VarInt,
    Str,
    Bin,
    Pair,
}

fn layout(id: u8) -> Option<Layout> {
    use Layout::*;
    Some(match id {
        0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => Byte,
        0x13 | 0x21 | 0x22 | 0x23 => U16,
        0x02 | 0x11 | 0x18 | 0x27 => U32,
        0x0B => VarInt,
        0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => Str,
        0x09 | 0x16 => Bin,
        0x26 => Pair,
        _ => return None,
    })
}

/// One decoded property value.
enum Value {
    Num(u32),
    Str(String),
    Pair(String, String),
    Bin,
}

/// A byte cursor over one packet body.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn var_int(&mut self) -> Option<u32> {
        let (n, v) = edge_mqtt::frame::read_var_int(self.rest())?;
        self.at += n;
        Some(v)
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        self.take(n)
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }
    fn rest(&self) -> &'a [u8] {
        &self.b[self.at.min(self.b.len())..]
    }
}

/// Walks a property block, keeping what it can read. An unknown property id ends the walk (its
/// length is unknown), which loses only the properties after it.
fn properties(c: &mut Cursor<'_>) -> Option<Vec<(u8, Value)>> {
    let len = c.var_int()? as usize;
    let block = c.take(len)?;
    let mut p = Cursor { b: block, at: 0 };
    let mut out = Vec::new();
    while let Some(id) = p.u8() {
        let Some(kind) = layout(id) else {
            tracing::debug!(
                property = id,
                "unknown property from upstream: rest skipped"
            );
            break;
        };
        let v = match kind {
            Layout::Byte => p.u8().map(|v| Value::Num(v.into())),
            Layout::U16 => p.u16().map(|v| Value::Num(v.into())),
            Layout::U32 => p.u32().map(Value::Num),
            Layout::VarInt => p.var_int().map(Value::Num),
            Layout::Str => p.string().map(Value::Str),
            Layout::Bin => p.u16().and_then(|n| p.take(n as usize)).map(|_| Value::Bin),
            Layout::Pair => p.string().zip(p.string()).map(|(k, v)| Value::Pair(k, v)),
        };
        match v {
            Some(v) => out.push((id, v)),
            None => break,
        }
    }
    Some(out)
}

fn num(props: &[(u8, Value)], id: u8) -> Option<u32> {
    props.iter().find_map(|(i, v)| match v {
        Value::Num(n) if *i == id => Some(*n),
        _ => None,
    })
}

fn text(props: &[(u8, Value)], id: u8) -> Option<String> {
    props.iter().find_map(|(i, v)| match v {
        Value::Str(s) if *i == id => Some(s.clone()),
        _ => None,
    })
}

fn offset(props: &[(u8, Value)]) -> Option<u64> {
    props.iter().find_map(|(_, v)| match v {
        Value::Pair(k, v) if k == "offset" => parse_offset(v),
        _ => None,
    })
}

/// The body of a whole frame (after the fixed header), or `None` when the header is malformed.
fn body(frame: &[u8]) -> Option<&[u8]> {
    let h = edge_mqtt::frame::fixed_header(frame, usize::MAX).ok()??;
    frame.get(h.header_len..h.frame_len())
}

/// Reads an MQTT 5 server acknowledgement that the strict codec refused. `None` when the packet
/// is not one of the kinds read leniently or its fixed fields are malformed.
pub fn decode_v5(frame: &[u8]) -> Option<Inbound> {
    let kind = *frame.first()?;
    let mut c = Cursor {
        b: body(frame)?,
        at: 0,
    };
    let props = |c: &mut Cursor<'_>| {
        if c.rest().is_empty() {
            Some(Vec::new())
        } else {
            properties(c)
        }
    };
    Some(match kind {
        0x20 => {
            let flags = c.u8()?;
            let code = c.u8()?;
            let p = props(&mut c)?;
            let max_qos = num(&p, 0x24).filter(|q| *q <= 2).map(|q| q as u8);
            Inbound::ConnAck(ConnAck {
                session_present: flags & 1 == 1,
                code: Code::from_byte(code),
                reason: text(&p, 0x1F),
                receive_max: num(&p, 0x21).filter(|v| *v > 0).map(|v| v as u16),
                max_qos,
                max_packet_size: num(&p, 0x27).filter(|v| *v > 0),
                server_keep_alive: num(&p, 0x13).map(|v| v as u16),
                session_expiry: num(&p, 0x11),
            })
        }
        0x40 | 0x50 | 0x70 => {
            let pid = c.u16().filter(|p| *p != 0)?;
            let code = if c.rest().is_empty() { 0 } else { c.u8()? };
            let p = props(&mut c)?;
            match kind {
                0x40 => Inbound::PubAck {
                    pid,
                    code: Code::from_byte(code),
                    offset: offset(&p),
                },
                0x50 => Inbound::PubRec {
                    pid,
                    code: Code::from_byte(code),
                    offset: offset(&p),
                },
                _ => Inbound::PubComp {
                    pid,
                    code: Code::from_byte(code),
                },
            }
        }
        0x90 => {
            c.u16().filter(|p| *p != 0)?;
            properties(&mut c)?;
            Inbound::SubAck {
                codes: c.rest().iter().map(|b| Code::from_byte(*b)).collect(),
            }
        }
        0xB0 => Inbound::Other(PacketType::Unsuback),
        0xE0 => {
            let code = if c.rest().is_empty() { 0 } else { c.u8()? };
            let p = props(&mut c)?;
            Inbound::Disconnect {
                code: Code::from_byte(code),
                reason: text(&p, 0x1F),
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_proto::v5;

    #[test]
    fn connack_with_an_unknown_property_keeps_the_known_ones_before_it() {
        // Receive Maximum 10, then an unknown id 0x7F.
        let f = [0x20, 0x08, 0x01, 0x00, 0x05, 0x21, 0x00, 0x0A, 0x7F, 0x01];
        match decode_v5(&f) {
            Some(Inbound::ConnAck(c)) => {
                assert!(c.session_present);
                assert_eq!(c.code, Code::Known(v5::ConnectReasonCode::Success));
                assert_eq!(c.receive_max, Some(10));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connack_out_of_range_values_are_ignored() {
        // Receive Maximum 0 (forbidden), Maximum QoS 7 (forbidden), Maximum Packet Size 0.
        let f = [
            0x20, 0x0D, 0x00, 0x00, 0x0A, 0x21, 0x00, 0x00, 0x24, 0x07, 0x27, 0x00, 0x00, 0x00,
            0x00,
        ];
        match decode_v5(&f) {
            Some(Inbound::ConnAck(c)) => {
                assert_eq!(c.receive_max, None);
                assert_eq!(c.max_qos, None);
                assert_eq!(c.max_packet_size, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn puback_with_a_repeated_reason_string_keeps_pid_code_and_offset() {
        let mut f = vec![0x40, 0x00, 0x00, 0x07, 0x10];
        let mut props = vec![0x1F, 0x00, 0x01, b'a', 0x1F, 0x00, 0x01, b'b', 0x26];
        props.extend_from_slice(&[0x00, 0x06]);
        props.extend_from_slice(b"offset");
        props.extend_from_slice(&[0x00, 0x03]);
        props.extend_from_slice(b"[9]");
        f.push(props.len() as u8);
        f.extend_from_slice(&props);
        f[1] = (f.len() - 2) as u8;
        match decode_v5(&f) {
            Some(Inbound::PubAck { pid, code, offset }) => {
                assert_eq!(
                    (pid, code, offset),
                    (
                        7,
                        Code::Known(v5::PubackReasonCode::NoMatchingSubscribers),
                        Some(9)
                    )
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn suback_with_an_unknown_reason_code_is_read() {
        let f = [0x90, 0x05, 0x00, 0x02, 0x00, 0x01, 0x03];
        match decode_v5(&f) {
            Some(Inbound::SubAck { codes }) => assert_eq!(
                codes,
                vec![
                    Code::Known(v5::SubscribeReasonCode::GrantedQoS1),
                    Code::Unknown(0x03)
                ]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn publish_and_truncated_acks_are_not_read_leniently() {
        assert!(decode_v5(&[0x30, 0x03, 0x00, 0x01, b'a']).is_none());
        assert!(decode_v5(&[0x40, 0x01, 0x00]).is_none());
        assert!(
            decode_v5(&[0x40, 0x02, 0x00, 0x00]).is_none(),
            "packet id 0"
        );
    }
}
