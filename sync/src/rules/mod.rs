//! Light edge processing of forward rules between capture and the outbox: `where` filters,
//! `deadband` per topic, `latest_only` conflation, and the per-rule counters shown in status.
//! Decisions are staged per broker transaction and applied only when it commits.

pub mod batch;
pub mod expr;
pub mod latest;
pub mod window;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ForwardRule;
pub use batch::{Batch, BatchConfig};
pub use expr::Expr;
pub use window::{Window, WindowConfig};

/// What `where` and `deadband` do with a payload that is not JSON, or lacks a field they need
/// (or has it with the wrong type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    /// Not forwarded (counted as dropped by filter). The default.
    #[default]
    Drop,
    /// Forwarded as if the condition held.
    Pass,
}

/// `deadband = { field = "temp", absolute = 0.5, relative = 0.02, max_silence_secs = 300 }`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadbandConfig {
    /// Dotted path of the numeric JSON field. Required.
    pub field: String,
    /// Sent when |value - last sent| > absolute.
    pub absolute: Option<f64>,
    /// Sent when |value - last sent| > relative x |last sent| (0.02 = 2 %).
    pub relative: Option<f64>,
    /// Sent anyway when the last sent value of the topic is this old.
    pub max_silence_secs: Option<u64>,
}

/// Checks of the processing keys of `sync.forward[i]`; `Err((key, message))`.
pub fn validate(i: usize, r: &ForwardRule) -> Result<(), (String, String)> {
    let k = |f: &str| format!("sync.forward[{i}].{f}");
    if let Some(w) = &r.r#where {
        expr::parse(w).map_err(|e| (k("where"), e))?;
    }
    if let Some(d) = &r.deadband {
        if d.field.is_empty() || d.field.split('.').any(str::is_empty) {
            return Err((k("deadband.field"), "required: a dotted field path".into()));
        }
        if d.absolute.is_none() && d.relative.is_none() {
            return Err((k("deadband"), "give `absolute`, `relative` or both".into()));
        }
        for (name, v) in [("absolute", d.absolute), ("relative", d.relative)] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err((
                    k(&format!("deadband.{name}")),
                    "must be a number >= 0".into(),
                ));
            }
        }
        if d.max_silence_secs == Some(0) {
            return Err((
                k("deadband.max_silence_secs"),
                "must be at least 1 (or absent)".into(),
            ));
        }
    }
    if let Some(w) = &r.window {
        if w.secs == 0 {
            return Err((
                k("window.secs"),
                "required: window length, at least 1".into(),
            ));
        }
        if let Some(f) = w
            .fields
            .iter()
            .find(|f| f.is_empty() || f.split('.').any(str::is_empty))
        {
            return Err((
                k("window.fields"),
                format!("`{f}` is not a dotted field path"),
            ));
        }
        if r.deadband.is_some() || r.latest_only {
            return Err((
                k("window"),
                "cannot be combined with deadband or latest_only".into(),
            ));
        }
        if let Some(g) = &w.group_by {
            window::GroupBy::parse(g).map_err(|e| (k("window.group_by"), e))?;
        }
        if w.topic
            .as_ref()
            .is_some_and(|t| t.contains(['+', '#']) || t.is_empty())
        {
            return Err((
                k("window.topic"),
                "must be a topic name without wildcards".into(),
            ));
        }
    }
    if let Some(b) = &r.batch {
        if b.max_messages == 0 || b.max_messages > 10_000 {
            return Err((k("batch.max_messages"), "required: 1..=10000".into()));
        }
        if b.max_ms == 0 {
            return Err((k("batch.max_ms"), "required: at least 1".into()));
        }
        if b.topic.is_empty() || b.topic.contains(['+', '#']) {
            return Err((
                k("batch.topic"),
                "required: a topic name without wildcards".into(),
            ));
        }
        if r.window.is_some() || r.latest_only {
            return Err((
                k("batch"),
                "cannot be combined with window or latest_only".into(),
            ));
        }
    }
    Ok(())
}

/// The processing part of a compiled forward rule.
#[derive(Debug, Clone)]
pub struct Processing {
    pub filter: Option<Expr>,
    pub on_missing: OnMissing,
    pub deadband: Option<Deadband>,
    pub latest_only: bool,
    pub window: Option<Window>,
    pub batch: Option<Batch>,
}

#[derive(Debug, Clone)]
pub struct Deadband {
    pub path: Vec<String>,
    pub absolute: Option<f64>,
    pub relative: Option<f64>,
    pub max_silence_ms: Option<u64>,
}

/// Why a message was not written to the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// `where` false (or `on_missing = "drop"`).
    Filtered,
    /// Within the deadband.
    Deadband,
}

impl Processing {
    /// Compiles the keys `validate` accepted (an expression error here means validation was
    /// skipped; it is returned, never ignored).
    pub fn compile(r: &ForwardRule, expand: impl Fn(&str) -> String) -> Result<Processing, String> {
        let filter = r.r#where.as_deref().map(expr::parse).transpose()?;
        let deadband = r.deadband.as_ref().map(|d| Deadband {
            path: d.field.split('.').map(str::to_string).collect(),
            absolute: d.absolute,
            relative: d.relative,
            max_silence_ms: d.max_silence_secs.map(|s| s.saturating_mul(1000)),
        });
        Ok(Processing {
            filter,
            on_missing: r.on_missing,
            deadband,
            latest_only: r.latest_only,
            window: r.window.as_ref().map(|w| Window::compile(w, &expand)),
            batch: r.batch.as_ref().map(|b| Batch::compile(b, &expand)),
        })
    }

    pub fn is_active(&self) -> bool {
        self.filter.is_some() || self.deadband.is_some()
    }

    /// Decides for one payload. `last` is the topic's last forwarded deadband value and time;
    /// on `Keep` with a deadband the new `(value, now)` to remember is returned too.
    pub fn decide(
        &self,
        payload: &[u8],
        now_ms: u64,
        last: Option<(f64, u64)>,
    ) -> (Verdict, Option<(f64, u64)>) {
        if !self.is_active() {
            return (Verdict::Keep, None);
        }
        let pass_missing = self.on_missing == OnMissing::Pass;
        let Ok(doc) = serde_json::from_slice::<Value>(payload) else {
            return if pass_missing {
                (Verdict::Keep, None)
            } else {
                (Verdict::Filtered, None)
            };
        };
        if let Some(f) = &self.filter {
            match f.eval(&doc) {
                Ok(true) => {}
                Ok(false) => return (Verdict::Filtered, None),
                Err(_) if pass_missing => {}
                Err(_) => return (Verdict::Filtered, None),
            }
        }
        let Some(d) = &self.deadband else {
            return (Verdict::Keep, None);
        };
        let Some(v) = expr::lookup(&doc, &d.path).and_then(Value::as_f64) else {
            return if pass_missing {
                (Verdict::Keep, None)
            } else {
                (Verdict::Filtered, None)
            };
        };
        let send = match last {
            None => true,
            Some((prev, at)) => {
                let diff = (v - prev).abs();
                d.absolute.is_some_and(|a| diff > a)
                    || d.relative.is_some_and(|r| diff > r * prev.abs())
                    || d.max_silence_ms
                        .is_some_and(|s| now_ms.saturating_sub(at) >= s)
            }
        };
        if send {
            (Verdict::Keep, Some((v, now_ms)))
        } else {
            (Verdict::Deadband, None)
        }
    }
}

/// Per-rule counters (this process), as shown in the status JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStats {
    /// Index in `sync.forward`.
    pub rule: usize,
    pub filter: String,
    /// Captured messages the rule matched.
    #[serde(rename = "in")]
    pub messages_in: u64,
    /// Records written to the outbox.
    #[serde(rename = "out")]
    pub messages_out: u64,
    /// Not forwarded because of `where` (or `on_missing = "drop"`).
    pub dropped_filter: u64,
    /// Not forwarded because within the deadband.
    pub dropped_deadband: u64,
    /// Unsent records replaced by a newer one of the same topic (`latest_only`).
    pub conflated: u64,
    /// Topic + payload bytes of the matched messages.
    pub bytes_in: u64,
    /// Topic + payload bytes of the records written to the outbox (window aggregates included),
    /// less those of conflated records.
    pub bytes_out: u64,
    /// `bytes_in - bytes_out`: what filtering, deadband, conflation and windows kept off the link.
    pub bytes_saved: u64,
}

/// Counter changes of one message or window emission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    pub messages_in: u64,
    pub messages_out: u64,
    pub dropped_filter: u64,
    pub dropped_deadband: u64,
    pub conflated: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub bytes_conflated: u64,
}

impl Delta {
    fn parts(&self) -> [u64; 8] {
        [
            self.messages_in,
            self.messages_out,
            self.dropped_filter,
            self.dropped_deadband,
            self.conflated,
            self.bytes_in,
            self.bytes_out,
            self.bytes_conflated,
        ]
    }
}

/// Live counters of one rule, in `Delta` order.
#[derive(Default)]
pub struct RuleCounters([AtomicU64; 8]);

/// Changes of one transaction, applied on commit: counters per rule and deadband values.
#[derive(Default)]
pub struct Staged {
    pub counts: HashMap<usize, [u64; 8]>,
    pub deadband: HashMap<String, (f64, u64)>,
}

impl Staged {
    pub fn count(&mut self, rule: usize, d: &Delta) {
        let c = self.counts.entry(rule).or_default();
        for (a, b) in c.iter_mut().zip(d.parts()) {
            *a += b;
        }
    }
}

impl RuleCounters {
    /// Adds counter changes in `Delta` order.
    pub fn add(&self, d: &[u64; 8]) {
        for (a, b) in self.0.iter().zip(d) {
            if *b != 0 {
                a.fetch_add(*b, Ordering::Relaxed);
            }
        }
    }

    pub fn add_delta(&self, d: &Delta) {
        self.add(&d.parts());
    }

    pub fn stats(&self, rule: usize, filter: &str) -> RuleStats {
        let v: [u64; 8] = std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed));
        let bytes_out = v[6].saturating_sub(v[7]);
        RuleStats {
            rule,
            filter: filter.to_string(),
            messages_in: v[0],
            messages_out: v[1],
            dropped_filter: v[2],
            dropped_deadband: v[3],
            conflated: v[4],
            bytes_in: v[5],
            bytes_out,
            bytes_saved: v[5].saturating_sub(bytes_out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(toml: &str) -> Processing {
        let r: ForwardRule = toml::from_str(toml).expect("rule");
        validate(0, &r).expect("valid");
        Processing::compile(&r, str::to_string).expect("compiles")
    }

    #[test]
    fn where_with_on_missing() {
        let p = proc("filter = \"t/#\"\nwhere = \"temp not in 2..8\"\n");
        assert_eq!(p.decide(br#"{"temp":9}"#, 0, None).0, Verdict::Keep);
        assert_eq!(p.decide(br#"{"temp":5}"#, 0, None).0, Verdict::Filtered);
        assert_eq!(p.decide(b"garbage", 0, None).0, Verdict::Filtered);
        assert_eq!(p.decide(br#"{"x":1}"#, 0, None).0, Verdict::Filtered);
        let p = proc("filter = \"t/#\"\nwhere = \"temp > 8\"\non_missing = \"pass\"\n");
        assert_eq!(p.decide(b"garbage", 0, None).0, Verdict::Keep);
        assert_eq!(p.decide(br#"{"x":1}"#, 0, None).0, Verdict::Keep);
        assert_eq!(p.decide(br#"{"temp":1}"#, 0, None).0, Verdict::Filtered);
    }

    #[test]
    fn deadband_absolute_relative_and_silence() {
        let p = proc(
            "filter = \"t\"\ndeadband = { field = \"v\", absolute = 0.5, max_silence_secs = 10 }\n",
        );
        let (v, keep) = p.decide(br#"{"v":20}"#, 0, None);
        assert_eq!((v, keep), (Verdict::Keep, Some((20.0, 0))));
        assert_eq!(p.decide(br#"{"v":20.4}"#, 1000, keep).0, Verdict::Deadband);
        assert_eq!(p.decide(br#"{"v":19.4}"#, 1000, keep).0, Verdict::Keep);
        assert_eq!(p.decide(br#"{"v":20.1}"#, 10_000, keep).0, Verdict::Keep);
        let p = proc("filter = \"t\"\ndeadband = { field = \"a.v\", relative = 0.1 }\n");
        let last = Some((100.0, 0));
        assert_eq!(
            p.decide(br#"{"a":{"v":109}}"#, 1, last).0,
            Verdict::Deadband
        );
        assert_eq!(p.decide(br#"{"a":{"v":89}}"#, 1, last).0, Verdict::Keep);
        assert_eq!(p.decide(br#"{"a":{}}"#, 1, last).0, Verdict::Filtered);
    }

    #[test]
    fn bad_keys_are_named() {
        let bad = [
            ("where = \"temp <\"", "sync.forward[0].where"),
            ("deadband = { field = \"v\" }", "sync.forward[0].deadband"),
            (
                "deadband = { field = \"\", absolute = 1.0 }",
                "sync.forward[0].deadband.field",
            ),
            (
                "deadband = { field = \"v\", relative = -1.0 }",
                "sync.forward[0].deadband.relative",
            ),
            (
                "deadband = { field = \"v\", absolute = 1.0, max_silence_secs = 0 }",
                "sync.forward[0].deadband.max_silence_secs",
            ),
        ];
        for (extra, key) in bad {
            let r: ForwardRule =
                toml::from_str(&format!("filter = \"t\"\n{extra}\n")).expect("rule");
            let (k, _) = validate(0, &r).expect_err(extra);
            assert_eq!(k, key);
        }
    }
}
