//! Process-level wiring: opens storage, restores state, runs the listeners and the periodic
//! tick on one smol executor, and shuts down cleanly on SIGINT/SIGTERM.

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{FutureExt, StreamExt};
use smol::{Async, Executor};

use crate::broker::Broker;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::storage::Store;
use crate::transport::Transport;

/// Hooks run once the broker exists (the sync bridge uses it), returning a shutdown future.
pub type StartHook = Box<dyn FnOnce(&Arc<Broker>) -> Result<futures_lite::future::Boxed<()>>>;

/// Runs the broker until SIGINT or SIGTERM.
pub fn run(cfg: Config, on_start: Option<StartHook>) -> Result<()> {
    let started = Instant::now();
    let (store, loaded) = Store::open(&cfg)?;
    let acceptors = cfg
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.tls
                .as_ref()
                .map(|t| crate::transport::acceptor(t, &format!("listeners[{i}].tls")))
                .transpose()
        })
        .collect::<Result<Vec<_>>>()?;
    let listeners = cfg
        .listeners
        .iter()
        .map(|l| {
            let std_listener = TcpListener::bind(l.bind).map_err(|e| Error::Io {
                what: format!("listeners.bind {}", l.bind),
                source: e,
            })?;
            Async::new(std_listener).map_err(|e| Error::Io {
                what: format!("listeners.bind {}", l.bind),
                source: e,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let broker = Broker::new(Arc::new(cfg), store, loaded);
    let ex: Arc<Executor<'static>> = Arc::new(Executor::new());
    let stop_sync = match on_start {
        Some(hook) => Some(hook(&broker)?),
        None => None,
    };

    let threads = match broker.cfg.worker_threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4),
        n => n,
    };
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let mut workers = Vec::new();
    for i in 1..threads {
        let ex = ex.clone();
        let stop_rx = stop_rx.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("edge-worker-{i}"))
                .spawn(move || {
                    smol::block_on(ex.run(async {
                        let _ = stop_rx.recv().await;
                    }))
                })
                .map_err(|e| Error::Io {
                    what: "spawn worker thread".into(),
                    source: e,
                })?,
        );
    }

    // Accept loops and the tick are kept so that shutdown can cancel them: they hold the
    // executor and the broker, which must both go for the database to close cleanly.
    let mut background = Vec::new();
    for (l, tls) in listeners.into_iter().zip(acceptors) {
        let addr = l.get_ref().local_addr().ok();
        tracing::info!(listen = ?addr, tls = tls.is_some(), "listening for MQTT");
        let b = broker.clone();
        let ex2 = ex.clone();
        let handshake_timeout = Duration::from_secs(b.cfg.limits.connect_timeout_secs);
        background.push(ex.spawn(async move {
            loop {
                match l.accept().await {
                    Ok((stream, peer)) => {
                        let _ = stream.get_ref().set_nodelay(true);
                        let b = b.clone();
                        let tls = tls.clone();
                        ex2.spawn(async move {
                            let transport = match tls {
                                None => Transport::plain(stream),
                                Some(acceptor) => {
                                    let hs = Transport::tls(stream, &acceptor).or(async {
                                        smol::Timer::after(handshake_timeout).await;
                                        Err(std::io::ErrorKind::TimedOut.into())
                                    });
                                    match hs.await {
                                        Ok(t) => t,
                                        Err(e) => {
                                            tracing::info!(%peer, error = %e, "connection refused: TLS handshake failed");
                                            return;
                                        }
                                    }
                                }
                            };
                            crate::connection::serve(b, transport, peer).await;
                        })
                        .detach();
                    }
                    Err(e) => {
                        // EMFILE and friends: log and back off rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        smol::Timer::after(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    {
        let b = broker.clone();
        background.push(ex.spawn(async move {
            loop {
                b.tick().await;
                smol::Timer::after(Duration::from_secs(1)).await;
            }
        }));
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "broker started"
    );

    let signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
            .map_err(|e| Error::Io {
                what: "signal handlers".into(),
                source: e,
            })?;
    smol::block_on(ex.run(async {
        let mut signals = signals;
        let sig = signals.next().await;
        tracing::info!(signal = ?sig, "shutting down");
        // Stop accepting and ticking first. Cancelling inside the executor matters: a
        // cancelled task's future is dropped by the executor, and with a single worker
        // thread nothing would run it after this block.
        for task in background {
            task.cancel().await;
        }
        broker.kick_all();
        if let Some(stop) = stop_sync {
            stop.await;
        }
        // Give connections a moment to flush their DISCONNECT and detach.
        let deadline = Instant::now() + Duration::from_secs(5);
        while broker.connections.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            smol::Timer::after(Duration::from_millis(20)).await;
            broker.kick_all();
        }
    }));
    drop(stop_tx);
    for w in workers {
        let _ = w.join();
    }
    // Dropping the executor drops every task still holding the broker, so the database is
    // closed cleanly below (redb marks a clean shutdown when the last handle goes).
    drop(ex);
    broker.store.close();
    let db = broker.store.database();
    drop(broker);
    match Arc::try_unwrap(db) {
        Ok(db) => {
            if let Err(e) = db.close() {
                tracing::warn!(error = %e, "database close");
            }
        }
        Err(_) => {
            tracing::warn!("database still in use at exit; it will be repaired at next start")
        }
    }
    tracing::info!("stopped");
    Ok(())
}
