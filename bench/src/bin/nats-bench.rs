//! `nats-bench`: the NATS JetStream side of `bench/vs-nats.sh`, driven the way
//! `loadgen` drives Ringwatch so that the two columns measure the same thing.
//!
//! It publishes messages of `--size` bytes (the size of one of loadgen's sealed reports)
//! to a JetStream stream and awaits each publish ACK (`PubAck`: the message is stored, on
//! a quorum of the stream's replicas for R3). Two modes, as loadgen's:
//! - `--rate 0`: as fast as ACKs allow, with at most `--inflight` messages awaiting their
//!   ACK at any time (a new one is published as soon as one is ACKed);
//! - `--rate R`: paced at R messages/s (credit accrued on a 1 ms tick, as loadgen does),
//!   still at most `--inflight` awaiting their ACK.
//!
//! Each message's ACK latency runs from its publish call to its ACK. Throughput is the
//! ACKs received during the `--duration` seconds of load divided by that duration (or, with
//! `--count N`, N messages divided by the time until the last ACK). Output lines have the
//! same shape as loadgen's, so one script reads both:
//! `acked_per_sec=... ack_latency_ms p50=... p90=... p99=... max=...`.
//!
//! `--create` deletes the stream if it exists and creates it afresh (file storage,
//! `--replicas` replicas, no limits), so every phase starts on an empty stream.

use anyhow::{bail, Context};
use async_nats::jetstream::{self, stream};
use clap::Parser;
use futures::stream::{FuturesUnordered, StreamExt};
use std::time::Duration;
use tokio::time::Instant;

/// JetStream publisher benchmark (fixed in-flight or paced), loadgen's counterpart.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Server URLs, comma separated (nats://127.0.88.1:4222,...).
    #[arg(long)]
    servers: String,
    /// Stream name.
    #[arg(long, default_value = "RWBENCH")]
    stream: String,
    /// Subject published to (the stream holds it).
    #[arg(long, default_value = "rwbench.reports")]
    subject: String,
    /// Delete and re-create the stream before publishing.
    #[arg(long)]
    create: bool,
    /// Stream replicas when creating it.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Bytes per message (payload).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Messages per second; 0 publishes as fast as `--inflight` allows.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Most messages awaiting their publish ACK at once.
    #[arg(long, default_value_t = 1024)]
    inflight: usize,
    /// Seconds of load (ignored with `--count`).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Publish exactly this many messages instead of publishing for `--duration`.
    #[arg(long)]
    count: Option<u64>,
    /// Seconds to wait for the ACKs still awaited after the load ends.
    #[arg(long, default_value_t = 30)]
    drain: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Two workers, as loadgen: the publisher gets the same share of the machine.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.inflight > 0, "--inflight must be at least 1");
    let servers: Vec<&str> = args.servers.split(',').map(str::trim).collect();
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(servers.as_slice())
        .await
        .context("connecting to NATS")?;
    // The client's own bound on pending ACKs must not be the one that limits.
    let js = jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .ack_timeout(Duration::from_secs(30))
        .max_ack_inflight(args.inflight + 1024)
        .backpressure_on_inflight(true)
        .build(client.clone());
    if args.create {
        let _ = js.delete_stream(&args.stream).await;
        js.create_stream(stream::Config {
            name: args.stream.clone(),
            subjects: vec![args.subject.clone()],
            storage: stream::StorageType::File,
            num_replicas: args.replicas,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating stream {}", args.stream))?;
    }
    let payload = bytes::Bytes::from(vec![0xA5u8; args.size]);

    let mut pending = FuturesUnordered::new();
    let mut latencies_us: Vec<u64> = Vec::new();
    let (mut sent, mut acked, mut errors) = (0u64, 0u64, 0u64);
    let mut acked_during_load: Option<u64> = None;
    let start = Instant::now();
    let load_end = start + Duration::from_secs(args.duration);
    let mut drain_end: Option<Instant> = None;
    let mut credit = 0f64;
    let mut last_tick = start;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ack = start;
    let mut first_error: Option<String> = None;

    loop {
        let now = Instant::now();
        let loading = match args.count {
            Some(n) => sent < n,
            None => now < load_end,
        };
        if !loading && acked_during_load.is_none() {
            acked_during_load = Some(acked);
            drain_end = Some(now + Duration::from_secs(args.drain));
        }
        if !loading && (pending.is_empty() || drain_end.is_some_and(|d| now >= d)) {
            break;
        }
        if loading {
            let room = args.inflight.saturating_sub(pending.len());
            let budget = if args.rate == 0 {
                room
            } else {
                credit += now.duration_since(last_tick).as_secs_f64() * args.rate as f64;
                let whole = credit.floor();
                credit -= whole;
                (whole as usize).min(room)
            };
            last_tick = now;
            let budget = match args.count {
                Some(n) => budget.min((n - sent) as usize),
                None => budget,
            };
            for _ in 0..budget {
                let at = Instant::now();
                let ack = js
                    .publish(args.subject.clone(), payload.clone())
                    .await
                    .context("publishing")?;
                sent += 1;
                pending.push(async move { (at, ack.await) });
            }
        }
        // Paced or full: wait for the next tick or the next ACK, whichever comes first.
        let full = pending.len() >= args.inflight;
        tokio::select! {
            _ = tick.tick(), if args.rate != 0 || !full || !loading => {}
            Some((at, result)) = pending.next(), if !pending.is_empty() => {
                let mut record = |at: Instant, result: Result<jetstream::publish::PublishAck, _>| {
                    let done = Instant::now();
                    match result {
                        Ok(_) => {
                            acked += 1;
                            last_ack = done;
                            latencies_us.push(done.duration_since(at).as_micros() as u64);
                        }
                        Err(e) => {
                            errors += 1;
                            if first_error.is_none() {
                                first_error = Some(format!("{e}"));
                            }
                        }
                    }
                };
                record(at, result);
                // Take every ACK that is already there before publishing again.
                while let Some(Some((at, result))) = futures::FutureExt::now_or_never(pending.next()) {
                    record(at, result);
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    let pct = |p: f64| {
        if latencies_us.is_empty() {
            0.0
        } else {
            let i = ((latencies_us.len() as f64 * p).ceil() as usize).clamp(1, latencies_us.len());
            latencies_us[i - 1] as f64 / 1000.0
        }
    };
    let per_sec = match args.count {
        Some(_) => acked as f64 / last_ack.duration_since(start).as_secs_f64().max(0.001),
        None => acked_during_load.unwrap_or(acked) as f64 / (args.duration as f64).max(0.001),
    };
    println!(
        "size={} rate={} inflight={} duration={}s sent={sent} acked={acked} unacked={} errors={errors} elapsed={elapsed:.1}s",
        args.size,
        args.rate,
        args.inflight,
        args.duration,
        pending.len()
    );
    println!(
        "acked_per_sec={per_sec:.0} ack_latency_ms p50={:.2} p90={:.2} p99={:.2} max={:.2}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
    if let Some(e) = first_error {
        eprintln!("first publish error: {e}");
    }
    drop(pending);
    client.flush().await.ok();
    if errors > 0 || acked < sent {
        bail!("{} of {sent} messages not ACKed", sent - acked);
    }
    Ok(())
}
