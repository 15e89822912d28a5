//! Upstream MQTT client plumbing for the uplink and downlink, by concern: `dial` opens TCP/TLS
//! (rustls + ring), `frames` reads bounded whole packets and writes encoded ones, `inbound`
//! turns a frame into an [`Inbound`] (v3 lifted to v5 by `edge_mqtt::version`, reason codes
//! typed), `lenient` reads the acknowledgements the strict codec refuses, and `outbound` builds
//! the packets we send as v5 and lowers them for a 3.1.1 upstream. Invariant: every packet
//! crosses the codec in `edge_mqtt::version`; nothing here splices encoded bytes by hand.

mod dial;
mod frames;
mod inbound;
mod lenient;
mod outbound;

use futures_lite::io::{AsyncRead, AsyncWrite};
use mqtt_proto::Protocol;

pub use dial::{dial, tls_config};
pub use frames::{write_packet, FrameReader};
pub use inbound::{connect_refusal, decode, parse_offset, AckCode, ConnAck, InPublish, Inbound};
pub use outbound::{
    encode_ack, encode_connect, encode_disconnect, encode_pingreq, encode_publish,
    encode_subscribe, Ack, OutPublish,
};

/// Largest packet we accept from the upstream (advertised as Maximum Packet Size in v5).
pub const MAX_INBOUND_PACKET: usize = 4 * 1024 * 1024;

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
pub type BoxStream = Box<dyn Stream>;

/// The MQTT version spoken with the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    V5,
    V311,
}

impl Proto {
    /// The codec's name for this version.
    pub fn protocol(self) -> Protocol {
        match self {
            Proto::V5 => Protocol::V500,
            Proto::V311 => Protocol::V311,
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::V5 => "5",
            Proto::V311 => "3.1.1",
        })
    }
}
