//! The subscriber side of a run: reads every PUBLISH until the `Tracker` has all expected
//! messages, acknowledges QoS 1/2, and records publish-to-delivery latency per message.
//! A connection with no progress for `io_timeout` fails through the watchdog.

use std::time::Instant;

use hdrhistogram::Histogram;
use mqtt_proto::QoS;

use super::new_histogram;
use crate::conn::{watchdog, Conn, Incoming, Result};
use crate::tracker::{self, Tracker};

/// What one subscriber saw: its counts, its latency histogram and the time of its last message.
pub(crate) struct SubOut {
    pub tracker: Tracker,
    pub hist: Histogram<u64>,
    pub last_ns: Option<u64>,
    pub err: Option<String>,
}

pub(crate) async fn subscriber(mut c: Conn, mut tr: Tracker, deadline: Instant) -> SubOut {
    let mut hist = new_histogram();
    let mut last_ns = None;
    let progress = c.watch();
    let idle = c.io_timeout;
    let body = receive(&mut c, &mut tr, &mut hist, &mut last_ns, deadline);
    let r = futures_lite::future::or(body, async { Err(watchdog(progress, idle).await) }).await;
    let err = r.err().map(|e| {
        let got = tr.counts();
        let (b, w) = (c.buffered(), c.pending_write());
        format!(
            "{e} (after {} of {} messages; {b} bytes undecoded, {w} unsent)",
            got.unique, got.expected
        )
    });
    c.unwatch();
    c.close().await;
    SubOut {
        tracker: tr,
        hist,
        last_ns,
        err,
    }
}

async fn receive(
    c: &mut Conn,
    tr: &mut Tracker,
    hist: &mut Histogram<u64>,
    last_ns: &mut Option<u64>,
    deadline: Instant,
) -> Result<()> {
    loop {
        // Packets may already be buffered (e.g. queued PUBLISHes that arrived with the CONNACK).
        while let Some(p) = c.try_next()? {
            match p {
                Incoming::Publish { qos, pid, payload } => {
                    let now = tracker::now_ns();
                    if let (_, Some(h)) = tr.record_payload(&payload) {
                        let us = (now.saturating_sub(h.sent_ns) / 1000).max(1);
                        let _ = hist.record(us);
                        *last_ns = Some(now);
                    }
                    match (qos, pid) {
                        (QoS::Level1, Some(pid)) => c.send_puback(pid)?,
                        (QoS::Level2, Some(pid)) => c.send_pubrec(pid)?,
                        _ => {}
                    }
                }
                Incoming::Pubrel { pid } => c.send_pubcomp(pid)?,
                Incoming::Disconnect { code } => {
                    return Err(format!("broker sent DISCONNECT ({code:?})"))
                }
                _ => {}
            }
        }
        c.flush().await?;
        if tr.complete() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("run deadline reached before every message arrived".into());
        }
        c.fill().await?;
    }
}
