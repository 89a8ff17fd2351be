//! `queue-bench`: throughput and commit latency of the Raft queue.
//!
//! With `--spawn N` it starts N local `cma` nodes (the binary next to this one) on
//! 127.0.77.x with fresh data directories, forms the cluster, runs, and stops them.
//! Otherwise it uses the running cluster given by `--node` and `--secret-file`.
//!
//! Phases: `throughput` (closed loop: `--concurrency` appenders sending batches of
//! `--batch` packets back to back), `latency` (open loop at `--rate` packets/s in
//! batches of `--latency-batch`, each append timed from send to commit), and, with
//! `--spawn`, `failover` (`--kills` times: SIGKILL the leader under open-loop load and keep
//! it dead; time to a new leader and to the first ACK of an append sent after the kill;
//! then restart it), `churn` (for `--duration` seconds, SIGKILL whoever leads every
//! `--kill-every` seconds and restart it `--down` seconds later, under the same open-loop
//! load; prints the longest stretch without any ACK and the ACK latency), and `fill` (no
//! consumer: append `--fill` packets as fast as they commit, then run the latency phase
//! while the nodes snapshot and purge the big queue).
//! With `--spawn` every phase also prints the Raft log syncs (fdatasync) per second of
//! each node and the Raft term before and after, so a run of `--phase latency --duration
//! 600` shows whether any election happened, and each node's snapshots built (with their
//! build seconds), log purges, last snapshot size, peak RSS and data directory size.

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
    Failover,
    Fill,
    Churn,
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
    /// Seconds of the latency phase, when it should differ from `--duration` (e.g. 5
    /// minutes at saturation, then 60 s at `--rate`).
    #[arg(long)]
    latency_duration: Option<u64>,
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
    /// Packets appended by the fill phase before its latency phase.
    #[arg(long, default_value_t = 1_000_000)]
    fill: u64,
    /// Leader kills in the failover phase.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Churn phase: seconds between two leader kills (`--duration` is the whole run).
    #[arg(long, default_value_t = 5.0)]
    kill_every: f64,
    /// Churn phase: seconds a killed leader stays down before it is restarted.
    #[arg(long, default_value_t = 3.5)]
    down: f64,
    /// Extra `[raft]` / `[queue]` lines for the spawned nodes' configuration, e.g.
    /// "[queue]\nmax_bytes = 1000000" (the TOML is appended verbatim).
    #[arg(long, default_value = "")]
    node_config: String,
}

struct Cluster {
    /// Node i+1's process (None while killed).
    children: Vec<Option<Child>>,
    confs: Vec<PathBuf>,
    exe: PathBuf,
    _dir: tempfile_dir::Dir,
}

impl Cluster {
    fn start(&mut self, index: usize) -> anyhow::Result<()> {
        // QUEUE_BENCH_LOGS=DIR keeps each node's log (RUST_LOG applies) in DIR/nI.log.
        let stderr = match std::env::var_os("QUEUE_BENCH_LOGS") {
            Some(dir) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(PathBuf::from(dir).join(format!("n{}.log", index + 1)))
                    .context("opening the node log")?,
            ),
            None => Stdio::null(),
        };
        let child = Command::new(&self.exe)
            .arg("--config")
            .arg(&self.confs[index])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting cma")?;
        self.children[index] = Some(child);
        Ok(())
    }

    /// SIGKILLs node `index` (one of our own children) and reaps it.
    fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.children[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn admin(index: usize) -> String {
        format!("http://127.0.77.{}:7480", index + 1)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// One node's figures from its `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
struct Scrape {
    term: f64,
    is_leader: bool,
    syncs: f64,
}

async fn scrape(http: &reqwest::Client, admin: &str) -> Option<Scrape> {
    let text = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    Some(Scrape {
        term: value("cma_raft_term")?,
        is_leader: value("cma_raft_is_leader")? == 1.0,
        syncs: value("cma_raft_log_syncs_total").unwrap_or(0.0),
    })
}

async fn scrape_all(http: &reqwest::Client, n: usize) -> Vec<Option<Scrape>> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(scrape(http, &Cluster::admin(i)).await);
    }
    out
}

/// Prints syncs/s per node and the term change between two scrapes `secs` apart.
fn report_scrapes(phase: &str, before: &[Option<Scrape>], after: &[Option<Scrape>], secs: f64) {
    let mut syncs = Vec::new();
    let mut terms = Vec::new();
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        if let (Some(b), Some(a)) = (b, a) {
            syncs.push(format!("node{} {:.0}/s", i + 1, (a.syncs - b.syncs) / secs));
            terms.push(format!("node{} {}->{}", i + 1, b.term, a.term));
        }
    }
    println!("{phase}: raft log syncs (fdatasync) {}", syncs.join(", "));
    println!("{phase}: raft terms {}", terms.join(", "));
}

/// Per-node figures gathered while a phase runs (spawned nodes only).
#[derive(Clone, Debug, Default)]
struct NodeWatch {
    /// Seconds of each snapshot build seen (a poll that saw two builds records their mean
    /// twice).
    builds: Vec<f64>,
    /// Seconds of each log purge seen (likewise).
    purges: Vec<f64>,
    /// Last snapshot size (bytes), as last scraped.
    snapshot_bytes: Option<f64>,
    /// Highest and last VmRSS (bytes).
    rss_max: u64,
    rss_last: u64,
    /// Highest and last data directory size (bytes).
    dir_max: u64,
    dir_last: u64,
    /// Last (count, sum) of the build and purge histograms.
    build_seen: Option<(f64, f64)>,
    purge_seen: Option<(f64, f64)>,
}

/// The count and sum of histogram `name` in a metrics text.
fn histogram(text: &str, name: &str) -> Option<(f64, f64)> {
    let value = |suffix: &str| -> Option<f64> {
        let full = format!("{name}{suffix}");
        text.lines().find_map(|l| {
            l.strip_prefix(full.as_str())?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    };
    Some((value("_count")?, value("_sum")?))
}

/// New observations of a histogram since `seen`, each the mean of the new ones.
fn new_samples(seen: &mut Option<(f64, f64)>, now: Option<(f64, f64)>, out: &mut Vec<f64>) {
    let Some((count, sum)) = now else { return };
    if let Some((c0, s0)) = *seen {
        let n = (count - c0).round();
        if n >= 1.0 {
            for _ in 0..n as usize {
                out.push((sum - s0) / n);
            }
        }
    }
    *seen = Some((count, sum));
}

fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn dir_size(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Polls every spawned node (metrics, RSS, data dir) until `stop` is set.
fn spawn_watch(
    pids: Vec<Option<u32>>,
    dirs: Vec<PathBuf>,
    http: reqwest::Client,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<NodeWatch>> {
    tokio::spawn(async move {
        let mut watch = vec![NodeWatch::default(); pids.len()];
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut round = 0u64;
        let mut last_dir_walk = Instant::now();
        loop {
            tick.tick().await;
            let last = stop.load(Ordering::Relaxed);
            // The data dirs are walked once a second, the rest polled every 250 ms.
            let dir_due = round == 0 || last_dir_walk.elapsed() >= Duration::from_secs(1);
            if dir_due {
                last_dir_walk = Instant::now();
            }
            for (i, w) in watch.iter_mut().enumerate() {
                let text = async {
                    http.get(format!("{}/metrics", Cluster::admin(i)))
                        .send()
                        .await
                        .ok()?
                        .text()
                        .await
                        .ok()
                }
                .await;
                if let Some(text) = text {
                    let builds = histogram(&text, "cma_raft_snapshot_build_seconds");
                    new_samples(&mut w.build_seen, builds, &mut w.builds);
                    let purges = histogram(&text, "cma_raft_log_purge_seconds");
                    new_samples(&mut w.purge_seen, purges, &mut w.purges);
                    if let Some(b) = text.lines().find_map(|l| {
                        l.strip_prefix("cma_raft_snapshot_bytes ")?
                            .trim()
                            .parse()
                            .ok()
                    }) {
                        w.snapshot_bytes = Some(b);
                    }
                }
                if let Some(rss) = pids[i].and_then(vm_rss) {
                    w.rss_max = w.rss_max.max(rss);
                    w.rss_last = rss;
                }
                if dir_due || last {
                    let size = dir_size(&dirs[i]);
                    w.dir_max = w.dir_max.max(size);
                    w.dir_last = size;
                }
            }
            round += 1;
            if last {
                return watch;
            }
        }
    })
}

/// Prints what [`spawn_watch`] gathered.
fn report_watch(phase: &str, watch: &[NodeWatch]) {
    let mb = |b: f64| b / 1_048_576.0;
    let stats = |v: &[f64]| -> String {
        if v.is_empty() {
            return "none".into();
        }
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        format!(
            "{} (p50 {:.2} s, max {:.2} s)",
            s.len(),
            percentile(&s, 0.5),
            percentile(&s, 1.0)
        )
    };
    for (i, w) in watch.iter().enumerate() {
        let metrics = if w.build_seen.is_some() {
            format!(
                "snapshots built {}, log purges {}, last snapshot {}",
                stats(&w.builds),
                stats(&w.purges),
                w.snapshot_bytes
                    .map_or("-".into(), |b| format!("{:.1} MiB", mb(b))),
            )
        } else {
            "no snapshot metrics (node predates them)".into()
        };
        println!(
            "{phase}: node{} {metrics}; RSS max {:.0} MiB, end {:.0} MiB; data dir max {:.0} MiB, \
             end {:.0} MiB",
            i + 1,
            mb(w.rss_max as f64),
            mb(w.rss_last as f64),
            mb(w.dir_max as f64),
            mb(w.dir_last as f64),
        );
    }
}

/// Appends `--fill` packets (batches of `--batch`, `--concurrency` appenders) as fast as
/// they commit; nothing is consumed.
async fn fill(client: &QueueClient, args: &Args) -> anyhow::Result<()> {
    const FILL_DEADLINE: Duration = Duration::from_secs(600);
    let remaining = Arc::new(AtomicU64::new(args.fill));
    let stored = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..args.concurrency {
        let (client, remaining, stored, retries) = (
            client.clone(),
            remaining.clone(),
            stored.clone(),
            retries.clone(),
        );
        let (batch, size) = (args.batch as u64, args.packet_size);
        let session = args_session_base(args) + 3000 + task as u64;
        tasks.push(tokio::spawn(async move {
            let mut next = 0u64;
            loop {
                let take = remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                        Some(r.saturating_sub(batch))
                    })
                    .unwrap_or(0)
                    .min(batch);
                if take == 0 {
                    break;
                }
                let packets: Vec<_> = (next..next + take)
                    .map(|s| packet(session, s, size))
                    .collect();
                next += take;
                // Retried on any error but a full queue, until a deadline: a retry of a
                // batch that did commit is deduplicated (same session and ids).
                loop {
                    match client.append(packets.clone()).await {
                        Ok(r) => {
                            stored.fetch_add(r.stored as u64, Ordering::Relaxed);
                            break;
                        }
                        Err(e @ queue::ClientError::QueueFull { .. }) => {
                            return Err(anyhow::Error::new(e)
                                .context("fill: raise [queue] max_bytes with --node-config"));
                        }
                        Err(e) if started.elapsed() < FILL_DEADLINE => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            eprintln!("fill: append retried: {e}");
                        }
                        Err(e) => return Err(anyhow::Error::new(e).context("fill deadline")),
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = stored.load(Ordering::Relaxed);
    println!(
        "fill: {n} packets of {} B stored in {secs:.1} s = {:.0} packets/s (batch {}, \
         concurrency {}, no consumer, {} appends retried)",
        args.packet_size,
        n as f64 / secs,
        args.batch,
        args.concurrency,
        retries.load(Ordering::Relaxed)
    );
    Ok(())
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

async fn spawn_cluster(
    n: u8,
    extra_config: &str,
) -> anyhow::Result<(Cluster, Vec<SocketAddr>, [u8; 32])> {
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
    let mut nodes = Vec::new();
    let mut confs = Vec::new();
    for i in 1..=n {
        let conf = dir.path().join(format!("n{i}.toml"));
        std::fs::write(
            &conf,
            format!(
                "node_id = {i}\nlisten = \"127.0.77.{i}:7400\"\nadmin_listen = \"127.0.77.{i}:7480\"\n\
                 data_dir = \"{}\"\ncluster_secret_file = \"{}\"\n{}\n",
                dir.path().join(format!("d{i}")).display(),
                key.display(),
                extra_config.replace("\\n", "\n"),
            ),
        )?;
        confs.push(conf);
        nodes.push(SocketAddr::from(([127, 0, 77, i], 7400)));
    }
    let mut cluster = Cluster {
        children: (0..n).map(|_| None).collect(),
        confs,
        exe: exe_dir.join("cma"),
        _dir: dir,
    };
    for i in 0..n as usize {
        cluster.start(i)?;
    }
    let api = "http://127.0.77.1:7480";
    let started = Instant::now();
    while cmactl(&exe_dir, api, &["cluster", "status"]).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            bail!("node 1 did not come up");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every node a voter at once: one `cmactl cluster init --member ...`, as the scripts
    // and the tests form their clusters.
    let members: Vec<String> = (1..=n)
        .map(|i| format!("{i}=127.0.77.{i}:7400,127.0.77.{i}:7480"))
        .collect();
    let mut init = vec!["cluster", "init", "--wait", "30"];
    for member in &members {
        init.extend(["--member", member.as_str()]);
    }
    cmactl(&exe_dir, api, &init)?;
    Ok((cluster, nodes, secret))
}

fn packet(session: u64, seq: u64, size: usize) -> QueuedPacket {
    QueuedPacket {
        sender: 1,
        session,
        seq,
        received_at_us: 0,
        source: SocketAddr::from(([127, 0, 0, 1], 9)),
        report: vec![0xA5; size],
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
    let retried = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        String,
        u64,
    >::new()));
    for task in 0..args.concurrency {
        let high_water = high_water.clone();
        let client = client.clone();
        let committed = committed.clone();
        let retried = retried.clone();
        let (batch, size) = (args.batch, args.packet_size);
        // One session per appender: each session's ids then arrive in order, as they do
        // from a real nanoprobe, and the dedup window never mistakes them for old ones.
        let session = args_session_base(args) + task as u64;
        tasks.push(tokio::spawn(async move {
            let mut next = 0u64;
            while Instant::now() < deadline {
                let first = next;
                next += batch as u64;
                let packets: Vec<_> = (first..next).map(|s| packet(session, s, size)).collect();
                // A failed append is retried as a producer would (a retry of one that did
                // commit is deduplicated), and counted by error.
                loop {
                    match client.append(packets.clone()).await {
                        Ok(r) => {
                            committed.fetch_add(r.stored as u64, Ordering::Relaxed);
                            high_water.fetch_max(r.last_offset + 1, Ordering::Relaxed);
                            break;
                        }
                        Err(e) => {
                            *retried
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .entry(e.to_string())
                                .or_default() += 1;
                            if Instant::now() >= deadline {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = committed.load(Ordering::Relaxed);
    for (error, count) in retried.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("throughput: {count} appends failed and were retried: {error}");
    }
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
    let seconds = args.latency_duration.unwrap_or(args.duration);
    let total = (appends_per_sec * seconds as f64) as usize;
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The index of the node that reports itself leader, waiting up to `within`.
async fn wait_leader(
    http: &reqwest::Client,
    alive: &[usize],
    within: Duration,
) -> Option<(usize, Instant)> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        for &i in alive {
            if scrape(http, &Cluster::admin(i))
                .await
                .is_some_and(|s| s.is_leader)
            {
                return Some((i, Instant::now()));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// An append of `--latency-batch` packets every 10 ms, each on its own task; records
/// (sent, ACKed) of every append that succeeded and counts the others.
struct OpenLoop {
    acks: Arc<std::sync::Mutex<Vec<(Instant, Instant)>>>,
    failed: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl OpenLoop {
    fn start(
        client: &QueueClient,
        args: &Args,
        session_offset: u64,
        high_water: Arc<AtomicU64>,
    ) -> OpenLoop {
        let acks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (client, acks2, failed2, stop2) =
            (client.clone(), acks.clone(), failed.clone(), stop.clone());
        let (batch, size) = (args.latency_batch.max(1) as u64, args.packet_size);
        let session = args_session_base(args) + session_offset;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut seq = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                tick.tick().await;
                let packets = (seq..seq + batch)
                    .map(|s| packet(session, s, size))
                    .collect();
                seq += batch;
                let (client, acks, failed, high_water) = (
                    client.clone(),
                    acks2.clone(),
                    failed2.clone(),
                    high_water.clone(),
                );
                tokio::spawn(async move {
                    let sent = Instant::now();
                    match client.append(packets).await {
                        Ok(r) => {
                            high_water.fetch_max(r.last_offset + 1, Ordering::Relaxed);
                            acks.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((sent, Instant::now()));
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        OpenLoop {
            acks,
            failed,
            stop,
            task,
        }
    }

    /// Stops sending (appends in flight still complete and are recorded).
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

/// For `--duration` seconds, SIGKILLs whichever node leads every `--kill-every` seconds
/// and restarts it `--down` seconds later, under open-loop load (see [`OpenLoop`]).
/// Prints the longest stretch without any ACK, every stretch over a second, and the ACK
/// latency of the appends sent.
async fn churn(
    cluster: &mut Cluster,
    client: &QueueClient,
    args: &Args,
    http: &reqwest::Client,
    high_water: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let n = cluster.children.len();
    let all: Vec<usize> = (0..n).collect();
    let every = Duration::from_secs_f64(args.kill_every.max(0.5));
    let down = Duration::from_secs_f64(args.down.max(0.0)).min(every);
    let load = OpenLoop::start(client, args, 3000, high_water);
    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration);
    let mut kills = 0;
    let mut next = started + every;
    while next + down <= end {
        tokio::time::sleep_until(next.into()).await;
        match wait_leader(http, &all, every / 2).await {
            Some((leader, _)) => {
                cluster.kill(leader);
                kills += 1;
                println!(
                    "churn: t={:.1} s node {} (leader) killed",
                    started.elapsed().as_secs_f64(),
                    leader + 1
                );
                tokio::time::sleep(down).await;
                cluster.start(leader)?;
            }
            None => println!(
                "churn: t={:.1} s no leader to kill",
                started.elapsed().as_secs_f64()
            ),
        }
        next += every;
    }
    tokio::time::sleep_until(end.into()).await;
    let failed = load.failed.clone();
    let acks = load.acks.clone();
    load.stop().await;
    // Appends still in flight get a moment to finish (they count towards latency only).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let acks = acks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut done: Vec<Instant> = acks.iter().map(|&(_, d)| d).filter(|&d| d <= end).collect();
    done.sort();
    let mut gaps = Vec::new();
    let mut prev = started;
    for &d in done.iter().chain(std::iter::once(&end)) {
        gaps.push((prev, d.saturating_duration_since(prev)));
        prev = prev.max(d);
    }
    for &(from, gap) in gaps.iter().filter(|(_, g)| *g > Duration::from_secs(1)) {
        println!(
            "churn: no ACK for {:.0} ms from t={:.1} s",
            gap.as_secs_f64() * 1000.0,
            (from - started).as_secs_f64()
        );
    }
    let longest = gaps.iter().map(|&(_, g)| g).max().unwrap_or_default();
    let mut latency: Vec<f64> = acks
        .iter()
        .map(|&(s, d)| (d - s).as_secs_f64() * 1000.0)
        .collect();
    latency.sort_by(f64::total_cmp);
    println!(
        "churn: {kills} leader kills in {} s (one every {:.1} s, down {:.1} s): longest \
         stretch without an ACK {:.0} ms; {} appends ACKed (p50 {:.1} ms, p99 {:.0} ms, max \
         {:.0} ms), {} failed",
        args.duration,
        every.as_secs_f64(),
        down.as_secs_f64(),
        longest.as_secs_f64() * 1000.0,
        latency.len(),
        percentile(&latency, 0.5),
        percentile(&latency, 0.99),
        percentile(&latency, 1.0),
        failed.load(Ordering::Relaxed),
    );
    Ok(())
}

/// Kills the leader `--kills` times under open-loop load (an append of `--latency-batch`
/// packets every 10 ms) and measures the time to a new leader and to the first ACK of an
/// append sent after the kill. The killed node stays dead until both are measured, then
/// is restarted and given time to catch up.
async fn failover(
    cluster: &mut Cluster,
    client: &QueueClient,
    args: &Args,
    http: &reqwest::Client,
    high_water: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let n = cluster.children.len();
    let load = OpenLoop::start(client, args, 2000, high_water);
    let acks = load.acks.clone();
    let all: Vec<usize> = (0..n).collect();
    let (mut to_leader, mut to_ack) = (Vec::new(), Vec::new());
    for k in 1..=args.kills {
        let Some((leader, _)) = wait_leader(http, &all, Duration::from_secs(30)).await else {
            bail!("no leader before kill {k}");
        };
        let killed_at = Instant::now();
        cluster.kill(leader);
        let alive: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
        let new_leader = wait_leader(http, &alive, Duration::from_secs(20)).await;
        let resumed = {
            let until = Instant::now() + Duration::from_secs(20);
            loop {
                let first = acks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .filter(|(sent, _)| *sent > killed_at)
                    .map(|(_, done)| *done)
                    .min();
                if first.is_some() || Instant::now() > until {
                    break first;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let ms = |t: Option<Instant>| t.map(|t| (t - killed_at).as_secs_f64() * 1000.0);
        let (l, a) = (ms(new_leader.map(|(_, t)| t)), ms(resumed));
        println!(
            "kill {k}: node {} killed; new leader {} after {}; ACKs resumed after {}",
            leader + 1,
            new_leader.map_or("none".into(), |(i, _)| format!("node {}", i + 1)),
            l.map_or("-".into(), |v| format!("{v:.0} ms")),
            a.map_or("-".into(), |v| format!("{v:.0} ms")),
        );
        to_leader.push(l.unwrap_or(f64::INFINITY));
        to_ack.push(a.unwrap_or(f64::INFINITY));
        cluster.start(leader)?;
        // Back up, caught up and settled before the next kill.
        let until = Instant::now() + Duration::from_secs(20);
        while scrape(http, &Cluster::admin(leader)).await.is_none() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        acks.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    load.stop().await;
    to_leader.sort_by(f64::total_cmp);
    to_ack.sort_by(f64::total_cmp);
    println!(
        "failover over {} kills: new leader p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; \
         ACKs resumed p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        to_leader.len(),
        percentile(&to_leader, 0.5),
        percentile(&to_leader, 0.99),
        percentile(&to_leader, 1.0),
        percentile(&to_ack, 0.5),
        percentile(&to_ack, 0.99),
        percentile(&to_ack, 1.0),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mut cluster, nodes, secret) = match args.spawn {
        Some(n) if n > 0 => {
            let (c, nodes, secret) = spawn_cluster(n, &args.node_config).await?;
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
    // The fill phase measures a queue nobody consumes.
    let consume = !args.no_consumer && args.phase != Phase::Fill;
    let consumer = consume.then(|| spawn_consumer(&client, high_water.clone()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let spawned = cluster.as_ref().map_or(0, |c| c.children.len());
    let mut scrapes = scrape_all(&http, spawned).await;
    let mut since = Instant::now();
    let (pids, dirs): (Vec<Option<u32>>, Vec<PathBuf>) = match &cluster {
        Some(c) => (
            c.children
                .iter()
                .map(|ch| ch.as_ref().map(|ch| ch.id()))
                .collect(),
            (1..=c.children.len())
                .map(|i| c._dir.path().join(format!("d{i}")))
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    // Per phase: a watch of every spawned node (snapshots, purges, RSS, data dir).
    let watch = || {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = spawn_watch(pids.clone(), dirs.clone(), http.clone(), stop.clone());
        (stop, task)
    };
    let mut report = |phase: &str,
                      scrapes: &mut Vec<Option<Scrape>>,
                      after: Vec<Option<Scrape>>,
                      watched: Vec<NodeWatch>| {
        if spawned > 0 {
            report_scrapes(phase, scrapes, &after, since.elapsed().as_secs_f64());
            report_watch(phase, &watched);
        }
        *scrapes = after;
        since = Instant::now();
    };
    async fn finish(
        w: (
            Arc<std::sync::atomic::AtomicBool>,
            tokio::task::JoinHandle<Vec<NodeWatch>>,
        ),
    ) -> Vec<NodeWatch> {
        w.0.store(true, Ordering::Relaxed);
        w.1.await.unwrap_or_default()
    }
    if args.phase == Phase::Fill {
        let w = watch();
        fill(&client, &args).await?;
        let watched = finish(w).await;
        report(
            "fill",
            &mut scrapes,
            scrape_all(&http, spawned).await,
            watched,
        );
    }
    if matches!(args.phase, Phase::Throughput | Phase::Both) {
        let w = watch();
        throughput(&client, &args, high_water.clone()).await?;
        let watched = finish(w).await;
        report(
            "throughput",
            &mut scrapes,
            scrape_all(&http, spawned).await,
            watched,
        );
    }
    if matches!(args.phase, Phase::Latency | Phase::Both | Phase::Fill) {
        let w = watch();
        latency(&client, &args, session, high_water.clone()).await?;
        let watched = finish(w).await;
        report(
            "latency",
            &mut scrapes,
            scrape_all(&http, spawned).await,
            watched,
        );
    }
    if args.phase == Phase::Failover {
        let cluster = cluster.as_mut().context("--phase failover needs --spawn")?;
        failover(cluster, &client, &args, &http, high_water.clone()).await?;
    }
    if args.phase == Phase::Churn {
        let cluster = cluster.as_mut().context("--phase churn needs --spawn")?;
        churn(cluster, &client, &args, &http, high_water.clone()).await?;
    }
    if let Some(consumer) = consumer {
        consumer.abort();
    }
    Ok(())
}
