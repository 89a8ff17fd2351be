//! Reads that say what they are (issue 25): every admin answer says whether it is current
//! (the leader past its read barrier), a follower's copy, or from a node that reaches no
//! quorum; `cmactl` shows it above the table, on stderr with `--json`, and `status`
//! exits 5 on a node without quorum. Real `cma` and `cmactl` processes on loopback.

use integration::cluster::{Cluster, CmaCluster, TEST_RAFT};
use integration::procs::{binary, wait_until};
use std::process::Command;
use std::time::Duration;

/// `cmactl --api <node> ARGS`: exit code, stdout, stderr.
fn cmactl(cluster: &Cluster, id: u64, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary("cmactl"))
        .arg("--api")
        .arg(format!("http://{}", cluster.node(id).admin))
        .args(["--timeout", "20"])
        .args(args)
        .output()
        .expect("running cmactl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn answers_say_how_fresh_they_are_and_a_node_without_quorum_is_not_healthy() {
    let mut cluster = Cluster::new(66, 3, TEST_RAFT);
    cluster.form();
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let follower = (1..=3).find(|id| *id != leader).unwrap_or(2);

    // The leader's answer is current: no warning, rows unchanged on stdout.
    let (code, stdout, stderr) = cmactl(&cluster, leader, &["--json", "hosts"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.trim_start().starts_with('['), "{stdout}");
    assert!(!stderr.contains("stale"), "{stderr}");
    let (code, stdout, _) = cmactl(&cluster, leader, &["status"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(!stdout.contains("NO QUORUM"), "{stdout}");

    // A follower alone says its copy may lag, with the leader's commit index it knows.
    let (code, stdout, stderr) = cmactl(&cluster, follower, &["--json", "failures"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.trim_start().starts_with('['), "{stdout}");
    let line: serde_json::Value = serde_json::from_str(stderr.trim()).expect("stale line");
    assert_eq!(line["stale"]["kind"], "follower", "{stderr}");
    assert_eq!(line["answered_by"], follower);
    assert_eq!(line["stale"]["leader_id"], leader);
    let (_, stdout, _) = cmactl(&cluster, follower, &["hosts"]);
    assert!(
        stdout.starts_with(&format!("stale: answered by follower {follower}")),
        "{stdout}"
    );
    // Given every node, cmactl takes the leader's current answer.
    let all: Vec<String> = (1..=3)
        .map(|id| format!("http://{}", cluster.node(id).admin))
        .collect();
    let out = Command::new(binary("cmactl"))
        .args(["--api", &all.join(","), "--json", "hosts"])
        .output()
        .expect("cmactl");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).trim().is_empty());

    // Two of three nodes die: the survivor reaches no quorum and says so.
    let survivor = follower;
    for id in (1..=3).filter(|id| *id != survivor) {
        cluster.kill(id);
    }
    let mut last = (0, String::new(), String::new());
    let cut_off = wait_until(Duration::from_secs(30), || {
        last = cmactl(&cluster, survivor, &["status"]);
        if last.0 != 5 {
            std::thread::sleep(Duration::from_millis(300));
        }
        last.0 == 5
    });
    assert!(
        cut_off,
        "status on a node without quorum exited {}: {}{}",
        last.0, last.1, last.2
    );
    println!(
        "cmactl status against node {survivor} without quorum:\n{}",
        last.1
    );
    assert!(
        last.1
            .starts_with(&format!("NO QUORUM: node {survivor} reaches no quorum")),
        "{}",
        last.1
    );
    let (code, stdout, _) = cmactl(&cluster, survivor, &["--json", "status"]);
    assert_eq!(code, 5);
    let view: serde_json::Value = serde_json::from_str(&stdout).expect("status json");
    assert_eq!(view["freshness"]["kind"], "no_quorum", "{stdout}");
    let (_, _, stderr) = cmactl(&cluster, survivor, &["--json", "hosts"]);
    assert!(stderr.contains("\"no_quorum\""), "{stderr}");
}
