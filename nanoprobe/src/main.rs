//! The `nanoprobe` binary: parses flags, loads the config, runs the daemon.

use clap::{Parser, Subcommand};
use nanoprobe::config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Ringwatch nanoprobe: ring heartbeats, reliable reports, commands, active probes.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// TOML config file; flags override its values.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// This host's id.
    #[arg(long)]
    host_id: Option<u64>,
    /// Address to bind (heartbeats, commands, acks).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Packet-reader address (repeat for several).
    #[arg(long = "packet-reader")]
    packet_readers: Vec<SocketAddr>,
    /// Key file.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Default heartbeat interval in ms.
    #[arg(long)]
    interval_ms: Option<u32>,
    /// Default warntime in ms.
    #[arg(long)]
    warntime_ms: Option<u32>,
    /// Default deadtime in ms.
    #[arg(long)]
    deadtime_ms: Option<u32>,
    /// Last-chance confirmation of a silent peer in ms (`[detection] confirm_ms`; 0 = off).
    #[arg(long)]
    confirm_ms: Option<u32>,
    /// Time between confirmation echo requests in ms (`[detection] confirm_interval_ms`).
    #[arg(long)]
    confirm_interval_ms: Option<u32>,
    /// Prometheus listener address (off by default).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write a new key file with one random key (mode 0600, never overwrites).
    Keygen {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
        /// The key id.
        #[arg(long, default_value_t = 1)]
        key_id: u16,
    },
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if cli.host_id.is_some() {
        config.host_id = cli.host_id;
    }
    if let Some(b) = cli.bind {
        config.bind = b;
    }
    if !cli.packet_readers.is_empty() {
        config.packet_readers = cli.packet_readers.clone();
    }
    if cli.key_file.is_some() {
        config.key_file = cli.key_file.clone();
    }
    if let Some(v) = cli.interval_ms {
        config.timings.interval_ms = v;
    }
    if let Some(v) = cli.warntime_ms {
        config.timings.warntime_ms = v;
    }
    if let Some(v) = cli.deadtime_ms {
        config.timings.deadtime_ms = v;
    }
    if let Some(v) = cli.confirm_ms {
        config.detection.confirm_ms = v;
    }
    if let Some(v) = cli.confirm_interval_ms {
        config.detection.confirm_interval_ms = v;
    }
    if cli.metrics_listen.is_some() {
        config.metrics_listen = cli.metrics_listen;
    }
    config.validate()?;
    Ok(config)
}

/// The sections of `nanoprobe --man` after OPTIONS.
const MAN: daemon::man::Sections<'static> = &[
    ("Commands", &[
        "nanoprobe keygen --out FILE [--key-id N]: writes a new key file with one random key (id N, default 1), mode 0600, and refuses to overwrite an existing file.",
    ]),
    ("Files", &[
        "/etc/ringwatch/nanoprobe.toml: the configuration (host id, bind address, packet-readers, key file, timings, [detection], [reports], LLDP); the options above override it.",
        "/etc/ringwatch/keys.toml: the key ring shared with the packet-readers and the CMA (mode 0640 root:ringwatch; looser modes are refused). nanoprobe keygen --out /etc/ringwatch/keys.toml writes a new one; /usr/share/doc/ringwatch-nanoprobe/KEYS.md says the rest.",
    ]),
    ("Signals", &[
        "SIGTERM, SIGINT: tell the ring neighbours and the CMA that this host leaves (a left verdict, no alarm), then exit. The unit is Type=notify with a watchdog.",
    ]),
    ("Exit status", &["0 after a graceful stop; 2 on a configuration error; 1 on any other error."]),
    daemon::man::ENVIRONMENT,
    ("See also", &["cma(1), packet-reader(1), cmactl(1); /usr/share/doc/ringwatch-nanoprobe/install.md."]),
];

fn main() -> ExitCode {
    if daemon::man::requested() {
        use clap::CommandFactory;
        return daemon::man::print(Cli::command(), MAN);
    }
    daemon::logging::init("info");
    let cli = Cli::parse();
    if let Some(Cmd::Keygen { out, key_id }) = &cli.command {
        return match proto::KeyRing::write_new_key_file(out, proto::KeyId(*key_id)) {
            Ok(_) => {
                println!("wrote key {key_id} to {}", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("nanoprobe keygen: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nanoprobe: {e}");
            return ExitCode::from(2);
        }
    };
    // A single-threaded runtime keeps RSS and CPU small; probes use the blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nanoprobe: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(nanoprobe::node::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nanoprobe: {e}");
            ExitCode::FAILURE
        }
    }
}
