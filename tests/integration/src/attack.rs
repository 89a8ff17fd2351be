//! Hostile TCP clients for the attack tests and the attack benchmark: many connections
//! that never authenticate, each from one of a set of loopback source addresses, each
//! reconnecting (after a pause) whenever the server closes it, until a deadline.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// What one hostile connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Connects and sends nothing.
    Idle,
    /// Sends a hello's length prefix and then one byte a second (slowloris).
    Slow,
    /// Announces a 64 MiB frame and streams 4 KiB every 100 ms.
    Oversized,
    /// HTTP: sends a request line, then one header byte a second.
    SlowHttp,
}

/// Counters shared by every connection of an attack.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections established.
    pub connected: AtomicU64,
    /// Connections the server closed (or reset) before the deadline.
    pub closed_by_server: AtomicU64,
    /// Connection attempts that failed.
    pub connect_failed: AtomicU64,
}

/// Pause before a closed connection is opened again.
pub const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Starts `count` hostile connections of `class` against `target` on the current tokio
/// runtime, spread over `sources` (bound as source addresses), running until `until`.
pub fn launch(
    target: SocketAddr,
    class: Class,
    count: usize,
    sources: &[Ipv4Addr],
    until: Instant,
    stats: Arc<Stats>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count)
        .map(|i| {
            let source = sources[i % sources.len()];
            let stats = stats.clone();
            tokio::spawn(async move {
                // Spread the first connects over 1 s so the attack does not start as a
                // single SYN burst larger than the listen backlog.
                tokio::time::sleep(Duration::from_micros((i as u64 * 997) % 1_000_000)).await;
                while Instant::now() < until {
                    match connect(source, target).await {
                        Ok(stream) => {
                            stats.connected.fetch_add(1, Ordering::Relaxed);
                            if hold(stream, class, until).await {
                                stats.closed_by_server.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            stats.connect_failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            })
        })
        .collect()
}

async fn connect(source: Ipv4Addr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    tokio::time::timeout(Duration::from_secs(3), socket.connect(target))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Runs the class's behaviour; true when the server closed the connection first.
async fn hold(stream: TcpStream, class: Class, until: Instant) -> bool {
    let (mut r, mut w) = stream.into_split();
    let deadline = tokio::time::Instant::from_std(until);
    let writer = async move {
        match class {
            Class::Idle => std::future::pending::<()>().await,
            Class::Slow => {
                if w.write_all(&36u32.to_be_bytes()).await.is_err() {
                    return;
                }
                for b in b"RWQ1".iter().cycle() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if w.write_all(&[*b]).await.is_err() {
                        return;
                    }
                }
            }
            Class::Oversized => {
                if w.write_all(&(64u32 << 20).to_be_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![0xa5u8; 4096];
                loop {
                    if w.write_all(&chunk).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Class::SlowHttp => {
                if w.write_all(b"GET /cluster/status HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                for b in b"X-Slow: aaaaaaaaaaaaaaaa".iter().cycle() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if w.write_all(&[*b]).await.is_err() {
                        return;
                    }
                }
            }
        }
        // The writer only ends on a write error: the server is gone.
        std::future::pending::<()>().await
    };
    let reader = async move {
        let mut buf = [0u8; 512];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = reader => true,
        _ = writer => true,
        _ = tokio::time::sleep_until(deadline) => false,
    }
}

/// `count` source addresses 127.`net`.100.1, .2, ...
pub fn sources(net: u8, count: u8) -> Vec<Ipv4Addr> {
    (1..=count)
        .map(|i| Ipv4Addr::new(127, net, 100, i))
        .collect()
}

/// Resident set size of a process in bytes, from /proc/<pid>/status.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Raises this process's descriptor limit to at least `want` (needs root above the hard
/// limit); returns the soft limit it runs with.
pub fn raise_own_nofile(want: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    if soft >= want {
        return soft;
    }
    if setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard)).is_ok() {
        return want;
    }
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(s, _)| s)
}

/// The `p`-quantile (0..=1) of `samples` (sorted in place); zero when empty.
pub fn quantile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i.min(samples.len() - 1)]
}
