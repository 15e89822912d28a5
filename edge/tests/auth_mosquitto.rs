//! Interoperability of the auth core with the real mosquitto (Debian's package): password files
//! written by `mosquitto_passwd` verify here, files written by `robustmq-edge passwd` let clients
//! into a real mosquitto, and mosquitto delivers to a `#` subscriber exactly what `Acl` predicts.
//! Without mosquitto installed each test prints why it skips; with CI set it fails instead.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use robustmq_edge::auth::acl::{Access, Acl, ClientIdentity};
use robustmq_edge::auth::password_file::{HashKind, PasswordFile};

mod common;
use common::{free_port, run_with_stdin, wait_port_or};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";

/// The tool's path when installed; otherwise None after saying why (or a panic under CI).
fn tool(name: &str) -> Option<PathBuf> {
    let p = if name.starts_with('/') {
        PathBuf::from(name)
    } else {
        std::env::var_os("PATH")
            .map(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(name))
    };
    if p.is_file() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{name} is not installed but CI is set (scripts/test.sh installs mosquitto and mosquitto-clients)");
    }
    eprintln!("SKIPPED: {name} is not installed (apt-get install mosquitto mosquitto-clients)");
    None
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn edge_passwd(args: &[&str], stdin: &str) -> Output {
    run_with_stdin(
        Command::new(env!("CARGO_BIN_EXE_robustmq-edge"))
            .arg("passwd")
            .args(args),
        stdin.as_bytes(),
    )
}

/// A mosquitto broker on 127.0.0.1, stopped on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Mosquitto {
    fn start(dir: &Path, security: &str) -> Mosquitto {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        let log = dir.join("mosquitto.log");
        // As root, mosquitto would switch to the `mosquitto` user before reading the 0600
        // files written by this test; `user root` keeps it as is (no effect when not root).
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npersistence false\nuser root\n{security}\n"
            ),
        )
        .unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start mosquitto");
        let m = Mosquitto { child, port, log };
        wait_port_or(port, || format!("mosquitto (log: {})", m.log_text()));
        m
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn publish(&self, version: &str, user: &str, password: &str, topic: &str) -> Output {
        run(Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-V", version, "-q", "1"])
            .args(["-p", &self.port.to_string()])
            .args(["-u", user, "-P", password, "-i", &format!("pub-{user}")])
            .args(["-t", topic, "-m", "x"]))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn password_file_made_by_mosquitto_passwd_now_verifies_and_refuses_wrong_passwords() {
    let Some(mp) = tool(MOSQUITTO_PASSWD) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pw");
    let fs = f.to_str().unwrap();
    let ok = |o: Output| assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ok(run(
        Command::new(&mp).args(["-c", "-b", fs, "alice", "alice pw"])
    ));
    ok(run(
        Command::new(&mp).args(["-H", "sha512", "-b", fs, "bob", "bob-pw"])
    ));
    ok(run(
        Command::new(&mp).args(["-I", "7", "-b", fs, "carol", "ç-pw"])
    ));
    ok(run(Command::new(&mp).args(["-b", fs, "alice", "changed"])));
    let pf = PasswordFile::load(&f).expect("mosquitto_passwd's file parses");
    assert_eq!(pf.len(), 3);
    assert!(pf.verify("alice", b"changed"));
    assert!(!pf.verify("alice", b"alice pw"));
    assert!(pf.verify("bob", b"bob-pw"));
    assert!(pf.verify("carol", "ç-pw".as_bytes()));
    for u in ["alice", "bob", "carol"] {
        assert!(!pf.verify(u, b"wrong"), "{u}");
    }
    let text = std::fs::read_to_string(&f).unwrap();
    let kind = |user: &str| {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .unwrap();
        robustmq_edge::auth::password_file::PasswordHash::parse(line.split_once(':').unwrap().1)
            .unwrap()
            .kind()
    };
    assert_eq!(kind("alice"), HashKind::Pbkdf2Sha512 { iterations: 101 });
    assert_eq!(kind("bob"), HashKind::Sha512);
    assert_eq!(kind("carol"), HashKind::Pbkdf2Sha512 { iterations: 7 });
}

#[test]
fn file_written_by_robustmq_edge_passwd_is_accepted_by_real_mosquitto() {
    let (Some(_), Some(_)) = (tool(MOSQUITTO), tool("mosquitto_pub")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("passwords");
    let fs = f.to_str().unwrap();
    let o = edge_passwd(&["-c", fs, "alice", "--password-stdin"], "alice secret\n");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = edge_passwd(&[fs, "bob", "--password-stdin"], "bob-secret\n");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = edge_passwd(&["-b", fs, "carol", "carol-secret"], "");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = edge_passwd(&["-D", fs, "carol"], "");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    let m = Mosquitto::start(dir.path(), &format!("password_file {fs}"));
    for version in ["mqttv311", "mqttv5"] {
        for (user, pw) in [("alice", "alice secret"), ("bob", "bob-secret")] {
            let o = m.publish(version, user, pw, "t");
            assert!(
                o.status.success(),
                "{version} {user}: {}\n{}",
                String::from_utf8_lossy(&o.stderr),
                m.log_text()
            );
        }
        for (user, pw) in [("alice", "bob-secret"), ("carol", "carol-secret")] {
            let o = m.publish(version, user, pw, "t");
            assert!(!o.status.success(), "{version} {user} must be refused");
        }
    }
}

/// Reads mosquitto_sub's output (one topic per line) on a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `#` subscriber on mosquitto receives exactly the topics `Acl::check(.., Read)` allows,
/// and publishes go through exactly where it allows Write, for the same acl_file.
#[test]
fn real_mosquitto_delivers_what_acl_predicts() {
    let (Some(_), Some(_), Some(_)) = (
        tool(MOSQUITTO),
        tool("mosquitto_pub"),
        tool("mosquitto_sub"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwords");
    let pws = pw.to_str().unwrap().to_string();
    for (i, user) in ["alice", "admin", "bob"].iter().enumerate() {
        let c = if i == 0 { vec!["-c"] } else { vec![] };
        let mut args = c;
        args.extend([pws.as_str(), user, "--password-stdin"]);
        let o = edge_passwd(&args, &format!("{user}-pw\n"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let acl_text = "\
# anonymous: nothing here matters, anonymous is off
topic read public/#
user alice
topic read public/#
topic readwrite home/#
topic deny home/secret
topic write only-write/#
user admin
topic write #
user bob
topic write home/+
topic read home/secret
pattern read devices/%u/#
pattern readwrite clients/%c/#
pattern deny clients/%c/locked
";
    let acl_path = dir.path().join("acl");
    std::fs::write(&acl_path, acl_text).unwrap();
    let acl = Acl::load(&acl_path).unwrap();
    let m = Mosquitto::start(
        dir.path(),
        &format!("password_file {pws}\nacl_file {}", acl_path.display()),
    );

    let sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &m.port.to_string(),
            "-V",
            "mqttv311",
        ])
        .args(["-u", "alice", "-P", "alice-pw", "-i", "sub-a", "-q", "1"])
        .args(["-t", "#", "-F", "%t"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto_sub");
    let mut sub = Kill(sub);
    let rx = lines_of(&mut sub.0);
    // Wait until the subscription is live.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "subscriber never got ready: {}",
            m.log_text()
        );
        m.publish("mqttv311", "admin", "admin-pw", "public/ready");
        if let Ok(t) = rx.recv_timeout(Duration::from_millis(300)) {
            assert_eq!(t, "public/ready");
            break;
        }
    }
    while rx.recv_timeout(Duration::from_millis(200)).is_ok() {}

    let alice = ClientIdentity {
        username: Some("alice"),
        client_id: "sub-a",
    };
    let topics = [
        "public/x",
        "home/kitchen",
        "home/secret",
        "home/a/b",
        "only-write/x",
        "devices/alice/temp",
        "devices/bob/temp",
        "clients/sub-a/cmd",
        "clients/sub-a/locked",
        "clients/other/cmd",
        "other/x",
    ];
    let mut expected = Vec::new();
    for t in topics {
        let o = m.publish("mqttv311", "admin", "admin-pw", t);
        assert!(o.status.success(), "admin publishes {t}");
        if acl.check(&alice, t, Access::Read) {
            expected.push(t.to_string());
        }
    }
    // Write side: bob may write home/+ only; a denied v3.1.1 publish is acknowledged and dropped.
    let bob = ClientIdentity {
        username: Some("bob"),
        client_id: "pub-bob",
    };
    for t in ["home/bob-said", "home/deep/bob", "public/bob"] {
        let o = m.publish("mqttv311", "bob", "bob-pw", t);
        assert!(
            o.status.success(),
            "bob's publish on {t} is acknowledged either way"
        );
        if acl.check(&bob, t, Access::Write) && acl.check(&alice, t, Access::Read) {
            expected.push(t.to_string());
        }
    }
    m.publish("mqttv311", "admin", "admin-pw", "public/end");
    expected.push("public/end".into());

    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.last().map(String::as_str) != Some("public/end") && Instant::now() < deadline {
        if let Ok(t) = rx.recv_timeout(Duration::from_millis(200)) {
            got.push(t);
        }
    }
    assert_eq!(got, expected, "mosquitto's deliveries vs Acl's prediction");
    // The prediction is not trivial: it keeps some topics and drops others.
    assert!(expected.contains(&"home/kitchen".to_string()));
    assert!(!expected.contains(&"home/secret".to_string()));
    assert!(expected.contains(&"home/bob-said".to_string()));
    assert!(!expected.contains(&"home/deep/bob".to_string()));
    assert!(expected.contains(&"clients/sub-a/cmd".to_string()));
    assert!(!expected.contains(&"clients/sub-a/locked".to_string()));
}
