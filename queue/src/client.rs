//! The queue client for producers (packet-readers) and consumers: talks to the cluster
//! over the authenticated node protocol and follows the leader.
//!
//! Every call goes to the node believed to be the leader. A `NotLeader` reply with a hint
//! redirects the call; without a hint, or when a node is unreachable, the client tries the
//! configured nodes in turn with a short pause, until the request timeout. An append that
//! timed out may still have committed: retrying it is safe because the queue stores a
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
}

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

    /// Sends a request to the leader, following hints and trying nodes in turn.
    async fn call(&self, request: impl Fn() -> Request) -> Result<Reply, ClientError> {
        let config = &self.inner.config;
        let deadline = Instant::now() + config.request_timeout;
        let mut next_index = 0usize;
        let mut last_error: Option<ClientError> = None;
        let mut hint: Option<SocketAddr> = *lock(&self.inner.preferred);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(last_error.unwrap_or(ClientError::Timeout));
            }
            let target = match hint.take() {
                Some(addr) => addr,
                None => {
                    let addr = config.nodes[next_index % config.nodes.len()];
                    next_index += 1;
                    addr
                }
            };
            let attempt = config.attempt_timeout.min(deadline - now);
            let outcome = match self.connection(target).await {
                Ok(c) => c.call(request(), attempt).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(Reply::NotLeader { leader }) => {
                    last_error = Some(ClientError::NoLeader);
                    match leader.and_then(|l| l.parse::<SocketAddr>().ok()) {
                        Some(leader) if leader != target => {
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
                Ok(reply) => {
                    *lock(&self.inner.preferred) = Some(target);
                    return Ok(reply);
                }
                Err(CallError::Timeout(_)) => {
                    self.forget(target);
                    last_error = Some(ClientError::Timeout);
                }
                Err(e) => {
                    self.forget(target);
                    if !matches!(last_error, Some(ClientError::NoLeader)) {
                        last_error = Some(ClientError::Unreachable(format!("{target}: {e}")));
                    }
                }
            }
            *lock(&self.inner.preferred) = None;
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
