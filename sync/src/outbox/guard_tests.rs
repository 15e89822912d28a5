//! `Outbox::guarded`: a panic inside a read of the outbox (redb on a damaged page) is an error
//! and calls the damage hook; other errors and results pass through untouched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::Outbox;
use crate::{SyncConfig, SyncError};

fn outbox() -> (tempfile::TempDir, Arc<Outbox>, Arc<AtomicUsize>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(redb::Database::create(dir.path().join("edge.redb")).unwrap());
    let cfg = SyncConfig::from_toml_str(
        "node_id = \"n1\"\nupstreams = [\"tcp://127.0.0.1:1\"]\n[[forward]]\nfilter = \"a/#\"\n",
    )
    .unwrap();
    let ob = Outbox::open(db, &cfg).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    ob.on_damage(Box::new(move |_what| {
        c.fetch_add(1, Ordering::SeqCst);
    }));
    (dir, ob, calls)
}

#[test]
fn a_panic_inside_an_outbox_read_is_a_damage_error_and_calls_the_hook() {
    let (_dir, ob, calls) = outbox();
    let r: Result<(), SyncError> = ob.guarded("a test read", || panic!("entered unreachable code"));
    match r {
        Err(SyncError::Damaged { what, panic }) => {
            assert_eq!(what, "a test read");
            assert!(panic.contains("unreachable"), "{panic}");
        }
        other => panic!("expected Damaged, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // redb's own report of a corrupt page counts too.
    let r: Result<(), SyncError> = ob.guarded("a test read", || {
        Err(SyncError::Storage(redb::Error::Corrupted("bad".into())))
    });
    assert!(r.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn results_and_other_errors_pass_through_without_the_hook() {
    let (_dir, ob, calls) = outbox();
    assert_eq!(ob.guarded("a read", || Ok(7)).unwrap(), 7);
    let r: Result<(), SyncError> = ob.guarded("a read", || Err(SyncError::Invariant("x")));
    assert!(matches!(r, Err(SyncError::Invariant("x"))));
    // The real reads go through it and work on an intact outbox.
    assert!(ob.read_lane(0, 0, 10, usize::MAX).unwrap().is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}
