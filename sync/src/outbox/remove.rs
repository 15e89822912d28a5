//! The removing side of the outbox: acknowledged and dropped records leave in the uplink's own
//! short write transactions (mostly non-durable commits), and the TTL sweep walks the lanes.

use std::sync::atomic::Ordering;

use redb::ReadableDatabase;

use super::{
    held, lock, now_ms, read_meta_w, refresh_oldest, write_meta, DropReason, Meta, Outbox, Record,
    LANES, PRIORITIES,
};
use crate::error::SyncError;

impl Outbox {
    /// One write transaction removing acknowledged records and dropped ones, updating the meta
    /// row. Mostly non-durable commits (the broker's next fsync, or ours once a second, persists
    /// them): after a power cut at most about a second of acknowledged records is sent again.
    pub fn remove(
        &self,
        acked: &[(u8, u64)],
        dropped: &[(u8, u64, DropReason)],
        last_offset: Option<u64>,
        sent_upto: Option<[u64; PRIORITIES]>,
    ) -> Result<(), SyncError> {
        self.guarded("a removal from the outbox", || {
            self.remove_unguarded(acked, dropped, last_offset, sent_upto)
        })
    }

    fn remove_unguarded(
        &self,
        acked: &[(u8, u64)],
        dropped: &[(u8, u64, DropReason)],
        last_offset: Option<u64>,
        sent_upto: Option<[u64; PRIORITIES]>,
    ) -> Result<(), SyncError> {
        if acked.is_empty() && dropped.is_empty() && last_offset.is_none() && sent_upto.is_none() {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        let now = now_ms();
        let durable = now.saturating_sub(self.last_durable_ms.load(Ordering::Relaxed)) >= 1000;
        if !durable {
            txn.set_durability(redb::Durability::None)?;
        }
        let base = read_meta_w(&txn)?.unwrap_or_else(Meta::fresh);
        let folded = self.c.rejected_unpersisted.swap(0, Ordering::Relaxed);
        let mut m = base.clone();
        m.rejected += folded;
        let res = (|| -> Result<(), SyncError> {
            let mut touched = [false; PRIORITIES];
            for (prio, seq, reason) in acked
                .iter()
                .map(|&(p, s)| (p, s, None))
                .chain(dropped.iter().map(|&(p, s, r)| (p, s, Some(r))))
            {
                let l = (prio as usize).min(PRIORITIES - 1);
                let mut t = txn.open_table(LANES[l])?;
                let len = t.remove(seq)?.map(|v| v.value().len() as u64);
                if len.is_some() && self.track_held {
                    held::open(&txn)?.remove(seq)?;
                }
                if let Some(len) = len {
                    let lane = &mut m.lanes[l];
                    lane.messages = lane.messages.saturating_sub(1);
                    lane.bytes = lane.bytes.saturating_sub(len);
                    touched[l] = true;
                    match reason {
                        None => m.acked += 1,
                        Some(DropReason::Ttl) => m.dropped_ttl += 1,
                        Some(DropReason::Corrupt) => m.dropped_corrupt += 1,
                    }
                }
            }
            for (l, t) in touched.iter().enumerate() {
                if *t {
                    let table = txn.open_table(LANES[l])?;
                    refresh_oldest(&table, &mut m.lanes[l])?;
                }
            }
            if last_offset.is_some() {
                m.last_offset = last_offset;
            }
            if let Some(su) = sent_upto {
                for (lane, s) in m.lanes.iter_mut().zip(su) {
                    lane.sent_upto = lane.sent_upto.max(s);
                }
            }
            write_meta(&txn, &m)?;
            Ok(())
        })();
        match res.and_then(|_| txn.commit().map_err(SyncError::from)) {
            Ok(()) => {
                if durable {
                    self.last_durable_ms.store(now, Ordering::Relaxed);
                }
                self.apply_delta(&base, &m, folded);
                Ok(())
            }
            Err(e) => {
                self.c
                    .rejected_unpersisted
                    .fetch_add(folded, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Drops expired records wherever they are, reading at most `budget` records per lane per
    /// call (a cursor per lane walks the log and wraps), so TTL frees space while offline too.
    /// Returns the number dropped.
    pub fn sweep_expired(&self, now: u64, budget: usize) -> Result<u64, SyncError> {
        self.guarded("the outbox's expiry sweep", || {
            self.sweep_expired_unguarded(now, budget)
        })
    }

    fn sweep_expired_unguarded(&self, now: u64, budget: usize) -> Result<u64, SyncError> {
        let mut expired: Vec<(u8, u64, DropReason)> = Vec::new();
        {
            let mut cursors = lock(&self.sweep_cursor);
            let txn = self.db.begin_read()?;
            for (l, def) in LANES.iter().enumerate() {
                let t = txn.open_table(*def)?;
                let mut n = 0;
                let mut last = None;
                for item in t.range(cursors[l].saturating_add(1)..)? {
                    if n >= budget {
                        break;
                    }
                    n += 1;
                    let (k, v) = item?;
                    last = Some(k.value());
                    match postcard::from_bytes::<Record>(v.value()) {
                        Ok(r) if r.expires_at_ms != 0 && r.expires_at_ms <= now => {
                            expired.push((l as u8, k.value(), DropReason::Ttl));
                        }
                        Ok(_) => {}
                        Err(_) => expired.push((l as u8, k.value(), DropReason::Corrupt)),
                    }
                }
                cursors[l] = if n < budget { 0 } else { last.unwrap_or(0) };
            }
        }
        let n = expired.iter().filter(|e| e.2 == DropReason::Ttl).count() as u64;
        if !expired.is_empty() {
            self.remove(&[], &expired, None, None)?;
            tracing::info!(dropped = n, "sync outbox: records past their TTL dropped");
        }
        Ok(n)
    }
}
