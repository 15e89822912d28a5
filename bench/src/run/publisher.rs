//! The publisher side of a run: keeps up to a window of QoS 1/2 publishes in flight (optionally
//! at a fixed rate), each payload stamped with publisher id, sequence number and send time, and
//! checks that every acknowledgement matches a packet id in flight.

use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_mqtt::pid::PidAllocator;
use mqtt_proto::{QoS, TopicName};
use smol::Timer;

use crate::conn::{Conn, Incoming, Result};
use crate::tracker;

/// What one publisher sends: `count` messages of `payload_len` bytes on `topic`.
#[derive(Clone, Debug)]
pub(crate) struct PublishPlan {
    /// Publisher id written into each payload (the subscribers' `Tracker` keys on it).
    pub id: u32,
    pub count: u64,
    pub topic: String,
    pub qos: QoS,
    pub payload_len: usize,
    /// QoS 1/2 messages in flight at most.
    pub window: usize,
    /// This publisher's rate in msgs/s (None = as fast as the window allows).
    pub rate: Option<f64>,
    /// Clock origin of the rate schedule (`tracker::now_ns`).
    pub start_ns: u64,
    pub deadline: Instant,
}

/// What one publisher did: when its last message was acknowledged, or why it failed.
pub(super) struct PubOut {
    pub done_ns: Option<u64>,
    pub err: Option<String>,
    pub rejected: u64,
}

/// One publisher's task: runs its plan to the end, then closes the connection.
pub(super) async fn publisher(mut c: Conn, plan: PublishPlan) -> PubOut {
    let r = publish_loop(&mut c, &plan).await;
    let done_ns = tracker::now_ns();
    c.close().await;
    match r {
        Ok(rejected) => PubOut {
            done_ns: Some(done_ns),
            err: None,
            rejected,
        },
        Err(e) => PubOut {
            done_ns: None,
            err: Some(e),
            rejected: 0,
        },
    }
}

const BATCH_BYTES: usize = 64 * 1024;

/// Publishes `plan.count` messages and waits until every one is acknowledged (QoS 0: written);
/// returns how many the broker rejected (v5 reason code >= 0x80).
pub(crate) async fn publish_loop(c: &mut Conn, plan: &PublishPlan) -> Result<u64> {
    let PublishPlan {
        id,
        count,
        ref topic,
        qos,
        payload_len,
        window,
        rate,
        start_ns,
        deadline,
    } = *plan;
    let topic = TopicName::try_from(topic.as_str()).map_err(|e| format!("topic: {e}"))?;
    let payload_len = payload_len.max(tracker::HEADER_LEN);
    let mut buf = vec![0u8; payload_len];
    for (i, b) in buf.iter_mut().enumerate().skip(tracker::HEADER_LEN) {
        *b = b'a' + (i % 26) as u8;
    }
    let mut in_use = vec![false; 65536];
    let mut pids = PidAllocator::default();
    let mut inflight = 0usize;
    let mut seq = 0u64;
    let mut rejected = 0u64;
    let window = if qos == QoS::Level0 {
        usize::MAX
    } else {
        window
    };
    // Refill as soon as any acknowledgement frees a slot. (Refilling only at half a window saves
    // syscalls but stalls on brokers that leave Nagle on: their PUBACKs wait for our delayed ACK.)
    let refill_at = window - 1;
    while seq < count || inflight > 0 {
        if Instant::now() > deadline {
            return Err(format!(
                "run deadline reached with {} unsent, {inflight} unacknowledged",
                count - seq
            ));
        }
        // Queue as many publishes as the window, the rate and the batch size allow.
        let mut wait_until: Option<u64> = None;
        let mut batch_full = false;
        if inflight <= refill_at {
            while seq < count && inflight < window {
                if c.pending_write() >= BATCH_BYTES {
                    batch_full = true;
                    break;
                }
                if let Some(r) = rate {
                    let due_ns = start_ns + (seq as f64 * 1e9 / r) as u64;
                    if tracker::now_ns() < due_ns {
                        wait_until = Some(due_ns);
                        break;
                    }
                }
                let pid = if qos == QoS::Level0 {
                    0
                } else {
                    let pid = pids
                        .next(|p| in_use[p as usize])
                        .ok_or("all 65,535 packet ids in flight")?
                        .value();
                    in_use[pid as usize] = true;
                    inflight += 1;
                    pid
                };
                tracker::write_header(&mut buf, id, seq, tracker::now_ns());
                c.send_publish(&topic, qos, pid, Bytes::copy_from_slice(&buf))?;
                seq += 1;
            }
        }
        c.flush().await?;
        if qos == QoS::Level0 {
            // Nothing to read back: let other tasks on this thread run.
            futures_lite::future::yield_now().await;
        }
        if batch_full && inflight <= refill_at {
            continue;
        }
        if inflight == 0 {
            if let Some(t) = wait_until {
                let now = tracker::now_ns();
                if t > now {
                    Timer::after(Duration::from_nanos(t - now)).await;
                }
            }
            continue;
        }
        // Window full, rate-limited or done sending: wait for acknowledgements. With a rate
        // limit and room in the window, do not block past the next due time.
        let must_read = inflight > refill_at || seq >= count || wait_until.is_none();
        if must_read {
            c.fill().await?;
        } else if let Some(t) = wait_until {
            let now = tracker::now_ns();
            let d = Duration::from_nanos(t.saturating_sub(now));
            let got = futures_lite::future::or(async { Some(c.fill().await) }, async {
                Timer::after(d).await;
                None
            })
            .await;
            if let Some(r) = got {
                r?;
            }
        }
        while let Some(p) = c.try_next()? {
            match p {
                Incoming::Puback { pid, ok } if qos == QoS::Level1 => {
                    release(&mut in_use, &mut inflight, pid)?;
                    if !ok {
                        rejected += 1;
                    }
                }
                Incoming::Pubrec { pid, ok } if qos == QoS::Level2 => {
                    if !ok {
                        rejected += 1;
                        release(&mut in_use, &mut inflight, pid)?;
                    } else {
                        c.send_pubrel(pid)?;
                    }
                }
                Incoming::Pubcomp { pid } if qos == QoS::Level2 => {
                    release(&mut in_use, &mut inflight, pid)?
                }
                Incoming::Disconnect { code } => {
                    return Err(format!("broker sent DISCONNECT ({code:?})"))
                }
                other @ (Incoming::Puback { .. }
                | Incoming::Pubrec { .. }
                | Incoming::Pubcomp { .. }) => {
                    return Err(format!("unexpected {other:?} for QoS {}", qos as u8))
                }
                _ => {}
            }
        }
    }
    Ok(rejected)
}

fn release(in_use: &mut [bool], inflight: &mut usize, pid: u16) -> Result<()> {
    if !in_use[pid as usize] {
        return Err(format!(
            "acknowledgement for packet id {pid} that is not in flight"
        ));
    }
    in_use[pid as usize] = false;
    *inflight -= 1;
    Ok(())
}
