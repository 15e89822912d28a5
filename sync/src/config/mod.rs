//! `[sync]` configuration: upstream link, outbox bounds, forward and downlink rules.
//!
//! Deserialized as the `sync` field of the broker's `Config`, in the same pass as the rest of
//! the file, then checked by [`SyncConfig::validate`]. Defaults follow the broker's style: every
//! struct is `#[serde(default)]` and its `Default` impl holds the documented values; the
//! required keys (`node_id`, `upstreams`, a rule's `filter`) default to empty and `validate`
//! refuses them empty. Upstream addresses are parsed into [`Upstream`] while deserializing, so
//! a bad one is an error naming `sync.upstreams[i]`, never a silently dropped entry.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::SyncError;
pub use crate::rules::{BatchConfig, DeadbandConfig, OnMissing, WindowConfig};
pub use crate::schedule::{ScheduleConfig, UpstreamScheduleConfig};
use crate::{rules, schedule, topic};

/// Highest priority value a forward rule may use (priorities are `0..=MAX_PRIORITY`, higher first).
pub const MAX_PRIORITY: u8 = 3;

/// The `[sync]` table. Every key is optional except `node_id` and `upstreams` (see module doc).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// This gateway's id: part of every `edge-msg-id`, and the `{node_id}` placeholder in topics.
    /// Required.
    pub node_id: String,
    /// `tcp://host:port` or `tls://host:port` (also `mqtt://`, `mqtts://`), tried in turn;
    /// parsed when the configuration is read. Required, at least one.
    pub upstreams: Vec<Upstream>,
    /// Fixed MQTT client id of the persistent upstream session; default `edge-<node_id>`.
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// RobustMQ tenant, sent as the v5 CONNECT user property `tenant`.
    pub tenant: Option<String>,
    /// "5" (default) or "3.1.1". With "5", a server answering "unsupported protocol version" is
    /// retried with 3.1.1 automatically.
    pub protocol: ProtocolVersion,
    pub tls: Option<TlsConfig>,
    /// Default 30.
    pub keep_alive_secs: u16,
    /// Session Expiry Interval asked for the persistent upstream session (v5). Default 1800.
    pub session_expiry_secs: u32,
    /// Default 10.
    pub connect_timeout_secs: u64,
    /// Most QoS 1/2 messages sent upstream and not yet acknowledged. Default 64.
    pub max_inflight: u16,
    pub backoff: BackoffConfig,
    /// Drain pacing; 0 means no cap. Default 500 messages and 1 MiB per second.
    pub max_messages_per_sec: u32,
    pub max_bytes_per_sec: u64,
    /// Bound of the outbox (payload + topic + properties bytes of all buffered records).
    /// Default 256 MiB.
    pub max_backlog_bytes: u64,
    pub full_policy: FullPolicy,
    /// Capture QoS 0 local publishes too (they are sent upstream with the rule's QoS). Default on.
    pub capture_qos0: bool,
    pub forward: Vec<ForwardRule>,
    pub downlink: Vec<DownlinkRule>,
    /// Default 10.
    pub status_interval_secs: u64,
    /// Zone of every schedule's windows: "UTC" (default), "local" (the system's zone, with its
    /// daylight-saving rules) or an IANA name such as "Europe/Berlin".
    pub timezone: String,
    /// Upstreams used only inside time windows (`schedule::UpstreamScheduleConfig`).
    pub upstream_schedule: Vec<UpstreamScheduleConfig>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            node_id: String::new(),
            upstreams: Vec::new(),
            client_id: None,
            username: None,
            password: None,
            tenant: None,
            protocol: ProtocolVersion::default(),
            tls: None,
            keep_alive_secs: 30,
            session_expiry_secs: 1800,
            connect_timeout_secs: 10,
            max_inflight: 64,
            backoff: BackoffConfig::default(),
            max_messages_per_sec: 500,
            max_bytes_per_sec: 1024 * 1024,
            max_backlog_bytes: 256 * 1024 * 1024,
            full_policy: FullPolicy::default(),
            capture_qos0: true,
            forward: Vec::new(),
            downlink: Vec::new(),
            status_interval_secs: 10,
            timezone: "UTC".into(),
            upstream_schedule: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ProtocolVersion {
    #[default]
    #[serde(rename = "5")]
    V5,
    #[serde(rename = "3.1.1")]
    V311,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM bundle of CAs trusted for the upstream; absent = the built-in Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for mutual TLS (both or neither).
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Name checked against the server certificate; default: the host of the upstream address.
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    /// Default 500.
    pub initial_ms: u64,
    /// Default 30000.
    pub max_ms: u64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial_ms: 500,
            max_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Evict the oldest record of the lowest non-empty priority to make room (counted).
    #[default]
    DropOldest,
    /// Refuse new messages (QoS 1/2 publishers get reason 0x97) until the backlog shrinks.
    RejectNew,
}

/// Both keys required: there is no meaningful default prefix.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplacePrefix {
    pub from: String,
    pub to: String,
}

/// One `[[sync.forward]]` rule; `filter` is required.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardRule {
    /// Local topic filter (`+` and `#` allowed; `{node_id}` is replaced).
    pub filter: String,
    /// Remote topic = `prefix` + local topic (`{node_id}` is replaced).
    pub prefix: Option<String>,
    /// Remote topic = local topic with leading `from` replaced by `to`.
    pub replace_prefix: Option<ReplacePrefix>,
    /// Upstream QoS, 1 (default) or 2.
    pub qos: u8,
    /// Records older than this are dropped unsent (counted as `ttl`).
    pub ttl_secs: Option<u64>,
    /// 0 (default) ..=3, higher drains first.
    pub priority: u8,
    /// Condition on JSON payload fields; only messages satisfying it are forwarded (see
    /// "Edge processing" in the README and `rules::expr`).
    pub r#where: Option<String>,
    /// Non-JSON payloads and missing/mistyped fields needed by `where` or `deadband`.
    pub on_missing: OnMissing,
    pub deadband: Option<DeadbandConfig>,
    /// Conflation: one unsent record per upstream topic, the newest.
    pub latest_only: bool,
    /// Tumbling-window aggregation per local topic instead of forwarding each message.
    pub window: Option<WindowConfig>,
    /// Several messages of the rule in one upstream PUBLISH.
    pub batch: Option<BatchConfig>,
    /// Time windows the rule's records may be sent in; outside them they wait in the outbox
    /// (other rules' records keep flowing).
    pub schedule: Option<ScheduleConfig>,
    /// The upstreams (addresses as in `sync.upstreams`) the rule's records may be sent over;
    /// over the others they wait in the outbox. Default: any.
    pub upstreams: Option<Vec<String>>,
}

impl Default for ForwardRule {
    fn default() -> Self {
        ForwardRule {
            filter: String::new(),
            prefix: None,
            replace_prefix: None,
            qos: 1,
            ttl_secs: None,
            priority: 0,
            r#where: None,
            on_missing: OnMissing::default(),
            deadband: None,
            latest_only: false,
            window: None,
            batch: None,
            schedule: None,
            upstreams: None,
        }
    }
}

/// One `[[sync.downlink]]` rule; `filter` is required.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownlinkRule {
    /// Remote topic filter subscribed upstream (`{node_id}` is replaced).
    pub filter: String,
    /// Local topic = remote topic with leading `from` replaced by `to`; absent = keep.
    pub replace_prefix: Option<ReplacePrefix>,
    /// Subscription QoS upstream, 0..=2 (default 1); local delivery uses the QoS the message
    /// came with.
    pub qos: u8,
}

impl Default for DownlinkRule {
    fn default() -> Self {
        DownlinkRule {
            filter: String::new(),
            replace_prefix: None,
            qos: 1,
        }
    }
}

/// One parsed `upstreams` entry; deserialized from its address string with [`parse_upstream`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Upstream {
    /// `http://` / `https://`: RobustMQ's HTTP publish API instead of MQTT (`uplink::http`).
    pub http: bool,
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match (self.http, self.tls) {
            (true, true) => "https",
            (true, false) => "http",
            (false, true) => "tls",
            (false, false) => "tcp",
        };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl TryFrom<String> for Upstream {
    type Error = String;

    fn try_from(s: String) -> Result<Upstream, String> {
        parse_upstream(&s)
    }
}

/// Parses `tcp://`, `mqtt://` (plain) or `tls://`, `mqtts://` (TLS) followed by `host[:port]`;
/// IPv6 hosts in brackets. Without a port: 1883 plain, 8883 TLS (RobustMQ's TLS port is 1885).
pub fn parse_upstream(s: &str) -> Result<Upstream, String> {
    let (http, tls, rest) = if let Some(r) = s.strip_prefix("tcp://").or(s.strip_prefix("mqtt://"))
    {
        (false, false, r)
    } else if let Some(r) = s.strip_prefix("tls://").or(s.strip_prefix("mqtts://")) {
        (false, true, r)
    } else if let Some(r) = s.strip_prefix("http://") {
        (true, false, r)
    } else if let Some(r) = s.strip_prefix("https://") {
        (true, true, r)
    } else {
        return Err(format!(
            "`{s}`: must start with tcp://, mqtt://, tls://, mqtts://, http:// or https://"
        ));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let default_port = match (http, tls) {
        (true, true) => 443,
        (true, false) => 80,
        (false, true) => 8883,
        (false, false) => 1883,
    };
    let (host, port) = match rest.rsplit_once(':') {
        // `[::1]` alone: the colon belongs to the address.
        Some((h, p)) if !p.ends_with(']') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("`{s}`: port is not a number 1..65535"))?,
        ),
        _ => (rest, default_port),
    };
    if host.contains('/') {
        return Err(format!("`{s}`: a path is not allowed"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(format!("`{s}`: empty host or port 0"));
    }
    Ok(Upstream {
        http,
        tls,
        host: host.to_string(),
        port,
    })
}

impl SyncConfig {
    /// Parses a TOML document holding the `sync` table's body (tests and tools; the broker
    /// reads `[sync]` as part of its own configuration).
    pub fn from_toml_str(s: &str) -> Result<SyncConfig, SyncError> {
        let de = toml::Deserializer::parse(s).map_err(|e| SyncError::Config {
            key: "sync".into(),
            message: e.to_string(),
        })?;
        let cfg: SyncConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = key_of(e.path());
            SyncError::Config {
                key,
                message: e.into_inner().message().to_string(),
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The checks deserialization cannot express (ranges, required keys, rule consistency,
    /// readable TLS files). The broker runs it when it loads its configuration; errors name
    /// the key as `sync.<key>`.
    pub fn validate(&self) -> Result<(), SyncError> {
        let bad = |key: String, message: String| Err(SyncError::Config { key, message });
        if self.node_id.is_empty() {
            return bad(
                "sync.node_id".into(),
                "required: 1..=128 characters without '/', '+', '#' or ':'".into(),
            );
        }
        if self.node_id.contains(['/', '+', '#', ':']) || self.node_id.len() > 128 {
            return bad(
                "sync.node_id".into(),
                "must be 1..=128 characters without '/', '+', '#' or ':'".into(),
            );
        }
        if self.upstreams.is_empty() {
            return bad(
                "sync.upstreams".into(),
                "at least one address needed".into(),
            );
        }
        if self.upstreams.iter().any(|u| u.http) {
            if self.upstreams.iter().any(|u| !u.http) {
                return bad(
                    "sync.upstreams".into(),
                    "either MQTT (tcp/tls/mqtt/mqtts) or HTTP (http/https) addresses, not both"
                        .into(),
                );
            }
            if !self.downlink.is_empty() {
                return bad(
                    "sync.downlink".into(),
                    "needs an MQTT upstream (the HTTP API cannot subscribe)".into(),
                );
            }
        }
        if let Some(c) = &self.client_id {
            if c.is_empty() || c.len() > 65535 {
                return bad("sync.client_id".into(), "must not be empty".into());
            }
        }
        if self.protocol == ProtocolVersion::V311 && self.client_id().len() > 23 {
            // MQTT 3.1.1 servers must accept 1..=23 characters; RobustMQ refuses anything longer.
            tracing::warn!(
                client_id = %self.client_id(),
                "sync.client_id is over 23 characters: RobustMQ (and other MQTT 3.1.1 servers) may refuse it (identifier rejected)"
            );
        }
        if let Some(t) = &self.tenant {
            if t.is_empty() || t.contains('@') {
                return bad(
                    "sync.tenant".into(),
                    "must be a non-empty name without `@`".into(),
                );
            }
            // MQTT 3.1.1 has no properties: the tenant is sent as `tenant@username`.
            if self.protocol == ProtocolVersion::V311 && self.username.is_none() {
                return bad(
                    "sync.tenant".into(),
                    "with protocol \"3.1.1\" the tenant is sent as `tenant@username`, so sync.username is required".into(),
                );
            }
        }
        if let Some(t) = &self.tls {
            for (name, f) in [
                ("ca_file", &t.ca_file),
                ("client_cert_file", &t.client_cert_file),
                ("client_key_file", &t.client_key_file),
            ] {
                if let Some(p) = f {
                    if let Err(e) = std::fs::metadata(p) {
                        return bad(format!("sync.tls.{name}"), format!("{}: {e}", p.display()));
                    }
                }
            }
            if t.client_cert_file.is_some() != t.client_key_file.is_some() {
                return bad(
                    "sync.tls.client_key_file".into(),
                    "client_cert_file and client_key_file go together".into(),
                );
            }
        }
        if self.max_inflight == 0 {
            return bad("sync.max_inflight".into(), "must be at least 1".into());
        }
        if self.keep_alive_secs == 0 {
            return bad("sync.keep_alive_secs".into(), "must be at least 1".into());
        }
        if self.connect_timeout_secs == 0 {
            return bad(
                "sync.connect_timeout_secs".into(),
                "must be at least 1".into(),
            );
        }
        if self.backoff.initial_ms == 0 {
            return bad(
                "sync.backoff.initial_ms".into(),
                "must be at least 1".into(),
            );
        }
        if self.backoff.max_ms < self.backoff.initial_ms {
            return bad(
                "sync.backoff.max_ms".into(),
                "must be >= backoff.initial_ms".into(),
            );
        }
        if self.max_backlog_bytes < 1024 {
            return bad(
                "sync.max_backlog_bytes".into(),
                "must be at least 1024".into(),
            );
        }
        if self.status_interval_secs == 0 {
            return bad(
                "sync.status_interval_secs".into(),
                "must be at least 1".into(),
            );
        }
        for (i, r) in self.forward.iter().enumerate() {
            let k = |f: &str| format!("sync.forward[{i}].{f}");
            if r.filter.is_empty() {
                return bad(k("filter"), "required".into());
            }
            let filter = self.expand(&r.filter);
            if !topic::valid_filter(&filter) {
                return bad(
                    k("filter"),
                    format!("`{}` is not a valid topic filter", r.filter),
                );
            }
            if r.qos != 1 && r.qos != 2 {
                return bad(k("qos"), format!("{} is not 1 or 2", r.qos));
            }
            if r.priority > MAX_PRIORITY {
                return bad(
                    k("priority"),
                    format!("{} is above {MAX_PRIORITY}", r.priority),
                );
            }
            if r.prefix.is_some() && r.replace_prefix.is_some() {
                return bad(
                    k("replace_prefix"),
                    "use either prefix or replace_prefix, not both".into(),
                );
            }
            if let Some(p) = &r.prefix {
                let p = self.expand(p);
                if p.contains(['+', '#']) {
                    return bad(k("prefix"), "must not contain wildcards".into());
                }
            }
            if let Some(rp) = &r.replace_prefix {
                if self.expand(&rp.to).contains(['+', '#']) {
                    return bad(k("replace_prefix.to"), "must not contain wildcards".into());
                }
            }
            if r.ttl_secs == Some(0) {
                return bad(k("ttl_secs"), "must be at least 1 (or absent)".into());
            }
            if let Err((key, message)) = rules::validate(i, r) {
                return bad(key, message);
            }
        }
        if self.upstreams.iter().any(|u| u.http) && !self.upstream_schedule.is_empty() {
            return bad(
                "sync.upstream_schedule".into(),
                "not supported with HTTP upstreams (rule schedules are)".into(),
            );
        }
        if let Err((key, message)) = schedule::Gates::compile(self) {
            return bad(key, message);
        }
        for (i, r) in self.downlink.iter().enumerate() {
            let k = |f: &str| format!("sync.downlink[{i}].{f}");
            if r.filter.is_empty() {
                return bad(k("filter"), "required".into());
            }
            if !topic::valid_filter(&self.expand(&r.filter)) {
                return bad(
                    k("filter"),
                    format!("`{}` is not a valid topic filter", r.filter),
                );
            }
            if r.qos > 2 {
                return bad(k("qos"), format!("{} is not 0, 1 or 2", r.qos));
            }
            if let Some(rp) = &r.replace_prefix {
                if self.expand(&rp.to).contains(['+', '#']) {
                    return bad(k("replace_prefix.to"), "must not contain wildcards".into());
                }
            }
        }
        Ok(())
    }

    /// Replaces `{node_id}` in a topic, prefix or filter template.
    pub fn expand(&self, template: &str) -> String {
        template.replace("{node_id}", &self.node_id)
    }

    pub fn client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("edge-{}", self.node_id))
    }

    /// The upstreams, parsed when the configuration was read (a copy of `upstreams`: a few
    /// short strings, taken once per connection attempt).
    pub fn upstream_list(&self) -> Vec<Upstream> {
        self.upstreams.clone()
    }
}

/// `sync.<path>` for a serde path inside the `sync` table (`sync` for the table itself).
fn key_of(path: &serde_path_to_error::Path) -> String {
    let path = path.to_string();
    if path == "." || path.is_empty() {
        "sync".to_string()
    } else {
        format!("sync.{path}")
    }
}

#[cfg(test)]
mod tests;
