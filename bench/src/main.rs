//! `edge-bench`: an MQTT benchmark tool usable against any broker by host and port (throughput,
//! latency, idle connections, start-up time, offline backlog). Human-readable output by default,
//! one JSON object per run with `--json` (used by scripts/bench.sh).

mod backlog;
mod conn;
mod executor;
mod idle;
mod procmem;
mod report;
mod run;
mod soak;
mod startup;
mod tracker;
mod transport;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mqtt_proto::QoS;
use serde_json::{json, Value};

use conn::Version;

#[derive(Parser)]
#[command(
    name = "edge-bench",
    version,
    about = "MQTT broker benchmark: throughput, latency, memory, start-up"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// Broker host (use 127.0.0.1 for local brokers).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// MQTT protocol level: 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 4)]
    protocol: u8,
    /// Worker threads of the client.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Broker process id: its RSS is read from /proc/PID/status.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// A read or write with no progress for this many seconds fails.
    #[arg(long, default_value_t = 10)]
    io_timeout_secs: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Free-form label copied into the JSON output.
    #[arg(long)]
    label: Option<String>,
    /// MQTT over WebSocket (ws://, or wss:// with `--tls-ca`) at this HTTP path (e.g. `/mqtt`)
    /// instead of plain TCP.
    #[arg(long)]
    websocket: Option<String>,
    /// MQTT over TLS (or wss:// with `--websocket`): the broker's certificate must chain to a
    /// CA certificate in this PEM file and be for `--host` (a name or an IP address).
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
}

impl Common {
    /// `host:port`, or `ws://host:port/path` (`wss://` with TLS) with `--websocket`.
    fn addr(&self) -> String {
        let scheme = match transport::tls_enabled() {
            true => "wss",
            false => "ws",
        };
        match &self.websocket {
            Some(path) => format!("{scheme}://{}:{}{path}", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

#[derive(Args, Clone)]
struct Traffic {
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload bytes (at least 24: publisher id, sequence and timestamp live in the payload).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// QoS 1/2 messages in flight per publisher.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 300)]
    deadline_secs: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Messages/s delivered end to end at a fixed message count, checked for loss and duplicates.
    Throughput {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        traffic: Traffic,
        /// Messages published in total (split over the publishers).
        #[arg(long, default_value_t = 100_000)]
        messages: u64,
        /// Optional total publish rate in msgs/s.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Publish-to-delivery latency (p50/p99/max) at a fixed publish rate.
    Latency {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        traffic: Traffic,
        /// Total publish rate in msgs/s.
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration_secs: f64,
    },
    /// Opens N idle connections and reports the broker's RSS growth per connection.
    Connections {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Connections being opened at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds to wait after the last CONNACK before reading RSS.
        #[arg(long, default_value_t = 2.0)]
        settle_secs: f64,
        /// Extra seconds to hold the connections (RSS is read again at the end).
        #[arg(long, default_value_t = 0.0)]
        hold_secs: f64,
        /// Keep Alive of each connection, in seconds (0: none). Clients usually ask for one
        /// (60 s in mosquitto_sub and paho): a broker may pay a timer per connection for it.
        /// The clients send no PINGREQ, so hold the connections for less than 1.5 times it.
        #[arg(long, default_value_t = 0)]
        keep_alive: u16,
    },
    /// Starts a broker command and measures the time until a CONNECT succeeds.
    Startup {
        #[command(flatten)]
        common: Common,
        /// Shell command that starts the broker in the foreground.
        #[arg(long)]
        cmd: String,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// Leave the broker running (its pid is printed) instead of stopping it.
        #[arg(long)]
        keep: bool,
        /// File receiving the broker's stdout and stderr.
        #[arg(long)]
        log: Option<String>,
    },
    /// Fills a persistent session's offline queue with N messages.
    BacklogFill {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        backlog: BacklogArgs,
    },
    /// Reconnects the persistent session and drains (and checks) its queue.
    BacklogDrain {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        backlog: BacklogArgs,
        /// Remove the session afterwards (reconnect with clean session).
        #[arg(long)]
        cleanup: bool,
    },
    /// Steady traffic and client churn for a long time, the broker's RSS sampled (soak.rs).
    Soak {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 600)]
        duration_secs: u64,
        /// Seconds between RSS samples.
        #[arg(long, default_value_t = 10)]
        sample_secs: u64,
        /// Messages a second of the steady publisher.
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        /// Client lives a second (connect, do one thing, leave), at most 100.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100))]
        churn: u32,
    },
    /// Prints a process's VmRSS and VmHWM.
    Mem {
        #[arg(long)]
        pid: u32,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        label: Option<String>,
    },
    /// Prints markdown comparison tables from the JSON lines written by scripts/bench.sh.
    Report {
        /// results.jsonl
        file: String,
    },
}

#[derive(Args, Clone)]
struct BacklogArgs {
    #[arg(long, default_value = "edge-bench-backlog")]
    client_id: String,
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    qos: u8,
    #[arg(long, default_value_t = 64)]
    payload: usize,
    #[arg(long, default_value_t = 64)]
    window: usize,
    #[arg(long, default_value_t = 1800)]
    deadline_secs: u64,
}

fn qos_of(q: u8) -> QoS {
    match q {
        1 => QoS::Level1,
        2 => QoS::Level2,
        _ => QoS::Level0,
    }
}

fn client_prefix() -> String {
    format!(
        "eb{}x{:06x}",
        std::process::id(),
        fastrand::u32(..0xff_ffff)
    )
}

static HUMAN_TO_STDERR: AtomicBool = AtomicBool::new(false);

/// Human-readable line: stdout normally, stderr when stdout carries JSON.
macro_rules! say {
    ($($t:tt)*) => {
        if HUMAN_TO_STDERR.load(Ordering::Relaxed) { eprintln!($($t)*) } else { println!($($t)*) }
    };
}

fn opt<T: Into<Value>>(v: Option<T>) -> Value {
    v.map_or(Value::Null, Into::into)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("edge-bench: {e}");
            ExitCode::from(1)
        }
    }
}

fn real_main(cli: Cli) -> Result<ExitCode, String> {
    let common = match &cli.cmd {
        Cmd::Throughput { common, .. }
        | Cmd::Latency { common, .. }
        | Cmd::Connections { common, .. }
        | Cmd::Startup { common, .. }
        | Cmd::BacklogFill { common, .. }
        | Cmd::BacklogDrain { common, .. }
        | Cmd::Soak { common, .. } => Some(common),
        Cmd::Mem { .. } | Cmd::Report { .. } => None,
    };
    if let Some(ca) = common.and_then(|c| c.tls_ca.as_deref()) {
        transport::use_tls(ca)?;
    }
    let json = match &cli.cmd {
        Cmd::Mem { json, .. } => *json,
        _ => common.is_some_and(|c| c.json),
    };
    HUMAN_TO_STDERR.store(json, Ordering::Relaxed);
    match cli.cmd {
        Cmd::Throughput {
            common,
            traffic,
            messages,
            rate,
        } => pubsub(&common, &traffic, messages, rate, "throughput"),
        Cmd::Latency {
            common,
            traffic,
            rate,
            duration_secs,
        } => {
            let messages = (rate * duration_secs).round().max(1.0) as u64;
            pubsub(&common, &traffic, messages, Some(rate), "latency")
        }
        Cmd::Connections {
            common,
            count,
            concurrency,
            settle_secs,
            hold_secs,
            keep_alive,
        } => {
            let limit = idle::raise_nofile();
            if (limit as usize) < count + 64 {
                eprintln!("edge-bench: warning: open-file limit {limit} is below {count} connections (ulimit -n)");
            }
            let o = idle::IdleOpts {
                addr: common.addr(),
                version: Version::from_level(common.protocol)?,
                count,
                concurrency,
                hold: Duration::from_secs_f64(hold_secs.max(0.0)),
                settle: Duration::from_secs_f64(settle_secs.max(0.0)),
                io_timeout: Duration::from_secs(common.io_timeout_secs),
                broker_pid: common.broker_pid,
                client_prefix: client_prefix(),
                keep_alive,
            };
            let r = idle::run(o, common.threads);
            if common.json {
                println!(
                    "{}",
                    json!({
                        "test": "connections", "label": common.label, "addr": common.addr(),
                        "requested": r.requested, "connected": r.connected, "failed": r.failed,
                        "first_error": r.first_error, "connect_s": r.connect_s,
                        "rss_before_kb": r.rss_before_kb, "rss_after_kb": r.rss_after_kb,
                        "bytes_per_conn": r.bytes_per_conn.map(round1),
                    })
                );
            }
            {
                say!(
                    "connections {}: {} of {} open in {:.2} s",
                    common.addr(),
                    r.connected,
                    r.requested,
                    r.connect_s
                );
                if let Some(e) = &r.first_error {
                    say!("  {} failed, first error: {e}", r.failed);
                }
                if let (Some(b), Some(a)) = (r.rss_before_kb, r.rss_after_kb) {
                    say!(
                        "  broker RSS {b} kB -> {a} kB, {:.0} bytes per connection",
                        r.bytes_per_conn.unwrap_or(f64::NAN)
                    );
                }
            }
            Ok(if r.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Cmd::Startup {
            common,
            cmd,
            timeout_secs,
            keep,
            log,
        } => {
            let r = startup::run(
                &cmd,
                &common.addr(),
                Version::from_level(common.protocol)?,
                Duration::from_secs(timeout_secs),
                keep,
                log.as_deref(),
            )?;
            if common.json {
                println!(
                    "{}",
                    json!({"test": "startup", "label": common.label, "cmd": cmd, "ready_ms": r.ready_ms,
                           "pid": r.pid, "rss_kb": r.rss_kb, "kept": r.kept})
                );
            }
            {
                say!(
                    "startup: CONNECT accepted {:.1} ms after spawn (pid {}, RSS {} kB){}",
                    r.ready_ms,
                    r.pid,
                    r.rss_kb.map_or("?".into(), |k| k.to_string()),
                    if r.kept { ", left running" } else { "" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BacklogFill { common, backlog } => {
            let o = backlog_opts(&common, &backlog)?;
            let r = backlog::fill(o)?;
            if common.json {
                println!(
                    "{}",
                    json!({"test": "backlog_fill", "label": common.label, "published": r.published,
                           "publish_s": r.publish_s, "published_per_s": r.published_per_s,
                           "peak_rss_kb": r.peak_rss_kb, "rss_after_kb": r.rss_after_kb})
                );
            }
            {
                say!(
                    "backlog fill: {} messages queued in {:.2} s ({:.0} msg/s); broker peak RSS {:?} kB, now {:?} kB",
                    r.published, r.publish_s, r.published_per_s, r.peak_rss_kb, r.rss_after_kb
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BacklogDrain {
            common,
            backlog,
            cleanup,
        } => {
            let o = backlog_opts(&common, &backlog)?;
            let r = backlog::drain(o, cleanup)?;
            let c = r.counts;
            if common.json {
                println!(
                    "{}",
                    json!({"test": "backlog_drain", "label": common.label, "session_present": r.session_present,
                           "expected": c.expected, "received": c.unique, "missing": c.missing,
                           "duplicates": c.duplicates, "out_of_order": c.out_of_order, "foreign": c.foreign,
                           "valid": r.valid, "error": r.error, "drain_s": r.drain_s,
                           "delivered_per_s": r.delivered_per_s, "peak_rss_kb": r.peak_rss_kb,
                           "rss_before_kb": r.rss_before_kb})
                );
            }
            {
                say!(
                    "backlog drain: session present {}, {} of {} received (missing {}, duplicates {}, out of order {})",
                    r.session_present, c.unique, c.expected, c.missing, c.duplicates, c.out_of_order
                );
                match r.delivered_per_s {
                    Some(rate) => say!(
                        "  drained in {:.2} s, {rate:.0} msg/s",
                        r.drain_s.unwrap_or(0.0)
                    ),
                    None => say!("  INVALID: messages lost or errors, no rate reported"),
                }
                if let Some(e) = &r.error {
                    say!("  error: {e}");
                }
                say!(
                    "  broker RSS before {:?} kB, peak while draining {:?} kB",
                    r.rss_before_kb,
                    r.peak_rss_kb
                );
            }
            Ok(if r.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Cmd::Report { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
            print!("{}", report::tables(&report::load(&text)));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Soak {
            common,
            duration_secs,
            sample_secs,
            rate,
            churn,
        } => {
            let broker_pid = common
                .broker_pid
                .ok_or("soak needs --broker-pid (its RSS is what is measured)")?;
            let r = soak::run(soak::SoakOpts {
                addr: common.addr(),
                broker_pid,
                duration: Duration::from_secs(duration_secs),
                sample: Duration::from_secs(sample_secs.max(1)),
                rate,
                churn,
                io_timeout: Duration::from_secs(common.io_timeout_secs),
            })?;
            let kb = |f: f64| r.at(f).map(|s| s.1);
            let slope = r.second_half_slope_kb_per_min().map(round1);
            if common.json {
                println!(
                    "{}",
                    json!({"test": "soak", "label": common.label, "duration_s": duration_secs,
                           "rate": rate, "churn": churn, "lives": r.lives, "failed_lives": r.failed_lives,
                           "published": r.published, "received": r.received,
                           "rss_kb_10pct": opt(kb(0.1)), "rss_kb_50pct": opt(kb(0.5)),
                           "rss_kb_end": opt(kb(1.0)), "rss_kb_max": opt(r.max_kb()),
                           "slope_kb_per_min_second_half": opt(slope),
                           "samples": r.samples.iter().map(|s| json!([round1(s.0), s.1])).collect::<Vec<_>>()})
                );
            }
            say!(
                "soak: {duration_secs} s, {rate} msg/s steady, {churn} client lives/s: {} lives ({} failed{}), {} published, {} received",
                r.lives,
                r.failed_lives,
                r.first_error.as_deref().map(|e| format!(", first: {e}")).unwrap_or_default(),
                r.published,
                r.received
            );
            say!(
                "  broker RSS kB at 10% {:?}, 50% {:?}, end {:?}, max {:?}; second-half slope {:?} kB/min",
                kb(0.1),
                kb(0.5),
                kb(1.0),
                r.max_kb(),
                slope
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Mem { pid, json, label } => {
            let m = procmem::read(pid).ok_or_else(|| format!("cannot read /proc/{pid}/status"))?;
            if json {
                println!(
                    "{}",
                    json!({"test": "mem", "label": label, "pid": pid, "rss_kb": m.rss_kb, "hwm_kb": m.hwm_kb})
                );
            } else {
                say!("pid {pid}: VmRSS {} kB, VmHWM {} kB", m.rss_kb, m.hwm_kb);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn backlog_opts(common: &Common, b: &BacklogArgs) -> Result<backlog::BacklogOpts, String> {
    Ok(backlog::BacklogOpts {
        addr: common.addr(),
        version: Version::from_level(common.protocol)?,
        client_id: b.client_id.clone(),
        qos: qos_of(b.qos),
        messages: b.messages,
        payload: b.payload,
        window: b.window,
        io_timeout: Duration::from_secs(common.io_timeout_secs),
        deadline: Duration::from_secs(b.deadline_secs),
        broker_pid: common.broker_pid,
    })
}

fn pubsub(
    common: &Common,
    t: &Traffic,
    messages: u64,
    rate: Option<f64>,
    test: &str,
) -> Result<ExitCode, String> {
    if t.publishers == 0 || t.subscribers == 0 || messages == 0 {
        return Err("publishers, subscribers and messages must be at least 1".into());
    }
    if (messages as usize) < t.publishers {
        return Err("need at least one message per publisher".into());
    }
    idle::raise_nofile();
    let o = run::RunOpts {
        addr: common.addr(),
        version: Version::from_level(common.protocol)?,
        qos: qos_of(t.qos),
        payload: t.payload.max(tracker::HEADER_LEN),
        publishers: t.publishers,
        subscribers: t.subscribers,
        messages,
        window: t.window.max(1),
        rate,
        io_timeout: Duration::from_secs(common.io_timeout_secs),
        deadline: Duration::from_secs(t.deadline_secs),
        broker_pid: common.broker_pid,
        client_prefix: client_prefix(),
    };
    let r = run::run(o, common.threads);
    let c = r.counts;
    let lat = r.latency_us;
    if common.json {
        println!(
            "{}",
            json!({
                "test": test, "label": common.label, "addr": common.addr(), "protocol": common.protocol,
                "qos": t.qos, "payload": r.opts.payload, "publishers": t.publishers, "subscribers": t.subscribers,
                "messages": messages, "window": t.window, "rate": rate,
                "expected": c.expected, "received": c.unique, "missing": c.missing, "duplicates": c.duplicates,
                "out_of_order": c.out_of_order, "foreign": c.foreign, "valid": r.valid, "errors": r.errors,
                "missing_sample": r.missing_sample, "granted_qos": r.granted_qos,
                "elapsed_s": r.elapsed_s, "publish_s": r.publish_s,
                "delivered_per_s": r.delivered_per_s.map(round1), "published_per_s": r.published_per_s.map(round1),
                "latency_us": lat.map(|l| json!({"p50": l.p50, "p90": l.p90, "p99": l.p99, "p999": l.p999,
                                                  "max": l.max, "count": l.count})),
                "peak_rss_kb": opt(r.peak_rss_kb), "rss_after_kb": opt(r.rss_after_kb),
            })
        );
    }
    {
        say!(
            "{test} {} MQTT {} QoS {}, {} B, {} pub -> {} sub, {} msgs{}",
            common.addr(),
            if common.protocol == 5 { "5" } else { "3.1.1" },
            t.qos,
            r.opts.payload,
            t.publishers,
            t.subscribers,
            messages,
            rate.map_or(String::new(), |r| format!(" at {r:.0} msg/s"))
        );
        say!(
            "  received {} of {} (missing {}, duplicates {}, out of order {}, foreign {})",
            c.unique,
            c.expected,
            c.missing,
            c.duplicates,
            c.out_of_order,
            c.foreign
        );
        match r.delivered_per_s {
            Some(d) => say!(
                "  delivered {d:.0} msg/s over {:.3} s (publishers done after {:.3} s, {:.0} msg/s)",
                r.elapsed_s.unwrap_or(0.0),
                r.publish_s.unwrap_or(0.0),
                r.published_per_s.unwrap_or(0.0)
            ),
            None => say!("  INVALID RUN: no rate reported (messages lost, duplicated at QoS 0/2, or errors)"),
        }
        if !r.missing_sample.is_empty() {
            say!("  first missing (publisher, seq): {:?}", r.missing_sample);
        }
        for e in &r.errors {
            say!("  error: {e}");
        }
        if let Some(l) = lat {
            say!(
                "  latency us: p50 {} p90 {} p99 {} p99.9 {} max {} ({} samples)",
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max,
                l.count
            );
        }
        if let Some(p) = r.peak_rss_kb {
            say!(
                "  broker peak RSS {p} kB, after {} kB",
                r.rss_after_kb.unwrap_or(0)
            );
        }
    }
    Ok(if r.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
