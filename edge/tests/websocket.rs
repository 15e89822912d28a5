//! MQTT over WebSocket (`kind = "websocket"` listeners, ws:// and wss://) against the broker
//! started in the test process, driven by tungstenite's blocking client speaking raw MQTT 3.1.1
//! packets: publish/subscribe across ws, wss and plain TCP, packets spanning messages and
//! fragmented frames, several packets in one message, text frames, pings, oversized messages,
//! the upgrade's path and subprotocol checks, the closing handshake and per-listener limits.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use robustmq_edge::config::{Config, ListenerConfig, ListenerKind, TlsListenerConfig};
use robustmq_edge::server::{self, Running};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::{Message, WebSocket};

mod common;
use common::{mqtt_str, packet, take_packet, tls_client_config, Identity};

const WAIT: Duration = Duration::from_secs(10);

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}
type Ws = WebSocket<Box<dyn ReadWrite>>;

/// A broker with three listeners: plain MQTT, ws:// and wss:// (certificate for 127.0.0.1).
struct Setup {
    broker: Running,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn tcp(&self) -> SocketAddr {
        self.broker.addrs()[0]
    }
    fn ws(&self) -> SocketAddr {
        self.broker.addrs()[1]
    }
    fn wss(&self) -> SocketAddr {
        self.broker.addrs()[2]
    }
}

fn listener(kind: ListenerKind) -> ListenerConfig {
    ListenerConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        kind,
        ..ListenerConfig::default()
    }
}

fn start_with(edit: impl FnOnce(&mut Config, &Path)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("certificate params");
    let cert = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let mut wss = listener(ListenerKind::Websocket);
    wss.tls = Some(TlsListenerConfig {
        cert_file,
        key_file,
        client_ca_file: None,
        use_identity_as_username: false,
    });
    let mut cfg = Config {
        data_dir: dir.path().join("data"),
        listeners: vec![
            listener(ListenerKind::Mqtt),
            listener(ListenerKind::Websocket),
            wss,
        ],
        ..Config::default()
    };
    edit(&mut cfg, dir.path());
    cfg.validate("test").expect("valid config");
    let broker = server::start(cfg).expect("broker starts");
    Setup {
        broker,
        ca_pem: cert.pem(),
        _dir: dir,
    }
}

fn start() -> Setup {
    start_with(|_, _| {})
}

/// Opens a WebSocket (TLS when `ca_pem` is given) offering `protocols`.
fn ws_open(
    addr: SocketAddr,
    path: &str,
    protocols: Option<&str>,
    ca_pem: Option<&str>,
) -> Result<Ws, tungstenite::Error> {
    ws_open_as(addr, path, protocols, ca_pem, None)
}

/// `ws_open`, presenting `identity` as the TLS client certificate.
fn ws_open_as(
    addr: SocketAddr,
    path: &str,
    protocols: Option<&str>,
    ca_pem: Option<&str>,
    identity: Option<Identity>,
) -> Result<Ws, tungstenite::Error> {
    ws_open_with(addr, path, protocols, ca_pem, identity, &[])
}

/// `ws_open_as`, with `headers` added to the upgrade request.
fn ws_open_with(
    addr: SocketAddr,
    path: &str,
    protocols: Option<&str>,
    ca_pem: Option<&str>,
    identity: Option<Identity>,
    headers: &[(&'static str, &str)],
) -> Result<Ws, tungstenite::Error> {
    let scheme = if ca_pem.is_some() { "wss" } else { "ws" };
    let mut request = format!("{scheme}://{addr}{path}")
        .into_client_request()
        .unwrap();
    if let Some(p) = protocols {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    for (name, value) in headers {
        request.headers_mut().append(*name, value.parse().unwrap());
    }
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let stream: Box<dyn ReadWrite> = match ca_pem {
        None => Box::new(tcp),
        Some(pem) => {
            let config = tls_client_config(pem, identity);
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let conn = rustls::ClientConnection::new(config, name).unwrap();
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    };
    let handshake = tungstenite::client::client(request, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => panic!("blocking handshake interrupted"),
    });
    handshake.map(|(ws, response)| {
        if protocols.is_some() {
            assert!(
                response.headers().get("Sec-WebSocket-Protocol").is_some(),
                "subprotocol answered"
            );
        }
        ws
    })
}

/// An MQTT client over a WebSocket: packets are written in binary messages, read from
/// whatever messages they arrive in.
struct Client {
    ws: Ws,
    buf: Vec<u8>,
}

fn connect_packet(client_id: &str) -> Vec<u8> {
    connect_packet_with_keep_alive(client_id, 60)
}

fn connect_packet_with_keep_alive(client_id: &str, keep_alive_secs: u16) -> Vec<u8> {
    let mut body = mqtt_str("MQTT");
    body.extend_from_slice(&[4, 0x02]);
    body.extend_from_slice(&keep_alive_secs.to_be_bytes());
    body.extend_from_slice(&mqtt_str(client_id));
    packet(0x10, &body)
}

fn subscribe_packet(pid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    body.extend_from_slice(&mqtt_str(filter));
    body.push(qos);
    packet(0x82, &body)
}

fn publish_packet(topic: &str, qos1_pid: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut body = mqtt_str(topic);
    if let Some(pid) = qos1_pid {
        body.extend_from_slice(&pid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(if qos1_pid.is_some() { 0x32 } else { 0x30 }, &body)
}

impl Client {
    fn open(addr: SocketAddr, ca_pem: Option<&str>) -> Client {
        let ws = ws_open(addr, "/mqtt", Some("mqtt"), ca_pem).expect("WebSocket upgrade");
        Client {
            ws,
            buf: Vec::new(),
        }
    }

    /// Opens and CONNECTs; asserts the CONNACK return code.
    fn connect(addr: SocketAddr, ca_pem: Option<&str>, id: &str, expect_rc: u8) -> Client {
        let c = Client::open(addr, ca_pem);
        c.connected(id, expect_rc)
    }

    /// Opens (ws://) as a reverse proxy would, with `X-Forwarded-For: forwarded_for`, and
    /// CONNECTs; asserts the CONNACK return code.
    fn connect_forwarded(addr: SocketAddr, forwarded_for: &str, id: &str, rc: u8) -> Client {
        Client::connect_with_header(addr, ("X-Forwarded-For", forwarded_for), id, rc)
    }

    /// Opens (ws://) with one more request header, and CONNECTs; asserts the CONNACK return
    /// code.
    fn connect_with_header(
        addr: SocketAddr,
        header: (&'static str, &str),
        id: &str,
        rc: u8,
    ) -> Client {
        let headers = [header];
        let ws = ws_open_with(addr, "/mqtt", Some("mqtt"), None, None, &headers)
            .expect("WebSocket upgrade");
        let c = Client {
            ws,
            buf: Vec::new(),
        };
        c.connected(id, rc)
    }

    /// Sends CONNECT; asserts the CONNACK return code.
    fn connected(mut self, id: &str, expect_rc: u8) -> Client {
        self.send(&connect_packet(id));
        let (h, ack) = self.read();
        assert_eq!((h, ack[1]), (0x20, expect_rc), "CONNACK of {id}");
        self
    }

    fn send(&mut self, bytes: &[u8]) {
        self.ws.send(Message::binary(bytes.to_vec())).expect("send");
    }

    fn read(&mut self) -> (u8, Vec<u8>) {
        loop {
            if let Some(p) = take_packet(&mut self.buf) {
                return p;
            }
            match self.ws.read().expect("read") {
                Message::Binary(b) => self.buf.extend_from_slice(&b),
                other => panic!("expected a binary message, got {other:?}"),
            }
        }
    }

    fn subscribe(&mut self, pid: u16, filter: &str) {
        self.send(&subscribe_packet(pid, filter, 1));
        let (h, ack) = self.read();
        assert_eq!((h, ack), (0x90, vec![0, pid as u8, 1]), "SUBACK");
    }

    fn publish_qos1(&mut self, pid: u16, topic: &str, payload: &[u8]) {
        self.send(&publish_packet(topic, Some(pid), payload));
        let (h, ack) = self.read();
        assert_eq!((h, ack), (0x40, pid.to_be_bytes().to_vec()), "PUBACK");
    }

    /// Receives a QoS 1 PUBLISH and acknowledges it: (topic, payload).
    fn receive(&mut self) -> (String, Vec<u8>) {
        let (h, body) = self.read();
        assert_eq!(h & 0xf6, 0x32, "QoS 1 PUBLISH, got {h:#x}");
        let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
        let topic = String::from_utf8(body[2..2 + tlen].to_vec()).unwrap();
        let pid = body[2 + tlen..4 + tlen].to_vec();
        self.send(&packet(0x40, &pid));
        (topic, body[4 + tlen..].to_vec())
    }

    /// Reads until the server's Close frame; returns its code.
    fn expect_close(&mut self) -> CloseCode {
        loop {
            match self.ws.read() {
                Ok(Message::Close(frame)) => {
                    return frame.map_or(CloseCode::Status, |f| f.code);
                }
                Ok(Message::Binary(_)) => {}
                Ok(other) => panic!("expected Close, got {other:?}"),
                Err(e) => panic!("connection ended without a Close frame: {e}"),
            }
        }
    }

    /// After the closing handshake, the server closes the TCP connection.
    fn expect_tcp_closed(&mut self) {
        match self.ws.read() {
            Err(tungstenite::Error::ConnectionClosed) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
                ) => {}
            other => panic!("expected the connection closed, got {other:?}"),
        }
    }
}

/// Plain MQTT over TCP, for the cross-transport check.
fn tcp_publish_qos1(addr: SocketAddr, topic: &str, payload: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&connect_packet("tcp-pub")).unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 2, 0, 0]);
    s.write_all(&publish_packet(topic, Some(7), payload))
        .unwrap();
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x40, 2, 0, 7], "PUBACK");
    s.write_all(&[0xe0, 0]).unwrap();
}

#[test]
fn publish_and_subscribe_over_ws_and_wss_and_across_to_tcp() {
    let s = start();
    let mut ws_sub = Client::connect(s.ws(), None, "ws-sub", 0);
    ws_sub.subscribe(1, "plant/#");
    let mut wss_sub = Client::connect(s.wss(), Some(&s.ca_pem), "wss-sub", 0);
    wss_sub.subscribe(1, "plant/#");

    let mut ws_pub = Client::connect(s.ws(), None, "ws-pub", 0);
    ws_pub.publish_qos1(1, "plant/ws", b"from ws");
    let mut wss_pub = Client::connect(s.wss(), Some(&s.ca_pem), "wss-pub", 0);
    wss_pub.publish_qos1(1, "plant/wss", b"from wss");
    tcp_publish_qos1(s.tcp(), "plant/tcp", b"from tcp");

    for sub in [&mut ws_sub, &mut wss_sub] {
        let got: Vec<_> = (0..3).map(|_| sub.receive()).collect();
        assert_eq!(
            got,
            [
                ("plant/ws".to_string(), b"from ws".to_vec()),
                ("plant/wss".to_string(), b"from wss".to_vec()),
                ("plant/tcp".to_string(), b"from tcp".to_vec()),
            ]
        );
    }
}

/// A batch of deliveries goes out as one WebSocket message, not one per slice: payloads of
/// 512 bytes and more are written from the shared message buffer as slices of their own (a
/// vectored write), and each slice was a message and a send of its own.
#[test]
fn a_batch_of_publishes_with_shared_payloads_is_one_message_not_one_per_slice() {
    const N: usize = 30;
    let s = start();
    let mut subs = [
        Client::connect(s.ws(), None, "burst-ws", 0),
        Client::connect(s.wss(), Some(&s.ca_pem), "burst-wss", 0),
    ];
    for c in &mut subs {
        c.send(&subscribe_packet(1, "burst/#", 0));
        let (h, ack) = c.read();
        assert_eq!((h, ack), (0x90, vec![0, 1, 0]), "SUBACK");
    }
    // N QoS 0 publishes of 1,000 bytes in one TCP write: routed together, sent as one batch.
    let mut tcp = TcpStream::connect(s.tcp()).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(&connect_packet("burst-pub")).unwrap();
    let mut ack = [0u8; 4];
    tcp.read_exact(&mut ack).unwrap();
    let burst: Vec<u8> = (0..N)
        .flat_map(|i| publish_packet(&format!("burst/{i}"), None, &[i as u8; 1000]))
        .collect();
    tcp.write_all(&burst).unwrap();
    for c in &mut subs {
        let mut messages = 0;
        let mut got = 0;
        while got < N {
            while let Some((h, body)) = take_packet(&mut c.buf) {
                assert_eq!(h, 0x30, "QoS 0 PUBLISH");
                assert_eq!(body.len(), 2 + format!("burst/{got}").len() + 1000);
                got += 1;
            }
            if got == N {
                break;
            }
            match c.ws.read().expect("read") {
                Message::Binary(b) => {
                    messages += 1;
                    c.buf.extend_from_slice(&b);
                }
                other => panic!("expected a binary message, got {other:?}"),
            }
        }
        assert!(
            messages <= N,
            "{messages} messages for {N} publishes: at most one per batch, not one per slice"
        );
    }
}

#[test]
fn packets_may_span_messages_and_fragmented_frames_and_share_a_message() {
    let s = start();
    let mut c = Client::open(s.ws(), None);
    // CONNECT cut in three binary messages, the cut inside the remaining length's neighbourhood.
    let connect = connect_packet("frag");
    c.send(&connect[..1]);
    c.send(&connect[1..5]);
    c.send(&connect[5..]);
    let (h, ack) = c.read();
    assert_eq!((h, ack), (0x20, vec![0, 0]), "CONNACK");

    // SUBSCRIBE and a PUBLISH to the subscribed topic in one message.
    let both = [
        subscribe_packet(1, "a/b", 1),
        publish_packet("a/b", Some(2), b"together"),
    ]
    .concat();
    c.send(&both);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let (h, body) = c.read();
        match h & 0xf0 {
            0x90 => seen.push("suback"),
            0x40 => seen.push("puback"),
            0x30 => {
                assert!(body.ends_with(b"together"));
                let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
                c.send(&packet(0x40, &body[2 + tlen..4 + tlen]));
                seen.push("publish");
            }
            other => panic!("unexpected packet {other:#x}"),
        }
    }
    seen.sort();
    assert_eq!(seen, ["puback", "publish", "suback"]);

    // One PUBLISH as a WebSocket message in three frames (first + two continuations).
    let p = publish_packet("a/b", Some(3), &[b'x'; 3000]);
    let (a, rest) = p.split_at(1000);
    let (b, cc) = rest.split_at(1000);
    c.ws.write(Message::Frame(Frame::message(
        a.to_vec(),
        OpCode::Data(Data::Binary),
        false,
    )))
    .unwrap();
    c.ws.write(Message::Frame(Frame::message(
        b.to_vec(),
        OpCode::Data(Data::Continue),
        false,
    )))
    .unwrap();
    c.ws.send(Message::Frame(Frame::message(
        cc.to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .unwrap();
    let mut got_puback = false;
    let mut got_publish = false;
    while !(got_puback && got_publish) {
        let (h, body) = c.read();
        match h & 0xf0 {
            0x40 => got_puback = body == [0, 3],
            0x30 => {
                assert_eq!(body.len(), 2 + 3 + 2 + 3000);
                got_publish = true;
                c.send(&packet(0x40, &body[5..7]));
            }
            other => panic!("unexpected packet {other:#x}"),
        }
    }
}

#[test]
fn a_text_frame_ends_the_connection_with_close_1002() {
    let s = start();
    let mut c = Client::connect(s.ws(), None, "texter", 0);
    c.ws.send(Message::text("hello")).unwrap();
    assert_eq!(c.expect_close(), CloseCode::Protocol);
    // Before CONNECT too.
    let mut c = Client::open(s.ws(), None);
    c.ws.send(Message::text("{}")).unwrap();
    assert_eq!(c.expect_close(), CloseCode::Protocol);
}

#[test]
fn ping_is_answered_with_pong_between_packets() {
    let s = start();
    let mut c = Client::connect(s.ws(), None, "pinger", 0);
    c.ws.send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    match c.ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected Pong, got {other:?}"),
    }
    // MQTT PINGREQ still works on the same connection.
    c.send(&[0xc0, 0]);
    assert_eq!(c.read(), (0xd0, vec![]));
}

/// An idle connection waits with no read under way (`transport.rs`): a WebSocket ping is
/// answered from that wait and is no MQTT input, so the keep-alive still ends a client that
/// only pings, and a packet after the pings is read whole.
#[test]
fn pings_to_an_idle_connection_are_answered_but_do_not_keep_it_alive() {
    let s = start();
    let mut c = Client::open(s.ws(), None);
    c.send(&connect_packet_with_keep_alive("idle-pinger", 1));
    assert_eq!(c.read().0, 0x20, "CONNACK");
    // Within the keep-alive: pings, then PINGREQ split over two messages.
    for i in 0..3u8 {
        std::thread::sleep(Duration::from_millis(100));
        c.ws.send(Message::Ping(vec![i].into())).unwrap();
        assert_eq!(c.ws.read().unwrap(), Message::Pong(vec![i].into()));
    }
    c.send(&[0xc0]);
    std::thread::sleep(Duration::from_millis(50));
    c.send(&[0]);
    assert_eq!(c.read(), (0xd0, vec![]));
    // Then only pings, every 200 ms: answered until the keep-alive (1.5 s) ends it.
    let started = std::time::Instant::now();
    let closed = loop {
        assert!(
            started.elapsed() < WAIT,
            "still open after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
        if c.ws.send(Message::Ping(b"p".to_vec().into())).is_err() {
            break started.elapsed();
        }
        match c.ws.read() {
            Ok(Message::Pong(_)) => {}
            Ok(Message::Close(_)) | Err(_) => break started.elapsed(),
            Ok(other) => panic!("expected Pong or the end, got {other:?}"),
        }
    };
    assert!(
        closed >= Duration::from_millis(1400) && closed < Duration::from_secs(4),
        "closed after {closed:?}"
    );
}

#[test]
fn a_message_over_the_bound_is_refused_with_close_1009() {
    let s = start_with(|cfg, _| cfg.limits.max_packet_size = 1024);
    let mut c = Client::connect(s.ws(), None, "big", 0);
    // The bound is max(max_packet_size, 64 KiB): 64 KiB + 1 is refused before it is buffered.
    c.send(&vec![0u8; 64 * 1024 + 1]);
    assert_eq!(c.expect_close(), CloseCode::Size);
    // A fragmented message, each frame under the bound, is refused once the sum passes it.
    let mut c = Client::connect(s.ws(), None, "big-frag", 0);
    for opcode in [Data::Binary, Data::Continue] {
        c.ws.send(Message::Frame(Frame::message(
            vec![0u8; 40 * 1024],
            OpCode::Data(opcode),
            false,
        )))
        .unwrap();
    }
    assert_eq!(c.expect_close(), CloseCode::Size);
}

#[test]
fn the_upgrade_checks_path_and_subprotocol() {
    let s = start();
    let status = |r: Result<Ws, tungstenite::Error>| match r {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got an upgrade"),
    };
    assert_eq!(status(ws_open(s.ws(), "/other", Some("mqtt"), None)), 404);
    assert_eq!(status(ws_open(s.ws(), "/mqtt", None, None)), 400);
    assert_eq!(status(ws_open(s.ws(), "/mqtt", Some("wamp"), None)), 400);
    // MQTT.js and older clients offer `mqttv3.1`.
    let (_, response) = {
        let mut request = format!("ws://{}/mqtt", s.ws())
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "mqttv3.1".parse().unwrap());
        tungstenite::client::client(request, TcpStream::connect(s.ws()).unwrap()).unwrap()
    };
    assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "mqttv3.1");
    // A configured path replaces /mqtt.
    let s = start_with(|cfg, _| cfg.listeners[1].websocket_path = Some("/ws".into()));
    assert_eq!(status(ws_open(s.ws(), "/mqtt", Some("mqtt"), None)), 404);
    assert!(ws_open(s.ws(), "/ws", Some("mqtt"), None).is_ok());
}

#[test]
fn a_plain_http_request_gets_an_http_error_with_the_reason() {
    let s = start();
    let ask = |request: &str| {
        let mut tcp = TcpStream::connect(s.ws()).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.write_all(request.as_bytes()).unwrap();
        let mut reply = String::new();
        tcp.read_to_string(&mut reply).unwrap();
        reply
    };
    // What curl, a browser or a load balancer's health check sends.
    let reply = ask("GET /mqtt HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert!(
        reply.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{reply}"
    );
    assert!(reply.ends_with("MQTT over WebSocket only\n"), "{reply}");
    let reply = ask("GET /status HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 404 Not Found\r\n"), "{reply}");
    // MQTT sent to the WebSocket port by mistake.
    let reply = ask("\u{10}\u{c}\u{0}\u{4}MQTT\u{4}\u{2}\u{0}<\u{0}\u{0}");
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
}

#[test]
fn disconnect_ends_with_the_websocket_closing_handshake() {
    let s = start();
    let mut c = Client::connect(s.ws(), None, "leaver", 0);
    c.send(&[0xe0, 0]);
    assert_eq!(c.expect_close(), CloseCode::Normal);
    c.expect_tcp_closed();
    // Over TLS as well, and when the client starts the closing handshake.
    let mut c = Client::connect(s.wss(), Some(&s.ca_pem), "closer", 0);
    c.ws.close(None).unwrap();
    loop {
        match c.ws.read() {
            Ok(Message::Close(_)) | Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("closing handshake not completed: {e}"),
        }
    }
}

#[test]
fn per_ip_limits_and_anonymous_policy_apply_to_websocket_listeners() {
    let s = start_with(|cfg, dir| {
        cfg.limits.max_connections_per_ip = 2;
        // The wss listener admits only known users; an empty password file knows none.
        let pw = dir.join("passwd");
        std::fs::write(&pw, "").unwrap();
        cfg.auth.password_file = Some(pw);
        cfg.listeners[2].allow_anonymous = Some(false);
    });
    let _a = Client::connect(s.ws(), None, "a", 0);
    let _b = Client::connect(s.ws(), None, "b", 0);
    // MQTT 3.1.1 CONNACK 3: server unavailable (v5 would get 0x89 Server busy).
    let mut c = Client::connect(s.ws(), None, "c", 3);
    // A refused CONNECT ends with the closing handshake too.
    assert_eq!(c.expect_close(), CloseCode::Normal);
    drop((_a, _b));
    std::thread::sleep(Duration::from_millis(800));
    // CONNACK 5: not authorised (anonymous on a listener that does not allow it).
    let mut d = Client::connect(s.wss(), Some(&s.ca_pem), "d", 5);
    assert_eq!(d.expect_close(), CloseCode::Normal);
}

/// Behind a reverse proxy (trusted: 127.0.0.1 on the ws listener) `X-Forwarded-For` names
/// each client, and the per-IP limit counts those addresses, not the proxy's; a listener
/// that trusts no proxy ignores the header, whatever a client writes in it.
#[test]
fn per_ip_limits_count_the_client_a_trusted_proxy_forwards() {
    let s = start_with(|cfg, _| {
        cfg.limits.max_connections_per_ip = 1;
        cfg.listeners[1].trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        cfg.listeners.push(listener(ListenerKind::Websocket));
    });
    let untrusting = s.broker.addrs()[3];
    let _a = Client::connect_forwarded(s.ws(), "192.0.2.1", "a", 0);
    // The client wrote its own entry first; the proxy appended the address it saw.
    let _b = Client::connect_forwarded(s.ws(), "192.0.2.1, 192.0.2.2", "b", 0);
    let mut c = Client::connect_forwarded(s.ws(), "192.0.2.1", "c", 3);
    assert_eq!(c.expect_close(), CloseCode::Normal);
    // 127.0.0.1 itself has no connection yet: the first from it gets in, a second does not,
    // though each claims another address.
    let _d = Client::connect_forwarded(untrusting, "192.0.2.3", "d", 0);
    let mut e = Client::connect_forwarded(untrusting, "192.0.2.4", "e", 3);
    assert_eq!(e.expect_close(), CloseCode::Normal);
}

/// The same behind a proxy that sends RFC 7239's `Forwarded` (HAProxy's `option forwarded`):
/// the `for=` of the right-most element not from a trusted proxy is the client.
#[test]
fn per_ip_limits_count_the_client_a_trusted_proxy_names_in_forwarded() {
    let s = start_with(|cfg, _| {
        cfg.limits.max_connections_per_ip = 1;
        cfg.listeners[1].trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    });
    let fwd = |value| ("Forwarded", value);
    let _a = Client::connect_with_header(s.ws(), fwd("for=192.0.2.1;proto=http"), "a", 0);
    // The client wrote its own element first; the proxy appended the address it saw.
    let _b =
        Client::connect_with_header(s.ws(), fwd("for=192.0.2.1, for=\"192.0.2.2:5000\""), "b", 0);
    let mut c = Client::connect_with_header(s.ws(), fwd("For=192.0.2.1"), "c", 3);
    assert_eq!(c.expect_close(), CloseCode::Normal);
}

#[test]
fn broker_shutdown_closes_websocket_clients_with_a_close_frame() {
    let Setup {
        broker,
        ca_pem,
        _dir,
    } = start();
    let mut ws = Client::connect(broker.addrs()[1], None, "stay-ws", 0);
    let mut wss = Client::connect(broker.addrs()[2], Some(&ca_pem), "stay-wss", 0);
    let stopping = std::thread::spawn(move || drop(broker));
    assert_eq!(ws.expect_close(), CloseCode::Normal);
    assert_eq!(wss.expect_close(), CloseCode::Normal);
    ws.expect_tcp_closed();
    stopping.join().expect("broker stopped");
}

#[test]
fn wss_client_certificates_name_the_user() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dashboard-1");
    let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();
    let ca_pem = ca.pem();
    let s = start_with(move |cfg, dir| {
        let ca_file = dir.join("clients-ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let tls = cfg.listeners[2].tls.as_mut().unwrap();
        tls.client_ca_file = Some(ca_file);
        tls.use_identity_as_username = true;
        cfg.listeners[2].allow_anonymous = Some(false);
    });
    let identity: Identity = (
        vec![client.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(client_key.serialize_der()).unwrap(),
    );
    let ws = ws_open_as(
        s.wss(),
        "/mqtt",
        Some("mqtt"),
        Some(&s.ca_pem),
        Some(identity),
    )
    .expect("upgrade with a client certificate");
    let mut c = Client {
        ws,
        buf: Vec::new(),
    };
    c.send(&connect_packet("cert-client"));
    assert_eq!(c.read(), (0x20, vec![0, 0]), "admitted as dashboard-1");
    // Without a certificate the TLS handshake (and so the upgrade) fails.
    assert!(ws_open(s.wss(), "/mqtt", Some("mqtt"), Some(&s.ca_pem)).is_err());
}

/// Large packets one after another over ws and wss: the reader's buffer grows for a large
/// frame and shrinks back once it is handled, while TLS and WebSocket keep their own buffers
/// (a broker panic once the buffer shrank under the old read position, seen with a 200 KiB
/// MQTT.js publish).
#[test]
fn large_packets_in_a_row_cross_ws_and_wss() {
    let s = start();
    let big: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
    for (addr, ca) in [(s.ws(), None), (s.wss(), Some(s.ca_pem.as_str()))] {
        let mut sub = Client::connect(addr, ca, "big-sub", 0);
        sub.subscribe(1, "big/#");
        let mut publisher = Client::connect(addr, ca, "big-pub", 0);
        publisher.publish_qos1(1, "big/1", &big[..70 * 1024]);
        publisher.publish_qos1(2, "big/2", &big);
        publisher.publish_qos1(3, "big/3", b"small after large");
        assert_eq!(
            sub.receive(),
            ("big/1".to_string(), big[..70 * 1024].to_vec())
        );
        assert_eq!(sub.receive(), ("big/2".to_string(), big.clone()));
        assert_eq!(
            sub.receive(),
            ("big/3".to_string(), b"small after large".to_vec())
        );
    }
}
