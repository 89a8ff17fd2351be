//! `queue-bench`: throughput and commit latency of the Raft queue.
//!
//! With `--spawn N` it starts N local `cma` nodes (the binary next to this one) on
//! 127.0.77.x with fresh data directories, forms the cluster, runs, and stops them.
//! Otherwise it uses the running cluster given by `--node` and `--secret-file`.
//!
//! Two phases: `throughput` (closed loop: `--concurrency` appenders sending batches of
//! `--batch` packets back to back) and `latency` (open loop at `--rate` packets/s in
//! batches of `--latency-batch`, each append timed from send to commit).

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use queue::{ClientConfig, QueueClient, QueuedPacket};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    Throughput,
    Latency,
    Both,
}

/// Raft queue benchmark.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Start this many local nodes for the run (ignores --node/--secret-file).
    #[arg(long)]
    spawn: Option<u8>,
    /// Node addresses of a running cluster.
    #[arg(long)]
    node: Vec<SocketAddr>,
    /// Cluster secret file of a running cluster.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Which phase to run.
    #[arg(long, value_enum, default_value = "both")]
    phase: Phase,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Bytes per packet datagram.
    #[arg(long, default_value_t = 256)]
    packet_size: usize,
    /// Packets per append in the throughput phase.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent appenders in the throughput phase.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Packets per second in the latency phase.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Packets per append in the latency phase (a packet-reader's batch).
    #[arg(long, default_value_t = 10)]
    latency_batch: usize,
    /// Do not commit a consumer offset (the queue then grows without trimming).
    #[arg(long)]
    no_consumer: bool,
    /// Print every append slower than this many ms, with its send time (latency phase).
    #[arg(long)]
    show_slow_ms: Option<u64>,
}

struct Cluster {
    children: Vec<Child>,
    _dir: tempfile_dir::Dir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A scratch directory removed on drop (no extra dependency for one directory).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> std::io::Result<Dir> {
            let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path)?;
            Ok(Dir(path))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn cmactl(dir: &std::path::Path, api: &str, args: &[&str]) -> anyhow::Result<()> {
    let exe = dir.join("cmactl");
    let status = Command::new(&exe)
        .arg("--api")
        .arg(api)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {}", exe.display()))?;
    if !status.success() {
        bail!("cmactl {args:?} failed: {status}");
    }
    Ok(())
}

async fn spawn_cluster(n: u8) -> anyhow::Result<(Cluster, Vec<SocketAddr>, [u8; 32])> {
    let exe_dir = std::env::current_exe()?
        .parent()
        .map(|p| p.to_path_buf())
        .context("no binary directory")?;
    let dir = tempfile_dir::Dir::new("queue-bench")?;
    let secret: [u8; 32] = rand::random();
    let key = dir.path().join("cluster.key");
    std::fs::write(&key, hex::encode(secret))?;
    {
        // The nodes refuse a cluster secret other users could read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut children = Vec::new();
    let mut nodes = Vec::new();
    for i in 1..=n {
        let conf = dir.path().join(format!("n{i}.toml"));
        std::fs::write(
            &conf,
            format!(
                "node_id = {i}\nlisten = \"127.0.77.{i}:7400\"\nadmin_listen = \"127.0.77.{i}:7480\"\n\
                 data_dir = \"{}\"\ncluster_secret_file = \"{}\"\n",
                dir.path().join(format!("d{i}")).display(),
                key.display()
            ),
        )?;
        let child = Command::new(exe_dir.join("cma"))
            .arg("--config")
            .arg(&conf)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting cma")?;
        children.push(child);
        nodes.push(SocketAddr::from(([127, 0, 77, i], 7400)));
    }
    let cluster = Cluster {
        children,
        _dir: dir,
    };
    let api = "http://127.0.77.1:7480";
    let started = Instant::now();
    while cmactl(&exe_dir, api, &["cluster", "status"]).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            bail!("node 1 did not come up");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cmactl(&exe_dir, api, &["cluster", "init"])?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 2..=n {
        let raft = format!("127.0.77.{i}:7400");
        let admin = format!("127.0.77.{i}:7480");
        let id = i.to_string();
        let add = [
            "cluster",
            "add-learner",
            "--id",
            &id,
            "--raft",
            &raft,
            "--admin",
            &admin,
        ];
        let started = Instant::now();
        while let Err(e) = cmactl(&exe_dir, api, &add) {
            if started.elapsed() > Duration::from_secs(20) {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        cmactl(&exe_dir, api, &["cluster", "promote", "--id", &id])?;
    }
    Ok((cluster, nodes, secret))
}

fn packet(session: u64, seq: u64, size: usize) -> QueuedPacket {
    QueuedPacket {
        sender: 1,
        session,
        seq,
        received_at_us: 0,
        source: SocketAddr::from(([127, 0, 0, 1], 9)),
        datagram: vec![0xA5; size],
    }
}

/// A fresh random session range per run, so reruns against the same cluster are not
/// deduplicated away.
fn args_session_base(_args: &Args) -> u64 {
    rand::random::<u32>() as u64 * 1024
}

/// Plays the worker's part: commits the consumer offset every 100 ms so the queue is
/// trimmed, as in production. Without it the queue grows without bound and snapshots of
/// the whole backlog dominate the run.
fn spawn_consumer(client: &QueueClient, high_water: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let offset = high_water.load(Ordering::Relaxed);
            if let Err(e) = client.commit_offset("queue-bench", offset).await {
                eprintln!("offset commit failed: {e}");
            }
        }
    })
}

async fn throughput(
    client: &QueueClient,
    args: &Args,
    high_water: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let committed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..args.concurrency {
        let high_water = high_water.clone();
        let client = client.clone();
        let committed = committed.clone();
        let (batch, size) = (args.batch, args.packet_size);
        // One session per appender: each session's ids then arrive in order, as they do
        // from a real nanoprobe, and the dedup window never mistakes them for old ones.
        let session = args_session_base(args) + task as u64;
        tasks.push(tokio::spawn(async move {
            let mut next = 0u64;
            while Instant::now() < deadline {
                let first = next;
                next += batch as u64;
                let packets = (first..next).map(|s| packet(session, s, size)).collect();
                let r = client.append(packets).await?;
                committed.fetch_add(r.stored as u64, Ordering::Relaxed);
                high_water.fetch_max(r.last_offset + 1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = committed.load(Ordering::Relaxed);
    println!(
        "throughput: {n} packets of {} B committed in {secs:.1} s = {:.0} packets/s \
         (batch {}, concurrency {})",
        args.packet_size,
        n as f64 / secs,
        args.batch,
        args.concurrency
    );
    Ok(())
}

async fn latency(
    client: &QueueClient,
    args: &Args,
    session: u64,
    high_water: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let seq = AtomicU64::new(0);
    let batch = args.latency_batch.max(1);
    let appends_per_sec = (args.rate as f64 / batch as f64).max(1.0);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / appends_per_sec));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = (appends_per_sec * args.duration as f64) as usize;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    for _ in 0..total {
        tick.tick().await;
        let client = client.clone();
        let tx = tx.clone();
        let high_water = high_water.clone();
        let first = seq.fetch_add(batch as u64, Ordering::Relaxed);
        let packets: Vec<_> = (first..first + batch as u64)
            .map(|s| packet(session, s, args.packet_size))
            .collect();
        let slow = args.show_slow_ms.map(Duration::from_millis);
        tokio::spawn(async move {
            let sent = Instant::now();
            let result = client.append(packets).await;
            let elapsed = sent.elapsed();
            if slow.is_some_and(|slow| elapsed > slow) {
                eprintln!(
                    "slow append sent at {:.3} s: {:.1} ms",
                    (sent - started).as_secs_f64(),
                    elapsed.as_secs_f64() * 1000.0
                );
            }
            if let Ok(r) = &result {
                high_water.fetch_max(r.last_offset + 1, Ordering::Relaxed);
            }
            let _ = tx.send((result.map(|_| ()).map_err(|e| e.to_string()), elapsed));
        });
    }
    drop(tx);
    let mut samples = Vec::with_capacity(total);
    let mut failures = 0;
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    while let Some((result, elapsed)) = rx.recv().await {
        match result {
            Ok(()) => samples.push(elapsed),
            Err(e) => {
                failures += 1;
                *reasons.entry(e).or_default() += 1;
            }
        }
    }
    for (reason, count) in &reasons {
        eprintln!("{count} appends failed: {reason}");
    }
    let secs = started.elapsed().as_secs_f64();
    samples.sort_unstable();
    let pct = |p: f64| -> f64 {
        if samples.is_empty() {
            return f64::NAN;
        }
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    println!(
        "latency: {} appends of {batch} packets ({:.0} packets/s offered over {secs:.1} s), \
         {failures} failed: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        args.rate,
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (_cluster, nodes, secret) = match args.spawn {
        Some(n) if n > 0 => {
            let (c, nodes, secret) = spawn_cluster(n).await?;
            (Some(c), nodes, secret)
        }
        _ => {
            let file = args
                .secret_file
                .as_ref()
                .context("--secret-file is required without --spawn")?;
            (None, args.node.clone(), queue::load_cluster_secret(file)?)
        }
    };
    let client = QueueClient::new(ClientConfig::new(nodes, secret))?;
    // Warm up: wait until the cluster accepts appends.
    let session = args_session_base(&args) + 1000;
    let started = Instant::now();
    loop {
        match client
            .append(vec![packet(session - 1, 0, args.packet_size)])
            .await
        {
            Ok(_) => break,
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                eprintln!("waiting for the cluster: {e}");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let high_water = Arc::new(AtomicU64::new(0));
    let consumer = (!args.no_consumer).then(|| spawn_consumer(&client, high_water.clone()));
    if matches!(args.phase, Phase::Throughput | Phase::Both) {
        throughput(&client, &args, high_water.clone()).await?;
    }
    if matches!(args.phase, Phase::Latency | Phase::Both) {
        latency(&client, &args, session, high_water.clone()).await?;
    }
    if let Some(consumer) = consumer {
        consumer.abort();
    }
    Ok(())
}
