//! `queue-drain`: a consumer of a running Raft queue for the benchmarks. It reads the
//! committed packets in order (`QueueClient::read`, batches of `--batch`) and commits its
//! offset (`QueueClient::commit_offset`, at most every `--commit-ms`), as the worker does,
//! so the queue is trimmed and its byte budget does not fill while a benchmark runs.
//!
//! SIGTERM or SIGINT stops it after one last offset commit; it then prints
//! `consumed=N reads=N commits=N offset=N`. SIGUSR1 pauses it (no read, no commit: the
//! queue fills) and SIGUSR2 resumes it, so a script can keep the queue full on purpose.

use anyhow::Context;
use clap::Parser;
use queue::{ClientConfig, QueueClient};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

/// Reads a running queue in order and commits the offset (the benchmarks' consumer).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Node addresses (Raft/client port).
    #[arg(long = "node", required = true)]
    nodes: Vec<SocketAddr>,
    /// The cluster secret file.
    #[arg(long)]
    secret_file: PathBuf,
    /// Consumer name (its offset is kept in the replicated state).
    #[arg(long, default_value = "bench-drain")]
    consumer: String,
    /// Most packets per read.
    #[arg(long, default_value_t = 8192)]
    batch: usize,
    /// Least time between two offset commits, in ms.
    #[arg(long, default_value_t = 100)]
    commit_ms: u64,
    /// Start paused (as after SIGUSR1).
    #[arg(long)]
    paused: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret = queue::load_cluster_secret(&args.secret_file)
        .with_context(|| format!("reading {}", args.secret_file.display()))?;
    let client = QueueClient::new(ClientConfig::new(args.nodes.clone(), secret))?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut pause = signal(SignalKind::user_defined1())?;
    let mut resume = signal(SignalKind::user_defined2())?;
    let (mut next, mut committed) = (0u64, 0u64);
    let (mut consumed, mut reads, mut commits) = (0u64, 0u64, 0u64);
    let mut paused = args.paused;
    let mut last_commit = Instant::now();
    let commit_every = Duration::from_millis(args.commit_ms);
    loop {
        let mut idle = paused;
        if !paused {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = pause.recv() => { paused = true; continue; }
                _ = resume.recv() => continue,
                r = client.read(next, args.batch) => match r {
                    Ok(packets) => {
                        reads += 1;
                        if let Some((last, _)) = packets.last() {
                            consumed += packets.len() as u64;
                            next = last + 1;
                        } else {
                            idle = true;
                        }
                    }
                    Err(e) => {
                        eprintln!("queue-drain: read failed: {e}");
                        idle = true;
                    }
                },
            }
            if next > committed && last_commit.elapsed() >= commit_every {
                match client.commit_offset(&args.consumer, next).await {
                    Ok(()) => {
                        committed = next;
                        commits += 1;
                    }
                    Err(e) => eprintln!("queue-drain: offset commit failed: {e}"),
                }
                last_commit = Instant::now();
            }
        }
        if idle {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = pause.recv() => paused = true,
                _ = resume.recv() => paused = false,
                _ = tokio::time::sleep(Duration::from_millis(50)), if !paused => {}
            }
        }
    }
    if next > committed && !paused && client.commit_offset(&args.consumer, next).await.is_ok() {
        commits += 1;
    }
    println!("consumed={consumed} reads={reads} commits={commits} offset={next}");
    Ok(())
}
