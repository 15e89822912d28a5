//! Unit tests of `proxy_protocol`: both versions, health checks, refusals, and that nothing
//! past the header is read.

use super::*;
use futures_lite::io::Cursor;

fn peer() -> SocketAddr {
    "10.0.0.9:40000".parse().unwrap()
}

/// Reads the header from `bytes`; returns the client and what is left for MQTT.
fn read(bytes: &[u8]) -> io::Result<(SocketAddr, Vec<u8>)> {
    smol::block_on(async {
        let mut stream = Cursor::new(bytes.to_vec());
        let client = read_header(&mut stream, peer())
            .await?
            .ok_or_else(|| io::Error::other("closed before a byte"))?;
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await?;
        Ok((client, rest))
    })
}

/// A version 2 header: `command` 0x20 (LOCAL) or 0x21 (PROXY), `family` 0x11 (TCP over IPv4)
/// or 0x21 (over IPv6), the address block, then a TLV.
fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
    let tlv = [0x04u8, 0, 2, 0xab, 0xcd];
    let mut h = V2_SIGNATURE.to_vec();
    h.extend([command, family]);
    h.extend(((addresses.len() + tlv.len()) as u16).to_be_bytes());
    h.extend(addresses);
    h.extend(tlv);
    h
}

#[test]
fn a_version_1_header_names_the_client_and_nothing_after_it_is_read() {
    let (client, rest) = read(b"PROXY TCP4 192.0.2.7 10.0.0.1 5555 1883\r\n\x10\x0cMQTT").unwrap();
    assert_eq!(client, "192.0.2.7:5555".parse().unwrap());
    assert_eq!(rest, b"\x10\x0cMQTT");
    let (client, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 5555 1883\r\n").unwrap();
    assert_eq!(client, "[2001:db8::7]:5555".parse().unwrap());
}

#[test]
fn a_version_2_header_names_the_client_and_its_tlvs_are_skipped() {
    let mut ipv4 = vec![192, 0, 2, 7, 10, 0, 0, 1];
    ipv4.extend(5555u16.to_be_bytes());
    ipv4.extend(1883u16.to_be_bytes());
    let mut bytes = v2(0x21, 0x11, &ipv4);
    bytes.extend(b"\x10\x0cMQTT");
    let (client, rest) = read(&bytes).unwrap();
    assert_eq!(client, "192.0.2.7:5555".parse().unwrap());
    assert_eq!(rest, b"\x10\x0cMQTT");
    let mut ipv6 = "2001:db8::7"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    ipv6.extend(
        "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    ipv6.extend(6666u16.to_be_bytes());
    ipv6.extend(1883u16.to_be_bytes());
    let (client, _) = read(&v2(0x21, 0x21, &ipv6)).unwrap();
    assert_eq!(client, "[2001:db8::7]:6666".parse().unwrap());
}

#[test]
fn health_checks_of_the_proxy_keep_the_tcp_peer() {
    let (client, rest) = read(b"PROXY UNKNOWN\r\n\x10").unwrap();
    assert_eq!((client, rest), (peer(), b"\x10".to_vec()));
    let (client, rest) = read(&v2(0x20, 0x00, &[])).unwrap();
    assert_eq!((client, rest), (peer(), vec![]));
}

#[test]
fn a_connection_without_a_valid_header_is_refused() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "MQTT CONNECT",
            b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x00".to_vec(),
        ),
        (
            "v1 without CRLF",
            [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat(),
        ),
        (
            "v1 garbage",
            b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n".to_vec(),
        ),
        ("v2 version 3", {
            let mut h = v2(0x21, 0x11, &[0; 12]);
            h[12] = 0x31;
            h
        }),
        ("v2 oversized", {
            let mut h = V2_SIGNATURE.to_vec();
            h.extend([0x21, 0x11, 0xff, 0xff]);
            h
        }),
        ("cut short", b"PROXY TCP4 192.0.2.7".to_vec()),
    ];
    for (what, bytes) in cases {
        let err = read(&bytes).expect_err(what);
        let kind = err.kind();
        assert!(
            matches!(
                kind,
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ),
            "{what}: {err}"
        );
    }
}

#[test]
fn a_peer_that_closes_without_a_byte_is_a_health_check_not_an_error() {
    let got = smol::block_on(read_header(&mut Cursor::new(Vec::new()), peer())).unwrap();
    assert_eq!(got, None);
}
