//! Pre-authentication attacks against all three nodes of a real cluster at once, each node
//! running under exactly the descriptor limit `systemd/cma.service` ships (`LimitNOFILE`,
//! read from the unit), or under 1,024 to show the budget protecting storage when the limit
//! is low: idle, slow and oversized connections
//! on the Raft/queue port and slow-header requests on the admin port, while a genuine
//! `QueueClient` keeps appending. Every node must stay up, keep committing, stay under a
//! memory bound, and count what it refused.
//!
//! Prints, per node: peak RSS, refusals by reason; and the genuine append p50/p99 during
//! the attack. `cargo test --release -p integration --test attack -- --nocapture` gives
//! the figures quoted in docs/security.md.

use integration::attack::{self, Class, Stats};
use integration::cluster::{packet, Cluster, CmaCluster, TEST_RAFT};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ceiling on a node's resident memory during any pre-authentication attack.
const RSS_BOUND: u64 = 200 * 1024 * 1024;

/// Set (by `.ci/run`) when the test must run: a descriptor limit too low for it fails the
/// test instead of skipping it.
const REQUIRED_ENV: &str = "RINGWATCH_ATTACK_REQUIRED";

/// The `LimitNOFILE=` value of the shipped CMA unit, read from the file so the test cannot
/// drift from what operators get.
fn shipped_nofile() -> u64 {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/../../systemd/cma.service");
    let text = std::fs::read_to_string(unit).expect("read systemd/cma.service");
    let values: Vec<u64> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("LimitNOFILE="))
        .map(|v| v.trim().parse().expect("LimitNOFILE is a number"))
        .collect();
    assert_eq!(values.len(), 1, "one LimitNOFILE= line in {unit}");
    values[0]
}

struct Plan {
    net: u8,
    /// The nodes' RLIMIT_NOFILE, soft and hard, set before exec as systemd does.
    nofile: u64,
    attack: Duration,
    /// Connections per node on the Raft/queue port, by class.
    queue: &'static [(Class, usize)],
    /// Slow-header connections per node on the admin port.
    admin: usize,
}

fn scrape(admin: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(5)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

/// The lines of a metrics scrape about refusals and handshake failures.
fn refusal_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            !l.starts_with('#') && (l.contains("refused") || l.contains("connection_errors"))
        })
        .map(str::to_string)
        .collect()
}

fn run(plan: Plan) {
    let per_node: usize = plan.queue.iter().map(|(_, n)| n).sum::<usize>() + plan.admin;
    let need = (per_node as u64) * 3 + 1024;
    let own = attack::raise_own_nofile(need);
    // The nodes inherit this process's hard limit, and only a process with
    // CAP_SYS_RESOURCE could give them more.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    if own < need || hard < plan.nofile {
        let why = format!(
            "this test needs {need} descriptors for its attackers and a hard RLIMIT_NOFILE of \
             at least {} for the nodes; it got {own} and a hard limit of {hard} (raise \
             `ulimit -Hn`, or run as root with CAP_SYS_RESOURCE)",
            plan.nofile
        );
        assert!(
            std::env::var(REQUIRED_ENV).as_deref() != Ok("1"),
            "{REQUIRED_ENV}=1 but {why}"
        );
        println!("SKIPPED: {why}");
        return;
    }
    let nofile = plan.nofile;
    let mut cluster = Cluster::new(plan.net, 3, TEST_RAFT);
    cluster.nofile = Some(nofile);
    cluster.form();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = cluster.client();
    rt.block_on(client.append(vec![packet(1, 0)]))
        .expect("append before the attack");

    let sources = attack::sources(plan.net, 100);
    let until = Instant::now() + plan.attack;
    let stats = Arc::new(Stats::default());
    let admin_stats = Arc::new(Stats::default());
    let mut tasks = Vec::new();
    {
        let _guard = rt.enter();
        for node in &cluster.nodes {
            for &(class, count) in plan.queue {
                tasks.extend(attack::launch(
                    node.raft,
                    class,
                    count,
                    &sources,
                    until,
                    stats.clone(),
                ));
            }
            tasks.extend(attack::launch(
                node.admin,
                Class::SlowHttp,
                plan.admin,
                &sources,
                until,
                admin_stats.clone(),
            ));
        }
    }
    // The genuine producer: one batch of 10 at a time, latency of each append.
    let started = Instant::now();
    let producer = rt.spawn(async move {
        let mut latencies = Vec::new();
        let mut acked_at = Vec::new();
        let mut failures = 0u32;
        let mut seq = 1;
        while Instant::now() < until {
            let batch: Vec<_> = (seq..seq + 10).map(|s| packet(1, s)).collect();
            let t = Instant::now();
            match tokio::time::timeout(Duration::from_secs(10), client.append(batch)).await {
                Ok(Ok(_)) => {
                    latencies.push(t.elapsed());
                    acked_at.push(started.elapsed());
                    seq += 10;
                }
                _ => failures += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (latencies, acked_at, failures)
    });
    let ids: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    let mut peak = vec![0u64; ids.len()];
    while Instant::now() < until {
        for (i, &id) in ids.iter().enumerate() {
            assert!(cluster.alive(id), "node {id} died during the attack");
            if let Some(rss) = cluster.pid(id).and_then(attack::rss_bytes) {
                peak[i] = peak[i].max(rss);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let (mut latencies, acked_at, failures) = rt.block_on(producer).expect("producer");
    for t in tasks {
        t.abort();
    }
    let connected = stats.connected.load(std::sync::atomic::Ordering::Relaxed);
    let admin_connected = admin_stats
        .connected
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "attack: {} s, per node {:?} + {} slow admin, nodes' RLIMIT_NOFILE {nofile}; \
         attacker connects: queue port {connected}, admin {admin_connected}",
        plan.attack.as_secs(),
        plan.queue,
        plan.admin,
    );
    let p50 = attack::quantile(&mut latencies, 0.50);
    let p99 = attack::quantile(&mut latencies, 0.99);
    println!(
        "genuine appends during the attack: {} acked, {failures} failed, p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    for (i, &id) in ids.iter().enumerate() {
        println!("node {id}: peak RSS {:.1} MiB", peak[i] as f64 / 1048576.0);
        for line in refusal_lines(&scrape(cluster.node(id).admin)) {
            println!("  {line}");
        }
    }
    for &id in &ids {
        assert!(cluster.alive(id), "node {id} died");
    }
    for (i, &id) in ids.iter().enumerate() {
        assert!(
            peak[i] < RSS_BOUND,
            "node {id} peaked at {} MiB",
            peak[i] >> 20
        );
    }
    // Kept committing: acknowledged appends in every quarter of the attack.
    let quarter = plan.attack / 4;
    for q in 0..4u32 {
        let (from, to) = (quarter * q, quarter * (q + 1));
        assert!(
            acked_at.iter().any(|t| *t >= from && *t < to),
            "no genuine append acknowledged between {from:?} and {to:?} of the attack"
        );
    }
    assert!(connected > 0, "the attack never connected");
    // Every node applied the same log after the attack, and counted what it refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let applied: Vec<u64> = ids
            .iter()
            .filter_map(|&id| cluster.status(id))
            .map(|s| s["applied_index"].as_u64().unwrap_or(0))
            .collect();
        if applied.len() == ids.len() && applied.iter().all(|a| *a == applied[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes did not converge: {applied:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let all: String = ids
        .iter()
        .map(|&id| scrape(cluster.node(id).admin))
        .collect();
    // Idle and slow connections end by the handshake timeout or by eviction when the
    // handshake table is full; oversized ones at their first frame header.
    assert!(
        all.contains("reason=\"handshake_timeout\"")
            || all.contains("reason=\"evicted_oldest_handshake\""),
        "no handshake refusal counted"
    );
    if plan.queue.iter().any(|(c, _)| *c == Class::Oversized) {
        assert!(
            all.contains("reason=\"oversized_frame\""),
            "no oversized frame counted"
        );
    }
    if plan.admin > 0 {
        assert!(
            all.contains("cma_admin_refused_total{reason=\"header_timeout\"}"),
            "slow admin headers not counted"
        );
    }
}

/// 2,000 unauthenticated connections against each node at once, every node under the
/// shipped unit's `LimitNOFILE`.
#[test]
fn every_node_survives_2000_unauthenticated_connections_each() {
    run(Plan {
        net: 66,
        nofile: shipped_nofile(),
        attack: Duration::from_secs(20),
        queue: &[
            (Class::Idle, 700),
            (Class::Slow, 600),
            (Class::Oversized, 700),
        ],
        admin: 300,
    });
}

/// With a limit as low as systemd's default (1,024), more idle connections than the
/// limit cannot make storage fail with EMFILE: the budget keeps a reserve.
#[test]
fn a_low_descriptor_limit_is_never_fatal() {
    run(Plan {
        net: 69,
        nofile: 1024,
        attack: Duration::from_secs(12),
        queue: &[(Class::Idle, 1500)],
        admin: 200,
    });
}
