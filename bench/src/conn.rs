//! One MQTT client connection over TCP or WebSocket (`transport`), built on the `mqtt-proto`
//! codec (v3.1.1 or v5).
//! Outgoing packets are built as v5 and batched in a write buffer (lowered to 3.1.1 by
//! `edge_mqtt::version`), flushed explicitly; incoming bytes are framed by `edge_mqtt::frame`,
//! decoded (3.1.1 lifted to v5) and reduced to a small version-independent `Incoming` enum.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edge_mqtt::frame::FrameBuffer;
use edge_mqtt::reason::Code;
use edge_mqtt::version;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use mqtt_proto::{v5, Pid, Protocol, QoS, QosPid, TopicFilter, TopicName};
use smol::{Async, Timer};

use crate::transport::Transport;

/// MQTT protocol level spoken by the benchmark clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

impl Version {
    pub fn from_level(level: u8) -> Result<Self> {
        match level {
            4 | 3 => Ok(Version::V311),
            5 => Ok(Version::V5),
            n => Err(format!("unsupported protocol {n} (use 3, 4 or 5)")),
        }
    }

    /// The codec's name for this version.
    pub fn protocol(self) -> Protocol {
        match self {
            Version::V311 => Protocol::V311,
            Version::V5 => Protocol::V500,
        }
    }
}

/// A decoded packet from the broker, reduced to what the benchmark needs.
#[derive(Debug)]
pub enum Incoming {
    Connack {
        /// A 3.1.1 return code arrives as the v5 reason code of the same meaning.
        code: v5::ConnectReasonCode,
        session_present: bool,
        receive_max: Option<u16>,
    },
    Publish {
        qos: QoS,
        pid: Option<u16>,
        payload: Bytes,
    },
    Puback {
        pid: u16,
        ok: bool,
    },
    Pubrec {
        pid: u16,
        ok: bool,
    },
    Pubrel {
        pid: u16,
    },
    Pubcomp {
        pid: u16,
    },
    Suback {
        granted: Vec<Option<QoS>>,
    },
    Pingresp,
    Disconnect {
        code: v5::DisconnectReasonCode,
    },
    Other,
}

/// Options of one CONNECT.
#[derive(Clone, Debug)]
pub struct ConnectOpts {
    pub client_id: String,
    pub clean: bool,
    pub keep_alive: u16,
    /// MQTT 5 session expiry; ignored by v3 (a v3 persistent session lasts until the broker's cap).
    pub session_expiry: Option<u32>,
}

impl ConnectOpts {
    /// A clean session (MQTT 5: expiring with the connection) for `client_id`.
    pub fn clean(client_id: impl Into<String>, keep_alive: u16) -> Self {
        ConnectOpts {
            client_id: client_id.into(),
            clean: true,
            keep_alive,
            session_expiry: None,
        }
    }
}

pub type Error = String;
pub type Result<T> = std::result::Result<T, Error>;

pub fn io_err(context: &str, e: impl std::fmt::Display) -> Error {
    format!("{context}: {e}")
}

pub struct Conn {
    stream: Transport,
    pub version: Version,
    rbuf: FrameBuffer,
    wbuf: Vec<u8>,
    /// Timeout for one read or one flush (unless a watchdog guards the connection).
    pub io_timeout: Duration,
    /// Bumped on every successful read or write; watched by `watchdog` in hot loops, which is much
    /// cheaper than arming a timer per read.
    progress: Arc<AtomicU64>,
    watched: bool,
}

/// Resolves with an error message once `progress` has not moved for `idle` (checked every `idle`).
pub async fn watchdog(progress: Arc<AtomicU64>, idle: Duration) -> Error {
    let mut last = progress.load(Ordering::Relaxed);
    loop {
        Timer::after(idle).await;
        let now = progress.load(Ordering::Relaxed);
        if now == last {
            return format!("no progress for {idle:?}");
        }
        last = now;
    }
}

const READ_CHUNK: usize = 64 * 1024;

async fn with_timeout<T>(
    d: Duration,
    what: &str,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> Result<T> {
    let timeout = async {
        Timer::after(d).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no progress for {d:?}"),
        ))
    };
    futures_lite::future::or(fut, timeout)
        .await
        .map_err(|e| io_err(what, e))
}

/// `Conn` methods that queue one successful v5 acknowledgement (lowered for 3.1.1) of a packet id.
macro_rules! send_ack {
    ($($name:ident => $kind:ident),*) => {$(
        pub fn $name(&mut self, pid: u16) -> Result<()> {
            let p = Self::pid(pid)?;
            self.queue(&v5::Packet::$kind(v5::$kind::new_success(p)))
        }
    )*};
}

impl Conn {
    /// Opens a TCP connection (TCP_NODELAY) without sending anything; `addr` is `host:port`, or
    /// `ws://host:port/path` (`wss://` with TLS) for MQTT over WebSocket. The TLS handshake
    /// (`--tls-ca`) and the WebSocket upgrade are done here.
    pub async fn tcp(addr: &str, version: Version, io_timeout: Duration) -> Result<Conn> {
        let host_port = match addr.strip_prefix("ws://").or(addr.strip_prefix("wss://")) {
            Some(rest) => rest.split('/').next().unwrap_or(rest),
            None => addr,
        };
        let sa = host_port
            .to_socket_addrs()
            .map_err(|e| io_err("resolve", e))?
            .next()
            .ok_or_else(|| format!("cannot resolve {addr}"))?;
        let tcp = with_timeout(io_timeout, "connect", Async::<TcpStream>::connect(sa)).await?;
        tcp.get_ref()
            .set_nodelay(true)
            .map_err(|e| io_err("nodelay", e))?;
        let host = host_port
            .rsplit_once(':')
            .map_or(host_port, |(h, _)| h)
            .trim_matches(['[', ']']);
        let handshake = async { Ok(crate::transport::secure(tcp, host).await) };
        let secured = with_timeout(io_timeout, "TLS handshake", handshake).await??;
        let stream = if host_port.len() == addr.len() {
            Transport::Plain(secured)
        } else {
            let upgrade = async { Ok(crate::transport::websocket(secured, addr).await) };
            with_timeout(io_timeout, "WebSocket upgrade", upgrade).await??
        };
        Ok(Conn {
            stream,
            version,
            rbuf: FrameBuffer::new(READ_CHUNK),
            wbuf: Vec::with_capacity(READ_CHUNK),
            io_timeout,
            progress: Arc::new(AtomicU64::new(0)),
            watched: false,
        })
    }

    /// TCP connect + CONNECT + CONNACK. Returns the connection, the session-present flag and the
    /// broker's Receive Maximum (v5).
    pub async fn connect(
        addr: &str,
        version: Version,
        opts: &ConnectOpts,
        io_timeout: Duration,
    ) -> Result<(Conn, bool, Option<u16>)> {
        let mut c = Conn::tcp(addr, version, io_timeout).await?;
        c.send_connect(opts)?;
        c.flush().await?;
        match c.next().await? {
            Incoming::Connack {
                code: v5::ConnectReasonCode::Success,
                session_present,
                receive_max,
            } => Ok((c, session_present, receive_max)),
            Incoming::Connack { code, .. } => Err(format!(
                "CONNACK refused, code {code:?} ({:#04x})",
                code as u8
            )),
            other => Err(format!("expected CONNACK, got {other:?}")),
        }
    }

    pub fn send_connect(&mut self, o: &ConnectOpts) -> Result<()> {
        let id: Arc<str> = Arc::from(o.client_id.as_str());
        let mut c = v5::Connect::new(id, o.keep_alive);
        c.clean_start = o.clean;
        c.properties.session_expiry_interval = o.session_expiry;
        self.queue(&v5::Packet::Connect(c))
    }

    pub fn send_subscribe(&mut self, pid: u16, filter: &str, qos: QoS) -> Result<()> {
        let pid = Self::pid(pid)?;
        let f = TopicFilter::try_from(filter).map_err(|e| io_err("topic filter", e))?;
        self.queue(&v5::Packet::Subscribe(v5::Subscribe::new(
            pid,
            vec![(f, v5::SubscriptionOptions::new(qos))],
        )))
    }

    /// Subscribes and waits for the SUBACK; returns the granted QoS (None = refused).
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<Option<QoS>> {
        self.send_subscribe(1, filter, qos)?;
        self.flush().await?;
        loop {
            match self.next().await? {
                Incoming::Suback { granted } => return Ok(granted.first().copied().flatten()),
                Incoming::Disconnect { code } => {
                    return Err(format!("DISCONNECT {code:?} after SUBSCRIBE"))
                }
                _ => continue,
            }
        }
    }

    pub fn send_publish(
        &mut self,
        topic: &TopicName,
        qos: QoS,
        pid: u16,
        payload: Bytes,
    ) -> Result<()> {
        let qos_pid = match qos {
            QoS::Level0 => QosPid::Level0,
            QoS::Level1 => QosPid::Level1(Self::pid(pid)?),
            QoS::Level2 => QosPid::Level2(Self::pid(pid)?),
        };
        self.queue(&v5::Packet::Publish(v5::Publish::new(
            qos_pid,
            topic.clone(),
            payload,
        )))
    }

    fn pid(pid: u16) -> Result<Pid> {
        Pid::try_from(pid).map_err(|e| io_err("pid", e))
    }

    // send_puback, send_pubrec, send_pubrel, send_pubcomp: one successful acknowledgement.
    send_ack!(
        send_puback => Puback,
        send_pubrec => Pubrec,
        send_pubrel => Pubrel,
        send_pubcomp => Pubcomp
    );

    pub fn send_disconnect(&mut self) -> Result<()> {
        self.queue(&v5::Packet::Disconnect(v5::Disconnect::new_normal()))
    }

    /// Sends DISCONNECT and flushes; errors are ignored (the broker may already be gone).
    pub async fn close(mut self) {
        if self.send_disconnect().is_ok() {
            let _ = self.flush().await;
        }
    }

    /// Queues any packet (built as v5, lowered for 3.1.1); sent by the next `flush`.
    pub fn send(&mut self, p: &v5::Packet) -> Result<()> {
        self.queue(p)
    }

    /// Encodes `p` for this connection's version into the write buffer.
    fn queue(&mut self, p: &v5::Packet) -> Result<()> {
        let b = version::encode(p, self.version.protocol()).map_err(|e| io_err("encode", e))?;
        self.wbuf.extend_from_slice(b.as_ref());
        Ok(())
    }

    /// Bytes received but not decoded yet (a partial packet), for stall diagnostics.
    pub fn buffered(&self) -> usize {
        self.rbuf.buffered()
    }

    pub fn pending_write(&self) -> usize {
        self.wbuf.len()
    }

    pub async fn flush(&mut self) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let Conn {
            stream,
            wbuf,
            io_timeout,
            watched,
            progress,
            ..
        } = self;
        // The flush is a no-op on TCP; on WebSocket it sends what the message left queued.
        let write = async {
            stream.write_all(wbuf).await?;
            stream.flush().await
        };
        if *watched {
            write.await.map_err(|e| io_err("write", e))?;
        } else {
            with_timeout(*io_timeout, "write", write).await?;
        }
        progress.fetch_add(1, Ordering::Relaxed);
        wbuf.clear();
        Ok(())
    }

    /// Decodes one complete packet from the read buffer, if there is one.
    pub fn try_next(&mut self) -> Result<Option<Incoming>> {
        let frame = match self.rbuf.next_frame(usize::MAX) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(None),
            Err(e) => return Err(format!("decode: {e}")),
        };
        version::decode(frame, self.version.protocol())
            .map(|p| Some(incoming(p)))
            .map_err(|e| io_err("decode", e))
    }

    /// Switches reads and writes to untimed mode; the caller races its loop against
    /// `watchdog(handle, io_timeout)` instead.
    pub fn watch(&mut self) -> Arc<AtomicU64> {
        self.watched = true;
        self.progress.clone()
    }

    /// Ends `watch` mode (for the final DISCONNECT and any later handshake).
    pub fn unwatch(&mut self) {
        self.watched = false;
    }

    /// Reads more bytes from the socket (waits at most `io_timeout` unless watched). Errors on EOF.
    pub async fn fill(&mut self) -> Result<()> {
        let Conn {
            stream,
            rbuf,
            io_timeout,
            watched,
            progress,
            ..
        } = self;
        let spare = rbuf.spare();
        let n = if *watched {
            stream.read(spare).await.map_err(|e| io_err("read", e))?
        } else {
            with_timeout(*io_timeout, "read", stream.read(spare)).await?
        };
        if n == 0 {
            return Err("connection closed by broker".into());
        }
        progress.fetch_add(1, Ordering::Relaxed);
        rbuf.filled(n);
        Ok(())
    }

    /// Next packet, reading as needed.
    pub async fn next(&mut self) -> Result<Incoming> {
        loop {
            if let Some(p) = self.try_next()? {
                return Ok(p);
            }
            self.fill().await?;
        }
    }
}

/// The benchmark's view of a (lifted) packet from the broker.
fn incoming(p: v5::Packet) -> Incoming {
    use v5::Packet as P;
    match p {
        P::Connack(c) => Incoming::Connack {
            code: c.reason_code,
            session_present: c.session_present,
            receive_max: c.properties.receive_max,
        },
        P::Publish(p) => Incoming::Publish {
            qos: p.qos_pid.qos(),
            pid: p.qos_pid.pid().map(|p| p.value()),
            payload: p.payload,
        },
        P::Puback(a) => Incoming::Puback {
            pid: a.pid.value(),
            ok: !Code::from(a.reason_code).is_failure(),
        },
        P::Pubrec(a) => Incoming::Pubrec {
            pid: a.pid.value(),
            ok: !Code::from(a.reason_code).is_failure(),
        },
        P::Pubrel(a) => Incoming::Pubrel { pid: a.pid.value() },
        P::Pubcomp(a) => Incoming::Pubcomp { pid: a.pid.value() },
        P::Suback(s) => Incoming::Suback {
            granted: s
                .topics
                .iter()
                .map(|c| match c {
                    v5::SubscribeReasonCode::GrantedQoS0 => Some(QoS::Level0),
                    v5::SubscribeReasonCode::GrantedQoS1 => Some(QoS::Level1),
                    v5::SubscribeReasonCode::GrantedQoS2 => Some(QoS::Level2),
                    _ => None,
                })
                .collect(),
        },
        P::Pingresp => Incoming::Pingresp,
        P::Disconnect(d) => Incoming::Disconnect {
            code: d.reason_code,
        },
        _ => Incoming::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_fires_only_when_progress_stops() {
        let progress = Arc::new(AtomicU64::new(0));
        let p2 = progress.clone();
        let started = std::time::Instant::now();
        let busy = async move {
            // Progress for 150 ms, then silence.
            for _ in 0..15 {
                p2.fetch_add(1, Ordering::Relaxed);
                Timer::after(Duration::from_millis(10)).await;
            }
            Timer::after(Duration::from_secs(5)).await;
            String::from("not stopped")
        };
        let msg = smol::block_on(futures_lite::future::or(
            watchdog(progress, Duration::from_millis(40)),
            busy,
        ));
        assert!(msg.starts_with("no progress"), "{msg}");
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
