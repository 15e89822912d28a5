//! The upstream side of the sync end-to-end tests: a mosquitto process on a free 127.0.0.1 port
//! and the link to it, a TCP proxy owned by the test that can be taken down (listener closed,
//! live connections reset), brought back, or turned into a black hole (bytes swallowed, nothing
//! closed). Everything is stopped at drop.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use robustmq_edge_e2e::*;

use super::{wait_port, Observer};

/// The start of most tests: mosquitto, an observer of `edge/#` on it, and the link to it, down
/// until the test brings it up.
pub async fn upstream_behind_down_link() -> (Mosquitto, Observer, Proxy) {
    let mq = Mosquitto::start("");
    let obs = Observer::start(mq.port, &["edge/#"]).await;
    let proxy = Proxy::start(mq.port, Link::Down);
    (mq, obs, proxy)
}

// ------------------------------------------------------------------------------------------
// Upstream: mosquitto
// ------------------------------------------------------------------------------------------

/// A mosquitto process on 127.0.0.1, killed at drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Plain listener on a free port, anonymous, unbounded per-client queues (so the observer is
    /// never the one losing messages), plus `extra` config lines.
    pub fn start(extra: &str) -> Mosquitto {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("sync-e2e-mosquitto-")
            .tempdir()
            .expect("temp dir");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n\
                 max_inflight_messages 100\n{extra}\n"
            ),
        )
        .expect("write mosquitto.conf");
        let log = std::fs::File::create(dir.path().join("mosquitto.log")).expect("log");
        let child = Command::new(
            std::env::var("MOSQUITTO_BIN").unwrap_or_else(|_| "/usr/sbin/mosquitto".into()),
        )
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .expect("mosquitto at /usr/sbin/mosquitto (apt-get install mosquitto)");
        let m = Mosquitto { child, port, dir };
        wait_port(port, "mosquitto");
        m
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("==== mosquitto log ====\n{}==== end ====", self.log());
        }
    }
}

// ------------------------------------------------------------------------------------------
// The link: a TCP proxy that can be taken down, brought up, or turned into a black hole
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Link {
    Up,
    /// Listener closed (connections refused), live connections shut down both ways.
    Down,
    /// Live and new connections stay open but every byte is swallowed, in both directions,
    /// and no close is passed on: a silent failure only keep-alive can detect.
    Blackhole,
}

struct Pipe {
    client: TcpStream,
    server: TcpStream,
    dead: Arc<AtomicBool>,
}

struct ProxyState {
    link: Mutex<Link>,
    listening: AtomicBool,
    pipes: Mutex<Vec<Pipe>>,
    stop: AtomicBool,
}

pub struct Proxy {
    pub port: u16,
    st: Arc<ProxyState>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(target: u16, link: Link) -> Proxy {
        let port = free_port();
        let st = Arc::new(ProxyState {
            link: Mutex::new(link),
            listening: AtomicBool::new(false),
            pipes: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = st.clone();
        let thread = std::thread::spawn(move || accept_loop(port, target, s));
        let p = Proxy {
            port,
            st,
            thread: Some(thread),
        };
        p.settle(link);
        p
    }

    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, link: Link) {
        *self.st.link.lock().unwrap() = link;
        let mut pipes = self.st.pipes.lock().unwrap();
        match link {
            Link::Up => {}
            Link::Down => {
                for p in pipes.drain(..) {
                    p.dead.store(true, Ordering::SeqCst);
                    let _ = p.client.shutdown(Shutdown::Both);
                    let _ = p.server.shutdown(Shutdown::Both);
                }
            }
            Link::Blackhole => {
                for p in pipes.iter() {
                    p.dead.store(true, Ordering::SeqCst);
                }
            }
        }
        drop(pipes);
        self.settle(link);
    }

    /// Waits until the listener matches the link state.
    fn settle(&self, link: Link) {
        let want = link != Link::Down;
        let t = Instant::now();
        while self.st.listening.load(Ordering::SeqCst) != want {
            assert!(t.elapsed() < WAIT, "proxy listener did not follow {link:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.st.stop.store(true, Ordering::SeqCst);
        self.set(Link::Down);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(port: u16, target: u16, st: Arc<ProxyState>) {
    let mut listener: Option<TcpListener> = None;
    while !st.stop.load(Ordering::SeqCst) {
        let link = *st.link.lock().unwrap();
        if link == Link::Down {
            listener = None;
            st.listening.store(false, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        if listener.is_none() {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => {
                    l.set_nonblocking(true).expect("nonblocking");
                    listener = Some(l);
                    st.listening.store(true, Ordering::SeqCst);
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            }
        }
        let Some(l) = &listener else { continue };
        match l.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let dead = Arc::new(AtomicBool::new(*st.link.lock().unwrap() != Link::Up));
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    let dead = dead.clone();
                    std::thread::spawn(move || copy(from, to, dead));
                }
                st.pipes.lock().unwrap().push(Pipe {
                    client,
                    server,
                    dead,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    st.listening.store(false, Ordering::SeqCst);
}

/// Copies one direction; once `dead`, swallows everything and never passes a close on.
fn copy(mut from: TcpStream, mut to: TcpStream, dead: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                if !dead.load(Ordering::SeqCst) {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => n,
        };
        if dead.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
