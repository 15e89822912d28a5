//! Broker configuration: one TOML document, every key optional, unknown keys rejected.
//!
//! The embedded defaults (`DEFAULT_TOML`) are what `robustmq-edge` runs with when given no
//! file, and what `robustmq-edge print-config` prints, so the two can never disagree.
//!
//! One style for the whole binary, `[sync]` included: every struct is `#[serde(default)]`
//! with a `Default` impl holding the documented values, the whole file (sync's table too) is
//! deserialized in one pass through `serde_path_to_error`, so an error names the full key path
//! (`limits.max_conections`, `sync.forward[1].qos`), and `validate` runs every range check,
//! sync's included, before anything is opened. A `Config` that exists has passed them all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use edge_sync::SyncConfig;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The configuration a broker starts with when no file is given.
pub const DEFAULT_TOML: &str = include_str!("default_config.toml");

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Folder holding `edge.redb`; created when missing.
    pub data_dir: PathBuf,
    /// `immediate`: a PUBACK/PUBREC is sent only after the fsync of the commit holding the
    /// message. `none`: commits are not fsynced (explicit opt-out, loses data on power cut).
    pub durability: Durability,
    /// Threads running connections; 0 = one per core (at most 4). One is the default: the
    /// storage writer has its own thread, and one executor thread avoids cross-thread wake-ups
    /// (measured on 2 cores: higher throughput, equal latency, less memory than two).
    pub worker_threads: usize,
    /// Listeners; each one an independent TCP accept loop on the shared runtime.
    pub listeners: Vec<ListenerConfig>,
    pub limits: Limits,
    pub storage: StorageConfig,
    pub log: LogConfig,
    /// Users and access control (`[auth]`): mosquitto-format password and ACL files.
    pub auth: AuthConfig,
    /// Seconds between two publications of the `$SYS/broker/...` topics; 0 turns them off.
    pub sys_interval: u64,
    /// The operations HTTP listener (`[http]`): metrics, health, status API and page.
    pub http: HttpConfig,
    /// Store-and-forward to a central cluster (`[sync]`, see `edge_sync::config`); absent
    /// means sync is off.
    pub sync: Option<SyncConfig>,
}

/// Default address of the operations HTTP listener (`http.bind`).
pub const DEFAULT_HTTP_BIND: &str = "127.0.0.1:9883";

/// `[http]`: the operations listener. Loopback only by default; any other address needs TLS
/// and a bearer token (checked by `Config::validate`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `false` turns the listener off.
    pub enabled: bool,
    pub bind: SocketAddr,
    /// Serve HTTPS (same shape as a listener's `[listeners.tls]`; `client_ca_file` asks for
    /// client certificates).
    pub tls: Option<TlsListenerConfig>,
    /// Requests must carry `Authorization: Bearer <token>` (all but `/health/*` and the page
    /// itself). Required on a non-loopback `bind`.
    pub token: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 9883)),
            tls: None,
            token: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Immediate,
    None,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub bind: SocketAddr,
    /// MQTT over TLS on this listener when present.
    #[serde(default)]
    pub tls: Option<TlsListenerConfig>,
    /// Clients without credentials (and, without a password file, any user name) are let in.
    /// Absent: on for a loopback address, off otherwise (mosquitto 2.0's rule).
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    /// `mqtt`: MQTT straight over TCP (or TLS). `websocket`: MQTT in WebSocket binary
    /// messages (ws://, and wss:// with `tls`).
    #[serde(default)]
    pub kind: ListenerKind,
    /// HTTP path of a WebSocket listener's endpoint (`kind = "websocket"` only); `/mqtt` when
    /// absent.
    #[serde(default)]
    pub websocket_path: Option<String>,
    /// Reverse proxies (addresses or CIDR ranges). On a WebSocket listener: those whose
    /// `Forwarded` (RFC 7239) or `X-Forwarded-For` names the client (empty: the headers are
    /// ignored). With
    /// `proxy_protocol`: the only peers let in (empty: any).
    #[serde(default)]
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Every connection starts with a PROXY protocol header (v1 or v2) naming the client, as
    /// sent by HAProxy, nginx's stream module or a cloud load balancer; without one it is refused.
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// One entry of `trusted_proxies`: an address (`10.0.0.5`, `::1`) or a CIDR range
/// (`10.0.0.0/8`), as an `ipnet::IpNet` (an address is its own /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy(pub ipnet::IpNet);

impl std::str::FromStr for TrustedProxy {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let s = s.trim();
        match (s.parse::<ipnet::IpNet>(), s.parse::<std::net::IpAddr>()) {
            (Ok(net), _) => Ok(TrustedProxy(net.trunc())),
            (_, Ok(ip)) => Ok(TrustedProxy(ipnet::IpNet::from(ip))),
            _ => Err(format!(
                "`{s}` is neither an IP address nor a CIDR range such as `10.0.0.0/8`"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for TrustedProxy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a listener speaks (`[[listeners]] kind`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    #[default]
    Mqtt,
    Websocket,
}

/// The WebSocket path used when `websocket_path` is not set.
pub const DEFAULT_WEBSOCKET_PATH: &str = "/mqtt";

impl ListenerConfig {
    /// Whether anonymous clients are admitted on this listener (see `allow_anonymous`).
    pub fn allows_anonymous(&self) -> bool {
        self.allow_anonymous
            .unwrap_or_else(|| self.bind.ip().is_loopback())
    }

    /// The HTTP path of a WebSocket listener (`websocket_path`, default `/mqtt`).
    pub fn websocket_path(&self) -> &str {
        self.websocket_path
            .as_deref()
            .unwrap_or(DEFAULT_WEBSOCKET_PATH)
    }

    /// Whether TLS client certificates name the user (`use_identity_as_username`).
    pub fn uses_identity(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.use_identity_as_username)
    }
}

/// `[auth]`: files in mosquitto's formats, re-read on SIGHUP.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `user:$7$...` lines as written by `mosquitto_passwd` 2.x or `robustmq-edge passwd`.
    pub password_file: Option<PathBuf>,
    /// mosquitto `acl_file` syntax; absent means every client may read and write every topic
    /// (except `$SYS`).
    pub acl_file: Option<PathBuf>,
    /// The MQTT 5 reason code of an ACL refusal (SUBACK, PUBACK, PUBREC).
    pub deny_reason: DenyReason,
}

/// `[auth] deny_reason`: what an MQTT 5 client is told when the ACL refuses it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// 0x87 Not authorized (mosquitto's and the default).
    #[default]
    NotAuthorized,
    /// 0x80 Unspecified error: the specification's code for "the server does not wish to
    /// reveal the reason" (the Eclipse Paho conformance suite expects it for its
    /// `test/nosubscribe` case). MQTT 3 clients see 0x80 either way.
    Unspecified,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// PEM certificate chain of the server.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA bundle: when set, clients must present a certificate signed by it.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Take the user name from the client certificate's common name (needs `client_ca_file`);
    /// no password is asked then.
    #[serde(default)]
    pub use_identity_as_username: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_connections: usize,
    /// Connections from one IP address; further CONNECTs get 0x89 Server busy (v3: 3).
    pub max_connections_per_ip: usize,
    /// Longest topic name or filter accepted, in bytes (PUBLISH refused with 0x90 / SUBSCRIBE
    /// with 0x8F; v3 disconnected / 0x80).
    pub max_topic_length: usize,
    /// Most levels (`/`-separated) in a topic name or filter.
    pub max_topic_levels: usize,
    /// Largest packet accepted from a client, checked on the fixed header before the body is read.
    pub max_packet_size: u32,
    pub connect_timeout_secs: u64,
    /// Receive Maximum we advertise: QoS 1/2 publishes a client may have unacknowledged.
    pub receive_maximum: u16,
    /// Most QoS 1/2 messages in flight towards one client (lowered by the client's Receive Maximum).
    pub max_inflight: u16,
    /// Bound on messages waiting for one session (online or offline), in count and bytes.
    pub max_queued_messages: usize,
    /// u64: the queue lives on disk, so its bound may pass 4 GiB on a 32-bit target too.
    pub max_queued_bytes: u64,
    /// Milliseconds a connected subscriber with messages waiting may take none of them before
    /// it counts as stalled: then it pauses no publisher, and its queue's bound drops what it
    /// cannot take (`session/flow.rs`).
    pub subscriber_stall_ms: u64,
    /// Upper bound on a session's expiry interval; MQTT 3 persistent sessions get this value.
    pub max_session_expiry_secs: u32,
    /// Server Keep Alive: a v5 client asking for a longer keep alive is given this (0 stays 0).
    pub max_keep_alive_secs: u16,
    pub topic_alias_maximum: u16,
    pub max_retained_messages: usize,
    pub max_subscriptions_per_session: usize,
    /// Broker-wide bound on heap memory, bytes (0: none): publishers pause past 1/2 of it,
    /// deliveries that would live in memory only are refused past 5/8.
    pub max_memory: usize,
}

/// Bounds of `limits.subscriber_stall_ms`: under 100 ms a subscriber between two socket
/// writes would count as stalled; over an hour its publishers would wait (5 s per publish, at
/// most) for a client that reads nothing.
const MIN_STALL_MS: u64 = 100;
const MAX_STALL_MS: u64 = 3_600_000;

/// Bounds of `storage.journal_bytes` (besides 0, no journal).
const MIN_JOURNAL_BYTES: u64 = 1 << 20;
const MAX_JOURNAL_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// redb page cache, bytes.
    pub cache_size_bytes: usize,
    /// Most publishes folded into one commit (one fsync).
    pub max_batch: usize,
    /// Size of the commit journal `edge.redb-journal` (0: off, every commit syncs the database
    /// file itself). A durable commit is one sequential write and one fdatasync of it.
    pub journal_bytes: u64,
    /// What start-up does with an `edge.redb` it cannot read, and whether damage found while
    /// serving stops the broker (`storage/damaged.rs`, `storage/salvage.rs`).
    pub on_damaged: OnDamaged,
}

/// What start-up does with a database file whose content it cannot read: zeroed, truncated or
/// garbled (a power cut on a card that does not keep its flushes), or not a database at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDamaged {
    /// Move it, with its commit journal and op log, into a `damaged-<UTC time>` folder of the
    /// data dir, and start with a new database holding what can still be read of it (salvage);
    /// damage found while serving stops the broker cleanly for the next start to do so.
    SetAside,
    /// Stop with an error naming the file; everything stays as found.
    Stop,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `robustmq_edge=debug`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        // Kept equal to `default_config.toml` by the test `embedded_document_equals_defaults`.
        Config {
            data_dir: PathBuf::from("data"),
            durability: Durability::Immediate,
            worker_threads: 1,
            listeners: vec![ListenerConfig::default()],
            limits: Limits::default(),
            storage: StorageConfig::default(),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            sys_interval: 10,
            http: HttpConfig::default(),
            sync: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_topic_length: 4096,
            max_topic_levels: 64,
            max_packet_size: 1024 * 1024,
            connect_timeout_secs: 10,
            receive_maximum: 256,
            max_inflight: 64,
            max_queued_messages: 10_000,
            max_queued_bytes: 16 * 1024 * 1024,
            max_session_expiry_secs: 7 * 24 * 3600,
            max_keep_alive_secs: 3600,
            topic_alias_maximum: 32,
            max_retained_messages: 100_000,
            max_subscriptions_per_session: 1000,
            max_memory: 256 * 1024 * 1024,
            subscriber_stall_ms: crate::session::DEFAULT_STALL_MS,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            cache_size_bytes: 16 * 1024 * 1024,
            max_batch: 1024,
            journal_bytes: 16 * 1024 * 1024,
            on_damaged: OnDamaged::SetAside,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            tls: None,
            allow_anonymous: None,
            kind: ListenerKind::Mqtt,
            websocket_path: None,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
        }
    }
}

impl Config {
    /// Parses and validates a TOML document. `origin` (a file name) starts every error
    /// message; deserialization errors name the key path and its line and column.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config> {
        let config_err = |message: String| Error::Config {
            origin: origin.to_string(),
            message,
        };
        // A syntax error has no key to name: toml's own report (with the line) is kept.
        let de = toml::Deserializer::parse(text).map_err(|e| config_err(e.to_string()))?;
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            config_err(describe(&e.into_inner(), &path, text))
        })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            origin: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// Runs every range and consistency check (done by `from_toml`; again after command-line
    /// overrides). `origin` starts the error message.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |key: &str, why: &str| {
            Err(Error::Config {
                origin: origin.to_string(),
                message: format!("invalid value for `{key}`: {why}"),
            })
        };
        if self.worker_threads > 64 {
            return bad("worker_threads", "at most 64");
        }
        if self.listeners.is_empty() {
            return bad("listeners", "at least one listener is needed");
        }
        let l = &self.limits;
        if l.max_packet_size < 64 || l.max_packet_size > 268_435_455 {
            return bad("limits.max_packet_size", "must be between 64 and 268435455");
        }
        if l.receive_maximum == 0 {
            return bad("limits.receive_maximum", "must be at least 1");
        }
        if l.max_inflight == 0 {
            return bad("limits.max_inflight", "must be at least 1");
        }
        if l.max_connections == 0 {
            return bad("limits.max_connections", "must be at least 1");
        }
        if l.max_connections_per_ip == 0 {
            return bad("limits.max_connections_per_ip", "must be at least 1");
        }
        if l.max_topic_length == 0 || l.max_topic_length > 65535 {
            return bad("limits.max_topic_length", "must be between 1 and 65535");
        }
        if l.max_topic_levels == 0 {
            return bad("limits.max_topic_levels", "must be at least 1");
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            if let Some(path) = &listener.websocket_path {
                let key = format!("listeners[{i}].websocket_path");
                if listener.kind != ListenerKind::Websocket {
                    return bad(&key, "only for a listener with `kind = \"websocket\"`");
                }
                if !path.starts_with('/')
                    || path.contains(['?', '#'])
                    || path.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return bad(
                        &key,
                        "must be an HTTP path starting with `/`, without spaces, `?` or `#`",
                    );
                }
            }
            if !listener.trusted_proxies.is_empty()
                && listener.kind != ListenerKind::Websocket
                && !listener.proxy_protocol
            {
                return bad(
                    &format!("listeners[{i}].trusted_proxies"),
                    "only for a listener with `kind = \"websocket\"` (X-Forwarded-For is an HTTP \
                     header) or with `proxy_protocol = true`",
                );
            }
            if let Some(tls) = &listener.tls {
                if tls.use_identity_as_username && tls.client_ca_file.is_none() {
                    return bad(
                        &format!("listeners[{i}].tls.use_identity_as_username"),
                        "needs `client_ca_file` (client certificates are only asked for with it)",
                    );
                }
            }
            if !listener.allows_anonymous()
                && self.auth.password_file.is_none()
                && !listener.uses_identity()
            {
                return bad(
                    &format!("listeners[{i}]"),
                    &format!(
                        "{} does not allow anonymous clients and has no way to authenticate: set \
                         `auth.password_file`, `tls.use_identity_as_username`, or \
                         `allow_anonymous = true`",
                        listener.bind
                    ),
                );
            }
        }
        if l.max_queued_messages == 0 {
            return bad("limits.max_queued_messages", "must be at least 1");
        }
        if l.max_queued_bytes == 0 {
            return bad("limits.max_queued_bytes", "must be at least 1");
        }
        if !(MIN_STALL_MS..=MAX_STALL_MS).contains(&l.subscriber_stall_ms) {
            return bad(
                "limits.subscriber_stall_ms",
                &format!("must be between {MIN_STALL_MS} and {MAX_STALL_MS}"),
            );
        }
        if l.connect_timeout_secs == 0 {
            return bad("limits.connect_timeout_secs", "must be at least 1");
        }
        if l.max_memory != 0 && l.max_memory < 16 * 1024 * 1024 {
            return bad(
                "limits.max_memory",
                "must be 0 (no bound) or at least 16777216",
            );
        }
        if l.max_memory != 0 && self.storage.cache_size_bytes > l.max_memory / 4 {
            return bad(
                "limits.max_memory",
                "must be at least 4 times storage.cache_size_bytes (the page cache is part of it)",
            );
        }
        if self.storage.max_batch == 0 {
            return bad("storage.max_batch", "must be at least 1");
        }
        let j = self.storage.journal_bytes;
        if j != 0 && !(MIN_JOURNAL_BYTES..=MAX_JOURNAL_BYTES).contains(&j) {
            return bad(
                "storage.journal_bytes",
                "must be 0 (no journal) or from 1048576 (1 MiB) to 1073741824 (1 GiB)",
            );
        }
        if self
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return bad("log.level", "not a valid tracing filter");
        }
        if self.http.enabled {
            let h = &self.http;
            if let Some(tls) = &h.tls {
                if tls.use_identity_as_username {
                    return bad(
                        "http.tls.use_identity_as_username",
                        "has no meaning for the HTTP listener (it authenticates with `http.token`)",
                    );
                }
            }
            if let Some(token) = &h.token {
                if token.len() < 16 || token.chars().any(|c| !c.is_ascii_graphic()) {
                    return bad(
                        "http.token",
                        "must be at least 16 printable ASCII characters without spaces",
                    );
                }
            }
            if !h.bind.ip().is_loopback() {
                if h.tls.is_none() {
                    return bad(
                        "http.tls",
                        &format!(
                            "`http.bind` {} is not a loopback address: TLS is required                              (`[http.tls] cert_file`, `key_file`)",
                            h.bind
                        ),
                    );
                }
                if h.token.is_none() {
                    return bad(
                        "http.token",
                        &format!(
                            "`http.bind` {} is not a loopback address: a bearer token is required",
                            h.bind
                        ),
                    );
                }
            }
        }
        if let Some(sync) = &self.sync {
            // `SyncError::Config` reads "invalid value for `sync.<key>`: ...", as ours do.
            sync.validate().map_err(|e| Error::Config {
                origin: origin.to_string(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("edge.redb")
    }
}

/// One line for a deserialization error: toml's message, then the key path and position,
/// e.g. ``unknown field `max_conections`, expected one of ... (key `limits.max_conections`,
/// line 2, column 1)``.
fn describe(e: &toml::de::Error, path: &str, text: &str) -> String {
    let mut at = Vec::new();
    if !path.is_empty() && path != "." {
        at.push(format!("key `{path}`"));
    }
    if let Some(span) = e.span() {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        at.push(format!("line {line}, column {column}"));
    }
    let message = e.message().trim_end();
    if at.is_empty() {
        message.to_string()
    } else {
        format!("{message} ({})", at.join(", "))
    }
}

#[cfg(test)]
mod tests;
