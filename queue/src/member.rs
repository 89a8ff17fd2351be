//! Who the members of a queue cluster are and where they are reached: stored in the
//! replicated membership, shown by the admin API and `cmactl`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// Identifier of a Raft node (configured, unique in the cluster).
pub type NodeId = u64;

/// Where a cluster member can be reached; stored in the replicated membership.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    /// Raft + queue client TCP address.
    pub raft: String,
    /// Admin HTTP address (for `cmactl` to follow the leader).
    pub admin: String,
}

impl NodeAddr {
    /// The Raft address parsed, if it is well formed.
    pub fn raft_addr(&self) -> Option<SocketAddr> {
        self.raft.parse().ok()
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} admin={}", self.raft, self.admin)
    }
}
