//! One client connection: CONNECT handshake, then a reader and a writer running together.
//!
//! The reader decodes packets and hands replies to the writer through a bounded channel; an
//! acknowledgement that promises durability carries the storage ticket it must wait for, so a
//! publisher can keep many QoS 1/2 messages in flight while each PUBACK still follows its fsync.
//! The writer also drains the session's queue within the client's Receive Maximum.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{future, FutureExt};
use mqtt_proto::v5::{self, DisconnectReasonCode as Dr, Packet};
use mqtt_proto::{Pid, Protocol, QoS, QosPid, TopicName};

use crate::broker::{Broker, ConnectRequest, Departure, Outgoing, Published};
use crate::codec::{self, FrameError};
use crate::message::{now_ms, Message, MessageProps};
use crate::session::Kick;
use crate::storage::WillRecord;
use crate::topic::SubOptions;
use crate::transport::Transport;

type Stream = Arc<Transport>;

/// A reply for the writer. `ticket` != 0: send only once that storage ticket is committed.
/// Kept small: the hot path (acks) is inline, rarer packets are boxed.
enum Control {
    Packet {
        ticket: u64,
        packet: Reply,
        incoming_done: bool,
    },
    Close(Option<(Dr, &'static str)>),
}

enum Reply {
    Puback(Pid, v5::PubackReasonCode),
    Pubrec(Pid, v5::PubrecReasonCode),
    Pubrel(Pid, v5::PubrelReasonCode),
    Pubcomp(Pid, v5::PubcompReasonCode),
    Pingresp,
    Other(Box<Packet>),
}

impl Reply {
    fn into_packet(self) -> Packet {
        match self {
            Reply::Puback(p, c) => Packet::Puback(v5::Puback::new(p, c)),
            Reply::Pubrec(p, c) => Packet::Pubrec(v5::Pubrec::new(p, c)),
            Reply::Pubrel(p, c) => Packet::Pubrel(v5::Pubrel::new(p, c)),
            Reply::Pubcomp(p, c) => Packet::Pubcomp(v5::Pubcomp::new(p, c)),
            Reply::Pingresp => Packet::Pingresp,
            Reply::Other(p) => *p,
        }
    }
}

/// Replies from the reader to the writer: a plain queue in the connection, bounded (the reader
/// waits for room), woken through the session's notify event. Allocates only while it holds
/// replies, so an idle connection costs nothing here.
struct Replies {
    queue: std::sync::Mutex<VecDeque<Control>>,
    room: event_listener::Event,
    cap: usize,
    notify: Arc<event_listener::Event>,
}

impl Replies {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Control>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn send(&self, ticket: u64, packet: Reply, incoming_done: bool) -> Result<(), ()> {
        let mut item = Some(Control::Packet {
            ticket,
            packet,
            incoming_done,
        });
        loop {
            let room = self.room.listen();
            {
                let mut q = self.lock();
                if q.len() < self.cap {
                    q.extend(item.take());
                    break;
                }
            }
            room.await;
        }
        self.notify.notify(usize::MAX);
        Ok(())
    }

    fn close(&self, reason: Option<(Dr, &'static str)>) {
        self.lock().push_back(Control::Close(reason));
        self.notify.notify(usize::MAX);
    }

    fn pop(&self) -> Option<Control> {
        let mut q = self.lock();
        let c = q.pop_front();
        if q.is_empty() && q.capacity() > 16 {
            q.shrink_to_fit();
        }
        drop(q);
        if c.is_some() {
            self.room.notify(1);
        }
        c
    }
}

/// Buffered frame reader; the buffer shrinks back after a large packet.
struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

const READ_CHUNK: usize = 2048;
/// Longest pause of a publisher for one slow subscriber; past it, the subscriber's queue bound
/// applies (messages beyond it are dropped and logged).
const CONGESTION_WAIT: Duration = Duration::from_secs(5);

enum ReadError {
    Closed,
    Io(std::io::Error),
    Frame(FrameError),
}

impl FrameReader {
    fn new() -> Self {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// Reads until one whole frame is buffered; returns its range in `buf`.
    async fn next(&mut self, stream: &Stream, max: usize) -> Result<(usize, usize), ReadError> {
        loop {
            let avail = &self.buf[self.start..self.end];
            if let Some((h, rem)) = codec::fixed_header(avail).map_err(ReadError::Frame)? {
                let total = h + rem;
                if total > max {
                    return Err(ReadError::Frame(FrameError::TooLarge(total)));
                }
                if avail.len() >= total {
                    let r = (self.start, self.start + total);
                    self.start += total;
                    return Ok(r);
                }
                if self.buf.len() - self.start < total {
                    // Compact, then grow to exactly what this frame needs.
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                    if self.buf.len() < total {
                        self.buf.resize(total, 0);
                    }
                }
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
                // Idle: hold no buffer while waiting for the next bytes (most connections of
                // a gateway are idle most of the time).
                if stream.can_wait_readable() {
                    self.buf = Vec::new();
                    stream.readable().await.map_err(ReadError::Io)?;
                } else if self.buf.len() > 4 * READ_CHUNK {
                    self.buf.truncate(READ_CHUNK);
                    self.buf.shrink_to_fit();
                }
                if self.buf.len() < READ_CHUNK {
                    self.buf.resize(READ_CHUNK, 0);
                }
            } else if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = stream
                .read(&mut self.buf[self.end..])
                .await
                .map_err(ReadError::Io)?;
            if n == 0 {
                return Err(ReadError::Closed);
            }
            self.end += n;
        }
    }
}

/// Everything the reader and writer share about this connection.
struct Conn {
    broker: Arc<Broker>,
    stream: Stream,
    peer: SocketAddr,
    proto: Protocol,
    client_id: Arc<str>,
    conn_id: u64,
    /// Client's Topic Alias Maximum (server -> client aliases).
    client_alias_max: u16,
    client_max_packet: usize,
    /// QoS 1/2 publishes from the client not yet completed (for our Receive Maximum).
    incoming_unacked: AtomicUsize,
    problem_info: bool,
}

impl Conn {
    /// One incoming QoS 1/2 exchange finished. Saturating: a PUBREL for a message received on
    /// an earlier connection of the session was never counted on this one.
    fn incoming_done(&self) {
        let _ = self
            .incoming_unacked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// Serves one accepted TCP connection to its end. Never panics on client input.
pub async fn serve(broker: Arc<Broker>, stream: Transport, peer: SocketAddr) {
    let stream: Stream = Arc::new(stream);
    // Everything up to CONNACK runs in a box that is freed once the session is attached, so an
    // idle connection's task keeps only the state of its reader and writer loops.
    let Some((ready, reader)) = Box::pin(accept(broker.clone(), stream.clone(), peer)).await else {
        return;
    };
    run(broker.clone(), stream, peer, ready, reader).await;
    broker.connections.fetch_sub(1, Ordering::AcqRel);
}

/// Reads and checks CONNECT, applies the connection limit and attaches the session. On
/// success the connection is counted in `broker.connections`.
async fn accept(
    broker: Arc<Broker>,
    stream: Stream,
    peer: SocketAddr,
) -> Option<(Ready, FrameReader)> {
    let mut reader = FrameReader::new();
    let limits = &broker.cfg.limits;
    let max_packet = limits.max_packet_size as usize;
    let timeout = Duration::from_secs(limits.connect_timeout_secs);
    let first = reader
        .next(&stream, max_packet)
        .or(async {
            smol::Timer::after(timeout).await;
            Err(ReadError::Frame(FrameError::BadConnect("timeout".into())))
        })
        .await;
    let (lo, hi) = match first {
        Ok(r) => r,
        Err(ReadError::Frame(FrameError::TooLarge(n))) => {
            tracing::warn!(%peer, size = n, "connection refused: CONNECT larger than limits.max_packet_size");
            return None;
        }
        Err(ReadError::Frame(FrameError::BadConnect(_))) => {
            tracing::info!(%peer, "connection refused: no CONNECT within limits.connect_timeout_secs");
            return None;
        }
        Err(ReadError::Frame(e)) => {
            tracing::info!(%peer, error = ?e, "connection refused: malformed first packet");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "connection closed before sending CONNECT");
            return None;
        }
    };
    let frame = reader.buf[lo..hi].to_vec();
    let (h, _) = match codec::fixed_header(&frame) {
        Ok(Some(x)) => x,
        _ => return None,
    };
    let proto = match codec::connect_protocol(&frame, h) {
        Ok(p) => p,
        Err(FrameError::UnsupportedProtocol(level)) => {
            tracing::warn!(%peer, level, "connection refused: unsupported protocol level");
            let connack = Packet::Connack(v5::Connack::new(
                false,
                v5::ConnectReasonCode::UnsupportedProtocolVersion,
            ));
            // A client of an unknown version understands the MQTT 3 CONNACK best.
            if let Some(b) = codec::encode(&connack, Protocol::V311, &[]) {
                let _ = stream.write_all(&b).await;
            }
            return None;
        }
        Err(e) => {
            tracing::warn!(%peer, error = ?e, "connection refused: first packet is not a valid CONNECT");
            return None;
        }
    };
    if let Err(e) = codec::check_connect_flags(&frame, h, proto) {
        tracing::warn!(%peer, error = ?e, "connection refused: invalid CONNECT flags");
        if proto == Protocol::V500 {
            send_connack_error(&stream, proto, v5::ConnectReasonCode::MalformedPacket, None).await;
        }
        return None;
    }
    let connect = match codec::decode(&frame, proto) {
        Ok(Packet::Connect(c)) => c,
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(%peer, error = ?e, "connection refused: malformed CONNECT");
            if proto == Protocol::V500 {
                send_connack_error(&stream, proto, v5::ConnectReasonCode::MalformedPacket, None)
                    .await;
            }
            return None;
        }
    };
    drop(frame);

    if broker.connections.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
        broker.connections.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!(%peer, limit = limits.max_connections, "connection refused: limits.max_connections reached");
        let code = if proto == Protocol::V500 {
            v5::ConnectReasonCode::ServerBusy
        } else {
            v5::ConnectReasonCode::ServerUnavailable
        };
        send_connack_error(&stream, proto, code, Some("limits.max_connections reached")).await;
        return None;
    }
    match handshake(broker.clone(), stream, peer, proto, connect).await {
        Some(ready) => Some((ready, reader)),
        None => {
            broker.connections.fetch_sub(1, Ordering::AcqRel);
            None
        }
    }
}

async fn send_connack_error(
    stream: &Stream,
    proto: Protocol,
    code: v5::ConnectReasonCode,
    reason: Option<&str>,
) {
    let mut c = v5::Connack::new(false, code);
    if let Some(r) = reason {
        c.properties.reason_string = Some(Arc::from(r));
    }
    if let Some(b) = codec::encode(&Packet::Connack(c), proto, &[]) {
        let _ = stream.write_all(&b).await;
    }
}

fn will_record(w: &v5::LastWill, client_id: &Arc<str>) -> WillRecord {
    let p = &w.properties;
    WillRecord {
        msg: Message {
            topic: Arc::from(&*w.topic_name),
            payload: w.payload.clone(),
            qos: w.qos as u8,
            retain: w.retain,
            received_ms: now_ms(),
            expiry_secs: p.message_expiry_interval,
            publisher: client_id.clone(),
            from_downlink: false,
            props: props_from(
                p.payload_is_utf8,
                &p.response_topic,
                &p.correlation_data,
                &p.user_properties,
                &p.content_type,
            ),
        },
        delay_secs: p.delay_interval.unwrap_or(0),
    }
}

fn props_from(
    utf8: Option<bool>,
    response_topic: &Option<TopicName>,
    correlation: &Option<Bytes>,
    user: &[v5::UserProperty],
    content_type: &Option<Arc<str>>,
) -> Option<Box<MessageProps>> {
    if utf8.is_none()
        && response_topic.is_none()
        && correlation.is_none()
        && user.is_empty()
        && content_type.is_none()
    {
        return None;
    }
    Some(Box::new(MessageProps {
        payload_is_utf8: utf8,
        response_topic: response_topic.as_ref().map(|t| Arc::from(&**t)),
        correlation_data: correlation.clone(),
        user_properties: user
            .iter()
            .map(|u| (u.name.clone(), u.value.clone()))
            .collect(),
        content_type: content_type.clone(),
    }))
}

/// What the CONNECT handshake leaves for the connection's life.
struct Ready {
    conn: Arc<Conn>,
    connected: crate::broker::Connected,
    keep_alive: u16,
    replies: Replies,
}

/// Validates CONNECT, attaches the session and queues the CONNACK. Runs boxed (once per
/// connection) so that its large state is not kept in every connection's task afterwards.
async fn handshake(
    broker: Arc<Broker>,
    stream: Stream,
    peer: SocketAddr,
    proto: Protocol,
    connect: v5::Connect,
) -> Option<Ready> {
    let limits = broker.cfg.limits.clone();
    let v5 = proto == Protocol::V500;
    let cp = &connect.properties;
    if cp.auth_method.is_some() {
        tracing::warn!(%peer, "connection refused: enhanced authentication is not supported");
        send_connack_error(&stream, proto, v5::ConnectReasonCode::BadAuthMethod, None).await;
        return None;
    }
    if cp.receive_max == Some(0) || cp.max_packet_size == Some(0) {
        // [MQTT-3.1.2-...]: both are a Protocol Error when zero.
        tracing::warn!(%peer, "connection refused: Receive Maximum or Maximum Packet Size of 0");
        send_connack_error(&stream, proto, v5::ConnectReasonCode::ProtocolError, None).await;
        return None;
    }
    // Client id: assigned when empty, where the protocol allows it.
    let mut assigned = None;
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        let allowed = v5 || (proto == Protocol::V311 && connect.clean_start);
        if !allowed {
            tracing::warn!(%peer, "connection refused: empty client id needs clean session (MQTT 3.1.1) and is not allowed in MQTT 3.1");
            send_connack_error(
                &stream,
                proto,
                v5::ConnectReasonCode::ClientIdentifierNotValid,
                None,
            )
            .await;
            return None;
        }
        let id: Arc<str> = Arc::from(format!("auto-{:016x}", fastrand::u64(..)));
        assigned = Some(id.clone());
        id
    } else {
        connect.client_id.clone()
    };
    // MQTT 3.1 limits client ids to 23 characters; like mosquitto we accept longer ones.
    let asked_expiry = cp.session_expiry_interval.unwrap_or(0);
    let expiry = asked_expiry.min(limits.max_session_expiry_secs);
    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    if v5 && keep_alive > limits.max_keep_alive_secs {
        keep_alive = limits.max_keep_alive_secs;
        server_keep_alive = Some(keep_alive);
    }
    let client_receive_max = cp.receive_max.unwrap_or(u16::MAX).max(1);
    let inflight_limit = client_receive_max.min(limits.max_inflight) as usize;
    let will = connect
        .last_will
        .as_ref()
        .map(|w| will_record(w, &client_id));

    let connected = broker
        .connect(ConnectRequest {
            client_id: client_id.clone(),
            protocol: proto as u8,
            clean_start: connect.clean_start,
            expiry_secs: expiry,
            will,
            inflight_limit,
        })
        .await;
    if broker.store.wait(connected.ticket).await.is_err() {
        tracing::error!(%peer, %client_id, "connection refused: session could not be stored");
        send_connack_error(
            &stream,
            proto,
            v5::ConnectReasonCode::UnspecifiedError,
            None,
        )
        .await;
        broker
            .disconnect(&client_id, connected.conn_id, Departure::Abnormal)
            .await;
        return None;
    }

    let mut connack = v5::Connack::new(connected.session_present, v5::ConnectReasonCode::Success);
    if v5 {
        let p = &mut connack.properties;
        if asked_expiry != expiry {
            p.session_expiry_interval = Some(expiry);
        }
        p.receive_max = Some(limits.receive_maximum);
        p.max_packet_size = Some(limits.max_packet_size);
        p.topic_alias_max = Some(limits.topic_alias_maximum);
        p.assigned_client_id = assigned.clone();
        p.server_keep_alive = server_keep_alive;
        p.retain_available = Some(true);
        p.wildcard_subscription_available = Some(true);
        p.subscription_id_available = Some(true);
        p.shared_subscription_available = Some(true);
        if cp.request_response_info == Some(true) {
            p.response_info = Some(Arc::from(format!("response/{client_id}")));
        }
    }
    let conn = Arc::new(Conn {
        broker: broker.clone(),
        stream: stream.clone(),
        peer,
        proto,
        client_id: client_id.clone(),
        conn_id: connected.conn_id,
        client_alias_max: cp.topic_alias_max.unwrap_or(0),
        client_max_packet: cp.max_packet_size.map(|m| m as usize).unwrap_or(usize::MAX),
        incoming_unacked: AtomicUsize::new(0),
        problem_info: cp.request_problem_info.unwrap_or(true),
    });
    tracing::debug!(%peer, %client_id, protocol = ?proto, keep_alive, session_present = connected.session_present, "client connected");

    let replies = Replies {
        queue: std::sync::Mutex::new(VecDeque::new()),
        room: event_listener::Event::new(),
        cap: limits.receive_maximum as usize + 64,
        notify: connected.notify.clone(),
    };
    // CONNACK goes first, ahead of any redelivery.
    let _ = replies
        .send(0, Reply::Other(Box::new(Packet::Connack(connack))), false)
        .await;
    Some(Ready {
        conn,
        connected,
        keep_alive,
        replies,
    })
}

async fn run(
    broker: Arc<Broker>,
    stream: Stream,
    peer: SocketAddr,
    ready: Ready,
    reader: FrameReader,
) {
    let Ready {
        conn,
        connected,
        keep_alive,
        replies,
    } = ready;
    let client_id = conn.client_id.clone();
    let departure = std::sync::Mutex::new(Departure::Abnormal);
    let reader_fut = async {
        let (dep, close) = read_loop(&conn, reader, keep_alive, &replies).await;
        *departure.lock().unwrap_or_else(|e| e.into_inner()) = dep;
        replies.close(close);
        future::pending::<bool>().await
    };
    let writer_fut = write_loop(&conn, &replies, connected.notify.clone(), &connected.kick);
    let sent_disconnect = reader_fut.or(writer_fut).await;
    let dep = std::mem::replace(
        &mut *departure.lock().unwrap_or_else(|e| e.into_inner()),
        Departure::Abnormal,
    );
    // The session ends (or detaches) before the socket closes: a client that reconnects the
    // moment it sees the close must find the session as this connection left it.
    broker.disconnect(&client_id, connected.conn_id, dep).await;
    if sent_disconnect {
        graceful_close(&stream).await;
    } else {
        stream.shutdown();
    }
    tracing::debug!(%peer, %client_id, "client disconnected");
}

/// After the broker sent a DISCONNECT: closes so that the DISCONNECT just written is read by the
/// client. Closing a socket with unread input makes the kernel send RST, which can overtake the DISCONNECT, and some clients drop
/// buffered packets when they see EOF in the same read. So: give the client a moment to close
/// first (draining its input), then close.
async fn graceful_close(stream: &Stream) {
    let _ = stream.flush().await;
    let drain = async {
        let mut sink = [0u8; 1024];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    drain
        .or(async {
            smol::Timer::after(Duration::from_millis(500)).await;
        })
        .await;
    stream.shutdown();
}

/// Reads packets until the connection ends; returns how it ended and what to tell the client.
async fn read_loop(
    conn: &Conn,
    mut reader: FrameReader,
    keep_alive: u16,
    replies: &Replies,
) -> Ending {
    let broker = &conn.broker;
    let limits = &broker.cfg.limits;
    let max_packet = limits.max_packet_size as usize;
    let mut aliases: HashMap<u16, Arc<str>> = HashMap::new();
    let fail = |code: Dr, why: &'static str| closing(conn, code, why);
    loop {
        let next = reader.next(&conn.stream, max_packet);
        let res = if keep_alive > 0 {
            let limit = Duration::from_millis(keep_alive as u64 * 1500);
            next.or(async {
                smol::Timer::after(limit).await;
                Err(ReadError::Frame(FrameError::Malformed("keep-alive".into())))
            })
            .await
        } else {
            next.await
        };
        let (lo, hi) = match res {
            Ok(r) => r,
            Err(ReadError::Closed) => return (Departure::Abnormal, None),
            Err(ReadError::Io(e)) => {
                tracing::debug!(peer = %conn.peer, error = %e, "read error");
                return (Departure::Abnormal, None);
            }
            Err(ReadError::Frame(FrameError::TooLarge(_))) => {
                return fail(Dr::PacketTooLarge, "packet larger than maximum packet size")
            }
            Err(ReadError::Frame(FrameError::Malformed(m))) if m == "keep-alive" => {
                return fail(Dr::KeepAliveTimeout, "keep alive timeout")
            }
            Err(ReadError::Frame(_)) => return fail(Dr::MalformedPacket, "malformed packet"),
        };
        let packet = match codec::decode(&reader.buf[lo..hi], conn.proto) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(peer = %conn.peer, client_id = %conn.client_id, error = ?e, "malformed packet");
                return fail(Dr::MalformedPacket, "malformed packet");
            }
        };
        if let Some(ending) = Box::pin(handle_packet(conn, packet, &mut aliases, replies)).await {
            return ending;
        }
    }
}

/// How the connection ends, when a packet ends it.
type Ending = (Departure, Option<(Dr, &'static str)>);

/// The broker ends the connection for `why`, telling a v5 client with DISCONNECT `code`.
fn closing(conn: &Conn, code: Dr, why: &'static str) -> Ending {
    tracing::info!(peer = %conn.peer, client_id = %conn.client_id, reason = why, "closing connection");
    (Departure::Abnormal, Some((code, why)))
}

/// Handles one packet from the client; `Some` ends the connection. Called through a box so
/// that the large per-packet state exists only while a packet is being handled, not in every
/// idle connection's task.
async fn handle_packet(
    conn: &Conn,
    packet: Packet,
    aliases: &mut HashMap<u16, Arc<str>>,
    replies: &Replies,
) -> Option<Ending> {
    let broker = &conn.broker;
    let limits = &broker.cfg.limits;
    let v5 = conn.proto == Protocol::V500;
    let end = |code: Dr, why: &'static str| Some(closing(conn, code, why));
    let send = |ticket: u64, packet: Reply, incoming_done: bool| {
        replies.send(ticket, packet, incoming_done)
    };
    match packet {
        Packet::Publish(p) => {
            let qos = p.qos_pid.qos();
            if qos != QoS::Level0 {
                let n = conn.incoming_unacked.fetch_add(1, Ordering::AcqRel) + 1;
                if n > limits.receive_maximum as usize {
                    return end(Dr::ReceiveMaximumExceeded, "receive maximum exceeded");
                }
            }
            // Topic alias (client -> server).
            let topic: Arc<str> = match p.properties.topic_alias {
                Some(0) => return end(Dr::TopicAliasInvalid, "topic alias 0"),
                Some(a) if a > limits.topic_alias_maximum => {
                    return end(Dr::TopicAliasInvalid, "topic alias above maximum")
                }
                Some(a) => {
                    if p.topic_name.is_empty() {
                        match aliases.get(&a) {
                            Some(t) => t.clone(),
                            None => return end(Dr::ProtocolError, "unknown topic alias"),
                        }
                    } else {
                        let t: Arc<str> = Arc::from(&*p.topic_name);
                        aliases.insert(a, t.clone());
                        t
                    }
                }
                None => {
                    if p.topic_name.is_empty() {
                        return end(Dr::ProtocolError, "empty topic without alias");
                    }
                    Arc::from(&*p.topic_name)
                }
            };
            if topic.starts_with("$share/") && v5 {
                return end(Dr::TopicNameInvalid, "publish to a $share topic");
            }
            let pr = &p.properties;
            let msg = Arc::new(Message {
                topic,
                payload: p.payload.clone(),
                qos: qos as u8,
                retain: p.retain,
                received_ms: now_ms(),
                expiry_secs: pr.message_expiry_interval,
                publisher: conn.client_id.clone(),
                from_downlink: false,
                props: props_from(
                    pr.payload_is_utf8,
                    &pr.response_topic,
                    &pr.correlation_data,
                    &pr.user_properties,
                    &pr.content_type,
                ),
            });
            let qos2_from = match p.qos_pid {
                QosPid::Level2(pid) => Some((&conn.client_id, pid.value())),
                _ => None,
            };
            let res = broker.publish(msg, qos2_from).await;
            let duplicate = matches!(res, Published::Duplicate { .. });
            // (ticket to wait for, reason code, congested subscriber)
            let (ticket, code, congested) = match res {
                Published::Duplicate { ticket } => (ticket, 0x00, None),
                Published::Accepted {
                    ticket,
                    matched,
                    congested,
                } => (ticket, if matched { 0x00 } else { 0x10 }, congested),
                Published::QuotaExceeded => (0, 0x97, None),
                Published::SessionGone => return Some((Departure::Abnormal, None)),
            };
            if code == 0x97 && !v5 && qos != QoS::Level0 {
                // MQTT 3 has no negative acknowledgement: closing tells the publisher.
                return end(Dr::QuotaExceeded, "sync outbox full (reject_new)");
            }
            let sent = match p.qos_pid {
                QosPid::Level0 => Ok(()),
                QosPid::Level1(pid) => {
                    let code = v5::PubackReasonCode::from_u8(code)
                        .unwrap_or(v5::PubackReasonCode::UnspecifiedError);
                    send(ticket, Reply::Puback(pid, code), true).await
                }
                QosPid::Level2(pid) => {
                    if duplicate {
                        // A duplicate does not open a new incoming slot.
                        conn.incoming_done();
                    }
                    let code = v5::PubrecReasonCode::from_u8(code)
                        .unwrap_or(v5::PubrecReasonCode::UnspecifiedError);
                    send(ticket, Reply::Pubrec(pid, code), code as u8 >= 0x80).await
                }
            };
            if sent.is_err() {
                return Some((Departure::Abnormal, None));
            }
            if let Some(c) = congested {
                // Flow control: a subscriber of this message is falling behind. Stop
                // reading from this publisher until it catches up (bounded wait), so that
                // an online subscriber's queue does not overflow and drop messages.
                let drained = c.drained.listen();
                if broker.congested(&c.client_id) {
                    drained
                        .or(async {
                            smol::Timer::after(CONGESTION_WAIT).await;
                        })
                        .await;
                }
            }
        }
        Packet::Pubrel(r) => {
            let (known, ticket) = broker.release(&conn.client_id, r.pid.value()).await;
            let code = if known {
                v5::PubcompReasonCode::Success
            } else {
                v5::PubcompReasonCode::PacketIdentifierNotFound
            };
            if send(ticket, Reply::Pubcomp(r.pid, code), known)
                .await
                .is_err()
            {
                return Some((Departure::Abnormal, None));
            }
        }
        Packet::Puback(a) => {
            broker.complete(&conn.client_id, a.pid.value()).await;
        }
        Packet::Pubrec(a) => {
            let failed = a.reason_code as u8 >= 0x80;
            if broker
                .received(&conn.client_id, a.pid.value(), failed)
                .await
                && !failed
            {
                let rel = Reply::Pubrel(a.pid, v5::PubrelReasonCode::Success);
                if send(0, rel, false).await.is_err() {
                    return Some((Departure::Abnormal, None));
                }
            } else if !failed {
                let rel = Reply::Pubrel(a.pid, v5::PubrelReasonCode::PacketIdentifierNotFound);
                if send(0, rel, false).await.is_err() {
                    return Some((Departure::Abnormal, None));
                }
            }
        }
        Packet::Pubcomp(a) => {
            broker.complete(&conn.client_id, a.pid.value()).await;
        }
        Packet::Subscribe(s) => {
            let id = s.properties.subscription_id.map(|v| v.value()).unwrap_or(0);
            let mut filters = Vec::new();
            let mut early: Vec<Option<u8>> = Vec::new();
            for (f, o) in &s.topics {
                if f.is_shared() && o.no_local {
                    // [MQTT-3.8.3-4]: protocol error.
                    return end(Dr::ProtocolError, "no local on a shared subscription");
                }
                if f.is_shared() && !v5 && f.shared_filter().is_none() {
                    early.push(Some(0x8F));
                    continue;
                }
                early.push(None);
                filters.push((
                    Arc::from(&**f),
                    SubOptions {
                        qos: o.max_qos as u8,
                        no_local: o.no_local,
                        retain_as_published: o.retain_as_published,
                        retain_handling: o.retain_handling as u8,
                        id,
                    },
                ));
            }
            let (results, ticket) = broker.subscribe(&conn.client_id, filters).await;
            let mut results = results.into_iter();
            let codes = early
                .into_iter()
                .map(|e| match e {
                    Some(c) => sub_code(Err(c)),
                    None => sub_code(results.next().unwrap_or(Err(0x80))),
                })
                .collect();
            let ack = Reply::Other(Box::new(Packet::Suback(v5::Suback::new(s.pid, codes))));
            if send(ticket, ack, false).await.is_err() {
                return Some((Departure::Abnormal, None));
            }
        }
        Packet::Unsubscribe(u) => {
            let filters: Vec<Arc<str>> = u.topics.iter().map(|f| Arc::from(&**f)).collect();
            let (existed, ticket) = broker.unsubscribe(&conn.client_id, &filters).await;
            let codes = existed
                .into_iter()
                .map(|e| {
                    if e {
                        v5::UnsubscribeReasonCode::Success
                    } else {
                        v5::UnsubscribeReasonCode::NoSubscriptionExisted
                    }
                })
                .collect();
            let ack = Reply::Other(Box::new(Packet::Unsuback(v5::Unsuback::new(u.pid, codes))));
            if send(ticket, ack, false).await.is_err() {
                return Some((Departure::Abnormal, None));
            }
        }
        Packet::Pingreq => {
            if send(0, Reply::Pingresp, false).await.is_err() {
                return Some((Departure::Abnormal, None));
            }
        }
        Packet::Disconnect(d) => {
            let expiry = d.properties.session_expiry_interval;
            if let Some(e) = expiry {
                let was = broker.session_expiry(&conn.client_id);
                if was == 0 && e != 0 {
                    // [MQTT-3.14.2-2]
                    return end(Dr::ProtocolError, "session expiry changed from zero");
                }
            }
            let send_will = d.reason_code == Dr::DisconnectWithWillMessage;
            tracing::debug!(peer = %conn.peer, client_id = %conn.client_id, reason = ?d.reason_code, "client sent DISCONNECT");
            return Some((Departure::Graceful { send_will, expiry }, None));
        }
        Packet::Connect(_) => return end(Dr::ProtocolError, "second CONNECT"),
        Packet::Auth(_) => return end(Dr::ProtocolError, "AUTH without authentication method"),
        _ => return end(Dr::ProtocolError, "packet type not sent by clients"),
    }
    None
}

fn sub_code(r: Result<u8, u8>) -> v5::SubscribeReasonCode {
    use v5::SubscribeReasonCode as S;
    match r {
        Ok(0) => S::GrantedQoS0,
        Ok(1) => S::GrantedQoS1,
        Ok(_) => S::GrantedQoS2,
        Err(0x97) => S::QuotaExceeded,
        Err(0x8F) => S::TopicFilterInvalid,
        Err(_) => S::UnspecifiedError,
    }
}

/// Server -> client topic aliases, assigned first come first served until the client's maximum.
struct OutAliases {
    max: u16,
    map: HashMap<Arc<str>, u16>,
}

/// Writes replies and deliveries until told to close, kicked, or the socket fails. Returns
/// whether it sent the client a DISCONNECT.
async fn write_loop(
    conn: &Conn,
    replies: &Replies,
    notify: Arc<event_listener::Event>,
    kick: &std::sync::atomic::AtomicU8,
) -> bool {
    let broker = &conn.broker;
    let mut out: Vec<u8> = Vec::new();
    let mut aliases = OutAliases {
        max: conn.client_alias_max,
        map: HashMap::new(),
    };
    let batch = 64;
    loop {
        let listener = notify.listen();
        // Replies first, in order; each waits for its storage ticket.
        let mut closing = None;
        while let Some(c) = replies.pop() {
            match c {
                Control::Packet {
                    ticket,
                    packet,
                    incoming_done,
                } => {
                    if ticket != 0 {
                        if !out.is_empty() && write(conn, &mut out).await.is_err() {
                            return false;
                        }
                        if Box::pin(broker.store.wait(ticket)).await.is_err() {
                            // Not durable: no acknowledgement. The client will resend.
                            closing = Some(Some((Dr::UnspecifiedError, "storage failure")));
                            break;
                        }
                    }
                    if incoming_done {
                        conn.incoming_done();
                    }
                    push_packet(conn, &packet.into_packet(), &[], &mut out);
                }
                Control::Close(reason) => {
                    closing = Some(reason);
                    break;
                }
            }
            if out.len() > 64 * 1024 && write(conn, &mut out).await.is_err() {
                return false;
            }
        }
        if let Some(reason) = closing {
            let sent = reason.is_some();
            if let Some((code, why)) = reason {
                let mut d = v5::Disconnect::new(code);
                if conn.problem_info {
                    d.properties.reason_string = Some(Arc::from(why));
                }
                push_packet(conn, &Packet::Disconnect(d), &[], &mut out);
            }
            let _ = write(conn, &mut out).await;
            return sent;
        }
        if let Some(k) = crate::session::kicked(kick) {
            let code = match k {
                Kick::TakenOver => Dr::SessionTakenOver,
                Kick::Shutdown => Dr::ServerShuttingDown,
            };
            push_packet(
                conn,
                &Packet::Disconnect(v5::Disconnect::new(code)),
                &[],
                &mut out,
            );
            let r = write(conn, &mut out).await;
            tracing::debug!(client_id = %conn.client_id, reason = ?code, result = ?r, "connection closed by the broker");
            return true;
        }
        // Boxed (like the waits): the writer's idle state stays small.
        let deliveries = Box::pin(broker.take_outgoing(&conn.client_id, conn.conn_id, batch)).await;
        let (deliveries, ticket) = deliveries;
        if Box::pin(broker.store.wait(ticket)).await.is_err() {
            return false;
        }
        let got = deliveries.len();
        for d in deliveries {
            match d {
                Outgoing::Pubrel(pid) => {
                    if let Ok(pid) = Pid::try_from(pid) {
                        push_packet(
                            conn,
                            &Packet::Pubrel(v5::Pubrel::new_success(pid)),
                            &[],
                            &mut out,
                        );
                    }
                }
                Outgoing::Publish {
                    msg,
                    qos,
                    retain,
                    dup,
                    pid,
                    sub_ids,
                } => {
                    if !push_publish(
                        conn,
                        &mut aliases,
                        &msg,
                        qos,
                        retain,
                        dup,
                        pid,
                        &sub_ids,
                        &mut out,
                    ) && qos > 0
                    {
                        // Too large for this client: discarded as if delivered [MQTT-3.1.2-25].
                        Box::pin(broker.complete(&conn.client_id, pid)).await;
                    }
                }
            }
        }
        if !out.is_empty() {
            if write(conn, &mut out).await.is_err() {
                return false;
            }
            continue;
        }
        if got > 0 {
            continue;
        }
        // Nothing to do: sleep until a delivery, a reply, a kick or shutdown (all of which
        // notify the session's event, which `listener` was registered on before the checks).
        listener
            .or(async {
                broker.shutdown.listen().await;
            })
            .await;
    }
}

async fn write(conn: &Conn, out: &mut Vec<u8>) -> std::io::Result<()> {
    let r = conn.stream.write_all(out).await;
    out.clear();
    if out.capacity() > 256 * 1024 {
        out.shrink_to(4096);
    }
    r
}

fn push_packet(conn: &Conn, p: &Packet, extra_ids: &[u32], out: &mut Vec<u8>) {
    if let Some(b) = codec::encode(p, conn.proto, extra_ids) {
        out.extend_from_slice(&b);
    }
}

/// Encodes one PUBLISH; `false` when it exceeds the client's maximum packet size.
#[allow(clippy::too_many_arguments)]
fn push_publish(
    conn: &Conn,
    aliases: &mut OutAliases,
    msg: &Message,
    qos: u8,
    retain: bool,
    dup: bool,
    pid: u16,
    sub_ids: &[u32],
    out: &mut Vec<u8>,
) -> bool {
    let qos_pid = match (qos, Pid::try_from(pid)) {
        (0, _) => QosPid::Level0,
        (1, Ok(p)) => QosPid::Level1(p),
        (_, Ok(p)) => QosPid::Level2(p),
        _ => return false,
    };
    let Ok(full_topic) = TopicName::try_from(msg.topic.clone()) else {
        return false;
    };
    let mut properties = v5::PublishProperties::default();
    if conn.proto == Protocol::V500 {
        if let Some(p) = &msg.props {
            properties.payload_is_utf8 = p.payload_is_utf8;
            properties.response_topic = p
                .response_topic
                .as_ref()
                .and_then(|t| TopicName::try_from(t.clone()).ok());
            properties.correlation_data = p.correlation_data.clone();
            properties.user_properties = p
                .user_properties
                .iter()
                .map(|(k, v)| v5::UserProperty {
                    name: k.clone(),
                    value: v.clone(),
                })
                .collect();
            properties.content_type = p.content_type.clone();
        }
        properties.message_expiry_interval = msg.remaining_expiry(now_ms()).map(|r| r.max(1));
        properties.subscription_id = sub_ids
            .first()
            .and_then(|id| v5::VarByteInt::try_from(*id).ok());
    }
    let extra = if sub_ids.len() > 1 {
        &sub_ids[1..]
    } else {
        &[]
    };
    let mut publish = v5::Publish {
        dup,
        retain,
        qos_pid,
        topic_name: full_topic.clone(),
        payload: msg.payload.clone(),
        properties,
    };
    // Server -> client alias: reuse when known, assign while slots remain.
    let mut new_alias = None;
    if conn.proto == Protocol::V500 && aliases.max > 0 {
        if let Some(a) = aliases.map.get(&msg.topic) {
            publish.properties.topic_alias = Some(*a);
            publish.topic_name = TopicName::try_from("").unwrap_or(full_topic);
        } else if aliases.map.len() < aliases.max as usize {
            let a = aliases.map.len() as u16 + 1;
            publish.properties.topic_alias = Some(a);
            new_alias = Some(a);
        }
    }
    let Some(bytes) = codec::encode(&Packet::Publish(publish), conn.proto, extra) else {
        return false;
    };
    if bytes.len() > conn.client_max_packet {
        tracing::debug!(client_id = %conn.client_id, size = bytes.len(), "message larger than the client's maximum packet size: not sent");
        return false;
    }
    if let Some(a) = new_alias {
        aliases.map.insert(msg.topic.clone(), a);
    }
    out.extend_from_slice(&bytes);
    true
}
