//! The server's own stops: damage found while serving stops it cleanly with an error naming
//! the database (`storage.on_damaged = "set_aside"`), not with `"stop"`, and not again after a
//! start whose check of every page passed (a restart loop).

use std::time::Duration;

use super::*;
use crate::config::{Config, ListenerConfig, OnDamaged};

fn cfg(dir: &std::path::Path, on_damaged: OnDamaged) -> Config {
    let mut c = Config {
        data_dir: dir.to_path_buf(),
        listeners: vec![ListenerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            ..ListenerConfig::default()
        }],
        ..Config::default()
    };
    c.http.enabled = false;
    c.storage.on_damaged = on_damaged;
    c
}

/// Serves `server` on a thread until `stop` is sent (or closed); returns the run's result.
fn serve(server: Server) -> (async_channel::Sender<()>, JoinHandle<Result<()>>) {
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let thread = std::thread::spawn(move || {
        server.run(async move {
            let _ = stopped.recv().await;
        })
    });
    (stop, thread)
}

/// The run's result, or `None` when it is still serving after `limit`.
fn result_within(thread: JoinHandle<Result<()>>, limit: Duration) -> Option<Result<()>> {
    let deadline = Instant::now() + limit;
    while !thread.is_finished() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(thread.join().expect("the server thread panicked"))
}

/// Serves `server`, reports damage, checks it still serves half a second later, then stops it:
/// a clean stop (`Ok`).
fn keeps_serving_after_damage(server: Server) {
    let found = server.broker.store.damage_hook();
    let (stop, thread) = serve(server);
    found("a test read");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!thread.is_finished(), "the broker stopped");
    stop.close();
    let r = result_within(thread, Duration::from_secs(20)).expect("the broker stopped");
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn damage_found_while_serving_stops_the_broker_cleanly_with_an_error_naming_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::bind(cfg(dir.path(), OnDamaged::SetAside)).unwrap();
    let found = server.broker.store.damage_hook();
    let (_stop, thread) = serve(server);
    std::thread::sleep(Duration::from_millis(200));
    found("a test read");
    let r = result_within(thread, Duration::from_secs(20)).expect("the broker stopped");
    match r {
        Err(Error::DamagedWhileServing { path }) => assert!(path.ends_with("edge.redb"), "{path}"),
        other => panic!("expected DamagedWhileServing, got {other:?}"),
    }
    // Stopped cleanly, leaving the marker that makes the next start check the file.
    assert!(dir.path().join("edge.redb-check").is_file());
    redb::ReadOnlyDatabase::open(dir.path().join("edge.redb")).expect("closed cleanly");
}

#[test]
fn with_on_damaged_stop_damage_found_while_serving_leaves_the_broker_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::bind(cfg(dir.path(), OnDamaged::Stop)).unwrap();
    keeps_serving_after_damage(server);
}

#[test]
fn damage_found_again_after_a_start_whose_check_passed_does_not_stop_the_broker_in_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    // The last run found damage; this start's check of every page passes.
    std::fs::write(dir.path().join("edge.redb-check"), b"").unwrap();
    let server = Server::bind(cfg(dir.path(), OnDamaged::SetAside)).unwrap();
    assert!(server.broker.store.checked_at_start());
    keeps_serving_after_damage(server);
}
