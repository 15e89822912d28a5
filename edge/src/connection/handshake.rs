//! The CONNECT phase: read and check the first packet, apply the connection limit, attach the
//! session, and queue the CONNACK. A refused client gets a CONNACK error where its protocol
//! allows one and holds no permit; an accepted one holds a `ConnectionPermit` for its life.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use mqtt_proto::v5::{self, ConnectReasonCode as Cr, Packet};
use mqtt_proto::Protocol;

use super::frame::{FrameReader, ReadError};
use super::inbound::message_props;
use super::inbound::topic_fits;
use super::replies::{Answer, Replies, Reply};
use super::{Conn, Stream};
use crate::auth::{Access, AuthOutcome, ClientIdentity, Credentials, ListenerPolicy};
use crate::broker::{Broker, ConnectRequest, ConnectionPermit, Departure, IpPermit};
use crate::codec::{self, FrameError};
use crate::message::{now_ms, Message};
use crate::stats::Refused;
use crate::storage::WillRecord;

/// What the CONNECT handshake leaves for the connection's life, held inline by the
/// connection's task (one heap block for the task and the connection: `task::run`). It holds
/// the connection's places under `limits.max_connections` and `limits.max_connections_per_ip`
/// (handed over by their permits, given back when it is dropped: no permit fields in every
/// connection).
pub(super) struct Ready {
    /// The socket (plain TCP inline, TLS and WebSocket boxed).
    pub(super) stream: Stream,
    /// The reader and writer borrow it from here.
    pub(super) conn: Conn,
    /// Also holds the connection's wake-up ([`Replies::wakeup`]).
    pub(super) replies: Replies,
    /// The socket's reader, with any bytes the client sent after its CONNECT.
    pub(super) reader: FrameReader,
    /// What the connection's task keeps between its busy phases.
    pub(super) state: super::task::State,
}

/// An accepted CONNECT: everything of [`Ready`] but the socket and the reader.
struct Accepted {
    conn: Conn,
    replies: Replies,
    permits: (ConnectionPermit, IpPermit),
    state: super::task::State,
}

impl Ready {
    /// Takes over the places of the permits (given back on drop).
    fn new(a: Accepted, reader: FrameReader, stream: Stream) -> Ready {
        let (permit, ip_permit) = a.permits;
        permit.hand_over();
        ip_permit.hand_over();
        Ready {
            stream,
            conn: a.conn,
            replies: a.replies,
            reader,
            state: a.state,
        }
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        let broker = &self.conn.broker;
        broker.connections.release();
        // The same address the permit was taken for (`accept`).
        broker.release_ip(self.conn.peer.ip());
    }
}

/// Reads and checks CONNECT, takes a connection permit and attaches the session: the
/// connection, or none when the client was refused (its socket is closed here: WebSocket
/// and TLS end with their closing handshakes).
pub(super) async fn accept(
    broker: Arc<Broker>,
    stream: Stream,
    peer: SocketAddr,
    policy: ListenerPolicy,
    pending: ConnectionPermit,
) -> Option<Ready> {
    let mut reader = FrameReader::new();
    let accepted = accept_on(broker, &stream, &mut reader, peer, policy).await;
    // Past the handshake: no longer counted as waiting for CONNECT.
    drop(pending);
    match accepted {
        Some(accepted) => Some(Ready::new(accepted, reader, stream)),
        None => {
            stream.close().await;
            None
        }
    }
}

/// [`accept`] on a borrowed socket.
async fn accept_on(
    broker: Arc<Broker>,
    stream: &Stream,
    reader: &mut FrameReader,
    peer: SocketAddr,
    policy: ListenerPolicy,
) -> Option<Accepted> {
    let (proto, connect) = read_connect(reader, stream, peer, &broker).await?;

    let Some(permit) = broker.connections.try_acquire() else {
        tracing::warn!(%peer, limit = broker.connections.max(), "connection refused: limits.max_connections reached");
        broker.stats.refused(Refused::MaxConnections);
        let code = if proto == Protocol::V500 {
            Cr::ServerBusy
        } else {
            Cr::ServerUnavailable
        };
        send_connack_error(stream, proto, code, Some("limits.max_connections reached")).await;
        return None;
    };
    let Some(ip_permit) = broker.try_acquire_ip(peer.ip()) else {
        broker.stats.refused(Refused::MaxConnectionsPerIp);
        if crate::ratelog::allowed(&REFUSED_PER_IP) {
            tracing::warn!(%peer, client_id = %connect.client_id, limit = broker.live.max_connections_per_ip(),
                "connection refused: limits.max_connections_per_ip reached (further refusals logged once a second)");
        }
        send_connack_error(
            stream,
            proto,
            Cr::ServerBusy,
            Some("limits.max_connections_per_ip reached"),
        )
        .await;
        return None;
    };
    let username = authenticate(&broker, stream, peer, proto, &connect, policy).await?;
    // A refused handshake drops the permits with it.
    let permits = (permit, ip_permit);
    handshake(
        broker.clone(),
        stream,
        peer,
        proto,
        connect,
        permits,
        username,
    )
    .await
}

/// The first packet, which must be a well-formed CONNECT within `limits.connect_timeout_secs`.
async fn read_connect(
    reader: &mut FrameReader,
    stream: &Stream,
    peer: SocketAddr,
    broker: &Broker,
) -> Option<(Protocol, v5::Connect)> {
    let max_packet = broker.live.max_packet_size() as usize;
    let timeout = Duration::from_secs(broker.live.connect_timeout_secs());
    let frame = match reader.next(stream, max_packet, Some(timeout)).await {
        Ok(f) => f,
        Err(ReadError::Frame(FrameError::TooLarge(n))) => {
            tracing::warn!(%peer, size = n, "connection refused: CONNECT larger than limits.max_packet_size");
            broker.stats.refused(Refused::ProtocolError);
            return None;
        }
        Err(ReadError::TimedOut) => {
            tracing::info!(%peer, "connection refused: no CONNECT within limits.connect_timeout_secs");
            broker.stats.refused(Refused::ConnectTimeout);
            return None;
        }
        Err(ReadError::Frame(e)) => {
            tracing::info!(%peer, error = ?e, "connection refused: malformed first packet");
            broker.stats.refused(Refused::ProtocolError);
            return None;
        }
        Err(ReadError::Closed | ReadError::Io(_)) => {
            tracing::debug!(%peer, "connection closed before sending CONNECT");
            return None;
        }
    };
    broker.stats.packet_received(frame.len());
    let Ok(Some((h, _))) = codec::fixed_header(frame) else {
        return None;
    };
    let proto = match codec::connect_protocol(frame, h) {
        Ok(p) => p,
        Err(FrameError::UnsupportedProtocol(level)) => {
            tracing::warn!(%peer, level, "connection refused: unsupported protocol level");
            broker.stats.refused(Refused::UnsupportedProtocolVersion);
            // A client of an unknown version understands the MQTT 3 CONNACK best.
            send_connack_error(stream, Protocol::V311, Cr::UnsupportedProtocolVersion, None).await;
            return None;
        }
        Err(e) => {
            tracing::warn!(%peer, error = ?e, "connection refused: first packet is not a valid CONNECT");
            broker.stats.refused(Refused::ProtocolError);
            return None;
        }
    };
    if let Err(e) = codec::check_connect_flags(frame, h, proto) {
        tracing::warn!(%peer, error = ?e, "connection refused: invalid CONNECT flags");
        broker.stats.refused(Refused::ProtocolError);
        if proto == Protocol::V500 {
            send_connack_error(stream, proto, Cr::MalformedPacket, None).await;
        }
        return None;
    }
    match codec::decode(frame, proto) {
        Ok(Packet::Connect(c)) => Some((proto, c)),
        Ok(_) => {
            broker.stats.refused(Refused::ProtocolError);
            None
        }
        Err(e) => {
            tracing::warn!(%peer, error = ?e, "connection refused: malformed CONNECT");
            broker.stats.refused(Refused::ProtocolError);
            if proto == Protocol::V500 {
                send_connack_error(stream, proto, Cr::MalformedPacket, None).await;
            }
            None
        }
    }
}

/// Last log of a per-address refusal (rate limit).
static REFUSED_PER_IP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Checks the client's credentials against the listener's policy, after the delay the failure
/// throttle sets for its address. Returns the user name (None: anonymous), or None after
/// sending the refusal (v5 0x86/0x87, v3 4/5).
async fn authenticate(
    broker: &Broker,
    stream: &Stream,
    peer: SocketAddr,
    proto: Protocol,
    connect: &v5::Connect,
    policy: ListenerPolicy,
) -> Option<Option<Arc<str>>> {
    let identity = stream.peer_common_name();
    let creds = Credentials {
        username: connect.username.as_deref(),
        password: connect.password.as_deref(),
        tls_identity: identity.as_deref(),
    };
    let outcome = broker.auth().authenticator.authenticate(&policy, &creds);
    let delay = broker.auth_delay(peer.ip());
    if !delay.is_zero() {
        smol::Timer::after(delay).await;
    }
    broker.auth_result(peer.ip(), outcome.is_accepted());
    match outcome {
        AuthOutcome::Accepted { username } => Some(username.map(Arc::from)),
        refused => {
            broker.stats.refused(Refused::NotAuthorized);
            // Never the password; rate-limited so that a flood of guesses cannot fill the log.
            if crate::ratelog::allowed(&REFUSED_AUTH) {
                tracing::warn!(%peer, client_id = %connect.client_id, username = ?creds.username,
                    outcome = %refused, "connection refused: authentication failed");
            }
            send_connack_error(stream, proto, refused.v5_reason(), None).await;
            None
        }
    }
}

/// Last log of an authentication refusal (rate limit).
static REFUSED_AUTH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn send_connack_error(stream: &Stream, proto: Protocol, code: Cr, reason: Option<&str>) {
    let mut c = v5::Connack::new(false, code);
    if let Some(r) = reason {
        c.properties.reason_string = Some(Arc::from(r));
    }
    if let Some(b) = codec::encode(&Packet::Connack(c), proto) {
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
            props: message_props(
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

/// Validates CONNECT, attaches the session and queues the CONNACK. Runs boxed (once per
/// connection) so that its large state is not kept in every connection's task afterwards.
async fn handshake(
    broker: Arc<Broker>,
    stream: &Stream,
    peer: SocketAddr,
    proto: Protocol,
    connect: v5::Connect,
    permits: (ConnectionPermit, IpPermit),
    username: Option<Arc<str>>,
) -> Option<Accepted> {
    let limits = &broker.cfg.limits;
    // Taken once: the value this client is told is the one its packets are checked against.
    let max_packet = broker.live.max_packet_size();
    let v5 = proto == Protocol::V500;
    let cp = &connect.properties;
    if cp.auth_method.is_some() {
        tracing::warn!(%peer, "connection refused: enhanced authentication is not supported");
        broker.stats.refused(Refused::ProtocolError);
        send_connack_error(stream, proto, Cr::BadAuthMethod, None).await;
        return None;
    }
    if cp.receive_max == Some(0) || cp.max_packet_size == Some(0) {
        // [MQTT-3.1.2-...]: both are a Protocol Error when zero.
        tracing::warn!(%peer, "connection refused: Receive Maximum or Maximum Packet Size of 0");
        broker.stats.refused(Refused::ProtocolError);
        send_connack_error(stream, proto, Cr::ProtocolError, None).await;
        return None;
    }
    // Client id: assigned when empty, where the protocol allows it.
    let mut assigned = None;
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        let allowed = v5 || (proto == Protocol::V311 && connect.clean_start);
        if !allowed {
            tracing::warn!(%peer, "connection refused: empty client id needs clean session (MQTT 3.1.1) and is not allowed in MQTT 3.1");
            broker.stats.refused(Refused::ProtocolError);
            send_connack_error(stream, proto, Cr::ClientIdentifierNotValid, None).await;
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
    let acl = broker.auth().client_acl(&ClientIdentity {
        username: username.as_deref(),
        client_id: &client_id,
    });
    let will = connect
        .last_will
        .as_ref()
        .filter(|w| {
            let ok = acl.check(&w.topic_name, Access::Write) && topic_fits(&w.topic_name, limits);
            if !ok {
                tracing::warn!(%peer, %client_id, topic = %w.topic_name,
                    "will dropped: the client may not publish on its topic");
            }
            ok
        })
        .map(|w| will_record(w, &client_id));

    if expiry > 0 && broker.store.disk_full().is_full() {
        // A persistent session is stored before its CONNACK: refused rather than left
        // waiting for disk space (v5 0x97 Quota exceeded, v3 3 Server unavailable).
        tracing::warn!(%peer, %client_id, "connection refused: disk full, a persistent session cannot be stored");
        let code = if v5 {
            Cr::QuotaExceeded
        } else {
            Cr::ServerUnavailable
        };
        send_connack_error(stream, proto, code, Some("disk full")).await;
        return None;
    }
    let connected = broker
        .connect(ConnectRequest {
            client_id: client_id.clone(),
            protocol: proto as u8,
            clean_start: connect.clean_start,
            expiry_secs: expiry,
            will,
            inflight_limit,
            acl: acl.clone(),
            username: username.clone(),
        })
        .await;
    if let Some(ticket) = connected.ticket {
        if broker.store.wait(ticket).await.is_err() {
            tracing::error!(%peer, %client_id, "connection refused: session could not be stored");
            broker.stats.refused(Refused::StorageError);
            send_connack_error(stream, proto, Cr::UnspecifiedError, None).await;
            broker
                .disconnect(&client_id, connected.conn_id, Departure::Abnormal)
                .await;
            return None;
        }
    }

    let mut connack = v5::Connack::new(connected.session_present, Cr::Success);
    if v5 {
        let p = &mut connack.properties;
        if asked_expiry != expiry {
            p.session_expiry_interval = Some(expiry);
        }
        p.receive_max = Some(limits.receive_maximum);
        p.max_packet_size = Some(max_packet);
        p.topic_alias_max = Some(limits.topic_alias_maximum);
        p.assigned_client_id = assigned;
        p.server_keep_alive = server_keep_alive;
        p.retain_available = Some(true);
        p.wildcard_subscription_available = Some(true);
        p.subscription_id_available = Some(true);
        p.shared_subscription_available = Some(true);
        if cp.request_response_info == Some(true) {
            p.response_info = Some(Arc::from(format!("response/{client_id}")));
        }
    }
    let conn = Conn {
        broker: broker.clone(),
        peer: peer.into(),
        proto,
        client_id: client_id.clone(),
        conn_id: connected.conn_id,
        client_alias_max: cp.topic_alias_max.unwrap_or(0),
        client_max_packet: cp.max_packet_size.unwrap_or(u32::MAX),
        max_packet,
        incoming_unacked: AtomicU32::new(0),
        problem_info: cp.request_problem_info.unwrap_or(true),
        username,
        acl: std::sync::Mutex::new(acl),
    };
    tracing::debug!(%peer, %client_id, protocol = ?proto, keep_alive, session_present = connected.session_present, "client connected");

    // Watched by the keep-alive sweep once the task starts (`task::run`).
    connected.wakeup.keep_alive().start(keep_alive);
    let replies = Replies::new(connected.wakeup.clone());
    broker.stats.connection_accepted();
    // CONNACK goes first, ahead of any redelivery.
    replies
        .send(
            Answer::now(Reply::Other(Box::new(Packet::Connack(connack)))),
            conn.reply_cap(),
        )
        .await;
    Some(Accepted {
        conn,
        replies,
        permits,
        state: super::task::State::new(),
    })
}
