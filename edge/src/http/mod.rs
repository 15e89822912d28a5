//! The operations HTTP listener (`[http]`): `/metrics` (Prometheus text), `/health/live`,
//! `/health/ready`, `/api/v1/status` (JSON) and the status page at `/` (`status.html`, embedded).
//!
//! Invariants: read-only (GET/HEAD only, nothing changes the broker); on a non-loopback address
//! it is HTTPS with a bearer token (enforced by `Config::validate`); a token, when set, guards
//! every path but `/health/*` and the page itself (the page sends it from its URL fragment);
//! connections are bounded in number and lifetime. hyper 1 (HTTP/1.1) runs on the broker's smol
//! executor through smol-hyper's adapters: no second async runtime.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::FutureExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use smol::lock::Semaphore;
use smol::{Async, Executor};
use smol_hyper::rt::{FuturesIo, SmolTimer};

use crate::broker::Broker;
use crate::config::HttpConfig;
use crate::error::Result;
use crate::stats::{prometheus, Snapshot};

/// The status page: plain HTML and JavaScript, no build step.
const STATUS_PAGE: &str = include_str!("status.html");
/// Connections served at once; more are closed at accept (an operations port sees a scraper,
/// a probe and a browser or two).
const MAX_CONNECTIONS: usize = 32;
/// Longest life of one connection (keep-alive included), and of a request's headers.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound HTTP listener, not serving yet.
pub struct HttpListener {
    listener: Async<TcpListener>,
    addr: SocketAddr,
    tls: Option<futures_rustls::TlsAcceptor>,
    token: Option<Arc<str>>,
}

impl HttpListener {
    /// Loads the TLS files (an error names the `http.tls` key) and binds `http.bind`. A port
    /// that cannot be bound is logged and leaves the broker without the listener: the
    /// operations port never keeps the MQTT service from starting. `None` when disabled.
    pub fn bind(cfg: &HttpConfig) -> Result<Option<HttpListener>> {
        if !cfg.enabled {
            return Ok(None);
        }
        let tls = cfg
            .tls
            .as_ref()
            .map(|t| crate::transport::acceptor(t, "http.tls"))
            .transpose()?;
        let bound = TcpListener::bind(cfg.bind).and_then(|l| {
            let addr = l.local_addr()?;
            Ok((Async::new(l)?, addr))
        });
        match bound {
            Ok((listener, addr)) => Ok(Some(HttpListener {
                listener,
                addr,
                tls,
                token: cfg.token.as_deref().map(Arc::from),
            })),
            Err(e) => {
                tracing::error!(bind = %cfg.bind, error = %e,
                    "operations HTTP listener not started: cannot bind `http.bind` (MQTT is served all the same)");
                Ok(None)
            }
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts and serves connections for as long as the task lives.
    pub async fn serve(self, broker: Arc<Broker>, ex: Arc<Executor<'static>>) {
        tracing::info!(listen = %self.addr, tls = self.tls.is_some(), token = self.token.is_some(),
            "listening for HTTP (metrics, health, status)");
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    smol::Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(slot) = slots.try_acquire_arc() else {
                tracing::debug!(%peer, "HTTP connection closed: too many open");
                continue;
            };
            let broker = broker.clone();
            let tls = self.tls.clone();
            let token = self.token.clone();
            ex.spawn(async move {
                serve_connection(stream, peer, tls, broker, token)
                    .or(async {
                        smol::Timer::after(CONNECTION_LIFETIME).await;
                    })
                    .await;
                drop(slot);
            })
            .detach();
        }
    }
}

async fn serve_connection(
    stream: Async<TcpStream>,
    peer: SocketAddr,
    tls: Option<futures_rustls::TlsAcceptor>,
    broker: Arc<Broker>,
    token: Option<Arc<str>>,
) {
    let service = hyper::service::service_fn(move |req| {
        let broker = broker.clone();
        let token = token.clone();
        async move { Ok::<_, Infallible>(respond(&broker, token.as_deref(), &req)) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(SmolTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let result = match tls {
        None => {
            builder
                .serve_connection(FuturesIo::new(stream), service)
                .await
        }
        Some(acceptor) => {
            let hs = async { acceptor.accept(stream).await.map(Some) }.or(async {
                smol::Timer::after(HEADER_TIMEOUT).await;
                Ok(None)
            });
            match hs.await {
                Ok(Some(s)) => builder.serve_connection(FuturesIo::new(s), service).await,
                Ok(None) => {
                    tracing::info!(%peer, "HTTPS handshake timed out");
                    return;
                }
                Err(e) => {
                    tracing::info!(%peer, error = %e, "HTTPS handshake failed");
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

/// What one request gets. Bodies are small and built in memory.
fn respond(broker: &Broker, token: Option<&str>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = req.uri().path();
    match path {
        "/health/live" => text(StatusCode::OK, "live\n"),
        "/health/ready" => {
            if broker.stats.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/" | "/index.html" => with_type(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from_static(STATUS_PAGE.as_bytes()),
        ),
        "/metrics" | "/api/v1/status" => {
            if !authorized(token, req) {
                let mut r = text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
            let snapshot = Snapshot::take(broker);
            if path == "/metrics" {
                let body = prometheus::render(&snapshot);
                with_type(StatusCode::OK, prometheus::CONTENT_TYPE, Bytes::from(body))
            } else {
                let history = edge_mqtt::util::lock(&broker.stats.history).samples();
                let body = snapshot.to_json(&history).to_string();
                with_type(StatusCode::OK, "application/json", Bytes::from(body))
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// No token configured, or `Authorization: Bearer <token>` matching it (constant time).
fn authorized(token: Option<&str>, req: &Request<Incoming>) -> bool {
    let Some(want) = token else {
        return true;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    subtle::ConstantTimeEq::ct_eq(given.as_bytes(), want.as_bytes()).into()
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
