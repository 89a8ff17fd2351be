//! `cmactl`: operator CLI for the CMA admin API. Each subcommand group lives in its own
//! module; `main` only parses and dispatches.

mod api;
mod cluster;
mod monitor;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Ringwatch CMA control.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    /// Admin API base URL of a CMA node; repeat for several (the first that answers is
    /// used, and leader redirects are followed).
    #[arg(
        long = "api",
        env = "CMACTL_API",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7480",
        global = true
    )]
    pub api: Vec<String>,
    /// Bearer token for nodes that require one.
    #[arg(long, env = "CMACTL_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for each HTTP request.
    #[arg(long, default_value_t = 30, global = true)]
    pub timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cluster membership and health.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Cluster members, leader, queue depth and worker progress.
    Status,
    /// Monitored hosts and their state.
    Hosts,
    /// Heartbeat rings (each member watched by its neighbours).
    Rings,
    /// Verdicts: open failures and recent closed ones.
    Failures {
        /// Include every closed failure.
        #[arg(long)]
        all: bool,
    },
    /// Probe a host's nanoprobe now (authenticated UDP echo from the answering node).
    Probe {
        /// Host id.
        host: u64,
        /// Timeout in ms.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Events (verdicts and state changes).
    Events {
        /// Only events with a larger id.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Keep printing new events.
        #[arg(long)]
        follow: bool,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let api = match api::Api::new(&cli) {
        Ok(api) => api,
        Err(e) => {
            eprintln!("cmactl: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = match &cli.command {
        Command::Cluster(c) => cluster::run(&api, c, cli.json).await,
        Command::Status => monitor::status(&api, cli.json).await,
        Command::Hosts => monitor::hosts(&api, cli.json).await,
        Command::Rings => monitor::rings(&api, cli.json).await,
        Command::Failures { all } => monitor::failures(&api, *all, cli.json).await,
        Command::Probe { host, timeout_ms } => {
            monitor::probe(&api, *host, *timeout_ms, cli.json).await
        }
        Command::Events { since, follow } => monitor::events(&api, *since, *follow, cli.json).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cmactl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
