//! Must show (b): a node whose data directory is wiped rejoins by installing a snapshot
//! (its peers have purged the log it would need) and then serves as a full voter.

use integration::cluster::{check_exactly_once, packet, read_all, Cluster, CmaCluster, TEST_RAFT};
use std::time::{Duration, Instant};

const SESSION: u64 = 2;

#[test]
fn wiped_node_catches_up_by_snapshot() {
    let config =
        format!("{TEST_RAFT}snapshot_after_logs = 200\nlogs_to_keep_after_snapshot = 20\n");
    let mut cluster = Cluster::new(62, 3, &config);
    cluster.form();
    let client = cluster.client();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let mut acked = Vec::new();
    let append = |range: std::ops::Range<u64>, acked: &mut Vec<Vec<u64>>| {
        runtime.block_on(async {
            for b in range {
                let seqs: Vec<u64> = (b * 4..b * 4 + 4).collect();
                let batch = seqs.iter().map(|&s| packet(SESSION, s)).collect();
                client.append(batch).await.expect("append");
                acked.push(seqs);
            }
        })
    };
    append(0..1000, &mut acked);

    let leader = cluster.wait_leader(Duration::from_secs(30));
    let status = cluster.status(leader).expect("leader status");
    assert!(
        status["purged_index"].as_u64().unwrap_or(0) > 0,
        "leader should have purged its log: {status}"
    );
    let victim = cluster
        .running()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    cluster.kill(victim);
    cluster.wipe(victim);
    // More entries while it is down, then it comes back empty.
    append(1000..1200, &mut acked);
    cluster.start(victim);

    let want = cluster.status(leader).expect("leader status")["queue"]["next_offset"].clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = cluster.status(victim).expect("victim status");
        if s["queue"]["next_offset"] == want {
            assert!(
                s["snapshots_installed"].as_u64().unwrap_or(0) >= 1,
                "caught up without a snapshot: {s}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "wiped node did not catch up: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The rejoined node is a working voter: with the third node down, the leader and it
    // still form a quorum and commit.
    let other = cluster
        .running()
        .into_iter()
        .find(|&id| id != leader && id != victim)
        .expect("third node");
    cluster.kill(other);
    append(1200..1300, &mut acked);
    let stored = runtime.block_on(read_all(&client));
    check_exactly_once(&stored, SESSION, &acked);
    assert_eq!(stored.len(), 1300 * 4);
}
