//! `window` rules: tumbling-window aggregation per local topic, or per group of topics
//! (`group_by`: the first N levels, or a template of levels), of chosen JSON fields (count, min,
//! max, avg, sum, first, last). Windows in progress live in the redb table `sync_windows`, updated
//! in the broker's capture transaction, and become one JSON outbox record when they end.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::SyncError;
use crate::rules::expr;

pub(crate) const WINDOWS: TableDefinition<&str, &[u8]> = TableDefinition::new("sync_windows");

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
    /// Remote topic template: `{topic}` = local topic (the group with `group_by`), `{node_id}`;
    /// default: the rule's mapping (prefix / replace_prefix) of the local topic (or group).
    pub topic: Option<String>,
    /// One window per group of topics instead of per topic: `"level:N"` groups by the first N
    /// levels (`factory/line1/sensor7/temp` -> `factory/line1` with `level:2`), a template such
    /// as `"{1}/{2}/{4}"` builds the group from chosen levels (1 = first; a level the topic lacks
    /// is empty).
    pub group_by: Option<String>,
}

/// Compiled `group_by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// The first N levels.
    Levels(usize),
    /// Literal text and level references (0-based).
    Template(Vec<GroupPart>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupPart {
    Text(String),
    Level(usize),
}

/// Most levels a `group_by` may name.
const MAX_GROUP_LEVEL: usize = 64;

impl GroupBy {
    /// Parses `level:N` or a `{N}` template; the error says what is wrong.
    pub fn parse(s: &str) -> Result<GroupBy, String> {
        if let Some(n) = s.strip_prefix("level:") {
            return match n.parse::<usize>() {
                Ok(n) if (1..=MAX_GROUP_LEVEL).contains(&n) => Ok(GroupBy::Levels(n)),
                _ => Err(format!("`{s}`: level:N needs N in 1..={MAX_GROUP_LEVEL}")),
            };
        }
        if s.contains(['+', '#']) {
            return Err(format!("`{s}`: wildcards are not allowed"));
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(GroupPart::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("`{s}`: unclosed `{{`"))?;
            let n = after[..close]
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_GROUP_LEVEL).contains(n))
                .ok_or_else(|| {
                    format!(
                        "`{s}`: `{{{}}}` is not a level number 1..={MAX_GROUP_LEVEL}",
                        &after[..close]
                    )
                })?;
            parts.push(GroupPart::Level(n - 1));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(GroupPart::Text(rest.to_string()));
        }
        if !parts.iter().any(|p| matches!(p, GroupPart::Level(_))) {
            return Err(format!(
                "`{s}`: expected level:N or a template naming levels, such as {{1}}/{{2}}"
            ));
        }
        Ok(GroupBy::Template(parts))
    }

    /// The group of a local topic.
    pub fn group(&self, topic: &str) -> String {
        match self {
            GroupBy::Levels(n) => match topic.match_indices('/').nth(n - 1) {
                Some((i, _)) => topic[..i].to_string(),
                None => topic.to_string(),
            },
            GroupBy::Template(parts) => {
                let levels: Vec<&str> = topic.split('/').collect();
                let mut out = String::with_capacity(topic.len());
                for p in parts {
                    match p {
                        GroupPart::Text(t) => out.push_str(t),
                        GroupPart::Level(i) => out.push_str(levels.get(*i).copied().unwrap_or("")),
                    }
                }
                out
            }
        }
    }
}

/// Key of a grouped window in `sync_windows`: NUL (never in an MQTT topic) + rule + NUL + group,
/// so a group never collides with a topic's own window or another rule's group.
pub fn group_key(rule: usize, group: &str) -> String {
    format!("\0{rule}\0{group}")
}

/// The topic (or group) a `sync_windows` key stands for.
pub fn key_topic(key: &str) -> &str {
    match key.strip_prefix('\0').and_then(|k| k.split_once('\0')) {
        Some((_, group)) => group,
        None => key,
    }
}

/// Compiled `window` of a rule.
#[derive(Debug, Clone)]
pub struct Window {
    pub len_ms: u64,
    pub fields: Vec<(String, Vec<String>)>,
    pub ops: Vec<AggOp>,
    /// Template with `{node_id}` already expanded.
    pub topic: Option<String>,
    pub group_by: Option<GroupBy>,
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
            // Validated with the configuration; a bad one here aggregates per topic.
            group_by: c.group_by.as_deref().and_then(|g| GroupBy::parse(g).ok()),
        }
    }

    /// The `sync_windows` key of a local topic's window under rule `rule`.
    pub fn key(&self, rule: usize, topic: &str) -> String {
        match &self.group_by {
            Some(g) => group_key(rule, &g.group(topic)),
            None => topic.to_string(),
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
                group_by: None,
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

    #[test]
    fn group_by_levels_and_templates() {
        let t = "factory/line1/sensor0042/temp";
        assert_eq!(GroupBy::parse("level:2").unwrap().group(t), "factory/line1");
        assert_eq!(GroupBy::parse("level:9").unwrap().group(t), t);
        let g = GroupBy::parse("{1}/{2}/{4}").unwrap();
        assert_eq!(g.group(t), "factory/line1/temp");
        assert_eq!(g.group("factory/line2"), "factory/line2/");
        assert_eq!(GroupBy::parse("lines/{2}").unwrap().group(t), "lines/line1");
        for bad in [
            "level:0", "level:x", "{0}", "{1", "plain", "a/+/{1}", "{99}",
        ] {
            assert!(GroupBy::parse(bad).is_err(), "{bad}");
        }
        let k = group_key(3, "factory/line1");
        assert_eq!(key_topic(&k), "factory/line1");
        assert_eq!(key_topic("factory/line1/s1"), "factory/line1/s1");
        assert_ne!(k, group_key(4, "factory/line1"));
    }
}
