//! What a benchmark connection runs on: TCP, or TLS over it (`--tls-ca FILE`: rustls, the
//! broker's certificate checked against the CA certificates in FILE for the `--host` name or
//! address), and MQTT over WebSocket on either (ws:// or wss://, subprotocol `mqtt`) for
//! `--websocket PATH`. The WebSocket side is a byte stream like TCP: reads return binary
//! messages' payloads back to back, each flush of the connection's write buffer is one binary
//! message (the connection writes whole batches of packets, so a message holds whole packets).

use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_lite::{AsyncRead, AsyncWrite, Stream as _};
use futures_sink::Sink;
use futures_util::future::Either;
use smol::Async;

/// TCP (left), or TLS over TCP (right); futures-util's `Either` reads and writes through to
/// whichever it holds.
pub type Stream =
    Either<Async<TcpStream>, Box<futures_rustls::client::TlsStream<Async<TcpStream>>>>;

pub enum Transport {
    Plain(Stream),
    Ws(Box<WsClient>),
}

pub struct WsClient {
    ws: WebSocketStream<Stream>,
    /// The rest of the binary message being read.
    rx: Bytes,
}

/// The TLS client configuration of this run, once `--tls-ca` is given.
static TLS: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

/// From here every connection is TLS, the broker's certificate checked against the PEM
/// certificates in `ca_file`.
pub fn use_tls(ca_file: &Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("--tls-ca {}: {e}", ca_file.display());
    let f = std::fs::File::open(ca_file).map_err(|e| err(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut io::BufReader::new(f)) {
        roots.add(c.map_err(|e| err(&e))?).map_err(|e| err(&e))?;
    }
    if roots.is_empty() {
        return Err(err(&"no PEM certificate in it"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    TLS.set(Arc::new(cfg))
        .map_err(|_| "TLS configured twice".to_string())
}

/// Whether connections are TLS ([`use_tls`]).
pub fn tls_enabled() -> bool {
    TLS.get().is_some()
}

/// `tcp` as it is, or the TLS session over it (handshake done) when [`use_tls`] was called;
/// `host` is the name (or address) the certificate must be for.
pub async fn secure(tcp: Async<TcpStream>, host: &str) -> Result<Stream, String> {
    let Some(cfg) = TLS.get() else {
        return Ok(Either::Left(tcp));
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("TLS server name {host}: {e}"))?;
    let tls = futures_rustls::TlsConnector::from(cfg.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {host}: {e}"))?;
    Ok(Either::Right(Box::new(tls)))
}

/// Upgrades `stream` to a WebSocket at `url` (`ws://` or `wss://host:port/path`) offering
/// subprotocol `mqtt`.
pub async fn websocket(stream: Stream, url: &str) -> Result<Transport, String> {
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("WebSocket URL {url}: {e}"))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        async_tungstenite::tungstenite::http::HeaderValue::from_static("mqtt"),
    );
    // Each flush is one message already; no write buffering.
    let config = WebSocketConfig::default().write_buffer_size(0);
    let (ws, _) = async_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("WebSocket upgrade: {e}"))?;
    Ok(Transport::Ws(Box::new(WsClient {
        ws,
        rx: Bytes::new(),
    })))
}

fn ws_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        e => io::Error::other(e),
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(t) => Pin::new(t).poll_read(cx, buf),
            Transport::Ws(w) => loop {
                if !w.rx.is_empty() {
                    let n = w.rx.len().min(buf.len());
                    buf[..n].copy_from_slice(&w.rx.split_to(n));
                    return Poll::Ready(Ok(n));
                }
                match ready!(Pin::new(&mut w.ws).poll_next(cx)) {
                    None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(0)),
                    Some(Ok(Message::Binary(data))) => w.rx = data,
                    Some(Ok(Message::Text(_))) => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "text frame from the broker",
                        )))
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Poll::Ready(Err(ws_io(e))),
                }
            },
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(t) => Pin::new(t).poll_write(cx, buf),
            Transport::Ws(w) => {
                ready!(Pin::new(&mut w.ws).poll_ready(cx)).map_err(ws_io)?;
                Pin::new(&mut w.ws)
                    .start_send(Message::binary(buf.to_vec()))
                    .map_err(ws_io)?;
                Poll::Ready(Ok(buf.len()))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(t) => Pin::new(t).poll_flush(cx),
            Transport::Ws(w) => Pin::new(&mut w.ws).poll_flush(cx).map_err(ws_io),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(t) => Pin::new(t).poll_close(cx),
            Transport::Ws(w) => Pin::new(&mut w.ws).poll_close(cx).map_err(ws_io),
        }
    }
}
