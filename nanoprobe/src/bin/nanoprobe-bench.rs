//! Benchmark: one real `nanoprobe` (the binary next to this one) with 8 simulated peers at
//! the default timings (1 s / 2 s / 3 s) for 60 s. Prints its RSS, its CPU use and the
//! detection latency (last heartbeat to `HbDead` received, minus deadtime and the
//! last-chance confirmation, which silent peers never answer) at p50/p99/max.
//!
//! Each simulated peer falls silent for 4 s every 10 s (staggered), so the run contains
//! about 48 deaths and returns. A stand-in receiver plays the packet-reader and the CMA.
//!
//! Usage: `nanoprobe-bench [SECONDS]` (default 60). Uses 127.62.0.0/24, UDP port 27062.

use proto::{
    Ack, Body, Command, CommandBody, HbTimings, Heartbeat, HostId, KeyId, KeyRing, Peer,
    ReportBody, Sealer, SessionId, Verifier,
};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PORT: u16 = 27062;
const PEERS: u64 = 8;
const STAND_IN: u64 = 1000;
const CYCLE: Duration = Duration::from_secs(10);
const SILENT: Duration = Duration::from_secs(4);
/// `--confirm-ms` given to the nanoprobe (its default).
const CONFIRM_MS: u32 = 500;

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([127, 62, 0, last], PORT))
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// (utime + stime) in clock ticks, and VmRSS / VmHWM in KiB.
fn proc_stats(pid: u32) -> anyhow::Result<(u64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow::anyhow!("bad stat"))?
        .1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        Ok(f.get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse::<u64>()?)
    };
    let ticks = field(11)? + field(12)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((ticks, kib("VmRSS:"), kib("VmHWM:")))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(60);
    let dir = tempfile_dir()?;
    let key_path = dir.join("keys.toml");
    let keys = Arc::new(KeyRing::write_new_key_file(&key_path, KeyId(1))?);
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no exe dir"))?
        .join("nanoprobe");
    let log = std::fs::File::create(dir.join("nanoprobe.log"))?;
    let mut child = Process::new(&bin)
        .args(["--host-id", "1", "--bind"])
        .arg(addr(1).to_string())
        .arg("--packet-reader")
        .arg(addr(100).to_string())
        .arg("--key-file")
        .arg(&key_path)
        .arg("--confirm-ms")
        .arg(CONFIRM_MS.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| anyhow::anyhow!("spawning {}: {e}", bin.display()))?;
    let pid = child.id();
    let result = run(seconds, pid, keys);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("nanoprobe-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn run(seconds: u64, pid: u32, keys: Arc<KeyRing>) -> anyhow::Result<()> {
    let timings = HbTimings::default();
    let stand_in = Arc::new(UdpSocket::bind(addr(100))?);
    stand_in.set_read_timeout(Some(Duration::from_millis(100)))?;
    let sealer = Arc::new(Mutex::new(Sealer::new(
        keys.clone(),
        HostId(STAND_IN),
        SessionId::from_clock(),
    )));
    // (receive wall time, HbDead last_seen_us) for every distinct HbDead.
    let deaths: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let started = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (sock, sealer, deaths, started, acked, stop, keys) = (
            stand_in.clone(),
            sealer.clone(),
            deaths.clone(),
            started.clone(),
            acked.clone(),
            stop.clone(),
            keys.clone(),
        );
        std::thread::spawn(move || {
            let mut verifier = Verifier::new(keys, 16);
            let mut seen = std::collections::HashSet::new();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let now = wall_us();
                let Ok(v) = verifier.verify(&buf[..n]) else {
                    continue;
                };
                match v.body {
                    Body::Report(r) => {
                        let ack = Body::Ack(Ack {
                            session: v.header.session,
                            id: r.id,
                        });
                        if let Ok(d) = sealer
                            .lock()
                            .map_err(|_| ())
                            .and_then(|mut s| s.seal(&ack).map_err(|_| ()))
                        {
                            let _ = sock.send_to(&d, from);
                        }
                        if !seen.insert(r.id) {
                            continue;
                        }
                        match r.body {
                            ReportBody::Startup(_) => started.store(true, Ordering::Relaxed),
                            ReportBody::HbDead { last_seen_us, .. } if last_seen_us > 0 => {
                                if let Ok(mut d) = deaths.lock() {
                                    d.push((now, last_seen_us));
                                }
                            }
                            _ => {}
                        }
                    }
                    Body::Ack(_) => acked.store(true, Ordering::Relaxed),
                    _ => {}
                }
            }
        })
    };
    let wait_flag = |flag: &AtomicBool, what: &str| -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !flag.load(Ordering::Relaxed) {
            if Instant::now() > deadline {
                anyhow::bail!("timed out waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    };
    wait_flag(&started, "Startup")?;
    let peers: Vec<Peer> = (0..PEERS)
        .map(|i| Peer {
            host: HostId(10 + i),
            addr: addr(10 + i as u8),
        })
        .collect();
    let cmd = Body::Command(Command {
        id: 1,
        body: CommandBody::SendExpectHb {
            peers: peers.clone(),
            timings,
        },
    });
    for _ in 0..50 {
        let d = sealer
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .seal(&cmd)?;
        stand_in.send_to(&d, addr(1))?;
        std::thread::sleep(Duration::from_millis(100));
        if acked.load(Ordering::Relaxed) {
            break;
        }
    }
    wait_flag(&acked, "SendExpectHb ack")?;

    // Simulated peers: one socket and one sealer each, driven from this thread.
    let mut sims = Vec::new();
    for p in &peers {
        let s = UdpSocket::bind(p.addr)?;
        s.set_nonblocking(true)?;
        sims.push((
            s,
            Sealer::new(keys.clone(), p.host, SessionId::from_clock()),
        ));
    }
    let interval = Duration::from_millis(timings.interval_ms.into());
    let begin = Instant::now();
    let end = begin + Duration::from_secs(seconds);
    let warmup = begin + Duration::from_secs(5).min(Duration::from_secs(seconds) / 4);
    let mut cpu_start = None;
    let mut next_send = vec![begin; sims.len()];
    let mut drain = [0u8; 2048];
    while Instant::now() < end {
        let now = Instant::now();
        if cpu_start.is_none() && now >= warmup {
            cpu_start = Some((now, proc_stats(pid)?.0));
        }
        for (i, (sock, sealer)) in sims.iter_mut().enumerate() {
            while sock.recv_from(&mut drain).is_ok() {}
            if now < next_send[i] {
                continue;
            }
            next_send[i] += interval;
            let offset = CYCLE.mul_f64(i as f64 / PEERS as f64);
            let phase =
                (now.duration_since(begin) + CYCLE - offset).as_millis() % CYCLE.as_millis();
            if phase >= (CYCLE - SILENT).as_millis() {
                continue; // this peer is "down" right now
            }
            let hb = Body::Heartbeat(Heartbeat {
                sent_at_us: wall_us(),
                leaving: false,
            });
            sock.send_to(&sealer.seal(&hb)?, addr(1))?;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (ticks_end, rss, hwm) = proc_stats(pid)?;
    let (t0, ticks0) = cpu_start.unwrap_or((begin, 0));
    let wall = t0.elapsed().as_secs_f64();
    // Linux reports CPU times in USER_HZ, 100 on every mainstream architecture.
    let cpu_pct = (ticks_end - ticks0) as f64 / 100.0 / wall * 100.0;
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    let mut lat: Vec<f64> = deaths
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .iter()
        .map(|(recv, last)| {
            (recv.saturating_sub(*last) as f64 / 1000.0)
                - f64::from(timings.deadtime_ms)
                - f64::from(CONFIRM_MS)
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "nanoprobe bench: {PEERS} peers, interval {} ms, deadtime {} ms, confirm {CONFIRM_MS} ms, {seconds} s",
        timings.interval_ms, timings.deadtime_ms
    );
    println!(
        "RSS: {:.2} MiB (peak {:.2} MiB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!("CPU: {cpu_pct:.3}% of one core over {wall:.1} s");
    println!(
        "detection beyond deadtime + confirm (last heartbeat -> HbDead received), {} deaths: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    let slow: Vec<String> = lat
        .iter()
        .filter(|l| **l > 20.0)
        .map(|l| format!("{l:.1}"))
        .collect();
    if !slow.is_empty() {
        println!(
            "detections more than 20 ms beyond deadtime + confirm (ms): {}",
            slow.join(" ")
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("machine load average: {}", load.trim());
    Ok(())
}
