//! `loadgen`: simulates many nanoprobes sending reports to packet-readers, with real
//! envelopes and keys and the nanoprobe's delivery rule (retransmit, re-sealed, until
//! ACKed). Prints throughput and ACK latency; can write every ACKed report to a file so
//! tests can check that the queue holds each exactly once.

use anyhow::Context;
use clap::Parser;
use proto::{Body, HostId, KeyRing, Report, ReportBody, Sealer, SessionId, Verifier, MAX_DATAGRAM};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Simulated nanoprobes for load tests of the packet-reader.
#[derive(Parser, Debug)]
struct Args {
    /// Packet-reader address (repeat for several; each host picks one by its id and
    /// fails over to the next after `failover_after` retransmissions).
    #[arg(long = "reader", required = true)]
    readers: Vec<SocketAddr>,
    /// The key file shared with the packet-readers.
    #[arg(long)]
    key_file: PathBuf,
    /// Number of simulated nanoprobes.
    #[arg(long, default_value_t = 1000)]
    hosts: u64,
    /// Host id of the first simulated nanoprobe.
    #[arg(long, default_value_t = 1_000_000)]
    host_base: u64,
    /// Reports per second over all hosts; 0 sends as fast as `max_outstanding` allows.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds to keep retransmitting unacknowledged reports after the load ends.
    #[arg(long, default_value_t = 30)]
    drain: u64,
    /// Most reports awaiting their ACK at once (new reports wait beyond it).
    #[arg(long, default_value_t = 20_000)]
    max_outstanding: usize,
    /// First retransmission timeout, in ms (doubles up to 2 s).
    #[arg(long, default_value_t = 300)]
    rto_ms: u64,
    /// Retransmissions to one reader before trying the next.
    #[arg(long, default_value_t = 3)]
    failover_after: u32,
    /// Local UDP sockets to spread the hosts over.
    #[arg(long, default_value_t = 8)]
    sockets: usize,
    /// Local address to bind the sockets to.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Write one line `sender session report_id` per ACKed report to this file.
    #[arg(long)]
    acked_out: Option<PathBuf>,
    /// Send `Discovery` reports padded so that each sealed datagram is about this many
    /// bytes, instead of `HbDead` reports (59 bytes), e.g. to compare with a broker at a
    /// given message size.
    #[arg(long)]
    report_bytes: Option<usize>,
    /// Print a progress line every this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    progress: u64,
}

struct SimHost {
    sealer: Sealer,
    next_id: u64,
}

struct Outstanding {
    host: usize,
    body: Body,
    first_sent: Instant,
    rto: Duration,
    attempts: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.hosts > 0, "--hosts must be at least 1");
    let keys = Arc::new(
        KeyRing::load(&args.key_file)
            .with_context(|| format!("loading key file {}", args.key_file.display()))?,
    );
    let base_session = SessionId::from_clock().0;
    let mut hosts: Vec<SimHost> = (0..args.hosts)
        .map(|i| SimHost {
            sealer: Sealer::new(
                keys.clone(),
                HostId(args.host_base + i),
                SessionId(base_session + i),
            ),
            next_id: 1,
        })
        .collect();
    // Padding of `Discovery` reports for `--report-bytes`: found by sealing probes with a
    // throwaway sealer (the length prefix of the padding may take one more byte).
    let padding = match args.report_bytes {
        None => None,
        Some(want) => {
            let mut probe = Sealer::new(keys.clone(), HostId(u64::MAX), SessionId(1));
            let mut out = Vec::new();
            let mut pad = 0usize;
            for _ in 0..4 {
                probe.seal_into(&discovery(1, pad), &mut out)?;
                if out.len() == want {
                    break;
                }
                pad = (pad + want).saturating_sub(out.len());
            }
            if out.len() != want {
                eprintln!(
                    "--report-bytes {want}: the nearest report is {} bytes",
                    out.len()
                );
            }
            Some(pad)
        }
    };
    let mut sockets = Vec::new();
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(u64, u64, Instant)>();
    for _ in 0..args.sockets.max(1) {
        let socket = Arc::new(
            UdpSocket::bind(args.bind)
                .await
                .with_context(|| format!("binding {}", args.bind))?,
        );
        let receiver = socket.clone();
        let keys = keys.clone();
        let ack_tx = ack_tx.clone();
        tokio::spawn(async move {
            let mut verifier = Verifier::new(keys, 1024);
            let mut buf = vec![0u8; MAX_DATAGRAM + 1];
            while let Ok((len, _)) = receiver.recv_from(&mut buf).await {
                if let Ok(v) = verifier.verify(&buf[..len]) {
                    if let Body::Ack(ack) = v.body {
                        if ack_tx
                            .send((ack.session.0, ack.id, Instant::now()))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        sockets.push(socket);
    }
    let mut acked_out = match &args.acked_out {
        Some(path) => Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => None,
    };

    let mut outstanding: HashMap<(usize, u64), Outstanding> = HashMap::new();
    // Retransmission schedule; entries of reports ACKed since are skipped when due.
    let mut schedule: BinaryHeap<Reverse<(Instant, usize, u64)>> = BinaryHeap::new();
    let mut latencies_us: Vec<u64> = Vec::new();
    let (mut sent, mut retransmitted, mut acked) = (0u64, 0u64, 0u64);
    // Bytes of each report's first datagram (the size `nats-bench --size` copies), and the
    // most retransmissions any one report needed.
    let (mut report_bytes, mut max_attempts) = (0u64, 0u32);
    // ACKs received while the load ran: the throughput figure.
    let mut acked_during_load: Option<u64> = None;
    let mut buf = Vec::with_capacity(256);
    let start = Instant::now();
    let load_end = start + Duration::from_secs(args.duration);
    let drain_end = load_end + Duration::from_secs(args.drain);
    let mut next_host = 0usize;
    let mut credit = 0f64;
    let mut last_tick = start;
    let mut next_progress = start + Duration::from_secs(args.progress.max(1));
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let rto = Duration::from_millis(args.rto_ms.max(1));

    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some((session, id, at)) = ack_rx.recv() => {
                record_ack(session, id, at, base_session, &mut outstanding, &mut latencies_us, &mut acked, &hosts, &mut acked_out)?;
                while let Ok((session, id, at)) = ack_rx.try_recv() {
                    record_ack(session, id, at, base_session, &mut outstanding, &mut latencies_us, &mut acked, &hosts, &mut acked_out)?;
                }
                continue;
            }
        }
        let now = Instant::now();
        if now >= load_end && acked_during_load.is_none() {
            acked_during_load = Some(acked);
        }
        if now >= drain_end || (now >= load_end && outstanding.is_empty()) {
            break;
        }
        // New reports.
        if now < load_end {
            let budget = if args.rate == 0 {
                args.max_outstanding.saturating_sub(outstanding.len())
            } else {
                credit += now.duration_since(last_tick).as_secs_f64() * args.rate as f64;
                let whole = credit.floor();
                credit -= whole;
                (whole as usize).min(args.max_outstanding.saturating_sub(outstanding.len()))
            };
            for _ in 0..budget {
                let index = next_host;
                next_host = (next_host + 1) % hosts.len().max(1);
                let host = &mut hosts[index];
                let id = host.next_id;
                host.next_id += 1;
                let body = match padding {
                    Some(pad) => discovery(id, pad),
                    None => Body::Report(Report {
                        id,
                        body: ReportBody::HbDead {
                            peer: HostId(args.host_base + ((index as u64 + 1) % args.hosts)),
                            last_seen_us: base_session,
                        },
                    }),
                };
                send(&mut buf, host, &body, 0, &args, &sockets, index).await;
                report_bytes += buf.len() as u64;
                sent += 1;
                schedule.push(Reverse((now + rto, index, id)));
                outstanding.insert(
                    (index, id),
                    Outstanding {
                        host: index,
                        body,
                        first_sent: now,
                        rto,
                        attempts: 0,
                    },
                );
            }
        }
        last_tick = now;
        // Retransmissions, re-sealed with a fresh envelope sequence number.
        while let Some(&Reverse((due, index, id))) = schedule.peek() {
            if due > now {
                break;
            }
            schedule.pop();
            let Some(o) = outstanding.get_mut(&(index, id)) else {
                continue;
            };
            o.attempts += 1;
            max_attempts = max_attempts.max(o.attempts);
            o.rto = (o.rto * 2).min(Duration::from_secs(2));
            schedule.push(Reverse((now + o.rto, index, id)));
            let host = &mut hosts[o.host];
            send(&mut buf, host, &o.body, o.attempts, &args, &sockets, o.host).await;
            retransmitted += 1;
        }
        if args.progress > 0 && now >= next_progress {
            next_progress = now + Duration::from_secs(args.progress);
            eprintln!(
                "t={:.1}s sent={sent} acked={acked} outstanding={} retransmitted={retransmitted}",
                now.duration_since(start).as_secs_f64(),
                outstanding.len()
            );
        }
    }
    if let Some(out) = acked_out.as_mut() {
        out.flush()?;
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
    let load_secs = args.duration as f64;
    println!(
        "hosts={} rate={} duration={}s sent={sent} acked={acked} unacked={} retransmitted={retransmitted} max_retransmissions={max_attempts} report_bytes={:.0} elapsed={elapsed:.1}s",
        args.hosts,
        args.rate,
        args.duration,
        outstanding.len(),
        report_bytes as f64 / sent.max(1) as f64
    );
    println!(
        "acked_per_sec={:.0} ack_latency_ms p50={:.2} p90={:.2} p99={:.2} max={:.2}",
        acked_during_load.unwrap_or(acked) as f64 / load_secs.max(0.001),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
    if !outstanding.is_empty() {
        std::process::exit(3);
    }
    Ok(())
}

/// A `Discovery` report whose data is `pad` bytes.
fn discovery(id: u64, pad: usize) -> Body {
    Body::Report(Report {
        id,
        body: ReportBody::Discovery {
            kind: "bench".into(),
            data: "x".repeat(pad),
        },
    })
}

#[allow(clippy::too_many_arguments)]
fn record_ack(
    session: u64,
    id: u64,
    at: Instant,
    base_session: u64,
    outstanding: &mut HashMap<(usize, u64), Outstanding>,
    latencies_us: &mut Vec<u64>,
    acked: &mut u64,
    hosts: &[SimHost],
    acked_out: &mut Option<std::io::BufWriter<std::fs::File>>,
) -> anyhow::Result<()> {
    let Some(index) = session.checked_sub(base_session).map(|i| i as usize) else {
        return Ok(());
    };
    if index >= hosts.len() {
        return Ok(());
    }
    if let Some(o) = outstanding.remove(&(index, id)) {
        *acked += 1;
        latencies_us.push(at.duration_since(o.first_sent).as_micros() as u64);
        if let Some(out) = acked_out.as_mut() {
            writeln!(out, "{} {} {}", hosts[index].sealer.sender().0, session, id)?;
        }
    }
    Ok(())
}

async fn send(
    buf: &mut Vec<u8>,
    host: &mut SimHost,
    body: &Body,
    attempts: u32,
    args: &Args,
    sockets: &[Arc<UdpSocket>],
    index: usize,
) {
    if host.sealer.seal_into(body, buf).is_err() {
        return;
    }
    // Consistent choice by host id, moving on to the next reader after failed attempts.
    let first = (host.sealer.sender().0 as usize) % args.readers.len();
    let reader = args.readers
        [(first + (attempts / args.failover_after.max(1)) as usize) % args.readers.len()];
    let socket = &sockets[index % sockets.len()];
    let _ = socket.send_to(buf, reader).await;
}
