use super::*;
use crate::websocket::MAX_GATHERED;

fn settings() -> WsSettings {
    WsSettings::new("/mqtt", 1 << 20)
}

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

fn upgrade_head(path: &str, protocol: Option<&str>) -> String {
    let protocol = protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: keep-alive, Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{KEY}{protocol}\r\n"
    )
}

/// A listener on a free loopback port, and its address.
async fn loopback_listener() -> (smol::net::TcpListener, std::net::SocketAddr) {
    let listener = smol::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// The refusal (or 101 response) for one request head.
fn check(head: &str) -> Result<Response, Refusal> {
    let (request, len) = parse_head(head.as_bytes())?.expect("a whole head");
    assert_eq!(len, head.len());
    check_request(&settings(), &request)
}

#[test]
fn mqtt_is_preferred_and_mqttv31_accepted() {
    assert_eq!(
        choose_subprotocol(["mqttv3.1, mqtt"].into_iter()),
        Some("mqtt")
    );
    assert_eq!(
        choose_subprotocol(["foo", "mqttv3.1"].into_iter()),
        Some("mqttv3.1")
    );
    assert_eq!(choose_subprotocol(["foo, MQTT"].into_iter()), None);
    assert_eq!(choose_subprotocol(std::iter::empty()), None);
}

#[test]
fn an_upgrade_to_the_path_with_mqtt_gets_101_with_the_accept_key_and_subprotocol() {
    let response = check(&upgrade_head("/mqtt?x=1", Some("mqttv3.1"))).expect("accepted");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["sec-websocket-protocol"], "mqttv3.1");
    // RFC 6455 §1.3's example key and answer.
    assert_eq!(
        response.headers()["sec-websocket-accept"],
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn each_wrong_request_gets_its_own_refusal() {
    let cases = [
        (upgrade_head("/other", Some("mqtt")), Refusal::WrongPath),
        (upgrade_head("/mqtt", None), Refusal::NoMqttSubprotocol),
        (
            upgrade_head("/mqtt", Some("wamp")),
            Refusal::NoMqttSubprotocol,
        ),
        (
            "GET /mqtt HTTP/1.1\r\nHost: gw\r\n\r\n".to_string(),
            Refusal::NotAnUpgrade,
        ),
        (
            upgrade_head("/mqtt", Some("mqtt")).replacen("GET", "POST", 1),
            Refusal::WrongMethod,
        ),
        (
            upgrade_head("/mqtt", Some("mqtt")).replace("Version: 13", "Version: 8"),
            Refusal::UnsupportedVersion,
        ),
        (
            upgrade_head("/mqtt", Some("mqtt")).replace(KEY, ""),
            Refusal::BadHandshake,
        ),
        (
            upgrade_head("/mqtt", Some("mqtt")).replace("HTTP/1.1", "HTTP/1.0"),
            Refusal::BadHandshake,
        ),
    ];
    for (head, want) in cases {
        assert_eq!(check(&head).err(), Some(want), "request: {head:?}");
    }
}

#[test]
fn a_head_is_read_whole_and_bad_or_oversized_heads_are_refused() {
    let head = upgrade_head("/mqtt", Some("mqtt"));
    assert!(matches!(parse_head(&head.as_bytes()[..20]), Ok(None)));
    assert_eq!(
        parse_head(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c").err(),
        Some(Refusal::Malformed),
        "an MQTT CONNECT sent to a WebSocket port"
    );
    let many: String = (0..MAX_HEADERS + 1)
        .map(|i| format!("X-{i}: y\r\n"))
        .collect();
    assert_eq!(
        parse_head(format!("GET /mqtt HTTP/1.1\r\n{many}\r\n").as_bytes()).err(),
        Some(Refusal::HeadTooLarge)
    );
}

#[test]
fn a_refusal_reply_is_complete_http_with_its_status_headers_and_reason() {
    let reply = String::from_utf8(Refusal::NotAnUpgrade.reply()).expect("utf-8");
    assert!(
        reply.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{reply}"
    );
    assert!(reply.contains("\r\nUpgrade: websocket\r\n"), "{reply}");
    let (head, body) = reply.split_once("\r\n\r\n").expect("head and body");
    assert_eq!(body, "this endpoint speaks MQTT over WebSocket only\n");
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{reply}"
    );

    let reply = String::from_utf8(Refusal::UnsupportedVersion.reply()).expect("utf-8");
    assert!(
        reply.contains("\r\nSec-WebSocket-Version: 13\r\n"),
        "{reply}"
    );
    let reply = String::from_utf8(Refusal::WrongMethod.reply()).expect("utf-8");
    assert!(
        reply.starts_with("HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\n"),
        "{reply}"
    );
    assert!(reply.contains("Connection: close\r\n"), "{reply}");
}

#[test]
fn accept_answers_a_plain_get_with_426_and_upgrades_with_early_bytes_kept() {
    smol::block_on(async {
        let (listener, addr) = loopback_listener().await;

        // A plain HTTP GET, as curl or a health check sends it.
        let client = smol::spawn(async move {
            let mut s = smol::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"GET /mqtt HTTP/1.1\r\nHost: gw\r\n\r\n")
                .await
                .expect("write");
            let mut reply = String::new();
            s.read_to_string(&mut reply).await.expect("read");
            reply
        });
        let (server, peer) = listener.accept().await.expect("accept");
        let err = accept(server, &settings(), peer)
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("HTTP 426"), "{err}");
        let reply = client.await;
        assert!(
            reply.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{reply}"
        );

        // An upgrade whose first WebSocket frame comes in the same write as the head.
        let client = smol::spawn(async move {
            let mut s = smol::net::TcpStream::connect(addr).await.expect("connect");
            let mut bytes = upgrade_head("/mqtt", Some("mqtt")).into_bytes();
            // A masked binary frame holding b"hi".
            bytes.extend_from_slice(&[0x82, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
            s.write_all(&bytes).await.expect("write");
            let mut head = vec![0u8; 512];
            let n = s.read(&mut head).await.expect("read");
            (String::from_utf8_lossy(&head[..n]).to_string(), s)
        });
        let (server, peer) = listener.accept().await.expect("accept");
        let mut ws = accept(server, &settings(), peer).await.expect("upgraded");
        let mut got = [0u8; 2];
        ws.read_exact(&mut got).await.expect("frame payload");
        assert_eq!(&got, b"hi");
        let (reply, _keep_open) = client.await;
        assert!(reply.starts_with("HTTP/1.1 101"), "{reply}");
    });
}

/// Upgrades a connection from a raw client; returns the server side and the client's socket
/// with the 101 response read.
async fn upgraded_pair() -> (WsBytes<smol::net::TcpStream>, smol::net::TcpStream) {
    let (listener, addr) = loopback_listener().await;
    let client = smol::spawn(async move {
        let mut s = smol::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(upgrade_head("/mqtt", Some("mqtt")).as_bytes())
            .await
            .expect("write");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).await.expect("101 response");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"));
        s
    });
    let (server, peer) = listener.accept().await.expect("accept");
    let ws = accept(server, &settings(), peer).await.expect("upgraded");
    (ws, client.await)
}

#[test]
fn a_vectored_write_goes_out_as_one_binary_message() {
    smol::block_on(async {
        let (mut ws, mut client) = upgraded_pair().await;
        let slices = [
            io::IoSlice::new(b""),
            io::IoSlice::new(b"ab"),
            io::IoSlice::new(b"cd"),
            io::IoSlice::new(b"e"),
        ];
        let n = ws.write_vectored(&slices).await.expect("write");
        assert_eq!(n, 5);
        ws.flush().await.expect("flush");
        let mut frame = [0u8; 7];
        client.read_exact(&mut frame).await.expect("frame");
        assert_eq!(
            frame,
            [0x82, 5, b'a', b'b', b'c', b'd', b'e'],
            "FIN + binary, unmasked"
        );
    });
}

#[test]
fn a_vectored_write_gathers_at_most_64_kib_into_one_message_but_always_one_slice() {
    smol::block_on(async {
        let (mut ws, _client) = upgraded_pair().await;
        let big = vec![7u8; MAX_GATHERED + 1];
        let small = [1u8; 100];
        let n = ws
            .write_vectored(&[io::IoSlice::new(&big), io::IoSlice::new(&small)])
            .await
            .expect("write");
        assert_eq!(n, big.len(), "a first slice over the bound goes alone");
        let halves = vec![3u8; MAX_GATHERED / 2];
        let slices = [
            io::IoSlice::new(&halves),
            io::IoSlice::new(&halves),
            io::IoSlice::new(&small),
        ];
        let n = ws.write_vectored(&slices).await.expect("write");
        assert_eq!(
            n, MAX_GATHERED,
            "the third slice waits for the next message"
        );
    });
}
