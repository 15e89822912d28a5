//! Reads whole MQTT frames off the socket. A frame over the size limit is refused from its fixed
//! header, before its body is buffered; the buffer grows to the frame being read (room for a few
//! more of that size, up to 64 KiB), shrinks back after a larger one, and is freed while the
//! connection waits for input: a read that finds nothing makes it idle.
//!
//! Why not `edge_mqtt::frame::FrameBuffer` (sync's reader): the fixed header is parsed by the
//! shared code (`codec::fixed_header`), but the buffer policy here is the broker's own. It frees
//! the buffer whenever a look finds no input (`try_input`, the idle state of 10,000 connections),
//! reads without waiting (`try_read`, on any transport), keeps room for four frames of the size
//! it last grew to (4 KB payloads: one read per four frames instead of one per frame) and
//! shrinks back after a large frame. `FrameBuffer` grows to exactly one frame and never gives memory back, and
//! would add its `chunk` field (8 bytes) to every connection; giving it these policies would
//! change the sync client's reader as well (issue 7: revisit if the two readers' needs meet).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures_lite::{future, FutureExt};

use super::Stream;
use crate::codec::{self, FrameError};

const READ_CHUNK: usize = 2048;
/// A buffer grown past this for a large frame is given back once that frame is read.
const KEEP_BUF: usize = 64 * 1024;

/// Why no frame was read.
pub(super) enum ReadError {
    /// The peer closed the connection.
    Closed,
    Io(std::io::Error),
    /// Over the size limit, or a malformed fixed header.
    Frame(FrameError),
    /// No whole frame within the time limit (CONNECT timeout, keep alive).
    TimedOut,
}

pub(super) struct FrameReader {
    /// A boxed slice, all of it usable: 16 bytes in every connection where a `Vec` takes 24
    /// (its capacity is its length; [`FrameReader::resize`] reallocates).
    buf: Box<[u8]>,
    /// The unread bytes are `buf[start..end]`; u32: a frame is at most 256 MiB and the buffer
    /// at most four of the small ones (8 bytes less in every connection).
    start: u32,
    end: u32,
}

impl FrameReader {
    pub(super) fn new() -> Self {
        FrameReader {
            buf: Box::default(),
            start: 0,
            end: 0,
        }
    }

    /// The next whole frame (fixed header included) of at most `max` bytes, read within `limit`.
    pub(super) async fn next(
        &mut self,
        stream: &Stream,
        max: usize,
        limit: Option<Duration>,
    ) -> Result<&[u8], ReadError> {
        let range = match limit {
            None => self.fill(stream, max).await,
            Some(limit) => {
                self.fill(stream, max)
                    .or(async {
                        smol::Timer::after(limit).await;
                        Err(ReadError::TimedOut)
                    })
                    .await
            }
        }?;
        Ok(&self.buf[range.0..range.1])
    }

    /// Makes the buffer `len` bytes long, keeping what fits (new bytes are zero).
    fn resize(&mut self, len: usize) {
        let mut v = std::mem::take(&mut self.buf).into_vec();
        // Exactly `len`: the boxed slice below is then made without another reallocation.
        v.reserve_exact(len.saturating_sub(v.len()));
        v.resize(len, 0);
        self.buf = v.into_boxed_slice();
    }

    /// Whether bytes of a next frame are already buffered.
    pub(super) fn has_input(&self) -> bool {
        self.start < self.end
    }

    /// Takes what the stream holds without waiting: `true` when input is buffered.
    /// `readable`: the stream was seen readable, so a buffer is taken to read into; otherwise
    /// only a buffer still held from the last burst is tried. A look that finds nothing frees
    /// the buffer: an idle connection holds none, over TLS and WebSocket too (most connections
    /// of a gateway are idle most of the time).
    pub(super) fn try_input(&mut self, stream: &Stream, readable: bool) -> Result<bool, ReadError> {
        if self.has_input() {
            return Ok(true);
        }
        self.start = 0;
        self.end = 0;
        if self.buf.len() > KEEP_BUF {
            self.buf = Box::default();
        }
        if self.buf.is_empty() {
            if !readable {
                return Ok(false);
            }
            self.resize(READ_CHUNK);
        }
        loop {
            match stream.try_read(&mut self.buf) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => {
                    self.end = n as u32;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.buf = Box::default();
                    return Ok(false);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// Returns once input is buffered, holding no buffer while it waits; bytes already waiting
    /// are read at once, into the buffer still held.
    pub(super) async fn wait_input(
        &mut self,
        stream: &Stream,
        limit: Option<Duration>,
    ) -> Result<(), ReadError> {
        let mut readable = false;
        let mut timer = limit.map(smol::Timer::after);
        while !self.try_input(stream, readable)? {
            // One poll function over the socket and the timer: the smallest waiting state.
            future::poll_fn(|cx| {
                if let Poll::Ready(r) = stream.poll_readable(cx) {
                    return Poll::Ready(r.map_err(ReadError::Io));
                }
                if let Some(t) = &mut timer {
                    if Pin::new(t).poll(cx).is_ready() {
                        return Poll::Ready(Err(ReadError::TimedOut));
                    }
                }
                Poll::Pending
            })
            .await?;
            readable = true;
        }
        Ok(())
    }

    /// Reads until one whole frame is buffered; returns its range in `buf`.
    async fn fill(&mut self, stream: &Stream, max: usize) -> Result<(usize, usize), ReadError> {
        loop {
            let (start, end) = (self.start as usize, self.end as usize);
            let avail = &self.buf[start..end];
            if let Some((h, rem)) = codec::fixed_header(avail).map_err(ReadError::Frame)? {
                let total = h + rem;
                if total > max {
                    return Err(ReadError::Frame(FrameError::TooLarge(total)));
                }
                if avail.len() >= total {
                    let r = (start, start + total);
                    self.start = (start + total) as u32;
                    return Ok(r);
                }
                if self.buf.len() - start < total {
                    // Compact, then grow to what this frame needs.
                    self.buf.copy_within(start..end, 0);
                    self.end -= self.start;
                    self.start = 0;
                    if self.buf.len() < total {
                        // Room for a few such frames per read while they keep coming.
                        let room = if total <= KEEP_BUF / 4 {
                            4 * total
                        } else {
                            total
                        };
                        self.resize(room);
                    }
                }
            }
            if self.start == self.end {
                // Holds no buffer while it waits; returns with input buffered.
                self.wait_input(stream, None).await?;
                continue;
            } else if self.end as usize == self.buf.len() {
                self.buf
                    .copy_within(self.start as usize..self.end as usize, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = stream
                .read(&mut self.buf[self.end as usize..])
                .await
                .map_err(ReadError::Io)?;
            if n == 0 {
                return Err(ReadError::Closed);
            }
            self.end += n as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pair() -> (std::net::TcpStream, Stream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = std::net::TcpStream::connect(listener.local_addr().expect("addr")).unwrap();
        let (server, _) = listener.accept().expect("accept");
        let stream = crate::transport::Transport::plain(smol::Async::new(server).unwrap());
        (client, stream)
    }

    /// A PUBLISH frame (QoS 0, topic "t") with `n` payload bytes.
    fn publish(n: usize) -> Vec<u8> {
        let mut f = vec![0x30];
        edge_mqtt::frame::write_var_int(3 + n, &mut f);
        f.extend_from_slice(&[0, 1, b't']);
        f.extend(std::iter::repeat_n(7u8, n));
        f
    }

    #[test]
    fn a_reader_waiting_for_input_holds_no_buffer() {
        let (mut client, stream) = pair();
        let mut reader = FrameReader::new();
        client.write_all(&publish(10)).unwrap();
        smol::block_on(async {
            let frame = reader.next(&stream, 1 << 20, None).await.ok().unwrap();
            assert_eq!(frame.len(), 15);
            assert!(!reader.has_input());
            let waited = future::poll_once(reader.wait_input(&stream, None)).await;
            assert!(waited.is_none(), "nothing was sent: still waiting");
        });
        assert_eq!(reader.buf.len(), 0);
        client.write_all(&publish(1)).unwrap();
        smol::block_on(async {
            reader.wait_input(&stream, None).await.ok().unwrap();
            assert!(reader.has_input());
            assert_eq!(
                reader
                    .next(&stream, 1 << 20, None)
                    .await
                    .ok()
                    .unwrap()
                    .len(),
                6
            );
        });
    }

    /// A ws:// connection: the client's blocking WebSocket and the broker's stream.
    fn ws_pair() -> (tungstenite::WebSocket<std::net::TcpStream>, Stream) {
        use tungstenite::client::IntoClientRequest;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = std::thread::spawn(move || {
            let mut request = format!("ws://{addr}/mqtt").into_client_request().unwrap();
            let mqtt = "mqtt".parse().unwrap();
            request.headers_mut().insert("Sec-WebSocket-Protocol", mqtt);
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            tungstenite::client::client(request, tcp).ok().unwrap().0
        });
        let (server, peer) = listener.accept().expect("accept");
        let settings = crate::websocket::WsSettings::new("/mqtt", 1 << 20);
        let server = smol::Async::new(server).unwrap();
        let upgrade = crate::transport::Transport::websocket(server, None, &settings, peer);
        let (stream, _) = smol::block_on(upgrade).unwrap();
        (client.join().unwrap(), stream)
    }

    #[test]
    fn a_websocket_reader_waiting_for_input_holds_no_buffer_and_loses_no_byte() {
        use tungstenite::Message;
        let (mut client, stream) = ws_pair();
        let mut reader = FrameReader::new();
        let next = |reader: &mut FrameReader| {
            let frame = smol::block_on(reader.next(&stream, 1 << 20, None));
            frame.ok().map(|f| f.len())
        };
        let idle = |reader: &mut FrameReader| {
            let waited = smol::block_on(future::poll_once(reader.wait_input(&stream, None)));
            waited.is_none() && reader.buf.is_empty()
        };
        // Two packets in one message: the second is read without waiting for the socket.
        let mut two = publish(10);
        two.extend(publish(1));
        client.send(Message::binary(two)).unwrap();
        assert_eq!(next(&mut reader), Some(15));
        assert_eq!(next(&mut reader), Some(6));
        assert!(
            idle(&mut reader),
            "nothing more was sent: waiting, no buffer held"
        );
        // A ping holds no data: answered while the reader waits, which goes on waiting.
        client.send(Message::Ping(vec![1, 2].into())).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(idle(&mut reader), "a ping is no input");
        assert_eq!(client.read().unwrap(), Message::Pong(vec![1, 2].into()));
        // A packet across two messages, the first byte alone: whole, byte for byte.
        let packet = publish(100);
        client.send(Message::binary(packet[..1].to_vec())).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let waited = smol::block_on(future::poll_once(reader.wait_input(&stream, None)));
        assert!(waited.is_some(), "the first byte is input");
        client.send(Message::binary(packet[1..].to_vec())).unwrap();
        let frame = smol::block_on(reader.next(&stream, 1 << 20, None))
            .ok()
            .unwrap();
        assert_eq!(frame, &packet[..]);
        assert!(idle(&mut reader));
        // The client's Close ends the stream.
        client.close(None).unwrap();
        let end = smol::block_on(reader.next(&stream, 1 << 20, None));
        assert!(matches!(end, Err(ReadError::Closed)));
    }

    #[test]
    fn large_frames_get_room_for_several_per_read_and_a_huge_one_is_let_go() {
        let (mut client, stream) = pair();
        let mut reader = FrameReader::new();
        let frame = publish(4096);
        for _ in 0..3 {
            client.write_all(&frame).unwrap();
        }
        smol::block_on(async {
            for _ in 0..3 {
                let got = reader.next(&stream, 1 << 20, None).await.ok().unwrap();
                assert_eq!(got.len(), frame.len());
            }
        });
        assert!(reader.buf.len() >= 3 * frame.len(), "{}", reader.buf.len());
        assert!(reader.buf.len() <= KEEP_BUF);
        let huge = publish(200_000);
        let len = huge.len();
        // From a thread: the socket may not take it all before it is read.
        let writer = std::thread::spawn(move || client.write_all(&huge).map(|_| client));
        smol::block_on(async {
            let got = reader.next(&stream, 1 << 20, None).await.ok().unwrap();
            assert_eq!(got.len(), len);
            let waited = future::poll_once(reader.wait_input(&stream, None)).await;
            assert!(waited.is_none());
        });
        assert_eq!(reader.buf.len(), 0, "the huge frame's buffer is given back");
        let _client = writer.join().unwrap().unwrap();
    }

    #[test]
    fn a_silent_client_times_out_while_idle() {
        let (_client, stream) = pair();
        let mut reader = FrameReader::new();
        let r = smol::block_on(reader.wait_input(&stream, Some(Duration::from_millis(50))));
        assert!(matches!(r, Err(ReadError::TimedOut)));
    }
}
