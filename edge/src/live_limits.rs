//! The limits a reload (SIGHUP) may change while the broker serves, kept as atomics that each
//! check reads: a new value applies from the next check (the next CONNECT, enqueue, SUBSCRIBE,
//! retained message) and no connection is dropped. `limits.max_connections` lives in
//! `broker::Connections`. `max_packet_size` is told to a client at CONNACK, so a connection
//! keeps the value it was told; new connections get the new one.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::config::Limits;

#[derive(Debug)]
pub struct LiveLimits {
    max_connections_per_ip: AtomicUsize,
    connect_timeout_secs: AtomicU64,
    max_queued_messages: AtomicUsize,
    max_queued_bytes: AtomicUsize,
    max_retained_messages: AtomicUsize,
    max_subscriptions_per_session: AtomicUsize,
    max_packet_size: AtomicU32,
}

impl LiveLimits {
    pub fn new(l: &Limits) -> LiveLimits {
        LiveLimits {
            max_connections_per_ip: AtomicUsize::new(l.max_connections_per_ip),
            connect_timeout_secs: AtomicU64::new(l.connect_timeout_secs),
            max_queued_messages: AtomicUsize::new(l.max_queued_messages),
            max_queued_bytes: AtomicUsize::new(l.max_queued_bytes),
            max_retained_messages: AtomicUsize::new(l.max_retained_messages),
            max_subscriptions_per_session: AtomicUsize::new(l.max_subscriptions_per_session),
            max_packet_size: AtomicU32::new(l.max_packet_size),
        }
    }

    /// Puts the live-changeable values of `l` in force.
    pub fn apply(&self, l: &Limits) {
        let set = |a: &AtomicUsize, v| a.store(v, Ordering::Relaxed);
        set(&self.max_connections_per_ip, l.max_connections_per_ip);
        self.connect_timeout_secs
            .store(l.connect_timeout_secs, Ordering::Relaxed);
        set(&self.max_queued_messages, l.max_queued_messages);
        set(&self.max_queued_bytes, l.max_queued_bytes);
        set(&self.max_retained_messages, l.max_retained_messages);
        set(
            &self.max_subscriptions_per_session,
            l.max_subscriptions_per_session,
        );
        self.max_packet_size
            .store(l.max_packet_size, Ordering::Relaxed);
    }

    /// For the next CONNECT read and the connections it opens.
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size.load(Ordering::Relaxed)
    }

    pub fn max_connections_per_ip(&self) -> usize {
        self.max_connections_per_ip.load(Ordering::Relaxed)
    }

    pub fn connect_timeout_secs(&self) -> u64 {
        self.connect_timeout_secs.load(Ordering::Relaxed)
    }

    pub fn max_queued_messages(&self) -> usize {
        self.max_queued_messages.load(Ordering::Relaxed)
    }

    pub fn max_queued_bytes(&self) -> usize {
        self.max_queued_bytes.load(Ordering::Relaxed)
    }

    pub fn max_retained_messages(&self) -> usize {
        self.max_retained_messages.load(Ordering::Relaxed)
    }

    pub fn max_subscriptions_per_session(&self) -> usize {
        self.max_subscriptions_per_session.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_puts_every_live_limit_in_force() {
        let live = LiveLimits::new(&Limits::default());
        let l = Limits {
            max_connections_per_ip: 7,
            connect_timeout_secs: 3,
            max_queued_messages: 11,
            max_queued_bytes: 13,
            max_retained_messages: 17,
            max_subscriptions_per_session: 19,
            max_packet_size: 23,
            ..Limits::default()
        };
        live.apply(&l);
        assert_eq!(
            (
                live.max_connections_per_ip(),
                live.connect_timeout_secs(),
                live.max_queued_messages(),
                live.max_queued_bytes(),
                live.max_retained_messages(),
                live.max_subscriptions_per_session(),
                live.max_packet_size()
            ),
            (7, 3, 11, 13, 17, 19, 23)
        );
    }
}
