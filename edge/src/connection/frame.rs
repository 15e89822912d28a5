//! Reads whole MQTT frames off the socket. A frame over the size limit is refused from its fixed
//! header, before its body is buffered; the buffer grows to the frame being read (room for a few
//! more of that size, up to 64 KiB), shrinks back after a larger one, and is freed while the
//! connection waits for input: a read that finds nothing makes it idle.

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
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    pub(super) fn new() -> Self {
        FrameReader {
            buf: Vec::new(),
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

    /// Whether bytes of a next frame are already buffered.
    pub(super) fn has_input(&self) -> bool {
        self.start < self.end
    }

    /// The idle state of a connection: returns once input is buffered (or, for TLS, at once),
    /// holding no buffer while it waits (most connections of a gateway are idle most of the
    /// time). Bytes already waiting are read at once, into the buffer still held; a wake-up
    /// that finds nothing to read goes back to waiting.
    pub(super) async fn wait_input(
        &mut self,
        stream: &Stream,
        limit: Option<Duration>,
    ) -> Result<(), ReadError> {
        if self.has_input() || !stream.can_wait_readable() {
            return Ok(());
        }
        self.start = 0;
        self.end = 0;
        if self.buf.len() > KEEP_BUF {
            self.buf = Vec::new();
        }
        loop {
            if !self.buf.is_empty() {
                match stream.try_read(&mut self.buf) {
                    Ok(0) => return Err(ReadError::Closed),
                    Ok(n) => {
                        self.end = n;
                        return Ok(());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(ReadError::Io(e)),
                }
            }
            self.buf = Vec::new();
            // One poll function over the socket and the timer: the smallest waiting state.
            let mut timer = limit.map(smol::Timer::after);
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
            self.buf.resize(READ_CHUNK, 0);
        }
    }

    /// Reads until one whole frame is buffered; returns its range in `buf`.
    async fn fill(&mut self, stream: &Stream, max: usize) -> Result<(usize, usize), ReadError> {
        loop {
            let avail = &self.buf[self.start..self.end];
            if let Some((h, rem)) = codec::fixed_header(avail).map_err(ReadError::Frame)? {
                let total = h + rem;
                if total > max {
                    return Err(ReadError::Frame(FrameError::TooLarge(total)));
                }
                if avail.len() >= total {
                    let r = (self.start, self.start + total);
                    self.start += total;
                    return Ok(r);
                }
                if self.buf.len() - self.start < total {
                    // Compact, then grow to what this frame needs.
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                    if self.buf.len() < total {
                        // Room for a few such frames per read while they keep coming.
                        let room = if total <= KEEP_BUF / 4 {
                            4 * total
                        } else {
                            total
                        };
                        self.buf.resize(room, 0);
                    }
                }
            }
            if self.start == self.end {
                self.wait_input(stream, None).await?;
                if self.has_input() {
                    continue;
                }
                if self.buf.len() > 8 * READ_CHUNK {
                    // TLS may hold decrypted bytes: it keeps a buffer, a small one.
                    self.buf.truncate(READ_CHUNK);
                    self.buf.shrink_to_fit();
                }
                if self.buf.len() < READ_CHUNK {
                    self.buf.resize(READ_CHUNK, 0);
                }
            } else if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = stream
                .read(&mut self.buf[self.end..])
                .await
                .map_err(ReadError::Io)?;
            if n == 0 {
                return Err(ReadError::Closed);
            }
            self.end += n;
        }
    }
}
