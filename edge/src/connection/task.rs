//! A connection's one task after the CONNECT handshake. Idle, it waits in one small poll
//! function for the socket to become readable or the session's wake-up (reply, delivery, kick,
//! the keep-alive sweep's nudge: one flag and one waker slot, `session/wakeup.rs`), and holds
//! no buffer or timer. Woken, it runs a busy phase in a box, freed when
//! both sides are idle again: the reader handles bursts of input while the writer sends replies
//! (in order, each after its storage ticket) and deliveries, concurrently, so neither waits on
//! the other (a client that writes while we write to it is still read). A panic in either side
//! is caught: logged, counted, and the session detached as for a broken connection.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

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

/// What the task keeps between busy phases, in [`Ready`] (held by the task) so that the idle
/// wait holds only a pointer.
pub(super) struct State {
    /// Topic aliases both ways and the reader's congestion wait (the encoder, which uses the
    /// server -> client aliases, lives only in busy phases).
    publish: PublishState,
}

impl State {
    pub(super) fn new() -> State {
        State {
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
        let wakeup = ready.replies.wakeup_arc();
        ready.conn.broker.keep_alives.watch(wakeup);
        let served = AssertUnwindSafe(serve_phases(&mut ready))
            .catch_unwind()
            .await;
        let sent_disconnect = match served {
            Ok(sent) => sent,
            Err(panic) => {
                let what = edge_mqtt::util::panic_message(&*panic);
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
    let wakeup = ready.replies.wakeup();
    conn.broker.keep_alives.unwatch(wakeup);
    let departure = wakeup.departure().take().unwrap_or(Departure::Abnormal);
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

/// The idle state: waits for input or the connection's wake-up (the keep-alive sweep nudges
/// it once the deadline has passed), in one poll function that holds one pointer: every idle
/// connection's task has room for it. A wake-up since the writer's last look (the flag taken
/// before it) ends the wait at once.
fn idle(ready: &mut Ready) -> impl Future<Output = Wake> + '_ {
    future::poll_fn(move |cx| {
        // A read error is found by the read that follows.
        if ready.stream.poll_readable(cx).is_ready() {
            return Poll::Ready(Wake::Readable);
        }
        let wakeup = ready.replies.wakeup();
        if wakeup.poll_woken(cx).is_ready() {
            return Poll::Ready(Wake::Notified);
        }
        // After the waker's registration above: a nudge from now on wakes this task.
        if wakeup.keep_alive().expired() {
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
    publish_state: &mut PublishState,
    mut readable: bool,
    sides: &Sides,
) -> Result<(), Close> {
    let wakeup = replies.wakeup();
    let keep_alive = wakeup.keep_alive();
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
        let waited = future::poll_fn(|cx| {
            if stream.poll_readable(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            // For the sweep's nudge (the writer's wait registers the same task's waker), then
            // the deadline is checked: a client that neither reads nor sends still times out.
            wakeup.register(cx);
            if keep_alive.expired() {
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
