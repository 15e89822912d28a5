//! The operations HTTP listener (`[http]`): `/metrics` (Prometheus text), `/health/live`,
//! `/health/ready`, `/api/v1/status` (JSON) and the status page at `/` (`status.html`, embedded).
//!
//! Invariants: read-only (GET/HEAD only, nothing changes the broker); on a non-loopback address
//! it is HTTPS with a bearer token (enforced by `Config::validate`); a token, when set, guards
//! every path but `/health/*` and the page itself (the page sends it from its URL fragment);
//! connections are bounded in number and lifetime. hyper 1 (HTTP/1.1) runs on the broker's smol
//! executor through smol-hyper's adapters: no second async runtime.

use crate::reload::SharedAcceptor;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::FutureExt;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};
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
    /// Replaced in place when SIGHUP re-reads `[http.tls]`.
    tls: Option<SharedAcceptor>,
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
            .transpose()?
            .map(|a| Arc::new(std::sync::RwLock::new(a)));
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

    /// The HTTPS acceptor, for SIGHUP to swap in re-read certificate files.
    pub fn shared_tls(&self) -> Option<SharedAcceptor> {
        self.tls.clone()
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
            // The acceptor in force when the connection came (a reload swaps it for later ones).
            let tls = self
                .tls
                .as_ref()
                .map(|t| t.read().unwrap_or_else(|e| e.into_inner()).clone());
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
        async move {
            let auth = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let r = respond(
                &broker,
                token.as_deref(),
                req.method(),
                req.uri().path(),
                auth,
            );
            Ok::<_, Infallible>(r)
        }
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

/// What one request gets (`authorization`: the header's value). Bodies are small and built in
/// memory.
fn respond(
    broker: &Broker,
    token: Option<&str>,
    method: &Method,
    path: &str,
    authorization: Option<&str>,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/health/live" => text(StatusCode::OK, "live\n"),
        "/health/ready" => {
            if broker.stats.is_ready() && broker.store.is_writing() {
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
            if !authorized(token, authorization) {
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
fn authorized(token: Option<&str>, authorization: Option<&str>) -> bool {
    let Some(want) = token else {
        return true;
    };
    let given = authorization
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::storage::Store;
    use http_body_util::BodyExt;

    fn broker() -> (Arc<Broker>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let cfg = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let (store, loaded) = Store::open(&cfg).expect("open store");
        (Broker::new(Arc::new(cfg), store, loaded), dir)
    }

    fn body(r: Response<Full<Bytes>>) -> String {
        let bytes = smol::block_on(r.into_body().collect())
            .expect("in-memory body")
            .to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    const TOKEN: &str = "0123456789abcdef";

    #[test]
    fn ready_is_503_until_the_broker_serves_and_once_storage_stops() {
        let (b, _dir) = broker();
        let get = |path| respond(&b, None, &Method::GET, path, None).status();
        assert_eq!(get("/health/live"), StatusCode::OK);
        assert_eq!(get("/health/ready"), StatusCode::SERVICE_UNAVAILABLE);
        b.stats.set_ready(true);
        assert_eq!(get("/health/ready"), StatusCode::OK);
        b.stats.set_ready(false);
        assert_eq!(get("/health/ready"), StatusCode::SERVICE_UNAVAILABLE);
        b.stats.set_ready(true);
        b.store.close();
        assert_eq!(
            get("/health/ready"),
            StatusCode::SERVICE_UNAVAILABLE,
            "the storage writer stopped"
        );
        assert_eq!(get("/health/live"), StatusCode::OK);
    }

    #[test]
    fn metrics_and_status_need_the_bearer_token_when_one_is_set() {
        let (b, _dir) = broker();
        for path in ["/metrics", "/api/v1/status"] {
            let r = respond(&b, Some(TOKEN), &Method::GET, path, None);
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
            let wrong = respond(
                &b,
                Some(TOKEN),
                &Method::GET,
                path,
                Some("Bearer 0123456789abcdeX"),
            );
            assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
            let right = format!("Bearer {TOKEN}");
            let ok = respond(&b, Some(TOKEN), &Method::GET, path, Some(&right));
            assert_eq!(ok.status(), StatusCode::OK, "{path}");
        }
        // Probes and the page itself carry no token.
        for path in ["/health/live", "/"] {
            let r = respond(&b, Some(TOKEN), &Method::GET, path, None);
            assert_eq!(r.status(), StatusCode::OK, "{path}");
        }
    }

    #[test]
    fn status_json_holds_broker_figures_and_no_sync_when_sync_is_off() {
        let (b, _dir) = broker();
        b.stats.publish_received(1, 42);
        let r = respond(&b, None, &Method::GET, "/api/v1/status", None);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let v: serde_json::Value = serde_json::from_str(&body(r)).expect("JSON");
        assert_eq!(v["broker"]["messages"]["received_by_qos"]["1"], 1);
        assert_eq!(
            v["broker"]["messages"]["received_payload_bytes_by_qos"]["1"],
            42
        );
        assert!(v["sync"].is_null());
        assert_eq!(v["history"]["interval_secs"], 10);
    }

    #[test]
    fn only_get_and_head_are_served_and_unknown_paths_are_404() {
        let (b, _dir) = broker();
        let r = respond(&b, None, &Method::POST, "/metrics", None);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
        let r = respond(&b, None, &Method::GET, "/nope", None);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn metrics_have_help_and_type_for_every_family() {
        let (b, _dir) = broker();
        let text = body(respond(&b, None, &Method::GET, "/metrics", None));
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap_or("").to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                assert!(name.starts_with("robustmq_edge_"), "{line}");
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                    .unwrap_or(name);
                assert!(declared.contains(family), "no TYPE before {line}");
            }
        }
        assert!(text.contains("robustmq_edge_storage_commit_duration_seconds_bucket{le=\"+Inf\"}"));
        // The commit journal is on by default; opening the store already made a record.
        let records = text
            .lines()
            .find_map(|l| l.strip_prefix("robustmq_edge_storage_journal_records_total "))
            .expect("journal records");
        assert!(records.parse::<u64>().unwrap() > 0, "{records}");
        assert!(text.contains("robustmq_edge_storage_journal_checkpoints_total "));
        // So is the op log, which started its first generation at open.
        let restarts = text
            .lines()
            .find_map(|l| l.strip_prefix("robustmq_edge_storage_oplog_restarts_total "))
            .expect("op log restarts");
        assert!(restarts.parse::<u64>().unwrap() > 0, "{restarts}");
        assert!(text.contains("robustmq_edge_storage_oplog_records_total "));
    }
}
