//! `packet-reader`: verified UDP ingest into the Ringwatch queue.

use anyhow::Context;
use clap::Parser;
use packet_reader::config::Config;
use packet_reader::Reader;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Receives nanoprobe reports, commits them to the CMA queue, ACKs them after commit.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short, default_value = "/etc/ringwatch/packet-reader.toml")]
    config: PathBuf,
    /// Overrides `host_id`.
    #[arg(long)]
    host_id: Option<u64>,
    /// Overrides `listen` (repeat for several addresses).
    #[arg(long = "listen")]
    listen: Vec<SocketAddr>,
    /// Overrides `sockets`.
    #[arg(long)]
    sockets: Option<usize>,
    /// Overrides `key_file`.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Overrides `cma_nodes` (repeat for several).
    #[arg(long = "cma-node")]
    cma_nodes: Vec<SocketAddr>,
    /// Overrides `cluster_secret_file`.
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// Overrides `metrics_listen`.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Overrides `batch.max_packets`.
    #[arg(long)]
    batch_max_packets: Option<usize>,
    /// Overrides `batch.max_bytes`.
    #[arg(long)]
    batch_max_bytes: Option<usize>,
    /// Overrides `batch.max_delay_us`.
    #[arg(long)]
    batch_max_delay_us: Option<u64>,
    /// Overrides `batch.max_in_flight`.
    #[arg(long)]
    batch_max_in_flight: Option<usize>,
    /// Overrides `batch.pending_limit`.
    #[arg(long)]
    pending_limit: Option<usize>,
}

impl Args {
    /// Applies the flags given over the file's values.
    fn apply(self, config: &mut Config) {
        let set = |slot: &mut usize, v: Option<usize>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        if let Some(v) = self.host_id {
            config.host_id = v;
        }
        if !self.listen.is_empty() {
            config.listen = self.listen;
        }
        set(&mut config.sockets, self.sockets);
        if let Some(v) = self.key_file {
            config.key_file = v;
        }
        if !self.cma_nodes.is_empty() {
            config.cma_nodes = self.cma_nodes;
        }
        if let Some(v) = self.cluster_secret_file {
            config.cluster_secret_file = v;
        }
        if self.metrics_listen.is_some() {
            config.metrics_listen = self.metrics_listen;
        }
        set(&mut config.batch.max_packets, self.batch_max_packets);
        set(&mut config.batch.max_bytes, self.batch_max_bytes);
        if let Some(v) = self.batch_max_delay_us {
            config.batch.max_delay_us = v;
        }
        set(&mut config.batch.max_in_flight, self.batch_max_in_flight);
        set(&mut config.batch.pending_limit, self.pending_limit);
    }
}

/// The sections of `packet-reader --man` after OPTIONS.
const MAN: daemon::man::Sections<'static> = &[
    ("Files", &[
        "/etc/ringwatch/packet-reader.toml: the configuration (host id, UDP listen addresses and sockets, the CMA nodes, [batch]); the options above override it.",
        "/etc/ringwatch/keys.toml, /etc/ringwatch/cluster.secret: the nanoprobes' key ring and the queue's secret (mode 0640 root:ringwatch; looser modes are refused); /usr/share/doc/ringwatch-packet-reader/KEYS.md says how to make them.",
    ]),
    ("Signals", &[
        "SIGTERM, SIGINT: stop receiving, finish the batches in flight (their reports are acknowledged once committed), then exit. The unit is Type=notify with a watchdog.",
    ]),
    ("Exit status", &["0 after a graceful stop; 1 on a configuration, secret or socket error."]),
    daemon::man::ENVIRONMENT,
    ("See also", &["cma(1), nanoprobe(1), cmactl(1); /usr/share/doc/ringwatch-packet-reader/install.md."]),
];

fn main() -> anyhow::Result<()> {
    if daemon::man::requested() {
        use clap::CommandFactory;
        let _ = daemon::man::print(Args::command(), MAN);
        return Ok(());
    }
    daemon::logging::init("info");
    let args = Args::parse();
    let mut config = Config::load(&args.config)?;
    args.apply(&mut config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let mut stop = daemon::signals::StopSignals::install().context("signal handlers")?;
    let reader = Reader::start(&config).await?;
    daemon::systemd::notify_ready_with_watchdog_task();
    let signal = stop.recv().await;
    tracing::info!(signal, "stopping: finishing in-flight batches");
    daemon::systemd::notify_stopping();
    reader.shutdown().await;
    Ok(())
}
