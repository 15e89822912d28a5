//! The broker crate's one error type.
//!
//! Protocol violations by a client are not errors of the broker: they end that client's
//! connection with a reason code (see `connection::Close`) and never reach `main`. Errors of
//! redb, postcard, the OS and the sync module are kept as the `source()` of their variant.

use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration error in {origin}: {message}")]
    Config { origin: String, message: String },

    #[error("cannot open database {path}: {source}. The file was left untouched; move it aside to start with an empty one")]
    OpenDatabase {
        path: String,
        #[source]
        source: redb::DatabaseError,
    },

    /// The database's content cannot be read (`storage/damaged.rs`) and
    /// `storage.on_damaged = "stop"`, or no source error says why (redb panicked).
    #[error("database {path} is damaged: {reason}. The file was left untouched; with storage.on_damaged = \"set_aside\" the broker moves it aside and starts with what can still be read of it")]
    DamagedDatabase { path: String, reason: String },

    /// Damage found while serving stopped the broker (`storage.on_damaged = "set_aside"`).
    #[error("database {path} was found damaged while serving; the broker stopped so that the next start sets it aside and salvages what can still be read: start it again (systemd does)")]
    DamagedWhileServing { path: String },

    /// redb failed (transaction, table, commit, durability); the redb error is the source.
    #[error("storage error: {0}")]
    Storage(#[from] redb::Error),

    #[error("database schema version {found} is not supported (expected {expected})")]
    SchemaVersion { found: u64, expected: u64 },

    #[error("storage error: cannot encode a record: {0}")]
    Encode(#[source] postcard::Error),

    /// The commit holding this operation failed; the writer logged the redb error.
    #[error("storage error: commit failed")]
    CommitFailed,

    #[error("stored record is corrupt in table {table}: {source}")]
    Corrupt {
        table: &'static str,
        #[source]
        source: postcard::Error,
    },

    #[error("storage writer has stopped")]
    WriterGone,

    #[error("i/o error on {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("sync: {0}")]
    Sync(#[from] edge_sync::SyncError),
}

/// redb's specific errors all convert into `redb::Error`, which `Storage` keeps as its source.
macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.into())
            }
        }
    )*};
}
storage_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
