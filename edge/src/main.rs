//! The `robustmq-edge` command: runs the broker, prints the default config, reads sync status.
//!
//! The process owns what a library must not: logging set-up, malloc tuning and the SIGINT /
//! SIGTERM handling that becomes the shutdown future given to `server::run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use futures_lite::StreamExt;
use robustmq_edge::config::{Config, ListenerConfig, DEFAULT_TOML};
use robustmq_edge::memory::CountingAlloc;
use robustmq_edge::reload::SetLogLevel;

/// Counts the heap in use for `limits.max_memory` (see `memory.rs`).
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[derive(Parser)]
#[command(
    name = "robustmq-edge",
    version,
    about = "MQTT broker for edge gateways"
)]
struct Cli {
    /// TOML configuration file (defaults are embedded; see `print-config`).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Listen address, replacing the configured listeners (repeatable).
    #[arg(long, global = true)]
    listen: Vec<SocketAddr>,
    /// Data folder, replacing `data_dir`.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the broker (the default).
    Run,
    /// Prints the embedded default configuration.
    PrintConfig,
    /// Checks a configuration file and prints nothing but errors.
    CheckConfig,
    /// Adds, changes or deletes a user in a mosquitto-format password file.
    Passwd(robustmq_edge::auth::passwd_cli::PasswdArgs),
    /// Store-and-forward sync.
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Backlog, counters and link state of the broker using the data dir (running or stopped).
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What the configuration is read from: the file and the command line's overrides. Kept for
/// SIGHUP, which reads the file again with the same overrides.
#[derive(Clone)]
struct Source {
    config: Option<PathBuf>,
    listen: Vec<SocketAddr>,
    data_dir: Option<PathBuf>,
}

fn load(cli: &Cli) -> Result<Config, robustmq_edge::error::Error> {
    source(cli).load()
}

fn source(cli: &Cli) -> Source {
    Source {
        config: cli.config.clone(),
        listen: cli.listen.clone(),
        data_dir: cli.data_dir.clone(),
    }
}

impl Source {
    fn load(&self) -> Result<Config, robustmq_edge::error::Error> {
        let cli = self;
        let mut cfg = match &cli.config {
            Some(path) => Config::load(path)?,
            None => Config::from_toml(DEFAULT_TOML, "embedded defaults")?,
        };
        apply_overrides(cli, &mut cfg)?;
        Ok(cfg)
    }
}

fn apply_overrides(cli: &Source, cfg: &mut Config) -> Result<(), robustmq_edge::error::Error> {
    if !cli.listen.is_empty() {
        // The first configured listener's `allow_anonymous` carries over, so that moving a
        // locked-down listener with `--listen` does not open it.
        let allow_anonymous = cfg.listeners.first().and_then(|l| l.allow_anonymous);
        cfg.listeners = cli
            .listen
            .iter()
            .map(|a| ListenerConfig {
                bind: *a,
                allow_anonymous,
                ..ListenerConfig::default()
            })
            .collect();
    }
    if let Some(d) = &cli.data_dir {
        cfg.data_dir = d.clone();
    }
    // `--listen 0.0.0.0:1883` must meet the same rules as a listener in the file.
    cfg.validate("the command line")?;
    Ok(())
}

/// Sets up logging to stderr and returns what changes its filter on reload (`log.level`),
/// through tracing-subscriber's reload layer. `RUST_LOG`, when set, wins over `log.level`,
/// at start and on reload.
fn init_logging(level: &str) -> SetLogLevel {
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let env_set = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter_reloading();
    let handle = builder.reload_handle();
    builder.init();
    Box::new(move |level: &str| {
        if env_set {
            return Err("RUST_LOG is set and overrides log.level".into());
        }
        let filter = tracing_subscriber::EnvFilter::try_new(level)
            .map_err(|e| format!("invalid value for `log.level`: {e}"))?;
        handle
            .reload(filter)
            .map_err(|e| format!("log filter not replaced: {e}"))
    })
}

/// glibc gives every thread its own malloc arena; on a small gateway that is mostly
/// fragmentation (measured: +10-15 MiB RSS under a 50 MiB backlog with the default, +4-5 MiB with
/// one arena). glibc now holds only the blocks over 4 KiB (`memory.rs`: the small ones are
/// mimalloc's), which two arenas still serve without contending on one lock.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    ALLOC.activate();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::PrintConfig) => {
            print!("{DEFAULT_TOML}");
            return ExitCode::SUCCESS;
        }
        Some(Command::CheckConfig) => {
            return match load(&cli) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Some(Command::Sync {
            command: SyncCommand::Status { json },
        }) => {
            return match load(&cli) {
                Ok(cfg) => sync_status(&cfg, json),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Some(Command::Passwd(ref args)) => return robustmq_edge::auth::passwd_cli::main(args),
        Some(Command::Run) | None => {}
    }
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let set_log_level = init_logging(&cfg.log.level);
    let src = source(&cli);
    let reload = robustmq_edge::reload::ReloadSource {
        load: Box::new(move || src.load()),
        set_log_level,
    };
    // Installed before the database is opened: a signal during start-up stops the broker as
    // soon as it serves, instead of killing it half-started.
    let signals =
        match async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int]) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                eprintln!("error: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
    let shutdown = async move {
        let mut signals = signals;
        let sig = signals.next().await;
        tracing::info!(signal = ?sig, "signal received");
    };
    match robustmq_edge::server::run(cfg, reload, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sync_status(cfg: &Config, json: bool) -> ExitCode {
    let st = match edge_sync::read_status(&cfg.data_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        match serde_json::to_string_pretty(&st) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let opt = |o: Option<String>| o.unwrap_or_else(|| "-".into());
    println!("node_id            {}", st.node_id);
    println!("link_state         {:?}", st.link_state);
    println!("upstream           {}", opt(st.current_upstream.clone()));
    println!("protocol           {}", opt(st.protocol.clone()));
    println!("last_error         {}", opt(st.last_error.clone()));
    println!("backlog_messages   {}", st.backlog_messages);
    println!("backlog_bytes      {}", st.backlog_bytes);
    println!(
        "oldest_age_secs    {}",
        opt(st
            .oldest_age_ms
            .map(|a| format!("{:.1}", a as f64 / 1000.0)))
    );
    println!("sent               {}", st.sent);
    println!("redelivered        {}", st.redelivered);
    println!("acked              {}", st.acked);
    println!(
        "dropped            {}",
        serde_json::to_string(&st.dropped).unwrap_or_default()
    );
    println!("downlink_delivered {}", st.downlink_delivered);
    println!(
        "last_offset        {}",
        opt(st.last_offset.map(|o| o.to_string()))
    );
    println!("next_seq           {}", st.next_seq);
    for g in &st.schedules {
        println!("schedule           {}", g.line(st.updated_at_ms));
    }
    ExitCode::SUCCESS
}
