//! The limits a reload (SIGHUP) may change while the broker serves, kept as atomics that each
//! check reads: a new value applies from the next check (the next CONNECT, enqueue, SUBSCRIBE,
//! retained message) and no connection is dropped. `limits.max_connections` lives in
//! `broker::Connections`. `max_packet_size` is told to a client at CONNACK, so a connection
//! keeps the value it was told; new connections get the new one.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::config::Limits;

/// Declares `LiveLimits` from one list of `Limits` fields, so that `new`, `apply` and the
/// getter of a field cannot fall out of step (a field added here is always reloaded).
macro_rules! live_limits {
    ($($(#[$doc:meta])* $name:ident: $atomic:ty => $value:ty,)*) => {
        #[derive(Debug)]
        pub struct LiveLimits {
            $($name: $atomic,)*
        }

        impl LiveLimits {
            pub fn new(l: &Limits) -> LiveLimits {
                LiveLimits {
                    $($name: <$atomic>::new(l.$name),)*
                }
            }

            /// Puts the live-changeable values of `l` in force.
            pub fn apply(&self, l: &Limits) {
                $(self.$name.store(l.$name, Ordering::Relaxed);)*
            }

            $(
                $(#[$doc])*
                pub fn $name(&self) -> $value {
                    self.$name.load(Ordering::Relaxed)
                }
            )*
        }
    };
}

live_limits! {
    max_connections_per_ip: AtomicUsize => usize,
    connect_timeout_secs: AtomicU64 => u64,
    max_queued_messages: AtomicUsize => usize,
    max_queued_bytes: AtomicU64 => u64,
    subscriber_stall_ms: AtomicU64 => u64,
    max_retained_messages: AtomicUsize => usize,
    max_subscriptions_per_session: AtomicUsize => usize,
    /// For the next CONNECT read and the connections it opens.
    max_packet_size: AtomicU32 => u32,
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
            subscriber_stall_ms: 29,
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
                live.subscriber_stall_ms(),
                live.max_retained_messages(),
                live.max_subscriptions_per_session(),
                live.max_packet_size()
            ),
            (7, 3, 11, 13, 29, 17, 19, 23)
        );
    }
}
