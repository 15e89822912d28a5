//! Reads whole MQTT frames off the socket. A frame over the size limit is refused from its fixed
//! header, before its body is buffered; the buffer grows to the frame being read, shrinks back
//! after a large one, and is freed while the connection waits for input.

use std::time::Duration;

use futures_lite::FutureExt;

use super::Stream;
use crate::codec::{self, FrameError};

const READ_CHUNK: usize = 2048;

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
                    // Compact, then grow to exactly what this frame needs.
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                    if self.buf.len() < total {
                        self.buf.resize(total, 0);
                    }
                }
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
                // Idle: hold no buffer while waiting for the next bytes (most connections of
                // a gateway are idle most of the time).
                if stream.can_wait_readable() {
                    self.buf = Vec::new();
                    stream.readable().await.map_err(ReadError::Io)?;
                } else if self.buf.len() > 4 * READ_CHUNK {
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
