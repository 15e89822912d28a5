//! HTTP uplink: with `http(s)://` upstreams, outbox records are posted one at a time, in order
//! (highest priority lane first), to RobustMQ's `POST /api/cluster/message/send`, and removed
//! only after a 2xx reply with `code` 0. reqwest's blocking client runs under `smol::unblock`.
//!
//! Why blocking: reqwest needs tokio, the sync module runs on smol; the blocking client keeps its
//! own small tokio runtime on one background thread, and one request at a time is what in-order
//! delivery needs anyway, so no second async runtime has to be driven from smol.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use serde_json::{json, Value};

use crate::config::Upstream;
use crate::ctx::Ctx;
use crate::outbox::{now_ms, DropReason, LaneItem, PRIORITIES};
use crate::status::LinkState;

/// Largest payload RobustMQ's HTTP API takes (a UTF-8 string of at most 1 MB).
pub const MAX_HTTP_PAYLOAD: usize = 1024 * 1024;
const SEND_PATH: &str = "/api/cluster/message/send";
const LOGIN_PATH: &str = "/api/v1/login";

/// What became of one post.
#[derive(Debug)]
enum Posted {
    /// 2xx with `code` 0; the first storage offset if the reply had one.
    Stored(Option<u64>),
    /// 401/403: log in (again) and retry.
    Unauthorized,
    Failed(String),
}

/// Why a record cannot go through the HTTP API (it is dropped and counted as `invalid`).
pub fn refused(payload: &[u8]) -> Option<&'static str> {
    if payload.len() > MAX_HTTP_PAYLOAD {
        Some("payload over 1 MB")
    } else if std::str::from_utf8(payload).is_err() {
        Some("payload is not UTF-8 text")
    } else {
        None
    }
}

fn base_url(up: &Upstream) -> String {
    let scheme = if up.tls { "https" } else { "http" };
    if up.host.contains(':') {
        format!("{scheme}://[{}]:{}", up.host, up.port)
    } else {
        format!("{scheme}://{}:{}", up.host, up.port)
    }
}

fn client(ctx: &Ctx) -> Result<reqwest::blocking::Client, String> {
    let mut b = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(ctx.cfg.connect_timeout_secs))
        .timeout(Duration::from_secs(30))
        .use_rustls_tls();
    if let Some(ca) = ctx.cfg.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())? {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| e.to_string())
}

fn post(c: &reqwest::blocking::Client, url: &str, token: Option<&str>, body: &Value) -> Posted {
    let mut req = c.post(url).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = match req.send() {
        Ok(r) => r,
        Err(e) => return Posted::Failed(e.to_string()),
    };
    let status = resp.status();
    if status.as_u16() == 401 || status.as_u16() == 403 {
        return Posted::Unauthorized;
    }
    let text = resp.text().unwrap_or_default();
    if !status.is_success() {
        return Posted::Failed(format!(
            "HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v["code"].as_i64() == Some(0) => Posted::Stored(v["data"]["offsets"][0].as_u64()),
        Ok(v) => {
            let why = v["message"].as_str().or(v["error"].as_str()).unwrap_or("");
            Posted::Failed(format!("code {}: {why}", v["code"]))
        }
        Err(e) => Posted::Failed(format!("reply is not JSON: {e}")),
    }
}

/// `POST /api/v1/login`; the JWT is taken from `data` (a string) or `data.token`.
fn login(
    c: &reqwest::blocking::Client,
    base: &str,
    user: &str,
    pass: &str,
) -> Result<String, String> {
    let body = json!({"username": user, "password": pass});
    let resp = c
        .post(format!("{base}{LOGIN_PATH}"))
        .json(&body)
        .send()
        .map_err(|e| format!("login: {e}"))?;
    let v: Value = resp.json().map_err(|e| format!("login reply: {e}"))?;
    if v["code"].as_i64().is_some_and(|c| c != 0) {
        return Err(format!("login refused: {}", v["message"]));
    }
    v["data"]
        .as_str()
        .or(v["data"]["token"].as_str())
        .map(str::to_string)
        .ok_or_else(|| "login reply without a token".to_string())
}

/// Where each lane's reading starts: every record at or below `after[l]` belongs to a rule in
/// `closed` (records are only ever appended), so a long backlog waiting for its schedule is
/// skipped once, not before every post. A change of `closed` starts over.
#[derive(Default)]
struct Heads {
    closed: HashSet<String>,
    after: [u64; PRIORITIES],
}

/// The next record to send: the oldest of the highest non-empty priority, skipping records of
/// rules whose schedule gate is closed for upstream `up`.
fn next_record(ctx: &Ctx, up: usize, heads: &mut Heads) -> Result<Option<(u8, LaneItem)>, String> {
    let closed = ctx.gates.closed_filters(ctx.clock.now_ms(), Some(up));
    if closed != heads.closed {
        *heads = Heads {
            closed,
            after: [0; PRIORITIES],
        };
    }
    for l in (0..PRIORITIES).rev() {
        let read = ctx
            .outbox
            .read_lane_open(l, heads.after[l], 1, usize::MAX, &heads.closed, usize::MAX)
            .map_err(|e| e.to_string())?;
        let mut items = read.items;
        if let Some(item) = items.pop() {
            let seq = match &item {
                Ok((seq, _)) => *seq,
                Err(seq) => *seq,
            };
            // The record stays first in line until it is removed.
            heads.after[l] = seq.saturating_sub(1);
            return Ok(Some((l as u8, item)));
        }
        // Nothing to send in this lane: whatever was looked at is held.
        heads.after[l] = heads.after[l].max(read.last);
    }
    Ok(None)
}

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let ups = ctx.cfg.upstream_list();
    let c = {
        let ctx2 = ctx.clone();
        match smol::unblock(move || client(&ctx2)).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("sync HTTP uplink: {e}");
                ctx.live.set_error(e);
                return;
            }
        }
    };
    let tenant = ctx.cfg.tenant.clone().unwrap_or_else(|| "default".into());
    let initial = Duration::from_millis(ctx.cfg.backoff.initial_ms);
    let mut backoff = initial;
    let mut idx = 0usize;
    let mut token: Option<String> = None;
    let mut just_logged_in = false;
    let mut heads = Some(Heads::default());
    while !ctx.stop.is_set() {
        let up = ups[idx % ups.len().max(1)].clone();
        let base = base_url(&up);
        ctx.live.link().upstream = Some(up.to_string());
        let listener = ctx.outbox.listen();
        let next = {
            let ctx = ctx.clone();
            let up = idx % ups.len().max(1);
            let mut h = heads.take().unwrap_or_default();
            let (next, h) = smol::unblock(move || {
                let next = next_record(&ctx, up, &mut h);
                (next, h)
            })
            .await;
            heads = Some(h);
            next
        };
        let (lane, item) = match next {
            Ok(Some(x)) => x,
            Ok(None) => {
                future::or(future::or(listener, ctx.stop.wait()), async {
                    smol::Timer::after(Duration::from_secs(1)).await;
                })
                .await;
                continue;
            }
            Err(e) => {
                tracing::warn!("sync HTTP uplink: reading the outbox: {e}");
                smol::Timer::after(initial).await;
                continue;
            }
        };
        let drop_rec = |seq: u64, why: DropReason| {
            let ob = ctx.outbox.clone();
            smol::unblock(move || ob.remove(&[], &[(lane, seq, why)], None, None))
        };
        let (seq, rec) = match item {
            Ok(x) => x,
            Err(seq) => {
                let _ = drop_rec(seq, DropReason::Corrupt).await;
                continue;
            }
        };
        if rec.expires_at_ms != 0 && rec.expires_at_ms <= now_ms() {
            let _ = drop_rec(seq, DropReason::Ttl).await;
            continue;
        }
        if let Some(why) = refused(&rec.payload) {
            tracing::warn!(topic = %rec.topic, seq, "sync HTTP uplink: record dropped as invalid: {why}");
            let _ = drop_rec(seq, DropReason::Corrupt).await;
            continue;
        }
        let body = json!({
            "tenant": tenant,
            "topic": rec.topic,
            "payload": String::from_utf8_lossy(&rec.payload),
        });
        let url = format!("{base}{SEND_PATH}");
        let (c2, tok) = (c.clone(), token.clone());
        let posted = smol::unblock(move || post(&c2, &url, tok.as_deref(), &body)).await;
        ctx.live.sent.fetch_add(1, Ordering::Relaxed);
        let err = match posted {
            Posted::Stored(offset) => {
                let ob = ctx.outbox.clone();
                match smol::unblock(move || ob.remove(&[(lane, seq)], &[], offset, None)).await {
                    Ok(()) => {
                        let mut l = ctx.live.link();
                        if l.state != LinkState::Connected {
                            l.state = LinkState::Connected;
                            l.connected_since_ms = Some(now_ms());
                        }
                        backoff = initial;
                        just_logged_in = false;
                        continue;
                    }
                    Err(e) => format!("removing an acknowledged record: {e}"),
                }
            }
            Posted::Unauthorized if just_logged_in => {
                just_logged_in = false;
                token = None;
                "unauthorized right after logging in".into()
            }
            Posted::Unauthorized => match (&ctx.cfg.username, &ctx.cfg.password) {
                (Some(u), Some(p)) => {
                    let (c2, b2, u, p) = (c.clone(), base.clone(), u.clone(), p.clone());
                    match smol::unblock(move || login(&c2, &b2, &u, &p)).await {
                        Ok(t) => {
                            token = Some(t);
                            just_logged_in = true;
                            continue;
                        }
                        Err(e) => e,
                    }
                }
                _ => "unauthorized (set sync.username and sync.password to log in)".into(),
            },
            Posted::Failed(e) => e,
        };
        // Not stored: the record stays first in line; next upstream after a backoff.
        let msg = format!("{up}: {err}");
        tracing::warn!("sync HTTP uplink: {msg}");
        {
            let mut l = ctx.live.link();
            l.state = LinkState::Backoff;
            l.connected_since_ms = None;
            l.last_error = Some(msg);
        }
        idx += 1;
        let sleep = super::rotation::jitter(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(ctx.cfg.backoff.max_ms));
        ctx.stop.sleep(sleep).await;
    }
    ctx.live.set_state(LinkState::Stopped);
}
