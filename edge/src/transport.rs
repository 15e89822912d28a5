//! The byte stream under one client connection: plain TCP or TLS (rustls), either carrying
//! MQTT directly or inside WebSocket binary messages (`websocket::WsBytes`), split so that the
//! connection's reader and writer can use it at the same time. Plain TCP is used straight
//! through the socket, held inline (no locks, no boxes: the most common connection is the
//! smallest); TLS and WebSocket streams live in one box; several buffers go out in one
//! vectored write.
//!
//! Invariant: `poll_readable` is Ready only when a read returns at once. For plain TCP that is
//! the socket's readiness; a TLS or WebSocket stream may hold bytes while its socket has none,
//! or take in a whole record or frame that holds no data, so its readiness check reads one
//! byte ahead (kept in [`ReadSide`] for the next read). An idle connection of any kind then
//! waits without a buffer or a pending read (`connection/task.rs`, the idle state).

use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};
use smol::lock::Mutex;
use smol::Async;

use crate::config::TlsListenerConfig;
use crate::error::{Error, Result};

/// The read and write halves of a TLS or WebSocket stream. futures-util's split, not
/// futures-lite's: futures-lite's write half drops `poll_write_vectored` (each slice of a
/// batch became a TLS record or a WebSocket message, and a send, of its own).
fn split<T: AsyncRead + AsyncWrite>(
    stream: T,
) -> (
    futures_util::io::ReadHalf<T>,
    futures_util::io::WriteHalf<T>,
) {
    futures_util::io::AsyncReadExt::split(stream)
}

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

pub struct Transport(Kind);

enum Kind {
    /// Read and written straight through `&Async<TcpStream>` (safe concurrently): 16 bytes.
    Plain(Async<TcpStream>),
    /// TLS and/or WebSocket: locked halves over a shared socket.
    Wrapped(Box<Wrapped>),
}

struct Wrapped {
    read: Mutex<ReadSide>,
    write: Mutex<BoxWrite>,
    tcp: Arc<Async<TcpStream>>,
    /// MQTT over WebSocket: closing sends a WebSocket Close first.
    ws: bool,
    /// Subject common name of the client's verified certificate (TLS with client certificates).
    peer_cn: Option<String>,
}

/// The read half of a TLS or WebSocket stream, and what a readiness check read ahead of the
/// next read.
struct ReadSide {
    io: BoxRead,
    peeked: Option<Peeked>,
}

/// What [`Transport::poll_readable`] took from a TLS or WebSocket stream: handed out by the
/// next read, in order, so nothing is lost or reordered.
enum Peeked {
    Byte(u8),
    End,
    Failed(io::Error),
}

impl ReadSide {
    fn new(io: BoxRead) -> ReadSide {
        ReadSide { io, peeked: None }
    }

    /// One look at the stream without waiting (no waker kept: whoever waits afterwards polls
    /// with its own, `Transport::poll_readable`).
    fn poll_now(&mut self, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(&mut self.io).poll_read(&mut cx, buf)
    }

    /// What the last readiness check read ahead (None: nothing), followed by what the stream
    /// holds without waiting. An end or error met after the byte is kept for the next read.
    fn take_peeked(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        if buf.is_empty() {
            return None;
        }
        let first = match self.peeked.take()? {
            Peeked::Byte(b) => b,
            Peeked::End => return Some(Ok(0)),
            Peeked::Failed(e) => return Some(Err(e)),
        };
        buf[0] = first;
        let mut more = 0;
        if buf.len() > 1 {
            match self.poll_now(&mut buf[1..]) {
                Poll::Ready(Ok(0)) => self.peeked = Some(Peeked::End),
                Poll::Ready(Ok(n)) => more = n,
                Poll::Ready(Err(e)) => self.peeked = Some(Peeked::Failed(e)),
                Poll::Pending => {}
            }
        }
        Some(Ok(1 + more))
    }

    /// Ready once a read returns at once: reads one byte ahead when nothing is kept yet.
    fn poll_peek(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.peeked.is_some() {
            return Poll::Ready(());
        }
        let mut byte = [0u8; 1];
        self.peeked = Some(match Pin::new(&mut self.io).poll_read(cx, &mut byte) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) => Peeked::End,
            Poll::Ready(Ok(_)) => Peeked::Byte(byte[0]),
            Poll::Ready(Err(e)) => Peeked::Failed(e),
        });
        Poll::Ready(())
    }
}

/// One half of a shared TCP socket (`&Async<TcpStream>` reads and writes concurrently).
struct TcpHalf(Arc<Async<TcpStream>>);

/// The common name of the client certificate of an accepted TLS connection (none without one).
fn client_common_name(tls: &futures_rustls::server::TlsStream<TcpHalf>) -> Option<String> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| crate::auth::cert::subject_common_name(c))
}

impl AsyncRead for TcpHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write_vectored(cx, bufs)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_close(cx)
    }
}

impl Transport {
    pub fn plain(tcp: Async<TcpStream>) -> Transport {
        Transport(Kind::Plain(tcp))
    }

    fn tcp(&self) -> &Async<TcpStream> {
        match &self.0 {
            Kind::Plain(tcp) => tcp,
            Kind::Wrapped(w) => &w.tcp,
        }
    }

    /// The TLS or WebSocket stream; `None` for plain TCP.
    fn wrapped(&self) -> Option<&Wrapped> {
        match &self.0 {
            Kind::Plain(_) => None,
            Kind::Wrapped(w) => Some(w),
        }
    }

    /// Runs the TLS handshake over an accepted socket.
    pub async fn tls(
        tcp: Async<TcpStream>,
        acceptor: &futures_rustls::TlsAcceptor,
    ) -> io::Result<Transport> {
        let tcp = Arc::new(tcp);
        let tls = acceptor.accept(TcpHalf(tcp.clone())).await?;
        let peer_cn = client_common_name(&tls);
        let (r, w) = split(tls);
        Ok(Transport(Kind::Wrapped(Box::new(Wrapped {
            read: Mutex::new(ReadSide::new(Box::new(r))),
            write: Mutex::new(Box::new(w)),
            tcp,
            ws: false,
            peer_cn,
        }))))
    }

    /// Runs the TLS handshake when `tls` is given (wss://), then the WebSocket upgrade. Also
    /// returns the client's address: `peer`, or behind a trusted proxy the one it forwarded.
    pub async fn websocket(
        tcp: Async<TcpStream>,
        tls: Option<&futures_rustls::TlsAcceptor>,
        settings: &crate::websocket::WsSettings,
        peer: std::net::SocketAddr,
    ) -> io::Result<(Transport, std::net::SocketAddr)> {
        let tcp = Arc::new(tcp);
        let (read, write, peer_cn, client): (BoxRead, BoxWrite, _, _) = match tls {
            None => {
                let ws = crate::websocket::accept(TcpHalf(tcp.clone()), settings, peer).await?;
                let client = ws.peer();
                let (r, w) = split(ws);
                (Box::new(r), Box::new(w), None, client)
            }
            Some(acceptor) => {
                let tls = acceptor.accept(TcpHalf(tcp.clone())).await?;
                let peer_cn = client_common_name(&tls);
                let ws = crate::websocket::accept(tls, settings, peer).await?;
                let client = ws.peer();
                let (r, w) = split(ws);
                (Box::new(r), Box::new(w), peer_cn, client)
            }
        };
        // Bytes go through the WebSocket stream, never straight through the socket.
        let transport = Transport(Kind::Wrapped(Box::new(Wrapped {
            read: Mutex::new(ReadSide::new(read)),
            write: Mutex::new(write),
            tcp,
            ws: true,
            peer_cn,
        })));
        Ok((transport, client))
    }

    /// The common name of the client's verified TLS certificate, if it presented one.
    pub fn peer_common_name(&self) -> Option<String> {
        self.wrapped().and_then(|w| w.peer_cn.clone())
    }

    /// Ready once a read returns at once. Plain TCP: the socket is readable, seen through its
    /// one read waker slot (`Async::poll_readable`, not `Async::readable`, whose waker list
    /// allocates in every idle connection's reactor entry). TLS and WebSocket: one byte (or
    /// the end, or an error) was read ahead for the next read.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.0 {
            Kind::Plain(tcp) => tcp.poll_readable(cx),
            Kind::Wrapped(w) => match w.read.try_lock() {
                Some(mut r) => r.poll_peek(cx).map(Ok),
                // Only the connection's reader reads, one read at a time: a read is under
                // way, and it waits for the stream itself.
                None => Poll::Ready(Ok(())),
            },
        }
    }

    /// Reads what is there without waiting: `WouldBlock` when nothing is.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.0 {
            Kind::Plain(tcp) => io::Read::read(&mut tcp.get_ref(), buf),
            Kind::Wrapped(w) => {
                let Some(mut r) = w.read.try_lock() else {
                    return Err(io::ErrorKind::WouldBlock.into());
                };
                if let Some(read) = r.take_peeked(buf) {
                    return read;
                }
                match r.poll_now(buf) {
                    Poll::Ready(read) => read,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.0 {
            Kind::Plain(tcp) => (&*tcp).read(buf).await,
            Kind::Wrapped(w) => {
                let mut r = w.read.lock().await;
                match r.take_peeked(buf) {
                    Some(read) => read,
                    None => r.io.read(buf).await,
                }
            }
        }
    }

    /// Writes and flushes (TLS buffers records until flushed).
    pub async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let w = match &self.0 {
            Kind::Plain(tcp) => return (&*tcp).write_all(buf).await,
            Kind::Wrapped(w) => w,
        };
        let mut w = w.write.lock().await;
        w.write_all(buf).await?;
        w.flush().await
    }

    /// Writes every slice in order and flushes: one `writev` for several packets and the
    /// shared payloads between them (one TLS record or WebSocket message for the batch: see
    /// `split`).
    pub async fn write_all_vectored(&self, mut bufs: &mut [io::IoSlice<'_>]) -> io::Result<()> {
        /// Linux's IOV_MAX: a `writev` takes at most this many slices.
        const MAX_SLICES: usize = 1024;
        let mut direct = self.tcp();
        let mut locked = None;
        if let Some(w) = self.wrapped() {
            locked = Some(w.write.lock().await);
        }
        io::IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            let slices = &bufs[..bufs.len().min(MAX_SLICES)];
            let n = match &mut locked {
                Some(w) => w.write_vectored(slices).await?,
                None => direct.write_vectored(slices).await?,
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            io::IoSlice::advance_slices(&mut bufs, n);
        }
        match locked {
            Some(mut w) => w.flush().await,
            None => Ok(()),
        }
    }

    pub async fn flush(&self) -> io::Result<()> {
        match self.wrapped() {
            None => Ok(()),
            Some(w) => w.write.lock().await.flush().await,
        }
    }

    pub fn shutdown(&self) {
        let _ = self.tcp().get_ref().shutdown(std::net::Shutdown::Both);
    }

    /// Ends the connection: `shutdown`, preceded on a WebSocket by the closing handshake
    /// (Close sent, the client's Close awaited, then TLS close_notify), at most `CLOSE_WAIT`.
    pub async fn close(&self) {
        if let Some(w) = self.wrapped().filter(|w| w.ws) {
            let handshake = async {
                if w.write.lock().await.close().await.is_ok() {
                    // Reads end (0) once the client's Close arrives; data before it is dropped.
                    let mut sink = [0u8; 512];
                    let mut r = w.read.lock().await;
                    if matches!(r.peeked.take(), Some(Peeked::End)) {
                        let _ = w.write.lock().await.close().await;
                        return;
                    }
                    while let Ok(n) = r.io.read(&mut sink).await {
                        if n == 0 {
                            // Handshake done: a second close ends TLS (close_notify) and TCP.
                            let _ = w.write.lock().await.close().await;
                            break;
                        }
                    }
                }
            };
            handshake
                .or(async {
                    smol::Timer::after(CLOSE_WAIT).await;
                })
                .await;
        }
        self.shutdown();
    }
}

/// Longest wait for the client's side of the WebSocket closing handshake.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Builds the rustls server configuration of a TLS listener; errors name the key.
pub fn acceptor(cfg: &TlsListenerConfig, key_prefix: &str) -> Result<futures_rustls::TlsAcceptor> {
    let err = |key: &str, path: &Path, e: String| Error::Config {
        origin: "listeners".into(),
        message: format!(
            "invalid value for `{key_prefix}.{key}` ({}): {e}",
            path.display()
        ),
    };
    let read_certs =
        |key: &str, path: &Path| -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
            let f = std::fs::File::open(path).map_err(|e| err(key, path, e.to_string()))?;
            let certs: std::result::Result<Vec<_>, _> =
                rustls_pemfile::certs(&mut io::BufReader::new(f)).collect();
            let certs = certs.map_err(|e| err(key, path, e.to_string()))?;
            if certs.is_empty() {
                return Err(err(key, path, "no PEM certificate found".into()));
            }
            Ok(certs)
        };
    let chain = read_certs("cert_file", &cfg.cert_file)?;
    let key = {
        let f = std::fs::File::open(&cfg.key_file)
            .map_err(|e| err("key_file", &cfg.key_file, e.to_string()))?;
        rustls_pemfile::private_key(&mut io::BufReader::new(f))
            .map_err(|e| err("key_file", &cfg.key_file, e.to_string()))?
            .ok_or_else(|| err("key_file", &cfg.key_file, "no private key found".into()))?
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("cert_file", &cfg.cert_file, e.to_string()))?;
    let builder = match &cfg.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs("client_ca_file", ca)? {
                roots
                    .add(c)
                    .map_err(|e| err("client_ca_file", ca, e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| err("client_ca_file", ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let server = builder
        .with_single_cert(chain, key)
        .map_err(|e| err("key_file", &cfg.key_file, e.to_string()))?;
    Ok(futures_rustls::TlsAcceptor::from(Arc::new(server)))
}
