//! A whole Ringwatch on loopback for worker tests: a formed 3-node CMA cluster with a
//! worker, one packet-reader and `hosts` nanoprobes, all real processes.

use crate::cluster::{Cluster, TEST_RAFT};
use crate::procs::ProcGuard;
use crate::reader::{spawn_nanoprobe, ReaderProc};
use proto::{KeyId, KeyRing};
use std::path::{Path, PathBuf};

/// Heartbeat interval of the loopback worker tests (ms): quick, but tolerant of a loaded
/// machine.
pub const INTERVAL_MS: u64 = 500;
/// Deadtime of the loopback worker tests (ms).
pub const DEADTIME_MS: u64 = 1500;

/// The running system. Destructure it in the order `cluster, reader, probes` so the
/// processes stop before the cluster, as locals declared in that order would.
pub struct WorkerSystem {
    /// The CMA cluster, formed.
    pub cluster: Cluster,
    /// The packet-reader every nanoprobe reports to.
    pub reader: ReaderProc,
    /// Nanoprobe of host `h` at index `h - 1` (None once a test took it).
    pub probes: Vec<Option<ProcGuard>>,
    /// The nanoprobes' key file.
    pub key_file: PathBuf,
}

impl WorkerSystem {
    /// Writes a key file in `dir`, forms a 3-node cluster on 127.<net>.0.x whose worker
    /// config is the default test one plus `worker_extra` (e.g. `[[worker.sinks]]`),
    /// starts a packet-reader and nanoprobes 1..=`hosts` (logging at `nanoprobe_log`).
    pub fn start(
        dir: &Path,
        net: u8,
        hosts: u64,
        worker_extra: &str,
        nanoprobe_log: &str,
    ) -> WorkerSystem {
        let key_file = dir.join("keys.toml");
        KeyRing::write_new_key_file(&key_file, KeyId(1)).expect("key file");
        let worker = format!(
            "{TEST_RAFT}\n[worker]\nkey_file = \"{}\"\ntick_ms = 100\nprobe_timeout_ms = 1000\n\n\
             [worker.timings]\ninterval_ms = {INTERVAL_MS}\nwarntime_ms = {}\n\
             deadtime_ms = {DEADTIME_MS}\n\n{worker_extra}",
            key_file.display(),
            2 * INTERVAL_MS
        );
        let mut cluster = Cluster::new(net, 3, &worker);
        cluster.form();
        let cluster_key = cluster.dir.path().join("cluster.key");
        let mut reader =
            ReaderProc::new(dir, net, 1, &key_file, &cluster_key, &cluster.raft_addrs());
        reader.start();
        let reader_addr = reader.listen.to_string();
        let probes = (1..=hosts)
            .map(|h| {
                Some(spawn_nanoprobe(
                    dir,
                    net,
                    h,
                    &key_file,
                    &reader_addr,
                    nanoprobe_log,
                ))
            })
            .collect();
        WorkerSystem {
            cluster,
            reader,
            probes,
            key_file,
        }
    }
}

/// Waits (60 s at most) until the cluster knows `hosts` hosts, each watched by two peers;
/// panics with the hosts table otherwise.
pub fn wait_rings(cluster: &Cluster, hosts: usize) {
    use crate::cluster::CmaCluster;
    let formed = crate::procs::wait_until(std::time::Duration::from_secs(60), || {
        cluster
            .json(&["hosts"])
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|all| {
                all.len() == hosts
                    && all
                        .iter()
                        .all(|h| h["watchers"].as_array().is_some_and(|w| w.len() == 2))
            })
    });
    assert!(formed, "rings not formed: {:#?}", cluster.json(&["hosts"]));
}
