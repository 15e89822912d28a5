//! `edge-bench soak`: a broker under steady traffic and constant client churn for a long time,
//! its RSS sampled all along, to show whether memory grows with time. Steady part: a publisher
//! at a fixed rate (QoS 0, 1 and 2 in turn) to 100 topics and four subscribers of all of them.
//! Churn, `churn` client lives a second, five kinds in turn: a clean session that subscribes to
//! a topic of its own, gets its own message and unsubscribes; a v3 client with a will that
//! drops its TCP connection without DISCONNECT; one of 20 persistent sessions coming back for
//! what queued while it was away; a persistent session of a new id each time, expiring 5 s
//! after it leaves (with messages queued for it); a retained publish (or delete) to one of 50
//! topics, then a subscription that receives them. Every id, topic and filter that is new each
//! time must be forgotten by the broker again, so a broker's RSS should level off.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use mqtt_proto::{v5, Pid, QoS, QosPid, TopicFilter, TopicName};
use smol::Timer;

use crate::conn::{io_err, Conn, ConnectOpts, Incoming, Result, Version};
use crate::executor::{block_on, EX};
use crate::procmem;

pub struct SoakOpts {
    pub addr: String,
    pub broker_pid: u32,
    pub duration: Duration,
    pub sample: Duration,
    /// Messages a second of the steady publisher.
    pub rate: f64,
    /// Client lives a second.
    pub churn: u32,
    pub io_timeout: Duration,
}

/// (seconds since the start, RSS kB)
pub type Sample = (f64, u64);

pub struct SoakResult {
    pub samples: Vec<Sample>,
    pub lives: u64,
    pub failed_lives: u64,
    pub first_error: Option<String>,
    pub published: u64,
    pub received: u64,
}

impl SoakResult {
    /// The sample nearest to `fraction` of the run.
    pub fn at(&self, fraction: f64) -> Option<Sample> {
        let end = self.samples.last()?.0;
        let want = end * fraction;
        self.samples
            .iter()
            .min_by(|a, b| (a.0 - want).abs().total_cmp(&(b.0 - want).abs()))
            .copied()
    }

    /// Least-squares slope of RSS over the second half of the run, in kB per minute.
    pub fn second_half_slope_kb_per_min(&self) -> Option<f64> {
        let end = self.samples.last()?.0;
        let half: Vec<&Sample> = self.samples.iter().filter(|s| s.0 >= end / 2.0).collect();
        slope(&half).map(|per_s| per_s * 60.0)
    }

    pub fn max_kb(&self) -> Option<u64> {
        self.samples.iter().map(|s| s.1).max()
    }
}

/// Least-squares slope (kB per second) of `points`; None with fewer than two distinct times.
fn slope(points: &[&Sample]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1 as f64).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 as f64 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    received: AtomicU64,
    lives: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Counters {
    fn life_ended(&self, r: Result<()>) {
        self.lives.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = r {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert(e);
        }
    }
}

pub fn run(o: SoakOpts) -> Result<SoakResult> {
    let o = Arc::new(o);
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let sampler = {
        let (o, stop) = (o.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(m) = procmem::read(o.broker_pid) {
                    samples.push((started.elapsed().as_secs_f64(), m.rss_kb));
                }
                let next = o.sample.mul_f64(samples.len() as f64);
                std::thread::sleep(next.saturating_sub(started.elapsed()).min(o.sample));
            }
            samples
        })
    };
    let outcome = block_on(2, {
        let (o, counters, stop) = (o.clone(), counters.clone(), stop.clone());
        async move {
            let mut steady = Vec::new();
            for i in 0..4 {
                let version = if i % 2 == 0 {
                    Version::V5
                } else {
                    Version::V311
                };
                let c = Conn::connect(
                    &o.addr,
                    version,
                    &ConnectOpts::clean(format!("soak-sub-{i}"), 60),
                    o.io_timeout,
                )
                .await?
                .0;
                steady.push(EX.spawn(subscriber(c, counters.clone(), stop.clone())));
            }
            let p = Conn::connect(
                &o.addr,
                Version::V5,
                &ConnectOpts::clean("soak-pub", 60),
                o.io_timeout,
            )
            .await?
            .0;
            steady.push(EX.spawn(publisher(p, o.rate, counters.clone(), stop.clone())));
            let mut k = 0u64;
            let mut tick = Instant::now();
            while started.elapsed() < o.duration {
                let lives: Vec<_> = (0..o.churn)
                    .map(|_| {
                        k += 1;
                        let (o, counters) = (o.clone(), counters.clone());
                        EX.spawn(async move {
                            let r = life(&o, k).await;
                            counters.life_ended(r);
                        })
                    })
                    .collect();
                for l in lives {
                    l.await;
                }
                tick += Duration::from_secs(1);
                Timer::at(tick).await;
            }
            stop.store(true, Ordering::Relaxed);
            let mut first_err = None;
            for t in steady {
                if let Err(e) = t.await {
                    first_err.get_or_insert(e);
                }
            }
            first_err.map_or(Ok(()), Err)
        }
    });
    stop.store(true, Ordering::Relaxed);
    let samples = sampler
        .join()
        .map_err(|_| "RSS sampler panicked".to_string())?;
    outcome?;
    let first_error = counters
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    Ok(SoakResult {
        samples,
        lives: counters.lives.load(Ordering::Relaxed),
        failed_lives: counters.failed.load(Ordering::Relaxed),
        first_error,
        published: counters.published.load(Ordering::Relaxed),
        received: counters.received.load(Ordering::Relaxed),
    })
}

fn topic(s: &str) -> Result<TopicName> {
    TopicName::try_from(s).map_err(|e| io_err("topic", e))
}

fn filter(s: &str) -> Result<TopicFilter> {
    TopicFilter::try_from(s).map_err(|e| io_err("filter", e))
}

fn pid(p: u16) -> Result<Pid> {
    Pid::try_from(p).map_err(|e| io_err("pid", e))
}

/// Answers one incoming packet the way a client must (acknowledges QoS 1 and 2); true when it
/// was a PUBLISH.
fn answer(c: &mut Conn, p: &Incoming) -> Result<bool> {
    match *p {
        Incoming::Publish {
            qos, pid: Some(id), ..
        } => {
            match qos {
                QoS::Level2 => c.send_pubrec(id)?,
                _ => c.send_puback(id)?,
            }
            Ok(true)
        }
        Incoming::Publish { .. } => Ok(true),
        Incoming::Pubrel { pid } => c.send_pubcomp(pid).map(|()| false),
        Incoming::Disconnect { code } => Err(format!("DISCONNECT {code:?}")),
        _ => Ok(false),
    }
}

/// Reads and answers until `until`; the number of PUBLISHes received.
async fn read_until(c: &mut Conn, until: Instant) -> Result<u64> {
    let mut got = 0;
    loop {
        while let Some(p) = c.try_next()? {
            got += u64::from(answer(c, &p)?);
        }
        c.flush().await?;
        let timeout = async {
            Timer::at(until).await;
            Ok(false)
        };
        if !future::or(async { c.fill().await.map(|()| true) }, timeout).await? {
            return Ok(got);
        }
    }
}

async fn subscriber(mut c: Conn, counters: Arc<Counters>, stop: Arc<AtomicBool>) -> Result<()> {
    c.subscribe("soak/data/#", QoS::Level2).await?;
    while !stop.load(Ordering::Relaxed) {
        let got = read_until(&mut c, Instant::now() + Duration::from_millis(200)).await?;
        counters.received.fetch_add(got, Ordering::Relaxed);
    }
    c.close().await;
    Ok(())
}

/// Publishes `rate` messages a second in 10 ms steps, QoS 0, 1 and 2 in turn, at most 64 in
/// flight; completes the QoS 1 and 2 handshakes.
async fn publisher(
    mut c: Conn,
    rate: f64,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let payload = Bytes::from(vec![b'x'; 64]);
    let topics: Vec<TopicName> = (0..100)
        .map(|i| topic(&format!("soak/data/{i}")))
        .collect::<Result<_>>()?;
    let step = Duration::from_millis(10);
    let per_step = rate / 100.0;
    let (mut sent, mut due, mut next_pid, mut inflight) = (0u64, 0.0f64, 1u16, 0usize);
    let mut tick = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        due += per_step;
        while (sent as f64) < due && inflight < 64 {
            let qos = [QoS::Level0, QoS::Level1, QoS::Level2][(sent % 3) as usize];
            if qos != QoS::Level0 {
                inflight += 1;
            }
            c.send_publish(
                &topics[(sent % 100) as usize],
                qos,
                next_pid,
                payload.clone(),
            )?;
            next_pid = next_pid.checked_add(1).unwrap_or(1);
            sent += 1;
        }
        c.flush().await?;
        tick += step;
        // Acknowledgements until the next step.
        loop {
            while let Some(p) = c.try_next()? {
                match p {
                    Incoming::Puback { .. } | Incoming::Pubcomp { .. } => {
                        inflight = inflight.saturating_sub(1)
                    }
                    Incoming::Pubrec { pid, .. } => c.send_pubrel(pid)?,
                    other => {
                        answer(&mut c, &other)?;
                    }
                }
            }
            c.flush().await?;
            let timeout = async {
                Timer::at(tick).await;
                Ok(false)
            };
            if !future::or(async { c.fill().await.map(|()| true) }, timeout).await? {
                break;
            }
        }
    }
    counters.published.fetch_add(sent, Ordering::Relaxed);
    c.close().await;
    Ok(())
}

/// One churning client's life (see the module header), kind `k % 5`.
async fn life(o: &SoakOpts, k: u64) -> Result<()> {
    let t = o.io_timeout;
    let short = Duration::from_millis(200);
    match k % 5 {
        0 => {
            let (mut c, _, _) = Conn::connect(
                &o.addr,
                Version::V5,
                &ConnectOpts::clean(format!("soak-c-{k}"), 30),
                t,
            )
            .await?;
            let own = format!("soak/churn/{k}");
            c.subscribe(&format!("{own}/#"), QoS::Level1).await?;
            c.send_publish(
                &topic(&format!("{own}/x"))?,
                QoS::Level1,
                2,
                Bytes::from_static(b"own"),
            )?;
            c.flush().await?;
            let (mut acked, mut got) = (false, false);
            let deadline = Instant::now() + t;
            while !(acked && got) {
                if Instant::now() > deadline {
                    return Err(format!("life {k}: own message or its PUBACK missing"));
                }
                match c.next().await? {
                    Incoming::Puback { pid: 2, .. } => acked = true,
                    p => got |= answer(&mut c, &p)?,
                }
                c.flush().await?;
            }
            c.send(&v5::Packet::Unsubscribe(v5::Unsubscribe::new(
                pid(3)?,
                vec![filter(&format!("{own}/#"))?],
            )))?;
            c.flush().await?;
            read_until(&mut c, Instant::now() + Duration::from_millis(20)).await?;
            c.close().await;
        }
        1 => {
            let mut c = Conn::tcp(&o.addr, Version::V311, t).await?;
            let mut connect = v5::Connect::new(Arc::from(format!("soak-w-{k}").as_str()), 30);
            connect.last_will = Some(v5::LastWill::new(
                QoS::Level1,
                topic(&format!("soak/will/{}", k % 10))?,
                Bytes::from_static(b"gone"),
            ));
            c.send(&v5::Packet::Connect(connect))?;
            c.flush().await?;
            match c.next().await? {
                Incoming::Connack {
                    code: v5::ConnectReasonCode::Success,
                    ..
                } => {}
                other => return Err(format!("life {k}: expected CONNACK, got {other:?}")),
            }
            // Dropped without DISCONNECT: the will is published.
            drop(c);
        }
        2 => {
            // k / 5: the lives of one second (at most 100, so 20 of this kind) use distinct ids.
            let opts = ConnectOpts {
                client_id: format!("soak-p-{}", (k / 5) % 20),
                clean: false,
                keep_alive: 30,
                session_expiry: Some(30),
            };
            let (mut c, _, _) = Conn::connect(&o.addr, Version::V5, &opts, t).await?;
            c.subscribe(&format!("soak/data/{}", k % 100), QoS::Level1)
                .await?;
            read_until(&mut c, Instant::now() + short).await?;
            c.close().await;
        }
        3 => {
            let opts = ConnectOpts {
                client_id: format!("soak-x-{k}"),
                clean: false,
                keep_alive: 30,
                session_expiry: Some(5),
            };
            let (mut c, _, _) = Conn::connect(&o.addr, Version::V5, &opts, t).await?;
            c.subscribe("soak/data/1", QoS::Level1).await?;
            c.close().await;
        }
        _ => {
            let (mut c, _, _) = Conn::connect(
                &o.addr,
                Version::V5,
                &ConnectOpts::clean(format!("soak-r-{k}"), 30),
                t,
            )
            .await?;
            let payload = if k % 50 == 4 {
                Bytes::new()
            } else {
                Bytes::from(format!("value {k}"))
            };
            let mut p = v5::Publish::new(
                QosPid::Level1(pid(5)?),
                topic(&format!("soak/retained/{}", k % 50))?,
                payload,
            );
            p.retain = true;
            c.send(&v5::Packet::Publish(p))?;
            c.flush().await?;
            c.subscribe("soak/retained/#", QoS::Level0).await?;
            read_until(&mut c, Instant::now() + Duration::from_millis(50)).await?;
            c.close().await;
        }
    }
    Ok(())
}
