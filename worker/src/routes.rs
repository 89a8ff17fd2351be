//! Admin API routes over the worker's replicated tables: `/v1/status`, `/v1/hosts`,
//! `/v1/rings`, `/v1/topology`, `/v1/failures`, `/v1/events`, and `POST /v1/probe` (an authenticated UDP
//! echo from the answering node to a host's nanoprobe). Served by every node from its own replica;
//! each answer says which node answered, whether it leads, and its applied index, so an
//! operator sees how far a follower lags.

use super::tables::{self, RawRow};
use crate::door::Door;
use api::probe::{ProbeAnswer, ProbeRequest};
use api::views::{Answer, HostStatus, RingRow, WorkerStatus};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

/// Reads the rows with `read` after finding out how fresh they will be (on the leader, a
/// read barrier first), and says so in the answer.
async fn answer<T>(node: &Door, read: impl FnOnce(&Door) -> T) -> Json<Answer<T>> {
    let freshness = node.freshness().await;
    let data = read(node);
    Json(Answer {
        node_id: node.id(),
        is_leader: node.is_leader(),
        leader_id: node.leader_id(),
        applied_index: node.applied_index(),
        freshness: Some(freshness),
        data,
    })
}

/// What `POST /v1/probe` needs to seal an echo request.
#[derive(Clone)]
pub struct ProbeContext {
    /// The nanoprobes' key ring.
    pub keys: std::sync::Arc<proto::KeyRing>,
    /// The worker's command sealer (same wire host id and session as its commands).
    pub sealer: super::commander::SharedSealer,
}

#[derive(Clone)]
struct ApiState {
    node: Door,
    probe: Option<ProbeContext>,
}

/// The worker routes, to merge into the admin router. Without a probe context (no
/// `[worker]` section), `POST /v1/probe` answers 503.
pub fn router(node: Door, probe: Option<ProbeContext>) -> Router {
    let probe_routes = Router::new()
        .route("/v1/probe", axum::routing::post(probe_host))
        .with_state(ApiState {
            node: node.clone(),
            probe,
        });
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/hosts", get(hosts))
        .route("/v1/rings", get(rings))
        .route("/v1/topology", get(topology))
        .route("/v1/failures", get(failures))
        .route("/v1/events", get(events))
        .with_state(node)
        .merge(probe_routes)
}

async fn probe_host(
    State(api): State<ApiState>,
    Json(request): Json<ProbeRequest>,
) -> Result<Json<Answer<ProbeAnswer>>, (axum::http::StatusCode, String)> {
    use axum::http::StatusCode;
    let Some(ctx) = api.probe.clone() else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs no worker ([worker] section missing)".into(),
        ));
    };
    let addr = tables::host(&api.node.state(), request.host).map(|h| h.addr);
    let Some(addr) = addr else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("unknown host {}", request.host),
        ));
    };
    let timeout = std::time::Duration::from_millis(request.timeout_ms.unwrap_or(2000).min(10_000));
    let outcome = echo(&ctx, addr, timeout).await.map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("probe failed: {e}"),
        )
    })?;
    let answer_data = ProbeAnswer {
        host: request.host,
        addr,
        outcome: if outcome.is_some() {
            "reachable"
        } else {
            "timeout"
        }
        .into(),
        rtt_us: outcome.map(|d| d.as_micros() as u64),
    };
    // A probe's answer is about the host, not the replicated state: no read barrier.
    let node = &api.node;
    Ok(Json(Answer {
        node_id: node.id(),
        is_leader: node.is_leader(),
        leader_id: node.leader_id(),
        applied_index: node.applied_index(),
        freshness: None,
        data: answer_data,
    }))
}

/// Sends one sealed `EchoRequest` and waits for the matching `EchoReply`.
async fn echo(
    ctx: &ProbeContext,
    addr: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> std::io::Result<Option<std::time::Duration>> {
    use proto::{Body, Verifier};
    let bind: std::net::SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    let nonce = rand::random::<u64>();
    let mut datagram = Vec::new();
    super::commander::seal_shared(&ctx.sealer, &Body::EchoRequest { nonce }, &mut datagram)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut verifier = Verifier::new(ctx.keys.clone(), 16);
    let started = tokio::time::Instant::now();
    socket.send_to(&datagram, addr).await?;
    let mut buf = vec![0u8; proto::MAX_DATAGRAM + 1];
    let deadline = started + timeout;
    loop {
        let received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
        let Ok(received) = received else {
            return Ok(None);
        };
        let (len, _) = received?;
        if let Ok(v) = verifier.verify(&buf[..len]) {
            if v.body == (Body::EchoReply { nonce }) {
                return Ok(Some(started.elapsed()));
            }
        }
    }
}

async fn status(State(node): State<Door>) -> Json<Answer<WorkerStatus>> {
    answer(&node, worker_status).await
}

fn worker_status(node: &Door) -> WorkerStatus {
    let (counts, open_failures, offset, queue_next) = {
        let state = node.state();
        (
            tables::host_status_counts(&state),
            tables::open_failure_count(&state),
            state.consumer_offset(super::CONSUMER).unwrap_or(0),
            state.next_offset(),
        )
    };
    let count = |s: HostStatus| counts.get(s.as_str()).copied().unwrap_or(0);
    WorkerStatus {
        offset,
        queue_next,
        backlog: queue_next.saturating_sub(offset),
        hosts_up: count(HostStatus::Up) + count(HostStatus::Suspect),
        hosts_dead: count(HostStatus::Dead),
        hosts_left: count(HostStatus::Left),
        hosts_agent_down: count(HostStatus::AgentDown),
        open_failures,
    }
}

async fn hosts(State(node): State<Door>) -> Json<Answer<Vec<RawRow>>> {
    answer(&node, |n| tables::raw_hosts(&n.state())).await
}

async fn rings(State(node): State<Door>) -> Json<Answer<Vec<RingRow>>> {
    answer(&node, |n| tables::rings(&n.state())).await
}

async fn topology(State(node): State<Door>) -> Json<Answer<api::topology::TopologyView>> {
    answer(&node, |n| tables::topology(&n.state())).await
}

/// `?all=true` includes closed failures; default: open ones and the last 100 closed.
#[derive(Debug, Deserialize)]
struct FailureQuery {
    #[serde(default)]
    all: bool,
}

async fn failures(
    State(node): State<Door>,
    Query(q): Query<FailureQuery>,
) -> Json<Answer<Vec<RawRow>>> {
    let closed_kept = (!q.all).then_some(CLOSED_FAILURES_SHOWN);
    answer(&node, |n| tables::raw_failures(&n.state(), closed_kept)).await
}

/// Closed failures `GET /v1/failures` shows without `?all=true` (the newest ones).
const CLOSED_FAILURES_SHOWN: usize = 100;

/// `?since=ID` returns events with a larger id; `?limit=N` (default 1000) the first N.
#[derive(Debug, Deserialize)]
struct EventQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

async fn events(
    State(node): State<Door>,
    Query(q): Query<EventQuery>,
) -> Json<Answer<Vec<RawRow>>> {
    let since = q.since.unwrap_or(0);
    let limit = q.limit.unwrap_or(1000).min(10_000);
    answer(&node, |n| {
        tables::raw_events_from(&n.state(), since.saturating_add(1), limit)
    })
    .await
}
