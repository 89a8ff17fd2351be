//! The queue client for producers (packet-readers) and consumers: talks to the cluster
//! over the authenticated node protocol and follows the leader.
//!
//! Every call goes to the node believed to be the leader. A `NotLeader` reply with a hint
//! redirects the call. When no leader is known (start, or the leader failed), the call is
//! sent to every configured node at once: followers answer `NotLeader` (with a hint once
//! they know the new leader) and only the leader executes it, so the client finds a new
//! leader as soon as one is elected instead of walking the nodes through timeouts. Between
//! two rounds it pauses `retry_pause`, until the request timeout. An append that timed out
//! may still have committed: retrying it is safe because the queue stores a
//! (sender, session, seq) once.

use crate::rpc::{CallError, ClientConnection, NoPeer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::command::AppendResult;
pub use crate::record::QueuedPacket;

type Request = crate::rpc::Request<NoPeer>;
type Reply = crate::rpc::Reply<NoPeer>;

/// Default overall time a call may take, retries included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time one attempt on one node may take.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default TCP connect + handshake timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default pause before retrying after no leader or an unreachable node.
pub const DEFAULT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Raft/client addresses of the cluster nodes (any subset that includes a live one).
    pub nodes: Vec<SocketAddr>,
    /// The cluster secret (see [`load_cluster_secret`]).
    pub cluster_secret: [u8; 32],
    /// Overall time a call may take, retries included.
    pub request_timeout: Duration,
    /// Time one attempt on one node may take.
    pub attempt_timeout: Duration,
    /// TCP connect + handshake timeout.
    pub connect_timeout: Duration,
    /// Pause before retrying after no leader or an unreachable node.
    pub retry_pause: Duration,
}

impl Default for ClientConfig {
    /// No nodes and an all-zero secret (fill both in), default timeouts.
    fn default() -> Self {
        ClientConfig::new(Vec::new(), [0; 32])
    }
}

impl ClientConfig {
    /// Settings with the documented default timeouts.
    pub fn new(nodes: Vec<SocketAddr>, cluster_secret: [u8; 32]) -> Self {
        ClientConfig {
            nodes,
            cluster_secret,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retry_pause: DEFAULT_RETRY_PAUSE,
        }
    }
}

/// Why a queue call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nodes answered but none is leader (election in progress or no quorum).
    #[error("no leader found before the timeout")]
    NoLeader,
    /// The request timed out (it may still have been committed).
    #[error("request timed out")]
    Timeout,
    /// No configured node could be reached.
    #[error("no node reachable: {0}")]
    Unreachable(String),
    /// The cluster refused the request.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The queue holds its byte budget: nothing was stored; retry after a pause (the
    /// consumer frees room). Producers pass the back-pressure on (a packet-reader stops
    /// acknowledging, so nanoprobes retransmit).
    #[error("queue full ({held_bytes} of {max_bytes} bytes)")]
    QueueFull {
        /// Bytes held.
        held_bytes: u64,
        /// The budget.
        max_bytes: u64,
    },
    /// The leader is overloaded and shed the call: nothing was done; retry after a
    /// pause. Producers pass it on like [`ClientError::QueueFull`].
    #[error("leader busy: no proposal slot within {waited_ms} ms")]
    Busy {
        /// How long the call waited on the node.
        waited_ms: u64,
    },
    /// Bad client configuration.
    #[error("client config: {0}")]
    Config(String),
}

/// Why the cluster secret file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read, or other users could read it or the group write it.
    #[error("cluster secret: {0}")]
    File(#[from] proto::SecretFileError),
    /// The file does not hold exactly 64 hex digits.
    #[error("cluster secret {path}: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Reads a cluster secret file: 64 hex digits (32 bytes); whitespace and lines starting
/// with `#` are ignored. A file other users can read, or the group can write, is refused
/// ([`proto::read_secret_file`]).
pub fn load_cluster_secret(path: &Path) -> Result<[u8; 32], SecretError> {
    let text = proto::read_secret_file(path)?;
    parse_cluster_secret(&text).map_err(|reason| SecretError::Format {
        path: path.display().to_string(),
        reason,
    })
}

/// Parses the content of a cluster secret file (see [`load_cluster_secret`]).
pub fn parse_cluster_secret(text: &str) -> Result<[u8; 32], String> {
    let digits: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    if digits.len() != 64 {
        return Err(format!("expected 64 hex digits, found {}", digits.len()));
    }
    let mut secret = [0u8; 32];
    hex::decode_to_slice(&digits, &mut secret).map_err(|e| format!("not hex: {e}"))?;
    Ok(secret)
}

struct Inner {
    config: ClientConfig,
    /// Where the next call goes first: a leader hint or the last node that answered.
    preferred: Mutex<Option<SocketAddr>>,
    connections: Mutex<HashMap<SocketAddr, Arc<ClientConnection>>>,
    /// When each node last failed to answer: followers keep naming a dead leader until
    /// they elect a new one, and such a hint is not followed for [`DEAD_HINT`].
    failed: Mutex<HashMap<SocketAddr, Instant>>,
    /// Held while connecting to a node.
    connecting: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>>,
}

/// How long a node that failed to answer is not followed as a leader hint.
const DEAD_HINT: Duration = Duration::from_secs(1);

/// A queue client. Cheap to clone; usable from many tasks at once (calls are multiplexed
/// on one connection per node).
#[derive(Clone)]
pub struct QueueClient {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl QueueClient {
    /// A client for the given nodes. Connects lazily.
    pub fn new(config: ClientConfig) -> Result<QueueClient, ClientError> {
        if config.nodes.is_empty() {
            return Err(ClientError::Config("no node address given".into()));
        }
        if config.request_timeout.is_zero() || config.attempt_timeout.is_zero() {
            return Err(ClientError::Config("timeouts must be positive".into()));
        }
        Ok(QueueClient {
            inner: Arc::new(Inner {
                preferred: Mutex::new(None),
                connections: Mutex::new(HashMap::new()),
                failed: Mutex::new(HashMap::new()),
                connecting: Mutex::new(HashMap::new()),
                config,
            }),
        })
    }

    /// Appends a batch and returns once it is committed (durable on a quorum).
    /// Duplicates (same sender, session, seq as a stored packet) are stored once but still
    /// count as success.
    pub async fn append(&self, batch: Vec<QueuedPacket>) -> Result<AppendResult, ClientError> {
        match self.call(|| Request::Append(batch.clone())).await? {
            Reply::Appended(result) => Ok(result),
            other => Err(ClientError::Rejected(format!("unexpected reply {other:?}"))),
        }
    }

    /// Reads committed packets with offset >= `from`, at most `max` (offsets below the
    /// trimmed prefix are skipped: the first returned offset may be above `from`).
    pub async fn read(
        &self,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, QueuedPacket)>, ClientError> {
        match self.call(|| Request::Read { from, max }).await? {
            Reply::Packets(packets) => Ok(packets),
            other => Err(ClientError::Rejected(format!("unexpected reply {other:?}"))),
        }
    }

    /// Commits a consumer's offset (the next offset it will read), registering the
    /// consumer on first use.
    pub async fn commit_offset(&self, consumer: &str, offset: u64) -> Result<(), ClientError> {
        let consumer = consumer.to_string();
        match self
            .call(|| Request::CommitOffset {
                consumer: consumer.clone(),
                offset,
            })
            .await?
        {
            Reply::Done => Ok(()),
            other => Err(ClientError::Rejected(format!("unexpected reply {other:?}"))),
        }
    }

    async fn connection(&self, addr: SocketAddr) -> Result<Arc<ClientConnection>, CallError> {
        if let Some(c) = lock(&self.inner.connections).get(&addr) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        // One connect at a time per node: thousands of calls failing over at once must
        // share one new connection, not open one each (and run out of descriptors).
        let gate = lock(&self.inner.connecting)
            .entry(addr)
            .or_default()
            .clone();
        let _connecting = gate.lock().await;
        if let Some(c) = lock(&self.inner.connections).get(&addr) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(
            ClientConnection::open(
                addr,
                &self.inner.config.cluster_secret,
                self.inner.config.connect_timeout,
            )
            .await?,
        );
        lock(&self.inner.connections).insert(addr, c.clone());
        Ok(c)
    }

    fn forget(&self, addr: SocketAddr) {
        lock(&self.inner.connections).remove(&addr);
    }

    fn recently_failed(&self, addr: SocketAddr) -> bool {
        lock(&self.inner.failed)
            .get(&addr)
            .is_some_and(|t| t.elapsed() < DEAD_HINT)
    }

    /// One attempt on one node.
    async fn attempt(
        &self,
        target: SocketAddr,
        request: Request,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let outcome = match self.connection(target).await {
            Ok(c) => c.call(request, timeout).await,
            Err(e) => Err(e),
        };
        if outcome.is_err() {
            self.forget(target);
            lock(&self.inner.failed).insert(target, Instant::now());
        } else {
            lock(&self.inner.failed).remove(&target);
        }
        outcome
    }

    /// Sends the request to every node at once and returns the first decisive answer
    /// (anything but `NotLeader`/`Error`/a failure), or else a leader hint, or else the
    /// last failure. Only the leader executes a request, so at most one node acts on it.
    async fn attempt_all<F: Fn() -> Request>(
        &self,
        request: &F,
        timeout: Duration,
    ) -> (SocketAddr, Result<Reply, CallError>) {
        use futures::stream::{FuturesUnordered, StreamExt};
        let mut calls: FuturesUnordered<_> = self
            .inner
            .config
            .nodes
            .iter()
            .map(|&addr| {
                let req = request();
                async move { (addr, self.attempt(addr, req, timeout).await) }
            })
            .collect();
        let mut fallback = None;
        while let Some((addr, outcome)) = calls.next().await {
            match &outcome {
                Ok(Reply::NotLeader { leader: Some(hint) })
                    if !hint
                        .parse::<SocketAddr>()
                        .is_ok_and(|h| self.recently_failed(h)) =>
                {
                    return (addr, outcome)
                }
                Ok(Reply::NotLeader { .. }) | Ok(Reply::Error(_)) | Err(_) => {
                    // Keep a NotLeader over a failure: it says a node is up.
                    if !matches!(fallback, Some((_, Ok(_)))) {
                        fallback = Some((addr, outcome));
                    }
                }
                Ok(_) => return (addr, outcome),
            }
        }
        fallback.unwrap_or_else(|| (self.inner.config.nodes[0], Err(CallError::Timeout(timeout))))
    }

    /// Sends a request to the leader, following hints, probing every node when no leader
    /// is known.
    async fn call(&self, request: impl Fn() -> Request) -> Result<Reply, ClientError> {
        let config = &self.inner.config;
        let deadline = Instant::now() + config.request_timeout;
        let mut last_error: Option<ClientError> = None;
        let mut hint: Option<SocketAddr> = *lock(&self.inner.preferred);
        // Hints followed without a pause; stale hints pointing at each other must not spin.
        let mut hops = 0usize;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(last_error.unwrap_or(ClientError::Timeout));
            }
            let attempt = config.attempt_timeout.min(deadline - now);
            let (target, outcome) = match hint.take() {
                Some(addr) => (addr, self.attempt(addr, request(), attempt).await),
                None => self.attempt_all(&request, attempt).await,
            };
            match outcome {
                Ok(Reply::NotLeader { leader }) => {
                    last_error = Some(ClientError::NoLeader);
                    match leader.and_then(|l| l.parse::<SocketAddr>().ok()) {
                        Some(leader)
                            if leader != target
                                && hops <= config.nodes.len()
                                && !self.recently_failed(leader) =>
                        {
                            hops += 1;
                            hint = Some(leader);
                            *lock(&self.inner.preferred) = Some(leader);
                            continue;
                        }
                        _ => {}
                    }
                }
                Ok(Reply::Error(message)) => {
                    // Raft-level failures on the server (e.g. leadership lost mid-commit)
                    // are retried: the call is idempotent.
                    last_error = Some(ClientError::Rejected(message));
                }
                Ok(Reply::QueueFull {
                    held_bytes,
                    max_bytes,
                }) => {
                    *lock(&self.inner.preferred) = Some(target);
                    return Err(ClientError::QueueFull {
                        held_bytes,
                        max_bytes,
                    });
                }
                Ok(Reply::Busy { waited_ms }) => {
                    *lock(&self.inner.preferred) = Some(target);
                    return Err(ClientError::Busy { waited_ms });
                }
                Ok(reply) => {
                    *lock(&self.inner.preferred) = Some(target);
                    return Ok(reply);
                }
                Err(CallError::Timeout(_)) => {
                    last_error = Some(ClientError::Timeout);
                }
                Err(e) => {
                    if !matches!(last_error, Some(ClientError::NoLeader)) {
                        last_error = Some(ClientError::Unreachable(format!("{target}: {e}")));
                    }
                }
            }
            let was_preferred = lock(&self.inner.preferred).take().is_some();
            if was_preferred && hops <= config.nodes.len() {
                hops += 1;
                // The node we believed to lead did not: probe every node at once now.
                continue;
            }
            let pause = config
                .retry_pause
                .min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_file_format() {
        let hex64 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let text = format!("# cluster key\n{}\n  {}\n", &hex64[..32], &hex64[32..]);
        let secret = parse_cluster_secret(&text).unwrap();
        assert_eq!(secret[1], 0x11);
        assert!(parse_cluster_secret("abcd").is_err());
        assert!(parse_cluster_secret(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn secret_file_with_loose_mode_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.secret");
        std::fs::write(&path, "ab".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_cluster_secret(&path).unwrap_err().to_string();
        assert!(err.contains("0644") && err.contains("0640"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(load_cluster_secret(&path).unwrap(), [0xab; 32]);
    }

    #[test]
    fn config_needs_nodes() {
        assert!(matches!(
            QueueClient::new(ClientConfig::new(vec![], [0; 32])),
            Err(ClientError::Config(_))
        ));
    }
}
