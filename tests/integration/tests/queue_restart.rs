//! Crash safety: SIGKILL every node at once, restart them all; every acknowledged append
//! is still there (restored from the snapshot file plus the replayed log), and the
//! consumer offsets and tables survive too.

use integration::cluster::{check_exactly_once, packet, read_all, Cluster, CmaCluster, TEST_RAFT};
use std::time::Duration;

const SESSION: u64 = 4;

#[test]
fn whole_cluster_sigkill_loses_nothing() {
    let config =
        format!("{TEST_RAFT}snapshot_after_logs = 150\nlogs_to_keep_after_snapshot = 30\n");
    let mut cluster = Cluster::new(64, 3, &config);
    cluster.form();
    let client = cluster.client();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let mut acked = Vec::new();
    runtime.block_on(async {
        for b in 0..500u64 {
            let seqs: Vec<u64> = (b * 5..b * 5 + 5).collect();
            let batch = seqs.iter().map(|&s| packet(SESSION, s)).collect();
            client.append(batch).await.expect("append");
            acked.push(seqs);
        }
        client
            .commit_offset("audit", 100)
            .await
            .expect("commit offset");
    });

    for id in cluster.running() {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.start(id);
    }
    cluster.wait_leader(Duration::from_secs(60));

    let client = cluster.client();
    let stored = runtime.block_on(read_all(&client));
    // The consumer's offset survived: everything below it was trimmed, nothing else.
    assert_eq!(stored.first().map(|(o, _)| *o), Some(100));
    assert_eq!(stored.len(), 2500 - 100);
    let still_stored: Vec<Vec<u64>> = acked.into_iter().skip(20).collect();
    check_exactly_once(&stored, SESSION, &still_stored);
    // Retransmissions of stored reports are still recognised after the restart.
    let r = runtime
        .block_on(client.append(vec![packet(SESSION, 2499)]))
        .expect("append");
    assert_eq!((r.stored, r.duplicates), (0, 1));
}
