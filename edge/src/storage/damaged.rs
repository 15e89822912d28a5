//! A database whose content cannot be read at start (zeroed, truncated or garbled by a power cut
//! on a card that does not keep its flushes, or not a database at all): with
//! `storage.on_damaged = "set_aside"` it is moved, with its commit journal and op log, into a
//! `damaged-<UTC time>` folder of the data dir, and the broker starts with a new database holding
//! what can still be read of it (`salvage.rs`) instead of failing every start (mosquitto's field
//! problem #3160).
//!
//! Damage found while running (redb panics on, or reports corrupt, a page of a session's queue
//! or of the sync outbox, `Store::damage_hook`; or the storage writer panics) leaves a marker,
//! `edge.redb-check`, and sets [`DamageFound`] (the server then stops cleanly): the next start
//! first runs redb's integrity check over every page, which passes, repairs the file, or finds
//! it damaged (then as above).
//!
//! Invariants: only damage to the file's content counts ([`damage_of`]: redb's `Corrupted`,
//! its "not a database" `InvalidData`, or a panic inside redb while opening or loading); a file
//! another broker holds, one of a newer format, a permission or device error stop the start as
//! before. Files are only renamed, never rewritten; the only deletion is of set-aside folders
//! beyond the newest [`KEEP`].

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use edge_mqtt::util::panic_message;

use crate::error::Error;

/// Set-aside folders kept in a data dir; older ones are removed when another is made, so a
/// card that keeps failing cannot fill the disk with copies.
pub(super) const KEEP: usize = 3;

/// The name of every set-aside folder starts with this, then the UTC time.
pub(super) const PREFIX: &str = "damaged-";

/// Why opening or loading failed, when it says the file's content is damaged.
#[derive(Debug)]
pub(super) enum Failure {
    /// An error: damage when [`damage_of`] says so, else a reason to stop.
    Error(Error),
    /// redb panicked (it treats some inconsistent pages as unreachable): always damage.
    Panic(String),
}

impl Failure {
    /// What is wrong with the file, when it is damage.
    pub(super) fn damage(&self) -> Option<String> {
        match self {
            Failure::Error(e) => damage_of(e),
            Failure::Panic(msg) => Some(format!("reading it panicked: {msg}")),
        }
    }

    /// The error to stop with.
    pub(super) fn into_error(self, path: &Path) -> Error {
        match self {
            Failure::Error(e) => e,
            Failure::Panic(msg) => Error::DamagedDatabase {
                path: path.display().to_string(),
                reason: format!("reading it panicked: {msg}"),
            },
        }
    }
}

/// Runs `f` (opening and loading), turning a panic into [`Failure::Panic`].
pub(super) fn catching<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::Error(e)),
        Err(payload) => Err(Failure::Panic(panic_message(payload.as_ref()).to_string())),
    }
}

/// What is wrong with the database file when `e` means its content is damaged; `None` for any
/// other failure (locked, newer format, permissions, the device).
pub(super) fn damage_of(e: &Error) -> Option<String> {
    use redb::{DatabaseError, StorageError};
    let storage = match e {
        Error::OpenDatabase {
            source: DatabaseError::Storage(s),
            ..
        } => s,
        Error::Storage(redb::Error::Corrupted(m)) => return Some(m.clone()),
        Error::Storage(redb::Error::Io(io)) => return invalid_data(io),
        _ => return None,
    };
    match storage {
        StorageError::Corrupted(m) => Some(m.clone()),
        StorageError::Io(io) => invalid_data(io),
        _ => None,
    }
}

/// redb reports a file that is not a database (wrong magic, empty) as `InvalidData`.
fn invalid_data(e: &io::Error) -> Option<String> {
    (e.kind() == io::ErrorKind::InvalidData).then(|| e.to_string())
}

/// The marker that makes the next start check every page: `edge.redb-check`.
pub(super) fn check_marker(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push("-check");
    PathBuf::from(name)
}

/// Leaves the marker for the next start (created and synced, once); a failure is logged.
pub(super) fn mark_for_check(db_path: &Path) {
    let marker = check_marker(db_path);
    if marker.is_file() {
        // Left by an earlier find of this run (a stalled read is retried).
        return;
    }
    let made = std::fs::File::create(&marker).and_then(|f| f.sync_all());
    let dir = db_path.parent().filter(|p| !p.as_os_str().is_empty());
    match made.and_then(|()| dir.map_or(Ok(()), sync_dir)) {
        Ok(()) => tracing::error!(marker = %marker.display(),
            "the next start checks every page of the database (storage.on_damaged applies)"),
        Err(e) => tracing::error!(marker = %marker.display(), error = %e,
            "cannot leave the marker that makes the next start check the database"),
    }
}

/// Damage found while this run serves (a read, or the storage writer): once set, the server
/// stops cleanly with `storage.on_damaged = "set_aside"`, so that the next start (systemd's
/// restart) sets the file aside and salvages it instead of a session or the uplink staying
/// stalled on the damaged page until someone restarts the broker.
#[derive(Debug, Default)]
pub struct DamageFound {
    found: AtomicBool,
    event: event_listener::Event,
}

impl DamageFound {
    /// Records the damage (the marker is left separately, [`mark_for_check`]).
    pub(super) fn set(&self) {
        if !self.found.swap(true, Ordering::AcqRel) {
            self.event.notify(usize::MAX);
        }
    }

    pub fn is_set(&self) -> bool {
        self.found.load(Ordering::Acquire)
    }

    /// Resolves once damage was found.
    pub async fn wait(&self) {
        loop {
            if self.is_set() {
                return;
            }
            let listener = self.event.listen();
            if self.is_set() {
                return;
            }
            listener.await;
        }
    }
}

/// Runs `f` (a read of the database). A panic becomes a damage error; on damage (that, or
/// redb finding a page corrupt) the marker is left for the next start and `found` is set.
pub(super) fn reading<T>(
    db_path: &Path,
    found: &DamageFound,
    what: &str,
    f: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    let failure = match catching(f) {
        Ok(v) => return Ok(v),
        Err(failure) => failure,
    };
    if let Some(reason) = failure.damage() {
        tracing::error!(path = %db_path.display(), what, %reason, "database damaged: a read failed");
        mark_for_check(db_path);
        found.set();
    }
    Err(failure.into_error(db_path))
}

/// Moves the database at `db_path` and the files that belong to it (`companions`: its commit
/// journal, op log, a copy kept before a repair) into a new folder `damaged-<UTC time>` beside
/// it, then removes the oldest such folders beyond [`KEEP`]. Returns the new folder.
pub(super) fn set_aside(
    db_path: &Path,
    companions: &[PathBuf],
    now: SystemTime,
) -> io::Result<PathBuf> {
    let data_dir = db_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = new_folder(data_dir, now)?;
    for file in std::iter::once(db_path).chain(companions.iter().map(PathBuf::as_path)) {
        let Some(name) = file.file_name() else {
            continue;
        };
        match std::fs::rename(file, dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    // The renames are durable before a new database is made in their place.
    sync_dir(&dir)?;
    sync_dir(data_dir)?;
    prune(data_dir, KEEP);
    Ok(dir)
}

/// A new, empty folder named after `now` (UTC, to the second), with a counter when a folder of
/// that second exists.
fn new_folder(data_dir: &Path, now: SystemTime) -> io::Result<PathBuf> {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let stamp = jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(i64::MAX))
        .unwrap_or(jiff::Timestamp::MAX)
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let mut n = 0u32;
    loop {
        let name = match n {
            0 => format!("{PREFIX}{stamp}"),
            n => format!("{PREFIX}{stamp}-{n}"),
        };
        let dir = data_dir.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Removes the oldest set-aside folders of `data_dir` beyond `keep` (by name: the UTC time
/// sorts as text). A failure is logged, never fatal: the broker starts all the same.
fn prune(data_dir: &Path, keep: usize) {
    let entries = match std::fs::read_dir(data_dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(data_dir = %data_dir.display(), error = %e, "could not list the data dir to remove old damaged-* folders");
            return;
        }
    };
    let mut folders: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
        .map(|e| e.path())
        .collect();
    folders.sort_by_key(|p| sort_key(p));
    let excess = folders.len().saturating_sub(keep);
    for old in &folders[..excess] {
        match std::fs::remove_dir_all(old) {
            Ok(()) => tracing::warn!(folder = %old.display(), keep,
                "removed the oldest set-aside damaged database (storage.on_damaged keeps the newest)"),
            Err(e) => tracing::warn!(folder = %old.display(), error = %e,
                "could not remove an old set-aside damaged database"),
        }
    }
}

/// Orders `damaged-<stamp>` before `damaged-<stamp>-<n>`, and those by `n`.
fn sort_key(p: &Path) -> (String, u32) {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rsplit_once('-') {
        Some((head, n)) if head.len() > PREFIX.len() && n.chars().all(|c| c.is_ascii_digit()) => {
            (head.to_string(), n.parse().unwrap_or(0))
        }
        _ => (name, 0),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
#[path = "damaged_tests.rs"]
mod tests;
