//! Uplink: drains the outbox to the upstream over one MQTT session at a time (addresses in turn,
//! back-off with jitter). A record leaves the outbox only after its PUBACK/PUBCOMP; anything
//! unacknowledged is sent again (DUP, same packet id when the session survived).
//!
//! Draining is in order, with a bounded window of QoS 1/2 messages in flight, paced by a
//! messages/s and bytes/s token bucket; unacknowledged records go again after a reconnect or a
//! restart.
//!
//! Scheduling: each priority lane is a FIFO by outbox sequence. Free window slots are handed out
//! by a weighted pattern (lane 3: 8 of 15 slots, lane 2: 4, lane 1: 2, lane 0: 1; an empty lane's
//! turn goes to the highest non-empty one), so a long low-priority backlog never delays
//! high-priority live traffic by more than its share, and no lane is starved. Within a lane the
//! order is the capture order, so per-topic order holds (one topic always maps to one rule, so to
//! one lane).
//!
//! Schedules (`crate::schedule`): records of a rule whose gate is closed (out of its time
//! windows, or not allowed over the current upstream) are skipped by lane reads and wait in the
//! outbox; the drain looks at the gates every 100 ms and rereads the lanes when they change. An
//! upstream outside its own windows is not connected to, and its session ends when they close.
//!
//! Every PUBLISH carries the user property `edge-msg-id` = `<node_id>:<sequence>`; the sequence is
//! per node, strictly increasing in capture order and never reused, so the cloud can drop replays
//! (same id) and restore the order (sort by sequence) even where the cluster reorders.
//!
//! Parts: this module runs sessions one after the other (`rotation` decides where and when);
//! `session` is one connection's life, `reader` its reading task, `drain` its sending loop and
//! `outgoing` what that loop writes. The loop is built from `scheduler` (lanes), `window` (packet
//! ids in flight), `pacer` (rate limits), `removal` (batched outbox removals), `acks` (what an
//! acknowledgement does) and `publish` (record to PUBLISH).

mod acks;
mod drain;
pub(crate) mod http;
mod outgoing;
mod pacer;
mod publish;
mod reader;
mod removal;
mod rotation;
mod scheduler;
mod session;
mod window;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{ProtocolVersion, Upstream};
use crate::ctx::Ctx;
use crate::error::SyncError;
use crate::status::LinkState;
use rotation::Rotation;
use session::SessionEnd;
use window::Carry;

/// How often a closed upstream schedule is looked at again while no upstream may be used.
const WINDOW_POLL: Duration = Duration::from_secs(1);

/// User property carrying the stable message id.
pub const MSG_ID_PROPERTY: &str = "edge-msg-id";

/// The uplink task: connects, runs sessions, backs off, until shutdown.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    let ups: Vec<Upstream> = ctx.cfg.upstream_list();
    if ups.is_empty() {
        tracing::error!("sync: no usable upstream address");
        return;
    }
    let mut carry = Carry::default();
    let mut sent_upto = ctx.outbox.sent_upto();
    let mut rotation = Rotation::new(
        ups.len(),
        ctx.cfg.protocol == ProtocolVersion::V311,
        Duration::from_millis(ctx.cfg.backoff.initial_ms),
        Duration::from_millis(ctx.cfg.backoff.max_ms),
    );
    loop {
        if ctx.stop.is_set() {
            break;
        }
        // An upstream outside its schedule window is skipped; none usable: wait for one.
        let now = ctx.clock.now_ms();
        let open = (0..ups.len())
            .map(|k| (rotation.current() + k) % ups.len())
            .find(|&i| ctx.gates.upstream_open(i, now));
        let Some(idx) = open else {
            {
                let mut l = ctx.live.link();
                l.state = LinkState::OutsideWindow;
                l.upstream = None;
            }
            if ctx.stop.sleep(WINDOW_POLL).await {
                break;
            }
            continue;
        };
        rotation.select(idx);
        let up = &ups[idx];
        {
            let mut l = ctx.live.link();
            l.state = LinkState::Connecting;
            l.upstream = Some(up.to_string());
        }
        let end = session::run(&ctx, up, idx, rotation.proto(), &mut carry, &mut sent_upto).await;
        {
            let mut l = ctx.live.link();
            l.connected_since_ms = None;
            l.state = LinkState::Disconnected;
        }
        let connected = match end {
            SessionEnd::Stopped => break,
            SessionEnd::WindowClosed => {
                tracing::info!(upstream = %up, "sync uplink: the upstream's schedule window closed");
                continue;
            }
            SessionEnd::FallBackTo311 => {
                tracing::warn!(upstream = %up, "upstream does not speak MQTT 5; retrying with 3.1.1");
                rotation.fall_back();
                continue;
            }
            SessionEnd::Lost { connected, error } => {
                let msg = format!("{up}: {error}");
                match &error {
                    SyncError::ConnectRefused(_) | SyncError::Damaged { .. } => {
                        tracing::error!("sync uplink: {msg}")
                    }
                    _ => tracing::warn!("sync uplink: {msg}"),
                }
                ctx.live.set_error(msg);
                connected
            }
        };
        let backoff = rotation.lost(connected);
        if ctx.stop.is_set() {
            break;
        }
        let sleep = rotation::jitter(backoff);
        ctx.live.set_state(LinkState::Backoff);
        tracing::debug!("sync uplink: next attempt in {sleep:?}");
        ctx.stop.sleep(sleep).await;
    }
    ctx.live.set_state(LinkState::Stopped);
}
