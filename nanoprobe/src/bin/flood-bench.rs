//! Benchmark: one real `nanoprobe` (the binary next to this one) under a garbage UDP flood,
//! answering genuine authenticated echo requests. Prints the flood rate achieved, the share
//! of genuine echoes answered, the echo round-trip p50/p99, and the nanoprobe's peak RSS
//! and CPU.
//!
//! The garbage has a valid magic, version and key id and a wrong MAC, so each datagram
//! costs the nanoprobe the most it can before being refused; it comes from `SOURCES`
//! loopback addresses (round robin). The genuine sender is another address.
//!
//! The flood is sent by `THREADS` threads with `sendmmsg` (batches of [`SEND_BATCH`]), paced
//! to the asked rate; the rate printed is what the kernel accepted, so on a small machine
//! it can be lower than asked. Also printed: the kernel's receive-buffer drops in this
//! network namespace (`/proc/net/snmp` `Udp: RcvbufErrors`, all sockets) and the
//! nanoprobe's own counters (`nanoprobe_receive_overflows_total`: drops on its socket;
//! `nanoprobe_rejected_total`), which say where genuine echoes were lost.
//!
//! Usage: `flood-bench [RATE] [SECONDS] [SOURCES] [THREADS]` (defaults 250000 datagrams/s,
//! 20 s, 200 sources, 2 threads; RATE 0 gives the baseline). Uses 127.63.0.0/16, UDP
//! ports 27063 (the nanoprobe) and 27065 (its metrics). Run it in a network namespace to
//! read RcvbufErrors of this run only.

use nix::sys::socket::{sendmmsg, MsgFlags, MultiHeaders, SockaddrIn};
use proto::{Body, HostId, KeyId, KeyRing, Sealer, SessionId, Verifier};
use std::collections::HashMap;
use std::io::IoSlice;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PORT: u16 = 27063;
const METRICS_PORT: u16 = 27065;
/// Genuine echo requests per second.
const ECHO_RATE: u64 = 200;
/// Datagrams per `sendmmsg` call.
const SEND_BATCH: usize = 64;

fn target() -> SocketAddrV4 {
    SocketAddrV4::new([127, 63, 0, 1].into(), PORT)
}

/// `Udp: RcvbufErrors` of this network namespace.
fn rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// The nanoprobe's metrics lines about refused and dropped datagrams.
fn nanoprobe_counters() -> Vec<String> {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 63, 0, 1], METRICS_PORT));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return vec!["(metrics unreachable)".into()];
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .filter(|l| {
            (l.starts_with("nanoprobe_rejected_total") || l.starts_with("nanoprobe_receive"))
                && !l.ends_with(" 0")
        })
        .map(str::to_string)
        .collect()
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
    let threads = arg(4, 2)?.clamp(1, 16) as usize;
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
        .arg("--metrics-listen")
        .arg(SocketAddr::from(([127, 63, 0, 1], METRICS_PORT)).to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| anyhow::anyhow!("spawning {}: {e}", bin.display()))?;
    std::thread::sleep(Duration::from_millis(500));
    let result = run(rate, seconds, sources, threads, child.id(), keys);
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

fn run(
    rate: u64,
    seconds: u64,
    sources: u8,
    threads: usize,
    pid: u32,
    keys: Arc<KeyRing>,
) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let flooded = Arc::new(AtomicU64::new(0));
    // The flood: a wrong MAC behind a valid header, from `sources` addresses.
    let mut floods = Vec::new();
    for t in 0..threads {
        let (stop, flooded) = (stop.clone(), flooded.clone());
        let per_thread = rate / threads as u64;
        let sockets: Vec<UdpSocket> = (0..sources)
            .filter(|s| usize::from(*s) % threads == t)
            .map(|s| UdpSocket::bind(SocketAddr::from(([127, 63, 1, s + 1], 0))))
            .collect::<Result<_, _>>()?;
        floods.push(std::thread::spawn(move || {
            if per_thread == 0 || sockets.is_empty() {
                return;
            }
            // Distinct datagrams (a counter in the MAC field), so no layer can dedupe them.
            let mut garbage = vec![[0u8; 64]; SEND_BATCH];
            for g in garbage.iter_mut() {
                g[..3].copy_from_slice(&[b'R', b'W', 1]);
                g[3..5].copy_from_slice(&1u16.to_le_bytes());
            }
            let to = [Some(SockaddrIn::from(target())); SEND_BATCH];
            let mut headers = MultiHeaders::<SockaddrIn>::preallocate(SEND_BATCH, None);
            let started = Instant::now();
            let mut sent = 0u64;
            let mut next_socket = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // Pace: never ahead of the target rate.
                let due = (started.elapsed().as_secs_f64() * per_thread as f64) as u64;
                if sent >= due {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                let n = ((due - sent) as usize).min(SEND_BATCH);
                for (i, g) in garbage.iter_mut().take(n).enumerate() {
                    g[48..56].copy_from_slice(&(sent + i as u64).to_le_bytes());
                }
                let slices: Vec<[IoSlice; 1]> =
                    garbage[..n].iter().map(|g| [IoSlice::new(g)]).collect();
                let s = &sockets[next_socket % sockets.len()];
                next_socket += 1;
                // A full send buffer or a busy CPU shows as a lower achieved rate.
                if let Ok(r) = sendmmsg(
                    s.as_raw_fd(),
                    &mut headers,
                    &slices,
                    &to[..n],
                    [],
                    MsgFlags::empty(),
                ) {
                    flooded.fetch_add(r.count() as u64, Ordering::Relaxed);
                }
                sent += n as u64;
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
    let rcvbuf0 = rcvbuf_errors();
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
    let rcvbuf = rcvbuf_errors()
        .zip(rcvbuf0)
        .map_or("unknown".to_string(), |(b, a)| (b - a).to_string());
    let mut rtts = rtts.lock().map(|r| r.clone()).unwrap_or_default();
    rtts.sort_unstable();
    let q = |p: f64| -> f64 {
        rtts.get(((rtts.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let hz = 100.0; // USER_HZ on Linux
    println!(
        "flood: {:.0} garbage datagrams/s achieved from {sources} sources by {threads} \
         sendmmsg threads (asked {rate}) for {elapsed:.1} s",
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
    println!("kernel: Udp RcvbufErrors +{rcvbuf} in this network namespace");
    for line in nanoprobe_counters() {
        println!("nanoprobe: {line}");
    }
    Ok(())
}
