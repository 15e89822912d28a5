//! The drain loop of one connected session: records go from the priority lanes through the pacer
//! into the in-flight window; acknowledgements move them to the removal batch. A record is in at
//! most one of: a lane queue, the window, the pending removals (lane reads skip the other two).
//! Records of rules whose schedule gate is closed are skipped by lane reads and stay in the
//! outbox; when a gate opens or closes the lanes are read again from their start, so every rule's
//! records still go in capture order.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::acks;
use super::outgoing::Outgoing;
use super::pacer::Pacer;
use super::publish;
use super::reader::Reader;
use super::removal::{Removals, FLUSH_AFTER};
use super::scheduler::Lanes;
use super::window::{Carry, Key, Window};
use crate::client::{self, AckCode, ConnAck, Inbound, Proto};
use crate::ctx::{Ctx, Writer};
use crate::error::SyncError;
use crate::outbox::{now_ms, DropReason, PRIORITIES};

/// Records read per lane refill, and their byte budget.
const REFILL_RECORDS: usize = 256;
const REFILL_BYTES: usize = 1024 * 1024;
/// Held (gated) records skipped per lane read, without decoding them.
const REFILL_SKIP: usize = 16_384;
/// How often the schedule gates are looked at.
const GATE_CHECK: Duration = Duration::from_millis(100);

/// Why a drain loop ended without an error.
pub(super) enum Ended {
    Stopped,
    /// The session's upstream left its schedule window.
    UpstreamWindowClosed,
}

enum Sent {
    Yes,
    Dropped,
    Wait(Duration),
}

pub(super) struct Drain<'a> {
    ctx: &'a Arc<Ctx>,
    out: Outgoing,
    /// From the CONNACK.
    max_qos: u8,
    max_packet: usize,
    lanes: Lanes,
    /// Outbox generation when the lanes were last marked readable.
    seen_gen: u64,
    window: Window<'a>,
    removals: Removals,
    pacer: Pacer,
    /// Highest sequence ever sent per lane: anything at or below it goes out as DUP.
    sent_upto: &'a mut [u64; PRIORITIES],
    /// Index of the session's upstream in `sync.upstreams`.
    upstream: usize,
    /// Filters of the rules whose gate is closed now (their records are skipped).
    closed: Arc<HashSet<String>>,
    /// When the gates were last looked at.
    gates_at: Option<Instant>,
    /// Queued records of gated rules: below `sent_upto` only because they waited, so not DUP.
    gated: HashSet<(u8, u64)>,
}

impl<'a> Drain<'a> {
    pub fn new(
        ctx: &'a Arc<Ctx>,
        upstream: usize,
        proto: Proto,
        writer: Writer,
        ack: &ConnAck,
        carry: &'a mut Carry,
        sent_upto: &'a mut [u64; PRIORITIES],
    ) -> Self {
        let capacity = (ctx.cfg.max_inflight as usize)
            .min(ack.receive_max.unwrap_or(u16::MAX) as usize)
            .max(1);
        let now = Instant::now();
        Drain {
            ctx,
            out: Outgoing::new(proto, writer),
            max_qos: ack.max_qos.unwrap_or(2),
            max_packet: ack.max_packet_size.map_or(usize::MAX, |m| m as usize),
            lanes: Lanes::default(),
            seen_gen: ctx.outbox.generation(),
            window: Window::new(capacity, carry),
            removals: Removals::new(now),
            pacer: Pacer::new(
                ctx.cfg.max_messages_per_sec.into(),
                ctx.cfg.max_bytes_per_sec,
                now,
            ),
            sent_upto,
            upstream,
            closed: Arc::default(),
            gates_at: None,
            gated: HashSet::new(),
        }
    }

    /// Looks at the schedules (every `GATE_CHECK`): false when the session's upstream left its
    /// window. A change of the closed rules resets the lanes, so they are read again from the
    /// start: records held so far go now (in order), queued ones of a closed rule wait.
    fn check_gates(&mut self) -> bool {
        let now = Instant::now();
        if self
            .gates_at
            .is_some_and(|t| now.duration_since(t) < GATE_CHECK)
        {
            return true;
        }
        self.gates_at = Some(now);
        let gates = &self.ctx.gates;
        let at = self.ctx.clock.now_ms();
        if !gates.upstream_open(self.upstream, at) {
            return false;
        }
        if gates.any_rule_gated() {
            let closed = gates.closed_filters(at, Some(self.upstream));
            if closed != *self.closed {
                tracing::info!(closed = ?closed, "sync uplink: schedule gates changed");
                self.closed = Arc::new(closed);
                self.lanes.reset();
                self.gated.clear();
            }
        }
        true
    }

    /// Runs until shutdown (`Ok`) or until the connection fails (`Err`).
    pub async fn run(&mut self, reader: &Reader, keep_alive: u16) -> Result<Ended, SyncError> {
        self.resume().await?;
        self.subscribe().await?;
        let ka = Duration::from_secs(keep_alive as u64);
        loop {
            if self.ctx.stop.is_set() {
                return Ok(Ended::Stopped);
            }
            if !self.check_gates() {
                return Ok(Ended::UpstreamWindowClosed);
            }
            while let Some(ev) = reader.try_next()? {
                self.on_inbound(ev).await?;
            }
            // Keep alive: ping when idle, give up when the upstream is silent for 1.5 periods.
            let silent = reader.silent_ms();
            if silent > ka.as_millis() as u64 * 3 / 2 + 1000 {
                return Err(SyncError::Protocol(format!(
                    "keep alive timeout: nothing from the upstream for {} ms",
                    silent
                )));
            }
            self.out.ping_if_idle(ka).await?;
            if self.removals.is_due() {
                self.flush().await?;
            }
            let g = self.ctx.outbox.generation();
            if g != self.seen_gen {
                self.seen_gen = g;
                self.lanes.new_data();
            }
            let mut pace: Option<Duration> = None;
            if self.window.has_room() && !self.removals.is_full() {
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
            let idle = if self.ctx.gates.is_empty() {
                Duration::from_secs(1)
            } else {
                GATE_CHECK
            };
            let tick = pace.unwrap_or(if self.removals.has_queued() {
                FLUSH_AFTER.min(idle)
            } else {
                idle
            });
            let wake = pace.is_none().then_some(listener);
            if let Some(ev) = reader.wait(wake, tick, &self.ctx.stop).await? {
                self.on_inbound(ev).await?;
            }
        }
    }

    /// End of the session, whatever happened: acknowledged removals are written and the
    /// unacknowledged packet ids carried over; at shutdown DISCONNECT is sent too. Returns the
    /// result of the last flush.
    pub async fn finish(&mut self, stopped: bool) -> Result<(), SyncError> {
        let flushed = self.flush().await;
        self.window.close();
        if stopped {
            self.out.disconnect().await;
        }
        flushed
    }

    /// Session resumed: resend PUBREL for QoS 2 messages whose PUBREC came before the break.
    async fn resume(&mut self) -> Result<(), SyncError> {
        for pid in self.window.resume() {
            self.out.pubrel(pid).await?;
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
        let pid = self.window.alloc_pid();
        let b = client::encode_subscribe(self.out.proto(), pid, &filters)?;
        self.out.write(&b).await
    }

    /// Chooses the lane of the next record (refilling lanes from the outbox as needed).
    async fn pick(&mut self) -> Result<Option<usize>, SyncError> {
        for l in 0..PRIORITIES {
            if self.lanes.wants_refill(l) {
                self.refill(l).await?;
            }
        }
        Ok(self.lanes.pick())
    }

    async fn refill(&mut self, l: usize) -> Result<(), SyncError> {
        let batch = loop {
            let ob = self.ctx.outbox.clone();
            let after = self.lanes.cursor(l);
            let closed = self.closed.clone();
            let read = smol::unblock(move || {
                ob.read_lane_open(l, after, REFILL_RECORDS, REFILL_BYTES, &closed, REFILL_SKIP)
            })
            .await?;
            if read.last == 0 {
                self.lanes.exhausted(l);
                return Ok(());
            }
            self.lanes.read_upto(l, read.last);
            if !read.items.is_empty() {
                break read;
            }
            // Only held records so far: read on past them.
        };
        for item in batch.items {
            match item {
                Ok((seq, rec)) => {
                    self.lanes.read_upto(l, seq);
                    let key = (l as u8, seq);
                    if self.window.holds(key) || self.removals.is_pending(key) {
                        continue;
                    }
                    if batch.gated.contains(&seq) {
                        self.gated.insert(key);
                    }
                    self.lanes.push(l, seq, rec);
                }
                Err(seq) => {
                    self.lanes.read_upto(l, seq);
                    self.removals
                        .dropped_unread((l as u8, seq), DropReason::Corrupt);
                }
            }
        }
        Ok(())
    }

    async fn try_send(&mut self, l: usize) -> Result<Sent, SyncError> {
        let Some((seq, rec)) = self.lanes.pop(l) else {
            return Ok(Sent::Dropped);
        };
        let key: Key = (l as u8, seq);
        // A gated record below the mark waited for its gate; only a carried one was sent before.
        let waited = self.gated.remove(&key);
        let now = now_ms();
        if publish::expired(&rec, now) {
            self.removals.dropped(key, DropReason::Ttl);
            return Ok(Sent::Dropped);
        }
        let reserved = self.window.reserved(key);
        let dup = reserved.is_some() || (seq <= self.sent_upto[l] && !waited);
        let props = publish::properties(&rec, &self.ctx.cfg.node_id, seq);
        let mut out = publish::out(&rec, &props, self.max_qos, reserved.unwrap_or(0), dup, now);
        // Size and validity first (the packet id does not change the length).
        let len = match client::encode_publish(self.out.proto(), &out) {
            Ok(b) if b.len() <= self.max_packet => b.len(),
            Ok(b) => {
                tracing::error!(seq, topic = %rec.topic, size = b.len(), max = self.max_packet,
                    "record larger than the upstream's maximum packet size: dropped");
                self.removals.dropped(key, DropReason::Corrupt);
                return Ok(Sent::Dropped);
            }
            Err(e) => {
                tracing::error!(seq, topic = %rec.topic, "record cannot be sent ({e}): dropped");
                self.removals.dropped(key, DropReason::Corrupt);
                return Ok(Sent::Dropped);
            }
        };
        if let Some(d) = self.pacer.wait_for(len) {
            if waited {
                self.gated.insert(key);
            }
            self.lanes.unpop(l, seq, rec);
            return Ok(Sent::Wait(d));
        }
        out.pid = self.window.assign(key, reserved);
        let bytes = client::encode_publish(self.out.proto(), &out)?;
        self.pacer.take(len);
        let pid = out.pid;
        drop(rec);
        self.out.write(&bytes).await?;
        self.window.sent(pid, key);
        self.sent_upto[l] = self.sent_upto[l].max(seq);
        self.lanes.advance();
        self.ctx.live.sent.fetch_add(1, Ordering::Relaxed);
        if dup {
            self.ctx.live.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Sent::Yes)
    }

    async fn on_inbound(&mut self, ev: Inbound) -> Result<(), SyncError> {
        match ev {
            Inbound::PubAck { pid, code, offset } => {
                self.removals.offset(offset);
                if code.is_failure() {
                    return self.refused(pid, code);
                }
                acks::acked(&mut self.window, &mut self.removals, pid);
            }
            Inbound::PubRec { pid, code, offset } => {
                self.removals.offset(offset);
                if code.is_failure() {
                    return self.refused(pid, code.cast());
                }
                self.window.released(pid);
                self.out.pubrel(pid).await?;
            }
            Inbound::PubComp { pid, .. } => acks::acked(&mut self.window, &mut self.removals, pid),
            Inbound::SubAck { codes } => acks::suback(&self.ctx.downlinks, &self.ctx.live, &codes),
            Inbound::Disconnect { code, reason } => {
                return Err(SyncError::Protocol(format!(
                    "upstream sent DISCONNECT {code}{}",
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

    fn refused(&mut self, pid: u16, code: AckCode) -> Result<(), SyncError> {
        let node_id = &self.ctx.cfg.node_id;
        acks::refused(&mut self.window, &mut self.removals, pid, code, node_id)
    }

    /// Removes acknowledged and dropped records in one short write transaction.
    async fn flush(&mut self) -> Result<(), SyncError> {
        let Some(batch) = self.removals.take(Instant::now()) else {
            return Ok(());
        };
        let keys = batch.keys();
        let sent = *self.sent_upto;
        let ob = self.ctx.outbox.clone();
        smol::unblock(move || {
            ob.remove(&batch.acked, &batch.dropped, batch.last_offset, Some(sent))
        })
        .await?;
        self.removals.committed(&keys);
        Ok(())
    }
}
