//! The fault-injection suite (docs/reliability.md): a cluster of 3 or 5 real `cma` nodes,
//! each in a network namespace of its own behind one bridge (198.18.0.0/15 only), a
//! workload of concurrent clients in a namespace of theirs, and a nemesis that injects
//! faults at random from a seed: partitions (nftables in the nodes' namespaces), SIGKILL
//! of one node, a majority or all of them, and SIGSTOP pauses longer than the election
//! timeout. The history the clients record is then judged by [`crate::checker`].
//!
//! Everything is started and removed by the run itself: the namespaces (dropping the
//! [`Lab`]), the processes (by PID, [`ProcGuard`]).

use crate::checker::{self, AppendOp, CommitOp, History, PacketId, ReadOp};
use crate::cluster::{hex, CmaCluster};
use crate::lab::Lab;
use crate::lossy::{LossCounts, LossyDisk};
use crate::procs::{binary, output_of, wait_until, ProcGuard};
use nix::sys::signal::Signal;
use queue::{ClientConfig, QueueClient, QueuedPacket};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Raft timings of the suite's nodes: short, so that many faults fit in a run.
const RAFT: &str = "[raft]\nheartbeat_interval_ms = 100\nelection_timeout_min_ms = 600\n\
                    election_timeout_max_ms = 1200\npeer_retry_backoff_ms = 100\n\
                    connect_timeout_ms = 500\nlogs_to_keep_after_snapshot = 500\n";
/// The longest election timeout above: pauses last longer than this.
const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(1200);
const SECRET: [u8; 32] = [0x6e; 32];

/// The kinds of fault the nemesis injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// The leader cut off from every other node.
    IsolateLeader,
    /// A random minority cut off from the majority.
    MajorityMinority,
    /// Two halves that cannot talk, and one node that talks to both.
    Bridge,
    /// Everything the leader sends to the others is lost; it still hears them.
    OneWayFromLeader,
    /// SIGKILL of one node, restarted after the hold.
    KillOne,
    /// SIGKILL of a majority at once, restarted after the hold.
    KillMajority,
    /// SIGKILL of every node at once (a crash of the whole cluster), restarted.
    KillAll,
    /// SIGSTOP of the leader for longer than the election timeout, then SIGCONT: it wakes
    /// up believing it leads.
    PauseLeader,
    /// A follower removed from the membership, added back as a learner and promoted,
    /// while a random minority is cut off.
    Membership,
    /// A power cut of the whole cluster: every node SIGKILLed and every write it had not
    /// fsynced lost (its data directory is a lossyfs mount), then restarted.
    PowerCut,
    /// One node's disk slow: every fsync of its data directory delayed 0.3-2 s.
    SlowDisk,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 11] = [
        FaultKind::IsolateLeader,
        FaultKind::MajorityMinority,
        FaultKind::Bridge,
        FaultKind::OneWayFromLeader,
        FaultKind::KillOne,
        FaultKind::KillMajority,
        FaultKind::KillAll,
        FaultKind::PauseLeader,
        FaultKind::Membership,
        FaultKind::PowerCut,
        FaultKind::SlowDisk,
    ];

    /// Name in reports and in `RINGWATCH_NEMESIS_FAULTS`.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::MajorityMinority => "majority-minority",
            FaultKind::Bridge => "bridge",
            FaultKind::OneWayFromLeader => "one-way",
            FaultKind::KillOne => "kill-one",
            FaultKind::KillMajority => "kill-majority",
            FaultKind::KillAll => "kill-all",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::Membership => "membership",
            FaultKind::PowerCut => "power-cut",
            FaultKind::SlowDisk => "slow-disk",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What a run does.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Lab tag (namespace prefix `rwl<tag>-`).
    pub tag: String,
    /// CMA nodes (3 or 5).
    pub nodes: u64,
    /// How long faults are injected.
    pub duration: Duration,
    /// Seed of every random choice of the nemesis.
    pub seed: u64,
    /// The kinds injected (in turn, each fault's kind drawn from these).
    pub kinds: Vec<FaultKind>,
    /// Concurrent appending clients.
    pub appenders: u64,
    /// Nanoprobes (real processes in the clients' namespace, reporting through a real
    /// packet-reader to the workers); the nemesis kills and restarts them as it goes.
    pub hosts: u64,
    /// The nodes' `raft.snapshot_after_logs`: 2000 puts snapshots and purges under the
    /// faults; a bound the run never reaches keeps every node's whole log, so the worker
    /// replay at the end covers the whole run, every leader change included (it starts
    /// from a node's last snapshot).
    pub snapshot_after_logs: u64,
}

/// What a run found.
#[derive(Debug)]
pub struct Report {
    pub faults: BTreeMap<FaultKind, usize>,
    /// What the power cuts threw away, summed over the nodes' lossyfs mounts.
    pub lost_at_cuts: LossCounts,
    pub counts: checker::OpCounts,
    /// Each node's state digest at rest: (node, applied index, digest).
    pub digests: Vec<(u64, u64, String)>,
    pub anomalies: Vec<checker::Anomaly>,
    pub elapsed: Duration,
    /// Nanoprobes killed and restarted by the nemesis.
    pub host_churn: (usize, usize),
    /// Per node: what replaying its stored log into a fresh worker checked.
    pub replays: Vec<String>,
}

impl Report {
    /// The report as printed by the suite and `bench/nemesis.sh`.
    pub fn render(&self, config: &RunConfig) -> String {
        let mut s = format!(
            "nemesis: {} nodes, seed {}, {:.0} s\n",
            config.nodes,
            config.seed,
            self.elapsed.as_secs_f64()
        );
        s.push_str("faults injected:\n");
        for (kind, n) in &self.faults {
            s.push_str(&format!("  {:<18} {n}\n", kind.name()));
        }
        if self.faults.contains_key(&FaultKind::PowerCut) {
            s.push_str(&format!(
                "power cuts threw away {} unsynced operations ({} bytes) in all\n",
                self.lost_at_cuts.ops, self.lost_at_cuts.bytes
            ));
        }
        let c = &self.counts;
        s.push_str(&format!(
            "operations: appends {} ok / {} failed ({} packets acknowledged), reads {} ok / {} \
             failed, offset commits {} ok / {} failed\n",
            c.appends_ok,
            c.appends_failed,
            c.packets_acked,
            c.reads_ok,
            c.reads_failed,
            c.commits_ok,
            c.commits_failed
        ));
        s.push_str(&format!(
            "nanoprobes: {} killed, {} restarted by the nemesis\n",
            self.host_churn.0, self.host_churn.1
        ));
        for line in &self.replays {
            s.push_str(&format!("{line}\n"));
        }
        if let Some((_, applied, digest)) = self.digests.first() {
            let same = self.digests.iter().filter(|(_, _, d)| d == digest).count();
            s.push_str(&format!(
                "replica digests at applied index {applied}: {same} of {} nodes equal ({})\n",
                self.digests.len(),
                &digest[..digest.len().min(16)]
            ));
        }
        s.push_str("anomalies:\n");
        for (kind, n) in checker::by_kind(&self.anomalies) {
            s.push_str(&format!("  {:<20} {n}\n", kind.name()));
        }
        for a in self.anomalies.iter().take(20) {
            s.push_str(&format!("  ! {}: {}\n", a.kind.name(), a.detail));
        }
        s
    }
}

/// The nodes, their namespaces and processes. Fields drop in order: the `cma` processes,
/// then the lossyfs mounts under them, then the scratch directory and the namespaces.
struct Nodes {
    /// Nanoprobe of host `h` (None while the nemesis holds it killed).
    probes: BTreeMap<u64, Option<ProcGuard>>,
    /// The packet-reader the nanoprobes report to.
    reader: Option<ProcGuard>,
    procs: BTreeMap<u64, Option<ProcGuard>>,
    /// Node id -> the lossyfs mount of its data directory (when power cuts or slow disks
    /// are injected).
    mounts: BTreeMap<u64, LossyDisk>,
    dir: tempfile::TempDir,
    lab: Lab,
    count: u64,
    client_ns: String,
    lost: LossCounts,
}

/// The clients' address (appenders, readers, the packet-reader and the nanoprobes).
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

fn node_addr(id: u64) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + id as u8)
}

impl Nodes {
    /// Namespaces: `sw` (a bridge), `n<i>` per node (198.18.0.1<i>), `cl` for the clients
    /// (198.18.0.100), each plugged into the bridge.
    fn build(tag: &str, count: u64, snapshot_after_logs: u64) -> Result<Nodes, String> {
        let mut lab = Lab::new(tag);
        let sw = lab.add_ns("sw")?;
        lab.ip_in(&sw, &["link", "add", "br0", "type", "bridge"])?;
        lab.ip_in(&sw, &["link", "set", "br0", "up"])?;
        let plug = |lab: &mut Lab, short: &str, addr: Ipv4Addr| -> Result<String, String> {
            let ns = lab.add_ns(short)?;
            let port = format!("p{short}");
            lab.link(&ns, "eth0", &sw, &port)?;
            lab.ip_in(&sw, &["link", "set", &port, "master", "br0"])?;
            lab.ip_in(&ns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            Ok(ns)
        };
        for id in 1..=count {
            plug(&mut lab, &format!("n{id}"), node_addr(id))?;
        }
        let client_ns = plug(&mut lab, "cl", CLIENT)?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let secret = dir.path().join("cluster.key");
        crate::procs::write_secret(&secret, &hex(&SECRET)).map_err(|e| e.to_string())?;
        let keys = dir.path().join("keys.toml");
        proto::KeyRing::write_new_key_file(&keys, proto::KeyId(1)).map_err(|e| e.to_string())?;
        for id in 1..=count {
            let text = format!(
                "node_id = {id}\nlisten = \"{addr}:7400\"\nadmin_listen = \"127.0.0.1:7480\"\n\
                 data_dir = \"{data}\"\ncluster_secret_file = \"{secret}\"\n\n{RAFT}\
                 snapshot_after_logs = {snapshot_after_logs}\n\n\
                 [worker]\nkey_file = \"{keys}\"\ntick_ms = 100\nprobe_timeout_ms = 1000\n\n\
                 [worker.timings]\ninterval_ms = 500\nwarntime_ms = 1000\ndeadtime_ms = 1500\n",
                addr = node_addr(id),
                data = dir.path().join(format!("data{id}")).display(),
                secret = secret.display(),
                keys = keys.display(),
            );
            std::fs::write(dir.path().join(format!("cma{id}.toml")), text)
                .map_err(|e| e.to_string())?;
        }
        Ok(Nodes {
            probes: BTreeMap::new(),
            reader: None,
            procs: BTreeMap::new(),
            mounts: BTreeMap::new(),
            dir,
            lab,
            count,
            client_ns,
            lost: LossCounts::default(),
        })
    }

    /// Mounts node `id`'s data directory as lossyfs.
    fn mount(&mut self, id: u64) -> Result<(), String> {
        let at = |name: String| self.dir.path().join(name);
        let disk = LossyDisk::mount(
            &at(format!("backing{id}")),
            &at(format!("data{id}")),
            &at(format!("ctl{id}")),
            &at(format!("lossyfs{id}.log")),
        )?;
        self.mounts.insert(id, disk);
        Ok(())
    }

    /// Cuts the power of node `id`'s disk (its `cma` must be dead already) and mounts it
    /// again.
    fn power_cut_disk(&mut self, id: u64) -> Result<(), String> {
        let disk = self
            .mounts
            .get_mut(&id)
            .ok_or_else(|| format!("node {id} has no lossyfs disk"))?;
        let lost = disk.power_cut()?;
        self.lost.ops += lost.ops;
        self.lost.bytes += lost.bytes;
        Ok(())
    }

    /// Sets node `id`'s fsync delay (0: none).
    fn slow_disk(&self, id: u64, delay_ms: u64) -> Result<(), String> {
        self.mounts
            .get(&id)
            .ok_or_else(|| format!("node {id} has no lossyfs disk"))?
            .set_sync_delay(delay_ms)
    }

    fn ns(&self, id: u64) -> String {
        self.lab.ns(&format!("n{id}"))
    }

    fn ids(&self) -> Vec<u64> {
        (1..=self.count).collect()
    }

    /// Starts node `id` (not waiting for it).
    fn start(&mut self, id: u64) {
        let config = self.dir.path().join(format!("cma{id}.toml"));
        let log = self.dir.path().join(format!("cma{id}.log"));
        let proc = self
            .lab
            .spawn(
                &self.ns(id),
                &binary("cma"),
                &["--config", &config.display().to_string()],
                &[("RUST_LOG", "info,openraft=warn")],
                &log,
            )
            .unwrap_or_else(|e| panic!("spawn cma {id}: {e}"));
        self.procs.insert(id, Some(proc));
    }

    /// Starts the packet-reader in the clients' namespace (198.18.0.100:7300), in front of
    /// every node.
    fn start_reader(&mut self) {
        let nodes: Vec<String> = self
            .ids()
            .iter()
            .map(|id| format!("\"{}:7400\"", node_addr(*id)))
            .collect();
        let config = self.dir.path().join("reader.toml");
        let text = format!(
            "host_id = 900001\nlisten = \"{CLIENT}:7300\"\nkey_file = \"{}\"\n\
             cma_nodes = [{}]\ncluster_secret_file = \"{}\"\n\
             metrics_listen = \"127.0.0.1:7381\"\n\n[batch]\nmax_delay_us = 2000\n\
             give_up_ms = 20000\nrequest_timeout_ms = 4000\n",
            self.dir.path().join("keys.toml").display(),
            nodes.join(", "),
            self.dir.path().join("cluster.key").display(),
        );
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("reader config: {e}"));
        let proc = self
            .lab
            .spawn(
                &self.client_ns,
                &binary("packet-reader"),
                &["--config", &config.display().to_string()],
                &[("RUST_LOG", "info")],
                &self.dir.path().join("reader.log"),
            )
            .unwrap_or_else(|e| panic!("spawn packet-reader: {e}"));
        self.reader = Some(proc);
    }

    /// Starts nanoprobe `host` in the clients' namespace (198.18.0.100:7500 + host).
    fn start_probe(&mut self, host: u64) {
        let bind = format!("{CLIENT}:{}", 7500 + host);
        let keys = self.dir.path().join("keys.toml").display().to_string();
        let proc = self
            .lab
            .spawn(
                &self.client_ns,
                &binary("nanoprobe"),
                &[
                    "--host-id",
                    &host.to_string(),
                    "--bind",
                    &bind,
                    "--packet-reader",
                    &format!("{CLIENT}:7300"),
                    "--key-file",
                    &keys,
                ],
                &[("RUST_LOG", "info")],
                &self.dir.path().join(format!("nanoprobe{host}.log")),
            )
            .unwrap_or_else(|e| panic!("spawn nanoprobe {host}: {e}"));
        self.probes.insert(host, Some(proc));
    }

    /// Kills nanoprobe `host` if it runs, or starts it again; true if it was killed.
    fn toggle_probe(&mut self, host: u64) -> bool {
        match self.probes.get_mut(&host).and_then(Option::take) {
            Some(mut p) => {
                p.kill();
                true
            }
            None => {
                self.start_probe(host);
                false
            }
        }
    }

    /// Stops every node and replays its stored log up to `upto` (an index every node
    /// applied with the digest `digest`) into a fresh worker: a summary line per node,
    /// and the anomalies it found.
    fn replay_all(&mut self, upto: u64, digest: &str) -> (Vec<String>, Vec<checker::Anomaly>) {
        for id in self.ids() {
            self.kill(id);
        }
        let mut lines = Vec::new();
        let mut anomalies = Vec::new();
        for id in self.ids() {
            let config = self.dir.path().join(format!("cma{id}.toml"));
            let anomaly = |detail: String| checker::Anomaly {
                kind: checker::AnomalyKind::WorkerReplay,
                detail,
            };
            match crate::replay::replay_node(&config, upto) {
                Ok(r) => {
                    lines.push(r.summary(id));
                    anomalies.extend(r.problems(id, upto, digest).into_iter().map(anomaly));
                }
                Err(e) => anomalies.push(anomaly(format!("node {id}: {e}"))),
            }
        }
        (lines, anomalies)
    }

    fn kill(&mut self, id: u64) {
        if let Some(mut p) = self.procs.get_mut(&id).and_then(Option::take) {
            p.kill();
        }
    }

    fn signal(&self, id: u64, signal: Signal) {
        if let Some(Some(p)) = self.procs.get(&id) {
            let _ = p.signal(signal);
        }
    }

    /// Cuts every pair in `cut` (both directions) and the one-way pairs `(from, to)`
    /// (packets from `from` to `to` lost), replacing any earlier partition.
    fn partition(&self, cut: &[(u64, u64)], one_way: &[(u64, u64)]) -> Result<(), String> {
        self.heal();
        for id in self.ids() {
            let mut drop_in = BTreeSet::new();
            let mut drop_out = BTreeSet::new();
            for &(a, b) in cut {
                if a == id {
                    drop_in.insert(b);
                    drop_out.insert(b);
                }
                if b == id {
                    drop_in.insert(a);
                    drop_out.insert(a);
                }
            }
            for &(from, to) in one_way {
                if from == id {
                    drop_out.insert(to);
                }
                if to == id {
                    drop_in.insert(from);
                }
            }
            if drop_in.is_empty() && drop_out.is_empty() {
                continue;
            }
            let set = |ids: &BTreeSet<u64>| {
                ids.iter()
                    .map(|i| node_addr(*i).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut rules = String::from("table inet nemesis {\n");
            rules.push_str("  chain input { type filter hook input priority 0; policy accept;\n");
            if !drop_in.is_empty() {
                rules.push_str(&format!("    ip saddr {{ {} }} drop\n", set(&drop_in)));
            }
            rules.push_str(
                "  }\n  chain output { type filter hook output priority 0; policy accept;\n",
            );
            if !drop_out.is_empty() {
                rules.push_str(&format!("    ip daddr {{ {} }} drop\n", set(&drop_out)));
            }
            rules.push_str("  }\n}\n");
            let file = self.dir.path().join(format!("nft-{id}.rules"));
            std::fs::write(&file, rules).map_err(|e| e.to_string())?;
            let out = self
                .lab
                .exec(&self.ns(id), "nft", &["-f", &file.display().to_string()])?;
            if !out.status.success() {
                return Err(format!(
                    "nft in node {id}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(())
    }

    /// Removes every partition.
    fn heal(&self) {
        for id in self.ids() {
            let _ = self
                .lab
                .exec(&self.ns(id), "nft", &["delete", "table", "inet", "nemesis"]);
        }
    }

    /// One membership change under a partition, through the leader of the moment on the
    /// majority side `majority` (waited for up to 10 s: the partition just made may have
    /// cut the old leader off, which believes it leads until its lease runs out). A node of
    /// `majority` missing from the voters (removed by an earlier change) is added back as
    /// a learner and promoted; otherwise a voter of the cut-off `minority` is removed, as
    /// an operator removes a dead node (removing a node of the majority side could not
    /// commit: the new configuration would need the cut-off nodes for its quorum). Each
    /// step may fail under the faults of the moment: how far it got, of how many steps.
    fn cycle_membership(&self, majority: &[u64], minority: &[u64]) -> (usize, usize) {
        let mut leader = None;
        wait_until(Duration::from_secs(10), || {
            leader = self.leader_among(majority);
            if leader.is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            leader.is_some()
        });
        let Some(leader) = leader else {
            let states: Vec<String> = majority
                .iter()
                .map(|id| {
                    let state = self
                        .cmactl_timeout(*id, &["--json", "cluster", "status"], "2")
                        .ok()
                        .and_then(|out| serde_json::from_str::<serde_json::Value>(&out).ok())
                        .map_or("no answer".to_string(), |s| {
                            format!("{} term {}", s["state"], s["term"])
                        });
                    format!("{id}: {state}")
                })
                .collect();
            eprintln!("nemesis: membership: no leader on the majority side ({states:?})");
            return (0, 1);
        };
        let Some(voters) = self.voters(leader) else {
            return (0, 1);
        };
        let steps = match majority.iter().find(|id| !voters.contains(id)) {
            Some(&missing) => rejoin_steps(missing).to_vec(),
            None => match minority.iter().find(|id| voters.contains(id)) {
                Some(id) => vec![vec![
                    "cluster".to_string(),
                    "remove".into(),
                    "--id".into(),
                    id.to_string(),
                ]],
                None => return (0, 0),
            },
        };
        for (done, args) in steps.iter().enumerate() {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if let Err(e) = self.cmactl_timeout(leader, &args, "5") {
                eprintln!("nemesis: membership step {args:?} on {leader}: {e}");
                return (done, steps.len());
            }
        }
        (steps.len(), steps.len())
    }

    fn voters(&self, leader: u64) -> Option<BTreeSet<u64>> {
        let out = self
            .cmactl_timeout(leader, &["--json", "cluster", "status"], "5")
            .ok()?;
        let status: serde_json::Value = serde_json::from_str(&out).ok()?;
        Some(
            status["voters"]
                .as_array()?
                .iter()
                .filter_map(serde_json::Value::as_u64)
                .collect(),
        )
    }

    /// Makes every node a voter again (after membership faults), within `within`.
    fn restore_membership(&self, within: Duration) -> bool {
        let all: BTreeSet<u64> = self.ids().into_iter().collect();
        wait_until(within, || {
            let Some(leader) = self.leader() else {
                std::thread::sleep(Duration::from_millis(200));
                return false;
            };
            match self.voters(leader) {
                Some(voters) if voters == all => true,
                Some(voters) => {
                    for id in all.difference(&voters) {
                        for args in rejoin_steps(*id) {
                            let args: Vec<&str> = args.iter().map(String::as_str).collect();
                            let _ = self.cmactl_timeout(leader, &args, "10");
                        }
                    }
                    false
                }
                None => false,
            }
        })
    }

    /// Every node's state digest, once all have applied the same index.
    fn digests_at_rest(&self, within: Duration) -> Vec<(u64, u64, String)> {
        crate::cluster::digests_at_rest(&self.ids(), within, |id| {
            self.cmactl_timeout(id, &["--json", "cluster", "digest"], "10")
                .ok()
        })
    }

    /// The node that says it leads, if one answers within a short timeout.
    fn leader(&self) -> Option<u64> {
        self.leader_among(&self.running())
    }

    /// The first of `ids` that says it leads, if one answers within a short timeout.
    fn leader_among(&self, ids: &[u64]) -> Option<u64> {
        ids.iter().copied().find(|id| {
            self.cmactl_timeout(*id, &["--json", "cluster", "status"], "2")
                .ok()
                .and_then(|out| serde_json::from_str::<serde_json::Value>(&out).ok())
                .is_some_and(|s| s["state"] == "Leader")
        })
    }

    fn cmactl_timeout(&self, id: u64, args: &[&str], timeout: &str) -> Result<String, String> {
        let bin = binary("cmactl").display().to_string();
        let ns = self.ns(id);
        let mut full = vec!["netns", "exec", &ns, &bin, "--api", "http://127.0.0.1:7480"];
        full.extend_from_slice(&["--timeout", timeout]);
        full.extend_from_slice(args);
        output_of(Command::new("ip").args(&full))
    }

    fn logs_tail(&self) -> String {
        let mut text = String::new();
        for id in self.ids() {
            let path = self.dir.path().join(format!("cma{id}.log"));
            let body = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = body.lines().rev().take(12).collect();
            text.push_str(&format!("---- cma{id} ----\n"));
            for l in lines.iter().rev() {
                text.push_str(l);
                text.push('\n');
            }
        }
        text
    }
}

impl Drop for Nodes {
    /// The `cma` processes die first (SIGKILL), then every lossyfs mount is unmounted
    /// cleanly (SIGTERM; a lazy unmount if it does not go), so that the scratch directory
    /// can be removed and no mount is left behind.
    fn drop(&mut self) {
        for p in self.procs.values_mut() {
            if let Some(mut p) = p.take() {
                p.kill();
            }
        }
        // Then the mounts, now that nothing uses them.
        self.mounts.clear();
    }
}

impl CmaCluster for Nodes {
    fn cmactl(&self, id: u64, args: &[&str]) -> Result<String, String> {
        self.cmactl_timeout(id, args, "20")
    }

    fn running(&self) -> Vec<u64> {
        self.procs
            .iter()
            .filter(|(_, p)| p.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    fn addresses(&self, id: u64) -> (String, String) {
        (format!("{}:7400", node_addr(id)), "127.0.0.1:7480".into())
    }

    fn diagnostics(&self) -> String {
        self.logs_tail()
    }
}

/// The `cmactl` arguments that make node `id` a voter again: add it as a learner, promote.
fn rejoin_steps(id: u64) -> [Vec<String>; 2] {
    let id_s = id.to_string();
    [
        vec![
            "cluster".into(),
            "add-learner".into(),
            "--id".into(),
            id_s.clone(),
            "--raft".into(),
            format!("{}:7400", node_addr(id)),
            "--admin".into(),
            "127.0.0.1:7480".into(),
        ],
        vec!["cluster".into(), "promote".into(), "--id".into(), id_s],
    ]
}

/// The history being recorded, shared by the client threads.
#[derive(Clone)]
struct Recorder {
    start: Instant,
    history: Arc<Mutex<History>>,
}

impl Recorder {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn with(&self, f: impl FnOnce(&mut History)) {
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut h);
    }
}

fn client(count: u64) -> QueueClient {
    let nodes: Vec<SocketAddr> = (1..=count)
        .map(|id| SocketAddr::from((node_addr(id), 7400)))
        .collect();
    let mut config = ClientConfig::new(nodes, SECRET);
    config.request_timeout = Duration::from_secs(5);
    config.attempt_timeout = Duration::from_secs(2);
    config.connect_timeout = Duration::from_millis(500);
    config.retry_pause = Duration::from_millis(100);
    QueueClient::new(config).unwrap_or_else(|e| panic!("queue client: {e}"))
}

fn packet(sender: u64, seq: u64) -> QueuedPacket {
    QueuedPacket {
        sender,
        session: WORKLOAD_SESSION,
        seq,
        received_at_us: seq,
        source: SocketAddr::from(([198, 18, 0, 100], 9)),
        // Not a report: it starts with the envelope's magic and is too short to be one, so
        // the workers skip it (counted as undecodable) and work only on the nanoprobes'.
        report: [&proto::envelope::MAGIC[..], &seq.to_le_bytes().repeat(3)].concat(),
    }
}

/// The session of the workload's packets; the nanoprobes' sessions are random.
const WORKLOAD_SESSION: u64 = 1;

fn rows(packets: Vec<(u64, QueuedPacket)>) -> Vec<(u64, PacketId)> {
    packets
        .into_iter()
        .map(|(o, p)| {
            // A nanoprobe's report gets an id of its own: (sender, session, seq) folded
            // into one half the workload's ids never use (top bit set).
            let id = if p.session == WORKLOAD_SESSION {
                (p.sender, p.seq)
            } else {
                (1 << 63 | p.sender << 32 ^ p.session, p.seq)
            };
            (o, id)
        })
        .collect()
}

/// Runs `work` on a thread of its own inside namespace `ns` with a current-thread runtime.
fn client_thread<F, Fut>(ns: String, work: F) -> std::thread::JoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        crate::lab::enter_netns(&ns).unwrap_or_else(|e| panic!("{e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        runtime.block_on(work());
    })
}

/// Commits the workload consumer's offset 0 (registering it), retrying for up to 60 s.
async fn register_consumer(count: u64) {
    let client = client(count);
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.commit_offset(CONSUMER, 0).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the workload consumer never registered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The workload consumer's name in the queue.
const CONSUMER: &str = "nemesis";

/// Appender `w`: one append in flight at a time, 1 to 4 packets, fresh report ids.
async fn appender(w: u64, count: u64, rec: Recorder, stop: Arc<AtomicBool>, seed: u64) {
    let client = client(count);
    let mut rng = StdRng::seed_from_u64(seed ^ (w << 32));
    let sender = 1000 + w;
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let n = rng.random_range(1..=4u64);
        let ids: Vec<u64> = (seq..seq + n).collect();
        seq += n;
        let batch = ids.iter().map(|&s| packet(sender, s)).collect();
        let invoked = rec.now();
        let result = client.append(batch).await;
        let completed = rec.now();
        let failed = result.is_err();
        rec.with(|h| {
            h.appends.push(AppendOp {
                ids: ids.iter().map(|&s| (sender, s)).collect(),
                invoked,
                completed,
                result: result
                    .map(|r| (r.first_offset, r.stored, r.duplicates))
                    .map_err(|e| e.to_string()),
            })
        });
        if failed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The consumer: reads every offset in order and commits its offset now and then; after
/// `stop`, drains until `drained`.
async fn consumer(count: u64, rec: Recorder, stop: Arc<AtomicBool>, drained: Arc<AtomicBool>) {
    let client = client(count);
    let mut next = 0u64;
    let mut committed = 0u64;
    let mut empty_after_stop = 0;
    let deadline_after_stop = Duration::from_secs(90);
    let mut stopped_at = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            let at = *stopped_at.get_or_insert_with(Instant::now);
            if empty_after_stop >= 3 || at.elapsed() > deadline_after_stop {
                drained.store(empty_after_stop >= 3, Ordering::SeqCst);
                return;
            }
        }
        let max = 500;
        let from = next;
        let invoked = rec.now();
        let result = client.read(from, max).await;
        let completed = rec.now();
        let got = result.map(rows).map_err(|e| e.to_string());
        if let Ok(page) = &got {
            match page.last() {
                Some(&(last, _)) => next = last + 1,
                None if stop.load(Ordering::SeqCst) => empty_after_stop += 1,
                None => {}
            }
        }
        let empty = got.as_ref().map_or(true, Vec::is_empty);
        rec.with(|h| {
            h.reads.push(ReadOp {
                from,
                max,
                invoked,
                completed,
                result: got,
            })
        });
        if next >= committed + 50 || (empty && next > committed) {
            let invoked = rec.now();
            let ok = client.commit_offset(CONSUMER, next).await.is_ok();
            let completed = rec.now();
            rec.with(|h| {
                h.commits.push(CommitOp {
                    offset: next,
                    invoked,
                    completed,
                    ok,
                })
            });
            if ok {
                committed = next;
            }
        }
        if empty {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

/// The reader: reads the whole queue (from its first offset) again and again.
async fn reader(count: u64, rec: Recorder, stop: Arc<AtomicBool>) {
    let client = client(count);
    while !stop.load(Ordering::SeqCst) {
        let max = 5000;
        let invoked = rec.now();
        let result = client.read(0, max).await;
        let completed = rec.now();
        rec.with(|h| {
            h.reads.push(ReadOp {
                from: 0,
                max,
                invoked,
                completed,
                result: result.map(rows).map_err(|e| e.to_string()),
            })
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the suite once: builds the lab, forms the cluster, runs the workload under the
/// nemesis for `config.duration`, heals, drains, checks.
pub fn run(config: &RunConfig) -> Report {
    assert!(config.nodes >= 3, "the nemesis needs at least 3 nodes");
    let started = Instant::now();
    let mut nodes = Nodes::build(&config.tag, config.nodes, config.snapshot_after_logs)
        .unwrap_or_else(|e| panic!("lab: {e}"));
    let disk_faults = config
        .kinds
        .iter()
        .any(|k| matches!(k, FaultKind::PowerCut | FaultKind::SlowDisk));
    if disk_faults {
        for id in nodes.ids() {
            nodes.mount(id).unwrap_or_else(|e| panic!("lossyfs: {e}"));
        }
    }
    for id in nodes.ids() {
        nodes.start(id);
    }
    for id in nodes.ids() {
        let up = wait_until(Duration::from_secs(30), || {
            nodes
                .cmactl_timeout(id, &["cluster", "status"], "2")
                .is_ok()
        });
        assert!(up, "cma {id} never answered\n{}", nodes.logs_tail());
    }
    let others: Vec<u64> = (2..=config.nodes).collect();
    nodes.form_cluster(1, &others);
    nodes.start_reader();
    for host in 1..=config.hosts {
        nodes.start_probe(host);
    }

    // The workload's consumer registers before anything is appended: the workers consume
    // (and skip) the workload's packets too, and the queue would otherwise trim them as
    // soon as the workers have, before the workload consumer ever read them.
    let count = config.nodes;
    client_thread(nodes.client_ns.clone(), move || register_consumer(count))
        .join()
        .unwrap_or_else(|_| panic!("registering the workload consumer"));
    let rec = Recorder {
        start: Instant::now(),
        // The workers consume the queue too.
        history: Arc::new(Mutex::new(History {
            other_consumers: true,
            ..History::default()
        })),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let drained = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for w in 1..=config.appenders {
        let (rec, stop, count, seed) = (rec.clone(), stop.clone(), config.nodes, config.seed);
        threads.push(client_thread(nodes.client_ns.clone(), move || {
            appender(w, count, rec, stop, seed)
        }));
    }
    let consumer_stop = Arc::new(AtomicBool::new(false));
    let consumer_thread = {
        let (rec, stop, drained, count) = (
            rec.clone(),
            consumer_stop.clone(),
            drained.clone(),
            config.nodes,
        );
        client_thread(nodes.client_ns.clone(), move || {
            consumer(count, rec, stop, drained)
        })
    };
    {
        let (rec, stop, count) = (rec.clone(), stop.clone(), config.nodes);
        threads.push(client_thread(nodes.client_ns.clone(), move || {
            reader(count, rec, stop)
        }));
    }

    let (faults, host_churn) = nemesis(&mut nodes, config);

    // Heal: no partition, every node running and resumed, a leader.
    nodes.heal();
    for id in nodes.ids() {
        nodes.signal(id, Signal::SIGCONT);
        if !nodes.running().contains(&id) {
            nodes.start(id);
        }
    }
    let leader = wait_until(Duration::from_secs(60), || nodes.leader().is_some());
    assert!(leader, "no leader after healing\n{}", nodes.logs_tail());
    assert!(
        nodes.restore_membership(Duration::from_secs(60)),
        "membership not restored after healing\n{}",
        nodes.logs_tail()
    );
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join()
            .unwrap_or_else(|_| panic!("a client thread panicked"));
    }
    consumer_stop.store(true, Ordering::SeqCst);
    consumer_thread
        .join()
        .unwrap_or_else(|_| panic!("the consumer panicked"));
    assert!(
        drained.load(Ordering::SeqCst),
        "the consumer could not read to the end after healing\n{}",
        nodes.logs_tail()
    );
    let digests = nodes.digests_at_rest(Duration::from_secs(60));
    assert!(
        digests.len() == nodes.ids().len(),
        "not every node gave its state digest at one applied index: {digests:?}\n{}",
        nodes.logs_tail()
    );
    // The worker is a pure function of the log: each node's stored log, replayed.
    let (replays, replay_anomalies) = match digests.first() {
        Some((_, upto, digest)) => {
            let (upto, digest) = (*upto, digest.clone());
            nodes.replay_all(upto, &digest)
        }
        None => (Vec::new(), Vec::new()),
    };
    rec.with(|h| h.digests = digests);
    let history = rec
        .history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut anomalies = checker::check(&history);
    anomalies.extend(replay_anomalies);
    if !anomalies.is_empty() {
        let keep = std::env::temp_dir().join(format!("ringwatch-nemesis-{}", config.seed));
        let _ = std::fs::create_dir_all(&keep);
        for id in nodes.ids() {
            let name = format!("cma{id}.log");
            let _ = std::fs::copy(nodes.dir.path().join(&name), keep.join(&name));
        }
        eprintln!("nemesis: node logs kept in {}", keep.display());
    }
    Report {
        faults,
        lost_at_cuts: nodes.lost,
        counts: history.counts(),
        digests: history.digests.clone(),
        anomalies,
        elapsed: started.elapsed(),
        host_churn,
        replays,
    }
}

/// What a fault acts on: faults of different classes are injected together (a paused
/// leader during a partition, a kill on a slow disk), as Jepsen composes its nemeses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FaultClass {
    /// nftables rules between nodes (and membership changes, made under a partition).
    Network,
    /// Signals to one node or a majority.
    Process,
    /// A node's disk.
    Disk,
    /// The whole cluster at once (every node killed): nothing else is injected with it.
    Cluster,
}

impl FaultKind {
    fn class(self) -> FaultClass {
        match self {
            FaultKind::IsolateLeader
            | FaultKind::MajorityMinority
            | FaultKind::Bridge
            | FaultKind::OneWayFromLeader
            | FaultKind::Membership => FaultClass::Network,
            FaultKind::KillOne | FaultKind::KillMajority | FaultKind::PauseLeader => {
                FaultClass::Process
            }
            FaultKind::SlowDisk => FaultClass::Disk,
            FaultKind::KillAll | FaultKind::PowerCut => FaultClass::Cluster,
        }
    }
}

/// The faults of one step: first the kind injected least so far (ties broken at random),
/// so that every kind gets its share of a run whatever the seed; then, nine times in ten
/// each, one fault at random of every other class it composes with (at most one per
/// class): a partition, a kill or a pause, and a slow disk at once, or a whole-cluster
/// crash or power cut that restarts into a partition, on a slow disk. A whole-cluster
/// fault never comes with a kill or a pause: every node is down already.
fn choose_faults(
    rng: &mut StdRng,
    kinds: &[FaultKind],
    injected: &BTreeMap<FaultKind, usize>,
) -> Vec<FaultKind> {
    let count = |k: &FaultKind| injected.get(k).copied().unwrap_or(0);
    let least = kinds.iter().map(count).min().unwrap_or(0);
    let candidates: Vec<FaultKind> = kinds
        .iter()
        .copied()
        .filter(|k| count(k) == least)
        .collect();
    let first = candidates[rng.random_range(0..candidates.len())];
    let mut chosen = vec![first];
    for class in [FaultClass::Network, FaultClass::Process, FaultClass::Disk] {
        let composes = class != first.class()
            && !(first.class() == FaultClass::Cluster && class == FaultClass::Process);
        if !composes || !rng.random_bool(0.9) {
            continue;
        }
        let of_class: Vec<FaultKind> = kinds
            .iter()
            .copied()
            .filter(|k| k.class() == class)
            .collect();
        if !of_class.is_empty() {
            chosen.push(of_class[rng.random_range(0..of_class.len())]);
        }
    }
    // Network rules first, so a kill, a pause or a restart meets the partition in place.
    chosen.sort_by_key(|k| k.class() != FaultClass::Network);
    chosen
}

/// Every pair (a, b) with a in `a` and b in `b`, other than a node with itself.
fn between(a: &[u64], b: &[u64]) -> Vec<(u64, u64)> {
    a.iter()
        .flat_map(|&x| b.iter().filter(move |&&y| y != x).map(move |&y| (x, y)))
        .collect()
}

/// Injects faults until `config.duration` has passed; returns how many of each kind.
fn nemesis(nodes: &mut Nodes, config: &RunConfig) -> (BTreeMap<FaultKind, usize>, (usize, usize)) {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut injected: BTreeMap<FaultKind, usize> = BTreeMap::new();
    // Membership changes by (steps that succeeded, steps): 1 for the removal of a cut-off
    // node, 2 for the rejoin (learner, promotion) of a node an earlier change removed.
    let mut membership_steps: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    // After each membership fault: whether every node was a voter again within 20 s.
    let mut rejoins: BTreeMap<bool, usize> = BTreeMap::new();
    let mut composed = 0usize;
    let mut churn = (0usize, 0usize);
    let until = Instant::now() + config.duration;
    let ids = nodes.ids();
    let majority = ids.len() / 2 + 1;
    while Instant::now() < until {
        let faults = choose_faults(&mut rng, &config.kinds, &injected);
        // A random leader stand-in when no node answers as leader (mid-election).
        let leader = nodes
            .leader()
            .unwrap_or_else(|| ids[rng.random_range(0..ids.len())]);
        let mut hold = Duration::from_millis(rng.random_range(300..2000));
        let mut shuffled = ids.clone();
        shuffled.shuffle(&mut rng);
        // The slow disk is another node than the one a kill picks first.
        let slow = shuffled[shuffled.len() - 1];
        for &kind in &faults {
            let applied = match kind {
                FaultKind::IsolateLeader => nodes.partition(&between(&[leader], &ids), &[]),
                FaultKind::MajorityMinority => {
                    let (minority, rest) = shuffled.split_at(ids.len() - majority);
                    nodes.partition(&between(minority, rest), &[])
                }
                FaultKind::Bridge => {
                    // shuffled[0] is the bridge: it talks to both halves.
                    let (a, b) = shuffled[1..].split_at((ids.len() - 1) / 2);
                    nodes.partition(&between(a, b), &[])
                }
                FaultKind::OneWayFromLeader => nodes.partition(&[], &between(&[leader], &ids)),
                FaultKind::KillOne => {
                    nodes.kill(shuffled[0]);
                    Ok(())
                }
                FaultKind::KillMajority => {
                    for &id in &shuffled[..majority] {
                        nodes.kill(id);
                    }
                    Ok(())
                }
                FaultKind::KillAll => {
                    for &id in &ids {
                        nodes.kill(id);
                    }
                    Ok(())
                }
                FaultKind::PauseLeader => {
                    nodes.signal(leader, Signal::SIGSTOP);
                    hold += ELECTION_TIMEOUT_MAX;
                    Ok(())
                }
                FaultKind::PowerCut => {
                    for &id in &ids {
                        nodes.kill(id);
                    }
                    ids.iter().try_for_each(|&id| nodes.power_cut_disk(id))
                }
                FaultKind::SlowDisk => {
                    let delay = rng.random_range(300..2000);
                    nodes.slow_disk(slow, delay)
                }
                FaultKind::Membership => {
                    let (minority, rest) = shuffled.split_at(ids.len() - majority);
                    let partitioned = nodes.partition(&between(minority, rest), &[]);
                    let steps = nodes.cycle_membership(rest, minority);
                    *membership_steps.entry(steps).or_default() += 1;
                    partitioned
                }
            };
            if let Err(e) = applied {
                panic!("injecting {}: {e}", kind.name());
            }
            *injected.entry(kind).or_default() += 1;
        }
        composed += faults.len() - 1;
        // A host dies or comes back while the cluster is under fault: the workers have
        // verdicts to reach, rings to heal and probes to order.
        if config.hosts > 0 && rng.random_bool(0.5) {
            match nodes.toggle_probe(rng.random_range(1..=config.hosts)) {
                true => churn.0 += 1,
                false => churn.1 += 1,
            }
        }
        std::thread::sleep(hold);
        // Heal every fault of the step.
        nodes.heal();
        if faults.contains(&FaultKind::SlowDisk) {
            if let Err(e) = nodes.slow_disk(slow, 0) {
                panic!("healing the slow disk: {e}");
            }
        }
        for &id in &ids {
            nodes.signal(id, Signal::SIGCONT);
            if !nodes.running().contains(&id) {
                nodes.start(id);
            }
        }
        // A node removed under the partition joins again once the network is whole (as
        // a learner, then promoted), so the next faults meet the full membership.
        if faults.contains(&FaultKind::Membership) {
            let whole = nodes.restore_membership(Duration::from_secs(20));
            *rejoins.entry(whole).or_default() += 1;
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(200..800)));
    }
    eprintln!("nemesis: {composed} faults injected on top of another one");
    if !membership_steps.is_empty() {
        eprintln!(
            "nemesis: membership changes by (steps completed, steps): {membership_steps:?}; \
             every node a voter again after the heal: {rejoins:?}"
        );
    }
    (injected, churn)
}

/// The run configuration from the environment (`bench/nemesis.sh` sets it), with
/// defaults for the short CI run: `RINGWATCH_NEMESIS_SECONDS`, `_SEED`, `_NODES`,
/// `_FAULTS` (comma-separated kind names), `_TAG` (namespace prefix `rwl<tag>-`, at most
/// 4 characters).
pub fn config_from_env(tag: &str, nodes: u64, seconds: u64) -> RunConfig {
    let var = |name: &str| std::env::var(format!("RINGWATCH_NEMESIS_{name}")).ok();
    let seed = var("SEED").and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let kinds = var("FAULTS")
        .map(|s| {
            s.split(',')
                .map(|k| FaultKind::parse(k.trim()).unwrap_or_else(|| panic!("unknown fault {k}")))
                .collect()
        })
        .unwrap_or_else(|| FaultKind::ALL.to_vec());
    RunConfig {
        // A long run (bench/nemesis.sh) sets its own tag, so that it and a short run
        // never remove each other's namespaces as leftovers.
        tag: var("TAG").unwrap_or_else(|| tag.to_string()),
        nodes: var("NODES").and_then(|s| s.parse().ok()).unwrap_or(nodes),
        duration: Duration::from_secs(
            var("SECONDS")
                .and_then(|s| s.parse().ok())
                .unwrap_or(seconds),
        ),
        seed,
        kinds,
        appenders: 3,
        hosts: var("HOSTS").and_then(|s| s.parse().ok()).unwrap_or(6),
        snapshot_after_logs: var("SNAPSHOT_AFTER_LOGS")
            .and_then(|s| s.parse().ok())
            .unwrap_or(2000),
    }
}
