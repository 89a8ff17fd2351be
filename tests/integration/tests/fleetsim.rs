//! Issue 14 part 3: `fleetsim` end to end with the real binaries on loopback (127.75.x.y,
//! simulated hosts on 127.100.x.y): a 3-node `cma` cluster with the worker, a real
//! packet-reader, and 200 simulated nanoprobes behind 5 declared switches (2 routers).
//! - every simulated host joins and is watched by two peers (`cmactl hosts`);
//! - fleetsim kills host 101 (`--scenario single-kill`): exactly one `dead` verdict, about
//!   101, reported by both its ring neighbours (100 and 102), and no verdict about any
//!   live host.

use integration::cluster::{Cluster, CmaCluster, TEST_RAFT};
use integration::procs::{binary, spawn, wait_until};
use integration::reader::ReaderProc;
use integration::verdicts::{hosts_of, reporters};
use proto::{KeyId, KeyRing};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const NET: u8 = 75;
const HOSTS: usize = 200;
const PORT: &str = "27075";
const SHAPE: [&str; 6] = [
    "--hosts",
    "200",
    "--hosts-per-switch",
    "40",
    "--switches-per-router",
    "3",
];

/// fleetsim's JSON event lines so far.
fn events(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

#[test]
fn fleetsim_single_kill_gives_one_dead_verdict_with_two_watchers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("keys.toml");
    KeyRing::write_new_key_file(&key_file, KeyId(1)).expect("key file");
    let topology = Command::new(binary("fleetsim"))
        .arg("topology")
        .args(SHAPE)
        .output()
        .expect("fleetsim topology");
    assert!(topology.status.success());
    let topology = String::from_utf8(topology.stdout).expect("utf-8");
    assert_eq!(topology.matches("[[worker.switches]]").count(), 5);
    let worker = format!(
        "{TEST_RAFT}\n[worker]\nkey_file = \"{}\"\ntick_ms = 100\nprobe_timeout_ms = 1000\n\n\
         [worker.timings]\ninterval_ms = 500\nwarntime_ms = 1000\ndeadtime_ms = 1500\n\n{topology}",
        key_file.display()
    );
    let mut cluster = Cluster::new(NET, 3, &worker);
    cluster.form();
    let cluster_key = cluster.dir.path().join("cluster.key");
    let mut reader = ReaderProc::new(
        dir.path(),
        NET,
        1,
        &key_file,
        &cluster_key,
        &cluster.raft_addrs(),
    );
    reader.start();
    let reader_addr = reader.listen.to_string();
    let keys = key_file.display().to_string();
    let mut args = vec!["run"];
    args.extend_from_slice(&SHAPE);
    args.extend_from_slice(&[
        "--port",
        PORT,
        "--reader",
        &reader_addr,
        "--key-file",
        &keys,
        "--scenario",
        "single-kill",
        "--settle-s",
        "5",
        "--stats-every-s",
        "5",
    ]);
    let sim_log = dir.path().join("fleetsim.log");
    let sim = spawn(&binary("fleetsim"), &args, &[], &sim_log).expect("spawn fleetsim");

    // Every simulated host joins, each watched by two peers.
    let formed = wait_until(Duration::from_secs(90), || {
        cluster
            .json(&["hosts"])
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|hosts| {
                hosts.len() == HOSTS
                    && hosts.iter().all(|h| {
                        h["status"] == "up"
                            && h["watchers"].as_array().is_some_and(|w| w.len() >= 2)
                    })
            })
    });
    assert!(
        formed,
        "simulated hosts not all up and watched; fleetsim log:\n{}\nhosts: {:#?}",
        sim.log_text(),
        cluster.json(&["hosts"])
    );

    // fleetsim kills host 101 once its own view is formed plus 5 s.
    let killed = wait_until(Duration::from_secs(60), || {
        events(&sim.log_text())
            .iter()
            .any(|e| e["event"] == "fault" && e["command"] == "kill 101")
    });
    assert!(killed, "no kill from fleetsim:\n{}", sim.log_text());
    let fault = events(&sim.log_text())
        .into_iter()
        .find(|e| e["event"] == "fault")
        .expect("fault line");
    assert_eq!(fault["down"], serde_json::json!([101]));

    let verdict = wait_until(Duration::from_secs(60), || {
        cluster
            .failures()
            .iter()
            .any(|f| f["kind"] == "dead" && f["subject"] == "101")
    });
    assert!(
        verdict,
        "no dead verdict about 101; failures {:#?}\nfleetsim log:\n{}",
        cluster.failures(),
        sim.log_text()
    );
    // Let any other verdict the kill could (wrongly) cause arrive.
    std::thread::sleep(Duration::from_secs(5));
    let failures = cluster.failures();
    let dead: Vec<&Value> = failures.iter().filter(|f| f["kind"] == "dead").collect();
    assert_eq!(dead.len(), 1, "{failures:#?}");
    assert_eq!(hosts_of(dead[0]), vec![101]);
    assert_eq!(reporters(dead[0]), vec![100, 102], "{:#}", dead[0]);
    for f in &failures {
        assert!(
            hosts_of(f).iter().all(|h| *h == 101),
            "a verdict about a live host: {f:#}"
        );
    }
    let seconds = fault["at_us"]
        .as_u64()
        .map(|t| integration::verdicts::detection_secs(dead[0], t));
    eprintln!("dead verdict {seconds:?} s after the kill");
    drop(sim);
    drop(reader);
    drop(cluster);
}
