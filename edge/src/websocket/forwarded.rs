//! The client address of a WebSocket connection behind a reverse proxy: when the TCP peer is
//! one of the listener's `trusted_proxies`, the address its `Forwarded` (RFC 7239: the `for=`
//! of each element) or, without one, its `X-Forwarded-For` names: the right-most entry that
//! is not itself a trusted proxy, as nginx's `real_ip_recursive` and HAProxy read it. From any
//! other peer the headers are ignored: a client can write anything in them. Per-IP limits, the
//! authentication-failure throttle and the logs use this address.

use std::net::{IpAddr, SocketAddr};

use async_tungstenite::tungstenite::http::HeaderMap;
use ipnet::IpNet;

const HEADER: &str = "x-forwarded-for";
/// RFC 7239; read instead of `X-Forwarded-For` when a trusted proxy sends it.
const FORWARDED: &str = "forwarded";

/// Why a trusted proxy's header was not used (the proxy's own address is then the client's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadForwardedFor {
    /// An entry that is not an IP address (with or without a port).
    NotAnAddress(String),
    /// The header is not visible ASCII.
    NotText,
}

impl std::fmt::Display for BadForwardedFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadForwardedFor::NotAnAddress(e) => write!(f, "`{e}` is not an IP address"),
            BadForwardedFor::NotText => f.write_str("the header is not ASCII text"),
        }
    }
}

/// Whether `ip` is one of `trusted` (an IPv4-mapped IPv6 address counts as its IPv4 address).
fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|n| n.contains(&ip))
}

/// One `X-Forwarded-For` entry: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`, or either with a
/// port (`192.0.2.1:5000`, `[2001:db8::1]:5000`); the port is dropped.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = e.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    e.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

/// The client's address for a connection from `peer` with request `headers`. `Ok(peer)` when
/// the peer is not trusted or sent no header; an error when a trusted proxy's header does not
/// parse (the caller logs it and keeps `peer`). The port is the TCP peer's.
pub fn client_address(
    headers: &HeaderMap,
    peer: SocketAddr,
    trusted: &[IpNet],
) -> Result<SocketAddr, BadForwardedFor> {
    if trusted.is_empty() || !is_trusted(trusted, peer.ip()) {
        return Ok(peer);
    }
    let entries = match forwarded_for(headers)? {
        Some(entries) => entries,
        None => x_forwarded_for(headers)?,
    };
    let mut client = peer.ip();
    // From the proxy nearest to us outwards: each trusted hop vouches for the one before it.
    for entry in entries.iter().rev() {
        let ip =
            parse_entry(entry).ok_or_else(|| BadForwardedFor::NotAnAddress(entry.to_string()))?;
        client = ip;
        if !is_trusted(trusted, ip) {
            break;
        }
    }
    Ok(SocketAddr::new(client, peer.port()))
}

/// The entries of `X-Forwarded-For`, in order. Repeated headers are one list, in order (RFC
/// 9110 §5.3).
fn x_forwarded_for(headers: &HeaderMap) -> Result<Vec<&str>, BadForwardedFor> {
    let mut entries = Vec::new();
    for value in headers.get_all(HEADER) {
        let text = value.to_str().map_err(|_| BadForwardedFor::NotText)?;
        entries.extend(text.split(',').map(str::trim).filter(|e| !e.is_empty()));
    }
    Ok(entries)
}

/// The `for=` node of each element of `Forwarded` (RFC 7239 §4: `for=192.0.2.60;proto=https,
/// for="[2001:db8::17]:4711"`), in order, quotes removed; `None` without the header. An element
/// without `for=` is an error: a hop that does not say whom it forwards cannot vouch for the
/// element before it. Parameter names are case-insensitive; a quoted value holds no `,` or `;`
/// in any node RFC 7239 defines, so splitting on them first is enough.
fn forwarded_for(headers: &HeaderMap) -> Result<Option<Vec<&str>>, BadForwardedFor> {
    let mut entries = Vec::new();
    let mut any = false;
    for value in headers.get_all(FORWARDED) {
        any = true;
        let text = value.to_str().map_err(|_| BadForwardedFor::NotText)?;
        for element in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let node = element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim().eq_ignore_ascii_case("for").then(|| {
                    let v = value.trim();
                    v.strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(v)
                })
            });
            entries.push(node.ok_or_else(|| BadForwardedFor::NotAnAddress(element.to_string()))?);
        }
    }
    Ok(any.then_some(entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_tungstenite::tungstenite::http::HeaderValue;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| s.parse::<crate::config::TrustedProxy>().expect("valid").0)
            .collect()
    }

    /// `name: value` for each of `values`, in order.
    fn named(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    fn headers(values: &[&str]) -> HeaderMap {
        named(HEADER, values)
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        named(FORWARDED, values)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn the_header_of_an_untrusted_peer_is_ignored() {
        let h = headers(&["192.0.2.7"]);
        let peer = addr("198.51.100.1:4000");
        assert_eq!(client_address(&h, peer, &[]), Ok(peer), "nothing trusted");
        assert_eq!(
            client_address(&h, peer, &nets(&["10.0.0.0/8"])),
            Ok(peer),
            "peer outside the trusted range"
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_keeps_its_own_port() {
        let h = headers(&["192.0.2.7"]);
        let got = client_address(&h, addr("10.1.2.3:4000"), &nets(&["10.0.0.0/8"]));
        assert_eq!(got, Ok(addr("192.0.2.7:4000")));
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client_not_what_the_client_wrote_first() {
        // The client wrote "1.1.1.1" itself; the proxy appended the address it saw.
        let h = headers(&["1.1.1.1, 192.0.2.7, 10.0.0.9"]);
        let got = client_address(
            &h,
            addr("127.0.0.1:4000"),
            &nets(&["127.0.0.1", "10.0.0.0/8"]),
        );
        assert_eq!(got, Ok(addr("192.0.2.7:4000")));
    }

    #[test]
    fn repeated_headers_are_one_list_in_order() {
        let h = headers(&["192.0.2.7", "10.0.0.9"]);
        let got = client_address(&h, addr("127.0.0.1:1"), &nets(&["127.0.0.1", "10.0.0.0/8"]));
        assert_eq!(got, Ok(addr("192.0.2.7:1")));
    }

    #[test]
    fn when_every_hop_is_trusted_the_first_one_is_the_client() {
        let h = headers(&["10.0.0.2, 10.0.0.9"]);
        let got = client_address(&h, addr("127.0.0.1:1"), &nets(&["127.0.0.1", "10.0.0.0/8"]));
        assert_eq!(got, Ok(addr("10.0.0.2:1")));
    }

    #[test]
    fn entries_with_ports_brackets_and_ipv6_are_read() {
        let trusted = nets(&["::1"]);
        for (value, want) in [
            ("192.0.2.7:5000", "192.0.2.7"),
            ("[2001:db8::1]:5000", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
        ] {
            let got = client_address(&headers(&[value]), addr("[::1]:9"), &trusted);
            assert_eq!(got.map(|a| a.ip()), Ok(want.parse().unwrap()), "{value}");
        }
    }

    #[test]
    fn an_ipv4_mapped_peer_matches_its_ipv4_range() {
        let h = headers(&["192.0.2.7"]);
        let got = client_address(&h, addr("[::ffff:10.0.0.1]:9"), &nets(&["10.0.0.0/8"]));
        assert_eq!(got, Ok(addr("192.0.2.7:9")));
    }

    #[test]
    fn a_trusted_proxy_without_the_header_is_the_client() {
        let peer = addr("127.0.0.1:4000");
        assert_eq!(
            client_address(&HeaderMap::new(), peer, &nets(&["127.0.0.1"])),
            Ok(peer)
        );
    }

    #[test]
    fn a_garbled_entry_from_a_trusted_proxy_is_an_error_naming_it() {
        let h = headers(&["192.0.2.7, unknown"]);
        let got = client_address(&h, addr("127.0.0.1:1"), &nets(&["127.0.0.1"]));
        assert_eq!(got, Err(BadForwardedFor::NotAnAddress("unknown".into())));
    }

    #[test]
    fn a_trusted_proxy_s_forwarded_header_names_the_client() {
        let trusted = nets(&["127.0.0.1", "10.0.0.0/8"]);
        for (value, want) in [
            ("for=192.0.2.60;proto=https;by=203.0.113.43", "192.0.2.60"),
            ("proto=https;For=192.0.2.60", "192.0.2.60"),
            ("for=\"192.0.2.60:4711\"", "192.0.2.60"),
            ("for=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            ("for=\"[2001:db8:cafe::17]\"", "2001:db8:cafe::17"),
            // The client wrote the first element itself; the proxy appended the second.
            ("for=1.1.1.1, for=192.0.2.60, for=10.0.0.9", "192.0.2.60"),
        ] {
            let got = client_address(&forwarded(&[value]), addr("127.0.0.1:9"), &trusted);
            assert_eq!(got.map(|a| a.ip()), Ok(want.parse().unwrap()), "{value}");
        }
        let repeated = forwarded(&["for=192.0.2.60", "for=10.0.0.9"]);
        let got = client_address(&repeated, addr("127.0.0.1:9"), &trusted);
        assert_eq!(got, Ok(addr("192.0.2.60:9")));
    }

    #[test]
    fn forwarded_is_read_instead_of_x_forwarded_for_and_only_from_a_trusted_peer() {
        let mut h = forwarded(&["for=192.0.2.60"]);
        h.append(HEADER, HeaderValue::from_static("198.51.100.7"));
        let trusted = nets(&["127.0.0.1"]);
        let got = client_address(&h, addr("127.0.0.1:9"), &trusted);
        assert_eq!(got, Ok(addr("192.0.2.60:9")));
        let stranger = addr("203.0.113.5:9");
        assert_eq!(client_address(&h, stranger, &trusted), Ok(stranger));
    }

    #[test]
    fn a_forwarded_element_without_an_address_is_an_error_naming_it() {
        let trusted = nets(&["127.0.0.1"]);
        for (value, bad) in [
            ("for=192.0.2.60, proto=https", "proto=https"),
            ("for=unknown", "unknown"),
            ("for=_hidden", "_hidden"),
        ] {
            let got = client_address(&forwarded(&[value]), addr("127.0.0.1:9"), &trusted);
            assert_eq!(
                got,
                Err(BadForwardedFor::NotAnAddress(bad.into())),
                "{value}"
            );
        }
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_ranges_and_name_what_is_wrong() {
        let n = nets(&["10.1.2.3/8", "192.0.2.1", "2001:db8::/32"]);
        assert_eq!(n[0].to_string(), "10.0.0.0/8", "host bits cleared");
        assert_eq!(n[1].to_string(), "192.0.2.1/32");
        let err = "10.0.0.0/33"
            .parse::<crate::config::TrustedProxy>()
            .unwrap_err();
        assert!(err.contains("10.0.0.0/33"), "{err}");
        assert!("proxy.local"
            .parse::<crate::config::TrustedProxy>()
            .is_err());
    }
}
