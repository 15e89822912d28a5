//! `batch` rules: up to N messages or T ms of one rule packed into one upstream PUBLISH (a JSON
//! array or postcard envelope, optionally zstd- or deflate-compressed), acknowledged as a unit.
//! Messages of a batch in progress are stored in redb in the capture transaction, one row each.

use base64::Engine;
use redb::{
    ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::error::SyncError;

/// Per rule: the batch in progress (`BatchHead`, postcard).
pub(crate) const HEADS: TableDefinition<u32, &[u8]> = TableDefinition::new("sync_batch_heads");
/// Messages of batches in progress, key (rule, index in the batch).
pub(crate) const ITEMS: TableDefinition<(u32, u32), &[u8]> =
    TableDefinition::new("sync_batch_items");

/// User property naming the envelope format (`json` or `postcard`).
pub const FORMAT_PROPERTY: &str = "edge-batch-format";
/// User property naming the compression (`none`, `zstd` or `deflate`).
pub const COMPRESSION_PROPERTY: &str = "edge-batch-compression";
/// User property with the number of messages in the envelope.
pub const COUNT_PROPERTY: &str = "edge-batch-count";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `[{"topic":..,"ts":..,"payload":"utf-8 text"} | {..,"payload_b64":".."}]`.
    #[default]
    Json,
    /// postcard `Vec<BatchItem>`.
    Postcard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Zstd,
    Deflate,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Postcard => "postcard",
        }
    }
    /// MQTT 5 content type of an envelope in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/vnd.robustmq-edge.batch+json",
            Format::Postcard => "application/vnd.robustmq-edge.batch+postcard",
        }
    }
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Deflate => "deflate",
        }
    }
}

/// `batch = { max_messages = 100, max_ms = 1000, topic = "batch/{node_id}/telemetry",
/// format = "postcard", compression = "zstd" }`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Sent when it holds this many messages. Required, 1..=10000.
    pub max_messages: u32,
    /// Sent this long after its first message at the latest. Required, >= 1.
    pub max_ms: u64,
    /// Upstream topic of the envelopes (`{node_id}` replaced). Required.
    pub topic: String,
    pub format: Format,
    pub compression: Compression,
}

/// One message inside an envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchItem {
    /// Upstream topic (the rule's mapping applied).
    pub topic: String,
    pub payload: Vec<u8>,
    pub received_at_ms: u64,
    pub user_properties: Vec<(String, String)>,
}

/// A batch in progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchHead {
    pub count: u32,
    pub first_ms: u64,
}

/// Compiled `batch` of a rule.
#[derive(Debug, Clone)]
pub struct Batch {
    pub max_messages: u32,
    pub max_ms: u64,
    pub topic: String,
    pub format: Format,
    pub compression: Compression,
}

impl Batch {
    pub fn compile(c: &BatchConfig, expand: impl Fn(&str) -> String) -> Batch {
        Batch {
            max_messages: c.max_messages.max(1),
            max_ms: c.max_ms.max(1),
            topic: expand(&c.topic),
            format: c.format,
            compression: c.compression,
        }
    }

    /// The envelope of `items`, compressed as configured.
    pub fn encode(&self, items: &[BatchItem]) -> Result<Vec<u8>, SyncError> {
        let raw = match self.format {
            Format::Postcard => postcard::to_allocvec(items)?,
            Format::Json => {
                let b64 = base64::engine::general_purpose::STANDARD;
                let arr: Vec<serde_json::Value> = items
                    .iter()
                    .map(|i| {
                        let mut o = serde_json::json!({"topic": i.topic, "ts": i.received_at_ms});
                        match std::str::from_utf8(&i.payload) {
                            Ok(s) => o["payload"] = s.into(),
                            Err(_) => o["payload_b64"] = b64.encode(&i.payload).into(),
                        }
                        if !i.user_properties.is_empty() {
                            o["user_properties"] = serde_json::json!(i.user_properties);
                        }
                        o
                    })
                    .collect();
                serde_json::to_vec(&arr).map_err(|e| SyncError::Invariant(json_err(e)))?
            }
        };
        Ok(match self.compression {
            Compression::None => raw,
            Compression::Deflate => miniz_oxide::deflate::compress_to_vec(&raw, 6),
            Compression::Zstd => zstd::bulk::compress(&raw, 3).map_err(SyncError::Io)?,
        })
    }
}

fn json_err(e: serde_json::Error) -> &'static str {
    tracing::error!("batch envelope: {e}");
    "batch envelope not encodable as JSON"
}

/// Decodes an envelope back to its messages (for consumers and tests): `format` and
/// `compression` as named by the `edge-batch-*` user properties.
pub fn decode(payload: &[u8], format: &str, compression: &str) -> Result<Vec<BatchItem>, String> {
    let raw = match compression {
        "none" => payload.to_vec(),
        "deflate" => miniz_oxide::inflate::decompress_to_vec(payload)
            .map_err(|e| format!("deflate: {e:?}"))?,
        "zstd" => zstd::stream::decode_all(payload).map_err(|e| format!("zstd: {e}"))?,
        other => return Err(format!("unknown compression `{other}`")),
    };
    match format {
        "postcard" => postcard::from_bytes(&raw).map_err(|e| format!("postcard: {e}")),
        "json" => {
            let arr: Vec<serde_json::Value> =
                serde_json::from_slice(&raw).map_err(|e| format!("json: {e}"))?;
            arr.into_iter()
                .map(|o| {
                    let payload = match (o["payload"].as_str(), o["payload_b64"].as_str()) {
                        (Some(s), _) => s.as_bytes().to_vec(),
                        (None, Some(b)) => base64::engine::general_purpose::STANDARD
                            .decode(b)
                            .map_err(|e| format!("payload_b64: {e}"))?,
                        _ => return Err("entry without payload".to_string()),
                    };
                    Ok(BatchItem {
                        topic: o["topic"].as_str().unwrap_or_default().to_string(),
                        payload,
                        received_at_ms: o["ts"].as_u64().unwrap_or(0),
                        user_properties: serde_json::from_value(o["user_properties"].clone())
                            .unwrap_or_default(),
                    })
                })
                .collect()
        }
        other => Err(format!("unknown format `{other}`")),
    }
}

/// Adds `item` to rule `rule`'s batch; returns the head after the addition.
pub fn add(txn: &WriteTransaction, rule: u32, item: &BatchItem) -> Result<BatchHead, SyncError> {
    let mut heads = txn.open_table(HEADS)?;
    let mut head: BatchHead = match heads.get(rule)? {
        Some(g) => postcard::from_bytes(g.value()).unwrap_or_default(),
        None => BatchHead::default(),
    };
    if head.count == 0 {
        head.first_ms = item.received_at_ms;
    }
    let mut items = txn.open_table(ITEMS)?;
    items.insert((rule, head.count), postcard::to_allocvec(item)?.as_slice())?;
    head.count += 1;
    heads.insert(rule, postcard::to_allocvec(&head)?.as_slice())?;
    Ok(head)
}

/// Removes and returns rule `rule`'s batch in progress (undecodable rows are dropped, logged).
pub fn take(txn: &WriteTransaction, rule: u32) -> Result<Vec<BatchItem>, SyncError> {
    txn.open_table(HEADS)?.remove(rule)?;
    let mut t = txn.open_table(ITEMS)?;
    let mut out = Vec::new();
    for row in t.extract_from_if((rule, 0)..=(rule, u32::MAX), |_, _| true)? {
        let (_, v) = row?;
        match postcard::from_bytes(v.value()) {
            Ok(i) => out.push(i),
            Err(e) => tracing::error!(rule, "undecodable batched message dropped: {e}"),
        }
    }
    Ok(out)
}

/// Rules whose batch in progress is due at `now_ms` (`max_ms_of(rule)` after its first message;
/// `None`: the rule has no batch any more, due at once), and the earliest deadline of the others
/// (`u64::MAX`: none).
pub fn due(
    txn: &WriteTransaction,
    now_ms: u64,
    max_ms_of: impl Fn(u32) -> Option<u64>,
) -> Result<(Vec<u32>, u64), SyncError> {
    let t = txn.open_table(HEADS)?;
    let mut due = Vec::new();
    let mut next = u64::MAX;
    for row in t.iter()? {
        let (k, v) = row?;
        let head: BatchHead = postcard::from_bytes(v.value()).unwrap_or_default();
        match max_ms_of(k.value()) {
            Some(m) if head.first_ms.saturating_add(m) > now_ms => {
                next = next.min(head.first_ms.saturating_add(m));
            }
            _ => due.push(k.value()),
        }
    }
    Ok((due, next))
}

/// Whether any batch is in progress (read transaction; at open).
pub fn any_stored(db: &redb::Database) -> Result<bool, SyncError> {
    let txn = db.begin_read()?;
    let t = match txn.open_table(HEADS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    Ok(!t.is_empty()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<BatchItem> {
        (0..50)
            .map(|i| BatchItem {
                topic: format!("t/{i}"),
                payload: if i % 7 == 0 {
                    vec![0xff, 0, i as u8]
                } else {
                    format!("{{\"v\":{i}}}").into_bytes()
                },
                received_at_ms: 1000 + i,
                user_properties: if i % 5 == 0 {
                    vec![("k".into(), "v".into())]
                } else {
                    vec![]
                },
            })
            .collect()
    }

    #[test]
    fn every_format_and_compression_round_trips() {
        for format in [Format::Json, Format::Postcard] {
            for compression in [Compression::None, Compression::Zstd, Compression::Deflate] {
                let b = Batch {
                    max_messages: 50,
                    max_ms: 1000,
                    topic: "b".into(),
                    format,
                    compression,
                };
                let env = b.encode(&items()).expect("encodes");
                let back = decode(&env, format.name(), compression.name()).expect("decodes");
                assert_eq!(back, items(), "{format:?} {compression:?}");
            }
        }
        assert!(decode(b"[]", "xml", "none").is_err());
        assert!(decode(b"junk", "json", "zstd").is_err());
    }
}
