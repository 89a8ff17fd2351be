//! Issue 7, "Must show": real binaries on loopback (127.73.x.y): 3 `cma` nodes with the
//! worker, a packet-reader and 9 nanoprobes.
//! - the worker forms the ring (every nanoprobe watched by two peers, `cmactl rings`);
//! - a host hangs (its nanoprobe SIGSTOPped: no heartbeat, no answer, no ICMP):
//!   `cmactl failures` shows it `dead`, with both watchers as evidence;
//! - SIGKILL a nanoprobe on a live host: its watchers' heartbeats meet port-unreachable and
//!   `cmactl failures` shows `agent_down` (not `dead`) with both as evidence; restarted, it
//!   closes;
//! - `cmactl probe` reaches a live nanoprobe and fails on a dead one;
//! - SIGTERM another: it shows as `left`, and no `dead` verdict for it;
//! - SIGKILL the CMA leader while a suspicion is open: the new leader finishes it with one
//!   verdict, not two;
//! - `cmactl`'s documented exit codes: `status` 0 while all is well, 4 with an open
//!   failure, 3 when no node answers, 2 for a bad command line; its screens carry ages and
//!   no colour codes when stdout is not a terminal.

use integration::cluster::{Cluster, CmaCluster};
use integration::procs::{binary, wait_until};
use integration::verdicts::reporters;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const NET: u8 = 73;
const HOSTS: u64 = 9;
use integration::loopback::{WorkerSystem, DEADTIME_MS as DEADTIME, INTERVAL_MS as INTERVAL};

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
    let WorkerSystem {
        mut cluster,
        reader,
        mut probes,
        key_file,
    } = WorkerSystem::start(dir.path(), NET, HOSTS, "", "info,nanoprobe::node=debug");

    // Rings: every host known and watched by two peers.
    integration::loopback::wait_rings(&cluster, HOSTS as usize);
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

    // `cmactl status` as a health check: 0 while nothing is open; no colour codes on a
    // pipe even with a colour-loving TERM.
    let any = cluster.running()[0];
    let (code, screen) = cluster.cmactl_exit(any, &["status"], &[("TERM", "xterm-256color")]);
    assert_eq!(code, 0, "status before any failure: {screen}");
    assert!(screen.contains("No open failures."), "{screen}");
    assert!(screen.contains("3/3 members answering"), "{screen}");
    assert!(
        !screen.contains('\x1b'),
        "colour codes on a pipe: {screen:?}"
    );
    // Nothing listens on port 1 of this loopback address: unreachable is exit 3.
    let unreachable = Command::new(binary("cmactl"))
        .args(["--api", &format!("http://127.{NET}.9.9:1"), "status"])
        .output()
        .expect("cmactl");
    assert_eq!(unreachable.status.code(), Some(3), "{unreachable:?}");
    let usage = Command::new(binary("cmactl"))
        .args(["status", "--no-such-flag"])
        .output()
        .expect("cmactl");
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");

    // Host 5 hangs: dead, with its two ring neighbours (4 and 6) as evidence.
    let hung5 = probes[4].take().expect("host 5");
    hung5.freeze().expect("SIGSTOP");
    let took = wait_verdict(&cluster, "dead", "5", Duration::from_secs(60));
    println!(
        "host 5 hung -> dead verdict in {:.2} s (deadtime {:.1} s)",
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

    // An open failure: `status` exits 4 and shows it with its root cause and age; the
    // JSON form carries the same fields; `failures` lists it and exits 0.
    let (code, screen) = cluster.cmactl_exit(any, &["status"], &[]);
    assert_eq!(code, 4, "status with host 5 dead: {screen}");
    assert!(screen.contains("Open failures: 1"), "{screen}");
    assert!(screen.contains("host 5 is dead"), "{screen}");
    assert!(screen.contains(" ago)"), "{screen}");
    println!("cmactl status with host 5 dead (exit {code}):\n{screen}");
    let (code, json) = cluster.cmactl_exit(any, &["--json", "status"], &[]);
    assert_eq!(code, 4);
    let json: Value = serde_json::from_str(&json).expect("status --json");
    assert_eq!(json["open_failures"][0]["subject"], "5", "{json:#}");
    assert_eq!(
        json["members"].as_array().map(Vec::len),
        Some(3),
        "{json:#}"
    );
    let (code, listing) = cluster.cmactl_exit(any, &["failures"], &[("NO_COLOR", "1")]);
    assert_eq!(code, 0, "{listing}");
    assert!(listing.contains("reported dead by 4,6"), "{listing}");
    // Live mode: two refreshes; on a pipe a frame is printed only when the data changed.
    let (code, live) = cluster.cmactl_exit(any, &["watch", "--interval", "1", "--count", "2"], &[]);
    assert_eq!(code, 4, "{live}");
    let frames = live.matches("Open failures: 1").count();
    assert!((1..=2).contains(&frames), "{live}");

    // SIGKILL host 3's nanoprobe, its host alive: agent_down, with the port-unreachable
    // of both its watchers (2 and 4) as evidence; restarted, the failure closes.
    probes[2].take().expect("host 3").kill();
    let took = wait_verdict(&cluster, "agent_down", "3", Duration::from_secs(30));
    println!(
        "nanoprobe 3 SIGKILLed -> agent_down verdict in {:.2} s (heartbeat interval {:.1} s)",
        took.as_secs_f64(),
        INTERVAL as f64 / 1000.0
    );
    let all = cluster.failures();
    let about3 = failures_about(&all, "3");
    assert_eq!(about3.len(), 1, "one verdict about 3: {about3:#?}");
    assert_eq!(
        integration::verdicts::refusers(about3[0]),
        vec![2, 4],
        "evidence: {:#}",
        about3[0]
    );
    let (_, listing) = cluster.cmactl_exit(any, &["failures"], &[("NO_COLOR", "1")]);
    assert!(
        listing.contains("reported port-unreachable by 2,4"),
        "{listing}"
    );
    probes[2] = Some(integration::reader::spawn_nanoprobe(
        dir.path(),
        NET,
        3,
        &key_file,
        &reader.listen.to_string(),
        "info",
    ));
    let closed = wait_until(Duration::from_secs(30), || {
        failures_about(&cluster.failures(), "3")
            .iter()
            .all(|f| f["state"] == "closed")
    });
    assert!(
        closed,
        "agent_down about 3 not closed after its restart: {:#?}",
        cluster.failures()
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

    // Host 8 hangs, then the CMA leader is killed while the suspicion is open: one verdict.
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let hung8 = probes[7].take().expect("host 8");
    hung8.freeze().expect("SIGSTOP");
    std::thread::sleep(Duration::from_millis(DEADTIME - INTERVAL / 2));
    cluster.kill(leader);
    let took = wait_verdict(&cluster, "dead", "8", Duration::from_secs(90));
    println!(
        "host 8 hung, CMA leader {leader} killed {:.1} s later -> dead verdict {:.2} s after the leader kill",
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
            ["2", "3", "5", "8"].contains(&subject),
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
        // A log file (as the journal) gets no colour escapes.
        assert!(
            !log.contains('\x1b'),
            "colour escapes in nanoprobe {h}'s log"
        );
    }
    for node in 1..=3 {
        let log = std::fs::read_to_string(cluster.dir.path().join(format!("node{node}.log")))
            .unwrap_or_default();
        assert!(
            !log.is_empty() && !log.contains('\x1b'),
            "cma {node}'s log: colour escapes"
        );
    }

    // The worker is a pure function of the log: every node still running, stopped once
    // the cluster is idle, has a stored log (its snapshot and the entries after it) that
    // a fresh worker replays to the same entries, byte for byte, across the leader kill,
    // and to the state the live nodes agreed on.
    drop(probes);
    drop(reader);
    let at_rest = cluster.digests_at_rest(Duration::from_secs(60));
    let (upto, digest) = match at_rest.first() {
        Some((_, applied, digest)) => (*applied, digest.clone()),
        None => panic!("no digest at rest"),
    };
    assert!(
        at_rest.iter().all(|(_, a, d)| *a == upto && *d == digest),
        "{at_rest:?}"
    );
    for (id, _, _) in &at_rest {
        cluster.kill(*id);
    }
    for (id, _, _) in &at_rest {
        let config = &cluster.nodes[(*id - 1) as usize].config;
        let replayed = integration::replay::replay_node(config, upto)
            .unwrap_or_else(|e| panic!("replaying node {id}: {e}"));
        println!("{}", replayed.summary(*id));
        // No mismatch, to the index and the digest the live nodes agreed on.
        let problems = replayed.problems(*id, upto, &digest);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(
            replayed.report.turns > 0,
            "node {id}: {:?}",
            replayed.report
        );
    }
}
