//! Must show: 3 `cma` nodes, 2 packet-readers and a load generator of simulated nanoprobes
//! (real envelopes, real keys, retransmission until ACK). While the CMA leader is SIGKILLed
//! and one packet-reader is restarted, every report any simulated nanoprobe saw ACKed is in
//! the queue exactly once.

use integration::cluster::{read_all, Cluster, CmaCluster, TEST_RAFT};
use integration::procs::{spawn, wait_until};
use integration::reader::{sample, ReaderProc};
use proto::{KeyId, KeyRing};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const NET: u8 = 72;
const HOSTS: u64 = 300;
const RATE: u64 = 600;
const LOAD_SECS: u64 = 24;

fn total_acks(readers: &[ReaderProc]) -> f64 {
    readers
        .iter()
        .filter_map(|r| integration::reader::scrape(r.metrics))
        .map(|t| sample(&t, "ringwatch_reader_acks_total"))
        .sum()
}

#[test]
fn acked_reports_survive_leader_kill_and_reader_restart() {
    let mut cluster = Cluster::new(NET, 3, TEST_RAFT);
    cluster.form();
    let dir = cluster.dir.path().to_path_buf();
    let key_file = dir.join("keys.toml");
    KeyRing::write_new_key_file(&key_file, KeyId(1)).expect("key file");
    let cluster_key = dir.join("cluster.key");
    let mut readers: Vec<ReaderProc> = (1..=2)
        .map(|n| ReaderProc::new(&dir, NET, n, &key_file, &cluster_key, &cluster.raft_addrs()))
        .collect();
    for r in &mut readers {
        r.start();
    }

    let acked_file = dir.join("acked.txt");
    let loadgen_log = dir.join("loadgen.log");
    let args: Vec<String> = vec![
        "--reader".into(),
        readers[0].listen.to_string(),
        "--reader".into(),
        readers[1].listen.to_string(),
        "--key-file".into(),
        key_file.display().to_string(),
        "--hosts".into(),
        HOSTS.to_string(),
        "--rate".into(),
        RATE.to_string(),
        "--duration".into(),
        LOAD_SECS.to_string(),
        "--drain".into(),
        "90".into(),
        "--bind".into(),
        format!("127.{NET}.2.1:0"),
        "--acked-out".into(),
        acked_file.display().to_string(),
        "--progress".into(),
        "2".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut loadgen = spawn(
        &integration::procs::binary("loadgen"),
        &args,
        &[],
        &loadgen_log,
    )
    .expect("spawn loadgen");
    let started = Instant::now();

    // Reports flow through both readers before anything is broken.
    assert!(
        wait_until(Duration::from_secs(30), || total_acks(&readers) >= 500.0),
        "no ACKs before the faults; loadgen log:\n{}",
        loadgen.log_text()
    );
    let leader = cluster.wait_leader(Duration::from_secs(30));
    eprintln!("t={:?}: SIGKILL CMA leader {leader}", started.elapsed());
    cluster.kill(leader);

    // Restart reader 1 (graceful stop: in-flight batches finish or are abandoned unACKed)
    // while the cluster elects a new leader.
    std::thread::sleep(Duration::from_secs(2));
    eprintln!("t={:?}: restarting packet-reader 1", started.elapsed());
    readers[0].stop_gracefully(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    readers[0].start();
    eprintln!("t={:?}: restarting CMA node {leader}", started.elapsed());
    cluster.start(leader);

    let acks_after_faults = total_acks(&readers);
    assert!(
        wait_until(Duration::from_secs(60), || total_acks(&readers)
            >= acks_after_faults + 500.0),
        "ACKs did not resume after the faults"
    );

    let status = loadgen.wait_timeout(Duration::from_secs(LOAD_SECS + 180));
    let log = loadgen.log_text();
    eprintln!("loadgen:\n{log}");
    assert!(
        status.is_some_and(|s| s.success()),
        "loadgen did not get every report ACKed ({status:?})"
    );

    // Every ACKed report is stored exactly once.
    let acked: Vec<(u64, u64, u64)> = std::fs::read_to_string(&acked_file)
        .expect("acked file")
        .lines()
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .map(|x| x.parse().expect("number"))
                .collect();
            (f[0], f[1], f[2])
        })
        .collect();
    assert!(
        acked.len() as u64 >= RATE * LOAD_SECS / 2,
        "too few reports ACKed: {}",
        acked.len()
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let stored = runtime.block_on(read_all(&cluster.client()));
    let mut copies: HashMap<(u64, u64, u64), usize> = HashMap::new();
    for (offset, p) in &stored {
        *copies.entry((p.sender, p.session, p.seq)).or_default() += 1;
        let r = proto::decode_report(&p.report)
            .unwrap_or_else(|e| panic!("offset {offset}: stored report undecodable: {e}"));
        assert_eq!(r.id, p.seq, "offset {offset}: wrong report id");
    }
    let twice: Vec<_> = copies.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let missing: Vec<_> = acked.iter().filter(|k| !copies.contains_key(k)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} ACKed reports missing from the queue, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "{} reports ACKed, {} stored, all ACKed reports stored exactly once",
        acked.len(),
        stored.len()
    );
    for r in &mut readers {
        r.stop_gracefully(Duration::from_secs(60));
    }
}
