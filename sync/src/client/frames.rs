//! Packet framing on the upstream connection: whole frames read into a bounded buffer (sized by
//! `edge_mqtt::frame`, refused over `MAX_INBOUND_PACKET` before the body is read), and encoded
//! packets written and flushed one at a time. EOF from the upstream is an error.

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::MAX_INBOUND_PACKET;
use crate::error::SyncError;

/// Reads whole MQTT packets from a stream into a bounded buffer.
pub struct FrameReader<R> {
    rd: R,
    buf: Vec<u8>,
    start: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(rd: R) -> Self {
        FrameReader {
            rd,
            buf: Vec::with_capacity(8192),
            start: 0,
        }
    }

    /// Length of the complete packet at the front of the buffer, if any.
    fn frame_len(&self) -> Result<Option<usize>, SyncError> {
        edge_mqtt::frame::complete_frame_len(&self.buf[self.start..], MAX_INBOUND_PACKET)
            .map_err(|e| SyncError::Protocol(format!("upstream: {e}")))
    }

    /// Next complete packet (bytes of the whole frame). EOF is an error.
    pub async fn next(&mut self) -> Result<Vec<u8>, SyncError> {
        loop {
            if let Some(n) = self.frame_len()? {
                let frame = self.buf[self.start..self.start + n].to_vec();
                self.start += n;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Ok(frame);
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0u8; 8192];
            let n = self.rd.read(&mut chunk).await?;
            if n == 0 {
                return Err(SyncError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "upstream closed the connection",
                )));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Writes one encoded packet.
pub async fn write_packet<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    bytes: &[u8],
) -> Result<(), SyncError> {
    w.write_all(bytes).await?;
    w.flush().await?;
    Ok(())
}
