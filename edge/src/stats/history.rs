//! The last hour of broker figures for the status page's chart: one sample every
//! [`SAMPLE_INTERVAL`], kept in a fixed-size ring (360 samples, a few KiB, whatever the uptime).

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

/// Time between two samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(10);
/// Samples kept: one hour.
pub const CAPACITY: usize = 360;

/// The broker at one moment. Counters are totals; the page derives rates from neighbours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Unix time, milliseconds.
    pub t_ms: u64,
    pub connections: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub sync_backlog_messages: u64,
}

/// The ring of samples, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    pub fn push(&mut self, s: Sample) {
        if self.samples.len() == CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().copied().collect()
    }

    pub fn last(&self) -> Option<Sample> {
        self.samples.back().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_hour_and_drops_the_oldest() {
        let mut h = History::default();
        for i in 0..(CAPACITY as u64 + 5) {
            h.push(Sample {
                t_ms: i,
                ..Sample::default()
            });
        }
        let s = h.samples();
        assert_eq!(s.len(), CAPACITY);
        assert_eq!(s[0].t_ms, 5);
        assert_eq!(h.last().map(|s| s.t_ms), Some(CAPACITY as u64 + 4));
    }
}
