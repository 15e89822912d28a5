//! The HTTP side of a WebSocket listener: reads one request head (at most 8 KiB), answers an
//! upgrade to the listener's path with subprotocol `mqtt` or `mqttv3.1` with 101, and anything
//! else with an HTTP error status and a one-line reason before closing (RFC 6455 §4.2.1), so a
//! browser, `curl` or a health check sees why instead of an empty reply.
//!
//! The request is parsed by httparse and checked by tungstenite's own `create_response` (method,
//! version, `Connection`/`Upgrade`, `Sec-WebSocket-Version: 13`, key); bytes the client sent
//! after the head are handed on to the WebSocket stream. Behind a trusted proxy the request's
//! `X-Forwarded-For` names the client (`forwarded`).

use std::io;
use std::net::SocketAddr;

use async_tungstenite::tungstenite::error::ProtocolError;
use async_tungstenite::tungstenite::handshake::server::{
    create_response, write_response, Request, Response,
};
use async_tungstenite::tungstenite::http::{header, HeaderValue, Method, StatusCode, Version};
use async_tungstenite::tungstenite::protocol::Role;
use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::WebSocketStream;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{WsBytes, WsSettings, SUBPROTOCOLS};

/// Largest request head read; a larger one is answered with 431.
const MAX_HEAD: usize = 8 * 1024;
/// Most request headers parsed; more are answered with 431.
const MAX_HEADERS: usize = 32;

/// Why a request was not upgraded (logged, and sent back as an HTTP status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Not an HTTP/1.x request head (400).
    Malformed,
    /// The head is over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers (431).
    HeadTooLarge,
    /// The request's path is not the listener's `websocket_path` (404).
    WrongPath,
    /// Not GET (405).
    WrongMethod,
    /// A plain HTTP request, without `Connection: Upgrade` and `Upgrade: websocket` (426).
    NotAnUpgrade,
    /// `Sec-WebSocket-Version` is missing or not 13 (426, naming version 13).
    UnsupportedVersion,
    /// Older than HTTP/1.1, or a missing or invalid `Sec-WebSocket-Key` (400).
    BadHandshake,
    /// The client offered neither `mqtt` nor `mqttv3.1` in `Sec-WebSocket-Protocol` (400).
    NoMqttSubprotocol,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::Malformed | Refusal::BadHandshake | Refusal::NoMqttSubprotocol => {
                StatusCode::BAD_REQUEST
            }
            Refusal::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::WrongPath => StatusCode::NOT_FOUND,
            Refusal::WrongMethod => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::NotAnUpgrade | Refusal::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Refusal::Malformed => "not an HTTP/1.1 request",
            Refusal::HeadTooLarge => "request head too large",
            Refusal::WrongPath => "no MQTT endpoint at this path",
            Refusal::WrongMethod => "only GET upgrades to WebSocket",
            Refusal::NotAnUpgrade => "this endpoint speaks MQTT over WebSocket only",
            Refusal::UnsupportedVersion => "WebSocket version 13 required",
            Refusal::BadHandshake => "invalid WebSocket handshake",
            Refusal::NoMqttSubprotocol => {
                "Sec-WebSocket-Protocol must offer `mqtt` (or `mqttv3.1`)"
            }
        }
    }

    /// What tungstenite's handshake check found wrong, as a refusal.
    fn from_handshake(e: WsError) -> Refusal {
        match e {
            WsError::Protocol(ProtocolError::WrongHttpMethod) => Refusal::WrongMethod,
            WsError::Protocol(
                ProtocolError::MissingConnectionUpgradeHeader
                | ProtocolError::MissingUpgradeWebSocketHeader,
            ) => Refusal::NotAnUpgrade,
            WsError::Protocol(ProtocolError::MissingSecWebSocketVersionHeader) => {
                Refusal::UnsupportedVersion
            }
            _ => Refusal::BadHandshake,
        }
    }

    /// The whole HTTP reply: status, the headers RFC 7231 / RFC 6455 ask for with it, and the
    /// reason as a plain-text body; the connection is closed after it.
    fn reply(self) -> Vec<u8> {
        let status = self.status();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        match self {
            Refusal::WrongMethod => out.push_str("Allow: GET\r\n"),
            Refusal::NotAnUpgrade => {
                out.push_str("Upgrade: websocket\r\nConnection: Upgrade, close\r\n")
            }
            Refusal::UnsupportedVersion => out.push_str(
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nConnection: Upgrade, close\r\n",
            ),
            _ => {}
        }
        if !matches!(self, Refusal::NotAnUpgrade | Refusal::UnsupportedVersion) {
            out.push_str("Connection: close\r\n");
        }
        let body = self.text();
        out.push_str(&format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}\n",
            body.len() + 1
        ));
        out.into_bytes()
    }
}

/// The subprotocol to answer with: the first of [`SUBPROTOCOLS`] the client offered. The
/// header may be repeated and each holds a comma-separated list.
pub fn choose_subprotocol<'a>(offered: impl Iterator<Item = &'a str>) -> Option<&'static str> {
    let offered: Vec<&str> = offered.flat_map(|h| h.split(',')).map(str::trim).collect();
    SUBPROTOCOLS
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p))
}

/// Checks the request against the listener's settings and the WebSocket handshake rules; on
/// success, the 101 response carrying the chosen subprotocol.
fn check_request(settings: &WsSettings, request: &Request) -> Result<Response, Refusal> {
    if request.uri().path() != settings.path {
        return Err(Refusal::WrongPath);
    }
    let mut response = create_response(request).map_err(Refusal::from_handshake)?;
    let offered = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let chosen = choose_subprotocol(offered).ok_or(Refusal::NoMqttSubprotocol)?;
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(chosen),
    );
    Ok(response)
}

/// The client's address (see `forwarded`); a trusted proxy's unreadable header is logged and
/// the proxy's own address kept.
fn client_address(request: &Request, peer: SocketAddr, settings: &WsSettings) -> SocketAddr {
    super::forwarded::client_address(request.headers(), peer, &settings.trusted_proxies)
        .unwrap_or_else(|e| {
            static LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            if crate::ratelog::allowed(&LOGGED) {
                tracing::warn!(%peer, error = %e,
                    "Forwarded / X-Forwarded-For from a trusted proxy ignored: the proxy's address is used (logged once a second)");
            }
            peer
        })
}

/// Parses a request head. `Ok(None)`: not complete yet; `Ok(Some((request, len)))`: the head
/// is the first `len` bytes.
fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
        Err(_) => return Err(Refusal::Malformed),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| Refusal::Malformed)?;
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(parsed.path.unwrap_or_default())
        .version(version);
    for h in parsed.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let request = builder.body(()).map_err(|_| Refusal::Malformed)?;
    Ok(Some((request, len)))
}

/// Reads until a whole request head is in `buf`; returns it and its length.
async fn read_head<S>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> io::Result<Result<(Request, usize), Refusal>>
where
    S: AsyncRead + Unpin,
{
    let mut chunk = [0u8; 1024];
    loop {
        match parse_head(buf) {
            Ok(Some(done)) => return Ok(Ok(done)),
            Ok(None) if buf.len() >= MAX_HEAD => return Ok(Err(Refusal::HeadTooLarge)),
            Ok(None) => {}
            Err(refusal) => return Ok(Err(refusal)),
        }
        let want = chunk.len().min(MAX_HEAD - buf.len());
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the end of the HTTP request",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Runs the server side of the upgrade over `stream` (TCP or TLS). A refusal answers with its
/// HTTP status and is returned as an error saying why; the caller logs it.
pub async fn accept<S>(
    mut stream: S,
    settings: &WsSettings,
    peer: SocketAddr,
) -> io::Result<WsBytes<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let checked = read_head(&mut stream, &mut buf)
        .await?
        .and_then(|(request, len)| {
            let client = client_address(&request, peer, settings);
            Ok((check_request(settings, &request)?, len, client))
        });
    match checked {
        Ok((response, len, client)) => {
            let mut head = Vec::with_capacity(192);
            write_response(&mut head, &response).map_err(io::Error::other)?;
            stream.write_all(&head).await?;
            stream.flush().await?;
            let rest = buf.split_off(len);
            let ws = WebSocketStream::from_partially_read(
                super::ReadAhead::new(stream),
                rest,
                Role::Server,
                Some(settings.protocol_config()),
            )
            .await;
            tracing::debug!(%peer, %client, "WebSocket upgrade accepted");
            Ok(WsBytes::new(ws, client))
        }
        Err(refusal) => {
            // Best effort: the client may already be gone.
            let _ = stream.write_all(&refusal.reply()).await;
            let _ = stream.close().await;
            Err(io::Error::other(format!(
                "WebSocket upgrade refused with HTTP {}: {}",
                refusal.status().as_u16(),
                refusal.text()
            )))
        }
    }
}

#[cfg(test)]
#[path = "upgrade_tests.rs"]
mod tests;
