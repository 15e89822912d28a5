//! The one error type of the sync crate.
//!
//! Every fallible operation (config, disk, network, protocol) returns `SyncError`; `Rejected`
//! is the separate, cheap answer of `Outbox::admit` when the backlog is full under `reject_new`.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SyncError {
    /// A configuration value is wrong; `key` is the full dotted path such as `sync.forward[0].qos`.
    #[error("invalid sync configuration `{key}`: {message}")]
    Config { key: String, message: String },
    #[error("outbox storage error: {0}")]
    Storage(String),
    #[error("outbox record encoding error: {0}")]
    Encoding(#[from] postcard::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("tls error: {0}")]
    Tls(String),
    #[error("mqtt protocol error: {0}")]
    Protocol(String),
    /// The upstream refused the CONNECT (reason code and its meaning).
    #[error("upstream refused the connection: {0}")]
    ConnectRefused(String),
    #[error("status file error: {0}")]
    Status(String),
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for SyncError {
            fn from(e: $t) -> Self {
                SyncError::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// `Outbox::admit` refused a message: policy is `reject_new` and the backlog is full.
/// The broker answers a QoS 1/2 publisher with reason code 0x97 (quota exceeded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("sync backlog full (max_backlog_bytes reached, policy reject_new)")]
pub struct Rejected;
