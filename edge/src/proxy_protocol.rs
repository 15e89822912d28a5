//! The PROXY protocol (HAProxy's; version 1, text, and 2, binary) on listeners with
//! `proxy_protocol = true`, for a broker behind a TCP load balancer: every connection starts
//! with a header naming the client, read before TLS, WebSocket and MQTT, and parsed by the
//! `ppp` crate. The client it names is the connection's address from then on (per-IP limits,
//! the login throttle, logs).
//!
//! Invariants: a connection without a valid header is refused (the specification forbids
//! guessing whether one is there); nothing past the header is read, so the bytes after it are
//! the client's; a header from a peer outside the listener's `trusted_proxies` (when given) is
//! never read.

use std::io;
use std::net::{IpAddr, SocketAddr};

use futures_lite::{AsyncRead, AsyncReadExt};
use ppp::{v1, v2, HeaderResult};

/// The 12 bytes every version 2 header starts with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The shortest header: `PROXY UNKNOWN\r\n`.
const SHORTEST: usize = 15;
/// The longest version 1 header, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// Longest version 2 address block and TLVs accepted (addresses take at most 216 bytes; the
/// rest is room for the TLVs load balancers add).
const V2_MAX_BODY: usize = 4096;

/// Reads the PROXY protocol header at the start of `stream` and returns the client's address:
/// the source it names, or `peer` (the TCP peer) for a health check of the proxy itself
/// (`LOCAL`, `UNKNOWN`, or an address family other than IPv4 and IPv6). `None`: the peer
/// closed without sending a byte, as a load balancer's TCP health check does.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
) -> io::Result<Option<SocketAddr>> {
    let mut buf = vec![0u8; SHORTEST];
    let first = stream.read(&mut buf).await?;
    if first == 0 {
        return Ok(None);
    }
    stream.read_exact(&mut buf[first..]).await?;
    if buf.starts_with(V2_SIGNATURE) {
        let mut fixed = [0u8; 1];
        stream.read_exact(&mut fixed).await?;
        buf.push(fixed[0]);
        let body = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if body > V2_MAX_BODY {
            return Err(invalid(format!(
                "PROXY protocol v2 header of {body} bytes (at most {V2_MAX_BODY})"
            )));
        }
        let at = buf.len();
        buf.resize(at + body, 0);
        stream.read_exact(&mut buf[at..]).await?;
    } else if buf.starts_with(b"PROXY ") {
        // Version 1: a line; read a byte at a time so as not to read past its end.
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(invalid(format!(
                    "PROXY protocol v1 header longer than {V1_MAX} bytes"
                )));
            }
            stream.read_exact(&mut byte).await?;
            buf.push(byte[0]);
        }
    } else {
        return Err(invalid(
            "no PROXY protocol header (the listener has proxy_protocol = true)".into(),
        ));
    }
    client_of(HeaderResult::parse(&buf), peer).map(Some)
}

/// The client a parsed header names (`peer` when it names none).
fn client_of(header: HeaderResult<'_>, peer: SocketAddr) -> io::Result<SocketAddr> {
    let source = match header {
        HeaderResult::V1(Ok(h)) => match h.addresses {
            v1::Addresses::Tcp4(a) => Some((IpAddr::V4(a.source_address), a.source_port)),
            v1::Addresses::Tcp6(a) => Some((IpAddr::V6(a.source_address), a.source_port)),
            v1::Addresses::Unknown => None,
        },
        HeaderResult::V2(Ok(h)) => match (h.command, h.addresses) {
            (v2::Command::Local, _) => None,
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                Some((IpAddr::V4(a.source_address), a.source_port))
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                Some((IpAddr::V6(a.source_address), a.source_port))
            }
            (v2::Command::Proxy, _) => None,
        },
        HeaderResult::V1(Err(e)) => {
            return Err(invalid(format!("bad PROXY protocol v1 header: {e}")))
        }
        HeaderResult::V2(Err(e)) => {
            return Err(invalid(format!("bad PROXY protocol v2 header: {e}")))
        }
    };
    Ok(source.map_or(peer, |(ip, port)| SocketAddr::new(ip, port)))
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

#[cfg(test)]
#[path = "proxy_protocol_tests.rs"]
mod tests;
