//! Benchmark: one real `nanoprobe` (the binary next to this one) under a garbage UDP flood,
//! answering genuine authenticated echo requests. Prints the flood rate achieved, the share
//! of genuine echoes answered, the echo round-trip p50/p99, and the nanoprobe's peak RSS
//! and CPU.
//!
//! The garbage has a valid magic, version and key id and a wrong MAC, so each datagram
//! costs the nanoprobe the most it can before being refused; it comes from `SOURCES`
//! loopback addresses (round robin). The genuine sender is another address.
//!
//! Usage: `flood-bench [RATE] [SECONDS] [SOURCES]` (defaults 250000 datagrams/s, 20 s,
//! 200 sources; RATE 0 gives the baseline). Uses 127.63.0.0/16, UDP port 27063.

use proto::{Body, HostId, KeyId, KeyRing, Sealer, SessionId, Verifier};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PORT: u16 = 27063;
/// Genuine echo requests per second.
const ECHO_RATE: u64 = 200;
/// Threads sending the flood.
const FLOOD_THREADS: usize = 2;

fn target() -> SocketAddr {
    SocketAddr::from(([127, 63, 0, 1], PORT))
}

/// (utime + stime) in clock ticks and VmRSS in KiB.
fn proc_stats(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks, rss))
}

fn main() -> anyhow::Result<()> {
    let arg = |i: usize, default: u64| -> anyhow::Result<u64> {
        Ok(std::env::args()
            .nth(i)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let rate = arg(1, 250_000)?;
    let seconds = arg(2, 20)?;
    let sources = arg(3, 200)?.clamp(1, 250) as u8;
    let dir = std::env::temp_dir().join(format!("flood-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let key_path = dir.join("keys.toml");
    let keys = Arc::new(KeyRing::write_new_key_file(&key_path, KeyId(1))?);
    let bin = std::env::current_exe()?
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no exe dir"))?
        .join("nanoprobe");
    let log = std::fs::File::create(dir.join("nanoprobe.log"))?;
    let mut child = Process::new(&bin)
        .args(["--host-id", "1", "--bind"])
        .arg(target().to_string())
        .args(["--packet-reader", "127.63.0.2:27064", "--key-file"])
        .arg(&key_path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| anyhow::anyhow!("spawning {}: {e}", bin.display()))?;
    std::thread::sleep(Duration::from_millis(500));
    let result = run(rate, seconds, sources, child.id(), keys);
    let _ = child.kill();
    let _ = child.wait();
    if let Ok(text) = std::fs::read_to_string(dir.join("nanoprobe.log")) {
        for line in text.lines().filter(|l| l.contains("WARN")).take(5) {
            println!("nanoprobe log: {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(rate: u64, seconds: u64, sources: u8, pid: u32, keys: Arc<KeyRing>) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let flooded = Arc::new(AtomicU64::new(0));
    // The flood: a wrong MAC behind a valid header, from `sources` addresses.
    let mut floods = Vec::new();
    for t in 0..FLOOD_THREADS {
        let (stop, flooded) = (stop.clone(), flooded.clone());
        let per_thread = rate / FLOOD_THREADS as u64;
        let sockets: Vec<UdpSocket> = (0..sources)
            .filter(|s| usize::from(*s) % FLOOD_THREADS == t)
            .map(|s| UdpSocket::bind(SocketAddr::from(([127, 63, 1, s + 1], 0))))
            .collect::<Result<_, _>>()?;
        floods.push(std::thread::spawn(move || {
            if per_thread == 0 || sockets.is_empty() {
                return;
            }
            let mut garbage = [0u8; 64];
            garbage[..3].copy_from_slice(&[b'R', b'W', 1]);
            garbage[3..5].copy_from_slice(&1u16.to_le_bytes());
            let started = Instant::now();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Pace: never ahead of the target rate.
                let due = (started.elapsed().as_secs_f64() * per_thread as f64) as u64;
                if sent >= due {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                for _ in 0..(due - sent).min(512) {
                    garbage[40..48].copy_from_slice(&sent.to_le_bytes());
                    let s = &sockets[(sent as usize) % sockets.len()];
                    if s.send_to(&garbage, target()).is_ok() {
                        flooded.fetch_add(1, Ordering::Relaxed);
                    }
                    sent += 1;
                }
            }
        }));
    }
    // Genuine echoes: nonce -> send time; replies matched by nonce.
    let genuine = UdpSocket::bind("127.63.0.3:0")?;
    genuine.set_read_timeout(Some(Duration::from_millis(100)))?;
    let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let rtts: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let receiver = {
        let (sock, sent_at, rtts, stop, keys) = (
            genuine.try_clone()?,
            sent_at.clone(),
            rtts.clone(),
            stop.clone(),
            keys.clone(),
        );
        std::thread::spawn(move || {
            let mut verifier = Verifier::new(keys, 4);
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, _)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Ok(v) = verifier.verify(&buf[..n]) {
                    if let Body::EchoReply { nonce } = v.body {
                        let at = sent_at.lock().ok().and_then(|mut m| m.remove(&nonce));
                        if let (Some(at), Ok(mut r)) = (at, rtts.lock()) {
                            r.push(at.elapsed());
                        }
                    }
                }
            }
        })
    };
    let mut sealer = Sealer::new(keys, HostId(77), SessionId::from_clock());
    let (ticks0, _) = proc_stats(pid).ok_or_else(|| anyhow::anyhow!("nanoprobe gone"))?;
    let started = Instant::now();
    let mut peak_rss = 0;
    let mut echoes = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        let datagram = sealer.seal(&Body::EchoRequest { nonce: echoes })?;
        if let Ok(mut m) = sent_at.lock() {
            m.insert(echoes, Instant::now());
        }
        genuine.send_to(&datagram, target())?;
        echoes += 1;
        if echoes.is_multiple_of(ECHO_RATE) {
            let (_, rss) = proc_stats(pid).ok_or_else(|| anyhow::anyhow!("nanoprobe died"))?;
            peak_rss = peak_rss.max(rss);
        }
        std::thread::sleep(Duration::from_micros(1_000_000 / ECHO_RATE));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let flood_total = flooded.load(Ordering::Relaxed);
    let (ticks1, rss) = proc_stats(pid).ok_or_else(|| anyhow::anyhow!("nanoprobe died"))?;
    peak_rss = peak_rss.max(rss);
    // Late replies count: one more second.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for f in floods {
        let _ = f.join();
    }
    let _ = receiver.join();
    let mut rtts = rtts.lock().map(|r| r.clone()).unwrap_or_default();
    rtts.sort_unstable();
    let q = |p: f64| -> f64 {
        rtts.get(((rtts.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let hz = 100.0; // USER_HZ on Linux
    println!(
        "flood: {:.0} garbage datagrams/s from {sources} sources (asked {rate}) for {elapsed:.1} s",
        flood_total as f64 / elapsed
    );
    println!(
        "genuine echoes: {} sent, {} answered ({:.2} %), rtt p50 {:.2} ms p99 {:.2} ms",
        echoes,
        rtts.len(),
        100.0 * rtts.len() as f64 / echoes.max(1) as f64,
        q(0.5),
        q(0.99)
    );
    println!(
        "nanoprobe: peak RSS {:.1} MiB, CPU {:.0} % of one core",
        peak_rss as f64 / 1024.0,
        100.0 * (ticks1 - ticks0) as f64 / hz / elapsed
    );
    Ok(())
}
