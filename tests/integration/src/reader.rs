//! Packet-reader processes in front of a `cma` test cluster (see [`crate::cluster`]), and
//! scraping any daemon's `/metrics`.
//!
//! Addresses: a test with network byte `net` has its CMA nodes on 127.<net>.0.<id>
//! ([`crate::cluster`]), its packet-readers on 127.<net>.1.<n> and its senders on
//! 127.<net>.2.x, so tests running in parallel never collide.

use crate::procs::{binary, spawn, wait_until, ProcGuard};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A packet-reader process (may be stopped and started again on the same addresses).
pub struct ReaderProc {
    /// Its UDP listen address.
    pub listen: SocketAddr,
    /// Its `/metrics` address.
    pub metrics: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    proc: Option<ProcGuard>,
}

impl ReaderProc {
    /// Writes the config of packet-reader number `n` (host id 900_000 + n) for a cluster
    /// in `dir` whose nodes are `cma_nodes`; not started.
    pub fn new(
        dir: &Path,
        net: u8,
        n: u8,
        key_file: &Path,
        cluster_key: &Path,
        cma_nodes: &[SocketAddr],
    ) -> ReaderProc {
        let listen: SocketAddr = format!("127.{net}.1.{n}:7300").parse().expect("addr");
        let metrics: SocketAddr = format!("127.{net}.1.{n}:7381").parse().expect("addr");
        let nodes: Vec<String> = cma_nodes.iter().map(|a| format!("\"{a}\"")).collect();
        let config = dir.join(format!("reader{n}.toml"));
        let text = format!(
            "host_id = {}\nlisten = \"{listen}\"\nsockets = 2\nrecv_buffer_bytes = 1048576\n\
             key_file = \"{}\"\ncma_nodes = [{}]\ncluster_secret_file = \"{}\"\n\
             metrics_listen = \"{metrics}\"\n\n[batch]\nmax_delay_us = 2000\n\
             give_up_ms = 20000\nrequest_timeout_ms = 8000\n",
            900_000 + u64::from(n),
            key_file.display(),
            nodes.join(", "),
            cluster_key.display(),
        );
        std::fs::write(&config, text).expect("reader config");
        ReaderProc {
            listen,
            metrics,
            config,
            log: dir.join(format!("reader{n}.log")),
            proc: None,
        }
    }

    /// Starts the process and waits until its `/metrics` answers.
    pub fn start(&mut self) {
        assert!(self.proc.is_none(), "reader already running");
        let bin = binary("packet-reader");
        let config = self.config.display().to_string();
        let proc = spawn(
            &bin,
            &["--config", &config],
            &[("RUST_LOG", "info")],
            &self.log,
        )
        .expect("spawn packet-reader");
        self.proc = Some(proc);
        let metrics = self.metrics;
        assert!(
            wait_until(Duration::from_secs(30), || scrape(metrics).is_some()),
            "packet-reader metrics {metrics} never answered; log:\n{}",
            self.log_text()
        );
    }

    /// SIGTERM, and waits for a clean exit (in-flight batches finished).
    pub fn stop_gracefully(&mut self, within: Duration) {
        let mut proc = self.proc.take().expect("reader not running");
        proc.terminate().expect("SIGTERM");
        let status = proc.wait_timeout(within);
        assert!(
            status.is_some_and(|s| s.success()),
            "packet-reader did not stop cleanly within {within:?} ({status:?}); log:\n{}",
            self.log_text()
        );
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The current `/metrics` text (panics if it does not answer).
    pub fn metrics_text(&self) -> String {
        scrape(self.metrics).expect("scraping packet-reader metrics")
    }
}

/// `GET /metrics` over plain HTTP/1.1; None when the listener does not answer.
pub fn scrape(addr: SocketAddr) -> Option<String> {
    let (status, body) = http_get(addr, "/metrics")?;
    (status == 200).then_some(body)
}

/// `GET path` over plain HTTP/1.1 (no client library: tests poll with it every few
/// milliseconds); the status and the body, None when the listener does not answer.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Every sample of an OpenMetrics text, by series name with labels as written
/// (`ringwatch_reader_rejected_total{reason="bad_mac"}`).
pub fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// One sample's value, 0 when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    samples(text).get(series).copied().unwrap_or(0.0)
}

/// Starts nanoprobe `host` of a loopback test with network byte `net` on
/// 127.<net>.2.<host>:7500, reporting to `reader`, its log in `dir`.
pub fn spawn_nanoprobe(
    dir: &Path,
    net: u8,
    host: u64,
    key_file: &Path,
    reader: &str,
    rust_log: &str,
) -> ProcGuard {
    let bind = format!("127.{net}.2.{host}:7500");
    let host_s = host.to_string();
    let keys = key_file.display().to_string();
    spawn(
        &binary("nanoprobe"),
        &[
            "--host-id",
            &host_s,
            "--bind",
            &bind,
            "--packet-reader",
            reader,
            "--key-file",
            &keys,
        ],
        &[("RUST_LOG", rust_log)],
        &dir.join(format!("nanoprobe{host}.log")),
    )
    .expect("spawn nanoprobe")
}
