//! The worker's door opened onto this node's replica: [`worker::Replica`] for
//! [`replica::Node`], and nothing more of the node.

use api::cluster::Freshness;
use futures::future::BoxFuture;
use queue::{Command, CommandResult, QueueState, QueuedPacket};
use std::sync::{Arc, RwLockReadGuard};
use tokio::sync::watch;
use worker::{Door, Replica, ReplicaError};

/// The replica's node as the worker sees it.
#[derive(Clone)]
pub struct NodeDoor(pub replica::Node);

impl NodeDoor {
    /// The door the worker and its routes hold.
    pub fn open(node: replica::Node) -> Door {
        Arc::new(NodeDoor(node))
    }
}

impl Replica for NodeDoor {
    fn id(&self) -> u64 {
        self.0.id()
    }

    fn is_leader(&self) -> bool {
        self.0.is_leader()
    }

    fn leader_id(&self) -> Option<u64> {
        self.0.leader_id()
    }

    fn applied_index(&self) -> u64 {
        self.0.applied_index()
    }

    fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.0.subscribe_applied()
    }

    fn state(&self) -> RwLockReadGuard<'_, QueueState> {
        self.0.state()
    }

    fn read_local(&self, from: u64, max: usize) -> Vec<(u64, QueuedPacket)> {
        self.0.read_local(from, max)
    }

    fn read_barrier(&self) -> BoxFuture<'_, Result<(), ReplicaError>> {
        Box::pin(async move { Ok(self.0.read_barrier().await?) })
    }

    fn propose(&self, command: Command) -> BoxFuture<'_, Result<CommandResult, ReplicaError>> {
        Box::pin(async move { Ok(self.0.propose(command).await?) })
    }

    fn freshness(&self) -> BoxFuture<'_, Freshness> {
        Box::pin(freshness(&self.0))
    }
}

/// Longest an admin read waits for the leader's read barrier before it answers with
/// what it has, marked as without quorum.
pub const FRESHNESS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How fresh a read of `node`'s state made right after this is, as the admin API says it.
pub async fn freshness(node: &replica::Node) -> Freshness {
    match node.freshness(FRESHNESS_WAIT).await {
        replica::Freshness::Current { applied } => Freshness::Current {
            applied_index: applied,
        },
        replica::Freshness::Follower {
            applied,
            leader,
            leader_commit,
            heard_ms_ago,
        } => Freshness::Follower {
            applied_index: applied,
            leader_id: leader,
            leader_commit,
            heard_ms_ago,
        },
        replica::Freshness::Unconfirmed { applied } => Freshness::Unconfirmed {
            applied_index: applied,
        },
        replica::Freshness::NoQuorum {
            applied,
            leader_commit,
            heard_ms_ago,
        } => Freshness::NoQuorum {
            applied_index: applied,
            leader_commit,
            heard_ms_ago,
        },
    }
}
