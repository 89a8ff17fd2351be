//! openraft's network: one lazily (re)connected [`Connection`] per target node.

use super::peer::{NodeReply, NodeRequest, PeerConnection, PeerReply, PeerRequest};
use super::{NodeAddr, NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::EntryPayload;
use queue::rpc::CallError;
use queue::Command;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Soft bound on the bytes of one AppendEntries, so one request's write and fdatasync on the
/// follower stay short; a bigger request is refused with `PayloadTooLarge` so openraft sends
/// fewer entries (at least one) per request.
pub const MAX_APPEND_BYTES: usize = 1024 * 1024;

/// Shortest time a Raft RPC may take at this layer. openraft 0.9 bounds AppendEntries by
/// one heartbeat interval and Vote by `election_timeout_min` with timeouts of its own,
/// which win; this floor only matters for the calls it does not bound itself (a snapshot
/// chunk gets `install_snapshot_timeout`, at least this).
pub const MIN_RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// Rough encoded size of an entry: packet bytes plus fixed overhead.
fn entry_size(entry: &openraft::Entry<TypeConfig>) -> usize {
    const OVERHEAD: usize = 64;
    match &entry.payload {
        EntryPayload::Normal(Command::Append { batch }) => {
            OVERHEAD
                + batch
                    .iter()
                    .map(|p| p.report.len() + OVERHEAD)
                    .sum::<usize>()
        }
        EntryPayload::Normal(
            Command::Apply { writes, .. } | Command::ApplyRecorded { writes, .. },
        ) => {
            let input = match &entry.payload {
                EntryPayload::Normal(Command::ApplyRecorded { input, .. }) => input.len(),
                _ => 0,
            };
            OVERHEAD
                + input
                + writes
                    .iter()
                    .map(|w| w.table.len() + w.key.len() + w.value.as_ref().map_or(0, Vec::len))
                    .sum::<usize>()
        }
        _ => OVERHEAD,
    }
}

/// How many leading entries fit in [`MAX_APPEND_BYTES`] (at least one).
fn entries_that_fit(entries: &[openraft::Entry<TypeConfig>]) -> usize {
    let mut total = 0;
    for (i, entry) in entries.iter().enumerate() {
        total += entry_size(entry);
        if total > MAX_APPEND_BYTES {
            return i.max(1);
        }
    }
    entries.len()
}

/// Creates per-target network clients. They share one connection per target: openraft
/// 0.9 makes a new client for every vote request and every linearizable read's heartbeat
/// round, and a connection (TCP + handshake) per call would cost more than the call, and
/// most under load, when calls time out and are retried.
#[derive(Clone)]
pub struct Network {
    secret: Arc<[u8; 32]>,
    connect_timeout: Duration,
    retry_backoff: Duration,
    pool: Arc<std::sync::Mutex<HashMap<NodeId, Arc<PeerConnection>>>>,
}

impl Network {
    /// A network authenticating with `secret`.
    pub fn new(secret: [u8; 32], connect_timeout: Duration, retry_backoff: Duration) -> Self {
        Network {
            secret: Arc::new(secret),
            connect_timeout,
            retry_backoff,
            pool: Arc::default(),
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Arc<PeerConnection>>> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open connection to `target`, if any.
    fn pooled(&self, target: NodeId) -> Option<Arc<PeerConnection>> {
        self.pool().get(&target).filter(|c| !c.is_closed()).cloned()
    }

    /// Opens a connection to `target` at `addr` and shares it.
    async fn connect(
        &self,
        target: NodeId,
        addr: std::net::SocketAddr,
    ) -> Result<Arc<PeerConnection>, CallError> {
        let c = Arc::new(PeerConnection::open(addr, &self.secret, self.connect_timeout).await?);
        let mut pool = self.pool();
        // Another client may have connected meanwhile: keep one.
        match pool.get(&target).filter(|c| !c.is_closed()) {
            Some(existing) => Ok(existing.clone()),
            None => {
                pool.insert(target, c.clone());
                Ok(c)
            }
        }
    }

    /// Forgets a broken connection to `target` (only if it is still the pooled one).
    fn forget(&self, target: NodeId, broken: &Arc<PeerConnection>) {
        let mut pool = self.pool();
        if pool.get(&target).is_some_and(|c| Arc::ptr_eq(c, broken)) {
            pool.remove(&target);
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> PeerClient {
        PeerClient {
            target,
            node: node.clone(),
            network: self.clone(),
        }
    }
}

/// The Raft client for one peer (its connection is the network's shared one).
pub struct PeerClient {
    target: NodeId,
    node: NodeAddr,
    network: Network,
}

#[derive(Debug, thiserror::Error)]
#[error("unexpected reply {0}")]
struct UnexpectedReply(String);

impl PeerClient {
    async fn call<E: std::error::Error>(
        &mut self,
        request: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerReply, RPCError<NodeId, NodeAddr, E>> {
        let connection = match self.network.pooled(self.target) {
            Some(c) => c,
            None => {
                let addr = self.node.raft_addr().ok_or_else(|| {
                    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
                        "node {} has a malformed address {}",
                        self.target, self.node.raft
                    ))))
                })?;
                self.network
                    .connect(self.target, addr)
                    .await
                    .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?
            }
        };
        match connection
            .call(
                NodeRequest::Peer(request),
                option.hard_ttl().max(MIN_RPC_TIMEOUT),
            )
            .await
        {
            Ok(NodeReply::Peer(reply)) => Ok(reply),
            Ok(other) => Err(RPCError::Network(NetworkError::new(&UnexpectedReply(
                format!("{other:?}"),
            )))),
            // A late reply to a timed-out call is discarded by id, so the connection
            // stays usable; only a broken connection is dropped.
            Err(e @ CallError::Timeout(_)) => Err(RPCError::Network(NetworkError::new(&e))),
            Err(e) => {
                self.network.forget(self.target, &connection);
                Err(match e {
                    CallError::Timeout(_) | CallError::Codec(_) => {
                        RPCError::Network(NetworkError::new(&e))
                    }
                    CallError::Wire(_) => RPCError::Unreachable(Unreachable::new(&e)),
                })
            }
        }
    }

    fn unexpected<E: std::error::Error>(&self, reply: PeerReply) -> RPCError<NodeId, NodeAddr, E> {
        RPCError::Network(NetworkError::new(&UnexpectedReply(format!("{reply:?}"))))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        let fit = entries_that_fit(&rpc.entries);
        if fit < rpc.entries.len() {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fit as u64),
            ));
        }
        match self.call(PeerRequest::AppendEntries(rpc), &option).await? {
            PeerReply::AppendEntries(Ok(r)) => Ok(r),
            PeerReply::AppendEntries(Err(e)) => Err(RPCError::RemoteError(
                RemoteError::new_with_node(self.target, self.node.clone(), e),
            )),
            other => Err(self.unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeAddr, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(PeerRequest::InstallSnapshot(rpc), &option)
            .await?
        {
            PeerReply::InstallSnapshot(Ok(r)) => Ok(r),
            PeerReply::InstallSnapshot(Err(e)) => Err(RPCError::RemoteError(
                RemoteError::new_with_node(self.target, self.node.clone(), e),
            )),
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        match self.call(PeerRequest::Vote(rpc), &option).await? {
            PeerReply::Vote(Ok(r)) => Ok(r),
            PeerReply::Vote(Err(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))),
            other => Err(self.unexpected(other)),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.network.retry_backoff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};
    use queue::QueuedPacket;

    fn entry(index: u64, packets: usize) -> openraft::Entry<TypeConfig> {
        let packet = QueuedPacket {
            sender: 1,
            session: 1,
            seq: 1,
            received_at_us: 0,
            source: "127.0.0.1:9".parse().unwrap(),
            report: vec![0; 256],
        };
        openraft::Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::Append {
                batch: vec![packet; packets],
            }),
        }
    }

    #[test]
    fn large_appends_are_split_but_never_below_one_entry() {
        let small: Vec<_> = (0..10).map(|i| entry(i, 10)).collect();
        assert_eq!(entries_that_fit(&small), 10);
        let big: Vec<_> = (0..10).map(|i| entry(i, 1000)).collect();
        let fit = entries_that_fit(&big);
        assert!((1..10).contains(&fit), "{fit}");
        let huge = vec![entry(0, 100_000)];
        assert_eq!(entries_that_fit(&huge), 1);
    }
}
