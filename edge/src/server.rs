//! Process-level wiring: opens storage, restores state, binds the listeners, then runs the
//! accept loops and the periodic tick on one smol executor until a caller-given shutdown
//! future resolves, and stops cleanly (clients disconnected, sync stopped, database closed).
//!
//! No signal handling here: the binary passes a future resolving on SIGINT/SIGTERM, a test
//! passes its own. [`Server::bind`] reports the bound addresses (port 0 allowed) before
//! anything is served; [`start`] runs a broker on its own thread of the calling process.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use smol::{Async, Executor};

use crate::broker::Broker;
use crate::config::{Config, ListenerKind};
use crate::error::{Error, Result};
use crate::storage::Store;
use crate::transport::Transport;
use crate::websocket::WsSettings;

use crate::auth::ListenerPolicy;
use crate::reload::{ReloadSource, Reloader, SharedAcceptor};

/// A broker with its storage open and its listeners bound, not serving yet.
pub struct Server {
    broker: Arc<Broker>,
    listeners: Vec<(Async<TcpListener>, Option<SharedAcceptor>)>,
    addrs: Vec<SocketAddr>,
    /// The operations HTTP listener (`[http]`), when enabled and bound.
    http: Option<crate::http::HttpListener>,
    started: Instant,
    /// Reload the configuration on SIGHUP (the binary; not in-process).
    sighup: Option<(async_signal::Signals, ReloadSource)>,
}

impl Server {
    /// Opens (creating or repairing) the database and restores its state, loads the TLS
    /// certificates and binds every listener. Errors name the file or address at fault.
    pub fn bind(cfg: Config) -> Result<Server> {
        let started = Instant::now();
        let auth = crate::reload::load_auth(&cfg)?;
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
                    .map(|a| a.map(|a| Arc::new(std::sync::RwLock::new(a))))
            })
            .collect::<Result<Vec<_>>>()?;
        let bind_err = |bind: SocketAddr| {
            move |e| Error::Io {
                what: format!("listeners.bind {bind}"),
                source: e,
            }
        };
        let mut listeners = Vec::with_capacity(cfg.listeners.len());
        let mut addrs = Vec::with_capacity(cfg.listeners.len());
        for (l, tls) in cfg.listeners.iter().zip(acceptors) {
            let std_listener = TcpListener::bind(l.bind).map_err(bind_err(l.bind))?;
            addrs.push(std_listener.local_addr().map_err(bind_err(l.bind))?);
            listeners.push((Async::new(std_listener).map_err(bind_err(l.bind))?, tls));
        }
        let http = crate::http::HttpListener::bind(&cfg.http)?;
        let broker = Broker::new(Arc::new(cfg), store, loaded);
        broker.set_auth(auth);
        Ok(Server {
            broker,
            listeners,
            addrs,
            http,
            started,
            sighup: None,
        })
    }

    /// Reload the configuration from `source` on SIGHUP while serving (see `reload`).
    pub fn reload_on_sighup(mut self, source: ReloadSource) -> Result<Server> {
        let signals =
            async_signal::Signals::new([async_signal::Signal::Hup]).map_err(|e| Error::Io {
                what: "SIGHUP handler".into(),
                source: e,
            })?;
        self.sighup = Some((signals, source));
        Ok(self)
    }

    /// The address each listener is bound to, in configuration order (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The address of the operations HTTP listener (port 0 resolved); `None` when disabled or
    /// not bound.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.local_addr())
    }

    /// Serves until `shutdown` resolves, then stops cleanly: listeners closed, clients sent a
    /// DISCONNECT, sync stopped, pending commits flushed and the database closed. The calling
    /// thread is the first executor thread (`worker_threads` counts it). `shutdown` runs as a
    /// task of its own (hence `Send + 'static`).
    pub fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        self.serve(shutdown, || {})
    }

    /// `run`, calling `ready` once sync is started and the accept loops are spawned.
    fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        ready: impl FnOnce(),
    ) -> Result<()> {
        let Server {
            broker,
            listeners,
            addrs: _,
            http,
            started,
            sighup,
        } = self;
        let stop_sync = match broker.cfg.sync.clone() {
            Some(sync) => Some(crate::sync_bridge::start(
                &broker,
                sync,
                broker.cfg.data_dir.clone(),
            )?),
            None => None,
        };
        let ex: Arc<Executor<'static>> = Arc::new(Executor::new());
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
            let spawned = std::thread::Builder::new()
                .name(format!("edge-worker-{i}"))
                .spawn(move || {
                    smol::block_on(ex.run(smol::future::or(
                        async {
                            let _ = stop_rx.recv().await;
                        },
                        crate::heap_trim::collect_each_second(),
                    )))
                });
            match spawned {
                Ok(w) => workers.push(w),
                Err(e) => {
                    drop(stop_tx);
                    for w in workers {
                        let _ = w.join();
                    }
                    if let Some(stop) = stop_sync {
                        smol::block_on(stop);
                    }
                    return Err(Error::Io {
                        what: "spawn worker thread".into(),
                        source: e,
                    });
                }
            }
        }

        // Accept loops and the tick are kept so that shutdown can cancel them: they hold the
        // executor and the broker, which must both go for the database to close cleanly.
        let mut background = Vec::new();
        let acceptors: Vec<Option<SharedAcceptor>> =
            listeners.iter().map(|(_, t)| t.clone()).collect();
        for (i, (l, tls)) in listeners.into_iter().enumerate() {
            let addr = l.get_ref().local_addr().ok();
            let lc = &broker.cfg.listeners[i];
            let ws = (lc.kind == ListenerKind::Websocket).then(|| {
                Arc::new(
                    WsSettings::new(lc.websocket_path(), broker.cfg.limits.max_packet_size)
                        .with_trusted_proxies(&lc.trusted_proxies),
                )
            });
            match &ws {
                None => tracing::info!(listen = ?addr, tls = tls.is_some(), "listening for MQTT"),
                Some(ws) => tracing::info!(listen = ?addr, tls = tls.is_some(), path = %ws.path,
                    "listening for MQTT over WebSocket"),
            }
            let policy = ListenerPolicy {
                allow_anonymous: lc.allows_anonymous(),
                use_identity_as_username: lc.uses_identity(),
            };
            // The PROXY protocol, and who may send it (on a WebSocket listener the
            // `trusted_proxies` are those of X-Forwarded-For instead).
            let proxy = lc.proxy_protocol.then(|| {
                Arc::new(match lc.kind {
                    ListenerKind::Websocket => Vec::new(),
                    ListenerKind::Mqtt => lc.trusted_proxies.iter().map(|p| p.0).collect(),
                })
            });
            let listener = Listener {
                tls,
                ws,
                proxy,
                policy,
            };
            background.push(ex.spawn(accept_loop(broker.clone(), ex.clone(), l, listener)));
        }
        if let Some((mut signals, source)) = sighup {
            let b = broker.clone();
            let mut reloader = Reloader::new(source, (*broker.cfg).clone(), acceptors)
                .with_http_tls(http.as_ref().and_then(|h| h.shared_tls()));
            background.push(ex.spawn(async move {
                while futures_lite::StreamExt::next(&mut signals).await.is_some() {
                    crate::systemd::notify_reloading();
                    reloader.reload(&b);
                    crate::systemd::notify_ready();
                }
            }));
        }
        // The tick marks each round; the systemd watchdog is pinged only while it keeps going,
        // so a wedged executor gets the service restarted.
        let last_tick = Arc::new(std::sync::atomic::AtomicU64::new(crate::message::now_ms()));
        {
            let b = broker.clone();
            let last_tick = last_tick.clone();
            background.push(ex.spawn(async move {
                loop {
                    b.tick().await;
                    last_tick.store(
                        crate::message::now_ms(),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    smol::Timer::after(Duration::from_secs(1)).await;
                }
            }));
        }
        if let Some(http) = http {
            background.push(ex.spawn(http.serve(broker.clone(), ex.clone())));
        }
        background.push(ex.spawn(crate::stats::sampler(broker.clone())));
        // Committed ops are freed here, not on the storage writer's thread (`storage/reap.rs`).
        {
            let b = broker.clone();
            background.push(ex.spawn(async move { b.store.reap().await }));
        }
        background.push(ex.spawn(crate::heap_trim::run()));
        // Closes connections whose keep-alive ran out (one task, not a timer per connection).
        {
            let b = broker.clone();
            background.push(ex.spawn(async move { b.keep_alives.run().await }));
        }
        if broker.cfg.sys_interval > 0 {
            background.push(ex.spawn(crate::sys_topics::run(broker.clone())));
        }
        let watched = broker.clone();
        background.push(ex.spawn(crate::systemd::watchdog(move || {
            // A stopped storage writer is wedged too: a restart replays the op log.
            watched.store.is_writing()
                && crate::message::now_ms()
                    .saturating_sub(last_tick.load(std::sync::atomic::Ordering::Relaxed))
                    < 10_000
        })));
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "broker started"
        );
        broker.stats.set_ready(true);
        ready();
        // Listeners bound, storage open: systemd's Type=notify start is complete.
        crate::systemd::notify_ready();

        // Damage found while serving (a session's queue, the sync outbox, the storage writer)
        // stops the broker cleanly too: the next start sets the file aside and salvages it.
        let damage = broker.store.damage_found();
        let set_aside = broker.cfg.storage.on_damaged == crate::config::OnDamaged::SetAside;
        let checked = broker.store.checked_at_start();
        let restart_on_damage = set_aside && !checked;
        let shutdown = {
            let damage = damage.clone();
            smol::future::or(shutdown, async move {
                if !set_aside {
                    return std::future::pending().await;
                }
                damage.wait().await;
                if checked {
                    tracing::error!("database damaged while serving, again after this start's check of every page passed: not stopping (it would restart in a loop); stop the broker and move edge.redb aside to salvage it");
                    return std::future::pending().await;
                }
                tracing::error!("database damaged while serving: stopping cleanly so that the next start sets it aside and salvages it (storage.on_damaged = \"set_aside\"; systemd starts the broker again)");
            })
        };
        // A task of its own: the future `run` drives is polled every time the executor is
        // woken, and the signal stream tried a read and re-registered its socket with the
        // reactor each time (two syscalls per wake-up, i.e. per message on a quiet broker).
        let shutdown = ex.spawn(shutdown);
        // Beside the tasks, on this thread: its heap's freed pages go back (`heap_trim.rs`).
        let collect = crate::heap_trim::collect_each_second();
        smol::block_on(ex.run(smol::future::or(collect, async {
            shutdown.await;
            tracing::info!("shutting down");
            broker.stats.set_ready(false);
            crate::systemd::notify_stopping();
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
            while broker.connections.active() > 0 && Instant::now() < deadline {
                smol::Timer::after(Duration::from_millis(20)).await;
                broker.kick_all();
            }
        })));
        drop(stop_tx);
        for w in workers {
            let _ = w.join();
        }
        // Dropping the executor drops every task still holding the broker, so the database is
        // closed cleanly below (redb marks a clean shutdown when the last handle goes).
        drop(ex);
        broker.store.close();
        let db = broker.store.database();
        let broker_db_path = broker.cfg.db_path();
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
        if restart_on_damage && damage.is_set() {
            return Err(Error::DamagedWhileServing {
                path: broker_db_path.display().to_string(),
            });
        }
        Ok(())
    }
}

/// Connections that may wait for their CONNACK beyond `limits.max_connections`.
const PENDING_HEADROOM: usize = 256;

/// Runs a boxed TLS or WebSocket handshake within `limit` (the CONNECT time limit); on failure
/// or timeout logs why the connection of `peer` is refused and gives None. The caller boxes the
/// handshake: its state would otherwise widen every connection task for the connection's life.
async fn handshake<F, T>(
    hs: std::pin::Pin<Box<F>>,
    limit: Duration,
    peer: SocketAddr,
    kind: &str,
) -> Option<T>
where
    F: Future<Output = std::io::Result<T>>,
{
    let timeout = async {
        smol::Timer::after(limit).await;
        Err(std::io::ErrorKind::TimedOut.into())
    };
    match hs.or(timeout).await {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::info!(%peer, error = %e, "connection refused: {kind} handshake failed");
            None
        }
    }
}

/// What a listener does with a connection before MQTT.
struct Listener {
    tls: Option<SharedAcceptor>,
    ws: Option<Arc<WsSettings>>,
    /// `proxy_protocol`: a PROXY header first, from these peers (empty: any).
    proxy: Option<Arc<Vec<ipnet::IpNet>>>,
    policy: ListenerPolicy,
}

/// Accepts connections on one listener for as long as the task lives.
async fn accept_loop(
    broker: Arc<Broker>,
    ex: Arc<Executor<'static>>,
    listener: Async<TcpListener>,
    Listener {
        tls,
        ws,
        proxy,
        policy,
    }: Listener,
) {
    // Connections not yet past CONNACK, bounded: a crowd of sockets that never send CONNECT
    // cannot grow without limit (each also ends at the connect timeout). The headroom keeps
    // probes and clients turned away at CONNECT (with a CONNACK) from crowding out real ones.
    let pending_max = broker
        .cfg
        .limits
        .max_connections
        .saturating_add(PENDING_HEADROOM);
    let pending = Arc::new(crate::broker::Connections::new(pending_max));
    static REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Follows `limits.max_connections` when a reload changes it.
                pending.set_max(broker.connections.max().saturating_add(PENDING_HEADROOM));
                let Some(pending_permit) = pending.try_acquire() else {
                    broker.stats.refused(crate::stats::Refused::TooManyPending);
                    if crate::ratelog::allowed(&REFUSED) {
                        tracing::warn!(%peer, limit = pending.max(),
                            "connection closed: too many connections waiting for CONNECT (logged once a second)");
                    }
                    drop(stream);
                    continue;
                };
                let _ = stream.get_ref().set_nodelay(true);
                let b = broker.clone();
                let handshake_timeout = Duration::from_secs(broker.live.connect_timeout_secs());
                let ws = ws.clone();
                let tls = tls
                    .as_ref()
                    .map(|t| t.read().unwrap_or_else(|e| e.into_inner()).clone());
                let connection_ex = ex.clone();
                let proxy = proxy.clone();
                ex.spawn(async move {
                    let mut stream = stream;
                    let peer = match proxy {
                        None => peer,
                        Some(trusted) => {
                            if !trusted.is_empty() && !trusted.iter().any(|n| n.contains(&peer.ip())) {
                                b.stats.refused(crate::stats::Refused::UntrustedProxy);
                                tracing::info!(%peer, "connection refused: not one of the listener's trusted_proxies");
                                return;
                            }
                            // Boxed like the handshakes below; within the CONNECT time limit.
                            let hs = Box::pin(crate::proxy_protocol::read_header(&mut stream, peer));
                            match handshake(hs, handshake_timeout, peer, "PROXY protocol").await {
                                Some(Some(client)) => client,
                                Some(None) => {
                                    // A TCP health check: connected, closed, sent nothing.
                                    tracing::debug!(%peer, "connection closed before sending a PROXY header");
                                    return;
                                }
                                None => {
                                    b.stats.refused(crate::stats::Refused::ProxyProtocol);
                                    return;
                                }
                            }
                        }
                    };
                    let (transport, peer) = match (tls, ws) {
                        (tls, Some(ws)) => {
                            // TLS (wss://) and the HTTP upgrade share the CONNECT time limit.
                            // Boxed, like the TLS handshake below. From here on the client's
                            // address is the one a trusted proxy forwarded, if any.
                            let hs =
                                Box::pin(Transport::websocket(stream, tls.as_ref(), &ws, peer));
                            let Some(t) = handshake(hs, handshake_timeout, peer, "WebSocket").await
                            else {
                                return;
                            };
                            t
                        }
                        (None, None) => (Transport::plain(stream), peer),
                        (Some(acceptor), None) => {
                            // Boxed: the TLS handshake's state would otherwise widen every
                            // connection task, plain or TLS, for the connection's life.
                            let hs = Box::pin(Transport::tls(stream, &acceptor));
                            let Some(t) = handshake(hs, handshake_timeout, peer, "TLS").await
                            else {
                                b.stats.refused(crate::stats::Refused::TlsHandshake);
                                return;
                            };
                            (t, peer)
                        }
                    };
                    // The connection runs in a task of its own, which holds only the connection's
                    // future: this one's captures and handshake state are freed now.
                    connection_ex
                        .spawn(crate::connection::serve(
                            b,
                            transport,
                            peer,
                            policy,
                            pending_permit,
                        ))
                        .detach();
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
}

/// Binds and runs a broker until `shutdown` resolves, reloading from `source` on SIGHUP
/// (`Server::bind(cfg)?.reload_on_sighup(source)?.run(shutdown)`).
pub fn run(
    cfg: Config,
    source: ReloadSource,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    Server::bind(cfg)?.reload_on_sighup(source)?.run(shutdown)
}

/// Starts a broker on a thread of its own in this process and returns once it serves (or
/// with the error that kept it from starting). Meant for tests and embedding: bind to
/// `127.0.0.1:0` and read the ports from [`Running::addrs`].
pub fn start(cfg: Config) -> Result<Running> {
    let server = Server::bind(cfg)?;
    let addrs = server.local_addrs().to_vec();
    let http_addr = server.http_addr();
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    // First message: ready (Ok) or the start-up error; second: the result of the run.
    let (state_tx, state_rx) = async_channel::unbounded::<Result<()>>();
    let thread = std::thread::Builder::new()
        .name("edge-server".into())
        .spawn(move || {
            let ready = state_tx.clone();
            let shutdown = async move {
                // A closed channel (the `Running` dropped) stops the broker too.
                let _ = stop_rx.recv().await;
            };
            let r = server.serve(shutdown, move || {
                let _ = ready.try_send(Ok(()));
            });
            let _ = state_tx.try_send(r);
        })
        .map_err(|e| Error::Io {
            what: "spawn server thread".into(),
            source: e,
        })?;
    let gone = || Error::Io {
        what: "server thread".into(),
        source: std::io::Error::other("the server thread ended without a result"),
    };
    match state_rx.recv_blocking() {
        Ok(Ok(())) => Ok(Running {
            addrs,
            http_addr,
            stop: stop_tx,
            state: state_rx,
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(gone())
        }
    }
}

/// A broker serving on its own thread (see [`start`]). Dropping it stops the broker and
/// waits for it; [`Running::shutdown`] does the same and returns the result.
pub struct Running {
    addrs: Vec<SocketAddr>,
    http_addr: Option<SocketAddr>,
    stop: async_channel::Sender<()>,
    state: async_channel::Receiver<Result<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// The bound address of each configured listener, in order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The operations HTTP listener's address, when enabled and bound.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Stops the broker as SIGTERM stops the binary and waits until the database is closed.
    pub async fn shutdown(mut self) -> Result<()> {
        self.stop.close();
        let result = self.state.recv().await.unwrap_or_else(|_| {
            Err(Error::Io {
                what: "server thread".into(),
                source: std::io::Error::other("the server thread ended without a result"),
            })
        });
        if let Some(t) = self.thread.take() {
            // The thread has sent its result: joining only waits for it to return.
            let _ = smol::unblock(move || t.join()).await;
        }
        result
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
