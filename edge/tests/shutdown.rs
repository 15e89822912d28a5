//! SIGTERM shuts the broker down cleanly: exit status 0 and a database that needs no repair
//! (redb's clean-shutdown mark is written only when the last handle to it is dropped).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigterm_exits_zero_and_leaves_a_cleanly_closed_database() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_robustmq-edge"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sock = loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            break s;
        }
        assert!(Instant::now() < deadline, "broker did not listen");
        std::thread::sleep(Duration::from_millis(20));
    };
    // A persistent MQTT 3.1.1 session stays connected across the shutdown.
    sock.write_all(&[
        0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x00, 0x00, 0x3c, 0x00, 0x02, b'c',
        b'1',
    ])
    .unwrap();
    let mut ack = [0u8; 4];
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x00]);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "broker did not stop within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    // A read-only open refuses (RepairAborted) a database that was not closed cleanly.
    redb::ReadOnlyDatabase::open(dir.path().join("edge.redb")).expect("database closed cleanly");
}
