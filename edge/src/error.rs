//! The broker crate's one error type.
//!
//! Protocol violations by a client are not errors of the broker: they end that client's
//! connection with a reason code (see `connection::Close`) and never reach `main`.

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

    #[error("storage error: {0}")]
    Storage(String),

    #[error("stored record is corrupt in table {table}: {message}")]
    Corrupt {
        table: &'static str,
        message: String,
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
    Sync(String),
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.to_string())
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
