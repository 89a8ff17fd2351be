//! Helpers shared by the queue tests: build the `cma` binaries, run a loopback cluster of
//! real `cma` processes, kill and restart nodes by PID, and query them with `cmactl`.
//!
//! Every test passes its own `net` byte: its nodes live on 127.<net>.0.<id>, so tests
//! running in parallel never share an address.

#![allow(dead_code)]

use queue::{ClientConfig, QueueClient, QueuedPacket};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Raft timings for tests: quick failover, but tolerant of a loaded 2-core machine.
pub const TEST_RAFT: &str = "[raft]\nheartbeat_interval_ms = 250\nelection_timeout_min_ms = 1200\nelection_timeout_max_ms = 2400\n";

/// Directory holding freshly built `cma` and `cmactl`.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // target/<profile>/deps/<test binary>
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile> directory")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target directory");
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let mut cmd = Command::new(cargo);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "build",
                "-p",
                "cma",
                "--bin",
                "cma",
                "--bin",
                "cmactl",
                "--target-dir",
            ])
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("running cargo build for the cma binaries");
        assert!(status.success(), "building cma binaries failed");
        profile_dir
    })
}

/// One `cma` process; SIGKILLed when dropped.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node of the test cluster (its process may be stopped).
pub struct TestNode {
    pub id: u64,
    pub raft: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
}

/// A loopback cluster of real `cma` processes in a scratch directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub net: u8,
    pub secret: [u8; 32],
    pub nodes: Vec<TestNode>,
    extra_config: String,
    /// RLIMIT_NOFILE (soft and hard) the nodes are started with; `None`: inherited.
    pub nofile: Option<u64>,
}

impl Cluster {
    /// Writes configs for nodes `1..=n` (not started). `extra_config` is appended to
    /// every node's TOML (e.g. `[raft]` overrides).
    pub fn new(net: u8, n: u64, extra_config: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = [net; 32];
        integration::procs::write_secret(&dir.path().join("cluster.key"), &hex(&secret))
            .expect("key file");
        let mut cluster = Cluster {
            dir,
            net,
            secret,
            nodes: Vec::new(),
            extra_config: extra_config.to_string(),
            nofile: None,
        };
        for id in 1..=n {
            cluster.add_node(id);
        }
        cluster
    }

    /// Writes the config of one more node (not started).
    pub fn add_node(&mut self, id: u64) -> &TestNode {
        let ip = format!("127.{}.0.{}", self.net, id);
        let raft: SocketAddr = format!("{ip}:7400").parse().expect("addr");
        let admin: SocketAddr = format!("{ip}:7480").parse().expect("addr");
        let data_dir = self.dir.path().join(format!("data{id}"));
        let config = self.dir.path().join(format!("node{id}.toml"));
        let text = format!(
            "node_id = {id}\nlisten = \"{raft}\"\nadmin_listen = \"{admin}\"\ndata_dir = \"{}\"\n\
             cluster_secret_file = \"{}\"\n{}",
            data_dir.display(),
            self.dir.path().join("cluster.key").display(),
            self.extra_config
        );
        std::fs::write(&config, text).expect("config file");
        self.nodes.push(TestNode {
            id,
            raft,
            admin,
            data_dir,
            config,
            log: self.dir.path().join(format!("node{id}.log")),
            proc: None,
        });
        self.nodes.last().expect("just pushed")
    }

    fn node_mut(&mut self, id: u64) -> &mut TestNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("unknown node id")
    }

    /// The node with this id.
    pub fn node(&self, id: u64) -> &TestNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("unknown node id")
    }

    /// Starts (or restarts) a node's process and waits for its admin API.
    pub fn start(&mut self, id: u64) {
        let bin = bin_dir().join("cma");
        let nofile = self.nofile;
        let node = self.node_mut(id);
        assert!(node.proc.is_none(), "node {id} already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(&node.config)
            .env("RUST_LOG", "info,openraft=info")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is a plain system call, safe between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = cmd.spawn().expect("spawn cma");
        node.proc = Some(Proc { child });
        let admin = node.admin;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.status(id).is_none() {
            assert!(
                Instant::now() < deadline,
                "node {id} admin API {admin} never came up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id of a running node.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).proc.as_ref().map(|p| p.child.id())
    }

    /// True while the node's process has not exited.
    pub fn alive(&mut self, id: u64) -> bool {
        match self.node_mut(id).proc.as_mut() {
            Some(p) => matches!(p.child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs a node's process (by PID) and waits for it to be gone.
    pub fn kill(&mut self, id: u64) {
        let node = self.node_mut(id);
        let proc = node.proc.take().expect("node not running");
        drop(proc);
    }

    /// Deletes a node's data directory (node must be stopped).
    pub fn wipe(&mut self, id: u64) {
        let node = self.node_mut(id);
        assert!(node.proc.is_none(), "wipe a running node");
        std::fs::remove_dir_all(&node.data_dir).expect("removing data dir");
    }

    /// Runs `cmactl` against one node; returns stdout on success.
    pub fn cmactl(&self, id: u64, args: &[&str]) -> Result<String, String> {
        let admin = self.node(id).admin;
        let out = Command::new(bin_dir().join("cmactl"))
            .arg("--api")
            .arg(format!("http://{admin}"))
            .arg("--timeout")
            .arg("60")
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A node's `cluster status --json`, if it answers.
    pub fn status(&self, id: u64) -> Option<serde_json::Value> {
        let out = self.cmactl(id, &["--json", "cluster", "status"]).ok()?;
        serde_json::from_str(&out).ok()
    }

    /// Retries a `cmactl` command on `id` until it succeeds (bounded).
    pub fn cmactl_retry(&self, id: u64, args: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            match self.cmactl(id, args) {
                Ok(_) => return,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cmactl {args:?} kept failing: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        }
    }

    /// Starts nodes 1..=n, bootstraps on node 1 and adds the others as voters.
    pub fn form(&mut self) {
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        for &id in &ids {
            self.start(id);
        }
        self.cmactl_retry(1, &["cluster", "init"], Duration::from_secs(30));
        self.wait_leader(Duration::from_secs(30));
        for &id in &ids[1..] {
            self.join(id);
        }
    }

    /// Adds a running node as learner, then promotes it.
    pub fn join(&self, id: u64) {
        let node = self.node(id);
        let (raft, admin, id_s) = (
            node.raft.to_string(),
            node.admin.to_string(),
            id.to_string(),
        );
        let leader = self.wait_leader(Duration::from_secs(30));
        self.cmactl_retry(
            leader,
            &[
                "cluster",
                "add-learner",
                "--id",
                &id_s,
                "--raft",
                &raft,
                "--admin",
                &admin,
            ],
            Duration::from_secs(60),
        );
        let leader = self.wait_leader(Duration::from_secs(30));
        self.cmactl_retry(
            leader,
            &["cluster", "promote", "--id", &id_s],
            Duration::from_secs(60),
        );
    }

    /// Ids of nodes whose process runs.
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.proc.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// Waits until a running node reports itself leader; returns its id.
    pub fn wait_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            for id in self.running() {
                if let Some(s) = self.status(id) {
                    if s["state"] == "Leader" {
                        return id;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader within {within:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Raft addresses of the given nodes.
    pub fn raft_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.raft).collect()
    }

    /// A queue client on every configured node, with generous timeouts.
    pub fn client(&self) -> QueueClient {
        let mut config = ClientConfig::new(self.raft_addrs(), self.secret);
        config.request_timeout = Duration::from_secs(30);
        config.attempt_timeout = Duration::from_secs(5);
        QueueClient::new(config).expect("client")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Kill first, then show the logs if the test failed.
        for node in &mut self.nodes {
            node.proc.take();
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                if let Ok(text) = std::fs::read_to_string(&node.log) {
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    eprintln!("---- node {} log (last lines) ----", node.id);
                    for line in tail.iter().rev() {
                        eprintln!("{line}");
                    }
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A test packet: sender 7, `session`, report id `seq`, payload derived from `seq`.
pub fn packet(session: u64, seq: u64) -> QueuedPacket {
    QueuedPacket {
        sender: 7,
        session,
        seq,
        received_at_us: 1_700_000_000_000_000 + seq,
        source: SocketAddr::from(([127, 0, 0, 1], 9999)),
        datagram: seq.to_le_bytes().repeat(8),
    }
}

/// Reads every stored packet from offset 0 (bounded number of pages).
pub async fn read_all(client: &QueueClient) -> Vec<(u64, QueuedPacket)> {
    let mut all = Vec::new();
    let mut from = 0;
    for _ in 0..10_000 {
        let page = client.read(from, 5000).await.expect("read");
        let Some(&(last, _)) = page.last() else {
            return all;
        };
        from = last + 1;
        all.extend(page);
    }
    panic!("read_all did not finish");
}

/// Checks that every acknowledged batch is stored exactly once, contiguously and in
/// acknowledgement order, and that nothing is stored twice. `acked` lists batches of
/// seqs (session `session`) in the order their appends returned.
pub fn check_exactly_once(stored: &[(u64, QueuedPacket)], session: u64, acked: &[Vec<u64>]) {
    use std::collections::HashMap;
    let mut offset_of: HashMap<u64, u64> = HashMap::new();
    let mut previous = None;
    for (offset, p) in stored {
        if let Some(prev) = previous {
            assert!(
                *offset > prev,
                "offsets not increasing: {prev} then {offset}"
            );
        }
        previous = Some(*offset);
        if p.session != session {
            continue;
        }
        assert_eq!(p, &packet(session, p.seq), "packet content changed");
        let dup = offset_of.insert(p.seq, *offset);
        assert!(
            dup.is_none(),
            "seq {} stored twice (offsets {dup:?} and {offset})",
            p.seq
        );
    }
    let mut last_offset = None;
    for batch in acked {
        let offsets: Vec<u64> = batch
            .iter()
            .map(|seq| {
                *offset_of
                    .get(seq)
                    .unwrap_or_else(|| panic!("acknowledged seq {seq} is missing"))
            })
            .collect();
        for pair in offsets.windows(2) {
            assert_eq!(
                pair[1],
                pair[0] + 1,
                "batch {batch:?} not contiguous: {offsets:?}"
            );
        }
        if let (Some(last), Some(first)) = (last_offset, offsets.first()) {
            assert!(
                *first > last,
                "batch {batch:?} stored before an earlier acknowledged batch"
            );
        }
        last_offset = offsets.last().copied().or(last_offset);
    }
}
