//! The one way tests form and query a CMA cluster: [`CmaCluster`] holds the `cmactl`
//! calls (one `cluster init --member ...` for every voter at once, add-learner and promote
//! for a node joining later, wait for a leader) for any set of running
//! `cma` nodes, whether on loopback ([`Cluster`]) or in the lab's namespaces
//! (`labrun::Ringwatch`). Also the queue tests' helpers (test packets, reading
//! everything back, the exactly-once check).
//!
//! Every loopback test passes its own `net` byte: its nodes live on 127.<net>.0.<id>, so
//! tests running in parallel never share an address.

use crate::procs::{binary, output_of, spawn_limited, wait_until, ProcGuard};
use queue::{ClientConfig, QueueClient, QueuedPacket};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Raft timings for tests: quick failover, but tolerant of a loaded 2-core machine.
pub const TEST_RAFT: &str = "[raft]\nheartbeat_interval_ms = 250\nelection_timeout_min_ms = 1200\nelection_timeout_max_ms = 2400\n";

/// Every node's `cmactl --json cluster digest` (`digest(id)` runs it), once all of `ids`
/// have applied the same index (the cluster is idle): (node, applied index, digest).
/// Returns what it last saw after `within`.
pub fn digests_at_rest(
    ids: &[u64],
    within: Duration,
    digest: impl Fn(u64) -> Option<String>,
) -> Vec<(u64, u64, String)> {
    let mut last = Vec::new();
    wait_until(within, || {
        last = ids
            .iter()
            .filter_map(|&id| {
                let d: Value = serde_json::from_str(&digest(id)?).ok()?;
                Some((
                    id,
                    d["applied_index"].as_u64()?,
                    d["digest"].as_str()?.to_string(),
                ))
            })
            .collect();
        let settled =
            last.len() == ids.len() && last.iter().all(|(_, applied, _)| *applied == last[0].1);
        if !settled {
            std::thread::sleep(Duration::from_millis(300));
        }
        settled
    });
    last
}

/// A set of `cma` nodes that `cmactl` can reach; the provided methods form and query the
/// cluster the same way for every kind of test.
pub trait CmaCluster {
    /// Runs `cmactl ARGS` against node `id`: stdout on success, stderr on failure.
    fn cmactl(&self, id: u64, args: &[&str]) -> Result<String, String>;
    /// Ids of the nodes whose process runs.
    fn running(&self) -> Vec<u64>;
    /// The Raft and admin addresses node `id` is reached at.
    fn addresses(&self, id: u64) -> (String, String);
    /// What to print when a wait fails (log tails).
    fn diagnostics(&self) -> String {
        String::new()
    }

    /// Node `id`'s `cluster status --json`, if it answers.
    fn status(&self, id: u64) -> Option<Value> {
        let out = self.cmactl(id, &["--json", "cluster", "status"]).ok()?;
        serde_json::from_str(&out).ok()
    }

    /// `cmactl --json ARGS` on the first running node that answers.
    fn json(&self, args: &[&str]) -> Option<Value> {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        self.running().into_iter().find_map(|id| {
            self.cmactl(id, &full)
                .ok()
                .and_then(|out| serde_json::from_str(&out).ok())
        })
    }

    /// [`digests_at_rest`] of the running nodes.
    fn digests_at_rest(&self, within: Duration) -> Vec<(u64, u64, String)> {
        digests_at_rest(&self.running(), within, |id| {
            self.cmactl(id, &["--json", "cluster", "digest"]).ok()
        })
    }

    /// Every failure row, open and closed (`cmactl --json failures --all`).
    fn failures(&self) -> Vec<Value> {
        self.json(&["failures", "--all"])
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Retries `cmactl ARGS` on `id` until it succeeds; panics after `within`.
    fn cmactl_retry(&self, id: u64, args: &[&str], within: Duration) {
        let mut last = String::new();
        let ok = wait_until(within, || match self.cmactl(id, args) {
            Ok(_) => true,
            Err(e) => {
                last = e;
                std::thread::sleep(Duration::from_millis(300));
                false
            }
        });
        assert!(
            ok,
            "cmactl {args:?} kept failing: {last}\n{}",
            self.diagnostics()
        );
    }

    /// Waits until a running node reports itself leader; returns its id.
    fn wait_leader(&self, within: Duration) -> u64 {
        let mut leader = None;
        let found = wait_until(within, || {
            leader = self
                .running()
                .into_iter()
                .find(|id| self.status(*id).is_some_and(|s| s["state"] == "Leader"));
            if leader.is_none() {
                std::thread::sleep(Duration::from_millis(200));
            }
            leader.is_some()
        });
        assert!(found, "no leader within {within:?}\n{}", self.diagnostics());
        leader.unwrap_or_default()
    }

    /// Adds running node `id` as a learner, then promotes it to voter.
    fn join(&self, id: u64) {
        let (raft, admin) = self.addresses(id);
        let id_s = id.to_string();
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

    /// Bootstraps the cluster on `first` (running) with `first` and `others` (running) as
    /// its voters at once: one `cmactl cluster init --member ID=RAFT,ADMIN ...` call, as
    /// every script does, which waits until `first` knows a leader and every member votes.
    fn form_cluster(&self, first: u64, others: &[u64]) {
        let members: Vec<String> = std::iter::once(first)
            .chain(others.iter().copied())
            .map(|id| {
                let (raft, admin) = self.addresses(id);
                format!("{id}={raft},{admin}")
            })
            .collect();
        let mut args = vec!["cluster", "init", "--wait", "60"];
        for member in &members {
            args.extend(["--member", member.as_str()]);
        }
        self.cmactl_retry(first, &args, Duration::from_secs(60));
        self.wait_leader(Duration::from_secs(30));
    }
}

/// A node of the test cluster (its process may be stopped).
pub struct TestNode {
    pub id: u64,
    pub raft: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    /// Its `cma` config file.
    pub config: PathBuf,
    log: PathBuf,
    proc: Option<ProcGuard>,
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
        crate::procs::write_secret(&dir.path().join("cluster.key"), &hex(&secret))
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
        let bin = binary("cma");
        let nofile = self.nofile;
        let node = self.node_mut(id);
        assert!(node.proc.is_none(), "node {id} already running");
        let config = node.config.display().to_string();
        let proc = spawn_limited(
            &bin,
            &["--config", &config],
            &[("RUST_LOG", "info,openraft=info")],
            &node.log,
            nofile,
        )
        .expect("spawn cma");
        node.proc = Some(proc);
        let admin = node.admin;
        assert!(
            wait_until(Duration::from_secs(30), || self.status(id).is_some()),
            "node {id} admin API {admin} never came up"
        );
    }

    /// True while the node's process has not exited.
    pub fn alive(&mut self, id: u64) -> bool {
        match self.node_mut(id).proc.as_mut() {
            Some(p) => p.wait_timeout(Duration::ZERO).is_none(),
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

    /// The pid of node `id`'s process, if it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).proc.as_ref().map(ProcGuard::pid)
    }

    /// Runs `cmactl` against one node with extra environment; its exit code and stdout.
    pub fn cmactl_exit(&self, id: u64, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
        let admin = self.node(id).admin;
        let mut cmd = Command::new(binary("cmactl"));
        cmd.arg("--api")
            .arg(format!("http://{admin}"))
            .args(["--timeout", "60"])
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("running cmactl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Starts every node, bootstraps on the first and adds the others as voters.
    pub fn form(&mut self) {
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        for &id in &ids {
            self.start(id);
        }
        self.form_cluster(ids[0], &ids[1..]);
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

impl CmaCluster for Cluster {
    fn cmactl(&self, id: u64, args: &[&str]) -> Result<String, String> {
        let admin = self.node(id).admin;
        output_of(
            Command::new(binary("cmactl"))
                .arg("--api")
                .arg(format!("http://{admin}"))
                .args(["--timeout", "60"])
                .args(args),
        )
    }

    fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.proc.is_some())
            .map(|n| n.id)
            .collect()
    }

    fn addresses(&self, id: u64) -> (String, String) {
        let node = self.node(id);
        (node.raft.to_string(), node.admin.to_string())
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

/// Lower-case hex of `bytes` (cluster secret files).
pub(crate) fn hex(bytes: &[u8]) -> String {
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
        report: seq.to_le_bytes().repeat(8),
    }
}

/// Reads every stored packet from offset 0 (bounded number of pages). A read refused for
/// a reason a client retries (no leader yet, the leader busy or still applying its log) is
/// retried for up to 60 s, as a consumer would.
pub async fn read_all(client: &QueueClient) -> Vec<(u64, QueuedPacket)> {
    let mut all = Vec::new();
    let mut from = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for _ in 0..10_000 {
        let page = loop {
            match client.read(from, 5000).await {
                Ok(page) => break page,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("read from {from}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("read from {from}: {e}"),
            }
        };
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
