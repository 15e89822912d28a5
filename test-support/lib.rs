//! Test helpers that every crate's tests share (edge/tests, sync/tests and the end-to-end tests in
//! tests/): free loopback ports, waiting until a port accepts connections, and running a tool with
//! text on its stdin. Dev-only (never a normal dependency), std only, so any crate can use it.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Waits (up to 10 s) until something accepts TCP connections on 127.0.0.1:`port`; panics
/// naming `what` when nothing does.
pub fn wait_port(port: u16, what: &str) {
    wait_port_or(port, || what.to_string())
}

/// [`wait_port`], with the panic message made by `explain` when the port never opens (for
/// instance with the log of the server that should have listened there).
pub fn wait_port_or(port: u16, explain: impl FnOnce() -> String) {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t.elapsed() >= Duration::from_secs(10) {
            panic!("{}: port {port} never opened", explain());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to its end with `stdin` written to its standard input (closed afterwards) and its
/// stdout and stderr captured; panics naming the command when it cannot be started or fed.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    // A tool may exit before reading all of its input (a refused argument): that is its answer,
    // read from its output and status, not a failure to feed it.
    if let Err(e) = input.write_all(stdin) {
        assert!(
            e.kind() == std::io::ErrorKind::BrokenPipe,
            "cannot write the stdin of {cmd:?}: {e}"
        );
    }
    drop(input);
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for {cmd:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_port_returns_once_a_listener_accepts() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        wait_port(port, "test listener");
    }

    #[test]
    #[should_panic(expected = "closed port: port")]
    fn wait_port_panics_naming_what_never_opened() {
        // free_port's listener is dropped at once: nothing accepts there for the 10 s.
        wait_port(free_port(), "closed port");
    }

    #[test]
    fn run_with_stdin_feeds_the_tool_and_captures_its_output() {
        let out = run_with_stdin(&mut Command::new("cat"), b"fed through stdin\n");
        assert!(out.status.success());
        assert_eq!(out.stdout, b"fed through stdin\n");
    }

    #[test]
    fn run_with_stdin_keeps_the_answer_of_a_tool_that_ignores_its_input() {
        let out = run_with_stdin(
            Command::new("sh").args(["-c", "echo no >&2; exit 3"]),
            &[0; 1 << 20],
        );
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stderr, b"no\n");
    }
}
