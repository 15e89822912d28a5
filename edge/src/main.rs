//! The `robustmq-edge` command: runs the broker, prints the default config, reads sync status.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use robustmq_edge::config::{Config, ListenerConfig, DEFAULT_TOML};

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
}

fn load(cli: &Cli) -> Result<Config, robustmq_edge::error::Error> {
    let mut cfg = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::from_toml(DEFAULT_TOML, "embedded defaults")?,
    };
    if !cli.listen.is_empty() {
        cfg.listeners = cli
            .listen
            .iter()
            .map(|a| ListenerConfig { bind: *a })
            .collect();
    }
    if let Some(d) = &cli.data_dir {
        cfg.data_dir = d.clone();
    }
    Ok(cfg)
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
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
        Some(Command::Run) | None => {}
    }
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg.log.level);
    match robustmq_edge::server::run(cfg, None) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
