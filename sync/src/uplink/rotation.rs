//! Which upstream to try next, with which protocol, after how long: addresses in turn (a session
//! that got connected keeps its address), exponential back-off doubling up to the maximum after
//! failed attempts and starting over after a connected one; MQTT 3.1.1 remembered per address.

use std::collections::HashSet;
use std::time::Duration;

use crate::client::Proto;

pub(super) struct Rotation {
    count: usize,
    idx: usize,
    /// Addresses spoken to in 3.1.1 (configured, or fallen back to).
    v311: HashSet<usize>,
    initial: Duration,
    max: Duration,
    backoff: Duration,
}

impl Rotation {
    /// `count` addresses (at least one); `all_v311` when 3.1.1 is configured.
    pub fn new(count: usize, all_v311: bool, initial: Duration, max: Duration) -> Rotation {
        Rotation {
            count,
            idx: 0,
            v311: if all_v311 {
                (0..count).collect()
            } else {
                HashSet::new()
            },
            initial,
            max,
            backoff: initial,
        }
    }

    /// Index of the address to try now.
    pub fn current(&self) -> usize {
        self.idx % self.count
    }

    /// Protocol for the address to try now.
    pub fn proto(&self) -> Proto {
        if self.v311.contains(&self.current()) {
            Proto::V311
        } else {
            Proto::V5
        }
    }

    /// Makes address `i` the current one (the others are outside their schedule windows).
    pub fn select(&mut self, i: usize) {
        if i != self.current() {
            self.idx = i;
        }
    }

    /// The current address does not speak MQTT 5: 3.1.1 from now on, retried at once.
    pub fn fall_back(&mut self) {
        self.v311.insert(self.current());
    }

    /// A session ended (`connected`: after a CONNACK): the back-off before the next attempt.
    /// After a connected session it starts over at the same address; after a failed attempt the
    /// next address is up and the following back-off doubles (up to the maximum).
    pub fn lost(&mut self, connected: bool) -> Duration {
        if connected {
            self.backoff = self.initial;
            self.backoff
        } else {
            self.idx += 1;
            let d = self.backoff;
            self.backoff = (self.backoff * 2).min(self.max);
            d
        }
    }
}

/// Full jitter in [d/2, d] (whole milliseconds).
pub(super) fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn failures_rotate_addresses_and_double_up_to_the_maximum() {
        let mut r = Rotation::new(3, false, ms(100), ms(400));
        let mut seen = Vec::new();
        for _ in 0..5 {
            let i = r.current();
            seen.push((i, r.lost(false)));
        }
        assert_eq!(
            seen,
            vec![
                (0, ms(100)),
                (1, ms(200)),
                (2, ms(400)),
                (0, ms(400)),
                (1, ms(400))
            ]
        );
    }

    #[test]
    fn a_connected_session_keeps_its_address_and_resets_the_backoff() {
        let mut r = Rotation::new(2, false, ms(100), ms(1000));
        r.lost(false);
        r.lost(false);
        assert_eq!(r.current(), 0);
        assert_eq!(r.lost(true), ms(100));
        assert_eq!(r.current(), 0);
        assert_eq!(r.lost(false), ms(100));
        assert_eq!(r.current(), 1);
        assert_eq!(r.lost(false), ms(200));
    }

    #[test]
    fn fallback_to_311_is_per_address() {
        let mut r = Rotation::new(2, false, ms(100), ms(1000));
        assert_eq!(r.proto(), Proto::V5);
        r.fall_back();
        assert_eq!((r.current(), r.proto()), (0, Proto::V311));
        r.lost(false);
        assert_eq!((r.current(), r.proto()), (1, Proto::V5));
        r.lost(false);
        assert_eq!((r.current(), r.proto()), (0, Proto::V311));
    }

    #[test]
    fn configured_311_applies_to_every_address() {
        let mut r = Rotation::new(2, true, ms(100), ms(1000));
        assert_eq!(r.proto(), Proto::V311);
        r.lost(false);
        assert_eq!(r.proto(), Proto::V311);
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        for _ in 0..1000 {
            let j = jitter(ms(400));
            assert!(j >= ms(200) && j <= ms(400), "{j:?}");
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
