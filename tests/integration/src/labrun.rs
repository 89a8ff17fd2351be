//! Ringwatch running in a [`Topology`]: three `cma` nodes and a `packet-reader` in the
//! `cma` namespace, one `nanoprobe` in each host namespace, all real binaries, queried
//! with the real `cmactl`.

use crate::cluster::{hex, CmaCluster};
use crate::lab::{cma_addr, reader_addr, Topology};
use crate::procs::{binary, output_of, wait_until, ProcGuard};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Heartbeat timings of the lab (ms): the targets are for 1 s / 3 s.
pub const INTERVAL_MS: u64 = 1000;
pub const WARNTIME_MS: u64 = 2000;
pub const DEADTIME_MS: u64 = 3000;
/// Timeout of one active probe (ms).
pub const PROBE_TIMEOUT_MS: u64 = 1000;

const ADMIN_PORT_BASE: u16 = 7480;

/// The running system in a lab. Fields drop in order: the processes (SIGKILLed by PID)
/// before their scratch directory and the namespaces they run in.
pub struct Ringwatch {
    /// CMA node id -> its process (None once killed).
    pub cma: BTreeMap<u64, Option<ProcGuard>>,
    /// Packet-reader n (1-based) -> its process (None once killed).
    pub readers: BTreeMap<u8, Option<ProcGuard>>,
    /// Host id -> its nanoprobe (None once killed).
    pub probes: BTreeMap<u64, Option<ProcGuard>>,
    /// lldpd in each switch namespace (zero-config labs only).
    pub lldpd: Vec<ProcGuard>,
    pub dir: tempfile::TempDir,
    pub topo: Topology,
}

/// Microseconds since the Unix epoch (the clock verdicts are stamped with).
pub use daemon::clock::wall_clock_us as now_us;

impl Ringwatch {
    /// Starts 3 CMA nodes (formed into one Raft cluster), one packet-reader and every
    /// host's nanoprobe, and waits until every host is in its rings with its watchers.
    pub fn start(topo: Topology) -> Ringwatch {
        Ringwatch::start_with_readers(topo, 1)
    }

    /// As [`Ringwatch::start`], with `readers` packet-readers (at most
    /// [`crate::lab::READERS`]); every nanoprobe is given all of them.
    pub fn start_with_readers(topo: Topology, readers: u8) -> Ringwatch {
        Ringwatch::start_opts(topo, readers, false, false)
    }

    /// As [`Ringwatch::start`], with the fast profile (`[worker.timings] profile = "fast"`:
    /// 100 ms heartbeats, 500 ms deadtime) and a 20 ms worker tick.
    pub fn start_fast(topo: Topology) -> Ringwatch {
        Ringwatch::start_opts(topo, 1, false, true)
    }

    /// Zero-config: the CMA is given no `[[switches]]` or `[[routers]]`; `lldpd` runs in
    /// every switch namespace ([`Topology::start_lldpd`]) and the CMA learns the switches
    /// from the frames the nanoprobes hear and the routers from the hosts' gateways.
    /// Returns once every host is up with two watchers and placed on its switch by LLDP.
    pub fn start_zero_config(mut topo: Topology) -> Ringwatch {
        topo.declared = false;
        topo.share_router_macs()
            .unwrap_or_else(|e| panic!("router MACs: {e}"));
        let rw = Ringwatch::start_opts(topo, 1, true, false);
        // Switch (LLDP name) -> its hosts and its router: the lowest gateway address of
        // the switch's router (gateways are grouped by the MAC the router shares).
        let expected: BTreeMap<String, (Vec<u64>, String)> = rw
            .topo
            .switches
            .iter()
            .map(|(sw, (_, _, router))| {
                let gateway = rw
                    .topo
                    .router_gateway(router)
                    .map(|g| g.to_string())
                    .unwrap_or_default();
                (Topology::lldp_name(sw), (rw.topo.hosts_on(sw), gateway))
            })
            .collect();
        let learned = || -> Option<BTreeMap<String, (Vec<u64>, String)>> {
            let v = rw.json(&["topology"])?;
            let mut got = BTreeMap::new();
            for sw in v["switches"].as_array()? {
                let hosts: Vec<u64> = sw["hosts"]
                    .as_array()?
                    .iter()
                    .filter(|h| h["source"] == "lldp")
                    .filter_map(|h| h["host"].as_u64())
                    .collect();
                let router = sw["router"].as_str().unwrap_or_default().to_string();
                got.insert(sw["name"].as_str()?.to_string(), (hosts, router));
            }
            Some(got)
        };
        let formed = wait_until(Duration::from_secs(60), || {
            learned().as_ref() == Some(&expected)
                && rw
                    .json(&["hosts"])
                    .and_then(|v| v.as_array().cloned())
                    .is_some_and(|all| {
                        all.iter().all(|h| {
                            h["status"] == "up"
                                && h["watchers"].as_array().is_some_and(|w| w.len() >= 2)
                        })
                    })
        });
        assert!(
            formed,
            "switches not learned from LLDP: expected {expected:?}, topology {:#?}\n{}",
            rw.json(&["topology"]),
            rw.logs_tail()
        );
        // Let the new ring commands reach every nanoprobe and heartbeats flow.
        std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS));
        rw
    }

    fn start_opts(topo: Topology, readers: u8, lldpd: bool, fast: bool) -> Ringwatch {
        assert!(
            (1..=crate::lab::READERS).contains(&readers),
            "readers: 1..={}",
            crate::lab::READERS
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let key_file = dir.path().join("keys.toml");
        proto::KeyRing::write_new_key_file(&key_file, proto::KeyId(1)).expect("key file");
        let secret = dir.path().join("cluster.key");
        crate::procs::write_secret(&secret, &hex(&[0x5a; 32])).expect("cluster secret");
        let mut rw = Ringwatch {
            cma: BTreeMap::new(),
            readers: BTreeMap::new(),
            probes: BTreeMap::new(),
            lldpd: Vec::new(),
            dir,
            topo,
        };
        if lldpd {
            rw.lldpd = rw
                .topo
                .start_lldpd(rw.dir.path())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let topology = rw.topo.worker_topology_toml();
        for id in 1..=3 {
            let config = rw.dir.path().join(format!("cma{id}.toml"));
            let text = format!(
                "node_id = {id}\nlisten = \"{addr}:7400\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
                 data_dir = \"{data}\"\ncluster_secret_file = \"{secret}\"\n\n\
                 [raft]\nheartbeat_interval_ms = 250\nelection_timeout_min_ms = 1200\n\
                 election_timeout_max_ms = 2400\n\n\
                 [worker]\nkey_file = \"{keys}\"\ncommand_listen = \"{addr}:7401\"\n\
                 tick_ms = {tick}\nprobe_timeout_ms = {PROBE_TIMEOUT_MS}\n\n\
                 [worker.timings]\n{timings}\n{topology}",
                addr = cma_addr(id),
                admin = ADMIN_PORT_BASE + id as u16,
                data = rw.dir.path().join(format!("data{id}")).display(),
                secret = secret.display(),
                keys = key_file.display(),
                topology = topology,
                tick = if fast { 20 } else { 100 },
                timings = if fast {
                    "profile = \"fast\"".to_string()
                } else {
                    format!(
                        "interval_ms = {INTERVAL_MS}\nwarntime_ms = {WARNTIME_MS}\n\
                         deadtime_ms = {DEADTIME_MS}"
                    )
                },
            );
            std::fs::write(&config, text).expect("cma config");
            rw.start_cma(id);
        }
        rw.form_cluster(1, &[2, 3]);
        let nodes: Vec<String> = (1..=3)
            .map(|i| format!("\"{}:7400\"", cma_addr(i)))
            .collect();
        for n in 1..=readers {
            let config = rw.dir.path().join(format!("reader{n}.toml"));
            std::fs::write(
                &config,
                format!(
                    "host_id = {}\nlisten = \"{}:7300\"\nkey_file = \"{}\"\n\
                     cma_nodes = [{}]\ncluster_secret_file = \"{}\"\n",
                    900_000 + u64::from(n),
                    reader_addr(n),
                    key_file.display(),
                    nodes.join(", "),
                    secret.display()
                ),
            )
            .expect("reader config");
            let config = config.display().to_string();
            let proc = rw.spawn(
                &rw.topo.cma_ns,
                "packet-reader",
                &["--config", &config],
                "info",
                &format!("reader{n}"),
            );
            rw.readers.insert(n, Some(proc));
        }
        let hosts: Vec<u64> = rw.topo.hosts.keys().copied().collect();
        for h in &hosts {
            rw.start_agent(*h);
        }
        let n = hosts.len();
        let formed = wait_until(Duration::from_secs(90), || {
            rw.json(&["hosts"])
                .and_then(|v| v.as_array().cloned())
                .is_some_and(|all| {
                    all.len() == n
                        && all.iter().all(|h| {
                            h["status"] == "up"
                                && h["watchers"].as_array().is_some_and(|w| w.len() >= 2)
                        })
                })
        });
        assert!(
            formed,
            "rings not formed: {:#?}\n{}",
            rw.json(&["hosts"]),
            rw.logs_tail()
        );
        // Let the ring commands reach every nanoprobe and heartbeats flow everywhere.
        std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS));
        rw
    }

    /// Starts the workspace binary `program` in namespace `ns` with `RUST_LOG=rust_log`,
    /// its output in `<log>.log` in the scratch directory.
    fn spawn(
        &self,
        ns: &str,
        program: &str,
        args: &[&str],
        rust_log: &str,
        log: &str,
    ) -> ProcGuard {
        let log = self.dir.path().join(format!("{log}.log"));
        self.topo
            .lab
            .spawn(ns, &binary(program), args, &[("RUST_LOG", rust_log)], &log)
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"))
    }

    fn start_cma(&mut self, id: u64) {
        let config = self.dir.path().join(format!("cma{id}.toml"));
        let config = config.display().to_string();
        let proc = self.spawn(
            &self.topo.cma_ns,
            "cma",
            &["--config", &config],
            "info,openraft=warn",
            &format!("cma{id}"),
        );
        self.cma.insert(id, Some(proc));
        let up = wait_until(Duration::from_secs(30), || {
            self.cmactl(id, &["--json", "cluster", "status"]).is_ok()
        });
        assert!(
            up,
            "cma {id} admin API never answered\n{}",
            self.logs_tail()
        );
    }

    /// Ids of the CMA nodes whose process runs.
    pub fn running_cma(&self) -> Vec<u64> {
        self.cma
            .iter()
            .filter(|(_, p)| p.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// SIGKILLs a CMA node.
    pub fn kill_cma(&mut self, id: u64) {
        if let Some(mut p) = self.cma.get_mut(&id).and_then(Option::take) {
            p.kill();
        }
    }

    /// SIGKILLs packet-reader `n`.
    pub fn kill_reader(&mut self, n: u8) {
        if let Some(mut p) = self.readers.get_mut(&n).and_then(Option::take) {
            p.kill();
        }
    }

    /// Kills a host: its namespace's interface goes down (its switch port loses carrier,
    /// so nothing reaches it and nothing answers, not even ICMP), then its nanoprobe is
    /// SIGKILLed. Returns when (µs since the epoch).
    pub fn kill_host(&mut self, host: u64) -> u64 {
        let at = now_us();
        if let Some(place) = self.topo.hosts.get(&host) {
            if let Err(e) = self
                .topo
                .lab
                .ip_in(&place.ns, &["link", "set", "eth0", "down"])
            {
                panic!("taking host {host}'s interface down: {e}");
            }
        }
        if let Some(mut p) = self.probes.get_mut(&host).and_then(Option::take) {
            p.kill();
        }
        at
    }

    /// Starts host `host`'s nanoprobe (again), reporting to every packet-reader.
    pub fn start_agent(&mut self, host: u64) {
        let place = &self.topo.hosts[&host];
        let bind = if place.bind_any {
            "0.0.0.0:7500".to_string()
        } else {
            format!("{}:7500", place.addr)
        };
        let ns = place.ns.clone();
        let reader_args: Vec<String> = self
            .readers
            .keys()
            .flat_map(|n| {
                [
                    "--packet-reader".to_string(),
                    format!("{}:7300", reader_addr(*n)),
                ]
            })
            .collect();
        let keys = self.dir.path().join("keys.toml").display().to_string();
        let host_s = host.to_string();
        let mut args = vec!["--host-id", &host_s, "--bind", &bind, "--key-file", &keys];
        args.extend(reader_args.iter().map(String::as_str));
        let proc = self.spawn(&ns, "nanoprobe", &args, "info", &format!("nanoprobe{host}"));
        self.probes.insert(host, Some(proc));
    }

    /// SIGKILLs a host's nanoprobe only: the host lives (its kernel answers heartbeats with
    /// ICMP port-unreachable). Returns when (µs since the epoch).
    pub fn kill_agent(&mut self, host: u64) -> u64 {
        let at = now_us();
        if let Some(mut p) = self.probes.get_mut(&host).and_then(Option::take) {
            p.kill();
        }
        at
    }

    /// Waits until a failure row satisfies `pred`; returns it, or panics with all rows.
    pub fn wait_failure(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(f) = self.failures().into_iter().find(|f| pred(f)) {
                return f;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {within:?}; failures: {:#?}\n{}",
                self.failures(),
                self.logs_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of every CMA log, for failure messages.
    pub fn logs_tail(&self) -> String {
        let mut text = String::new();
        let mut files: Vec<PathBuf> = (1..=3)
            .map(|i| self.dir.path().join(format!("cma{i}.log")))
            .collect();
        files.extend(
            self.readers
                .keys()
                .map(|n| self.dir.path().join(format!("reader{n}.log"))),
        );
        for f in files {
            let body = std::fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = body.lines().rev().take(15).collect();
            text.push_str(&format!("---- {} ----\n", f.display()));
            for l in lines.iter().rev() {
                text.push_str(l);
                text.push('\n');
            }
        }
        text
    }
}

impl CmaCluster for Ringwatch {
    /// `cmactl ARGS` (run inside the cma namespace) against node `id`; stdout on success.
    fn cmactl(&self, id: u64, args: &[&str]) -> Result<String, String> {
        let api = format!("http://127.0.0.1:{}", ADMIN_PORT_BASE + id as u16);
        let bin = binary("cmactl").display().to_string();
        let mut full = vec!["netns", "exec", &self.topo.cma_ns, &bin, "--api", &api];
        full.extend_from_slice(&["--timeout", "20"]);
        full.extend_from_slice(args);
        output_of(Command::new("ip").args(&full))
    }

    fn running(&self) -> Vec<u64> {
        self.running_cma()
    }

    fn addresses(&self, id: u64) -> (String, String) {
        (
            format!("{}:7400", cma_addr(id)),
            format!("127.0.0.1:{}", ADMIN_PORT_BASE + id as u16),
        )
    }

    fn diagnostics(&self) -> String {
        self.logs_tail()
    }
}
