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
    /// On the leader: the last log index each member is known to hold (absent from
    /// followers, and from nodes of earlier versions).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replication: BTreeMap<NodeId, u64>,
    /// Queue counters.
    pub queue: StateSummary,
    /// Snapshots installed from a leader since this process started.
    pub snapshots_installed: u64,
    /// Snapshots built locally since this process started.
    pub snapshots_built: u64,
    /// Whether this node's state is current, a follower's copy or cut off from a quorum
    /// (absent from nodes of earlier versions).
    #[serde(default)]
    pub freshness: Option<Freshness>,
}

/// How fresh the state behind an answer is: every read of the admin API says it, so an
/// operator or a tool never takes old state for current.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Freshness {
    /// Answered by the leader after a read barrier (a quorum confirmed its leadership and
    /// it applied everything committed): reflects every write acknowledged before the
    /// request.
    Current {
        /// Index applied on the answering node.
        applied_index: u64,
    },
    /// Answered from a follower's copy, in contact with its leader: it lags by what it has
    /// not yet applied.
    Follower {
        /// Index applied on the answering node.
        applied_index: u64,
        /// The leader.
        leader_id: NodeId,
        /// The leader's commit index as of its last message.
        leader_commit: u64,
        /// Milliseconds since that message.
        heard_ms_ago: u64,
    },
    /// The answering node leads and a quorum acknowledged it within the last election
    /// timeout, but its read barrier did not pass in time (overloaded, or still applying
    /// the log it took over): its state may lag what the cluster acknowledged.
    Unconfirmed {
        /// Index applied on the answering node.
        applied_index: u64,
    },
    /// The answering node cannot reach a quorum (a leader that cannot confirm its
    /// leadership, or a follower that has heard no leader for an election timeout): its
    /// state is as of `applied_index` and may be old.
    NoQuorum {
        /// Index applied on the answering node.
        applied_index: u64,
        /// The last commit index a leader sent it, if any.
        leader_commit: Option<u64>,
        /// Milliseconds since it last heard a leader (or a quorum acknowledged it), if
        /// ever.
        heard_ms_ago: Option<u64>,
    },
}

impl Freshness {
    /// Whether the answer reflects every acknowledged write.
    pub fn is_current(&self) -> bool {
        matches!(self, Freshness::Current { .. })
    }

    /// One line saying how stale an answer of node `node` is; `None` when it is current.
    pub fn warning(&self, node: NodeId) -> Option<String> {
        let ago = |ms: u64| format!("{:.1} s ago", ms as f64 / 1000.0);
        match *self {
            Freshness::Current { .. } => None,
            Freshness::Follower {
                applied_index,
                leader_id,
                leader_commit,
                heard_ms_ago,
            } => Some(format!(
                "stale: answered by follower {node} from its copy (applied index {applied_index}; leader {leader_id} had committed {leader_commit}, heard {})",
                ago(heard_ms_ago)
            )),
            Freshness::Unconfirmed { applied_index } => Some(format!(
                "unconfirmed: leader {node} could not confirm its state in time (busy, or \
                 still applying its log); applied index {applied_index}"
            )),
            Freshness::NoQuorum {
                applied_index,
                leader_commit,
                heard_ms_ago,
            } => Some(format!(
                "NO QUORUM: node {node} reaches no quorum; its state is as of applied index {applied_index}{}{}, and may be old",
                leader_commit.map_or(String::new(), |c| format!(
                    ", last commit index heard {c}"
                )),
                heard_ms_ago.map_or(", no leader heard since it started".to_string(), |ms| {
                    format!(", leader last heard {}", ago(ms))
                })
            )),
        }
    }
}

/// `GET /cluster/digest`: a digest of the node's replicated state at its applied index.
/// Two nodes at the same applied index must show the same digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDigest {
    /// The answering node.
    pub node_id: NodeId,
    /// Index applied when the digest was taken.
    pub applied_index: u64,
    /// blake3 of the replicated state, hex.
    pub digest: String,
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
