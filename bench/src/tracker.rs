//! Correctness accounting: every benchmark payload carries (publisher id, sequence, send time), and
//! each subscriber keeps one bitmap per publisher so that missing, duplicated, out-of-order and
//! foreign messages are counted exactly. A run with missing messages never gets a rate.

use std::sync::OnceLock;
use std::time::Instant;

/// Bytes at the start of every payload: magic, publisher id, sequence, send time.
pub const HEADER_LEN: usize = 4 + 4 + 8 + 8;
const MAGIC: [u8; 4] = *b"eBn1";

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's benchmark epoch (shared by publishers and subscribers).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Writes the header into `buf` (which must be at least `HEADER_LEN` long; the rest is padding).
pub fn write_header(buf: &mut [u8], publisher: u32, seq: u64, sent_ns: u64) {
    buf[0..4].copy_from_slice(&MAGIC);
    buf[4..8].copy_from_slice(&publisher.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    buf[16..24].copy_from_slice(&sent_ns.to_le_bytes());
}

/// Parsed payload header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

pub fn read_header(buf: &[u8]) -> Option<Header> {
    if buf.len() < HEADER_LEN || buf[0..4] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| {
        buf.get(i..i + 4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |i: usize| {
        buf.get(i..i + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    };
    Some(Header {
        publisher: u32_at(4)?,
        seq: u64_at(8)?,
        sent_ns: u64_at(16)?,
    })
}

/// What one received message was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    New,
    Duplicate,
    /// Not a benchmark payload, unknown publisher or sequence out of range.
    Foreign,
}

struct PerPublisher {
    seen: Vec<u64>,
    expected: u64,
    unique: u64,
    last: Option<u64>,
}

/// Counts for one subscriber (or the sum over several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub expected: u64,
    pub unique: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub foreign: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.expected += o.expected;
        self.unique += o.unique;
        self.missing += o.missing;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.foreign += o.foreign;
    }

    /// A run is valid when nothing was lost or foreign; duplicates are allowed only at QoS 1
    /// (at-least-once) and are still reported.
    pub fn valid(&self, qos: u8) -> bool {
        self.missing == 0 && self.foreign == 0 && (qos == 1 || self.duplicates == 0)
    }
}

/// Tracks what one subscriber received from a known set of publishers.
pub struct Tracker {
    pubs: Vec<PerPublisher>,
    duplicates: u64,
    out_of_order: u64,
    foreign: u64,
    unique: u64,
    expected: u64,
}

impl Tracker {
    /// `per_publisher[i]` is how many messages publisher `i` sends (sequences `0..n`).
    pub fn new(per_publisher: &[u64]) -> Tracker {
        let pubs: Vec<PerPublisher> = per_publisher
            .iter()
            .map(|&n| PerPublisher {
                seen: vec![0; n.div_ceil(64) as usize],
                expected: n,
                unique: 0,
                last: None,
            })
            .collect();
        Tracker {
            expected: per_publisher.iter().sum(),
            pubs,
            duplicates: 0,
            out_of_order: 0,
            foreign: 0,
            unique: 0,
        }
    }

    pub fn record(&mut self, publisher: u32, seq: u64) -> Outcome {
        let Some(p) = self.pubs.get_mut(publisher as usize) else {
            self.foreign += 1;
            return Outcome::Foreign;
        };
        if seq >= p.expected {
            self.foreign += 1;
            return Outcome::Foreign;
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        let mask = 1u64 << bit;
        if p.seen[word] & mask != 0 {
            self.duplicates += 1;
            return Outcome::Duplicate;
        }
        p.seen[word] |= mask;
        p.unique += 1;
        self.unique += 1;
        if let Some(last) = p.last {
            if seq < last {
                self.out_of_order += 1;
            }
        }
        p.last = Some(p.last.map_or(seq, |l| l.max(seq)));
        Outcome::New
    }

    /// Records a raw payload; anything without our header counts as foreign.
    pub fn record_payload(&mut self, payload: &[u8]) -> (Outcome, Option<Header>) {
        match read_header(payload) {
            Some(h) => (self.record(h.publisher, h.seq), Some(h)),
            None => {
                self.foreign += 1;
                (Outcome::Foreign, None)
            }
        }
    }

    pub fn complete(&self) -> bool {
        self.unique == self.expected
    }

    pub fn counts(&self) -> Counts {
        Counts {
            expected: self.expected,
            unique: self.unique,
            missing: self.expected - self.unique,
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            foreign: self.foreign,
        }
    }

    /// First few missing (publisher, seq) pairs, for diagnostics.
    pub fn missing_sample(&self, max: usize) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        for (i, p) in self.pubs.iter().enumerate() {
            if p.unique == p.expected {
                continue;
            }
            for seq in 0..p.expected {
                if p.seen[(seq / 64) as usize] & (1 << (seq % 64)) == 0 {
                    out.push((i as u32, seq));
                    if out.len() >= max {
                        return out;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_run_is_valid() {
        let mut t = Tracker::new(&[3, 2]);
        for (p, s) in [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)] {
            assert_eq!(t.record(p, s), Outcome::New);
        }
        assert!(t.complete());
        let c = t.counts();
        assert_eq!(
            c,
            Counts {
                expected: 5,
                unique: 5,
                ..Counts::default()
            }
        );
        assert!(c.valid(0) && c.valid(1) && c.valid(2));
    }

    #[test]
    fn missing_duplicates_and_foreign_are_counted() {
        let mut t = Tracker::new(&[100]);
        for s in 0..100 {
            if s != 17 && s != 64 {
                t.record(0, s);
            }
        }
        assert_eq!(t.record(0, 5), Outcome::Duplicate);
        assert_eq!(t.record(0, 100), Outcome::Foreign);
        assert_eq!(t.record(3, 0), Outcome::Foreign);
        assert!(!t.complete());
        let c = t.counts();
        assert_eq!(
            (c.unique, c.missing, c.duplicates, c.foreign),
            (98, 2, 1, 2)
        );
        assert_eq!(t.missing_sample(10), vec![(0, 17), (0, 64)]);
        assert!(!c.valid(1));
    }

    #[test]
    fn duplicates_only_allowed_at_qos1() {
        let mut t = Tracker::new(&[2]);
        t.record(0, 0);
        t.record(0, 1);
        t.record(0, 1);
        let c = t.counts();
        assert_eq!(c.missing, 0);
        assert!(c.valid(1));
        assert!(!c.valid(0));
        assert!(!c.valid(2));
    }

    #[test]
    fn out_of_order_is_reported() {
        let mut t = Tracker::new(&[4]);
        for s in [0, 2, 1, 3] {
            t.record(0, s);
        }
        assert_eq!(t.counts().out_of_order, 1);
        assert!(t.complete());
    }

    #[test]
    fn payload_header_round_trip() {
        let mut buf = vec![0u8; 64];
        write_header(&mut buf, 7, 123_456, 999);
        assert_eq!(
            read_header(&buf),
            Some(Header {
                publisher: 7,
                seq: 123_456,
                sent_ns: 999
            })
        );
        assert_eq!(read_header(&buf[..10]), None);
        let mut t = Tracker::new(&[1]);
        assert_eq!(t.record_payload(b"not ours").0, Outcome::Foreign);
        assert_eq!(t.counts().foreign, 1);
    }
}
