//! The reading side of one connection, as its own task: acknowledgements go to the drain loop
//! (which waits here for them), cloud publishes to the downlink task, PUBREL is answered with
//! PUBCOMP at once. It records when the upstream was last heard from and why reading stopped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use edge_mqtt::util::lock;
use event_listener::EventListener;
use futures_lite::future;
use futures_lite::io::ReadHalf;

use crate::client::{self, Ack, BoxStream, FrameReader, InPublish, Inbound, Proto};
use crate::ctx::{Stop, Writer};
use crate::error::SyncError;
use crate::outbox::now_ms;

/// Cloud publishes buffered for the downlink task.
const DOWNLINK_QUEUE: usize = 64;

/// Handle on the reader task; dropping it stops the task.
pub(super) struct Reader {
    /// Acknowledgements and other packets for the drain loop; closed when reading stopped.
    acks: async_channel::Receiver<Inbound>,
    /// When the last packet arrived (ms since the epoch).
    last_rx: Arc<AtomicU64>,
    error: Arc<Mutex<Option<String>>>,
    task: smol::Task<()>,
}

impl Reader {
    /// Starts reading; `acks_capacity` bounds the acknowledgements not yet handled. Returns the
    /// handle and the channel of cloud publishes.
    pub fn spawn(
        mut frames: FrameReader<ReadHalf<BoxStream>>,
        writer: Writer,
        proto: Proto,
        acks_capacity: usize,
    ) -> (Reader, async_channel::Receiver<InPublish>) {
        let (ack_tx, acks) = async_channel::bounded::<Inbound>(acks_capacity);
        let (down_tx, down_rx) = async_channel::bounded::<InPublish>(DOWNLINK_QUEUE);
        let last_rx = Arc::new(AtomicU64::new(now_ms()));
        let error: Arc<Mutex<Option<String>>> = Arc::default();
        let task = {
            let last_rx = last_rx.clone();
            let error = error.clone();
            smol::spawn(async move {
                let res: Result<(), SyncError> = async {
                    loop {
                        let frame = frames.next().await?;
                        last_rx.store(now_ms(), Ordering::Relaxed);
                        match client::decode(proto, &frame)? {
                            Inbound::Publish(p) => {
                                if down_tx.send(p).await.is_err() {
                                    return Ok(());
                                }
                            }
                            Inbound::PubRel { pid } => {
                                let b = client::encode_ack(proto, Ack::PubComp, pid)?;
                                let mut w = writer.lock().await;
                                client::write_packet(&mut *w, &b).await?;
                            }
                            Inbound::PingResp => {}
                            other => {
                                if ack_tx.send(other).await.is_err() {
                                    return Ok(());
                                }
                            }
                        }
                    }
                }
                .await;
                if let Err(e) = res {
                    *lock(&error) = Some(e.to_string());
                }
            })
        };
        let reader = Reader {
            acks,
            last_rx,
            error,
            task,
        };
        (reader, down_rx)
    }

    /// Milliseconds since the upstream last sent anything.
    pub fn silent_ms(&self) -> u64 {
        now_ms().saturating_sub(self.last_rx.load(Ordering::Relaxed))
    }

    /// The next packet for the drain loop if one is there; `Err` once reading stopped.
    pub fn try_next(&self) -> Result<Option<Inbound>, SyncError> {
        match self.acks.try_recv() {
            Ok(ev) => Ok(Some(ev)),
            Err(async_channel::TryRecvError::Empty) => Ok(None),
            Err(async_channel::TryRecvError::Closed) => Err(self.gone()),
        }
    }

    /// Waits for the next packet for the drain loop, `wake` (new records; `None`: not waited
    /// for), `tick` or `stop`: `Ok(None)` when anything but a packet came, `Err` once reading
    /// stopped.
    pub async fn wait(
        &self,
        wake: Option<EventListener>,
        tick: Duration,
        stop: &Stop,
    ) -> Result<Option<Inbound>, SyncError> {
        let ev = future::or(
            future::or(async { Some(self.acks.recv().await) }, async {
                match wake {
                    Some(l) => l.await,
                    None => future::pending::<()>().await,
                }
                None
            }),
            async {
                stop.sleep(tick).await; // the tick or the stop, whichever comes first
                None
            },
        )
        .await;
        match ev {
            Some(Ok(ev)) => Ok(Some(ev)),
            Some(Err(_)) => Err(self.gone()),
            None => Ok(None),
        }
    }

    /// Why the acknowledgement channel closed: the read error, or the connection's end.
    fn gone(&self) -> SyncError {
        let e = lock(&self.error)
            .take()
            .unwrap_or_else(|| "upstream connection closed".into());
        SyncError::Protocol(e)
    }

    /// Stops the task.
    pub fn stop(self) {
        drop(self.task);
    }
}
