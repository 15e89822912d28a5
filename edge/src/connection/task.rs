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
use crate::broker::{ConnectionPermit, Departure};
use crate::session::Wakeup;

/// How the session sees the end the reader chose, shared by the two sides of the one task in
/// one atomic word (8 bytes; a `Mutex<Option<Departure>>` takes 24 in every connection):
/// 0 none, 1 abnormal, 2 graceful (bit 2: send the will, bit 3: `expiry` in the high half).
#[derive(Default)]
struct DepartureSlot(AtomicU64);

impl DepartureSlot {
    fn set(&self, d: Option<Departure>) {
        let bits = match d {
            None => 0,
            Some(Departure::Abnormal) => 1,
            Some(Departure::Graceful { send_will, expiry }) => {
                let will = if send_will { 4 } else { 0 };
                match expiry {
                    Some(e) => 2 | will | 8 | (e as u64) << 32,
                    None => 2 | will,
                }
            }
        };
        self.0.store(bits, Ordering::Relaxed);
    }

    fn take(&self) -> Option<Departure> {
        let bits = self.0.swap(0, Ordering::Relaxed);
        match bits & 3 {
            1 => Some(Departure::Abnormal),
            2 => Some(Departure::Graceful {
                send_will: bits & 4 != 0,
                expiry: (bits & 8 != 0).then_some((bits >> 32) as u32),
            }),
            _ => None,
        }
    }
}

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

/// The time of the last input plus one and a half keep-alive periods.
struct KeepAlive {
    /// One and a half keep-alive periods in milliseconds; 0: no keep-alive.
    limit_ms: u32,
    /// The deadline in milliseconds after [`base`] (rounded up), 0: none. An atomic (8 bytes,
    /// shared by the two sides) rather than a `Mutex<Option<Instant>>` (24).
    deadline_ms: AtomicU64,
}

/// The instant keep-alive deadlines count from (the first connection's).
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

impl KeepAlive {
    fn new(keep_alive: u16) -> KeepAlive {
        // One and a half keep-alive periods without a packet end the connection.
        let k = KeepAlive {
            limit_ms: keep_alive as u32 * 1500,
            deadline_ms: AtomicU64::new(0),
        };
        k.touch();
        k
    }

    /// Input arrived: the deadline moves.
    fn touch(&self) {
        let deadline = match self.limit() {
            // + 1: never 0, and never before the limit has passed.
            Some(l) => (base().elapsed() + l).as_millis() as u64 + 1,
            None => 0,
        };
        self.deadline_ms.store(deadline, Ordering::Relaxed);
    }

    fn limit(&self) -> Option<Duration> {
        (self.limit_ms > 0).then(|| Duration::from_millis(self.limit_ms as u64))
    }

    fn timer(&self) -> Option<smol::Timer> {
        match self.deadline_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(smol::Timer::at(base() + Duration::from_millis(ms))),
        }
    }
}

/// What the task keeps between busy phases, in [`Ready`] (held by the task) so that the idle
/// wait holds only pointers and the keep-alive timer.
pub(super) struct State {
    keep_alive: KeepAlive,
    publish: PublishState,
    /// Server -> client topic aliases (the encoder lives only in busy phases).
    aliases: outbound::Aliases,
    /// How the session sees the end the reader chose; none: abnormal (network, panic, kick).
    departure: DepartureSlot,
}

impl State {
    pub(super) fn new(keep_alive: u16) -> State {
        State {
            keep_alive: KeepAlive::new(keep_alive),
            publish: PublishState::default(),
            aliases: None,
            departure: DepartureSlot::default(),
        }
    }
}

/// Runs the connection: the CONNECT handshake, then the phases until it ends, then detaches
/// the session and closes the socket. The connection's places under the limits are given
/// back when this returns (or is dropped); `pending` (waiting for CONNECT) once the handshake
/// is done.
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
    pending: ConnectionPermit,
) -> impl Future<Output = ()> + Send {
    async move {
        // Not bound to a name first: a named result would keep a second copy of the connection
        // in every idle task (its storage lives to the end of the block). A refused client's
        // socket was closed by the handshake.
        let Some(mut ready) = handshake.await else {
            return;
        };
        // Past the handshake: no longer counted as waiting for CONNECT.
        drop(pending);
        let served = AssertUnwindSafe(serve_phases(&mut ready))
            .catch_unwind()
            .await;
        let r = &ready;
        let stream = &r.stream;
        let conn = &r.conn;
        let sent_disconnect = match served {
            Ok(sent) => sent,
            Err(panic) => {
                let what = panic_message(&*panic);
                tracing::error!(peer = %conn.peer, client_id = %conn.client_id, panic = what,
                    "connection task panicked: session detached, connection closed");
                conn.broker.stats.connection_panicked();
                r.state.departure.set(None);
                false
            }
        };
        let departure = r.state.departure.take().unwrap_or(Departure::Abnormal);
        // The session ends (or detaches) before the socket closes: a client that reconnects the
        // moment it sees the close must find the session as this connection left it. Boxed, like
        // the close: the task reserves room for its largest state, and these are never idle.
        Box::pin(
            conn.broker
                .disconnect(&conn.client_id, conn.conn_id, departure),
        )
        .await;
        if sent_disconnect {
            Box::pin(super::graceful_close(stream)).await;
        } else {
            Box::pin(stream.close()).await;
        }
        tracing::debug!(peer = %conn.peer, client_id = %conn.client_id, "client disconnected");
    }
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
            let wakeup = ready.replies.wakeup();
            readable = match idle(&ready.stream, wakeup, &ready.state.keep_alive).await {
                Wake::Readable => true,
                Wake::Notified => false,
                Wake::KeepAlive => {
                    let close = Close::Broker {
                        code: Dr::KeepAliveTimeout,
                        why: "keep alive timeout",
                    };
                    end_reading(&ready.conn, &ready.replies, &ready.state.departure, close);
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
fn end_reading(
    conn: &Conn,
    replies: &super::replies::Replies,
    departure: &DepartureSlot,
    close: Close,
) {
    if let Close::Broker { why, .. } = close {
        tracing::info!(peer = %conn.peer, client_id = %conn.client_id, reason = why, "closing connection");
    }
    departure.set(Some(close.departure()));
    replies.close(close);
}

/// The idle state: waits for input, the connection's wake-up or the keep-alive deadline, in
/// one poll function (no buffer, one timer). A wake-up since the writer's last look (the flag
/// taken before it) ends the wait at once.
fn idle<'a>(
    stream: &'a Stream,
    wakeup: &'a Wakeup,
    keep_alive: &KeepAlive,
) -> impl Future<Output = Wake> + 'a {
    let mut timer = keep_alive.timer();
    future::poll_fn(move |cx| {
        // A read error is found by the read that follows.
        if stream.poll_readable(cx).is_ready() {
            return Poll::Ready(Wake::Readable);
        }
        if wakeup.poll_woken(cx).is_ready() {
            return Poll::Ready(Wake::Notified);
        }
        if let Some(t) = &mut timer {
            if Pin::new(t).poll(cx).is_ready() {
                return Poll::Ready(Wake::KeepAlive);
            }
        }
        Poll::Pending
    })
}

/// Which side of a busy phase has run out of work (the one that runs out second ends it).
#[derive(Default)]
struct Sides {
    reader_idle: AtomicBool,
    writer_idle: AtomicBool,
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
    out.aliases = state.aliases.take();
    let end = {
        let mut read = pin!(read_side(
            conn,
            stream,
            reader,
            replies,
            &state.keep_alive,
            &mut state.publish,
            readable,
            &sides,
        ));
        let mut write = pin!(write_side(conn, stream, replies, &mut out, &sides));
        let departure = &state.departure;
        future::poll_fn(|cx| {
            if reading {
                if let Poll::Ready(r) = read.as_mut().poll(cx) {
                    match r {
                        Ok(()) => return Poll::Ready(None),
                        Err(close) => {
                            end_reading(conn, replies, departure, close);
                            reading = false;
                        }
                    }
                }
            }
            write.as_mut().poll(cx).map(Some)
        })
        .await
    };
    state.aliases = out.aliases.take();
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
    keep_alive: &KeepAlive,
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
        let mut timer = keep_alive.timer();
        let waited = future::poll_fn(|cx| {
            if stream.poll_readable(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            if let Some(t) = &mut timer {
                if Pin::new(t).poll(cx).is_ready() {
                    return Poll::Ready(Err(ReadError::TimedOut));
                }
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
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;

    use mqtt_proto::Protocol;

    use crate::auth::ListenerPolicy;
    use crate::broker::{Broker, Connections};
    use crate::connection::{inbound::PANIC_TOPIC, serve, test_support};
    use crate::transport::Transport;

    /// Serves the next connection of `listener` on a thread of its own.
    fn serve_next(broker: &Arc<Broker>, listener: &TcpListener) -> std::thread::JoinHandle<()> {
        let (server, peer) = listener.accept().expect("accept");
        let stream = Transport::plain(smol::Async::new(server).expect("async socket"));
        let policy = ListenerPolicy {
            allow_anonymous: true,
            use_identity_as_username: false,
        };
        let permit = Arc::new(Connections::new(1)).try_acquire().expect("permit");
        let fut = serve(broker.clone(), stream, peer, policy, permit);
        std::thread::spawn(move || smol::block_on(fut))
    }

    /// MQTT 3.1.1 CONNECT of a persistent session (clean session 0, keep alive 0), with a
    /// retained will on `will/<id>` when `will` is set.
    fn connect_packet(id: &str, will: bool) -> Vec<u8> {
        let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04];
        body.push(if will { 0x24 } else { 0x00 });
        body.extend_from_slice(&[0, 0]);
        let mut field = |b: &[u8]| {
            body.extend_from_slice(&(b.len() as u16).to_be_bytes());
            body.extend_from_slice(b);
        };
        field(id.as_bytes());
        if will {
            field(format!("will/{id}").as_bytes());
            field(b"gone");
        }
        let mut p = vec![0x10, body.len() as u8];
        p.extend_from_slice(&body);
        p
    }

    /// Connects and sends CONNECT (the CONNACK comes once the connection is served).
    fn connect(addr: std::net::SocketAddr, id: &str, will: bool) -> TcpStream {
        let mut c = TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        c.write_all(&connect_packet(id, will)).expect("CONNECT");
        c
    }

    /// Reads a CONNACK Success; whether it says session present.
    fn read_connack(c: &mut TcpStream) -> bool {
        let mut ack = [0u8; 4];
        c.read_exact(&mut ack).expect("CONNACK");
        assert_eq!(
            [ack[0], ack[1], ack[3]],
            [0x20, 0x02, 0x00],
            "CONNACK {ack:?}"
        );
        ack[2] == 1
    }

    /// Every departure the reader can choose comes back as it was set, once.
    #[test]
    fn the_departure_slot_gives_back_what_was_set_once() {
        use super::DepartureSlot;
        use crate::broker::Departure;
        let slot = DepartureSlot::default();
        assert!(slot.take().is_none());
        for (send_will, expiry) in [
            (false, None),
            (true, None),
            (false, Some(0)),
            (true, Some(u32::MAX)),
        ] {
            slot.set(Some(Departure::Graceful { send_will, expiry }));
            match slot.take() {
                Some(Departure::Graceful {
                    send_will: w,
                    expiry: e,
                }) => assert_eq!((w, e), (send_will, expiry)),
                _ => panic!("graceful ({send_will}, {expiry:?}) lost"),
            }
            assert!(slot.take().is_none(), "taken once");
        }
        slot.set(Some(Departure::Abnormal));
        assert!(matches!(slot.take(), Some(Departure::Abnormal)));
        slot.set(Some(Departure::Abnormal));
        slot.set(None);
        assert!(slot.take().is_none());
    }

    /// The connection's block holds its places under `limits.max_connections` and
    /// `limits.max_connections_per_ip` (handed over by the permits) and gives both back when
    /// the connection ends.
    #[test]
    fn an_ended_connection_gives_back_its_places_under_both_connection_limits() {
        let t = test_support::conn(Protocol::V311, false);
        let broker = t.conn.broker.clone();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let ip = addr.ip();
        let per_ip = broker.live.max_connections_per_ip();
        // Every place of 127.0.0.1 but one taken: the connection takes the last one.
        let others: Vec<_> = (1..per_ip)
            .map(|_| broker.try_acquire_ip(ip).expect("a place"))
            .collect();

        let mut c = connect(addr, "places", false);
        let task = serve_next(&broker, &listener);
        assert!(!read_connack(&mut c));
        assert_eq!(broker.connections.active(), 1);
        assert!(
            broker.try_acquire_ip(ip).is_none(),
            "the connection holds the last place"
        );
        drop(c);
        task.join().expect("connection task");
        assert_eq!(broker.connections.active(), 0);
        let again = broker.try_acquire_ip(ip);
        assert!(again.is_some(), "its place is free again");
        drop((again, others));
    }

    /// Deliveries wake the connection but are not input: a client that only receives still
    /// times out one and a half keep-alive periods after its last packet.
    #[test]
    fn deliveries_do_not_count_as_keep_alive_activity() {
        use crate::message::{now_ms, Message};
        use std::time::{Duration, Instant};

        let t = test_support::conn(Protocol::V311, false);
        let broker = t.conn.broker.clone();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut c = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // CONNECT: clean session, keep alive 1 s, client id "ka".
        c.write_all(&[
            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 1, 0, 2, b'k', b'a',
        ])
        .expect("CONNECT");
        let task = serve_next(&broker, &listener);
        assert!(!read_connack(&mut c));
        c.write_all(&[0x82, 9, 0, 1, 0, 4, b'k', b'a', b'/', b't', 0])
            .expect("SUBSCRIBE");
        let mut suback = [0u8; 5];
        c.read_exact(&mut suback).expect("SUBACK");
        let last_input = Instant::now();
        let publisher = {
            let broker = broker.clone();
            std::thread::spawn(move || {
                while last_input.elapsed() < Duration::from_secs(5) {
                    let msg = Message {
                        topic: "ka/t".into(),
                        payload: bytes::Bytes::from_static(b"x"),
                        qos: 0,
                        retain: false,
                        received_ms: now_ms(),
                        expiry_secs: None,
                        publisher: "test".into(),
                        from_downlink: false,
                        props: None,
                    };
                    smol::block_on(broker.publish(Arc::new(msg), None));
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let mut received = 0;
        let mut buf = [0u8; 256];
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
        let closed_after = last_input.elapsed();
        task.join().expect("connection task");
        publisher.join().expect("publisher");
        assert!(received >= 5 * 9, "deliveries arrived: {received} bytes");
        // 1.5 s of keep-alive, then up to 0.5 s of graceful close.
        assert!(
            closed_after >= Duration::from_millis(1400) && closed_after < Duration::from_secs(3),
            "closed {closed_after:?} after the last input"
        );
    }

    /// A panic in a connection's task is caught: counted, the session detached as for a broken
    /// connection (the will published, the persistent session kept), the socket closed, and the
    /// client gets its session back when it reconnects.
    #[test]
    fn a_panicking_connection_detaches_its_session_and_the_client_can_resume_it() {
        let t = test_support::conn(Protocol::V311, false);
        let broker = t.conn.broker.clone();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");

        let mut c = connect(addr, "panicky", true);
        let task = serve_next(&broker, &listener);
        assert!(!read_connack(&mut c), "a new session");
        assert_eq!(broker.gauges().sessions_online, 1);
        // A QoS 0 PUBLISH on the topic whose handler panics (test builds only).
        let topic = PANIC_TOPIC.as_bytes();
        let mut publish = vec![0x30, (2 + topic.len() + 1) as u8, 0, topic.len() as u8];
        publish.extend_from_slice(topic);
        publish.push(b'!');
        c.write_all(&publish).expect("PUBLISH");
        task.join()
            .expect("the panic does not escape the connection's task");
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(rest.is_empty(), "closed without a packet: {rest:?}");

        assert_eq!(broker.stats.counters().connection_panics, 1);
        let g = broker.gauges();
        assert_eq!(g.sessions_online, 0, "the session is detached");
        assert_eq!(g.sessions_offline_persistent, 1, "and kept");
        assert_eq!(g.retained_messages, 1, "the will (retained) was published");

        let mut again = connect(addr, "panicky", false);
        let task = serve_next(&broker, &listener);
        assert!(read_connack(&mut again), "session present");
        assert_eq!(broker.gauges().sessions_online, 1);
        drop(again);
        task.join().expect("connection task");
        assert_eq!(broker.stats.counters().connection_panics, 1);
    }
}
