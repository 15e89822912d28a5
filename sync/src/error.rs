//! The one error type of the sync crate.
//!
//! Every fallible operation (config, disk, network, protocol) returns `SyncError`; `Rejected`
//! is the separate, cheap answer of `Outbox::admit` when the backlog is full under `reject_new`.
//! Errors from redb, postcard and the OS are kept as the `source()` of their variant, not
//! flattened into text.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SyncError {
    /// A configuration value is wrong; `key` is the full dotted path such as `sync.forward[0].qos`.
    /// Worded like the broker's own configuration errors.
    #[error("invalid value for `{key}`: {message}")]
    Config { key: String, message: String },
    /// redb failed (open, transaction, table, commit, durability); the redb error is the source.
    #[error("outbox storage error: {0}")]
    Storage(#[from] redb::Error),
    /// The outbox tables hold something this version does not understand.
    #[error("outbox meta version {found} is not supported (expected {expected})")]
    UnsupportedVersion { found: u32, expected: u32 },
    /// An internal invariant of the outbox did not hold (a bug, not a disk problem).
    #[error("outbox invariant broken: {0}")]
    Invariant(&'static str),
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
    /// redb panicked on a page of the outbox's tables (it treats some inconsistent pages as
    /// unreachable): the database file is damaged (`Outbox::on_damage`).
    #[error("outbox storage damaged: {what} panicked: {panic}")]
    Damaged { what: &'static str, panic: String },
}

/// redb's specific errors all convert into `redb::Error`, which `Storage` keeps as its source.
macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for SyncError {
            fn from(e: $t) -> Self {
                SyncError::Storage(e.into())
            }
        }
    )*};
}
storage_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// `Outbox::admit` refused a message: policy is `reject_new` and the backlog is full.
/// The broker answers a QoS 1/2 publisher with reason code 0x97 (quota exceeded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("sync backlog full (max_backlog_bytes reached, policy reject_new)")]
pub struct Rejected;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn storage_errors_keep_the_redb_error_as_source() {
        let e: SyncError = redb::StorageError::Corrupted("page 7".into()).into();
        assert!(
            matches!(e, SyncError::Storage(redb::Error::Corrupted(_))),
            "{e:?}"
        );
        let source = e.source().expect("redb error kept as source");
        assert!(source.to_string().contains("page 7"), "{source}");
    }
}
