//! `window` rules: tumbling-window aggregation per local topic (count, min, max, avg, sum, first,
//! last of chosen JSON fields). Windows in progress live in the redb table `sync_windows`, updated
//! in the broker's capture transaction, and become one JSON outbox record when they end.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::SyncError;
use crate::rules::expr;

const WINDOWS: TableDefinition<&str, &[u8]> = TableDefinition::new("sync_windows");

/// One aggregate of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggOp {
    Count,
    Min,
    Max,
    Avg,
    Sum,
    First,
    Last,
}

const ALL_OPS: [AggOp; 7] = [
    AggOp::Count,
    AggOp::Min,
    AggOp::Max,
    AggOp::Avg,
    AggOp::Sum,
    AggOp::First,
    AggOp::Last,
];

/// `window = { secs = 1, fields = ["temp"], ops = ["avg", "max"], topic = "agg/{topic}" }`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    /// Window length, aligned on multiples of it since the Unix epoch. Required, >= 1.
    pub secs: u64,
    /// Dotted paths of the numeric JSON fields aggregated (none: the message count only).
    pub fields: Vec<String>,
    /// Aggregates per field; default all seven.
    pub ops: Vec<AggOp>,
    /// Remote topic template: `{topic}` = local topic, `{node_id}`; default: the rule's
    /// mapping (prefix / replace_prefix) of the local topic.
    pub topic: Option<String>,
}

/// Compiled `window` of a rule.
#[derive(Debug, Clone)]
pub struct Window {
    pub len_ms: u64,
    pub fields: Vec<(String, Vec<String>)>,
    pub ops: Vec<AggOp>,
    /// Template with `{node_id}` already expanded.
    pub topic: Option<String>,
}

/// Running aggregate of one field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldAgg {
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub first: f64,
    pub last: f64,
}

/// A window in progress, stored postcard-encoded under its local topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    /// Index of the forward rule (checked on flush: a changed configuration drops the state).
    pub rule: u32,
    pub start_ms: u64,
    pub end_ms: u64,
    pub messages: u64,
    pub fields: Vec<FieldAgg>,
}

impl Window {
    pub fn compile(c: &WindowConfig, expand: impl Fn(&str) -> String) -> Window {
        Window {
            len_ms: c.secs.saturating_mul(1000).max(1),
            fields: c
                .fields
                .iter()
                .map(|f| (f.clone(), f.split('.').map(str::to_string).collect()))
                .collect(),
            ops: if c.ops.is_empty() {
                ALL_OPS.to_vec()
            } else {
                c.ops.clone()
            },
            topic: c.topic.as_deref().map(expand),
        }
    }

    /// Start of the window holding `at_ms`.
    pub fn start_of(&self, at_ms: u64) -> u64 {
        at_ms - at_ms % self.len_ms
    }

    /// Folds one payload into `st` (non-JSON payloads and missing or non-numeric fields count
    /// as messages but add nothing to the field aggregates).
    pub fn add(&self, st: &mut WindowState, payload: &[u8]) {
        st.messages += 1;
        st.fields.resize(self.fields.len(), FieldAgg::default());
        let Ok(doc) = serde_json::from_slice::<Value>(payload) else {
            return;
        };
        for ((_, path), a) in self.fields.iter().zip(st.fields.iter_mut()) {
            let Some(v) = expr::lookup(&doc, path).and_then(Value::as_f64) else {
                continue;
            };
            if a.count == 0 {
                (a.min, a.max, a.first) = (v, v, v);
            }
            a.count += 1;
            a.min = a.min.min(v);
            a.max = a.max.max(v);
            a.sum += v;
            a.last = v;
        }
    }

    /// The JSON message emitted for a finished window.
    pub fn render(&self, topic: &str, st: &WindowState) -> Vec<u8> {
        let mut fields = Map::new();
        for ((name, _), a) in self.fields.iter().zip(&st.fields) {
            let mut m = Map::new();
            for op in &self.ops {
                let (k, v) = match op {
                    AggOp::Count => ("count", Value::from(a.count)),
                    _ if a.count == 0 => continue,
                    AggOp::Min => ("min", Value::from(a.min)),
                    AggOp::Max => ("max", Value::from(a.max)),
                    AggOp::Avg => ("avg", Value::from(a.sum / a.count as f64)),
                    AggOp::Sum => ("sum", Value::from(a.sum)),
                    AggOp::First => ("first", Value::from(a.first)),
                    AggOp::Last => ("last", Value::from(a.last)),
                };
                m.insert(k.into(), v);
            }
            fields.insert(name.clone(), Value::Object(m));
        }
        let doc = serde_json::json!({
            "topic": topic,
            "window_start_ms": st.start_ms,
            "window_end_ms": st.end_ms,
            "messages": st.messages,
            "fields": fields,
        });
        doc.to_string().into_bytes()
    }
}

/// The window in progress of `topic`, if any (an undecodable one is dropped with an error log).
pub fn load(txn: &WriteTransaction, topic: &str) -> Result<Option<WindowState>, SyncError> {
    let t = txn.open_table(WINDOWS)?;
    let v = t.get(topic)?;
    Ok(v.and_then(|g| match postcard::from_bytes(g.value()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(topic, "undecodable window state dropped: {e}");
            None
        }
    }))
}

pub fn store(txn: &WriteTransaction, topic: &str, st: &WindowState) -> Result<(), SyncError> {
    let bytes = postcard::to_allocvec(st)?;
    let mut t = txn.open_table(WINDOWS)?;
    t.insert(topic, bytes.as_slice())?;
    Ok(())
}

/// Removes and returns the windows ended at `now_ms`, with the earliest end of those left
/// (`u64::MAX`: none).
pub fn take_ended(
    txn: &WriteTransaction,
    now_ms: u64,
) -> Result<(Vec<(String, WindowState)>, u64), SyncError> {
    let mut t = txn.open_table(WINDOWS)?;
    let mut ended = Vec::new();
    let mut next = u64::MAX;
    for item in t.iter()? {
        let (k, v) = item?;
        match postcard::from_bytes::<WindowState>(v.value()) {
            Ok(s) if s.end_ms <= now_ms => ended.push((k.value().to_string(), s)),
            Ok(s) => next = next.min(s.end_ms),
            Err(e) => {
                tracing::error!(topic = k.value(), "undecodable window state dropped: {e}");
                ended.push((k.value().to_string(), WindowState::default()));
            }
        }
    }
    for (k, _) in &ended {
        t.remove(k.as_str())?;
    }
    Ok((ended, next))
}

/// Earliest end of the stored windows (`u64::MAX`: none), from a read transaction.
pub fn earliest_end(db: &redb::Database) -> Result<u64, SyncError> {
    let txn = db.begin_read()?;
    let t = match txn.open_table(WINDOWS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(u64::MAX),
        Err(e) => return Err(e.into()),
    };
    let mut next = u64::MAX;
    for item in t.iter()? {
        let (_, v) = item?;
        if let Ok(s) = postcard::from_bytes::<WindowState>(v.value()) {
            next = next.min(s.end_ms);
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_and_render() {
        let w = Window::compile(
            &WindowConfig {
                secs: 1,
                fields: vec!["t".into(), "x.y".into()],
                ops: vec![],
                topic: None,
            },
            str::to_string,
        );
        let mut st = WindowState {
            start_ms: 1000,
            end_ms: 2000,
            ..Default::default()
        };
        for p in [r#"{"t":3}"#, r#"{"t":1,"x":{"y":5}}"#, "junk", r#"{"t":5}"#] {
            w.add(&mut st, p.as_bytes());
        }
        let v: Value = serde_json::from_slice(&w.render("a/b", &st)).expect("json");
        assert_eq!(v["messages"], 4);
        assert_eq!(v["fields"]["t"]["count"], 3);
        assert_eq!(v["fields"]["t"]["min"], 1.0);
        assert_eq!(v["fields"]["t"]["max"], 5.0);
        assert_eq!(v["fields"]["t"]["avg"], 3.0);
        assert_eq!(v["fields"]["t"]["sum"], 9.0);
        assert_eq!(v["fields"]["t"]["first"], 3.0);
        assert_eq!(v["fields"]["t"]["last"], 5.0);
        assert_eq!(v["fields"]["x.y"]["count"], 1);
        assert_eq!(w.start_of(2999), 2000);
    }
}
