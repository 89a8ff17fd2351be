//! openraft's network: one lazily (re)connected [`Connection`] per target node.

use super::rpc::{CallError, Connection, Reply, Request};
use super::{NodeAddr, NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use std::sync::Arc;
use std::time::Duration;

/// Creates per-target network clients.
#[derive(Clone)]
pub struct Network {
    secret: Arc<[u8; 32]>,
    connect_timeout: Duration,
    retry_backoff: Duration,
}

impl Network {
    /// A network authenticating with `secret`.
    pub fn new(secret: [u8; 32], connect_timeout: Duration, retry_backoff: Duration) -> Self {
        Network {
            secret: Arc::new(secret),
            connect_timeout,
            retry_backoff,
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
            connection: None,
        }
    }
}

/// The Raft client for one peer.
pub struct PeerClient {
    target: NodeId,
    node: NodeAddr,
    network: Network,
    connection: Option<Arc<Connection>>,
}

#[derive(Debug, thiserror::Error)]
#[error("unexpected reply {0}")]
struct UnexpectedReply(String);

impl PeerClient {
    async fn call<E: std::error::Error>(
        &mut self,
        request: Request,
        option: &RPCOption,
    ) -> Result<Reply, RPCError<NodeId, NodeAddr, E>> {
        let connection = match &self.connection {
            Some(c) if !c.is_closed() => c.clone(),
            _ => {
                let addr = self.node.raft_addr().ok_or_else(|| {
                    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
                        "node {} has a malformed address {}",
                        self.target, self.node.raft
                    ))))
                })?;
                let c = Connection::open(addr, &self.network.secret, self.network.connect_timeout)
                    .await
                    .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
                let c = Arc::new(c);
                self.connection = Some(c.clone());
                c
            }
        };
        match connection.call(request, option.hard_ttl()).await {
            Ok(reply) => Ok(reply),
            Err(e) => {
                self.connection = None;
                Err(match e {
                    CallError::Timeout(_) | CallError::Codec(_) => {
                        RPCError::Network(NetworkError::new(&e))
                    }
                    CallError::Wire(_) => RPCError::Unreachable(Unreachable::new(&e)),
                })
            }
        }
    }

    fn unexpected<E: std::error::Error>(&self, reply: Reply) -> RPCError<NodeId, NodeAddr, E> {
        RPCError::Network(NetworkError::new(&UnexpectedReply(format!("{reply:?}"))))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        match self.call(Request::AppendEntries(rpc), &option).await? {
            Reply::AppendEntries(Ok(r)) => Ok(r),
            Reply::AppendEntries(Err(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))),
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
        match self.call(Request::InstallSnapshot(rpc), &option).await? {
            Reply::InstallSnapshot(Ok(r)) => Ok(r),
            Reply::InstallSnapshot(Err(e)) => Err(RPCError::RemoteError(
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
        match self.call(Request::Vote(rpc), &option).await? {
            Reply::Vote(Ok(r)) => Ok(r),
            Reply::Vote(Err(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
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
