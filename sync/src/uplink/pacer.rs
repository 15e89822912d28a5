//! Pacing of the uplink: two token buckets, messages/s and bytes/s (rate 0 = unlimited), each
//! holding at most one second of its rate. A PUBLISH goes out only when both have its tokens; a
//! message larger than one second of bytes waits for a full bucket.

use std::time::{Duration, Instant};

/// Token bucket; rate 0 = unlimited. Capacity is one second of rate.
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Starts full.
    fn new(rate: f64, now: Instant) -> Bucket {
        Bucket {
            rate,
            tokens: rate,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
    }

    /// Time to wait before `n` tokens are there (a request above capacity waits for a full bucket).
    fn wait_for(&mut self, n: f64, now: Instant) -> Option<Duration> {
        if self.rate <= 0.0 {
            return None;
        }
        self.refill(now);
        let need = n.min(self.rate);
        (self.tokens < need).then(|| Duration::from_secs_f64((need - self.tokens) / self.rate))
    }

    fn take(&mut self, n: f64) {
        if self.rate > 0.0 {
            self.tokens -= n.min(self.rate);
        }
    }
}

/// The two buckets of one session.
pub(super) struct Pacer {
    msgs: Bucket,
    bytes: Bucket,
}

impl Pacer {
    /// Rates in messages/s and bytes/s (0 = unlimited); both buckets start full.
    pub fn new(msgs_per_sec: u64, bytes_per_sec: u64, now: Instant) -> Pacer {
        Pacer {
            msgs: Bucket::new(msgs_per_sec as f64, now),
            bytes: Bucket::new(bytes_per_sec as f64, now),
        }
    }

    /// How long to wait before a message of `len` bytes may go (at least 1 ms), or `None` to
    /// send it now. Unlimited: no clock read.
    pub fn wait_for(&mut self, len: usize) -> Option<Duration> {
        if self.msgs.rate <= 0.0 && self.bytes.rate <= 0.0 {
            return None;
        }
        self.wait_for_at(len, Instant::now())
    }

    /// `wait_for` at `now`.
    fn wait_for_at(&mut self, len: usize, now: Instant) -> Option<Duration> {
        match (
            self.msgs.wait_for(1.0, now),
            self.bytes.wait_for(len as f64, now),
        ) {
            (None, None) => None,
            (a, b) => Some(
                a.unwrap_or_default()
                    .max(b.unwrap_or_default())
                    .max(Duration::from_millis(1)),
            ),
        }
    }

    /// A message of `len` bytes was sent.
    pub fn take(&mut self, len: usize) {
        self.msgs.take(1.0);
        self.bytes.take(len as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `got` is `want` give or take a microsecond (float arithmetic).
    fn about(got: Option<Duration>, want: Duration) -> bool {
        got.is_some_and(|g| g.abs_diff(want) <= Duration::from_micros(1))
    }

    /// A pacer of `msgs_per_sec` (no byte cap) whose message bucket was emptied at `t0`.
    fn drained(msgs_per_sec: u64, t0: Instant) -> Pacer {
        let mut p = Pacer::new(msgs_per_sec, 0, t0);
        for _ in 0..msgs_per_sec {
            p.take(1);
        }
        p
    }

    #[test]
    fn unlimited_never_waits() {
        let t0 = Instant::now();
        let mut p = Pacer::new(0, 0, t0);
        for _ in 0..10_000 {
            assert_eq!(p.wait_for_at(1 << 20, t0), None);
            assert_eq!(p.wait_for(1 << 20), None);
            p.take(1 << 20);
        }
    }

    #[test]
    fn message_rate_allows_a_one_second_burst_then_paces() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10, 0, t0);
        for _ in 0..10 {
            assert_eq!(p.wait_for_at(100, t0), None);
            p.take(100);
        }
        // Empty: one token takes 100 ms at 10/s.
        assert!(about(p.wait_for_at(100, t0), ms(100)));
        assert!(about(p.wait_for_at(100, t0 + ms(40)), ms(60)));
        assert_eq!(p.wait_for_at(100, t0 + ms(101)), None);
    }

    #[test]
    fn refill_is_capped_at_one_second() {
        let t0 = Instant::now();
        let mut p = drained(5, t0);
        // A long idle time gives back one second's worth, not more.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(p.wait_for_at(1, later), None);
            p.take(1);
        }
        assert!(p.wait_for_at(1, later).is_some());
    }

    #[test]
    fn byte_rate_and_the_longer_wait_wins() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1000, 1000, t0);
        p.take(900);
        // 100 bytes left: 500 more take 400 ms; the message bucket has plenty.
        assert!(about(p.wait_for_at(500, t0), ms(400)));
        // A message above one second of bytes waits for a full bucket only.
        assert!(about(p.wait_for_at(5000, t0), ms(900)));
    }

    #[test]
    fn a_wait_is_at_least_one_millisecond() {
        let t0 = Instant::now();
        let mut p = drained(1_000_000, t0);
        assert_eq!(p.wait_for_at(1, t0), Some(ms(1)));
    }
}
