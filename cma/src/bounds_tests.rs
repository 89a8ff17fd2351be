//! The node's overload bounds driven to their limits on a real one-node cluster (real
//! Raft, real segment log, real TCP server), with the Raft log's fdatasync held back by a
//! sync hook so that every proposal stays in flight until the test lets it through.

use crate::config::Config;
use queue::rpc::{Connection, NoPeer, Reply, Request};
use queue::{Command, QueuedPacket};
use replica::limits::LimitsConfig;
use replica::log_store::testing::Gate;
use replica::log_store::SyncHook;
use replica::{Node, ProposeError, MAX_REQUESTS_IN_FLIGHT};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET_HEX: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

struct Cluster {
    node: Node,
    gate: Arc<Gate>,
    _dir: tempfile::TempDir,
}

/// A one-node cluster on 127.0.0.1 whose log syncs wait at `gate` while it is closed.
async fn one_node(raft_section: &str) -> Cluster {
    one_node_with(raft_section, "").await
}

/// [`one_node`] with more TOML sections (`[queue]`...).
async fn one_node_with(raft_section: &str, more: &str) -> Cluster {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster.key");
    std::fs::write(&secret, SECRET_HEX).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "node_id = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\
         cluster_secret_file = \"{}\"\n[raft]\n{raft_section}\n{more}\n",
        dir.path().join("data").display(),
        secret.display(),
    );
    let config = Config::parse(&text).unwrap();
    let budget = LimitsConfig::default().budget(4096).unwrap();
    let settings = config.node_settings(budget).unwrap();
    let gate = Arc::new(Gate::default());
    let hook_gate = gate.clone();
    let hook: SyncHook = Arc::new(move |covered| hook_gate.wait(covered));
    let node = replica::start_with(settings, Some(hook)).await.unwrap();
    let members = [(1, node.advertise().clone())].into_iter().collect();
    node.initialize(members).await.unwrap();
    wait_for("leader", || node.is_leader()).await;
    // One write with the gate open, so the cluster is fully up.
    node.propose(Command::CommitOffset {
        consumer: "warm".into(),
        offset: 0,
    })
    .await
    .unwrap();
    Cluster {
        node,
        gate,
        _dir: dir,
    }
}

/// Waits (at most 20 s) until `done` holds.
async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn batch(session: u64) -> Vec<QueuedPacket> {
    vec![QueuedPacket {
        sender: 7,
        session,
        seq: 1,
        received_at_us: 1,
        source: "127.0.0.1:9".parse().unwrap(),
        report: vec![1; 64],
    }]
}

fn close(gate: &Gate) {
    gate.closed.store(true, Ordering::SeqCst);
}

/// With every slot held by a proposal that cannot commit, a client's append waits
/// `max_proposal_wait` and is answered `Busy`, without being proposed; the node's own
/// worker is never shed; once the syncs go through, the admitted appends commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_calls_beyond_the_proposal_slots_are_shed() {
    let c = one_node("max_inflight_proposals = 4\nmax_proposal_wait_ms = 200").await;
    let metrics = c.node.metrics().clone();
    close(&c.gate);
    let appends: Vec<_> = (0..10u64)
        .map(|session| {
            let node = c.node.clone();
            tokio::spawn(async move { node.append(batch(session)).await })
        })
        .collect();
    // 4 in Raft (held at the sync), 6 shed after 200 ms.
    wait_for("6 appends shed", || metrics.proposals_shed.get() == 6).await;
    assert!(
        !c.gate.entered.lock().unwrap().is_empty(),
        "no sync was held"
    );
    // The worker's own proposal waits for a slot instead of being shed.
    let worker = {
        let node = c.node.clone();
        tokio::spawn(async move {
            node.propose(Command::CommitOffset {
                consumer: "worker".into(),
                offset: 1,
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!worker.is_finished(), "the worker's proposal did not wait");
    assert_eq!(metrics.proposals_shed.get(), 6, "the worker was shed");
    assert_eq!(metrics.proposals_waited.get(), 7);
    c.gate.release();

    let mut stored = 0;
    let mut busy = 0;
    for append in appends {
        match append.await.unwrap() {
            Ok(result) => stored += result.stored,
            Err(ProposeError::Busy { waited_ms }) => {
                assert_eq!(waited_ms, 200);
                busy += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((stored, busy), (4, 6));
    worker.await.unwrap().unwrap();
    // Only the admitted appends reached the queue.
    assert_eq!(c.node.state().summary().depth, 4);
    c.node.shutdown().await;
}

/// One client connection sending far more requests than the server serves at once: the
/// server has exactly `MAX_REQUESTS_IN_FLIGHT` of them in flight and stops reading the
/// rest until answers free room; then every request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_not_read_beyond_its_in_flight_limit() {
    let c = one_node("max_inflight_proposals = 64\nmax_proposal_wait_ms = 60000").await;
    let metrics = c.node.metrics().clone();
    let secret = c.node.settings().secret;
    let conn = Arc::new(
        Connection::<NoPeer, NoPeer>::open(c.node.local_addr(), &secret, Duration::from_secs(5))
            .await
            .unwrap(),
    );
    close(&c.gate);
    let sent = MAX_REQUESTS_IN_FLIGHT + 64;
    let calls: Vec<_> = (0..sent as u64)
        .map(|session| {
            let conn = conn.clone();
            tokio::spawn(async move {
                conn.call(Request::Append(batch(session)), Duration::from_secs(60))
                    .await
            })
        })
        .collect();
    wait_for("the connection to reach its limit", || {
        metrics.requests_in_flight.get() == MAX_REQUESTS_IN_FLIGHT as i64
            && metrics.connection_reads_paused.get() >= 1
    })
    .await;
    // The rest stay unread while nothing is answered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metrics.requests_in_flight.get(),
        MAX_REQUESTS_IN_FLIGHT as i64
    );
    c.gate.release();
    for call in calls {
        match call.await.unwrap() {
            Ok(Reply::Appended(result)) => assert_eq!(result.stored, 1),
            other => panic!("unexpected answer: {other:?}"),
        }
    }
    wait_for("no request in flight", || {
        metrics.requests_in_flight.get() == 0
    })
    .await;
    assert_eq!(c.node.state().summary().depth, sent as u64);
    c.node.shutdown().await;
}

/// A leader whose queue holds its byte budget refuses appends before proposing them: the
/// Raft log does not grow with refused appends (nor do snapshots and memory with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_the_leader_without_a_raft_entry() {
    let c = one_node_with("", "[queue]\nmax_bytes = 2048").await;
    let metrics = c.node.metrics().clone();
    let mut session = 0;
    let refused = loop {
        session += 1;
        assert!(session < 1000, "the budget never filled");
        match c.node.append(batch(session)).await {
            Ok(_) => continue,
            Err(e @ ProposeError::QueueFull { .. }) => break e,
            Err(e) => panic!("unexpected error: {e}"),
        }
    };
    assert!(refused.to_string().contains("of 2048 bytes"), "{refused}");
    let last_log = || c.node.raft_metrics().borrow().last_log_index;
    let before = last_log();
    for more in 0..5 {
        let e = c.node.append(batch(10_000 + more)).await.unwrap_err();
        assert!(matches!(e, ProposeError::QueueFull { .. }), "{e}");
    }
    assert_eq!(last_log(), before, "refused appends reached the Raft log");
    assert_eq!(metrics.queue_full_early.get(), 6);
    assert_eq!(metrics.queue_full.get(), 6);
    c.node.shutdown().await;
}
