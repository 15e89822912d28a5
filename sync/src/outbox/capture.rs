//! The write side of the outbox: `capture` inside the broker's transaction (forward rule, edge
//! processing, window update, append with the full policy), `committed` after it, and
//! `flush_windows` emitting ended aggregation windows in a transaction of its own.

use std::sync::atomic::Ordering;

use redb::WriteTransaction;

use super::{
    held, lock, read_meta_w, refresh_oldest, write_meta, LaneMeta, LocalMessage, Meta, Outbox,
    Pending, Record, DEADBAND_TOPICS, DOWNLINK_MARKER, LANES, PRIORITIES,
};
use crate::config::FullPolicy;
use crate::error::SyncError;
use crate::rules::{batch, latest, window, Delta, Verdict};
use crate::topic::CompiledForward;

/// Size counted in the per-rule byte figures: topic + payload.
fn msg_size(topic: &str, payload: &[u8]) -> u64 {
    (topic.len() + payload.len()) as u64
}

impl Outbox {
    /// Inside the broker's write transaction: applies the matching forward rule (filter,
    /// deadband, window) and appends what is left to its priority lane, evicting under
    /// `drop_oldest` what does not fit, all in the same transaction. No commit, no fsync.
    pub fn capture(&self, txn: &WriteTransaction, msg: &LocalMessage<'_>) -> Result<(), SyncError> {
        if msg
            .user_properties
            .iter()
            .any(|(k, _)| k == DOWNLINK_MARKER)
        {
            return Ok(()); // came down from the cloud: never sent back up
        }
        if msg.qos == 0 && !self.capture_qos0 {
            return Ok(());
        }
        let Some((ri, rule)) = self.rule_for(msg.topic) else {
            return Ok(());
        };
        let mut d = Delta {
            messages_in: 1,
            bytes_in: msg_size(msg.topic, msg.payload),
            ..Delta::default()
        };
        let proc = &rule.processing;
        if proc.is_active() {
            let mut staged = lock(&self.staged);
            let last = match proc.deadband {
                None => None,
                Some(_) => match staged.deadband.get(msg.topic) {
                    Some(v) => Some(*v),
                    None => lock(&self.deadband).get(msg.topic).copied(),
                },
            };
            let (verdict, remember) = proc.decide(msg.payload, msg.received_at_ms, last);
            match verdict {
                Verdict::Filtered => d.dropped_filter = 1,
                Verdict::Deadband => d.dropped_deadband = 1,
                Verdict::Keep => {
                    if let Some(r) = remember {
                        staged.deadband.insert(msg.topic.to_string(), r);
                    }
                }
            }
            if verdict != Verdict::Keep {
                staged.count(ri, &d);
                return Ok(());
            }
        }

        let mut pending = lock(&self.pending);
        if pending.is_none() {
            let base = read_meta_w(txn)?.unwrap_or_else(Meta::fresh);
            let folded = self.c.rejected_unpersisted.swap(0, Ordering::Relaxed);
            let mut cur = base.clone();
            cur.rejected += folded;
            *pending = Some(Pending {
                base,
                cur,
                rejected_folded: folded,
            });
        }
        let Some(p) = pending.as_mut() else {
            return Err(SyncError::Invariant("pending state vanished"));
        };

        if let Some(w) = &proc.window {
            // The reading's contribution is stored in this very transaction.
            let start = w.start_of(msg.received_at_ms);
            let key = w.key(ri, msg.topic);
            let mut st = match window::load(txn, &key)? {
                Some(st) if st.rule == ri as u32 && start < st.end_ms => st,
                old => {
                    if let Some(old) = old.filter(|o| o.rule == ri as u32 && o.messages > 0) {
                        let rec = self.window_record(rule, window::key_topic(&key), &old);
                        self.append(txn, &mut p.cur, rule, rec, &mut d)?;
                    }
                    self.next_window_due
                        .fetch_min(start + w.len_ms, Ordering::Relaxed);
                    window::WindowState {
                        rule: ri as u32,
                        start_ms: start,
                        end_ms: start + w.len_ms,
                        ..Default::default()
                    }
                }
            };
            w.add(&mut st, msg.payload);
            window::store(txn, &key, &st)?;
            lock(&self.staged).count(ri, &d);
            return Ok(());
        }

        if let Some(b) = &proc.batch {
            // Stored with the capture; emitted when full here, or at `max_ms` by `flush_due`.
            let item = batch::BatchItem {
                topic: rule.map.apply(msg.topic),
                payload: msg.payload.to_vec(),
                received_at_ms: msg.received_at_ms,
                user_properties: msg.user_properties.to_vec(),
            };
            let head = batch::add(txn, ri as u32, &item)?;
            if head.count == 1 {
                self.next_window_due
                    .fetch_min(head.first_ms.saturating_add(b.max_ms), Ordering::Relaxed);
            }
            if head.count >= b.max_messages {
                let items = batch::take(txn, ri as u32)?;
                let rec = self.batch_record(rule, &items)?;
                self.append(txn, &mut p.cur, rule, rec, &mut d)?;
            }
            lock(&self.staged).count(ri, &d);
            return Ok(());
        }

        let record = Record {
            topic: rule.map.apply(msg.topic),
            payload: msg.payload.to_vec(),
            qos: rule.qos,
            retain: msg.retain,
            user_properties: msg.user_properties.to_vec(),
            content_type: msg.content_type.map(str::to_string),
            received_at_ms: msg.received_at_ms,
            expires_at_ms: rule
                .ttl_ms
                .map_or(0, |t| msg.received_at_ms.saturating_add(t).max(1)),
        };
        self.append(txn, &mut p.cur, rule, record, &mut d)?;
        lock(&self.staged).count(ri, &d);
        Ok(())
    }

    /// The outbox record of a finished window of `local_topic`.
    fn window_record(
        &self,
        rule: &CompiledForward,
        local_topic: &str,
        st: &window::WindowState,
    ) -> Record {
        let w = rule.processing.window.as_ref();
        let topic = match w.and_then(|w| w.topic.as_deref()) {
            Some(t) => t.replace("{topic}", local_topic),
            None => rule.map.apply(local_topic),
        };
        let payload = w.map(|w| w.render(local_topic, st)).unwrap_or_default();
        Record {
            topic,
            payload,
            qos: rule.qos,
            retain: false,
            user_properties: Vec::new(),
            content_type: Some("application/json".into()),
            received_at_ms: st.end_ms,
            expires_at_ms: rule
                .ttl_ms
                .map_or(0, |t| st.end_ms.saturating_add(t).max(1)),
        }
    }

    /// The outbox record carrying a batch envelope.
    fn batch_record(
        &self,
        rule: &CompiledForward,
        items: &[batch::BatchItem],
    ) -> Result<Record, SyncError> {
        let Some(b) = rule.processing.batch.as_ref() else {
            return Err(SyncError::Invariant("batch record of a rule without batch"));
        };
        let first = items.first().map_or(0, |i| i.received_at_ms);
        Ok(Record {
            topic: b.topic.clone(),
            payload: b.encode(items)?,
            qos: rule.qos,
            retain: false,
            user_properties: vec![
                (batch::FORMAT_PROPERTY.into(), b.format.name().into()),
                (
                    batch::COMPRESSION_PROPERTY.into(),
                    b.compression.name().into(),
                ),
                (batch::COUNT_PROPERTY.into(), items.len().to_string()),
            ],
            content_type: Some(b.format.content_type().into()),
            received_at_ms: first,
            expires_at_ms: rule.ttl_ms.map_or(0, |t| first.saturating_add(t).max(1)),
        })
    }

    /// Appends `record` to the rule's lane in `txn`, with `latest_only` conflation and the full
    /// policy; `m` is the meta row being built, `d` gets the rule's out / conflated figures.
    fn append(
        &self,
        txn: &WriteTransaction,
        m: &mut Meta,
        rule: &CompiledForward,
        record: Record,
        d: &mut Delta,
    ) -> Result<(), SyncError> {
        let bytes = postcard::to_allocvec(&record)?;
        let size = bytes.len() as u64;
        let prio = rule.priority as usize;

        // latest_only: the topic's previous record goes if it is still buffered (if the uplink
        // already read it, it is delivered anyway and its acknowledgement removes nothing).
        if rule.processing.latest_only {
            if let Some((l, old)) = latest::get(txn, &record.topic)? {
                let l = (l as usize).min(PRIORITIES - 1);
                let mut t = txn.open_table(LANES[l])?;
                let removed = t.remove(old)?.map(|v| {
                    let old: Option<Record> = postcard::from_bytes(v.value()).ok();
                    let counted = old.map_or(0, |r| msg_size(&r.topic, &r.payload));
                    (v.value().len() as u64, counted)
                });
                if removed.is_some() && self.track_held {
                    held::open(txn)?.remove(old)?;
                }
                if let Some((len, counted)) = removed {
                    let lane = &mut m.lanes[l];
                    lane.messages = lane.messages.saturating_sub(1);
                    lane.bytes = lane.bytes.saturating_sub(len);
                    refresh_oldest(&t, &mut m.lanes[l])?;
                    d.conflated += 1;
                    d.bytes_conflated += counted;
                }
            }
        }

        if self.policy == FullPolicy::DropOldest {
            while m.backlog_bytes() + size > self.max_bytes {
                // Victim: the oldest record of the lowest non-empty lane, unless the new message
                // is itself the least important (lower priority than everything buffered).
                let victim = (0..PRIORITIES).find(|&l| m.lanes[l].messages > 0);
                match victim {
                    Some(l) if l <= prio => {
                        let mut t = txn.open_table(LANES[l])?;
                        let removed = t
                            .pop_first()?
                            .map(|(k, v)| (k.value(), v.value().len() as u64));
                        match removed {
                            Some((seq, len)) => {
                                if self.track_held {
                                    held::open(txn)?.remove(seq)?;
                                }
                                let lane = &mut m.lanes[l];
                                lane.messages = lane.messages.saturating_sub(1);
                                lane.bytes = lane.bytes.saturating_sub(len);
                                m.dropped_full += 1;
                                refresh_oldest(&t, &mut m.lanes[l])?;
                            }
                            None => {
                                // Counters said non-empty: repair them.
                                m.lanes[l] = LaneMeta::default();
                            }
                        }
                    }
                    _ => {
                        m.dropped_full += 1;
                        write_meta(txn, m)?;
                        tracing::debug!(
                            topic = record.topic,
                            "sync backlog full: new message dropped"
                        );
                        return Ok(());
                    }
                }
            }
        }

        let seq = m.next_seq;
        m.next_seq += 1;
        {
            let mut t = txn.open_table(LANES[prio])?;
            t.insert(seq, bytes.as_slice())?;
        }
        let lane = &mut m.lanes[prio];
        lane.messages += 1;
        lane.bytes += size;
        if lane.oldest_seq == 0 {
            lane.oldest_seq = seq;
        }
        write_meta(txn, m)?;
        if rule.gated {
            held::set(txn, seq, &rule.filter)?;
        }
        if rule.processing.latest_only {
            latest::set(txn, &record.topic, prio as u8, seq)?;
        }
        d.messages_out += 1;
        d.bytes_out += msg_size(&record.topic, &record.payload);
        Ok(())
    }

    /// After the transaction holding captures committed (`ok`) or rolled back: publish the new
    /// counters in memory and wake the uplink.
    pub fn committed(&self, ok: bool) {
        let staged = std::mem::take(&mut *lock(&self.staged));
        if ok {
            for (ri, d) in staged.counts {
                if let Some(c) = self.rule_counters.get(ri) {
                    c.add(&d);
                }
            }
            if !staged.deadband.is_empty() {
                let mut last = lock(&self.deadband);
                for (topic, v) in staged.deadband {
                    // Bounded: past the cap an arbitrary topic forgets its last value, so its
                    // next reading is sent (more data up, never less; memory stays fixed).
                    if last.len() >= DEADBAND_TOPICS && !last.contains_key(&topic) {
                        if let Some(k) = last.keys().next().cloned() {
                            last.remove(&k);
                        }
                    }
                    last.insert(topic, v);
                }
            }
        }
        let p = lock(&self.pending).take();
        let Some(p) = p else { return };
        if ok {
            self.apply_delta(&p.base, &p.cur, p.rejected_folded);
            self.c.generation.fetch_add(1, Ordering::SeqCst);
            self.wake.notify(usize::MAX);
        } else {
            // Rejections folded into the lost meta row must be persisted later.
            self.c
                .rejected_unpersisted
                .fetch_add(p.rejected_folded, Ordering::Relaxed);
        }
    }

    /// When the earliest stored window ends (ms since the epoch; `u64::MAX`: none).
    pub fn next_window_due(&self) -> u64 {
        self.next_window_due.load(Ordering::Relaxed)
    }

    /// Emits every window ended and every batch due at `now_ms` as an outbox record, in one
    /// durable transaction. Returns how many were emitted.
    pub fn flush_due(&self, now_ms: u64) -> Result<usize, SyncError> {
        self.guarded("emitting the outbox's due windows and batches", || {
            self.flush_due_unguarded(now_ms)
        })
    }

    fn flush_due_unguarded(&self, now_ms: u64) -> Result<usize, SyncError> {
        let has = |f: fn(&CompiledForward) -> bool| self.rules.iter().any(f);
        if !has(|r| r.processing.window.is_some()) && !has(|r| r.processing.batch.is_some()) {
            return Ok(0);
        }
        let txn = self.db.begin_write()?;
        let (ended, next) = window::take_ended(&txn, now_ms)?;
        let max_ms_of = |ri: u32| {
            let r = self.rules.get(ri as usize)?;
            r.processing.batch.as_ref().map(|b| b.max_ms)
        };
        let (batches, next_batch) = batch::due(&txn, now_ms, max_ms_of)?;
        let next = next.min(next_batch);
        if ended.is_empty() && batches.is_empty() {
            self.next_window_due.store(next, Ordering::Relaxed);
            txn.abort()?;
            return Ok(0);
        }
        let base = read_meta_w(&txn)?.unwrap_or_else(Meta::fresh);
        let mut m = base.clone();
        let mut deltas = Vec::new();
        for (topic, st) in &ended {
            let rule = self.rules.get(st.rule as usize);
            let Some(rule) = rule.filter(|r| r.processing.window.is_some() && st.messages > 0)
            else {
                tracing::warn!(topic, "window state without a matching window rule dropped");
                continue;
            };
            let mut d = Delta::default();
            let rec = self.window_record(rule, window::key_topic(topic), st);
            self.append(&txn, &mut m, rule, rec, &mut d)?;
            deltas.push((st.rule as usize, d));
        }
        for ri in &batches {
            let items = batch::take(&txn, *ri)?;
            let rule = self.rules.get(*ri as usize);
            let Some(rule) = rule.filter(|r| r.processing.batch.is_some() && !items.is_empty())
            else {
                tracing::warn!(rule = ri, "batch without a matching batch rule dropped");
                continue;
            };
            let mut d = Delta::default();
            let rec = self.batch_record(rule, &items)?;
            self.append(&txn, &mut m, rule, rec, &mut d)?;
            deltas.push((*ri as usize, d));
        }
        // No capture runs while this transaction is open: nothing can lower `due` meanwhile.
        self.next_window_due.store(next, Ordering::Relaxed);
        if let Err(e) = txn.commit() {
            self.next_window_due.store(0, Ordering::Relaxed);
            return Err(e.into());
        }
        self.apply_delta(&base, &m, 0);
        for (ri, d) in deltas {
            if let Some(c) = self.rule_counters.get(ri) {
                c.add_delta(&d);
            }
        }
        self.c.generation.fetch_add(1, Ordering::SeqCst);
        self.wake.notify(usize::MAX);
        Ok(ended.len() + batches.len())
    }
}
