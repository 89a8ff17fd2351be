//! `fleetsim`: runs thousands of simulated nanoprobes against real packet-readers and a
//! real CMA cluster (docs/fleetsim.md).

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use fleetsim::control::{self, Scenario};
use fleetsim::edge::Edge;
use fleetsim::engine::{Output, Sim, SimConfig};
use fleetsim::world::{Shape, World};
use nanoprobe::config::ReportsConfig;
use nanoprobe::heartbeat::Detection;
use proto::{HbTimings, KeyRing};
use rand::SeedableRng;
use serde_json::json;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often formation is checked and the scenario advanced.
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Most queued inputs handled before timers are looked at again.
const DRAIN: usize = 4096;

#[derive(Parser)]
#[command(
    name = "fleetsim",
    version,
    about = "Simulated nanoprobes at scale, real wire protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the fleet (fault commands on stdin, events as JSON lines on stdout).
    Run(RunArgs),
    /// Print the `[[worker.switches]]` / `[[worker.routers]]` TOML for the CMA config.
    Topology(ShapeArgs),
}

#[derive(Args, Clone)]
struct ShapeArgs {
    /// Number of simulated hosts.
    #[arg(long)]
    hosts: u32,
    /// Hosts behind each switch (one /24 each).
    #[arg(long, default_value_t = 40)]
    hosts_per_switch: u32,
    /// Switches behind each router.
    #[arg(long, default_value_t = 16)]
    switches_per_router: u32,
    /// Host id of the first host.
    #[arg(long, default_value_t = 1)]
    first_id: u64,
    /// UDP port of every simulated nanoprobe (each on its own loopback address).
    #[arg(long, default_value_t = 7070)]
    port: u16,
}

impl ShapeArgs {
    fn shape(&self) -> Shape {
        Shape {
            hosts: self.hosts,
            hosts_per_switch: self.hosts_per_switch,
            switches_per_router: self.switches_per_router,
            first_id: self.first_id,
            port: self.port,
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    shape: ShapeArgs,
    /// Packet-reader address (repeatable).
    #[arg(long = "reader", required = true)]
    readers: Vec<SocketAddr>,
    /// The nanoprobes' key file.
    #[arg(long)]
    key_file: PathBuf,
    /// Last-chance confirmation before HbDead, ms (the nanoprobe default).
    #[arg(long, default_value_t = 500)]
    confirm_ms: u64,
    /// A built-in scenario, run after formation and `--settle-s`.
    #[arg(long, value_enum)]
    scenario: Option<Scenario>,
    /// Idle time between formation and the scenario's fault, s.
    #[arg(long, default_value_t = 10)]
    settle_s: u64,
    /// Exit this long after the scenario's fault (or formation), s; 0: run until `quit`.
    #[arg(long, default_value_t = 0)]
    duration_s: u64,
    /// Print the counters this often, s (0: never).
    #[arg(long, default_value_t = 10)]
    stats_every_s: u64,
    /// Seed of the random choices (kill-random).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Receive and send buffer of the shared socket, bytes.
    #[arg(long, default_value_t = 16 << 20)]
    socket_buffer: usize,
}

enum Input {
    Datagram(fleetsim::edge::Received),
    Line(String),
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn emit(value: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Topology(shape) => {
            let world = World::new(shape.shape())?;
            print!("{}", world.cma_topology_toml());
            Ok(())
        }
        Cmd::Run(args) => run(args),
    }
}

struct Runner {
    sim: Sim,
    edge: Arc<Edge>,
    out: Vec<Output>,
    send_errors: u64,
    rng: rand::rngs::StdRng,
    /// Set by a start or restart: formation is awaited since then.
    awaiting_formation: Option<Instant>,
    quit: bool,
}

impl Runner {
    fn flush(&mut self) {
        for o in self.out.drain(..) {
            if self.edge.send(o.from, o.to, &o.datagram).is_err() {
                self.send_errors += 1;
            }
        }
    }

    fn command(&mut self, line: &str, now: Instant) {
        let parsed = match control::parse(line) {
            Ok(c) => c,
            Err(e) => {
                emit(json!({"event": "error", "line": line, "error": e.to_string()}));
                return;
            }
        };
        match parsed {
            control::Control::Quit => {
                self.quit = true;
                return;
            }
            control::Control::Status => {
                self.stats(now);
                return;
            }
            _ => {}
        }
        let at_us = wall_us();
        match control::execute(&mut self.sim, &parsed, now, &mut self.rng, &mut self.out) {
            Ok(done) => {
                // Anything that brings hosts or paths back: wait for the rings again.
                let restores = matches!(
                    parsed,
                    control::Control::Revive
                        | control::Control::Restart(_)
                        | control::Control::RestartAll
                        | control::Control::SwitchUp(_)
                        | control::Control::RouterUp(_)
                );
                if restores {
                    self.awaiting_formation = Some(now);
                }
                emit(json!({
                    "event": "fault",
                    "command": line.trim(),
                    "at_us": at_us,
                    "down": done.down,
                    "started": done.started.len(),
                }));
            }
            Err(e) => emit(json!({"event": "error", "line": line, "error": e.to_string()})),
        }
        self.flush();
    }

    fn stats(&self, _now: Instant) {
        let mut v = serde_json::to_value(self.sim.stats()).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert("event".into(), json!("stats"));
            m.insert("at_us".into(), json!(wall_us()));
            m.insert("send_errors".into(), json!(self.send_errors));
            m.insert("formed".into(), json!(self.sim.formed()));
        }
        emit(v);
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let world = World::new(args.shape.shape())?;
    let keys = Arc::new(
        KeyRing::load(&args.key_file)
            .with_context(|| format!("key file {}", args.key_file.display()))?,
    );
    let edge = Arc::new(
        Edge::bind(args.shape.port, args.socket_buffer).context("binding the shared socket")?,
    );
    let config = SimConfig {
        readers: args.readers.clone(),
        timings: HbTimings::default(),
        detection: Detection {
            confirm: Duration::from_millis(args.confirm_ms),
            ..Detection::default()
        },
        reports: ReportsConfig::default(),
        version: format!("fleetsim-{}", env!("CARGO_PKG_VERSION")),
    };
    let (tx, rx) = mpsc::sync_channel::<Input>(65_536);
    {
        let edge = edge.clone();
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("recv".into())
            .spawn(move || {
                let mut buf = vec![0u8; proto::MAX_DATAGRAM + 1];
                loop {
                    if let Some(r) = edge.recv(&mut buf) {
                        if tx.send(Input::Datagram(r)).is_err() {
                            return;
                        }
                    }
                }
            })
            .context("receive thread")?;
    }
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { return };
                if tx.send(Input::Line(line)).is_err() {
                    return;
                }
            }
        })
        .context("stdin thread")?;

    let start = Instant::now();
    let mut r = Runner {
        sim: Sim::new(world.clone(), config, keys, (start, wall_us())),
        edge,
        out: Vec::new(),
        send_errors: 0,
        rng: rand::rngs::StdRng::seed_from_u64(args.seed),
        awaiting_formation: Some(start),
        quit: false,
    };
    emit(json!({
        "event": "started",
        "at_us": wall_us(),
        "hosts": world.len(),
        "switches": world.shape().switches(),
        "routers": world.shape().routers(),
        "port": args.shape.port,
    }));
    r.sim.start_all(start, &mut r.out);
    r.flush();

    let mut first_formed: Option<Instant> = None;
    let mut fault_done = args.scenario.and_then(|s| s.command(&world)).is_none();
    let mut end: Option<Instant> = None;
    let mut next_house = start;
    let mut next_stats = start + Duration::from_secs(args.stats_every_s.max(1));
    while !r.quit {
        let now = Instant::now();
        let wake = r
            .sim
            .next_deadline()
            .map_or(next_house, |d| d.min(next_house));
        let timeout = wake.saturating_duration_since(now);
        let first = match rx.recv_timeout(timeout) {
            Ok(i) => Some(i),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut pending = first;
        let mut handled = 0;
        while let Some(input) = pending.take() {
            let now = Instant::now();
            match input {
                Input::Datagram(d) => {
                    r.sim
                        .on_datagram(d.to, d.from, &d.datagram, now, &mut r.out);
                }
                Input::Line(line) => r.command(&line, now),
            }
            handled += 1;
            if handled < DRAIN {
                pending = rx.try_recv().ok();
            }
        }
        let now = Instant::now();
        r.sim.poll(now, &mut r.out);
        r.flush();
        if now < next_house {
            continue;
        }
        next_house = now + HOUSEKEEPING;
        if let Some(since) = r.awaiting_formation {
            if r.sim.formed() {
                r.awaiting_formation = None;
                emit(json!({
                    "event": "formed",
                    "at_us": wall_us(),
                    "seconds": now.duration_since(since).as_secs_f64(),
                    "hosts_up": r.sim.world().alive_hosts().count(),
                }));
                if first_formed.is_none() {
                    first_formed = Some(now);
                    if args.scenario == Some(Scenario::Formation) {
                        break;
                    }
                    if fault_done && args.duration_s > 0 {
                        end = Some(now + Duration::from_secs(args.settle_s + args.duration_s));
                    }
                }
            }
        }
        if let (false, Some(formed), Some(scenario)) = (fault_done, first_formed, args.scenario) {
            if now >= formed + Duration::from_secs(args.settle_s) {
                fault_done = true;
                if let Some(line) = scenario.command(&world) {
                    r.command(&line, now);
                }
                if args.duration_s > 0 {
                    end = Some(now + Duration::from_secs(args.duration_s));
                }
            }
        }
        if args.stats_every_s > 0 && now >= next_stats {
            next_stats = now + Duration::from_secs(args.stats_every_s);
            r.stats(now);
        }
        if end.is_some_and(|e| now >= e) {
            break;
        }
    }
    r.stats(Instant::now());
    Ok(())
}
