//! Publisher flow control on one session: the water marks of its queue (publishers pause at
//! three quarters of a bound and go on under half), a lower pair for its QoS 0 deliveries
//! ([`QOS0_PAUSE`], [`QOS0_RESUME`]), and the events that wake paused publishers and the
//! attached connection's writer. Each pair has its own event: a publisher is woken only by the
//! mark it paused on. A subscriber that takes nothing from its queue for
//! `limits.subscriber_stall_ms` ([`DEFAULT_STALL_MS`]) pauses no publisher: its queue fills to
//! its bound and the rest is dropped for it alone, as mosquitto does, instead of one stuck
//! client holding every publisher it shares a topic with.

use std::sync::Arc;

use event_listener::Event;

use super::{QueueLimits, Session};
use crate::broker::{Cause, Congestion};

/// Waiting QoS 0 deliveries at which an online session pauses the publishers of more; they go
/// on at [`QOS0_RESUME`]. The queue's own marks (3/4 of `limits.max_queued_messages`, 7,500 by
/// default, 75,000 in the Raspberry Pi config) are sized for QoS 1/2 backlogs, which a
/// persistent session keeps on disk past its window. QoS 0 deliveries only ever live in
/// memory, 32 bytes each plus their message: paused at 7,500, a 1 -> 100 flood of small QoS 0
/// messages peaked at 35-42 MB of RSS; at 1,024, 13 MB at the same rate (BENCHMARKS.md,
/// "A QoS 0 pause mark"). 1,024 messages are still ~30 ms of a subscriber's sends at the
/// rates measured here, so the subscriber's socket never runs dry. QoS 1/2 deliveries keep
/// the queue's marks, although those to clean sessions live in memory too: with every
/// publisher paused at 1,024, 100 QoS 1 publishers feeding one subscriber ran ~20% slower
/// (their windows of 64 keep 6,400 messages coming), while the QoS 0 floods kept their rates.
pub const QOS0_PAUSE: usize = 1024;

/// Waiting QoS 0 deliveries at which the publishers paused by [`QOS0_PAUSE`] go on: three
/// quarters of it, so a subscriber still has 768 to send while they wake (at half, the 1 -> 100
/// flood's rate varied more between runs: 2.6M-3.3M against 3.0M-3.2M msg/s).
pub const QOS0_RESUME: usize = QOS0_PAUSE / 4 * 3;

/// Default of `limits.subscriber_stall_ms` ([`QueueLimits::stall_ms`]): time without progress
/// after which a subscriber with deliveries waiting is stalled: it has taken none from its
/// queue (its socket does not drain) since they began to wait. A paused publisher re-checks
/// its cause every second, or every stall time when that is shorter
/// (`connection/inbound/publish.rs`), so it goes on soon after the subscriber stalls. Before:
/// one subscriber that stopped reading cut a 5,000 msg/s QoS 0 publisher's other subscribers
/// to one message per 5 s (each publish waited the whole 5 s; BENCHMARKS.md, "A stuck
/// subscriber").
pub const DEFAULT_STALL_MS: u64 = 2000;

/// The last time (unix ms) a stalled subscriber was logged (at most once a second).
static STALLED_LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Three quarters of a queue bound, rounded up: the queue is at its mark from there on.
/// `max - max / 4` and not `4 * n >= 3 * max`, which overflows for a bound near the type's
/// maximum (and, for `usize` bounds, already past 1.4 GB on a 32-bit target).
fn three_quarters(max: u64) -> u64 {
    max - max / 4
}

/// The water mark a publisher paused on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The queue's: 3/4 of `limits.max_queued_messages` or `max_queued_bytes`.
    Queue,
    /// The session's waiting QoS 0 deliveries: [`QOS0_PAUSE`], [`QOS0_RESUME`].
    Qos0,
}

impl Session {
    /// Online with the queue at three quarters of a bound: publishers to it should pause.
    pub fn congested(&self, limits: QueueLimits) -> bool {
        self.online()
            && (self.queued_len() as u64 >= three_quarters(limits.max_messages as u64)
                || self.queued_bytes >= three_quarters(limits.max_bytes))
    }

    /// Online and over `mark`, stalled or not.
    fn above(&self, mark: Mark, limits: QueueLimits) -> bool {
        match mark {
            Mark::Queue => self.congested(limits),
            Mark::Qos0 => self.online() && self.waiting_qos0 as usize >= QOS0_PAUSE,
        }
    }

    /// Online, over `mark` and not stalled at `now_ms`: the publishers paused on it stay
    /// paused.
    pub fn over(&self, mark: Mark, limits: QueueLimits, now_ms: u64) -> bool {
        self.above(mark, limits) && !self.stalled(now_ms, limits.stall_ms)
    }

    /// Deliveries wait and none was taken for `stall_ms` before `now_ms` (see `progress_ms`;
    /// a `now_ms` before the last progress, such as an old message's time, is no time at all).
    fn stalled(&self, now_ms: u64, stall_ms: u64) -> bool {
        self.queued_len() > 0 && now_ms.saturating_sub(self.progress_ms) > stall_ms
    }

    /// Records progress at `at_ms` (deliveries taken, or waiting begun), never backwards: a
    /// retained message or a will carries an older time than its queueing.
    pub(super) fn progressed(&mut self, at_ms: u64) {
        self.progress_ms = self.progress_ms.max(at_ms);
    }

    /// The mark the publisher of a delivery of `qos` just queued at `now_ms` should pause on,
    /// if any: the queue's for any publisher, the QoS 0 one for the publishers of QoS 0
    /// deliveries; none while the subscriber is stalled.
    pub(super) fn pressed(&self, qos: u8, limits: QueueLimits, now_ms: u64) -> Option<Mark> {
        let mark = if self.above(Mark::Queue, limits) {
            Mark::Queue
        } else if qos == 0 && self.above(Mark::Qos0, limits) {
            Mark::Qos0
        } else {
            return None;
        };
        // Looked at only over a mark: most deliveries are not.
        if self.stalled(now_ms, limits.stall_ms) {
            if crate::ratelog::allowed(&STALLED_LOGGED) {
                tracing::warn!(client_id = %self.client_id, waiting = self.queued_len(),
                    stall_ms = limits.stall_ms,
                    "subscriber stalled (nothing taken from its queue for limits.subscriber_stall_ms): its publishers no longer wait for it; its queue bound applies");
            }
            return None;
        }
        Some(mark)
    }

    /// The mark for the publisher of a message dropped because the queue is full: the queue's,
    /// unless the subscriber is offline or stalled.
    pub(super) fn full_mark(&self, limits: QueueLimits, now_ms: u64) -> Option<Mark> {
        (self.online() && !self.stalled(now_ms, limits.stall_ms)).then_some(Mark::Queue)
    }

    /// Queue at half of both bounds: paused publishers may go on.
    fn under_low_water(&self, limits: QueueLimits) -> bool {
        self.queued_len() <= limits.max_messages / 2 && self.queued_bytes <= limits.max_bytes / 2
    }

    /// Wakes the publishers paused on a mark the queue is back under the low side of.
    pub fn notify_if_drained(&self, limits: QueueLimits) {
        let Some(e) = self.extras.as_ref() else {
            return;
        };
        if let Some(d) = e.drained.as_ref().filter(|_| self.under_low_water(limits)) {
            d.notify(usize::MAX);
        }
        if let Some(d) =
            (e.drained_qos0.as_ref()).filter(|_| self.waiting_qos0 as usize <= QOS0_RESUME)
        {
            d.notify(usize::MAX);
        }
    }

    /// This session as something a publisher paused on `mark` can wait on (the mark's event is
    /// created here, by the first publisher that has to wait: most sessions never need one).
    pub fn congestion(&mut self, mark: Mark) -> Congestion {
        let extras = self.extras_mut();
        let event = match mark {
            Mark::Queue => &mut extras.drained,
            Mark::Qos0 => &mut extras.drained_qos0,
        };
        let drained = event.get_or_insert_with(Arc::<Event>::default).clone();
        Congestion {
            cause: Cause::Subscriber(self.client_id.clone(), mark),
            drained,
        }
    }

    /// Wakes the attached connection's writer (deliveries or a free in-flight slot).
    pub fn notify(&self) {
        if let Some(c) = self.conn() {
            c.wakeup.wake();
        }
    }
}
