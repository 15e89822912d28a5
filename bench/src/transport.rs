//! What a benchmark connection runs on: TCP, or MQTT over WebSocket (ws://, subprotocol `mqtt`)
//! for `--websocket PATH`. The WebSocket side is a byte stream like TCP: reads return binary
//! messages' payloads back to back, each flush of the connection's write buffer is one binary
//! message (the connection writes whole batches of packets, so a message holds whole packets).

use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_lite::{AsyncRead, AsyncWrite, Stream};
use futures_sink::Sink;
use smol::Async;

pub enum Transport {
    Tcp(Async<TcpStream>),
    Ws(Box<WsClient>),
}

pub struct WsClient {
    ws: WebSocketStream<Async<TcpStream>>,
    /// The rest of the binary message being read.
    rx: Bytes,
}

/// Upgrades `tcp` to a WebSocket at `url` (`ws://host:port/path`) offering subprotocol `mqtt`.
pub async fn websocket(tcp: Async<TcpStream>, url: &str) -> Result<Transport, String> {
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("WebSocket URL {url}: {e}"))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        async_tungstenite::tungstenite::http::HeaderValue::from_static("mqtt"),
    );
    // Each flush is one message already; no write buffering.
    let config = WebSocketConfig::default().write_buffer_size(0);
    let (ws, _) = async_tungstenite::client_async_with_config(request, tcp, Some(config))
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
            Transport::Tcp(t) => Pin::new(t).poll_read(cx, buf),
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
            Transport::Tcp(t) => Pin::new(t).poll_write(cx, buf),
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
            Transport::Tcp(t) => Pin::new(t).poll_flush(cx),
            Transport::Ws(w) => Pin::new(&mut w.ws).poll_flush(cx).map_err(ws_io),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(t) => Pin::new(t).poll_close(cx),
            Transport::Ws(w) => Pin::new(&mut w.ws).poll_close(cx).map_err(ws_io),
        }
    }
}
