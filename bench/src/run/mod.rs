//! The publish/subscribe engine behind `throughput` and `latency`: N publishers (windowed QoS 1/2,
//! optional fixed rate) and M subscribers on one executor; subscribers count every message with a
//! `Tracker`, record publish-to-delivery latency in an HDR histogram, and the broker's RSS is sampled.
//! This file connects the clients and turns their outcomes into a `RunResult`; `publisher.rs`
//! and `subscriber.rs` hold the two sides (also used by the backlog benchmark).

mod publisher;
mod subscriber;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mqtt_proto::QoS;

use crate::conn::{Conn, ConnectOpts, Result, Version};
use crate::executor::{block_on, EX};
use crate::procmem;
use crate::tracker::{self, Counts, Tracker};
pub(crate) use publisher::{publish_loop, PublishPlan};
use publisher::{publisher, PubOut};
pub(crate) use subscriber::{subscriber, SubOut};

#[derive(Clone, Debug)]
pub struct RunOpts {
    pub addr: String,
    pub version: Version,
    pub qos: QoS,
    pub payload: usize,
    pub publishers: usize,
    pub subscribers: usize,
    /// Total messages published (split over the publishers).
    pub messages: u64,
    /// QoS 1/2 messages in flight per publisher.
    pub window: usize,
    /// Total publish rate in msgs/s (None = as fast as the window allows).
    pub rate: Option<f64>,
    /// A read or write with no progress for this long fails the connection.
    pub io_timeout: Duration,
    /// Hard cap on one run.
    pub deadline: Duration,
    pub broker_pid: Option<u32>,
    pub client_prefix: String,
}

#[derive(Debug)]
pub struct RunResult {
    pub opts: RunOpts,
    pub counts: Counts,
    pub valid: bool,
    pub errors: Vec<String>,
    pub missing_sample: Vec<(u32, u64)>,
    /// Seconds from the first publish to the last delivery (None when nothing arrived).
    pub elapsed_s: Option<f64>,
    /// Seconds until every publisher had its messages acknowledged (QoS 0: written).
    pub publish_s: Option<f64>,
    pub delivered_per_s: Option<f64>,
    pub published_per_s: Option<f64>,
    pub latency_us: Option<Percentiles>,
    pub granted_qos: Option<u8>,
    pub peak_rss_kb: Option<u64>,
    pub rss_after_kb: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub count: u64,
}

pub fn percentiles(h: &Histogram<u64>) -> Option<Percentiles> {
    if h.is_empty() {
        return None;
    }
    Some(Percentiles {
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        count: h.len(),
    })
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
}

fn qos_u8(q: QoS) -> u8 {
    q as u8
}

fn topic_for(prefix: &str, fan_in: bool, publisher: usize) -> String {
    if fan_in {
        format!("{prefix}/{publisher}")
    } else {
        format!("{prefix}/t")
    }
}

/// Splits `total` over `n` publishers (the first ones get the remainder).
pub fn split(total: u64, n: usize) -> Vec<u64> {
    let n64 = n as u64;
    (0..n64)
        .map(|i| total / n64 + u64::from(i < total % n64))
        .collect()
}

pub fn run(o: RunOpts, threads: usize) -> RunResult {
    block_on(threads, run_async(o))
}

async fn run_async(o: RunOpts) -> RunResult {
    let mut errors = Vec::new();
    let per_pub = split(o.messages, o.publishers);
    let fan_in = o.publishers > 1;
    let prefix = format!("edge-bench/{}", o.client_prefix);
    let filter = if fan_in {
        format!("{prefix}/+")
    } else {
        format!("{prefix}/t")
    };
    let deadline = Instant::now() + o.deadline;

    // Subscribers first, each confirmed by SUBACK.
    let mut sub_conns = Vec::new();
    let mut granted: Option<u8> = None;
    let connecting: Vec<_> = (0..o.subscribers)
        .map(|i| {
            let (addr, v, f, q, to) = (
                o.addr.clone(),
                o.version,
                filter.clone(),
                o.qos,
                o.io_timeout,
            );
            let id = format!("{}-s{i}", o.client_prefix);
            EX.spawn(async move {
                let opts = ConnectOpts::clean(id, 600);
                let (mut c, _, _) = Conn::connect(&addr, v, &opts, to).await?;
                let g = c.subscribe(&f, q).await?;
                Result::Ok((c, g))
            })
        })
        .collect();
    for t in connecting {
        match t.await {
            Ok((c, g)) => {
                let g = g.map(qos_u8);
                match g {
                    None => errors.push("subscription refused".into()),
                    Some(g) => granted = Some(granted.map_or(g, |x: u8| x.min(g))),
                }
                sub_conns.push(c);
            }
            Err(e) => errors.push(format!("subscriber: {e}")),
        }
    }
    let mut pub_conns = Vec::new();
    let connecting: Vec<_> = (0..o.publishers)
        .map(|i| {
            let (addr, v, to) = (o.addr.clone(), o.version, o.io_timeout);
            let id = format!("{}-p{i}", o.client_prefix);
            EX.spawn(async move {
                let opts = ConnectOpts::clean(id, 600);
                Conn::connect(&addr, v, &opts, to).await
            })
        })
        .collect();
    for t in connecting {
        match t.await {
            Ok((c, _, rm)) => pub_conns.push((c, rm)),
            Err(e) => errors.push(format!("publisher: {e}")),
        }
    }
    if !errors.is_empty() || sub_conns.len() != o.subscribers || pub_conns.len() != o.publishers {
        for c in sub_conns {
            c.close().await;
        }
        for (c, _) in pub_conns {
            c.close().await;
        }
        return finish(
            o,
            Counts::default(),
            errors,
            vec![],
            None,
            None,
            new_histogram(),
            granted,
            None,
        );
    }

    let sampler = o
        .broker_pid
        .map(|p| procmem::Sampler::start(p, Duration::from_millis(20)));
    let start_ns = tracker::now_ns();
    let subs: Vec<_> = sub_conns
        .into_iter()
        .map(|c| {
            let tr = Tracker::new(&per_pub);
            EX.spawn(subscriber(c, tr, deadline))
        })
        .collect();
    let pubs: Vec<_> = pub_conns
        .into_iter()
        .enumerate()
        .map(|(i, (c, rm))| {
            let topic = topic_for(&prefix, fan_in, i);
            let window = rm.map_or(o.window, |r| o.window.min(r as usize)).max(1);
            let rate = o.rate.map(|r| r / o.publishers as f64);
            let plan = PublishPlan {
                id: i as u32,
                count: per_pub[i],
                topic,
                qos: o.qos,
                payload_len: o.payload,
                window,
                rate,
                start_ns,
                deadline,
            };
            EX.spawn(publisher(c, plan))
        })
        .collect();

    let mut pub_done: Option<u64> = Some(start_ns);
    let mut rejected = 0;
    for p in pubs {
        let out: PubOut = p.await;
        if let Some(e) = out.err {
            errors.push(format!("publisher: {e}"));
        }
        rejected += out.rejected;
        pub_done = match (pub_done, out.done_ns) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    if rejected > 0 {
        errors.push(format!(
            "{rejected} publishes rejected by the broker (v5 reason code >= 0x80)"
        ));
    }
    let mut counts = Counts::default();
    let mut hist = new_histogram();
    let mut last: Option<u64> = None;
    let mut missing_sample = Vec::new();
    for s in subs {
        let out: SubOut = s.await;
        if let Some(e) = out.err {
            errors.push(format!("subscriber: {e}"));
        }
        counts.add(&out.tracker.counts());
        if missing_sample.len() < 10 {
            missing_sample.extend(out.tracker.missing_sample(10 - missing_sample.len()));
        }
        let _ = hist.add(&out.hist);
        last = match (last, out.last_ns) {
            (a, None) => a,
            (None, b) => b,
            (Some(a), Some(b)) => Some(a.max(b)),
        };
    }
    let mem = sampler.map(|s| s.stop());
    let elapsed = last.map(|l| (l.saturating_sub(start_ns)) as f64 / 1e9);
    let publish_s = pub_done.map(|d| (d.saturating_sub(start_ns)) as f64 / 1e9);
    finish(
        o,
        counts,
        errors,
        missing_sample,
        elapsed,
        publish_s,
        hist,
        granted,
        mem,
    )
}

#[allow(clippy::too_many_arguments)]
fn finish(
    o: RunOpts,
    counts: Counts,
    errors: Vec<String>,
    missing_sample: Vec<(u32, u64)>,
    elapsed_s: Option<f64>,
    publish_s: Option<f64>,
    hist: Histogram<u64>,
    granted: Option<u8>,
    mem: Option<(u64, u64)>,
) -> RunResult {
    let qos = qos_u8(o.qos);
    let valid = counts.expected > 0
        && counts.valid(qos)
        && errors.is_empty()
        && granted == Some(qos)
        && elapsed_s.is_some_and(|e| e > 0.0);
    let delivered_per_s = if valid {
        elapsed_s.map(|e| counts.unique as f64 / e)
    } else {
        None
    };
    let published_per_s = if valid {
        publish_s.map(|p| o.messages as f64 / p.max(1e-9))
    } else {
        None
    };
    let mut errors = dedup(errors);
    if granted.is_some_and(|g| g < qos) {
        errors.push(format!(
            "broker granted QoS {} for a QoS {qos} subscription",
            granted.unwrap_or(0)
        ));
    }
    RunResult {
        counts,
        valid,
        errors,
        missing_sample,
        elapsed_s,
        publish_s,
        delivered_per_s,
        published_per_s,
        latency_us: percentiles(&hist),
        granted_qos: granted,
        peak_rss_kb: mem.map(|m| m.0),
        rss_after_kb: mem.map(|m| m.1),
        opts: o,
    }
}

/// Collapses repeated error messages into "message (xN)".
fn dedup(errors: Vec<String>) -> Vec<String> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for e in errors {
        match out.iter_mut().find(|(m, _)| *m == e) {
            Some((_, n)) => *n += 1,
            None => out.push((e, 1)),
        }
    }
    out.into_iter()
        .map(|(m, n)| if n > 1 { format!("{m} (x{n})") } else { m })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn split_spreads_remainder() {
        assert_eq!(super::split(10, 3), vec![4, 3, 3]);
        assert_eq!(super::split(5, 1), vec![5]);
        assert_eq!(super::split(100, 100).iter().sum::<u64>(), 100);
    }
}
