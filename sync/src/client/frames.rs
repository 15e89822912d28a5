//! Packet framing on the upstream connection: whole frames read into a bounded buffer (sized by
//! `edge_mqtt::frame`, refused over `MAX_INBOUND_PACKET` before the body is read), and encoded
//! packets written and flushed one at a time. EOF from the upstream is an error.

use edge_mqtt::frame::FrameBuffer;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::MAX_INBOUND_PACKET;
use crate::error::SyncError;

/// Reads whole MQTT packets from a stream (buffered by `edge_mqtt::frame::FrameBuffer`).
pub struct FrameReader<R> {
    rd: R,
    buf: FrameBuffer,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(rd: R) -> Self {
        FrameReader {
            rd,
            buf: FrameBuffer::new(8192),
        }
    }

    /// Next complete packet (bytes of the whole frame). EOF is an error.
    pub async fn next(&mut self) -> Result<Vec<u8>, SyncError> {
        loop {
            let frame = self
                .buf
                .next_frame(MAX_INBOUND_PACKET)
                .map_err(|e| SyncError::Protocol(format!("upstream: {e}")))?;
            if let Some(f) = frame {
                return Ok(f.to_vec());
            }
            let n = self.rd.read(self.buf.spare()).await?;
            if n == 0 {
                return Err(SyncError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "upstream closed the connection",
                )));
            }
            self.buf.filled(n);
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
