//! Upstream MQTT client plumbing: TCP/TLS connect (rustls + ring), bounded packet framing, and a
//! protocol-neutral view of the packets the uplink/downlink exchange, encoded and decoded with
//! `mqtt-proto` for MQTT 5 or 3.1.1.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use mqtt_proto::{v3, v5, Pid, QoS, QosPid, TopicFilter, TopicName};

use crate::config::{SyncConfig, TlsConfig, Upstream};
use crate::error::SyncError;

/// Largest packet we accept from the upstream (advertised as Maximum Packet Size in v5).
pub const MAX_INBOUND_PACKET: usize = 4 * 1024 * 1024;

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
pub type BoxStream = Box<dyn Stream>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    V5,
    V311,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::V5 => "5",
            Proto::V311 => "3.1.1",
        })
    }
}

/// Builds the rustls client configuration (ring provider) from `[sync.tls]`.
pub fn tls_config(t: Option<&TlsConfig>) -> Result<Arc<rustls::ClientConfig>, SyncError> {
    let tls_err = |e: String| SyncError::Tls(e);
    let mut roots = rustls::RootCertStore::empty();
    match t.and_then(|t| t.ca_file.as_ref()) {
        Some(path) => {
            let f = std::fs::File::open(path)
                .map_err(|e| tls_err(format!("ca_file {}: {e}", path.display())))?;
            let mut rd = std::io::BufReader::new(f);
            let mut n = 0;
            for c in rustls_pemfile::certs(&mut rd) {
                let c = c.map_err(|e| tls_err(format!("ca_file {}: {e}", path.display())))?;
                roots
                    .add(c)
                    .map_err(|e| tls_err(format!("ca_file {}: {e}", path.display())))?;
                n += 1;
            }
            if n == 0 {
                return Err(tls_err(format!(
                    "ca_file {}: no PEM certificate found",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots);
    let cfg = match t.and_then(|t| t.client_cert_file.as_ref().zip(t.client_key_file.as_ref())) {
        Some((cert, key)) => {
            let f = std::fs::File::open(cert)
                .map_err(|e| tls_err(format!("client_cert_file {}: {e}", cert.display())))?;
            let chain: Result<Vec<_>, _> =
                rustls_pemfile::certs(&mut std::io::BufReader::new(f)).collect();
            let chain =
                chain.map_err(|e| tls_err(format!("client_cert_file {}: {e}", cert.display())))?;
            let f = std::fs::File::open(key)
                .map_err(|e| tls_err(format!("client_key_file {}: {e}", key.display())))?;
            let k = rustls_pemfile::private_key(&mut std::io::BufReader::new(f))
                .map_err(|e| tls_err(format!("client_key_file {}: {e}", key.display())))?
                .ok_or_else(|| {
                    tls_err(format!("client_key_file {}: no private key", key.display()))
                })?;
            builder
                .with_client_auth_cert(chain, k)
                .map_err(|e| tls_err(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

async fn timeout<T>(
    d: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, SyncError>>,
) -> Result<T, SyncError> {
    let what = what.to_string();
    futures_lite::future::or(f, async move {
        smol::Timer::after(d).await;
        Err(SyncError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what} timed out after {}s", d.as_secs()),
        )))
    })
    .await
}

/// Opens TCP (and TLS when the address says `tls://`) to one upstream, bounded by the connect timeout.
pub async fn dial(
    up: &Upstream,
    cfg: &SyncConfig,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<BoxStream, SyncError> {
    let d = Duration::from_secs(cfg.connect_timeout_secs);
    let tcp = timeout(d, "tcp connect", async {
        Ok(smol::net::TcpStream::connect((up.host.as_str(), up.port)).await?)
    })
    .await?;
    let _ = tcp.set_nodelay(true);
    if !up.tls {
        return Ok(Box::new(tcp));
    }
    let tls = tls.ok_or_else(|| SyncError::Tls("no TLS configuration".into()))?;
    let name = cfg
        .tls
        .as_ref()
        .and_then(|t| t.server_name.clone())
        .unwrap_or_else(|| up.host.clone());
    let server_name = rustls::pki_types::ServerName::try_from(name.clone())
        .map_err(|e| SyncError::Tls(format!("server name `{name}`: {e}")))?;
    let connector = futures_rustls::TlsConnector::from(tls.clone());
    let stream = timeout(d, "tls handshake", async {
        connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| SyncError::Tls(format!("handshake with {up}: {e}")))
    })
    .await?;
    Ok(Box::new(stream))
}

/// Reads whole MQTT packets from a stream into a bounded buffer.
pub struct FrameReader<R> {
    rd: R,
    buf: Vec<u8>,
    start: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(rd: R) -> Self {
        FrameReader {
            rd,
            buf: Vec::with_capacity(8192),
            start: 0,
        }
    }

    /// Length of the complete packet at the front of the buffer, if any.
    fn frame_len(&self) -> Result<Option<usize>, SyncError> {
        edge_mqtt::frame::complete_frame_len(&self.buf[self.start..], MAX_INBOUND_PACKET)
            .map_err(|e| SyncError::Protocol(format!("upstream: {e}")))
    }

    /// Next complete packet (bytes of the whole frame). EOF is an error.
    pub async fn next(&mut self) -> Result<Vec<u8>, SyncError> {
        loop {
            if let Some(n) = self.frame_len()? {
                let frame = self.buf[self.start..self.start + n].to_vec();
                self.start += n;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Ok(frame);
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0u8; 8192];
            let n = self.rd.read(&mut chunk).await?;
            if n == 0 {
                return Err(SyncError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "upstream closed the connection",
                )));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Inbound packets, protocol-neutral.
#[derive(Debug)]
pub enum Inbound {
    ConnAck(ConnAck),
    Publish(InPublish),
    PubAck {
        pid: u16,
        code: u8,
        offset: Option<u64>,
    },
    PubRec {
        pid: u16,
        code: u8,
        offset: Option<u64>,
    },
    PubRel {
        pid: u16,
    },
    PubComp {
        pid: u16,
        code: u8,
    },
    SubAck {
        codes: Vec<u8>,
    },
    PingResp,
    Disconnect {
        code: u8,
        reason: Option<String>,
    },
    Other(&'static str),
}

#[derive(Debug, Default)]
pub struct ConnAck {
    pub session_present: bool,
    /// v5 reason code, or the v3 return code.
    pub code: u8,
    pub reason: Option<String>,
    pub receive_max: Option<u16>,
    pub max_qos: Option<u8>,
    pub max_packet_size: Option<u32>,
    pub server_keep_alive: Option<u16>,
    /// v5 Session Expiry Interval the server granted, when it differs from the one asked for.
    pub session_expiry: Option<u32>,
    /// A v3.x CONNACK "unacceptable protocol version" answered our v5 CONNECT.
    pub wants_older_protocol: bool,
}

#[derive(Debug)]
pub struct InPublish {
    pub pid: Option<u16>,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    pub payload: Bytes,
    pub user_properties: Vec<(String, String)>,
}

/// Parses RobustMQ's `offset` user property, e.g. `Some("[0]")` -> 0 (also accepts `[0]`, `0`).
pub fn parse_offset(v: &str) -> Option<u64> {
    let digits: String = v
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn offset_of(props: &[v5::UserProperty]) -> Option<u64> {
    props
        .iter()
        .find(|p| &*p.name == "offset")
        .and_then(|p| parse_offset(&p.value))
}

pub fn connect_reason_text(proto: Proto, code: u8) -> String {
    let s = match (proto, code) {
        (Proto::V311, 1) => "unacceptable protocol version",
        (Proto::V311, 2) => "client identifier rejected",
        (Proto::V311, 3) => "server unavailable",
        (Proto::V311, 4) => "bad user name or password",
        (Proto::V311, 5) => "not authorized",
        (Proto::V5, 0x80) => "unspecified error",
        (Proto::V5, 0x84) => "unsupported protocol version",
        (Proto::V5, 0x85) => "client identifier not valid",
        (Proto::V5, 0x86) => "bad user name or password",
        (Proto::V5, 0x87) => "not authorized",
        (Proto::V5, 0x88) => "server unavailable",
        (Proto::V5, 0x89) => "server busy",
        (Proto::V5, 0x8A) => "banned",
        (Proto::V5, 0x8C) => "bad authentication method",
        (Proto::V5, 0x97) => "quota exceeded",
        (Proto::V5, 0x9C) => "use another server",
        (Proto::V5, 0x9D) => "server moved",
        (Proto::V5, 0x9F) => "connection rate exceeded",
        _ => "refused",
    };
    format!("{s} (reason code {code:#04x})")
}

/// Decodes one frame for the negotiated protocol.
pub fn decode(proto: Proto, frame: &[u8]) -> Result<Inbound, SyncError> {
    if frame.len() == 4 && frame[0] == 0x20 && frame[1] == 2 && proto == Proto::V5 {
        // 2-byte CONNACK: a 3.1.1 server answering our v5 CONNECT.
        return Ok(Inbound::ConnAck(ConnAck {
            code: frame[3],
            wants_older_protocol: frame[3] == 1,
            ..ConnAck::default()
        }));
    }
    let perr = |e: String| SyncError::Protocol(e);
    match proto {
        Proto::V5 => {
            let p = match v5::Packet::decode(frame) {
                Ok(Some(p)) => p,
                Ok(None) => return Err(perr("truncated packet".into())),
                Err(e) => {
                    // Liberal where it cannot endanger data (README, "Upstream deviations").
                    return match crate::lenient::decode_v5(frame) {
                        Some(ev) => {
                            tracing::warn!(
                                packet = ?ev,
                                "upstream sent an invalid acknowledgement ({e:?}); accepted"
                            );
                            Ok(ev)
                        }
                        None => Err(perr(format!("{e:?}"))),
                    };
                }
            };
            Ok(match p {
                v5::Packet::Connack(c) => Inbound::ConnAck(ConnAck {
                    session_present: c.session_present,
                    code: c.reason_code as u8,
                    reason: c.properties.reason_string.as_ref().map(|s| s.to_string()),
                    receive_max: c.properties.receive_max,
                    max_qos: c.properties.max_qos.map(|q| q as u8),
                    max_packet_size: c.properties.max_packet_size,
                    server_keep_alive: c.properties.server_keep_alive,
                    session_expiry: c.properties.session_expiry_interval,
                    wants_older_protocol: false,
                }),
                v5::Packet::Publish(p) => Inbound::Publish(InPublish {
                    pid: p.qos_pid.pid().map(|p| p.value()),
                    qos: p.qos_pid.qos() as u8,
                    retain: p.retain,
                    topic: p.topic_name.to_string(),
                    payload: p.payload,
                    user_properties: p
                        .properties
                        .user_properties
                        .iter()
                        .map(|u| (u.name.to_string(), u.value.to_string()))
                        .collect(),
                }),
                v5::Packet::Puback(a) => Inbound::PubAck {
                    pid: a.pid.value(),
                    code: a.reason_code as u8,
                    offset: offset_of(&a.properties.user_properties),
                },
                v5::Packet::Pubrec(a) => Inbound::PubRec {
                    pid: a.pid.value(),
                    code: a.reason_code as u8,
                    offset: offset_of(&a.properties.user_properties),
                },
                v5::Packet::Pubrel(a) => Inbound::PubRel { pid: a.pid.value() },
                v5::Packet::Pubcomp(a) => Inbound::PubComp {
                    pid: a.pid.value(),
                    code: a.reason_code as u8,
                },
                v5::Packet::Suback(s) => Inbound::SubAck {
                    codes: s.topics.iter().map(|c| *c as u8).collect(),
                },
                v5::Packet::Pingresp => Inbound::PingResp,
                v5::Packet::Disconnect(d) => Inbound::Disconnect {
                    code: d.reason_code as u8,
                    reason: d.properties.reason_string.as_ref().map(|s| s.to_string()),
                },
                v5::Packet::Unsuback(_) => Inbound::Other("UNSUBACK"),
                v5::Packet::Auth(_) => Inbound::Other("AUTH"),
                _ => Inbound::Other("unexpected client-bound packet"),
            })
        }
        Proto::V311 => {
            let p = v3::Packet::decode(frame)
                .map_err(|e| perr(format!("{e:?}")))?
                .ok_or_else(|| perr("truncated packet".into()))?;
            Ok(match p {
                v3::Packet::Connack(c) => Inbound::ConnAck(ConnAck {
                    session_present: c.session_present,
                    code: c.code as u8,
                    ..ConnAck::default()
                }),
                v3::Packet::Publish(p) => Inbound::Publish(InPublish {
                    pid: p.qos_pid.pid().map(|p| p.value()),
                    qos: p.qos_pid.qos() as u8,
                    retain: p.retain,
                    topic: p.topic_name.to_string(),
                    payload: p.payload,
                    user_properties: Vec::new(),
                }),
                v3::Packet::Puback(pid) => Inbound::PubAck {
                    pid: pid.value(),
                    code: 0,
                    offset: None,
                },
                v3::Packet::Pubrec(pid) => Inbound::PubRec {
                    pid: pid.value(),
                    code: 0,
                    offset: None,
                },
                v3::Packet::Pubrel(pid) => Inbound::PubRel { pid: pid.value() },
                v3::Packet::Pubcomp(pid) => Inbound::PubComp {
                    pid: pid.value(),
                    code: 0,
                },
                v3::Packet::Suback(s) => Inbound::SubAck {
                    codes: s.topics.iter().map(|c| *c as u8).collect(),
                },
                v3::Packet::Pingresp => Inbound::PingResp,
                _ => Inbound::Other("unexpected client-bound packet"),
            })
        }
    }
}

fn enc_err<E: std::fmt::Debug>(e: E) -> SyncError {
    SyncError::Protocol(format!("encode: {e:?}"))
}

fn pid(p: u16) -> Result<Pid, SyncError> {
    Pid::try_from(p).map_err(enc_err)
}

fn qos_pid(qos: u8, p: u16) -> Result<QosPid, SyncError> {
    Ok(match qos {
        0 => QosPid::Level0,
        1 => QosPid::Level1(pid(p)?),
        _ => QosPid::Level2(pid(p)?),
    })
}

fn uprops(props: &[(String, String)]) -> Vec<v5::UserProperty> {
    props
        .iter()
        .map(|(k, v)| v5::UserProperty {
            name: k.as_str().into(),
            value: v.as_str().into(),
        })
        .collect()
}

/// The CONNECT packet of the persistent upstream session.
pub fn encode_connect(
    proto: Proto,
    cfg: &SyncConfig,
    keep_alive: u16,
) -> Result<Vec<u8>, SyncError> {
    let cid: Arc<str> = cfg.client_id().as_str().into();
    let username: Option<Arc<str>> = cfg.username.as_deref().map(Into::into);
    let password = cfg.password.as_ref().map(|p| Bytes::from(p.clone()));
    let bytes = match proto {
        Proto::V5 => {
            let mut c = v5::Connect::new(cid, keep_alive);
            c.clean_start = false;
            c.username = username;
            c.password = password;
            c.properties.session_expiry_interval = Some(cfg.session_expiry_secs);
            c.properties.receive_max = Some(64);
            c.properties.max_packet_size = Some(MAX_INBOUND_PACKET as u32);
            if let Some(t) = &cfg.tenant {
                c.properties.user_properties = uprops(&[("tenant".to_string(), t.clone())]);
            }
            v5::Packet::Connect(c).encode().map_err(enc_err)?
        }
        Proto::V311 => {
            let mut c = v3::Connect::new(cid, keep_alive);
            c.protocol = mqtt_proto::Protocol::V311;
            c.clean_session = false;
            // No properties in 3.1.1: RobustMQ takes the tenant from a `tenant@user` user name.
            c.username = match (&cfg.tenant, username) {
                (Some(t), Some(u)) => Some(format!("{t}@{u}").into()),
                (Some(_), None) => None, // refused by the config check for protocol "3.1.1"
                (None, u) => u,
            };
            c.password = password;
            v3::Packet::Connect(c).encode().map_err(enc_err)?
        }
    };
    Ok(bytes.as_ref().to_vec())
}

/// An outgoing PUBLISH.
pub struct OutPublish<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub pid: u16,
    pub dup: bool,
    pub retain: bool,
    pub user_properties: &'a [(String, String)],
    pub content_type: Option<&'a str>,
    pub message_expiry_secs: Option<u32>,
}

pub fn encode_publish(proto: Proto, p: &OutPublish<'_>) -> Result<Vec<u8>, SyncError> {
    let topic = TopicName::try_from(p.topic).map_err(enc_err)?;
    let payload = Bytes::copy_from_slice(p.payload);
    let bytes = match proto {
        Proto::V5 => {
            let mut m = v5::Publish::new(qos_pid(p.qos, p.pid)?, topic, payload);
            m.dup = p.dup;
            m.retain = p.retain;
            m.properties.user_properties = uprops(p.user_properties);
            m.properties.content_type = p.content_type.map(Into::into);
            m.properties.message_expiry_interval = p.message_expiry_secs;
            v5::Packet::Publish(m).encode().map_err(enc_err)?
        }
        Proto::V311 => {
            let mut m = v3::Publish::new(qos_pid(p.qos, p.pid)?, topic, payload);
            m.dup = p.dup;
            m.retain = p.retain;
            v3::Packet::Publish(m).encode().map_err(enc_err)?
        }
    };
    Ok(bytes.as_ref().to_vec())
}

/// PUBACK / PUBREC / PUBREL / PUBCOMP with success reason.
#[derive(Debug, Clone, Copy)]
pub enum Ack {
    PubAck,
    PubRec,
    PubRel,
    PubComp,
}

pub fn encode_ack(proto: Proto, kind: Ack, p: u16) -> Result<Vec<u8>, SyncError> {
    let id = pid(p)?;
    let bytes = match proto {
        Proto::V5 => match kind {
            Ack::PubAck => v5::Packet::Puback(v5::Puback::new_success(id)),
            Ack::PubRec => v5::Packet::Pubrec(v5::Pubrec::new_success(id)),
            Ack::PubRel => v5::Packet::Pubrel(v5::Pubrel::new_success(id)),
            Ack::PubComp => v5::Packet::Pubcomp(v5::Pubcomp::new_success(id)),
        }
        .encode()
        .map_err(enc_err)?,
        Proto::V311 => match kind {
            Ack::PubAck => v3::Packet::Puback(id),
            Ack::PubRec => v3::Packet::Pubrec(id),
            Ack::PubRel => v3::Packet::Pubrel(id),
            Ack::PubComp => v3::Packet::Pubcomp(id),
        }
        .encode()
        .map_err(enc_err)?,
    };
    Ok(bytes.as_ref().to_vec())
}

/// SUBSCRIBE to the downlink filters (v5: retain-as-published so local retain flags are right).
pub fn encode_subscribe(
    proto: Proto,
    p: u16,
    filters: &[(String, u8)],
) -> Result<Vec<u8>, SyncError> {
    let id = pid(p)?;
    let mut topics = Vec::with_capacity(filters.len());
    for (f, q) in filters {
        let tf = TopicFilter::try_from(f.as_str()).map_err(enc_err)?;
        let q = QoS::from_u8(*q).map_err(enc_err)?;
        topics.push((tf, q));
    }
    let bytes = match proto {
        Proto::V5 => {
            let topics = topics
                .into_iter()
                .map(|(tf, q)| {
                    let mut o = v5::SubscriptionOptions::new(q);
                    o.retain_as_published = true;
                    o.no_local = true;
                    // Subscribed again at every connect: retained messages only the first time.
                    o.retain_handling = v5::RetainHandling::SendAtSubscribeIfNotExist;
                    (tf, o)
                })
                .collect();
            v5::Packet::Subscribe(v5::Subscribe::new(id, topics))
                .encode()
                .map_err(enc_err)?
        }
        Proto::V311 => v3::Packet::Subscribe(v3::Subscribe::new(id, topics))
            .encode()
            .map_err(enc_err)?,
    };
    Ok(bytes.as_ref().to_vec())
}

pub fn encode_pingreq(proto: Proto) -> Vec<u8> {
    let _ = proto;
    vec![0xC0, 0x00]
}

pub fn encode_disconnect(proto: Proto) -> Vec<u8> {
    match proto {
        // v5 normal disconnect, reason 0 omitted (remaining length 0): session is kept.
        Proto::V5 | Proto::V311 => vec![0xE0, 0x00],
    }
}

/// Writes one encoded packet.
pub async fn write_packet<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    bytes: &[u8],
) -> Result<(), SyncError> {
    w.write_all(bytes).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robustmq_offset_property_is_parsed() {
        assert_eq!(parse_offset("Some(\"[0]\")"), Some(0));
        assert_eq!(parse_offset("Some(\"[17]\")"), Some(17));
        assert_eq!(parse_offset("[3]"), Some(3));
        assert_eq!(parse_offset("None"), None);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The CONNACK RobustMQ 0.4.11 sent to a v5 CONNECT asking for a 3600 s session, byte for
    /// byte: Session Expiry 1800, Receive Maximum 65535, Maximum QoS 2 (which MQTT 5 forbids),
    /// Retain Available, Maximum Packet Size 10 MiB, Topic Alias Maximum 65535, Wildcard /
    /// Subscription Identifier / Shared Subscription available, Server Keep Alive 30.
    #[test]
    fn robustmq_connack_bytes_decode() {
        let f = hex("202000001d110000070821ffff240225012700a0000022ffff280129012a0113001e");
        match decode(Proto::V5, &f).unwrap() {
            Inbound::ConnAck(c) => {
                assert_eq!(c.code, 0);
                assert!(!c.session_present);
                assert_eq!(c.max_qos, Some(2), "Maximum QoS 2 read as QoS 2 allowed");
                assert_eq!(c.session_expiry, Some(1800));
                assert_eq!(c.receive_max, Some(65535));
                assert_eq!(c.max_packet_size, Some(10 * 1024 * 1024));
                assert_eq!(c.server_keep_alive, Some(30));
            }
            other => panic!("{other:?}"),
        }
    }

    /// RobustMQ 0.4.11's PUBACK to a v5 QoS 1 publish with packet id 1, byte for byte.
    #[test]
    fn robustmq_puback_bytes_decode_with_offset() {
        let f = hex("401a000100162600066f6666736574000b536f6d6528225b305d2229");
        match decode(Proto::V5, &f).unwrap() {
            Inbound::PubAck { pid, code, offset } => {
                assert_eq!((pid, code, offset), (1, 0, Some(0)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn maximum_qos_3_is_still_refused_by_the_codec_but_read_leniently() {
        // A CONNACK with Maximum QoS 3: strict decoding fails, the lenient path drops the value.
        let f = [0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x03];
        assert!(v5::Packet::decode(&f).is_err());
        match decode(Proto::V5, &f).unwrap() {
            Inbound::ConnAck(c) => assert_eq!((c.code, c.max_qos), (0, None)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_publish_from_upstream_is_an_error() {
        // PUBLISH with an unknown property id: never read leniently.
        let f = [0x30, 0x07, 0x00, 0x01, b'a', 0x02, 0x7F, 0x00, b'x'];
        assert!(decode(Proto::V5, &f).is_err());
    }

    #[test]
    fn mqtt311_connect_carries_the_tenant_in_the_user_name() {
        let toml = "node_id = \"n\"\nupstreams = [\"tcp://a:1\"]\nprotocol = \"3.1.1\"\ntenant = \"t1\"\nusername = \"bob\"\n";
        let cfg = SyncConfig::from_toml_str(toml).unwrap();
        let b = encode_connect(Proto::V311, &cfg, 30).unwrap();
        match v3::Packet::decode(&b).unwrap().unwrap() {
            v3::Packet::Connect(c) => assert_eq!(c.username.as_deref(), Some("t1@bob")),
            other => panic!("{other:?}"),
        }
        let toml = "node_id = \"n\"\nupstreams = [\"tcp://a:1\"]\ntenant = \"t1\"\n";
        let cfg = SyncConfig::from_toml_str(toml).unwrap();
        let b = encode_connect(Proto::V5, &cfg, 30).unwrap();
        match v5::Packet::decode(&b).unwrap().unwrap() {
            v5::Packet::Connect(c) => {
                let u = &c.properties.user_properties[0];
                assert_eq!((&*u.name, &*u.value), ("tenant", "t1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v3_connack_to_v5_connect_asks_for_fallback() {
        match decode(Proto::V5, &[0x20, 0x02, 0x00, 0x01]).unwrap() {
            Inbound::ConnAck(c) => assert!(c.wants_older_protocol),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn puback_offset_roundtrip() {
        let mut a = v5::Puback::new_success(Pid::try_from(7).unwrap());
        a.properties.user_properties = vec![v5::UserProperty {
            name: "offset".into(),
            value: "Some(\"[42]\")".into(),
        }];
        let bytes = v5::Packet::Puback(a).encode().unwrap();
        match decode(Proto::V5, bytes.as_ref()).unwrap() {
            Inbound::PubAck { pid, offset, .. } => {
                assert_eq!(pid, 7);
                assert_eq!(offset, Some(42));
            }
            other => panic!("{other:?}"),
        }
    }
}
