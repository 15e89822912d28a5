//! Uplink: one persistent MQTT session to the upstream (addresses tried in turn, exponential
//! backoff with jitter), draining the outbox in order with a bounded window of QoS 1/2 messages in
//! flight, paced by a messages/s and bytes/s token bucket. A record leaves the outbox only after
//! its PUBACK/PUBCOMP; everything unacknowledged is sent again (DUP, same packet id when the
//! session survived) after a reconnect or a restart.
//!
//! Scheduling: each priority lane is a FIFO by outbox sequence. Free window slots are handed out
//! by a weighted pattern (lane 3: 8 of 15 slots, lane 2: 4, lane 1: 2, lane 0: 1; an empty lane's
//! turn goes to the highest non-empty one), so a long low-priority backlog never delays
//! high-priority live traffic by more than its share, and no lane is starved. Within a lane the
//! order is the capture order, so per-topic order holds (one topic always maps to one rule, so to
//! one lane).
//!
//! Every PUBLISH carries the user property `edge-msg-id` = `<node_id>:<sequence>`; the sequence is
//! per node, strictly increasing in capture order and never reused, so the cloud can drop replays
//! (same id) and restore the order (sort by sequence) even where the cluster reorders.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::io::WriteHalf;

use crate::client::{self, Ack, BoxStream, FrameReader, InPublish, Inbound, OutPublish, Proto};
use crate::config::{ProtocolVersion, SyncConfig, Upstream};
use crate::downlink::{self, LocalBus};
use crate::error::SyncError;
use crate::outbox::{now_ms, DropReason, Outbox, Record, PRIORITIES};
use crate::status::{LinkState, Live};
use crate::topic::CompiledDownlink;

/// User property carrying the stable message id.
pub const MSG_ID_PROPERTY: &str = "edge-msg-id";

pub(crate) type Writer = Arc<smol::lock::Mutex<WriteHalf<BoxStream>>>;

/// Records read per lane refill, and their byte budget.
const REFILL_RECORDS: usize = 256;
const REFILL_BYTES: usize = 1024 * 1024;
/// Acknowledged records not yet removed; past this the uplink stops sending until a flush.
const MAX_PENDING_REMOVALS: usize = 4096;
const FLUSH_EVERY: usize = 512;
const FLUSH_AFTER: Duration = Duration::from_millis(50);
/// Lane chosen for each of 15 consecutive window slots.
const SCHEDULE: [usize; 15] = [3, 2, 3, 1, 3, 2, 3, 0, 3, 2, 3, 1, 3, 2, 3];

/// Shutdown flag shared by the tasks.
#[derive(Default)]
pub(crate) struct Stop {
    flag: AtomicBool,
    ev: event_listener::Event,
}

impl Stop {
    pub fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.ev.notify(usize::MAX);
    }
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    pub async fn wait(&self) {
        loop {
            if self.is_set() {
                return;
            }
            let l = self.ev.listen();
            if self.is_set() {
                return;
            }
            l.await;
        }
    }
}

pub(crate) struct Ctx {
    pub outbox: Arc<Outbox>,
    pub cfg: SyncConfig,
    pub live: Arc<Live>,
    pub bus: Arc<dyn LocalBus>,
    pub stop: Arc<Stop>,
    pub downlinks: Vec<CompiledDownlink>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Token bucket; rate 0 = unlimited. Capacity is one second of rate.
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Bucket {
        Bucket {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }
    fn refill(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
    }
    /// Time to wait before `n` tokens are there (a request above capacity waits for a full bucket).
    fn wait_for(&mut self, n: f64) -> Option<Duration> {
        if self.rate <= 0.0 {
            return None;
        }
        self.refill();
        let need = n.min(self.rate);
        (self.tokens < need).then(|| Duration::from_secs_f64((need - self.tokens) / self.rate))
    }
    fn take(&mut self, n: f64) {
        if self.rate > 0.0 {
            self.tokens -= n.min(self.rate);
        }
    }
}

/// Packet ids of the last session's unacknowledged messages, kept for the next session.
#[derive(Default)]
struct Carry {
    /// (lane, seq) -> (packet id, PUBREC already received)
    entries: HashMap<(u8, u64), (u16, bool)>,
}

struct Inflight {
    lane: u8,
    seq: u64,
    released: bool,
}

#[derive(Default)]
struct Lane {
    q: VecDeque<(u64, Record)>,
    cursor: u64,
    exhausted: bool,
}

enum End {
    Stopped,
}

/// The uplink task: connects, runs sessions, backs off, until shutdown.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    let ups: Vec<Upstream> = ctx.cfg.upstream_list();
    if ups.is_empty() {
        tracing::error!("sync: no usable upstream address");
        return;
    }
    let mut carry = Carry::default();
    let mut sent_upto = ctx.outbox.sent_upto();
    let mut backoff = Duration::from_millis(ctx.cfg.backoff.initial_ms);
    let max_backoff = Duration::from_millis(ctx.cfg.backoff.max_ms);
    let mut idx = 0usize;
    let mut v311: HashSet<usize> = HashSet::new();
    if ctx.cfg.protocol == ProtocolVersion::V311 {
        v311.extend(0..ups.len());
    }
    loop {
        if ctx.stop.is_set() {
            break;
        }
        let i = idx % ups.len();
        let up = &ups[i];
        let proto = if v311.contains(&i) {
            Proto::V311
        } else {
            Proto::V5
        };
        {
            let mut l = ctx.live.link();
            l.state = LinkState::Connecting;
            l.upstream = Some(up.to_string());
        }
        let mut connected = false;
        let res = session(&ctx, up, proto, &mut carry, &mut sent_upto, &mut connected).await;
        {
            let mut l = ctx.live.link();
            l.connected_since_ms = None;
            l.state = LinkState::Disconnected;
        }
        match res {
            Ok(End::Stopped) => break,
            Err(SyncError::Protocol(m)) if m == FALLBACK => {
                tracing::warn!(upstream = %up, "upstream does not speak MQTT 5; retrying with 3.1.1");
                v311.insert(i);
                continue;
            }
            Err(e) => {
                let msg = format!("{up}: {e}");
                match &e {
                    SyncError::ConnectRefused(_) => tracing::error!("sync uplink: {msg}"),
                    _ => tracing::warn!("sync uplink: {msg}"),
                }
                ctx.live.set_error(msg);
            }
        }
        if connected {
            backoff = Duration::from_millis(ctx.cfg.backoff.initial_ms);
        } else {
            idx += 1; // next address
        }
        if ctx.stop.is_set() {
            break;
        }
        // Full jitter in [backoff/2, backoff].
        let ms = backoff.as_millis() as u64;
        let sleep = Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2));
        ctx.live.set_state(LinkState::Backoff);
        tracing::debug!("sync uplink: next attempt in {sleep:?}");
        future::or(
            async {
                smol::Timer::after(sleep).await;
            },
            ctx.stop.wait(),
        )
        .await;
        if !connected {
            backoff = (backoff * 2).min(max_backoff);
        }
    }
    ctx.live.set_state(LinkState::Stopped);
}

const FALLBACK: &str = "fallback to 3.1.1";

struct Session<'a> {
    ctx: &'a Arc<Ctx>,
    proto: Proto,
    writer: Writer,
    window: usize,
    max_qos: u8,
    max_packet: usize,
    inflight: HashMap<u16, Inflight>,
    inflight_keys: HashSet<(u8, u64)>,
    removing: HashSet<(u8, u64)>,
    to_remove: Vec<(u8, u64)>,
    to_drop: Vec<(u8, u64, DropReason)>,
    last_offset: Option<u64>,
    last_flush: Instant,
    lanes: [Lane; PRIORITIES],
    seen_gen: u64,
    tick: usize,
    next_pid: u16,
    carry: &'a mut Carry,
    sent_upto: &'a mut [u64; PRIORITIES],
    msgs: Bucket,
    bytes: Bucket,
    last_tx: Instant,
}

async fn session(
    ctx: &Arc<Ctx>,
    up: &Upstream,
    proto: Proto,
    carry: &mut Carry,
    sent_upto: &mut [u64; PRIORITIES],
    connected: &mut bool,
) -> Result<End, SyncError> {
    let stream = future::or(
        async { client::dial(up, &ctx.cfg, ctx.tls.as_ref()).await.map(Some) },
        async {
            ctx.stop.wait().await;
            Ok(None)
        },
    )
    .await?;
    let Some(stream) = stream else {
        return Ok(End::Stopped);
    };
    let (rd, wr) = futures_lite::io::split(stream);
    let writer: Writer = Arc::new(smol::lock::Mutex::new(wr));
    let mut reader = FrameReader::new(rd);
    let keep_alive = ctx.cfg.keep_alive_secs;
    {
        let c = client::encode_connect(proto, &ctx.cfg, keep_alive)?;
        let mut w = writer.lock().await;
        client::write_packet(&mut *w, &c).await?;
    }
    let d = Duration::from_secs(ctx.cfg.connect_timeout_secs);
    let frame = future::or(reader.next(), async {
        smol::Timer::after(d).await;
        Err(SyncError::Protocol(
            "no CONNACK within the connect timeout".into(),
        ))
    })
    .await?;
    let ack = match client::decode(proto, &frame)? {
        Inbound::ConnAck(a) => a,
        other => {
            return Err(SyncError::Protocol(format!(
                "expected CONNACK, got {other:?}"
            )))
        }
    };
    if ack.wants_older_protocol || (proto == Proto::V5 && ack.code == 0x84) {
        return Err(SyncError::Protocol(FALLBACK.into()));
    }
    if ack.code != 0 {
        let mut text = client::connect_reason_text(proto, ack.code);
        if let Some(r) = &ack.reason {
            text.push_str(&format!(": {r}"));
        }
        return Err(SyncError::ConnectRefused(text));
    }
    *connected = true;
    let keep_alive = ack.server_keep_alive.unwrap_or(keep_alive).max(1);
    {
        let mut l = ctx.live.link();
        l.state = LinkState::Connected;
        l.protocol = Some(proto.to_string());
        l.connected_since_ms = Some(now_ms());
        l.last_error = None;
    }
    tracing::info!(
        upstream = %up,
        protocol = %proto,
        session_present = ack.session_present,
        "sync uplink connected"
    );
    if let Some(granted) = ack
        .session_expiry
        .filter(|g| *g < ctx.cfg.session_expiry_secs)
    {
        // RobustMQ caps the expiry (1800 s): after a longer outage the session is gone and
        // CONNACK says so; the downlink is subscribed again at every connect in any case.
        tracing::info!(
            upstream = %up,
            asked = ctx.cfg.session_expiry_secs,
            granted,
            "upstream granted a shorter session expiry"
        );
    }
    if !ack.session_present {
        carry.entries.clear();
    }
    if carry.entries.len() > 4 * ctx.cfg.max_inflight as usize {
        carry.entries.clear();
    }

    // Reader: acks to the uplink loop, cloud publishes to the downlink task, PUBREL answered here.
    let (ack_tx, ack_rx) =
        async_channel::bounded::<Inbound>(2 * ctx.cfg.max_inflight as usize + 16);
    let (down_tx, down_rx) = async_channel::bounded::<InPublish>(64);
    let last_rx = Arc::new(AtomicU64::new(now_ms()));
    let reader_error: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let reader_task = {
        let writer = writer.clone();
        let last_rx = last_rx.clone();
        let reader_error = reader_error.clone();
        smol::spawn(async move {
            let res: Result<(), SyncError> = async {
                loop {
                    let frame = reader.next().await?;
                    last_rx.store(now_ms(), Ordering::Relaxed);
                    match client::decode(proto, &frame)? {
                        Inbound::Publish(p) => {
                            if down_tx.send(p).await.is_err() {
                                return Ok(());
                            }
                        }
                        Inbound::PubRel { pid } => {
                            let b = client::encode_ack(proto, Ack::PubComp, pid)?;
                            let mut w = writer.lock().await;
                            client::write_packet(&mut *w, &b).await?;
                        }
                        Inbound::PingResp => {}
                        other => {
                            if ack_tx.send(other).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            .await;
            if let Err(e) = res {
                *reader_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
        })
    };
    let down_task = smol::spawn(downlink::run(ctx.clone(), down_rx, writer.clone(), proto));

    let mut s = Session {
        ctx,
        proto,
        writer,
        window: (ctx.cfg.max_inflight as usize)
            .min(ack.receive_max.unwrap_or(u16::MAX) as usize)
            .max(1),
        max_qos: ack.max_qos.unwrap_or(2),
        max_packet: ack.max_packet_size.map_or(usize::MAX, |m| m as usize),
        inflight: HashMap::new(),
        inflight_keys: HashSet::new(),
        removing: HashSet::new(),
        to_remove: Vec::new(),
        to_drop: Vec::new(),
        last_offset: None,
        last_flush: Instant::now(),
        lanes: Default::default(),
        seen_gen: ctx.outbox.generation(),
        tick: 0,
        next_pid: 1,
        carry,
        sent_upto,
        msgs: Bucket::new(ctx.cfg.max_messages_per_sec as f64),
        bytes: Bucket::new(ctx.cfg.max_bytes_per_sec as f64),
        last_tx: Instant::now(),
    };
    let res = s.run(&ack_rx, keep_alive, &last_rx, &reader_error).await;
    // Whatever happened: keep acknowledged removals and the unacknowledged packet ids.
    let flushed = s.flush().await;
    for (pid, f) in s.inflight.drain() {
        s.carry.entries.insert((f.lane, f.seq), (pid, f.released));
    }
    if matches!(res, Ok(End::Stopped)) {
        let mut w = s.writer.lock().await;
        let _ = client::write_packet(&mut *w, &client::encode_disconnect(proto)).await;
        let _ = futures_lite::io::AsyncWriteExt::close(&mut *w).await;
    }
    drop(reader_task);
    drop(down_task);
    flushed?;
    res
}

impl Session<'_> {
    async fn run(
        &mut self,
        ack_rx: &async_channel::Receiver<Inbound>,
        keep_alive: u16,
        last_rx: &AtomicU64,
        reader_error: &std::sync::Mutex<Option<String>>,
    ) -> Result<End, SyncError> {
        self.resume().await?;
        self.subscribe().await?;
        let ka = Duration::from_secs(keep_alive as u64);
        loop {
            if self.ctx.stop.is_set() {
                return Ok(End::Stopped);
            }
            loop {
                match ack_rx.try_recv() {
                    Ok(ev) => self.on_inbound(ev).await?,
                    Err(async_channel::TryRecvError::Empty) => break,
                    Err(async_channel::TryRecvError::Closed) => {
                        let e = reader_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .take()
                            .unwrap_or_else(|| "upstream connection closed".into());
                        return Err(SyncError::Protocol(e));
                    }
                }
            }
            // Keep alive: ping when idle, give up when the upstream is silent for 1.5 periods.
            let silent = now_ms().saturating_sub(last_rx.load(Ordering::Relaxed));
            if silent > ka.as_millis() as u64 * 3 / 2 + 1000 {
                return Err(SyncError::Protocol(format!(
                    "keep alive timeout: nothing from the upstream for {} ms",
                    silent
                )));
            }
            if self.last_tx.elapsed() >= ka {
                self.write(&client::encode_pingreq(self.proto)).await?;
            }
            if self.to_remove.len() + self.to_drop.len() >= FLUSH_EVERY
                || (!(self.to_remove.is_empty() && self.to_drop.is_empty())
                    && self.last_flush.elapsed() >= FLUSH_AFTER)
            {
                self.flush().await?;
            }
            let g = self.ctx.outbox.generation();
            if g != self.seen_gen {
                self.seen_gen = g;
                for l in &mut self.lanes {
                    l.exhausted = false;
                }
            }
            let mut pace: Option<Duration> = None;
            if self.inflight.len() < self.window && self.removing.len() < MAX_PENDING_REMOVALS {
                if let Some(lane) = self.pick().await? {
                    match self.try_send(lane).await? {
                        Sent::Yes | Sent::Dropped => continue,
                        Sent::Wait(d) => pace = Some(d),
                    }
                }
            }
            // Nothing to do right now: wait for an ack, new records, a tick or shutdown.
            let listener = self.ctx.outbox.listen();
            let new_data = self.ctx.outbox.generation() != self.seen_gen;
            if new_data && pace.is_none() {
                continue;
            }
            let pending_flush = !(self.to_remove.is_empty() && self.to_drop.is_empty());
            let tick = pace.unwrap_or(if pending_flush {
                FLUSH_AFTER
            } else {
                Duration::from_secs(1)
            });
            let ev = future::or(
                future::or(async { Some(ack_rx.recv().await) }, async {
                    if pace.is_none() {
                        listener.await;
                    } else {
                        future::pending::<()>().await;
                    }
                    None
                }),
                future::or(
                    async {
                        smol::Timer::after(tick).await;
                        None
                    },
                    async {
                        self.ctx.stop.wait().await;
                        None
                    },
                ),
            )
            .await;
            match ev {
                Some(Ok(ev)) => self.on_inbound(ev).await?,
                Some(Err(_)) => {
                    let e = reader_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take()
                        .unwrap_or_else(|| "upstream connection closed".into());
                    return Err(SyncError::Protocol(e));
                }
                None => {}
            }
        }
    }

    async fn write(&mut self, b: &[u8]) -> Result<(), SyncError> {
        let mut w = self.writer.lock().await;
        client::write_packet(&mut *w, b).await?;
        self.last_tx = Instant::now();
        Ok(())
    }

    /// Session resumed: resend PUBREL for QoS 2 messages whose PUBREC came before the break.
    async fn resume(&mut self) -> Result<(), SyncError> {
        let released: Vec<((u8, u64), u16)> = self
            .carry
            .entries
            .iter()
            .filter(|(_, (_, rel))| *rel)
            .map(|(k, (pid, _))| (*k, *pid))
            .collect();
        for ((lane, seq), pid) in released {
            self.carry.entries.remove(&(lane, seq));
            self.inflight.insert(
                pid,
                Inflight {
                    lane,
                    seq,
                    released: true,
                },
            );
            self.inflight_keys.insert((lane, seq));
            let b = client::encode_ack(self.proto, Ack::PubRel, pid)?;
            self.write(&b).await?;
        }
        Ok(())
    }

    async fn subscribe(&mut self) -> Result<(), SyncError> {
        if self.ctx.downlinks.is_empty() {
            return Ok(());
        }
        let filters: Vec<(String, u8)> = self
            .ctx
            .downlinks
            .iter()
            .map(|d| (d.filter.clone(), d.qos))
            .collect();
        let pid = self.alloc_pid();
        let b = client::encode_subscribe(self.proto, pid, &filters)?;
        self.write(&b).await
    }

    fn alloc_pid(&mut self) -> u16 {
        loop {
            let p = self.next_pid;
            self.next_pid = if self.next_pid == u16::MAX {
                1
            } else {
                self.next_pid + 1
            };
            if !self.inflight.contains_key(&p)
                && !self.carry.entries.values().any(|(cp, _)| *cp == p)
            {
                return p;
            }
        }
    }

    /// Chooses the lane of the next record (refilling lanes from the outbox as needed).
    async fn pick(&mut self) -> Result<Option<usize>, SyncError> {
        for l in 0..PRIORITIES {
            if self.lanes[l].q.is_empty() && !self.lanes[l].exhausted {
                self.refill(l).await?;
            }
        }
        let avail = |s: &Self, l: usize| !s.lanes[l].q.is_empty();
        let want = SCHEDULE[self.tick % SCHEDULE.len()];
        if avail(self, want) {
            return Ok(Some(want));
        }
        Ok((0..PRIORITIES).rev().find(|&l| avail(self, l)))
    }

    async fn refill(&mut self, l: usize) -> Result<(), SyncError> {
        let ob = self.ctx.outbox.clone();
        let after = self.lanes[l].cursor;
        let batch =
            smol::unblock(move || ob.read_lane(l, after, REFILL_RECORDS, REFILL_BYTES)).await?;
        if batch.is_empty() {
            self.lanes[l].exhausted = true;
            return Ok(());
        }
        for item in batch {
            match item {
                Ok((seq, rec)) => {
                    self.lanes[l].cursor = seq;
                    let key = (l as u8, seq);
                    if self.inflight_keys.contains(&key) || self.removing.contains(&key) {
                        continue;
                    }
                    self.lanes[l].q.push_back((seq, rec));
                }
                Err(seq) => {
                    self.lanes[l].cursor = seq;
                    self.to_drop.push((l as u8, seq, DropReason::Corrupt));
                }
            }
        }
        Ok(())
    }

    async fn try_send(&mut self, l: usize) -> Result<Sent, SyncError> {
        let Some((seq, rec)) = self.lanes[l].q.pop_front() else {
            return Ok(Sent::Dropped);
        };
        let key = (l as u8, seq);
        let now = now_ms();
        if rec.expires_at_ms != 0 && rec.expires_at_ms <= now {
            self.to_drop.push((l as u8, seq, DropReason::Ttl));
            self.removing.insert(key);
            return Ok(Sent::Dropped);
        }
        let reserved = self.carry.entries.get(&key).map(|(p, _)| *p);
        let dup = reserved.is_some() || seq <= self.sent_upto[l];
        let mut props = rec.user_properties.clone();
        props.push((
            MSG_ID_PROPERTY.to_string(),
            format!("{}:{}", self.ctx.cfg.node_id, seq),
        ));
        let qos = rec.qos.clamp(1, self.max_qos.max(1));
        let expiry = (rec.expires_at_ms != 0).then(|| {
            ((rec.expires_at_ms - now) / 1000)
                .max(1)
                .min(u32::MAX as u64) as u32
        });
        let pid = reserved.unwrap_or(0);
        let mut out = OutPublish {
            topic: &rec.topic,
            payload: &rec.payload,
            qos,
            pid: if pid == 0 { 1 } else { pid },
            dup,
            retain: rec.retain,
            user_properties: &props,
            content_type: rec.content_type.as_deref(),
            message_expiry_secs: expiry,
        };
        // Size and validity first (the packet id does not change the length).
        let probe = client::encode_publish(self.proto, &out);
        let len = match probe {
            Ok(b) if b.len() <= self.max_packet => b.len(),
            Ok(b) => {
                tracing::error!(seq, topic = %rec.topic, size = b.len(), max = self.max_packet,
                    "record larger than the upstream's maximum packet size: dropped");
                self.to_drop.push((l as u8, seq, DropReason::Corrupt));
                self.removing.insert(key);
                return Ok(Sent::Dropped);
            }
            Err(e) => {
                tracing::error!(seq, topic = %rec.topic, "record cannot be sent ({e}): dropped");
                self.to_drop.push((l as u8, seq, DropReason::Corrupt));
                self.removing.insert(key);
                return Ok(Sent::Dropped);
            }
        };
        let wait = match (self.msgs.wait_for(1.0), self.bytes.wait_for(len as f64)) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or_default().max(b.unwrap_or_default())),
        };
        if let Some(d) = wait {
            self.lanes[l].q.push_front((seq, rec));
            return Ok(Sent::Wait(d.max(Duration::from_millis(1))));
        }
        let pid = if pid == 0 {
            self.alloc_pid()
        } else {
            self.carry.entries.remove(&key);
            pid
        };
        out.pid = pid;
        let bytes = client::encode_publish(self.proto, &out)?;
        self.msgs.take(1.0);
        self.bytes.take(len as f64);
        drop(rec);
        self.write(&bytes).await?;
        self.inflight.insert(
            pid,
            Inflight {
                lane: l as u8,
                seq,
                released: false,
            },
        );
        self.inflight_keys.insert(key);
        self.sent_upto[l] = self.sent_upto[l].max(seq);
        self.tick = self.tick.wrapping_add(1);
        self.ctx.live.sent.fetch_add(1, Ordering::Relaxed);
        if dup {
            self.ctx.live.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Sent::Yes)
    }

    fn acked(&mut self, pid: u16) {
        if let Some(f) = self.inflight.remove(&pid) {
            self.inflight_keys.remove(&(f.lane, f.seq));
            self.removing.insert((f.lane, f.seq));
            self.to_remove.push((f.lane, f.seq));
        } else {
            tracing::debug!(pid, "ack for an unknown packet id ignored");
        }
    }

    /// Error reason in PUBACK/PUBREC: permanent ones drop the record, others end the session so
    /// the record is retried after the backoff.
    fn refused(&mut self, pid: u16, code: u8) -> Result<(), SyncError> {
        let Some(f) = self.inflight.remove(&pid) else {
            return Ok(());
        };
        self.inflight_keys.remove(&(f.lane, f.seq));
        match code {
            0x90 | 0x95 | 0x99 => {
                tracing::error!(
                    seq = f.seq,
                    code,
                    "upstream refused a message permanently: dropped"
                );
                self.removing.insert((f.lane, f.seq));
                self.to_drop.push((f.lane, f.seq, DropReason::Corrupt));
                Ok(())
            }
            _ => Err(SyncError::Protocol(format!(
                "upstream refused message {}:{} with reason code {code:#04x}; will retry",
                self.ctx.cfg.node_id, f.seq
            ))),
        }
    }

    async fn on_inbound(&mut self, ev: Inbound) -> Result<(), SyncError> {
        match ev {
            Inbound::PubAck { pid, code, offset } => {
                if offset.is_some() {
                    self.last_offset = offset;
                }
                if code >= 0x80 {
                    return self.refused(pid, code);
                }
                self.acked(pid);
            }
            Inbound::PubRec { pid, code, offset } => {
                if offset.is_some() {
                    self.last_offset = offset;
                }
                if code >= 0x80 {
                    return self.refused(pid, code);
                }
                if let Some(f) = self.inflight.get_mut(&pid) {
                    f.released = true;
                }
                let b = client::encode_ack(self.proto, Ack::PubRel, pid)?;
                self.write(&b).await?;
            }
            Inbound::PubComp { pid, .. } => self.acked(pid),
            Inbound::SubAck { codes } => {
                for (i, c) in codes.iter().enumerate() {
                    if *c >= 0x80 {
                        let f = self
                            .ctx
                            .downlinks
                            .get(i)
                            .map(|d| d.filter.as_str())
                            .unwrap_or("?");
                        tracing::error!(
                            filter = f,
                            code = c,
                            "upstream refused a downlink subscription"
                        );
                        self.ctx
                            .live
                            .set_error(format!("downlink subscription `{f}` refused ({c:#04x})"));
                    }
                }
            }
            Inbound::Disconnect { code, reason } => {
                return Err(SyncError::Protocol(format!(
                    "upstream sent DISCONNECT {code:#04x}{}",
                    reason.map(|r| format!(": {r}")).unwrap_or_default()
                )));
            }
            Inbound::ConnAck(_) => {
                return Err(SyncError::Protocol("unexpected second CONNACK".into()));
            }
            Inbound::Other(what) => tracing::debug!("ignored {what} from upstream"),
            Inbound::Publish(_) | Inbound::PubRel { .. } | Inbound::PingResp => {}
        }
        Ok(())
    }

    /// Removes acknowledged and dropped records in one short write transaction.
    async fn flush(&mut self) -> Result<(), SyncError> {
        self.last_flush = Instant::now();
        if self.to_remove.is_empty() && self.to_drop.is_empty() && self.last_offset.is_none() {
            return Ok(());
        }
        let acked = std::mem::take(&mut self.to_remove);
        let dropped = std::mem::take(&mut self.to_drop);
        let offset = self.last_offset.take();
        let sent = *self.sent_upto;
        let ob = self.ctx.outbox.clone();
        let keys: Vec<(u8, u64)> = acked
            .iter()
            .copied()
            .chain(dropped.iter().map(|d| (d.0, d.1)))
            .collect();
        smol::unblock(move || ob.remove(&acked, &dropped, offset, Some(sent))).await?;
        for k in keys {
            self.removing.remove(&k);
        }
        Ok(())
    }
}

enum Sent {
    Yes,
    Dropped,
    Wait(Duration),
}
