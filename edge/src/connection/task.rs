//! A connection's one task after the CONNECT handshake. Idle, it waits in one small poll
//! function for the socket to become readable, the session's wake-up (reply, delivery, kick:
//! one flag and one waker slot, `session/wakeup.rs`) or the keep-alive deadline, and holds no
//! buffer. Woken, it runs a busy phase in a box, freed when
//! both sides are idle again: the reader handles bursts of input while the writer sends replies
//! (in order, each after its storage ticket) and deliveries, concurrently, so neither waits on
//! the other (a client that writes while we write to it is still read). A panic in either side
//! is caught: logged, counted, and the session detached as for a broken connection.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::{future, FutureExt};
use mqtt_proto::v5::DisconnectReasonCode as Dr;

use super::frame::{FrameReader, ReadError};
use super::handshake::Ready;
use super::inbound::{self, PublishState};
use super::outbound::{self, Encoder, Round};
use super::{Close, Conn, Stream};
use crate::broker::Departure;

/// How a busy phase ended.
enum Busy {
    /// Both sides ran out of work; the wake-up flag was taken before the writer's last look.
    Idle,
    /// The connection ends; `true` when the client was sent a DISCONNECT.
    End(bool),
}

/// What ended an idle wait.
enum Wake {
    Readable,
    Notified,
    KeepAlive,
}

/// The time of the last input plus one and a half keep-alive periods, shared by the two
/// sides in one atomic word (8 bytes; a limit and a `Mutex<Option<Instant>>` took 32): the
/// keep-alive times 3 (the limit in half seconds, at most 196,605) in the top [`LIMIT_BITS`]
/// bits, the deadline in milliseconds after [`base`] (rounded up; 0: none) in the rest
/// (2^46 ms: over 2,000 years).
struct KeepAlive(AtomicU64);

const LIMIT_BITS: u32 = 18;
const DEADLINE_BITS: u32 = 64 - LIMIT_BITS;
const DEADLINE_MASK: u64 = (1 << DEADLINE_BITS) - 1;

/// The instant keep-alive deadlines count from (the first connection's).
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

impl KeepAlive {
    fn new(keep_alive: u16) -> KeepAlive {
        // One and a half keep-alive periods without a packet end the connection.
        let k = KeepAlive(AtomicU64::new((keep_alive as u64 * 3) << DEADLINE_BITS));
        k.touch();
        k
    }

    /// Input arrived: the deadline moves.
    fn touch(&self) {
        let word = self.0.load(Ordering::Relaxed);
        let deadline = match self.limit() {
            // + 1: never 0, and never before the limit has passed.
            Some(l) => ((base().elapsed() + l).as_millis() as u64 + 1) & DEADLINE_MASK,
            None => 0,
        };
        self.0
            .store(word & !DEADLINE_MASK | deadline, Ordering::Relaxed);
    }

    fn limit(&self) -> Option<Duration> {
        let half_seconds = self.0.load(Ordering::Relaxed) >> DEADLINE_BITS;
        (half_seconds > 0).then(|| Duration::from_millis(half_seconds * 500))
    }

    fn deadline(&self) -> Option<Instant> {
        match self.0.load(Ordering::Relaxed) & DEADLINE_MASK {
            0 => None,
            ms => Some(base() + Duration::from_millis(ms)),
        }
    }

    /// Arms `slot`, the connection's one keep-alive timer, at the deadline the first time it
    /// waits with a keep-alive (none without), so that the task's idle state holds no 56-byte
    /// timer. Once armed it is left alone when input moves the deadline: setting a timer
    /// inserts it into the reactor and wakes the reactor's thread (an eventfd write and read),
    /// which, per packet and per side of a busy phase, was ~2 syscalls and one more epoll wake
    /// for every message a quiet connection carried.
    fn arm(&self, slot: &mut Option<Box<smol::Timer>>) {
        if slot.is_none() {
            *slot = self.deadline().map(|at| Box::new(smol::Timer::at(at)));
        }
    }

    /// Ready once the deadline has passed. The timer fires at the deadline it was armed at; if
    /// input has moved the deadline since, it is set to the new one and waits again (at most
    /// one more wait per keep-alive period of activity).
    fn poll_expired(
        &self,
        slot: &mut Option<Box<smol::Timer>>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        let Some(timer) = slot else {
            return Poll::Pending;
        };
        while Pin::new(&mut **timer).poll(cx).is_ready() {
            match self.deadline() {
                Some(at) if at > Instant::now() => timer.set_at(at),
                _ => return Poll::Ready(()),
            }
        }
        Poll::Pending
    }
}

/// What the task keeps between busy phases, in [`Ready`] (held by the task) so that the idle
/// wait holds only a pointer.
pub(super) struct State {
    keep_alive: KeepAlive,
    /// The keep-alive timer of the idle wait and of the reader's waits ([`KeepAlive::arm`]).
    keep_alive_timer: Option<Box<smol::Timer>>,
    /// Topic aliases both ways and the reader's congestion wait (the encoder, which uses the
    /// server -> client aliases, lives only in busy phases).
    publish: PublishState,
}

impl State {
    pub(super) fn new(keep_alive: u16) -> State {
        State {
            keep_alive: KeepAlive::new(keep_alive),
            keep_alive_timer: None,
            publish: PublishState::default(),
        }
    }
}

/// Runs the connection: the CONNECT handshake, then the phases until it ends, then detaches
/// the session and closes the socket. The connection's places under the limits are given
/// back when this returns (or is dropped); its place among those waiting for CONNECT, held
/// by the handshake, when the handshake is done.
///
/// One async block for the connection's life rather than nested async fns: an async fn keeps
/// its arguments twice (as arguments and as locals) and each level adds its own padding, in
/// every idle connection's task (`the_connection_future_stays_small`). It holds the
/// connection ([`Ready`], socket included) inline: the task's heap block is the connection's
/// only one, besides the session and the reactor's entry.
// Not an async fn on purpose (see above).
#[allow(clippy::manual_async_fn)]
pub(super) fn run(
    handshake: Pin<Box<impl Future<Output = Option<Ready>> + Send>>,
) -> impl Future<Output = ()> + Send {
    async move {
        // Not bound to a name first: a named result would keep a second copy of the connection
        // in every idle task (its storage lives to the end of the block). A refused client's
        // socket was closed by the handshake.
        let Some(mut ready) = handshake.await else {
            return;
        };
        let served = AssertUnwindSafe(serve_phases(&mut ready))
            .catch_unwind()
            .await;
        let sent_disconnect = match served {
            Ok(sent) => sent,
            Err(panic) => {
                let what = panic_message(&*panic);
                let conn = &ready.conn;
                tracing::error!(peer = %conn.peer, client_id = %conn.client_id, panic = what,
                    "connection task panicked: session detached, connection closed");
                conn.broker.stats.connection_panicked();
                ready.replies.wakeup().departure().set(None);
                false
            }
        };
        // Boxed, like the phases: the task reserves room for its largest state, and the end
        // is never idle (its pointers held inline took more room than the idle wait).
        Box::pin(finish(&ready, sent_disconnect)).await;
    }
}

/// The end of a connection: the session ends (or detaches) before the socket closes, so that
/// a client that reconnects the moment it sees the close finds the session as this
/// connection left it.
async fn finish(ready: &Ready, sent_disconnect: bool) {
    let (stream, conn) = (&ready.stream, &ready.conn);
    let departure = ready
        .replies
        .wakeup()
        .departure()
        .take()
        .unwrap_or(Departure::Abnormal);
    conn.broker
        .disconnect(&conn.client_id, conn.conn_id, departure)
        .await;
    if sent_disconnect {
        super::graceful_close(stream).await;
    } else {
        stream.close().await;
    }
    tracing::debug!(peer = %conn.peer, client_id = %conn.client_id, "client disconnected");
}

/// A panic's message, when it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// Alternates idle waits and busy phases; returns whether the client was sent a DISCONNECT.
// An async block, not an async fn: its borrowed arguments are stored once.
#[allow(clippy::manual_async_fn)]
fn serve_phases(ready: &mut Ready) -> impl Future<Output = bool> + '_ {
    async move {
        // The CONNACK (and any packets sent behind the CONNECT) are waiting.
        let mut readable = false;
        loop {
            if let Busy::End(sent_disconnect) = Box::pin(busy(ready, readable, true)).await {
                return sent_disconnect;
            }
            readable = match idle(ready).await {
                Wake::Readable => true,
                Wake::Notified => false,
                Wake::KeepAlive => {
                    let close = Close::Broker {
                        code: Dr::KeepAliveTimeout,
                        why: "keep alive timeout",
                    };
                    end_reading(&ready.conn, &ready.replies, close);
                    // The writer sends the DISCONNECT; the reader is done.
                    return match Box::pin(busy(ready, false, false)).await {
                        Busy::End(sent) => sent,
                        Busy::Idle => false,
                    };
                }
            };
        }
    }
}

/// The reader ended the connection: the writer sends what is queued, then `close`.
fn end_reading(conn: &Conn, replies: &super::replies::Replies, close: Close) {
    if let Close::Broker { why, .. } = close {
        tracing::info!(peer = %conn.peer, client_id = %conn.client_id, reason = why, "closing connection");
    }
    replies.wakeup().departure().set(Some(close.departure()));
    replies.close(close);
}

/// The idle state: waits for input, the connection's wake-up or the keep-alive deadline, in
/// one poll function (no buffer, the connection's one timer) that holds one pointer: every
/// idle connection's task has room for it. A wake-up since the writer's last look (the flag
/// taken before it) ends the wait at once.
fn idle(ready: &mut Ready) -> impl Future<Output = Wake> + '_ {
    let state = &mut ready.state;
    // Leaves the slot empty without a keep-alive.
    state.keep_alive.arm(&mut state.keep_alive_timer);
    future::poll_fn(move |cx| {
        // A read error is found by the read that follows.
        if ready.stream.poll_readable(cx).is_ready() {
            return Poll::Ready(Wake::Readable);
        }
        if ready.replies.wakeup().poll_woken(cx).is_ready() {
            return Poll::Ready(Wake::Notified);
        }
        let state = &mut ready.state;
        if state
            .keep_alive
            .poll_expired(&mut state.keep_alive_timer, cx)
            .is_ready()
        {
            return Poll::Ready(Wake::KeepAlive);
        }
        Poll::Pending
    })
}

/// A burst that left at most this many replies queued lets the tasks it woke run before the
/// replies are written (see `busy`). Larger bursts are a flood's: their acknowledgements go at
/// once, the publisher's window waits for them (yielding after every burst cost a QoS 1 64 B
/// flood ~12%; with this bound, none measured, and the QoS 1 p50 at 10,000 msg/s fell from
/// 58-61 to 46-53 µs).
const SMALL_BURST_REPLIES: usize = 4;

/// Which side of a busy phase has run out of work (the one that runs out second ends it).
#[derive(Default)]
struct Sides {
    reader_idle: AtomicBool,
    writer_idle: AtomicBool,
    /// The reader handled a small burst since the writer last ran (see `busy`).
    burst_read: AtomicBool,
}

/// Reader and writer together until both are idle or the connection ends. `readable`: the
/// socket was seen readable; `reading`: false once the reader has ended the connection (the
/// writer alone sends what is queued and the close).
async fn busy(ready: &mut Ready, readable: bool, mut reading: bool) -> Busy {
    let sides = Sides::default();
    let Ready {
        stream,
        conn,
        replies,
        reader,
        state,
        ..
    } = ready;
    let (stream, conn, replies) = (&*stream, &*conn, &*replies);
    let mut out = Encoder::new(conn);
    out.aliases = state.publish.take_out_aliases();
    let end = {
        let mut read = pin!(read_side(
            conn,
            stream,
            reader,
            replies,
            (&state.keep_alive, &mut state.keep_alive_timer),
            &mut state.publish,
            readable,
            &sides,
        ));
        let mut write = pin!(write_side(conn, stream, replies, &mut out, &sides));
        future::poll_fn(|cx| {
            if reading {
                if let Poll::Ready(r) = read.as_mut().poll(cx) {
                    match r {
                        Ok(()) => return Poll::Ready(None),
                        Err(close) => {
                            end_reading(conn, replies, close);
                            reading = false;
                        }
                    }
                }
            }
            // Deliveries before replies after a small burst: the tasks it woke (the
            // subscribers of its publishes) run before this connection writes its answers, as
            // mosquitto sends to subscribers before its PUBACK (one more turn of the executor;
            // `tests/tests/delivery_order.rs`).
            if sides.burst_read.swap(false, Ordering::Relaxed) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            write.as_mut().poll(cx).map(Some)
        })
        .await
    };
    state.publish.put_out_aliases(out.aliases.take());
    match end {
        Some(Some(sent_disconnect)) => Busy::End(sent_disconnect),
        _ => Busy::Idle,
    }
}

/// Reads and handles bursts of input; `Ok` once there is none and the writer is idle too.
#[allow(clippy::too_many_arguments)]
async fn read_side(
    conn: &Conn,
    stream: &Stream,
    reader: &mut FrameReader,
    replies: &super::replies::Replies,
    (keep_alive, timer): (&KeepAlive, &mut Option<Box<smol::Timer>>),
    publish_state: &mut PublishState,
    mut readable: bool,
    sides: &Sides,
) -> Result<(), Close> {
    loop {
        match reader.try_input(stream, readable) {
            Ok(true) => {
                let burst = inbound::read_burst(
                    conn,
                    stream,
                    reader,
                    keep_alive.limit(),
                    publish_state,
                    replies,
                );
                burst.await?;
                if replies.len() <= SMALL_BURST_REPLIES {
                    sides.burst_read.store(true, Ordering::Relaxed);
                }
                keep_alive.touch();
                // A buffer still held is tried first; nothing seen readable yet.
                readable = false;
                continue;
            }
            Ok(false) => {}
            Err(e) => return Err(inbound::read_failed(conn, e)),
        }
        if sides.writer_idle.load(Ordering::Relaxed) {
            return Ok(());
        }
        sides.reader_idle.store(true, Ordering::Relaxed);
        keep_alive.arm(timer);
        let waited = future::poll_fn(|cx| {
            if stream.poll_readable(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            if keep_alive.poll_expired(timer, cx).is_ready() {
                return Poll::Ready(Err(ReadError::TimedOut));
            }
            Poll::Pending
        })
        .await;
        sides.reader_idle.store(false, Ordering::Relaxed);
        if let Err(e) = waited {
            return Err(inbound::read_failed(conn, e));
        }
        readable = true;
    }
}

/// Writes replies and deliveries; `None` once there is nothing to write and the reader is
/// idle too, `Some(sent_disconnect)` when the connection ends.
async fn write_side(
    conn: &Conn,
    stream: &Stream,
    replies: &super::replies::Replies,
    out: &mut Encoder<'_>,
    sides: &Sides,
) -> Option<bool> {
    loop {
        // Taken before the checks: a reply, delivery or kick after them is kept for the wait.
        let wakeup = replies.wakeup();
        wakeup.take();
        match outbound::write_round(conn, stream, replies, wakeup, out).await {
            Round::Again => continue,
            Round::Idle => {}
            Round::End(sent_disconnect) => return Some(sent_disconnect),
        }
        out.release();
        replies.release();
        if sides.reader_idle.load(Ordering::Relaxed) {
            return None;
        }
        sides.writer_idle.store(true, Ordering::Relaxed);
        future::poll_fn(|cx| wakeup.poll_woken(cx)).await;
        sides.writer_idle.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[path = "task_tests.rs"]
mod tests;
