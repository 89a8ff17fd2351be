//! Regression test for what the fault-injection suite's power cuts found (issue 25): a
//! node whose data directory sits on lossyfs (a FUSE layer that loses every write and
//! directory change not yet fsynced) builds snapshots and purges its log, loses power, and
//! must start again with every acknowledged append. Before the directories were created
//! durably, the cut removed the `snapshot` directory (its entry was never synced) while
//! the log stayed purged, and the node never started again.
//!
//! Needs root and /dev/fuse (skipped otherwise, unless `RINGWATCH_LAB_REQUIRED` is set).

use integration::cluster::{check_exactly_once, packet, read_all, Cluster, CmaCluster, TEST_RAFT};
use integration::lossy::{unavailable, LossyDisk};
use std::time::Duration;

const SESSION: u64 = 9;

#[test]
fn a_node_starts_again_after_a_power_cut_with_every_acknowledged_append() {
    if let Some(why) = unavailable() {
        if std::env::var_os("RINGWATCH_LAB_REQUIRED").is_some() {
            panic!("power cuts required (RINGWATCH_LAB_REQUIRED) but unavailable: {why}");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    let config =
        format!("{TEST_RAFT}snapshot_after_logs = 100\nlogs_to_keep_after_snapshot = 10\n");
    let mut cluster = Cluster::new(67, 1, &config);
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = cluster.node(1).data_dir.clone();
    let mut disk = LossyDisk::mount(
        &scratch.path().join("backing"),
        &data,
        &scratch.path().join("ctl"),
        &scratch.path().join("lossyfs.log"),
    )
    .expect("lossyfs");
    cluster.form();
    let client = cluster.client();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut acked = Vec::new();
    runtime.block_on(async {
        for b in 0..400u64 {
            let seqs: Vec<u64> = (b * 3..b * 3 + 3).collect();
            let batch = seqs.iter().map(|&s| packet(SESSION, s)).collect();
            client.append(batch).await.expect("append");
            acked.push(seqs);
        }
    });
    let status = cluster.status(1).expect("status");
    assert!(
        status["snapshot_index"].as_u64().unwrap_or(0) > 0
            && status["purged_index"].as_u64().unwrap_or(0) > 0,
        "no snapshot and purge before the cut: {status}"
    );
    cluster.kill(1);
    let lost = disk.power_cut().expect("power cut");
    eprintln!(
        "lossyfs threw away {} operations ({} bytes) at the cut",
        lost.ops, lost.bytes
    );
    cluster.start(1);
    cluster.wait_leader(Duration::from_secs(60));
    let client = cluster.client();
    let stored = runtime.block_on(read_all(&client));
    check_exactly_once(&stored, SESSION, &acked);
}
