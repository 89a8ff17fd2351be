//! Must show (a): 10,000 appended batches while the leader is SIGKILLed twice; every batch
//! whose append returned success is read back exactly once, in order, from the new leader.
//! Each new leader is elected by the prompt election (a survivor counts the election it
//! called in `cma_raft_prompt_elections_total`), not by openraft's randomised timers.

use integration::cluster::{check_exactly_once, packet, read_all, Cluster, CmaCluster, TEST_RAFT};
use integration::reader::{sample, scrape};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BATCHES: u64 = 10_000;
const PER_BATCH: u64 = 3;
const SESSION: u64 = 1;

#[test]
fn acknowledged_appends_survive_two_leader_kills() {
    let config =
        format!("{TEST_RAFT}snapshot_after_logs = 3000\nlogs_to_keep_after_snapshot = 500\n");
    let mut cluster = Cluster::new(61, 3, &config);
    cluster.form();
    let client = cluster.client();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let progress = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(Vec::<Vec<u64>>::new()));
    let appender = {
        let (client, progress, acked) = (client.clone(), progress.clone(), acked.clone());
        runtime.spawn(async move {
            let mut failures = 0usize;
            for b in 0..BATCHES {
                let seqs: Vec<u64> = (b * PER_BATCH..(b + 1) * PER_BATCH).collect();
                let batch: Vec<_> = seqs.iter().map(|&s| packet(SESSION, s)).collect();
                // Like a packet-reader: retry a failed batch a few times, then give up on it.
                let mut ok = false;
                for _ in 0..3 {
                    match client.append(batch.clone()).await {
                        Ok(_) => {
                            ok = true;
                            break;
                        }
                        Err(e) => {
                            failures += 1;
                            eprintln!("append of batch {b} failed: {e}");
                        }
                    }
                }
                if ok {
                    acked.lock().expect("acked").push(seqs);
                }
                progress.store(b as usize + 1, Ordering::Relaxed);
            }
            failures
        })
    };

    // Kill the leader at ~20% and ~60% of the run; restart each killed node after a pause
    // so the second kill still leaves a quorum.
    for at in [BATCHES / 5, BATCHES * 3 / 5] {
        let deadline = Instant::now() + Duration::from_secs(120);
        while (progress.load(Ordering::Relaxed) as u64) < at {
            assert!(Instant::now() < deadline, "appends stalled before {at}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let leader = cluster.wait_leader(Duration::from_secs(30));
        eprintln!(
            "SIGKILL leader {leader} at batch {}",
            progress.load(Ordering::Relaxed)
        );
        let survivors: Vec<u64> = cluster
            .running()
            .into_iter()
            .filter(|&id| id != leader)
            .collect();
        let before = prompt_elections(&cluster, &survivors);
        cluster.kill(leader);
        // The TEST_RAFT lease is 2.4 s; its randomised timers would call the election 3.6 to
        // 4.8 s after the last heartbeat, so a prompt election is the first to fire.
        let deadline = Instant::now() + Duration::from_secs(30);
        while prompt_elections(&cluster, &survivors) <= before {
            assert!(
                Instant::now() < deadline,
                "no survivor called a prompt election after leader {leader} was killed"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(2));
        cluster.start(leader);
    }

    let failures = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(240), appender).await })
        .expect("appends finished in time")
        .expect("appender task");
    let acked = acked.lock().expect("acked").clone();
    eprintln!(
        "{} of {BATCHES} batches acknowledged, {failures} failed attempts",
        acked.len()
    );
    assert!(
        acked.len() as u64 >= BATCHES * 9 / 10,
        "too few batches acknowledged"
    );

    let leader = cluster.wait_leader(Duration::from_secs(30));
    let stored = runtime.block_on(read_all(&client));
    eprintln!("read {} packets back through leader {leader}", stored.len());
    check_exactly_once(&stored, SESSION, &acked);
    assert!(stored.len() as u64 <= BATCHES * PER_BATCH);

    // Every replica converges on the same queue.
    let want = cluster.status(leader).expect("leader status")["queue"]["next_offset"].clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in cluster.running() {
        loop {
            let got = cluster
                .status(id)
                .map(|s| s["queue"]["next_offset"].clone());
            if got.as_ref() == Some(&want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} stuck at {got:?}, want {want}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Elections called by the prompt election on `nodes`, summed.
fn prompt_elections(cluster: &Cluster, nodes: &[u64]) -> f64 {
    nodes
        .iter()
        .filter_map(|&id| scrape(cluster.node(id).admin))
        .map(|text| sample(&text, "cma_raft_prompt_elections_total"))
        .sum()
}
