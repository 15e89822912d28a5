//! Downlink: cloud messages received on the upstream session (subscriptions to the remote filters
//! of `[[sync.downlink]]`) are mapped to local topics and handed to the broker through `LocalBus`;
//! the upstream is acknowledged only once the broker accepted (and, for QoS 1/2, stored) them.
//!
//! No loops: every message handed to the broker carries the user property `edge-downlink`, the
//! broker flags bus-injected messages so they are never captured, and `Outbox::capture` also
//! refuses anything carrying `edge-downlink`. The subscriptions use v5 No Local as well.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::client::{self, Ack, InPublish, Proto};
use crate::ctx::{Ctx, Writer};
use crate::outbox::DOWNLINK_MARKER;
use crate::topic;

pub use crate::bus::{BusError, DownMessage, LocalBus};

/// Handles the cloud publishes of one session, in order, until the channel closes.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    rx: async_channel::Receiver<InPublish>,
    writer: Writer,
    proto: Proto,
) {
    while let Ok(p) = rx.recv().await {
        let rule = ctx
            .downlinks
            .iter()
            .find(|r| topic::matches(&r.filter, &p.topic));
        match rule {
            Some(rule) => {
                let mut props = p.user_properties.clone();
                props.push((DOWNLINK_MARKER.to_string(), ctx.cfg.node_id.clone()));
                let msg = DownMessage {
                    topic: rule.map.apply(&p.topic),
                    payload: p.payload.clone(),
                    qos: p.qos,
                    retain: p.retain,
                    user_properties: props,
                };
                let mut delay = Duration::from_millis(100);
                loop {
                    match ctx.bus.publish(msg.clone()).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(
                                topic = %msg.topic,
                                "local broker refused a downlink message ({e}); retrying in {delay:?}"
                            );
                            if ctx.stop.is_set() {
                                return; // not acknowledged: the cloud redelivers it
                            }
                            smol::Timer::after(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                ctx.live.downlink_delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(remote = %p.topic, local = %msg.topic, "downlink delivered");
            }
            None => {
                tracing::warn!(topic = %p.topic, "no downlink rule matches; acknowledged and dropped");
            }
        }
        if let Some(pid) = p.pid {
            let kind = if p.qos == 1 { Ack::PubAck } else { Ack::PubRec };
            let bytes = match client::encode_ack(proto, kind, pid) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("downlink ack: {e}");
                    return;
                }
            };
            let mut w = writer.lock().await;
            if let Err(e) = client::write_packet(&mut *w, &bytes).await {
                tracing::debug!("downlink ack not written: {e}");
                return;
            }
        }
    }
}
