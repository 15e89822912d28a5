//! Publisher flow control on one session: the water marks of its queue (publishers pause at
//! three quarters of a bound and go on under half) and the events that wake paused publishers
//! and the attached connection's writer.

use super::{QueueLimits, Session};
use crate::broker::{Cause, Congestion};

impl Session {
    /// Online with the queue at three quarters of a bound: publishers to it should pause.
    pub fn congested(&self, limits: QueueLimits) -> bool {
        self.online()
            && (self.queued_len() * 4 >= limits.max_messages * 3
                || self.queued_bytes * 4 >= limits.max_bytes * 3)
    }

    /// Queue at half of both bounds: paused publishers may go on.
    fn under_low_water(&self, limits: QueueLimits) -> bool {
        self.queued_len() * 2 <= limits.max_messages && self.queued_bytes * 2 <= limits.max_bytes
    }

    /// Wakes paused publishers if the queue is under its low-water mark.
    pub fn notify_if_drained(&self, limits: QueueLimits) {
        if let Some(d) = self
            .extras
            .as_ref()
            .and_then(|e| e.drained.as_ref())
            .filter(|_| self.under_low_water(limits))
        {
            d.notify(usize::MAX);
        }
    }

    /// This session as something a publisher can wait on (its `drained` event is created
    /// here, by the first publisher that has to wait: most sessions never need one).
    pub fn congestion(&mut self) -> Congestion {
        let drained = self
            .extras_mut()
            .drained
            .get_or_insert_with(Default::default)
            .clone();
        Congestion {
            cause: Cause::Subscriber(self.client_id.clone()),
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
