//! What the tables hold, as postcard records: sessions, wills, queued deliveries. A record's
//! field order is its format on disk; [`DeliveryRef`] writes exactly the bytes of a
//! [`DeliveryRecord`] from borrowed parts (no copy of the message to store it).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::message::Message;
use crate::topic::SubOptions;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WillRecord {
    pub msg: Message,
    pub delay_secs: u32,
}

/// A persistent session as stored. Only sessions that outlive their connection are stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub protocol: u8,
    pub expiry_secs: u32,
    pub subscriptions: Vec<(String, SubOptions)>,
    /// `None` while connected; when the broker starts and finds `None`, the broker stopped
    /// while the client was connected, so its will is due.
    pub disconnected_ms: Option<u64>,
    pub will: Option<WillRecord>,
}

/// A message waiting for, or in flight to, one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub msg: Message,
    pub qos: u8,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    /// Packet id once sent (0 = not sent yet); kept so redelivery reuses it. Stored in
    /// `session_queue_state`, filled in when the queue is read.
    pub pid: u16,
    /// QoS 2: PUBREC received, PUBREL sent; only the PUBCOMP is missing.
    pub released: bool,
}

/// A [`DeliveryRecord`] as written: same fields, same order, borrowed.
#[derive(Serialize)]
pub(super) struct DeliveryRef<'a> {
    pub msg: &'a Message,
    pub qos: u8,
    pub retain: bool,
    pub sub_ids: &'a [u32],
    pub pid: u16,
    pub released: bool,
}

pub(super) fn decode<T: for<'a> Deserialize<'a>>(table: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|source| Error::Corrupt { table, source })
}

pub(super) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(Error::Encode)
}

/// Appends the encoding of `v` to `buf` (records of a commit share one buffer).
pub(super) fn encode_append<T: Serialize>(v: &T, buf: &mut Vec<u8>) -> Result<()> {
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(v, taken).map_err(Error::Encode)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_delivery_encodes_to_the_bytes_of_a_delivery_record() {
        let rec = DeliveryRecord {
            msg: Message {
                topic: "a/b".into(),
                payload: bytes::Bytes::from_static(b"payload"),
                qos: 2,
                retain: true,
                received_ms: 77,
                expiry_secs: Some(9),
                publisher: "pub".into(),
                from_downlink: false,
                props: None,
            },
            qos: 1,
            retain: true,
            sub_ids: vec![3, 400],
            pid: 0,
            released: false,
        };
        let borrowed = DeliveryRef {
            msg: &rec.msg,
            qos: rec.qos,
            retain: rec.retain,
            sub_ids: &rec.sub_ids,
            pid: 0,
            released: false,
        };
        let mut buf = vec![1, 2, 3];
        encode_append(&borrowed, &mut buf).unwrap();
        assert_eq!(buf[..3], [1, 2, 3], "appended, what was there is kept");
        assert_eq!(buf[3..], encode(&rec).unwrap());
        let back: DeliveryRecord = decode("session_queue", &buf[3..]).unwrap();
        assert_eq!(back, rec);
    }
}
