//! One connection's life: dial, CONNECT/CONNACK, then the reader, the downlink task and the drain
//! loop until shutdown or failure. Whatever ends it, acknowledged removals are flushed and the
//! unacknowledged packet ids carried over; the outcome is a `SessionEnd`, never an error string.

use std::sync::Arc;
use std::time::Duration;

use edge_mqtt::reason::Code;
use futures_lite::future;
use mqtt_proto::v5::ConnectReasonCode;

use super::drain::{Drain, Ended};
use super::reader::Reader;
use super::window::Carry;
use crate::client::{self, BoxStream, ConnAck, FrameReader, Inbound, Proto};
use crate::config::Upstream;
use crate::ctx::{Ctx, Writer};
use crate::downlink;
use crate::error::SyncError;
use crate::outbox::{now_ms, PRIORITIES};
use crate::status::LinkState;

/// How a session ended, for the run loop.
#[derive(Debug)]
pub(super) enum SessionEnd {
    /// Shutdown requested (DISCONNECT sent if connected; the upstream session is kept).
    Stopped,
    /// The upstream does not speak MQTT 5: try the same address again at once with 3.1.1.
    FallBackTo311,
    /// The connection failed or broke. `connected`: a CONNACK accepted it first (the back-off
    /// starts over and the same address is tried again; otherwise the next address is).
    Lost { connected: bool, error: SyncError },
    /// The upstream's schedule window closed (DISCONNECT sent, the upstream session kept).
    WindowClosed,
}

/// An accepted connection.
struct Link {
    frames: FrameReader<futures_lite::io::ReadHalf<BoxStream>>,
    writer: Writer,
    ack: ConnAck,
}

/// What the CONNECT/CONNACK exchange gave.
enum Opened {
    Up(Link),
    Stopped,
    FallBackTo311,
}

/// Runs one session against `up`.
pub(super) async fn run(
    ctx: &Arc<Ctx>,
    up: &Upstream,
    up_idx: usize,
    proto: Proto,
    carry: &mut Carry,
    sent_upto: &mut [u64; PRIORITIES],
) -> SessionEnd {
    let link = match open(ctx, up, proto).await {
        Ok(Opened::Up(link)) => link,
        Ok(Opened::Stopped) => return SessionEnd::Stopped,
        Ok(Opened::FallBackTo311) => return SessionEnd::FallBackTo311,
        Err(error) => {
            return SessionEnd::Lost {
                connected: false,
                error,
            }
        }
    };
    let Link {
        frames,
        writer,
        ack,
    } = link;
    let keep_alive = ack
        .server_keep_alive
        .unwrap_or(ctx.cfg.keep_alive_secs)
        .max(1);
    connected(ctx, up, proto, &ack);
    carry.on_connect(ack.session_present, ctx.cfg.max_inflight as usize);

    let acks_capacity = 2 * ctx.cfg.max_inflight as usize + 16;
    let (reader, down_rx) = Reader::spawn(frames, writer.clone(), proto, acks_capacity);
    let down_task = smol::spawn(downlink::run(ctx.clone(), down_rx, writer.clone(), proto));

    let mut drain = Drain::new(ctx, up_idx, proto, writer, &ack, carry, sent_upto);
    let res = drain.run(&reader, keep_alive).await;
    let flushed = drain.finish(res.is_ok()).await;
    reader.stop();
    drop(down_task);
    match (flushed, res) {
        (Err(error), _) | (Ok(()), Err(error)) => SessionEnd::Lost {
            connected: true,
            error,
        },
        (Ok(()), Ok(Ended::Stopped)) => SessionEnd::Stopped,
        (Ok(()), Ok(Ended::UpstreamWindowClosed)) => SessionEnd::WindowClosed,
    }
}

/// Dials `up` (given up at shutdown) and exchanges CONNECT/CONNACK.
async fn open(ctx: &Arc<Ctx>, up: &Upstream, proto: Proto) -> Result<Opened, SyncError> {
    let stream = future::or(
        async { client::dial(up, &ctx.cfg, ctx.tls.as_ref()).await.map(Some) },
        async {
            ctx.stop.wait().await;
            Ok(None)
        },
    )
    .await?;
    let Some(stream) = stream else {
        return Ok(Opened::Stopped);
    };
    let (rd, wr) = futures_lite::io::split(stream);
    let writer: Writer = Arc::new(smol::lock::Mutex::new(wr));
    let mut frames = FrameReader::new(rd);
    {
        let c = client::encode_connect(proto, &ctx.cfg, ctx.cfg.keep_alive_secs)?;
        let mut w = writer.lock().await;
        client::write_packet(&mut *w, &c).await?;
    }
    let d = Duration::from_secs(ctx.cfg.connect_timeout_secs);
    let frame = future::or(frames.next(), async {
        smol::Timer::after(d).await;
        Err(SyncError::Protocol(
            "no CONNACK within the connect timeout".into(),
        ))
    })
    .await?;
    let ack = match client::decode(proto, &frame)? {
        Inbound::ConnAck(a) => a,
        other => {
            return Err(SyncError::Protocol(format!(
                "expected CONNACK, got {other:?}"
            )))
        }
    };
    if proto == Proto::V5 && ack.code == Code::Known(ConnectReasonCode::UnsupportedProtocolVersion)
    {
        return Ok(Opened::FallBackTo311);
    }
    if ack.code != Code::Known(ConnectReasonCode::Success) {
        let mut text = client::connect_refusal(ack.code);
        if let Some(r) = &ack.reason {
            text.push_str(&format!(": {r}"));
        }
        return Err(SyncError::ConnectRefused(text));
    }
    Ok(Opened::Up(Link {
        frames,
        writer,
        ack,
    }))
}

/// The upstream accepted the connection: status and log.
fn connected(ctx: &Ctx, up: &Upstream, proto: Proto, ack: &ConnAck) {
    {
        let mut l = ctx.live.link();
        l.state = LinkState::Connected;
        l.protocol = Some(proto.to_string());
        l.connected_since_ms = Some(now_ms());
        l.last_error = None;
    }
    tracing::info!(
        upstream = %up,
        protocol = %proto,
        session_present = ack.session_present,
        "sync uplink connected"
    );
    if let Some(granted) = ack
        .session_expiry
        .filter(|g| *g < ctx.cfg.session_expiry_secs)
    {
        // RobustMQ caps the expiry (1800 s): after a longer outage the session is gone and
        // CONNACK says so; the downlink is subscribed again at every connect in any case.
        tracing::info!(
            upstream = %up,
            asked = ctx.cfg.session_expiry_secs,
            granted,
            "upstream granted a shorter session expiry"
        );
    }
}
