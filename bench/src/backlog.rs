//! `backlog fill|drain`: builds a long offline queue for a persistent session (subscribe with
//! clean session off, disconnect, publish N messages), then reconnects and drains it, checking every
//! message and sampling the broker's peak RSS while it drains.

use std::time::{Duration, Instant};

use mqtt_proto::QoS;

use crate::conn::{watchdog, Conn, ConnectOpts, Result, Version};
use crate::executor::block_on;
use crate::procmem;
use crate::run::{self, PublishPlan};
use crate::tracker::{self, Counts, Tracker};

#[derive(Clone, Debug)]
pub struct BacklogOpts {
    pub addr: String,
    pub version: Version,
    pub client_id: String,
    pub qos: QoS,
    pub messages: u64,
    pub payload: usize,
    pub window: usize,
    pub io_timeout: Duration,
    pub deadline: Duration,
    pub broker_pid: Option<u32>,
}

fn topic(client_id: &str) -> String {
    format!("edge-bench/backlog/{client_id}")
}

fn session(id: &str, clean: bool) -> ConnectOpts {
    ConnectOpts {
        client_id: id.to_string(),
        clean,
        keep_alive: 600,
        session_expiry: Some(7 * 24 * 3600),
    }
}

#[derive(Debug)]
pub struct FillResult {
    pub published: u64,
    pub publish_s: f64,
    pub published_per_s: f64,
    pub peak_rss_kb: Option<u64>,
    pub rss_after_kb: Option<u64>,
}

pub fn fill(o: BacklogOpts) -> Result<FillResult> {
    block_on(2, async move {
        let (mut sub, _, _) = Conn::connect(
            &o.addr,
            o.version,
            &session(&o.client_id, false),
            o.io_timeout,
        )
        .await?;
        match sub.subscribe(&topic(&o.client_id), o.qos).await? {
            Some(g) if g == o.qos => {}
            g => return Err(format!("subscription granted {g:?}, asked {:?}", o.qos)),
        }
        sub.close().await;
        let opts = session(&format!("{}-pub", o.client_id), true);
        let (mut p, _, rm) = Conn::connect(&o.addr, o.version, &opts, o.io_timeout).await?;
        let window = rm.map_or(o.window, |r| o.window.min(r as usize)).max(1);
        let sampler = o
            .broker_pid
            .map(|pid| procmem::Sampler::start(pid, Duration::from_millis(50)));
        let start = Instant::now();
        let deadline = start + o.deadline;
        let progress = p.watch();
        let plan = PublishPlan {
            id: 0,
            count: o.messages,
            topic: topic(&o.client_id),
            qos: o.qos,
            payload_len: o.payload,
            window,
            rate: None,
            start_ns: tracker::now_ns(),
            deadline,
        };
        let body = run::publish_loop(&mut p, &plan);
        let rejected =
            futures_lite::future::or(body, async { Err(watchdog(progress, o.io_timeout).await) })
                .await?;
        p.unwatch();
        let publish_s = start.elapsed().as_secs_f64();
        p.close().await;
        let mem = sampler.map(|s| s.stop());
        if rejected > 0 {
            return Err(format!("{rejected} publishes rejected"));
        }
        Ok(FillResult {
            published: o.messages,
            publish_s,
            published_per_s: o.messages as f64 / publish_s.max(1e-9),
            peak_rss_kb: mem.map(|m| m.0),
            rss_after_kb: mem.map(|m| m.1),
        })
    })
}

#[derive(Debug)]
pub struct DrainResult {
    pub session_present: bool,
    pub counts: Counts,
    pub valid: bool,
    pub error: Option<String>,
    pub drain_s: Option<f64>,
    pub delivered_per_s: Option<f64>,
    pub peak_rss_kb: Option<u64>,
    pub rss_before_kb: Option<u64>,
}

pub fn drain(o: BacklogOpts, cleanup: bool) -> Result<DrainResult> {
    block_on(2, async move {
        let rss_before_kb = o.broker_pid.and_then(procmem::read).map(|m| m.rss_kb);
        let sampler = o
            .broker_pid
            .map(|pid| procmem::Sampler::start(pid, Duration::from_millis(50)));
        let start_ns = tracker::now_ns();
        let deadline = Instant::now() + o.deadline;
        let (c, session_present, _) = Conn::connect(
            &o.addr,
            o.version,
            &session(&o.client_id, false),
            o.io_timeout,
        )
        .await?;
        let out = run::subscriber(c, Tracker::new(&[o.messages]), deadline).await;
        let mem = sampler.map(|s| s.stop());
        if cleanup {
            if let Ok((c, _, _)) = Conn::connect(
                &o.addr,
                o.version,
                &session(&o.client_id, true),
                o.io_timeout,
            )
            .await
            {
                c.close().await;
            }
        }
        let counts = out.tracker.counts();
        let valid = counts.valid(o.qos as u8) && out.err.is_none();
        let drain_s = out.last_ns.map(|l| l.saturating_sub(start_ns) as f64 / 1e9);
        Ok(DrainResult {
            session_present,
            counts,
            valid,
            error: out.err,
            drain_s,
            delivered_per_s: if valid {
                drain_s.map(|d| counts.unique as f64 / d.max(1e-9))
            } else {
                None
            },
            peak_rss_kb: mem.map(|m| m.0),
            rss_before_kb,
        })
    })
}
