//! Disk full: the redb file's writes go through [`SpaceWaitingBackend`], which holds a write that
//! failed for lack of space (ENOSPC, EDQUOT) and retries it with backoff until it succeeds, and
//! [`DiskFull`] says so to the rest of the broker (refuse QoS 1/2 publishes, metrics, logs).
//!
//! Why beneath redb and not around the commit: redb latches any I/O error of its file for the
//! rest of the `Database`'s life (`StorageError::PreviousIo`; only a close and a repairing reopen
//! clear it), and the sync outbox holds the same `Database`. A write that found no space wrote
//! nothing durable, so repeating the same bytes at the same offset is safe; redb never sees the
//! error, and the commit in progress (and everything queued behind it, in order) completes once
//! space returns. Nothing is acknowledged before its commit returns. fsync errors are not
//! retried (after a failed fsync Linux may have dropped the dirty pages): they fail the commit.

use std::fmt;
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redb::{BackendError, StorageBackend};

/// First pause before a write that found no space is tried again; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between two tries: service resumes at most this long after space returns.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Whether the storage is waiting for disk space, and counters of it. One per `Store`, shared
/// with its backend; read by connections (to refuse QoS 1/2 publishes) and by metrics.
#[derive(Debug, Default)]
pub struct DiskFull {
    full: AtomicBool,
    /// Unix ms when the current episode began (0 when not full).
    since_ms: AtomicU64,
    episodes: AtomicU64,
    write_retries: AtomicU64,
    refused_publishes: AtomicU64,
    /// Set while the writer waits for space: retrying stops and the error goes to redb
    /// (shutdown), or was never enabled (open: a full disk at start is an error).
    retrying: AtomicBool,
    /// Rate limits (one line a second each) of the "still full" and "refused" logs.
    last_full_log_ms: AtomicU64,
    last_refused_log_ms: AtomicU64,
}

impl DiskFull {
    /// True while a write of the database waits for free space: QoS 1/2 publishes are refused.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// Unix ms when the disk was found full, `None` when it is not.
    pub fn full_since_ms(&self) -> Option<u64> {
        match self.since_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(ms),
        }
    }

    /// How many times the disk became full (episodes) since start.
    pub fn episodes_total(&self) -> u64 {
        self.episodes.load(Ordering::Relaxed)
    }

    /// Writes tried again after finding no space.
    pub fn write_retries_total(&self) -> u64 {
        self.write_retries.load(Ordering::Relaxed)
    }

    /// QoS 1/2 publishes refused because the disk was full.
    pub fn refused_publishes_total(&self) -> u64 {
        self.refused_publishes.load(Ordering::Relaxed)
    }

    /// Counts one refused publish and logs it (at most once a second).
    pub fn note_refused_publish(&self, client_id: &str) {
        let n = self.refused_publishes.fetch_add(1, Ordering::Relaxed) + 1;
        if crate::ratelog::allowed(&self.last_refused_log_ms) {
            tracing::warn!(
                client_id,
                refused_total = n,
                "disk full: QoS 1/2 publish refused (v5: quota exceeded, v3: connection closed)"
            );
        }
    }

    /// Records that a write found no space (a new episode when the disk was not full yet).
    pub fn mark_full(&self, error: &io::Error) {
        if !self.full.swap(true, Ordering::AcqRel) {
            self.since_ms
                .store(crate::message::now_ms().max(1), Ordering::Release);
            let n = self.episodes.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(%error, episodes = n,
                "disk full: storage writes wait for free space (retried with backoff up to 1 s); \
                 QoS 1/2 publishes are refused until then, QoS 0 keeps flowing");
        } else if crate::ratelog::allowed(&self.last_full_log_ms) {
            tracing::warn!(%error, retries = self.write_retries_total(),
                "disk still full: storage writes waiting for free space");
        }
    }

    /// Records that a write succeeded after waiting for space.
    pub fn mark_space_returned(&self) {
        if self.full.swap(false, Ordering::AcqRel) {
            let since = self.since_ms.swap(0, Ordering::AcqRel);
            tracing::info!(
                full_for_ms = crate::message::now_ms().saturating_sub(since),
                "disk space is back: storage writes resumed, QoS 1/2 publishes accepted again"
            );
        }
    }

    /// Lets writes wait for space (after the database is open) or stops it (at shutdown, so
    /// that a writer waiting for space gives up and the broker can exit).
    pub fn set_retrying(&self, on: bool) {
        self.retrying.store(on, Ordering::Release);
    }

    fn retrying(&self) -> bool {
        self.retrying.load(Ordering::Acquire)
    }
}

/// True for the errors that mean "no space left" (ENOSPC) or "quota used up" (EDQUOT).
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// A redb storage backend that waits for space: see the module header.
pub struct SpaceWaitingBackend<B> {
    inner: B,
    state: Arc<DiskFull>,
}

impl<B> SpaceWaitingBackend<B> {
    pub fn new(inner: B, state: Arc<DiskFull>) -> Self {
        SpaceWaitingBackend { inner, state }
    }

    /// Runs `op` until it succeeds or fails for another reason than space; while retrying
    /// is enabled a no-space failure is logged, counted and tried again after a backoff.
    fn until_space(&self, mut op: impl FnMut() -> io::Result<()>) -> io::Result<()> {
        let mut backoff = FIRST_BACKOFF;
        let mut waited = false;
        loop {
            match op() {
                Ok(()) => {
                    if waited {
                        self.state.mark_space_returned();
                    }
                    return Ok(());
                }
                Err(e) if is_no_space(&e) && self.state.retrying() => {
                    self.state.mark_full(&e);
                    waited = true;
                    self.state.write_retries.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl<B> fmt::Debug for SpaceWaitingBackend<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpaceWaitingBackend")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<B: StorageBackend> StorageBackend for SpaceWaitingBackend<B> {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.until_space(|| self.inner.set_len(len))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.until_space(|| self.inner.write(offset, data))
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A backend whose next `fail` writes fail with ENOSPC.
    #[derive(Debug, Default)]
    struct Flaky {
        fail: AtomicU64,
        written: Mutex<Vec<(u64, Vec<u8>)>>,
    }

    impl StorageBackend for Flaky {
        fn len(&self) -> io::Result<u64> {
            Ok(0)
        }
        fn read(&self, _: u64, _: &mut [u8]) -> io::Result<()> {
            Ok(())
        }
        fn set_len(&self, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn sync_data(&self) -> io::Result<()> {
            Ok(())
        }
        fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            if self.fail.load(Ordering::SeqCst) > 0 {
                self.fail.fetch_sub(1, Ordering::SeqCst);
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((offset, data.to_vec()));
            Ok(())
        }
    }

    fn backend(fail: u64) -> (SpaceWaitingBackend<Flaky>, Arc<DiskFull>) {
        let state = Arc::new(DiskFull::default());
        state.set_retrying(true);
        let inner = Flaky {
            fail: AtomicU64::new(fail),
            ..Flaky::default()
        };
        (SpaceWaitingBackend::new(inner, state.clone()), state)
    }

    #[test]
    fn enospc_and_edquot_are_no_space_other_errors_are_not() {
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(!is_no_space(&io::Error::from_raw_os_error(libc::EIO)));
    }

    #[test]
    fn a_write_without_space_is_retried_until_it_succeeds_and_the_state_says_so() {
        let (b, state) = backend(3);
        let writer = std::thread::spawn(move || {
            let r = b.write(4096, b"data");
            (r.is_ok(), b)
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !state.is_full() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(state.is_full(), "the state says full while the write waits");
        let (ok, b) = writer.join().expect("writer thread");
        assert!(ok, "the write succeeds once space returns");
        assert!(!state.is_full());
        assert_eq!(state.full_since_ms(), None);
        assert_eq!(state.episodes_total(), 1);
        assert_eq!(state.write_retries_total(), 3);
        let written = b.inner.written.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(*written, vec![(4096, b"data".to_vec())]);
    }

    #[test]
    fn without_retrying_a_write_without_space_fails_at_once() {
        let (b, state) = backend(1);
        state.set_retrying(false);
        let err = b.write(0, b"x").expect_err("no retry");
        assert!(is_no_space(&err));
        assert_eq!(state.write_retries_total(), 0);
        assert!(!state.is_full());
    }

    #[test]
    fn refused_publishes_are_counted() {
        let state = DiskFull::default();
        state.note_refused_publish("a");
        state.note_refused_publish("b");
        assert_eq!(state.refused_publishes_total(), 2);
    }
}
