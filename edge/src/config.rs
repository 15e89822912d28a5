//! Broker configuration: one TOML document, every key optional, unknown keys rejected.
//!
//! The embedded defaults (`DEFAULT_TOML`) are what `robustmq-edge` runs with when given no
//! file, and what `robustmq-edge print-config` prints, so the two can never disagree.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// Store-and-forward to a central cluster; absent means sync is off.
    pub sync: Option<toml::Value>,
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
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_connections: usize,
    /// Largest packet accepted from a client, checked on the fixed header before the body is read.
    pub max_packet_size: u32,
    pub connect_timeout_secs: u64,
    /// Receive Maximum we advertise: QoS 1/2 publishes a client may have unacknowledged.
    pub receive_maximum: u16,
    /// Most QoS 1/2 messages in flight towards one client (lowered by the client's Receive Maximum).
    pub max_inflight: u16,
    /// Bound on messages waiting for one session (online or offline), in count and bytes.
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    /// Upper bound on a session's expiry interval; MQTT 3 persistent sessions get this value.
    pub max_session_expiry_secs: u32,
    /// Server Keep Alive: a v5 client asking for a longer keep alive is given this (0 stays 0).
    pub max_keep_alive_secs: u16,
    pub topic_alias_maximum: u16,
    pub max_retained_messages: usize,
    pub max_subscriptions_per_session: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// redb page cache, bytes.
    pub cache_size_bytes: usize,
    /// Most publishes folded into one commit (one fsync).
    pub max_batch: usize,
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
            sync: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
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
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            cache_size_bytes: 16 * 1024 * 1024,
            max_batch: 1024,
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
        }
    }
}

impl Config {
    /// Parses a TOML document; errors name the offending key.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config> {
        let cfg: Config = toml::from_str(text).map_err(|e| Error::Config {
            origin: origin.to_string(),
            message: e.to_string(),
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

    fn validate(&self, origin: &str) -> Result<()> {
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
        if l.max_queued_messages == 0 {
            return bad("limits.max_queued_messages", "must be at least 1");
        }
        if l.connect_timeout_secs == 0 {
            return bad("limits.connect_timeout_secs", "must be at least 1");
        }
        if self.storage.max_batch == 0 {
            return bad("storage.max_batch", "must be at least 1");
        }
        if self
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return bad("log.level", "not a valid tracing filter");
        }
        Ok(())
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("edge.redb")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse_and_listen_on_localhost_1883() {
        let cfg = Config::from_toml(DEFAULT_TOML, "embedded").unwrap();
        assert_eq!(cfg.listeners[0].bind.to_string(), "127.0.0.1:1883");
        assert_eq!(cfg.durability, Durability::Immediate);
    }

    #[test]
    fn embedded_document_equals_defaults() {
        let parsed: Config = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let err = Config::from_toml("[limits]\nmax_conections = 3\n", "t").unwrap_err();
        assert!(err.to_string().contains("max_conections"), "{err}");
    }

    #[test]
    fn invalid_value_is_an_error_naming_the_key() {
        let err = Config::from_toml("[limits]\nreceive_maximum = 0\n", "t").unwrap_err();
        assert!(err.to_string().contains("limits.receive_maximum"), "{err}");
        let err = Config::from_toml("durability = \"sometimes\"\n", "t").unwrap_err();
        assert!(err.to_string().contains("durability"), "{err}");
    }
}
