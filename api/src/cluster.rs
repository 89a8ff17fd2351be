//! The cluster routes (`/cluster/...`): a node's view of the cluster and the bodies that
//! form and change it, and the body of every error answer.

pub use queue::{NodeAddr, NodeId, StateSummary};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A node's view of the cluster, as returned by `GET /cluster/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The answering node.
    pub node_id: NodeId,
    /// Leader, Follower, Candidate or Learner.
    pub state: String,
    /// Current term.
    pub term: u64,
    /// Known leader.
    pub leader_id: Option<NodeId>,
    /// Last log index.
    pub last_log_index: u64,
    /// Last applied index.
    pub applied_index: u64,
    /// Index covered by the last snapshot.
    pub snapshot_index: u64,
    /// Index up to which the log was purged.
    pub purged_index: u64,
    /// Voter ids.
    pub voters: BTreeSet<NodeId>,
    /// Learner ids.
    pub learners: BTreeSet<NodeId>,
    /// Addresses of every member.
    pub nodes: BTreeMap<NodeId, NodeAddr>,
    /// Queue counters.
    pub queue: StateSummary,
    /// Snapshots installed from a leader since this process started.
    pub snapshots_installed: u64,
    /// Snapshots built locally since this process started.
    pub snapshots_built: u64,
}

/// A member in `/cluster/init` and `/cluster/add-learner` bodies.
#[derive(Debug, Serialize, Deserialize)]
pub struct MemberSpec {
    /// Node id.
    pub id: NodeId,
    /// Raft/client address.
    pub raft: String,
    /// Admin address.
    pub admin: String,
}

/// Body of `/cluster/init`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct InitRequest {
    /// Initial voters; empty means this node alone.
    #[serde(default)]
    pub members: Vec<MemberSpec>,
}

/// Body of `/cluster/promote` and `/cluster/remove`.
#[derive(Debug, Serialize, Deserialize)]
pub struct IdRequest {
    /// Node id.
    pub id: NodeId,
}

/// Body of every error answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
    /// The leader's id when the request must go to the leader.
    #[serde(default)]
    pub leader_id: Option<NodeId>,
    /// The leader's admin address when the request must go to the leader.
    #[serde(default)]
    pub leader_admin: Option<String>,
}
