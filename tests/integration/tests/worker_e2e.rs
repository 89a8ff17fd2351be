//! Issue 7, "Must show": real binaries on loopback (127.73.x.y): 3 `cma` nodes with the
//! worker, a packet-reader and 9 nanoprobes.
//! - the worker forms the ring (every nanoprobe watched by two peers, `cmactl rings`);
//! - SIGKILL a nanoprobe: `cmactl failures` shows it `dead`, with both watchers as evidence;
//! - `cmactl probe` reaches a live nanoprobe and fails on a dead one;
//! - SIGTERM another: it shows as `left`, and no `dead` verdict for it;
//! - SIGKILL the CMA leader while a suspicion is open: the new leader finishes it with one
//!   verdict, not two.

use integration::cluster::{Cluster, CmaCluster, TEST_RAFT};
use integration::procs::{binary, spawn, wait_until, ProcGuard};
use integration::reader::ReaderProc;
use integration::verdicts::reporters;
use proto::{KeyId, KeyRing};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const NET: u8 = 73;
const HOSTS: u64 = 9;
/// Ring timings for the test (ms): quick, but tolerant of a loaded machine.
const INTERVAL: u64 = 500;
const DEADTIME: u64 = 1500;

fn nanoprobe(dir: &Path, host: u64, key_file: &Path, reader: &str) -> ProcGuard {
    let bind = format!("127.{NET}.2.{host}:7500");
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
        // Debug for the node loop: every rejected datagram is logged with its reason.
        &[("RUST_LOG", "info,nanoprobe::node=debug")],
        &dir.join(format!("nanoprobe{host}.log")),
    )
    .expect("spawn nanoprobe")
}

fn failures_about<'a>(all: &'a [Value], subject: &str) -> Vec<&'a Value> {
    all.iter().filter(|f| f["subject"] == subject).collect()
}

/// Waits for a verdict of `kind` about `subject`; returns the time it took.
fn wait_verdict(cluster: &Cluster, kind: &str, subject: &str, within: Duration) -> Duration {
    let started = Instant::now();
    let found = wait_until(within, || {
        failures_about(&cluster.failures(), subject)
            .iter()
            .any(|f| f["kind"] == kind)
    });
    assert!(
        found,
        "no {kind} verdict about {subject} within {within:?}; failures: {:#?}",
        cluster.failures()
    );
    started.elapsed()
}

#[test]
fn rings_verdicts_and_leader_failover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("keys.toml");
    KeyRing::write_new_key_file(&key_file, KeyId(1)).expect("key file");
    let worker = format!(
        "{TEST_RAFT}\n[worker]\nkey_file = \"{}\"\ntick_ms = 100\nprobe_timeout_ms = 1000\n\n\
         [worker.timings]\ninterval_ms = {INTERVAL}\nwarntime_ms = {}\ndeadtime_ms = {DEADTIME}\n",
        key_file.display(),
        2 * INTERVAL
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
    let mut probes: Vec<Option<ProcGuard>> = (1..=HOSTS)
        .map(|h| Some(nanoprobe(dir.path(), h, &key_file, &reader_addr)))
        .collect();

    // Rings: every host known and watched by two peers.
    let formed = wait_until(Duration::from_secs(60), || {
        cluster
            .json(&["hosts"])
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|hosts| {
                hosts.len() == HOSTS as usize
                    && hosts
                        .iter()
                        .all(|h| h["watchers"].as_array().is_some_and(|w| w.len() == 2))
            })
    });
    assert!(formed, "rings not formed: {:#?}", cluster.json(&["hosts"]));
    let rings = cluster.json(&["rings"]).expect("rings");
    let members = rings[0]["members"].as_array().expect("ring members").len();
    assert_eq!(members, HOSTS as usize, "rings: {rings:#}");
    // Let the SendExpectHb commands reach every nanoprobe and heartbeats start.
    std::thread::sleep(Duration::from_millis(3 * INTERVAL));
    // `cmactl probe`: a live nanoprobe answers.
    let probe3 = cluster
        .json(&["probe", "3"])
        .expect("probe of host 3 answered");
    assert_eq!(probe3["outcome"], "reachable", "{probe3:#}");

    // SIGKILL host 5: dead, with its two ring neighbours (4 and 6) as evidence.
    probes[4].take().expect("host 5").kill();
    let took = wait_verdict(&cluster, "dead", "5", Duration::from_secs(60));
    println!(
        "host 5 killed -> dead verdict in {:.2} s (deadtime {:.1} s)",
        took.as_secs_f64(),
        DEADTIME as f64 / 1000.0
    );
    // A dead one does not: cmactl exits non-zero.
    let leader_now = cluster.wait_leader(Duration::from_secs(30));
    assert!(cluster
        .cmactl(leader_now, &["probe", "5", "--timeout-ms", "500"])
        .is_err());
    let all = cluster.failures();
    let dead5 = failures_about(&all, "5");
    assert_eq!(dead5.len(), 1, "{dead5:#?}");
    assert_eq!(reporters(dead5[0]), vec![4, 6], "evidence: {:#}", dead5[0]);
    assert!(
        took < Duration::from_millis(DEADTIME + 8000),
        "verdict took {took:?}"
    );

    // SIGTERM host 2: left, no alarm.
    let mut two = probes[1].take().expect("host 2");
    two.terminate().expect("SIGTERM");
    assert!(two.wait_timeout(Duration::from_secs(10)).is_some());
    wait_verdict(&cluster, "left", "2", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(2 * DEADTIME));
    let all = cluster.failures();
    let about2 = failures_about(&all, "2");
    assert!(
        about2
            .iter()
            .all(|f| f["kind"] == "left" && f["state"] == "closed"),
        "graceful stop raised an alarm: {about2:#?}"
    );

    // Kill host 8, then the CMA leader while the suspicion is open: one verdict.
    let leader = cluster.wait_leader(Duration::from_secs(30));
    probes[7].take().expect("host 8").kill();
    std::thread::sleep(Duration::from_millis(DEADTIME - INTERVAL / 2));
    cluster.kill(leader);
    let took = wait_verdict(&cluster, "dead", "8", Duration::from_secs(90));
    println!(
        "host 8 killed, CMA leader {leader} killed {:.1} s later -> dead verdict {:.2} s after the leader kill",
        (DEADTIME - INTERVAL / 2) as f64 / 1000.0,
        took.as_secs_f64()
    );
    // Let any duplicate a replay might produce show up before counting.
    std::thread::sleep(Duration::from_secs(3));
    let all = cluster.failures();
    let about8 = failures_about(&all, "8");
    assert_eq!(about8.len(), 1, "expected one verdict about 8: {about8:#?}");
    // No verdict of any kind about a live host: not even a closed false alarm. (A
    // `cmactl probe` used to open a new wire session under the worker's host id, after
    // which nanoprobes refused the worker's commands as a stale session, so a ring
    // change reached only one side and a live neighbour was reported dead.)
    for f in &all {
        let subject = f["subject"].as_str().unwrap_or("");
        assert!(
            ["2", "5", "8"].contains(&subject),
            "verdict about a live host: {f:#}"
        );
    }
    // No nanoprobe refused the CMA's datagrams as coming from a stale session.
    for h in 1..=HOSTS {
        let log = std::fs::read_to_string(dir.path().join(format!("nanoprobe{h}.log")))
            .unwrap_or_default();
        assert!(
            !log.contains("replay_stale_session"),
            "nanoprobe {h} refused CMA datagrams as a stale session"
        );
    }
    drop(probes);
    drop(reader);
}
