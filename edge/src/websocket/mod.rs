//! MQTT over WebSocket (RFC 6455, MQTT 5.0 §6) for `kind = "websocket"` listeners: the listener's
//! settings, the HTTP upgrade (`upgrade`: path, subprotocol `mqtt` or `mqttv3.1`, an HTTP error
//! reply to anything else), the client's address behind a trusted proxy (`forwarded`:
//! `X-Forwarded-For`) and [`WsBytes`], which turns binary messages into the plain byte stream
//! the connection code reads, so an MQTT packet may span messages and a message may hold several
//! packets. Text frames and protocol errors end the connection with a WebSocket Close (1002);
//! every message and frame is bounded in size.
//!
//! The WebSocket protocol itself is async-tungstenite's (runtime-neutral, works on any
//! `futures-io` stream, so on smol's sockets and futures-rustls streams alike).

pub mod forwarded;
mod upgrade;

pub use upgrade::{accept, choose_subprotocol};

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

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

/// Most bytes gathered from several slices into one outgoing message (a single slice may be
/// larger): MQTT packets may span WebSocket messages, and clients that bound the size of a
/// message (Python's `websockets` takes 1 MiB by default) see no more than this from a batch.
const MAX_GATHERED: usize = 64 * 1024;

/// tungstenite's read buffer (allocated for the connection's life) and the most it asks of
/// the socket at once: 256 bytes hold a whole small packet and its frame header (at most 14).
const TUNGSTENITE_READ: usize = 256;

/// Bytes read from the socket at once (on the stack; the rest is held by [`ReadAhead`]
/// only until tungstenite has taken it), as many as tungstenite read before.
const READ_AHEAD: usize = 4096;

/// What the upgrade needs to know about its listener.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// The HTTP path of the endpoint (`websocket_path`, default `/mqtt`).
    pub path: String,
    /// Largest WebSocket message (and frame) accepted, in bytes.
    pub max_message: usize,
    /// Peers whose `Forwarded` / `X-Forwarded-For` names the client (`trusted_proxies`; see
    /// `forwarded`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl WsSettings {
    /// A message holds at least one whole packet of `limits.max_packet_size` (fixed header
    /// included), and never less than 64 KiB.
    pub fn new(path: &str, max_packet_size: u32) -> WsSettings {
        WsSettings {
            path: path.to_string(),
            max_message: (max_packet_size as usize).max(MIN_MESSAGE_BOUND),
            trusted_proxies: Vec::new(),
        }
    }

    /// The listener's `trusted_proxies`.
    pub fn with_trusted_proxies(mut self, proxies: &[crate::config::TrustedProxy]) -> WsSettings {
        self.trusted_proxies = proxies.iter().map(|p| p.0).collect();
        self
    }

    fn protocol_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            // tungstenite allocates its read buffer eagerly and keeps it for the connection's
            // life (128 KiB by default); 4 KiB was 4,096 of the ~9,800 bytes an idle ws
            // connection cost over plain TCP (heaptrack, 2,000 idle MQTT.js clients). The
            // socket is read in `READ_AHEAD` chunks by [`ReadAhead`], which holds them only
            // while tungstenite takes them `TUNGSTENITE_READ` bytes at a time.
            .read_buffer_size(TUNGSTENITE_READ)
            // Every write of the connection is already one flushed batch of packets.
            .write_buffer_size(0)
            .max_message_size(Some(self.max_message))
            .max_frame_size(Some(self.max_message))
    }
}

/// The stream under tungstenite: reads the socket [`READ_AHEAD`] bytes at a time into a
/// stack buffer and keeps what tungstenite did not take (it asks for at most
/// [`TUNGSTENITE_READ`]) in an allocation of its own, freed once taken. An idle connection,
/// waiting in a read of the socket, holds none; a connection reading a large message still
/// makes one read of the socket per 4 KiB. Writes go straight through.
pub(crate) struct ReadAhead<S> {
    io: S,
    /// Read but not yet taken (no allocation while empty).
    ahead: Bytes,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(io: S) -> ReadAhead<S> {
        ReadAhead {
            io,
            ahead: Bytes::new(),
        }
    }

    /// How many bytes read from the socket wait for tungstenite (tests).
    #[cfg(test)]
    fn holds(&self) -> usize {
        self.ahead.len()
    }
}

/// Copies the front of `src` into `buf` (as much as fits) and returns how much; once all of
/// `src` is taken, its allocation goes with it (an emptied slice would keep it alive).
fn take_front(src: &mut Bytes, buf: &mut [u8]) -> usize {
    let n = src.len().min(buf.len());
    buf[..n].copy_from_slice(&src[..n]);
    if n == src.len() {
        *src = Bytes::new();
    } else {
        bytes::Buf::advance(src, n);
    }
    n
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if buf.is_empty() {
            // Nothing asked: nothing read from the socket either.
            return Poll::Ready(Ok(0));
        }
        if !me.ahead.is_empty() {
            return Poll::Ready(Ok(take_front(&mut me.ahead, buf)));
        }
        if buf.len() >= READ_AHEAD {
            return Pin::new(&mut me.io).poll_read(cx, buf);
        }
        let mut chunk = [0u8; READ_AHEAD];
        let got = ready!(Pin::new(&mut me.io).poll_read(cx, &mut chunk))?;
        let n = got.min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        if got > n {
            me.ahead = Bytes::copy_from_slice(&chunk[n..got]);
        }
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
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
    ws: WebSocketStream<ReadAhead<S>>,
    /// The rest of the binary message being read.
    rx: Bytes,
    closing: Closing,
    /// The reader saw the end (peer's Close, or ours completed).
    eof: bool,
    /// The client's address (behind a trusted proxy, the one it forwarded); in log lines.
    peer: SocketAddr,
}

impl<S> WsBytes<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The client's address: the TCP peer's, or behind a trusted proxy the one it forwarded.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    fn new(ws: WebSocketStream<ReadAhead<S>>, peer: SocketAddr) -> WsBytes<S> {
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
                return Poll::Ready(Ok(take_front(&mut me.rx, buf)));
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

    /// The slices go out as one binary message (up to [`MAX_GATHERED`] bytes of them). The
    /// connection writes a batch of packets as slices (headers, and payloads shared with other
    /// subscribers); without this each slice was a message and a send of its own: 4 KB QoS 1
    /// messages ran at 0.35-0.5x of plain TCP, two `sendto` per message.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(first) = bufs.iter().position(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        let me = self.get_mut();
        ready!(Pin::new(&mut me.ws).poll_ready(cx)).map_err(ws_io)?;
        // The first slice whole, then whole slices while they fit.
        let mut total = 0;
        let taken = bufs[first..]
            .iter()
            .take_while(|b| {
                let fits = total == 0 || total + b.len() <= MAX_GATHERED;
                if fits {
                    total += b.len();
                }
                fits
            })
            .count();
        let mut data = Vec::with_capacity(total);
        for b in &bufs[first..first + taken] {
            data.extend_from_slice(b);
        }
        Pin::new(&mut me.ws)
            .start_send(Message::Binary(Bytes::from(data)))
            .map_err(ws_io)?;
        Poll::Ready(Ok(total))
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
            return Pin::new(&mut me.ws.get_mut().io).poll_close(cx);
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
    fn the_message_bound_covers_one_whole_packet_and_is_at_least_64_kib() {
        assert_eq!(WsSettings::new("/mqtt", 1000).max_message, 64 * 1024);
        assert_eq!(WsSettings::new("/mqtt", 1 << 20).max_message, 1 << 20,);
    }

    #[test]
    fn tungstenite_keeps_a_small_read_buffer_and_the_message_bounds() {
        let config = WsSettings::new("/mqtt", 1 << 20).protocol_config();
        assert_eq!(config.read_buffer_size, TUNGSTENITE_READ);
        assert_eq!(config.max_message_size, Some(1 << 20));
        assert_eq!(config.max_frame_size, Some(1 << 20));
    }

    #[test]
    fn taking_the_front_of_bytes_advances_and_lets_the_allocation_go_when_all_is_taken() {
        let whole = Bytes::from(b"abcdef".to_vec());
        let mut src = whole.clone();
        let mut buf = [0u8; 4];
        assert_eq!(take_front(&mut src, &mut buf), 4);
        assert_eq!(&buf, b"abcd");
        assert_eq!(&src[..], b"ef");
        assert!(!whole.is_unique(), "the rest still refers to it");
        assert_eq!(take_front(&mut src, &mut buf), 2);
        assert_eq!(&buf[..2], b"ef");
        assert!(src.is_empty());
        assert!(
            whole.is_unique(),
            "emptied, it no longer refers to the allocation"
        );
    }

    #[test]
    fn an_empty_read_takes_nothing_from_the_socket() {
        let mut r = ReadAhead::new(futures_lite::io::Cursor::new(b"abc".to_vec()));
        smol::block_on(async {
            use futures_lite::AsyncReadExt;
            assert_eq!(r.read(&mut []).await.expect("read"), 0);
            assert_eq!(r.holds(), 0);
            let mut buf = [0u8; 8];
            assert_eq!(r.read(&mut buf).await.expect("read"), 3);
            assert_eq!(&buf[..3], b"abc");
        });
    }

    #[test]
    fn read_ahead_gives_small_reads_from_one_socket_read_and_then_holds_nothing() {
        let data: Vec<u8> = (0..READ_AHEAD + 100).map(|i| i as u8).collect();
        let mut r = ReadAhead::new(futures_lite::io::Cursor::new(data.clone()));
        let mut got = Vec::new();
        smol::block_on(async {
            use futures_lite::AsyncReadExt;
            let mut buf = [0u8; TUNGSTENITE_READ];
            let n = r.read(&mut buf).await.expect("read");
            assert_eq!(n, TUNGSTENITE_READ);
            got.extend_from_slice(&buf[..n]);
            assert_eq!(
                r.holds(),
                READ_AHEAD - TUNGSTENITE_READ,
                "the rest of one read"
            );
            loop {
                let n = r.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if got.len() == READ_AHEAD {
                    assert_eq!(r.holds(), 0, "freed once taken");
                }
            }
        });
        assert_eq!(got, data);
        assert_eq!(r.holds(), 0);
    }
}
