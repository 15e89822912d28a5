//! Opening `edge.redb`: the commit journal replayed first (`journal.rs`), then a read-only
//! look, then the writable open through the backends (journal, waiting for disk space), with
//! redb's repair after an unclean stop.
//!
//! Invariants: a file that exists but cannot be opened is an error and is left as it was
//! found; the journal is replayed before anything else reads the database file, under an
//! exclusive lock of the journal file (two brokers on one data dir never both replay).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::Database;

use super::journal::{self, DurableHook, JournalCounters, Journaled};
use super::journal_file::JournalFile;
use crate::config::Config;
use crate::disk_full::{DiskFull, SpaceWaitingBackend};
use crate::error::{Error, Result};

/// The database file's backend: through the commit journal, or (journal off) the file alone.
enum Backend {
    Plain(FileBackend),
    Journaled(Journaled<FileBackend, JournalFile>),
}

/// Where the commit journal of `db_path` lives: beside it, as SQLite's `-wal` file does.
pub fn journal_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push("-journal");
    PathBuf::from(name)
}

/// Opens (or creates) the database of `cfg`; with the counters of its journal when it has one.
/// `on_durable` is called after each sync of the journal (none without a journal).
pub(super) fn open_database(
    cfg: &Config,
    disk_full: &Arc<DiskFull>,
    on_durable: DurableHook,
) -> Result<(Database, Option<Arc<JournalCounters>>)> {
    let path = cfg.db_path();
    let open_err = |e| Error::OpenDatabase {
        path: path.display().to_string(),
        source: e,
    };
    let mut builder = Database::builder();
    builder.set_cache_size(cfg.storage.cache_size_bytes);
    let existed = path.exists();
    // A read-only open first: a file that is not a database (truncated, zeroed, foreign) is
    // refused without a single byte written, and without a journal created beside it. With a
    // journal left by the last run, after its replay (the file alone may lack its last commits).
    // `RepairAborted` only means the last run did not shut down cleanly; the writable open
    // below repairs it.
    let look = || match redb::ReadOnlyDatabase::open(&path) {
        Ok(_) => Ok(false),
        Err(redb::DatabaseError::RepairAborted) => Ok(true),
        Err(e) => Err(open_err(e)),
    };
    let journal_left = journal_path(&path).exists();
    let mut needs_repair = if existed && !journal_left {
        look()?
    } else {
        false
    };
    let backend = match backend(&path, cfg.storage.journal_bytes, existed)? {
        Backend::Journaled(j) => Backend::Journaled(j.on_durable(on_durable)),
        plain => plain,
    };
    let counters = match &backend {
        Backend::Journaled(j) => Some(j.counters()),
        Backend::Plain(_) => None,
    };
    if existed && journal_left {
        needs_repair = look()?;
    }
    let db = if needs_repair {
        repair(&builder, &path, backend, disk_full)
    } else {
        open_file(&builder, backend, disk_full)
    }
    .map_err(open_err)?;
    Ok((db, counters))
}

/// The backend of the database at `path`, after replaying its journal (if any) onto it.
fn backend(path: &Path, journal_bytes: u64, existed: bool) -> Result<Backend> {
    let jpath = journal_path(path);
    let jerr = |source| Error::Io {
        what: format!("commit journal {}", jpath.display()),
        source,
    };
    if !existed && jpath.exists() {
        // Records are later pages of a database that is gone: replaying them onto an empty
        // file would make a broken one.
        tracing::warn!(journal = %jpath.display(), "commit journal without its database file; removed");
        std::fs::remove_file(&jpath).map_err(jerr)?;
    }
    let main = FileBackend::new(open_rw(path).map_err(|source| Error::Io {
        what: format!("database {}", path.display()),
        source,
    })?)
    .map_err(|e| Error::OpenDatabase {
        path: path.display().to_string(),
        source: e,
    })?;
    if journal_bytes == 0 && !jpath.exists() {
        return Ok(Backend::Plain(main));
    }
    if existed && !looks_like_redb(&main).map_err(jerr)? {
        // Not ours to write to: the read-only look refuses it, and both files stay as found.
        return Ok(Backend::Plain(main));
    }
    let file = open_rw(&jpath).map_err(jerr)?;
    if !lock_exclusive(&file).map_err(jerr)? {
        return Err(jerr(std::io::Error::other(
            "locked: another broker is using this data_dir",
        )));
    }
    // Kept to reserve the journal's blocks below (the backend owns the other handle).
    let reserve_handle = file.try_clone().map_err(jerr)?;
    let jbackend = JournalFile::new(file, &jpath).map_err(jerr)?;
    let (old_generation, replayed) = journal::replay(&main, &jbackend).map_err(jerr)?;
    if replayed.records > 0 {
        redb::StorageBackend::sync_data(&main).map_err(jerr)?;
        tracing::info!(
            journal = %jpath.display(),
            records = replayed.records,
            bytes = replayed.bytes,
            "commit journal replayed onto the database file (the last run did not stop cleanly)"
        );
    }
    if journal_bytes == 0 {
        // Journal turned off: what the last run left in it was replayed; it goes.
        drop(jbackend);
        std::fs::remove_file(&jpath).map_err(jerr)?;
        return Ok(Backend::Plain(main));
    }
    let prepared = reserve(&reserve_handle, journal::capacity_of(journal_bytes))
        .and_then(|()| journal::prepare_journal(&jbackend, journal_bytes));
    drop(reserve_handle);
    match prepared {
        Ok(()) => {}
        Err(e) if crate::disk_full::is_no_space(&e) => {
            // Whatever the last run journaled is in the database file by now (synced above).
            tracing::warn!(journal = %jpath.display(), bytes = journal_bytes, error = %e,
                "no room for the commit journal: running without it (every commit syncs the \
                 database file itself)");
            drop(jbackend);
            std::fs::remove_file(&jpath).map_err(jerr)?;
            return Ok(Backend::Plain(main));
        }
        Err(e) => return Err(jerr(e)),
    }
    let journaled =
        Journaled::start(main, jbackend, journal_bytes, old_generation).map_err(jerr)?;
    Ok(Backend::Journaled(journaled))
}

/// The first bytes of every redb file (redb's header magic); an empty file is a new database.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Whether `main` is empty or starts as a redb file does: a journal is replayed onto nothing
/// else (a foreign or garbage file is refused untouched by the read-only look).
fn looks_like_redb(main: &FileBackend) -> std::io::Result<bool> {
    use redb::StorageBackend;
    let len = main.len()?;
    if len == 0 {
        return Ok(true);
    }
    if len < REDB_MAGIC.len() as u64 {
        return Ok(false);
    }
    let mut head = [0u8; REDB_MAGIC.len()];
    main.read(0, &mut head)?;
    Ok(head == REDB_MAGIC)
}

/// Reserves the journal's blocks up to `len` at once (`fallocate`: no data written, so a first
/// start does not write the whole journal; each block is written once on the journal's first
/// lap). Where the file system cannot, `prepare_journal` writes zeros instead. (The op log's
/// blocks are written with zeros instead, `oplog.rs`: its records are synced one by one, and
/// a first write of a reserved block made each sync write the inode too. The journal's
/// first lap showed no such cost in a fill: it syncs once a second.)
#[cfg(target_os = "linux")]
pub(super) fn reserve(file: &File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let Ok(len) = libc::off_t::try_from(len) else {
        return Ok(());
    };
    // SAFETY: fallocate on a file descriptor this `File` owns and keeps open; no memory passed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(()),
        _ => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn reserve(_: &File, _: u64) -> std::io::Result<()> {
    Ok(())
}

/// Takes an exclusive advisory lock (`flock`) of `file`, held while it stays open; false when
/// another open file holds one. (`File::try_lock` needs Rust 1.89, above our MSRV.)
fn lock_exclusive(file: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor this `File` owns and keeps open; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Opens `path` to read and write, creating it if missing (the database, its journal, the op
/// log).
pub(super) fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Where [`repair`] copies the database before repairing it: `edge.redb.before-repair`.
pub(super) fn repair_copy_path(db_path: &Path) -> PathBuf {
    db_path.with_extension("redb.before-repair")
}

/// Opens a database that was not closed cleanly (crash, power loss), which makes redb repair
/// it. The file is copied first: if the repair fails, the copy is put back, so a database that
/// cannot be opened is left exactly as it was found, for inspection.
fn repair(
    builder: &redb::Builder,
    path: &Path,
    backend: Backend,
    disk_full: &Arc<DiskFull>,
) -> std::result::Result<Database, redb::DatabaseError> {
    tracing::warn!(path = %path.display(), "database was not closed cleanly; repairing");
    let backup = repair_copy_path(path);
    let copied = match std::fs::copy(path, &backup) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "could not copy the database before repair; repairing in place");
            // A copy cut short by a full disk would keep the space the repair needs.
            let _ = std::fs::remove_file(&backup);
            false
        }
    };
    match open_file(builder, backend, disk_full) {
        Ok(db) => {
            if copied {
                let _ = std::fs::remove_file(&backup);
            }
            Ok(db)
        }
        Err(e) => {
            if copied {
                if let Err(re) = std::fs::rename(&backup, path) {
                    tracing::error!(error = %re, backup = %backup.display(), "could not put the original database back; it is kept beside it");
                }
            }
            Err(e)
        }
    }
}

/// Opens (or creates) the database through the backend that waits for disk space.
fn open_file(
    builder: &redb::Builder,
    backend: Backend,
    disk_full: &Arc<DiskFull>,
) -> std::result::Result<Database, redb::DatabaseError> {
    match backend {
        Backend::Plain(b) => {
            builder.create_with_backend(SpaceWaitingBackend::new(b, disk_full.clone()))
        }
        Backend::Journaled(b) => {
            builder.create_with_backend(SpaceWaitingBackend::new(b, disk_full.clone()))
        }
    }
}

#[cfg(test)]
#[path = "open_tests.rs"]
mod tests;
