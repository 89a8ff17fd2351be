//! The worker's door to the replica: the handful of calls it makes on the Raft node that
//! holds the queue (leadership, the read barrier, local reads of the replicated state,
//! proposals, the applied index). The `cma` binary opens it onto `replica::Node`; the
//! in-memory harness needs none of it and runs the worker on a bare [`QueueState`].

use futures::future::BoxFuture;
use queue::{Command, CommandResult, QueueState, QueuedPacket};
use std::sync::{Arc, RwLockReadGuard};
use tokio::sync::watch;

/// Why the replica refused a read barrier or a proposal (lost leadership, shutting down,
/// overloaded): the replica's own error, carried as is.
pub type ReplicaError = Box<dyn std::error::Error + Send + Sync>;

/// The door as the worker and its routes hold it.
pub type Door = Arc<dyn Replica>;

/// What the worker needs of the replica on its node.
pub trait Replica: Send + Sync + 'static {
    /// This node's id.
    fn id(&self) -> u64;
    /// Whether this node leads now.
    fn is_leader(&self) -> bool;
    /// The leader, if known.
    fn leader_id(&self) -> Option<u64>;
    /// The Raft log index applied on this node.
    fn applied_index(&self) -> u64;
    /// Changes whenever an entry is applied on this node.
    fn subscribe_applied(&self) -> watch::Receiver<u64>;
    /// The replicated state as applied on this node (followers may lag).
    fn state(&self) -> RwLockReadGuard<'_, QueueState>;
    /// Up to `max` queue entries from offset `from`, read from this node's state.
    fn read_local(&self, from: u64, max: usize) -> Vec<(u64, QueuedPacket)>;
    /// Returns once everything committed before the call is applied on this node (the
    /// leader's read barrier).
    fn read_barrier(&self) -> BoxFuture<'_, Result<(), ReplicaError>>;
    /// Proposes `command` through Raft and returns once it is applied.
    fn propose(&self, command: Command) -> BoxFuture<'_, Result<CommandResult, ReplicaError>>;
    /// How fresh a read of [`Replica::state`] made right after this is (on the leader:
    /// after a read barrier, bounded in time).
    fn freshness(&self) -> BoxFuture<'_, api::cluster::Freshness>;
}
