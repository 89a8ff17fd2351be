//! `cma --config node.toml`: runs one CMA node (Raft queue + admin API).

use anyhow::Context;
use clap::Parser;
use cma::admin::{self, AdminState};
use cma::config::Config;
use std::path::PathBuf;

/// Ringwatch central manager node.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Path of the TOML configuration.
    #[arg(long, short)]
    config: PathBuf,
}

/// Fewest runtime worker threads. sled's API is synchronous, so a long storage call holds
/// a worker; with one worker per core on a small machine that would stall heartbeats.
const MIN_WORKER_THREADS: usize = 4;

fn main() -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.max(MIN_WORKER_THREADS))
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    daemon::logging::init("info,openraft=warn,sled=warn");
    let args = Args::parse();
    let mut stop = daemon::signals::StopSignals::install().context("signal handlers")?;
    let config = Config::load(&args.config)?;
    let token = config.admin_token()?;
    let settings = config.node_settings()?;
    let node = cma::raft::start(settings)
        .await
        .context("starting the raft node")?;
    tracing::info!(id = node.id(), listen = %node.local_addr(), "raft node serving");

    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("binding admin API on {}", config.admin_listen))?;
    let mut registry = prometheus_client::registry::Registry::default();
    let mut probe = None;
    if let Some(section) = config.worker.clone() {
        let metrics = cma::worker::run::WorkerMetrics::default();
        metrics.register(&mut registry);
        let worker = cma::worker::run::Worker::start(node.clone(), section, metrics)
            .await
            .context("starting the worker")?;
        probe = Some(worker.probe_context());
        tokio::spawn(worker.run());
    }
    let state = AdminState::new(node.clone(), registry, token);
    let app = admin::router_with(state, cma::worker::api::router(node.clone(), probe));
    let admin_task = tokio::spawn(async move { axum::serve(admin_listener, app).await });
    tracing::info!(admin = %config.admin_listen, "admin API serving");

    daemon::systemd::notify_ready_with_watchdog_task();
    let result = tokio::select! {
        r = admin_task => match r {
            Ok(Ok(())) => Err(anyhow::anyhow!("admin API stopped")),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("admin API failed")),
            Err(e) => Err(anyhow::Error::new(e).context("admin API task")),
        },
        reason = node.fatal() => Err(anyhow::anyhow!("raft stopped: {reason}")),
        signal = stop.recv() => {
            tracing::info!(signal, "stopping");
            Ok(())
        }
    };
    daemon::systemd::notify_stopping();
    node.shutdown().await;
    result
}
