//! MQTT over WebSocket (RFC 6455, MQTT 5.0 §6) for `kind = "websocket"` listeners: the HTTP
//! upgrade (path check, subprotocol `mqtt` or `mqttv3.1`) and [`WsBytes`], which turns binary
//! messages into the plain byte stream the connection code reads, so an MQTT packet may span
//! messages and a message may hold several packets. Text frames and protocol errors end the
//! connection with a WebSocket Close (1002); every message and frame is bounded in size.
//!
//! The WebSocket protocol itself is async-tungstenite's (runtime-neutral, works on any
//! `futures-io` stream, so on smol's sockets and futures-rustls streams alike).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use async_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_lite::{AsyncRead, AsyncWrite, Stream};
use futures_sink::Sink;

/// The subprotocols a client may offer, in order of preference: `mqtt` is MQTT 3.1.1's and
/// 5.0's name; `mqttv3.1` is MQTT 3.1's, still offered by MQTT.js and some browsers' clients.
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Smallest bound on one WebSocket message, whatever `limits.max_packet_size` is, so that a
/// client may put several small packets in one message.
const MIN_MESSAGE_BOUND: usize = 64 * 1024;

/// What the upgrade needs to know about its listener.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// The HTTP path of the endpoint (`websocket_path`, default `/mqtt`).
    pub path: String,
    /// Largest WebSocket message (and frame) accepted, in bytes.
    pub max_message: usize,
}

impl WsSettings {
    /// A message holds at least one whole packet of `limits.max_packet_size` (fixed header
    /// included), and never less than 64 KiB.
    pub fn new(path: &str, max_packet_size: u32) -> WsSettings {
        WsSettings {
            path: path.to_string(),
            max_message: (max_packet_size as usize).max(MIN_MESSAGE_BOUND),
        }
    }

    fn protocol_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            // tungstenite allocates its read buffer eagerly: 4 KiB instead of 128 KiB per
            // connection, as most gateway connections are idle.
            .read_buffer_size(4096)
            // Every write of the connection is already one flushed batch of packets.
            .write_buffer_size(0)
            .max_message_size(Some(self.max_message))
            .max_frame_size(Some(self.max_message))
    }
}

/// Why an upgrade request was turned away (logged, and the HTTP status sent back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request's path is not the listener's `websocket_path` (404).
    WrongPath,
    /// The client offered neither `mqtt` nor `mqttv3.1` in `Sec-WebSocket-Protocol` (400).
    NoMqttSubprotocol,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::WrongPath => StatusCode::NOT_FOUND,
            Refusal::NoMqttSubprotocol => StatusCode::BAD_REQUEST,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Refusal::WrongPath => "no MQTT endpoint at this path",
            Refusal::NoMqttSubprotocol => {
                "Sec-WebSocket-Protocol must offer `mqtt` (or `mqttv3.1`)"
            }
        }
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

/// Checks the upgrade request against the listener's settings; on success the response
/// carries the chosen subprotocol.
fn check_request(
    settings: &WsSettings,
    request: &Request,
    mut response: Response,
) -> Result<Response, Refusal> {
    if request.uri().path() != settings.path {
        return Err(Refusal::WrongPath);
    }
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

/// Runs the server side of the upgrade over `stream` (TCP or TLS). A refusal answers with its
/// HTTP status and is returned as an error saying why; the caller logs it.
pub async fn accept<S>(stream: S, settings: &WsSettings, peer: SocketAddr) -> io::Result<WsBytes<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The callback's type (and its large error, an HTTP response) is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        check_request(settings, request, response).map_err(|r| {
            let mut e = ErrorResponse::new(Some(r.text().to_string()));
            *e.status_mut() = r.status();
            e
        })
    };
    match async_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(settings.protocol_config()),
    )
    .await
    {
        Ok(ws) => {
            tracing::debug!(%peer, "WebSocket upgrade accepted");
            Ok(WsBytes::new(ws, peer))
        }
        Err(WsError::Http(resp)) => Err(io::Error::other(format!(
            "WebSocket upgrade refused with HTTP {}: {}",
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default())
        ))),
        Err(e) => Err(io::Error::other(format!("WebSocket upgrade failed: {e}"))),
    }
}

/// Where the Close frame this side sends stands.
enum Closing {
    /// None sent.
    Open,
    /// One is to be sent: `code`, then `then` is returned to the reader (None: end of stream).
    Pending {
        code: CloseCode,
        reason: &'static str,
        then: Option<(io::ErrorKind, String)>,
    },
    /// Queued; flushing it.
    Flushing {
        then: Option<(io::ErrorKind, String)>,
    },
    /// Sent (or the connection is gone): reads end.
    Done,
}

/// A WebSocket connection seen as a byte stream: reads return the payload of binary messages
/// back to back, writes send each buffer as one binary message. Ping is answered with pong by
/// tungstenite; a Close from the client is answered and ends the stream (read returns 0).
pub struct WsBytes<S> {
    ws: WebSocketStream<S>,
    /// The rest of the binary message being read.
    rx: Bytes,
    closing: Closing,
    /// The reader saw the end (peer's Close, or ours completed).
    eof: bool,
    /// For the log line of a refused message.
    peer: SocketAddr,
}

impl<S> WsBytes<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn new(ws: WebSocketStream<S>, peer: SocketAddr) -> WsBytes<S> {
        WsBytes {
            ws,
            rx: Bytes::new(),
            closing: Closing::Open,
            eof: false,
            peer,
        }
    }

    /// Starts closing with `code`; the reader then returns `then` (None: end of stream).
    fn fail(
        &mut self,
        code: CloseCode,
        reason: &'static str,
        then: Option<(io::ErrorKind, String)>,
    ) {
        if let Some((_, why)) = &then {
            tracing::info!(peer = %self.peer, close_code = u16::from(code), "WebSocket connection closed: {why}");
        }
        match &mut self.closing {
            Closing::Open => self.closing = Closing::Pending { code, reason, then },
            // A Close is already on its way: it stands, the reader gets this error after it.
            Closing::Pending { then: t, .. } | Closing::Flushing { then: t } => {
                if t.is_none() {
                    *t = then;
                }
            }
            Closing::Done => self.closing = Closing::Flushing { then },
        }
    }

    /// Drives a pending Close frame out. Ready once it is flushed (or cannot be sent, the
    /// connection being gone), with what the reader is to return.
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<Option<(io::ErrorKind, String)>> {
        loop {
            match std::mem::replace(&mut self.closing, Closing::Done) {
                Closing::Open | Closing::Done => return Poll::Ready(None),
                Closing::Pending { code, reason, then } => {
                    match Pin::new(&mut self.ws).poll_ready(cx) {
                        Poll::Pending => {
                            self.closing = Closing::Pending { code, reason, then };
                            return Poll::Pending;
                        }
                        Poll::Ready(Err(_)) => return Poll::Ready(then),
                        Poll::Ready(Ok(())) => {}
                    }
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    if Pin::new(&mut self.ws)
                        .start_send(Message::Close(Some(frame)))
                        .is_err()
                    {
                        return Poll::Ready(then);
                    }
                    self.closing = Closing::Flushing { then };
                }
                Closing::Flushing { then } => match Pin::new(&mut self.ws).poll_flush(cx) {
                    Poll::Pending => {
                        self.closing = Closing::Flushing { then };
                        return Poll::Pending;
                    }
                    Poll::Ready(_) => return Poll::Ready(then),
                },
            }
        }
    }
}

impl<S> AsyncRead for WsBytes<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        loop {
            if !me.rx.is_empty() {
                let n = me.rx.len().min(buf.len());
                buf[..n].copy_from_slice(&me.rx.split_to(n));
                return Poll::Ready(Ok(n));
            }
            if matches!(
                me.closing,
                Closing::Pending { .. } | Closing::Flushing { .. }
            ) {
                if let Some((kind, why)) = ready!(me.poll_closing(cx)) {
                    me.eof = true;
                    return Poll::Ready(Err(io::Error::new(kind, why)));
                }
            }
            if me.eof {
                return Poll::Ready(Ok(0));
            }
            match ready!(Pin::new(&mut me.ws).poll_next(cx)) {
                // The peer's Close was answered (tungstenite queues and flushes the reply), or
                // the one we sent was acknowledged.
                None => me.eof = true,
                Some(Ok(Message::Binary(data))) => me.rx = data,
                Some(Ok(Message::Text(_))) => me.fail(
                    CloseCode::Protocol,
                    "MQTT needs binary frames",
                    Some((
                        io::ErrorKind::InvalidData,
                        "WebSocket text frame (MQTT is sent in binary frames)".into(),
                    )),
                ),
                // Pings are answered by tungstenite; a Close is answered on the next read.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_))) => {}
                Some(Ok(Message::Frame(_))) => {}
                Some(Err(WsError::Io(e))) => return Poll::Ready(Err(e)),
                Some(Err(WsError::Capacity(e))) => me.fail(
                    CloseCode::Size,
                    "message too big",
                    Some((io::ErrorKind::InvalidData, format!("WebSocket: {e}"))),
                ),
                Some(Err(e)) => me.fail(
                    CloseCode::Protocol,
                    "protocol error",
                    Some((io::ErrorKind::InvalidData, format!("WebSocket: {e}"))),
                ),
            }
        }
    }
}

impl<S> AsyncWrite for WsBytes<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        ready!(Pin::new(&mut me.ws).poll_ready(cx)).map_err(ws_io)?;
        Pin::new(&mut me.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(ws_io)
    }

    /// Sends a Close (1000, normal) and flushes it; the peer's answer is then read as the end
    /// of the stream. Called again once that end was read, closes the stream below (TLS
    /// close_notify, TCP FIN).
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.eof && matches!(me.closing, Closing::Done) {
            return Pin::new(me.ws.get_mut()).poll_close(cx);
        }
        if matches!(me.closing, Closing::Open) {
            me.closing = Closing::Pending {
                code: CloseCode::Normal,
                reason: "",
                then: None,
            };
        }
        ready!(me.poll_closing(cx));
        Poll::Ready(Ok(()))
    }
}

fn ws_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket closed")
        }
        e => io::Error::other(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_is_preferred_and_mqttv31_accepted() {
        assert_eq!(
            choose_subprotocol(["mqttv3.1, mqtt"].into_iter()),
            Some("mqtt")
        );
        assert_eq!(
            choose_subprotocol(["foo", "mqttv3.1"].into_iter()),
            Some("mqttv3.1")
        );
        assert_eq!(choose_subprotocol(["foo, MQTT"].into_iter()), None);
        assert_eq!(choose_subprotocol(std::iter::empty()), None);
    }

    #[test]
    fn the_message_bound_covers_one_whole_packet_and_is_at_least_64_kib() {
        assert_eq!(WsSettings::new("/mqtt", 1000).max_message, 64 * 1024);
        assert_eq!(WsSettings::new("/mqtt", 1 << 20).max_message, 1 << 20,);
    }

    #[test]
    fn a_wrong_path_or_missing_subprotocol_is_refused() {
        let settings = WsSettings::new("/mqtt", 1 << 20);
        let req = |path: &str, proto: Option<&str>| {
            let mut b = Request::builder().uri(path);
            if let Some(p) = proto {
                b = b.header("Sec-WebSocket-Protocol", p);
            }
            b.body(()).expect("request")
        };
        let ok = check_request(&settings, &req("/mqtt", Some("mqtt")), Response::new(()))
            .expect("accepted");
        assert_eq!(ok.headers()["sec-websocket-protocol"], "mqtt");
        assert_eq!(
            check_request(&settings, &req("/other", Some("mqtt")), Response::new(())).err(),
            Some(Refusal::WrongPath)
        );
        assert_eq!(
            check_request(&settings, &req("/mqtt", None), Response::new(())).err(),
            Some(Refusal::NoMqttSubprotocol)
        );
        assert_eq!(
            check_request(
                &settings,
                &req("/mqtt?x=1", Some("mqttv3.1")),
                Response::new(())
            )
            .map(|r| r.headers()["sec-websocket-protocol"].clone())
            .ok(),
            Some(HeaderValue::from_static("mqttv3.1"))
        );
    }
}
