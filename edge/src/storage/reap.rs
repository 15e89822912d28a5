//! Committed ops are dropped on an executor thread, not on the writer's (issue 9, backlog
//! fill). The ops hold the last references to what a connection allocated (messages, topics,
//! the batch itself); freed by the writer, each free of another thread's memory took that
//! arena's lock just as the connection, woken by the same commit, allocated its replies
//! under it: a futex hand-off between the two threads in most commits.
//!
//! Invariants: the writer hands ops over only while a [`Reaper::run`] is running, and never
//! more than [`HELD_BYTES`] of messages at a time (beyond that, or with no reaper, it drops
//! them itself), so memory held here is bounded whatever the payload sizes, and a store
//! without an executor behaves as before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use event_listener::Event;

use super::lock;
use super::ops::Op;

/// Most bytes held for the reaper ([`weight`] of the ops); past this the writer drops a
/// commit's ops itself. A window of 64 messages of 4 KB is ~270 KB.
pub(super) const HELD_BYTES: usize = 4 << 20;
/// Room for batches kept between two reaps (a publisher's window of 64 is 64 batches).
const KEEP_BATCHES: usize = 128;

#[derive(Default)]
pub(super) struct Reaper {
    bin: Mutex<Bin>,
    event: Event,
    running: AtomicBool,
}

#[derive(Default)]
struct Bin {
    batches: Vec<Vec<Op>>,
    ops: usize,
    bytes: usize,
}

/// What an op keeps alive, at most: its message's weight (the queue's own measure), or the op.
fn weight(op: &Op) -> usize {
    match op {
        Op::Enqueue { msg, .. } | Op::Capture(msg) | Op::Retain { msg: Some(msg), .. } => {
            msg.weight()
        }
        _ => std::mem::size_of::<Op>(),
    }
}

impl Reaper {
    /// Leaves `batches` for the reaper, or gives them back when none runs or they would take
    /// it past [`HELD_BYTES`] (the caller drops them).
    pub(super) fn hand_over(&self, batches: Vec<Vec<Op>>) -> Result<(), Vec<Vec<Op>>> {
        if !self.running.load(Ordering::Acquire) {
            return Err(batches);
        }
        let n: usize = batches.iter().map(Vec::len).sum();
        let bytes: usize = batches.iter().flatten().map(weight).sum();
        let mut bin = lock(&self.bin);
        if bin.bytes + bytes > HELD_BYTES {
            return Err(batches);
        }
        let was_empty = bin.batches.is_empty();
        bin.batches.extend(batches);
        bin.ops += n;
        bin.bytes += bytes;
        drop(bin);
        if was_empty {
            self.event.notify(1);
        }
        Ok(())
    }

    /// Drops what the writer hands over, on the thread that polls this, until dropped.
    pub(super) async fn run(&self) {
        self.running.store(true, Ordering::Release);
        let _stop = Running(&self.running);
        let mut mine = Vec::new();
        loop {
            {
                let mut bin = lock(&self.bin);
                std::mem::swap(&mut bin.batches, &mut mine);
                bin.ops = 0;
                bin.bytes = 0;
            }
            if !mine.is_empty() {
                mine.clear();
                // A backlog of many batches leaves no large list behind.
                mine.shrink_to(KEEP_BATCHES);
                continue;
            }
            let listener = self.event.listen();
            if !lock(&self.bin).batches.is_empty() {
                continue;
            }
            listener.await;
        }
    }

    /// Ops held now (tests).
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        lock(&self.bin).ops
    }

    /// Bytes held now, as [`HELD_BYTES`] counts them (tests).
    #[cfg(test)]
    pub(super) fn held_bytes(&self) -> usize {
        lock(&self.bin).bytes
    }
}

/// Marks the reaper stopped when its future is dropped: the writer drops ops itself again.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
