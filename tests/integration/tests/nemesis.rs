//! The fault-injection suite, short seeded runs (docs/reliability.md): 3 and 5 real `cma`
//! nodes in network namespaces, concurrent appends, reads and offset commits, and a
//! nemesis of partitions, SIGKILLs and pauses; the checker must find no anomaly. Needs
//! root (the network lab); `bench/nemesis.sh` runs the long version.
//!
//! The seed is printed; `RINGWATCH_NEMESIS_SEED=<seed>` replays the same fault schedule.

use integration::nemesis::{config_from_env, run};
use integration::require_lab;

fn run_and_check(tag: &str, nodes: u64, seconds: u64) {
    let config = config_from_env(tag, nodes, seconds);
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
    run_and_check("ns3", 3, 75);
}

#[test]
fn five_nodes_under_faults_lose_nothing_and_serve_no_stale_read() {
    require_lab!();
    run_and_check("ns5", 5, 75);
}
