//! Topic helpers: MQTT filter validation and matching, and the local <-> remote topic mapping
//! of forward and downlink rules (keep, add a prefix, replace a prefix; `{node_id}` expanded).

use crate::config::{DownlinkRule, ForwardRule, SyncConfig};
use crate::rules::Processing;

/// Filter validation and matching, the same rules as the broker's (one implementation).
pub use edge_mqtt::topic::{matches, valid_filter};

/// How a topic is rewritten when it crosses the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicMap {
    Keep,
    Prefix(String),
    ReplacePrefix { from: String, to: String },
}

impl TopicMap {
    /// Topics that do not start with `from` are kept unchanged.
    pub fn apply(&self, topic: &str) -> String {
        match self {
            TopicMap::Keep => topic.to_string(),
            TopicMap::Prefix(p) => format!("{p}{topic}"),
            TopicMap::ReplacePrefix { from, to } => match topic.strip_prefix(from.as_str()) {
                Some(rest) => format!("{to}{rest}"),
                None => topic.to_string(),
            },
        }
    }
}

/// A forward rule with `{node_id}` expanded and its TTL in milliseconds.
#[derive(Debug, Clone)]
pub struct CompiledForward {
    pub filter: String,
    pub map: TopicMap,
    pub qos: u8,
    pub ttl_ms: Option<u64>,
    pub priority: u8,
    pub processing: Processing,
    /// Has a `schedule` or `upstreams` gate: its records are registered in `outbox::held`.
    pub gated: bool,
}

impl CompiledForward {
    /// Fails only on a `where` expression `SyncConfig::validate` would have refused.
    pub fn compile(cfg: &SyncConfig, r: &ForwardRule) -> Result<CompiledForward, String> {
        let map = if let Some(p) = &r.prefix {
            TopicMap::Prefix(cfg.expand(p))
        } else if let Some(rp) = &r.replace_prefix {
            TopicMap::ReplacePrefix {
                from: cfg.expand(&rp.from),
                to: cfg.expand(&rp.to),
            }
        } else {
            TopicMap::Keep
        };
        Ok(CompiledForward {
            filter: cfg.expand(&r.filter),
            map,
            qos: r.qos,
            ttl_ms: r.ttl_secs.map(|s| s.saturating_mul(1000)),
            priority: r.priority,
            processing: Processing::compile(r, |t| cfg.expand(t))?,
            gated: r.schedule.is_some() || r.upstreams.is_some(),
        })
    }
}

/// A downlink rule with `{node_id}` expanded.
#[derive(Debug, Clone)]
pub struct CompiledDownlink {
    pub filter: String,
    pub map: TopicMap,
    pub qos: u8,
}

impl CompiledDownlink {
    pub fn compile(cfg: &SyncConfig, r: &DownlinkRule) -> CompiledDownlink {
        let map = match &r.replace_prefix {
            Some(rp) => TopicMap::ReplacePrefix {
                from: cfg.expand(&rp.from),
                to: cfg.expand(&rp.to),
            },
            None => TopicMap::Keep,
        };
        CompiledDownlink {
            filter: cfg.expand(&r.filter),
            map,
            qos: r.qos,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        assert_eq!(TopicMap::Prefix("n1/".into()).apply("a/b"), "n1/a/b");
        let r = TopicMap::ReplacePrefix {
            from: "cmd/n1/".into(),
            to: "cmd/".into(),
        };
        assert_eq!(r.apply("cmd/n1/reboot"), "cmd/reboot");
        assert_eq!(r.apply("other/x"), "other/x");
    }
}
