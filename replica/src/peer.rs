//! The node-to-node (Raft) messages, carried in the `Peer` variants of the queue crate's
//! [`queue::rpc::Request`] and [`queue::rpc::Reply`] on the same authenticated connections
//! as queue clients.

use super::{NodeId, TypeConfig};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{LogId, Vote};
use serde::{Deserialize, Serialize};

/// A Raft RPC from another node.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Raft AppendEntries from the leader.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft RequestVote from a candidate.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot from the leader.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A voter asks what this node knows of its leader (prompt elections). Added last: an
    /// older node closes the (probe's own) connection on it, which only delays the probe.
    LeaseProbe,
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerReply {
    /// Answer to `AppendEntries`.
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// Answer to `Vote`.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// Answer to `InstallSnapshot`.
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// Answer to `LeaseProbe`.
    LeaseProbe(LeaseView),
}

/// Any request a node serves: a peer's Raft RPC or a queue client's call.
pub type NodeRequest = queue::rpc::Request<PeerRequest>;
/// Any reply a node sends.
pub type NodeReply = queue::rpc::Reply<PeerReply>;
/// A node's connection to another node.
pub type PeerConnection = queue::rpc::Connection<PeerRequest, PeerReply>;

/// What a voter says about its leader, in answer to [`PeerRequest::LeaseProbe`] (what
/// [`crate::prompt_election`] decides on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// The node's current vote (term, voted-for, committed).
    pub vote: Vote<NodeId>,
    /// True when the node is the leader of `vote`.
    pub is_leader: bool,
    /// Milliseconds since the node last heard from the leader of its vote (its vote's
    /// lease was last renewed); `None` when unknown.
    pub silent_ms: Option<u64>,
    /// The id of the last entry in the node's log.
    pub last_log_id: Option<LogId<NodeId>>,
}
