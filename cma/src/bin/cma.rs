//! `cma --config node.toml`: runs one CMA node (Raft queue + admin API).

use anyhow::Context;
use clap::Parser;
use cma::admin::{self, AdminState};
use cma::config::Config;
use cma::door::NodeDoor;
use std::path::PathBuf;
use std::time::Duration;

/// Ringwatch central manager node.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Path of the TOML configuration.
    #[arg(long, short)]
    config: PathBuf,
}

/// Fewest runtime worker threads. Storage calls (log writes, sled) are synchronous, so a long one holds
/// a worker; with one worker per core on a small machine that would stall heartbeats.
const MIN_WORKER_THREADS: usize = 4;

/// The sections of `cma --man` after OPTIONS.
const MAN: daemon::man::Sections<'static> = &[
    ("Files", &[
        "/etc/ringwatch/cma.toml: the configuration (node id, Raft and admin listen addresses, data directory, [raft], [queue], [limits], [worker] with its timings, switches and sinks).",
        "/etc/ringwatch/cluster.secret, /etc/ringwatch/keys.toml, /etc/ringwatch/admin.token: the secrets (mode 0640 root:ringwatch; looser modes are refused); /usr/share/doc/ringwatch-cma/KEYS.md says how to make them.",
        "/var/lib/ringwatch (data_dir): the Raft log (entries), its vote and metadata (log) and the last snapshot (snapshot).",
    ]),
    ("Signals", &[
        "SIGTERM, SIGINT: stop: Raft is shut down and the process exits; the other nodes elect a leader if it led. The unit is Type=notify with a watchdog: the node reports ready once it serves, and systemd restarts it when it stops answering.",
    ]),
    ("Exit status", &[
        "0 after a graceful stop; 1 on a configuration, secret or storage error (the last log line names it, a full disk included).",
    ]),
    daemon::man::ENVIRONMENT,
    ("See also", &["cmactl(1), nanoprobe(1), packet-reader(1); /usr/share/doc/ringwatch-cma/install.md."]),
];

fn main() -> anyhow::Result<()> {
    if daemon::man::requested() {
        use clap::CommandFactory;
        let _ = daemon::man::print(Args::command(), MAN);
        return Ok(());
    }
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
    // Size every connection limit from the descriptor limit, so storage keeps its reserve
    // whatever clients do (docs/security.md).
    let (nofile, nofile_hard) =
        replica::limits::raise_nofile_limit().context("reading RLIMIT_NOFILE")?;
    let budget = config
        .limits
        .budget(nofile)
        .map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!(
        nofile,
        nofile_hard,
        reserve = budget.reserve,
        queue_connections = budget.queue_connections,
        unauthenticated = budget.unauthenticated,
        unauthenticated_per_ip = budget.unauthenticated_per_ip,
        admin_connections = budget.admin_connections,
        "descriptor budget"
    );
    let settings = config.node_settings(budget)?;
    let node = replica::start(settings)
        .await
        .context("starting the raft node")?;
    tracing::info!(id = node.id(), listen = %node.local_addr(), "raft node serving");

    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("binding admin API on {}", config.admin_listen))?;
    let mut registry = prometheus_client::registry::Registry::default();
    let door = NodeDoor::open(node.clone());
    let mut probe = None;
    if let Some(section) = config.worker.clone() {
        let metrics = worker::run::WorkerMetrics::default();
        metrics.register(&mut registry);
        let worker = worker::run::Worker::start(door.clone(), section, metrics)
            .await
            .context("starting the worker")?;
        probe = Some(worker.probe_context());
        tokio::spawn(worker.run());
    }
    let l = &config.limits;
    let admin_limits = admin::AdminLimits {
        max_connections: budget.admin_connections,
        max_concurrent_requests: l.admin_max_concurrent_requests,
        header_read_timeout: Duration::from_millis(l.admin_header_read_timeout_ms),
        request_timeout: Duration::from_millis(l.admin_request_timeout_ms),
        max_body_bytes: l.admin_max_body_bytes,
    };
    let live = admin::console_live(&node, &mut registry, budget.admin_connections);
    let state = AdminState::new(node.clone(), registry, token, admin_limits);
    let app = admin::router_with(
        state.clone(),
        worker::routes::router(door, probe).merge(console::live(live)),
    );
    let admin_task = tokio::spawn(admin::serve(admin_listener, state, app));
    tracing::info!(admin = %config.admin_listen, "admin API serving");

    daemon::systemd::notify_ready_with_watchdog_task();
    let result = tokio::select! {
        r = admin_task => match r {
            Ok(()) => Err(anyhow::anyhow!("admin API stopped")),
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
