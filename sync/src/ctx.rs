//! State shared by the sync tasks (uplink, downlink, status): configuration, outbox, live status,
//! the local bus, the shutdown flag, and the writer half of the upstream connection. The uplink
//! and the downlink both depend on this module and never on each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_lite::io::WriteHalf;

use crate::bus::LocalBus;
use crate::client::BoxStream;
use crate::config::SyncConfig;
use crate::outbox::Outbox;
use crate::schedule::{Clock, Gates};
use crate::status::Live;
use crate::topic::CompiledDownlink;

/// Writer half of one upstream connection, shared by the uplink, its reader and the downlink.
pub(crate) type Writer = Arc<smol::lock::Mutex<WriteHalf<BoxStream>>>;

/// Shutdown flag shared by the tasks.
#[derive(Default)]
pub(crate) struct Stop {
    flag: AtomicBool,
    ev: event_listener::Event,
}

impl Stop {
    pub fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.ev.notify(usize::MAX);
    }
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    pub async fn wait(&self) {
        loop {
            if self.is_set() {
                return;
            }
            let l = self.ev.listen();
            if self.is_set() {
                return;
            }
            l.await;
        }
    }

    /// Sleeps for `d` or until stopped, whichever comes first; true when stopped.
    pub async fn sleep(&self, d: std::time::Duration) -> bool {
        futures_lite::future::or(
            async {
                smol::Timer::after(d).await;
                false
            },
            async {
                self.wait().await;
                true
            },
        )
        .await
    }
}

pub(crate) struct Ctx {
    pub outbox: Arc<Outbox>,
    pub cfg: SyncConfig,
    pub live: Arc<Live>,
    pub bus: Arc<dyn LocalBus>,
    pub stop: Arc<Stop>,
    pub downlinks: Vec<CompiledDownlink>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Rule and upstream schedules, read against `clock`.
    pub gates: Gates,
    pub clock: Arc<dyn Clock>,
}
