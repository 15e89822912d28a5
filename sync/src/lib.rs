//! Store-and-forward sync for robustmq-edge: local topics chosen by forward rules are captured
//! into a durable, bounded outbox inside the broker's redb file (same commit as the local copy)
//! and carried to a central RobustMQ cluster (or any MQTT broker) whenever the link is up; cloud
//! topics chosen by downlink rules are carried down to local subscribers.
//!
//! Broker integration: `Outbox::open` at start-up, `wants`/`admit` on the publish path,
//! `capture` inside the group-commit transaction, `committed` after it, and `start` to run the
//! uplink, downlink and status tasks on smol. `read_status` serves `robustmq-edge sync status`.

mod bus;
pub mod client;
pub mod config;
mod ctx;
pub mod downlink;
pub mod error;
pub mod outbox;
pub mod rules;
pub mod salvage;
pub mod schedule;
pub mod status;
pub mod topic;
pub mod uplink;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use config::SyncConfig;
pub use downlink::{BusError, DownMessage, LocalBus};
pub use error::{Rejected, SyncError};
pub use outbox::{LocalMessage, Outbox, DOWNLINK_MARKER};
pub use status::{LinkState, StatusSource, SyncStatus};
pub use uplink::MSG_ID_PROPERTY;

use ctx::{Ctx, Stop};
use status::Live;
use topic::CompiledDownlink;

/// Records read per lane per status interval by the TTL sweep.
const SWEEP_BUDGET: usize = 10_000;
/// How often the window task looks for ended aggregation windows.
const WINDOW_TICK: Duration = Duration::from_millis(200);
/// Delay after a window's end before it is emitted.
const WINDOW_GRACE_MS: u64 = 250;

/// Running sync tasks.
pub struct SyncHandle {
    ctx: Arc<Ctx>,
    data_dir: PathBuf,
    tasks: Vec<smol::Task<()>>,
}

/// Spawns the uplink/downlink/status tasks (smol). Runs until shutdown.
pub fn start(
    outbox: Arc<Outbox>,
    cfg: SyncConfig,
    data_dir: PathBuf,
    bus: Arc<dyn LocalBus>,
) -> SyncHandle {
    start_with_clock(outbox, cfg, data_dir, bus, Arc::new(schedule::SystemClock))
}

/// `start` with the clock schedules are read against (tests drive a `ManualClock`).
pub fn start_with_clock(
    outbox: Arc<Outbox>,
    cfg: SyncConfig,
    data_dir: PathBuf,
    bus: Arc<dyn LocalBus>,
    clock: Arc<dyn schedule::Clock>,
) -> SyncHandle {
    let live = Arc::new(Live::default());
    // Validated with the configuration: an error here means validation was skipped, and then
    // nothing is sent rather than scheduled records out of their windows.
    let gates = match schedule::Gates::compile(&cfg) {
        Ok(g) => Some(g),
        Err((key, message)) => {
            tracing::error!("sync: {key}: {message}; the uplink is not started");
            live.set_error(format!("{key}: {message}"));
            None
        }
    };
    let needs_tls = cfg.upstream_list().iter().any(|u| u.tls && !u.http);
    let tls = if needs_tls {
        match client::tls_config(cfg.tls.as_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!("sync: {e}");
                live.set_error(e.to_string());
                None
            }
        }
    } else {
        None
    };
    let downlinks = cfg
        .downlink
        .iter()
        .map(|r| CompiledDownlink::compile(&cfg, r))
        .collect();
    let ctx = Arc::new(Ctx {
        outbox,
        cfg,
        live,
        bus,
        stop: Arc::new(Stop::default()),
        downlinks,
        tls,
        gates: gates.clone().unwrap_or_default(),
        clock,
    });
    let mut tasks = vec![smol::spawn(status_task(ctx.clone(), data_dir.clone()))];
    if gates.is_some() {
        tasks.push(if ctx.cfg.upstreams.iter().any(|u| u.http) {
            smol::spawn(uplink::http::run(ctx.clone()))
        } else {
            smol::spawn(uplink::run(ctx.clone()))
        });
    }
    if ctx
        .cfg
        .forward
        .iter()
        .any(|r| r.window.is_some() || r.batch.is_some())
    {
        tasks.push(smol::spawn(window_task(ctx.clone())));
    }
    SyncHandle {
        ctx,
        data_dir,
        tasks,
    }
}

/// Reads the live status of running sync tasks for the broker's metrics and HTTP API. Holds
/// them weakly: it never keeps the outbox (and the database) open after shutdown.
#[derive(Clone)]
pub struct StatusReader(std::sync::Weak<Ctx>);

impl StatusReader {
    /// The current status; `None` once sync has stopped.
    pub fn read(&self) -> Option<SyncStatus> {
        let ctx = self.0.upgrade()?;
        Some(snapshot(&ctx))
    }
}

impl SyncHandle {
    pub fn status(&self) -> SyncStatus {
        snapshot(&self.ctx)
    }

    pub fn status_reader(&self) -> StatusReader {
        StatusReader(Arc::downgrade(&self.ctx))
    }

    /// Stops the tasks: acknowledged removals are flushed, DISCONNECT is sent (the upstream
    /// session is kept), the last status is written and the outbox is made durable.
    pub async fn shutdown(self) {
        self.ctx.stop.set();
        for t in self.tasks {
            let done = futures_lite::future::or(
                async {
                    t.await;
                    true
                },
                async {
                    smol::Timer::after(Duration::from_secs(5)).await;
                    false
                },
            )
            .await;
            if !done {
                tracing::warn!("sync task did not stop within 5 s");
            }
        }
        let ob = self.ctx.outbox.clone();
        if let Err(e) = smol::unblock(move || ob.flush()).await {
            tracing::warn!("sync outbox final flush: {e}");
        }
        let s = snapshot(&self.ctx);
        if let Err(e) = status::write_status_file(&self.data_dir, &s) {
            tracing::warn!("sync status file: {e}");
        }
    }
}

/// The status with the schedules read against the context's clock.
fn snapshot(ctx: &Ctx) -> SyncStatus {
    let schedules = ctx.gates.status(&ctx.cfg, ctx.clock.now_ms());
    status::snapshot(&ctx.outbox, &ctx.live, schedules)
}

async fn status_task(ctx: Arc<Ctx>, data_dir: PathBuf) {
    let every = Duration::from_secs(ctx.cfg.status_interval_secs);
    loop {
        let ob = ctx.outbox.clone();
        match smol::unblock(move || ob.sweep_expired(outbox::now_ms(), SWEEP_BUDGET)).await {
            Ok(_) => {}
            Err(e) => tracing::warn!("sync TTL sweep: {e}"),
        }
        let s = {
            let ctx = ctx.clone();
            smol::unblock(move || snapshot(&ctx)).await
        };
        let dir = data_dir.clone();
        let s2 = s.clone();
        if let Err(e) = smol::unblock(move || status::write_status_file(&dir, &s2)).await {
            tracing::warn!("sync status file: {e}");
        }
        if let Ok(json) = serde_json::to_vec(&s) {
            let msg = DownMessage {
                topic: status::STATUS_TOPIC.to_string(),
                payload: json.into(),
                qos: 0,
                retain: true,
                user_properties: vec![(DOWNLINK_MARKER.to_string(), s.node_id.clone())],
            };
            let publish = ctx.bus.publish(msg);
            let r = futures_lite::future::or(publish, async {
                smol::Timer::after(every).await;
                Err(BusError::TimedOut)
            })
            .await;
            if let Err(e) = r {
                tracing::debug!("sync status not published locally: {e}");
            }
        }
        if ctx.stop.sleep(every).await {
            return;
        }
    }
}

/// Emits ended aggregation windows and due batches: checked every `WINDOW_TICK`, a window is
/// emitted `WINDOW_GRACE_MS` after its end (so a reading stamped just before the end, still in
/// the broker's commit queue, lands in it), a batch `max_ms` (+ the same grace) after its first
/// message. Windows and batches in progress stay in the database across a stop.
async fn window_task(ctx: Arc<Ctx>) {
    loop {
        let now = outbox::now_ms();
        if now >= ctx.outbox.next_window_due().saturating_add(WINDOW_GRACE_MS) {
            let ob = ctx.outbox.clone();
            let at = now - WINDOW_GRACE_MS;
            match smol::unblock(move || ob.flush_due(at)).await {
                Ok(n) => tracing::debug!(records = n, "sync: windows and batches emitted"),
                Err(e) => tracing::warn!("sync: emitting windows and batches: {e}"),
            }
        }
        if ctx.stop.sleep(WINDOW_TICK).await {
            return;
        }
    }
}

/// Status for `robustmq-edge sync status --data-dir DIR` (running or stopped broker).
pub fn read_status(data_dir: &Path) -> Result<SyncStatus, SyncError> {
    status::read_status(data_dir)
}
