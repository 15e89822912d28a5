//! The drain loop's writing side of one connection: every packet it writes goes through here, and
//! the time of the last one decides when a PINGREQ is due. The reader task and the downlink write
//! through the same locked `Writer` (their writes do not count as activity here).

use std::time::{Duration, Instant};

use crate::client::{self, Ack, Proto};
use crate::ctx::Writer;
use crate::error::SyncError;

pub(super) struct Outgoing {
    proto: Proto,
    writer: Writer,
    last_tx: Instant,
}

impl Outgoing {
    pub fn new(proto: Proto, writer: Writer) -> Outgoing {
        Outgoing {
            proto,
            writer,
            last_tx: Instant::now(),
        }
    }

    pub fn proto(&self) -> Proto {
        self.proto
    }

    pub async fn write(&mut self, b: &[u8]) -> Result<(), SyncError> {
        let mut w = self.writer.lock().await;
        client::write_packet(&mut *w, b).await?;
        self.last_tx = Instant::now();
        Ok(())
    }

    pub async fn pubrel(&mut self, pid: u16) -> Result<(), SyncError> {
        let b = client::encode_ack(self.proto, Ack::PubRel, pid)?;
        self.write(&b).await
    }

    /// PINGREQ when nothing was written for a keep-alive period.
    pub async fn ping_if_idle(&mut self, keep_alive: Duration) -> Result<(), SyncError> {
        if self.last_tx.elapsed() >= keep_alive {
            self.write(&client::encode_pingreq(self.proto)?).await?;
        }
        Ok(())
    }

    /// DISCONNECT (the upstream keeps the session) and close; best effort.
    pub async fn disconnect(&mut self) {
        let mut w = self.writer.lock().await;
        if let Ok(b) = client::encode_disconnect(self.proto) {
            let _ = client::write_packet(&mut *w, &b).await;
        }
        let _ = futures_lite::io::AsyncWriteExt::close(&mut *w).await;
    }
}
