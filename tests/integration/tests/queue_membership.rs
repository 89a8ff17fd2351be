//! Must show (c): a 4th node is added and the leader removed while appends go on; no
//! acknowledged append is lost and the new membership serves.

use integration::cluster::{check_exactly_once, packet, read_all, Cluster, CmaCluster, TEST_RAFT};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SESSION: u64 = 3;

#[test]
fn add_and_remove_nodes_while_appending() {
    let config =
        format!("{TEST_RAFT}snapshot_after_logs = 500\nlogs_to_keep_after_snapshot = 100\n");
    let mut cluster = Cluster::new(63, 3, &config);
    cluster.form();
    let client = cluster.client();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<Vec<u64>>::new()));
    let appender = {
        let (client, stop, acked) = (client.clone(), stop.clone(), acked.clone());
        runtime.spawn(async move {
            let mut b = 0u64;
            // Bounded: the test stops it, but never run away.
            while !stop.load(Ordering::Relaxed) && b < 200_000 {
                let seqs: Vec<u64> = (b * 2..b * 2 + 2).collect();
                let batch: Vec<_> = seqs.iter().map(|&s| packet(SESSION, s)).collect();
                if client.append(batch).await.is_ok() {
                    acked.lock().expect("acked").push(seqs);
                }
                b += 1;
            }
        })
    };
    let acked_count = || acked.lock().expect("acked").len();
    let wait_progress = |more: usize| {
        let target = acked_count() + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked_count() < target {
            assert!(Instant::now() < deadline, "appends stalled");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    wait_progress(300);
    cluster.add_node(4);
    cluster.start(4);
    cluster.join(4);
    wait_progress(300);

    let leader = cluster.wait_leader(Duration::from_secs(30));
    let remaining = cluster
        .running()
        .into_iter()
        .find(|&id| id != leader)
        .expect("another node");
    cluster.cmactl_retry(
        remaining,
        &["cluster", "remove", "--id", &leader.to_string()],
        Duration::from_secs(60),
    );
    // The removed leader steps down; a new leader among the other three takes over.
    let deadline = Instant::now() + Duration::from_secs(60);
    let new_leader = loop {
        let id = cluster.wait_leader(Duration::from_secs(30));
        if id != leader {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "removed leader {leader} still leads"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    cluster.kill(leader);
    wait_progress(300);
    stop.store(true, Ordering::Relaxed);
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), appender).await })
        .expect("appender stopped")
        .expect("appender task");

    let status = cluster.status(new_leader).expect("status");
    let voters: Vec<u64> = serde_json::from_value(status["voters"].clone()).expect("voters");
    let mut want: Vec<u64> = vec![1, 2, 3, 4]
        .into_iter()
        .filter(|&id| id != leader)
        .collect();
    want.sort_unstable();
    assert_eq!(voters, want, "membership after the changes: {status}");

    let acked = acked.lock().expect("acked").clone();
    let stored = runtime.block_on(read_all(&client));
    check_exactly_once(&stored, SESSION, &acked);

    // The new node holds the same queue.
    let next = status["queue"]["next_offset"].clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = cluster.status(4).expect("node 4 status");
        if s["queue"]["next_offset"] == next {
            break;
        }
        assert!(Instant::now() < deadline, "node 4 did not converge: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
