//! The HTTP admin API of a node (axum): cluster membership, status, and Prometheus
//! `/metrics`. `cmactl` is its client.
//!
//! | Method | Path | Body | Effect |
//! |---|---|---|---|
//! | GET | `/metrics` | | Prometheus text format |
//! | GET | `/cluster/status` | | this node's view ([`ClusterStatus`]) |
//! | POST | `/cluster/init` | `{"members":[{"id":1,"raft":"..","admin":".."}]}` | bootstrap (empty list: this node alone) |
//! | POST | `/cluster/add-learner` | `{"id":4,"raft":"..","admin":".."}` | add a learner, wait until it caught up |
//! | POST | `/cluster/promote` | `{"id":4}` | make a learner a voter |
//! | POST | `/cluster/remove` | `{"id":2}` | remove a node from the cluster |
//!
//! Membership changes must reach the leader: another node answers `409` with
//! `leader_admin`, which `cmactl` follows. When a token is configured, every request but
//! `/metrics` needs `Authorization: Bearer <token>` (a non-loopback `admin_listen` without
//! one is refused by the configuration). Requests that make no sense answer 4xx: removing
//! a node that is not a member or promoting an unknown id `404`, promoting a voter `409`.
//!
//! [`serve`] bounds what a client can make the API spend: connections (the descriptor
//! budget), header-read time, request time, concurrent requests and body size; every
//! refusal is counted in `cma_admin_refused{reason}` (docs/security.md).

use api::cluster::{ApiError, ClusterStatus, IdRequest, InitRequest, MemberSpec, StateDigest};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use daemon::metrics::Reason;
use daemon::warn::WarnEvery;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use replica::metrics::NodeGauges;
use replica::{Node, NodeAddr, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What the admin API lets one client spend (from `[limits]` and the descriptor budget).
#[derive(Clone, Copy, Debug)]
pub struct AdminLimits {
    /// Most open connections; more are closed on accept.
    pub max_connections: usize,
    /// Most requests handled at once; more are answered 503.
    pub max_concurrent_requests: usize,
    /// Time to send a request's headers (also while a kept-alive connection idles).
    pub header_read_timeout: Duration,
    /// Time a request may take, body included; answered 408 when exceeded.
    pub request_timeout: Duration,
    /// Largest request body; larger ones are answered 413.
    pub max_body_bytes: usize,
}

impl Default for AdminLimits {
    fn default() -> Self {
        let l = replica::limits::LimitsConfig::default();
        AdminLimits {
            max_connections: l.admin_max_connections,
            max_concurrent_requests: l.admin_max_concurrent_requests,
            header_read_timeout: Duration::from_millis(l.admin_header_read_timeout_ms),
            request_timeout: Duration::from_millis(l.admin_request_timeout_ms),
            max_body_bytes: l.admin_max_body_bytes,
        }
    }
}

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    node: Node,
    registry: Arc<Registry>,
    gauges: Arc<NodeGauges>,
    token: Option<Arc<str>>,
    limits: AdminLimits,
    busy: Arc<Semaphore>,
    refused: Family<Reason, Counter>,
}

impl AdminState {
    /// Builds the state; registers the node's metrics in `registry` (other components may
    /// have registered theirs before).
    pub fn new(
        node: Node,
        mut registry: Registry,
        token: Option<String>,
        limits: AdminLimits,
    ) -> AdminState {
        let gauges = NodeGauges::default();
        gauges.register(&mut registry, node.metrics());
        let refused = Family::<Reason, Counter>::default();
        registry.sub_registry_with_prefix("cma").register(
            "admin_refused",
            "Admin API connections and requests refused, by reason",
            refused.clone(),
        );
        AdminState {
            node,
            registry: Arc::new(registry),
            gauges: Arc::new(gauges),
            token: token.map(Arc::from),
            limits,
            busy: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            refused,
        }
    }

    fn count_refusal(&self, reason: &'static str) {
        self.refused.get_or_create(&Reason::of(reason)).inc();
    }

    /// The node served.
    pub fn node(&self) -> &Node {
        &self.node
    }
}

/// The cluster routes and `/metrics`, with the request limits.
pub fn router(state: AdminState) -> Router {
    guarded(state.clone(), cluster_routes(state))
}

fn cluster_routes(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/cluster/status", get(status))
        .route("/cluster/digest", get(digest))
        .route("/cluster/init", post(init))
        .route("/cluster/add-learner", post(add_learner))
        .route("/cluster/promote", post(promote))
        .route("/cluster/remove", post(remove))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
}

/// The cluster routes, `/metrics`, `extra` (another component's routes, which get the
/// same token check) and the console's page (its assets hold no data: no token; the
/// data it reads goes through the token check). `extra` must hold at least one route.
pub fn router_with(state: AdminState, extra: Router) -> Router {
    let auth = axum::middleware::from_fn_with_state(state.clone(), authorize);
    guarded(
        state.clone(),
        cluster_routes(state)
            .merge(extra.route_layer(auth))
            .merge(console::assets()),
    )
}

/// The console's live stream for `node`: a task turns the node's Raft metrics into
/// [`console::Tick`]s. At most half the admin connections may be live streams, so
/// ordinary requests (`cmactl`, scrapes) always find one.
pub fn console_live(node: &Node, registry: &mut Registry, max_connections: usize) -> console::Live {
    let metrics = console::ConsoleMetrics::default();
    metrics.register(registry);
    let mut raft = node.raft_metrics();
    let tick = |m: &openraft::RaftMetrics<NodeId, NodeAddr>| console::Tick {
        node_id: m.id,
        role: match m.state {
            openraft::ServerState::Leader => console::Role::Leader,
            openraft::ServerState::Follower => console::Role::Follower,
            openraft::ServerState::Candidate => console::Role::Candidate,
            openraft::ServerState::Learner => console::Role::Learner,
            openraft::ServerState::Shutdown => console::Role::Shutdown,
        },
        term: m.current_term,
        leader_id: m.current_leader,
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
    };
    let (tx, rx) = tokio::sync::watch::channel(tick(&raft.borrow()));
    tokio::spawn(async move {
        while raft.changed().await.is_ok() {
            let next = tick(&raft.borrow_and_update());
            // Heartbeats and replication progress change the metrics too; only what the
            // page shows wakes the streams.
            tx.send_if_modified(|t| std::mem::replace(t, next) != next);
        }
    });
    let limits = console::LiveLimits {
        max_streams: (max_connections / 2).clamp(1, 32),
        ..console::LiveLimits::default()
    };
    console::Live::new(rx, limits, metrics)
}

/// Adds the body limit, the concurrency limit and the request timeout to every route.
fn guarded(state: AdminState, routes: Router) -> Router {
    routes
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state, guard))
}

async fn guard(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let Ok(_permit) = state.busy.clone().try_acquire_owned() else {
        state.count_refusal("busy");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many admin requests at once",
        );
    };
    match tokio::time::timeout(state.limits.request_timeout, next.run(request)).await {
        Ok(response) => {
            match response.status() {
                StatusCode::PAYLOAD_TOO_LARGE => state.count_refusal("body_too_large"),
                StatusCode::UNAUTHORIZED => state.count_refusal("unauthorized"),
                StatusCode::MISDIRECTED_REQUEST => state.count_refusal("host_not_loopback"),
                _ => {}
            }
            response
        }
        Err(_) => {
            state.count_refusal("request_timeout");
            error(StatusCode::REQUEST_TIMEOUT, "request took too long")
        }
    }
}

/// Serves `app` on `listener` with the connection limit and header-read timeout of
/// `state`'s limits; returns only if the listener fails for good (it does not: failed
/// accepts are counted and retried after a pause).
pub async fn serve(listener: TcpListener, state: AdminState, app: Router) {
    let bounds = daemon::http::Bounds {
        max_connections: state.limits.max_connections,
        header_read_timeout: state.limits.header_read_timeout,
        max_buf_size: Some(64 * 1024),
        connection_lifetime: None,
    };
    let service = hyper_util::service::TowerToHyperService::new(app);
    let refusals = AdminRefusals {
        state,
        log: WarnEvery::new(Duration::from_secs(10)),
    };
    daemon::http::serve_bounded(listener, bounds, service, refusals).await
}

/// Counts the admin listener's refusals in `cma_admin_refused{reason}`; logs the ones an
/// attacker could repeat at most once per 10 s.
#[derive(Clone)]
struct AdminRefusals {
    state: AdminState,
    log: WarnEvery,
}

impl daemon::http::Refusals for AdminRefusals {
    fn accept_failed(&mut self, error: &std::io::Error) {
        self.state.count_refusal("accept_error");
        if let Some(suppressed) = self.log.check(std::time::Instant::now()) {
            tracing::warn!(%error, suppressed, "admin accept failed; retrying in 100 ms");
        }
    }

    fn over_limit(&mut self, peer: std::net::SocketAddr) {
        self.state.count_refusal("connection_limit");
        if let Some(suppressed) = self.log.check(std::time::Instant::now()) {
            tracing::warn!(%peer, suppressed, "admin connection refused: connection limit");
        }
    }

    fn connection_failed(&self, peer: std::net::SocketAddr, error: &hyper::Error) {
        if error.is_timeout() {
            self.state.count_refusal("header_timeout");
        }
        tracing::debug!(%peer, %error, "admin connection ended");
    }

    fn lifetime_reached(&self, _peer: std::net::SocketAddr) {}
}

async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if state.token.is_none() && request.uri().path() != "/metrics" && !loopback_host(&request) {
        // Without a token the API listens on loopback only; a browser sending another
        // name there was sent by a page that rebound a DNS name to this address.
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "without an admin token this API answers only requests for a loopback address or localhost",
        );
    }
    if let Some(token) = &state.token {
        if request.uri().path() != "/metrics" {
            let given = request
                .headers()
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given != Some(&**token) {
                return error(StatusCode::UNAUTHORIZED, "missing or wrong admin token");
            }
        }
    }
    next.run(request).await
}

/// Whether the request's `Host` (absent in HTTP/1.0: allowed) names a loopback address or
/// `localhost`.
fn loopback_host(request: &Request) -> bool {
    let Some(host) = request.headers().get(axum::http::header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: message.into(),
            leader_id: None,
            leader_admin: None,
        }),
    )
        .into_response()
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, NodeAddr>>) -> Response {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => (
            StatusCode::CONFLICT,
            Json(ApiError {
                error: "not the leader".into(),
                leader_id: f.leader_id,
                leader_admin: f.leader_node.map(|n| n.admin),
            }),
        )
            .into_response(),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        other => error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    state.gauges.refresh(&state.node);
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Collects a node's view of the cluster, with how fresh it is.
pub async fn cluster_status(node: &Node) -> ClusterStatus {
    let freshness = crate::door::freshness(node).await;
    let m = node.raft_metrics();
    let m = m.borrow().clone();
    let membership = m.membership_config.membership();
    ClusterStatus {
        node_id: node.id(),
        state: format!("{:?}", m.state),
        term: m.current_term,
        leader_id: m.current_leader,
        last_log_index: m.last_log_index.unwrap_or(0),
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
        purged_index: m.purged.map(|l| l.index).unwrap_or(0),
        voters: membership.voter_ids().collect(),
        learners: membership.learner_ids().collect(),
        nodes: membership.nodes().map(|(id, n)| (*id, n.clone())).collect(),
        replication: m
            .replication
            .iter()
            .flatten()
            .filter_map(|(id, matched)| matched.map(|l| (*id, l.index)))
            .collect(),
        queue: node.state().summary(),
        snapshots_installed: node.snapshots_installed(),
        snapshots_built: node.snapshots_built(),
        freshness: Some(freshness),
    }
}

/// The replicated state's digest at this node's applied index. The state is copied under
/// its read lock (packets are shared segments: one reference count each, as for a
/// snapshot), so the index and the digest match, and hashed outside it, so applying
/// entries never waits for the hash.
async fn digest(State(state): State<AdminState>) -> Response {
    let (applied_index, copy) = {
        let q = state.node.state();
        (state.node.applied_index(), q.clone())
    };
    match tokio::task::spawn_blocking(move || copy.digest()).await {
        Ok(digest) => Json(StateDigest {
            node_id: state.node.id(),
            applied_index,
            digest,
        })
        .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("digest failed: {e}"),
        ),
    }
}

async fn status(State(state): State<AdminState>) -> Json<ClusterStatus> {
    Json(cluster_status(&state.node).await)
}

fn check_addr(spec: &MemberSpec) -> Result<NodeAddr, String> {
    if spec.raft.parse::<std::net::SocketAddr>().is_err()
        || spec.admin.parse::<std::net::SocketAddr>().is_err()
    {
        return Err(format!(
            "node {}: raft and admin must be ip:port, got {:?} and {:?}",
            spec.id, spec.raft, spec.admin
        ));
    }
    Ok(NodeAddr {
        raft: spec.raft.clone(),
        admin: spec.admin.clone(),
    })
}

async fn init(State(state): State<AdminState>, Json(body): Json<InitRequest>) -> Response {
    let node = &state.node;
    let mut members = BTreeMap::new();
    if body.members.is_empty() {
        members.insert(node.id(), node.advertise().clone());
    }
    for spec in &body.members {
        match check_addr(spec) {
            Ok(addr) => {
                members.insert(spec.id, addr);
            }
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        }
    }
    if !members.contains_key(&node.id()) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("the members must include this node ({})", node.id()),
        );
    }
    match node.raft().initialize(members).await {
        Ok(()) => Json(serde_json::json!({"initialized": true})).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

async fn add_learner(State(state): State<AdminState>, Json(spec): Json<MemberSpec>) -> Response {
    let addr = match check_addr(&spec) {
        Ok(addr) => addr,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match state.node.raft().add_learner(spec.id, addr, true).await {
        Ok(r) => Json(serde_json::json!({"log_index": r.log_id.index})).into_response(),
        Err(e) => write_error(e),
    }
}

/// Where an id stands in the current membership.
enum Standing {
    Voter,
    Learner,
    Unknown,
}

fn standing(node: &Node, id: NodeId) -> Standing {
    let metrics = node.raft_metrics();
    let metrics = metrics.borrow();
    let membership = metrics.membership_config.membership();
    if membership.voter_ids().any(|v| v == id) {
        Standing::Voter
    } else if membership.learner_ids().any(|l| l == id) {
        Standing::Learner
    } else {
        Standing::Unknown
    }
}

async fn promote(State(state): State<AdminState>, Json(body): Json<IdRequest>) -> Response {
    match standing(&state.node, body.id) {
        Standing::Learner => {}
        Standing::Voter => {
            return error(
                StatusCode::CONFLICT,
                format!("node {} is already a voter", body.id),
            )
        }
        Standing::Unknown => {
            return error(
                StatusCode::NOT_FOUND,
                format!("node {} is not a learner of this cluster", body.id),
            )
        }
    }
    let change = ChangeMembers::AddVoterIds(BTreeSet::from([body.id]));
    match state.node.raft().change_membership(change, false).await {
        Ok(r) => Json(serde_json::json!({"log_index": r.log_id.index})).into_response(),
        Err(e) => write_error(e),
    }
}

async fn remove(State(state): State<AdminState>, Json(body): Json<IdRequest>) -> Response {
    // A voter is demoted and dropped in one change; a learner is simply dropped.
    let change = match standing(&state.node, body.id) {
        Standing::Voter => ChangeMembers::RemoveVoters(BTreeSet::from([body.id])),
        Standing::Learner => ChangeMembers::RemoveNodes(BTreeSet::from([body.id])),
        Standing::Unknown => {
            return error(
                StatusCode::NOT_FOUND,
                format!("node {} is not a member of this cluster", body.id),
            )
        }
    };
    match state.node.raft().change_membership(change, false).await {
        Ok(r) => Json(serde_json::json!({"log_index": r.log_id.index})).into_response(),
        Err(e) => write_error(e),
    }
}
