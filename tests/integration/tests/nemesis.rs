//! The fault-injection suite, short seeded runs (docs/reliability.md): 3 and 5 real `cma`
//! nodes in network namespaces, concurrent appends, reads and offset commits, real
//! nanoprobes reporting through a real packet-reader to the workers, and a nemesis of
//! partitions, SIGKILLs, pauses, membership changes, power cuts and slow disks; the
//! checker and the worker replay must find no anomaly. Needs root (the network lab);
//! `bench/nemesis.sh` runs the long version.
//!
//! The seed is printed; `RINGWATCH_NEMESIS_SEED=<seed>` replays the same fault schedule.

use integration::nemesis::{config_from_env, run};
use integration::require_lab;

fn run_and_check(tag: &str, nodes: u64, seconds: u64, whole_log: bool) {
    let mut config = config_from_env(tag, nodes, seconds);
    if whole_log && std::env::var("RINGWATCH_NEMESIS_SNAPSHOT_AFTER_LOGS").is_err() {
        // No snapshot in the run: the worker replay covers it whole.
        config.snapshot_after_logs = 10_000_000;
    }
    eprintln!(
        "nemesis: seed {} ({} nodes, {:?})",
        config.seed, config.nodes, config.duration
    );
    let report = run(&config);
    let text = report.render(&config);
    println!("{text}");
    assert!(
        report.anomalies.is_empty(),
        "anomalies found (replay with RINGWATCH_NEMESIS_SEED={}):\n{text}",
        config.seed
    );
    assert!(
        report.counts.packets_acked > 0 && report.counts.reads_ok > 0,
        "the workload did nothing:\n{text}"
    );
}

#[test]
fn three_nodes_under_faults_lose_nothing_and_serve_no_stale_read() {
    require_lab!();
    // The whole log kept: the worker replay covers every leader change of the run.
    run_and_check("ns3", 3, 75, true);
}

#[test]
fn five_nodes_under_faults_lose_nothing_and_serve_no_stale_read() {
    require_lab!();
    // Snapshots and purges under the faults: the replay covers the logs' tails.
    run_and_check("ns5", 5, 75, false);
}
