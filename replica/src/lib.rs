//! The replica: the Raft node that replicates the queue ([`queue::QueueState`]), openraft 0.9
//! with a log of segment files and an authenticated TCP transport, and the limits that keep
//! it within its descriptors and memory whatever clients do. The `cma` binary starts it; the
//! worker sees it only through the `worker::Replica` door.
//!
//! - [`log_store`]: the durable Raft log (group-committed fdatasync); entries in
//!   [`segment_log`], vote and purge point in sled.
//! - [`state_machine`]: openraft's state machine over [`queue::QueueState`], with snapshot files.
//! - [`snapshot_policy`]: when to build a snapshot (log bytes against snapshot size).
//! - [`peer`]: the node-to-node messages, carried on the queue crate's authenticated
//!   connections beside the client requests.
//! - [`network`]: openraft's view of the transport.
//! - [`prompt_election`]: the best-placed follower calls the election as soon as the
//!   leader's lease runs out.
//! - [`server`]: the TCP listener serving peers and queue clients.
//! - [`node`]: the in-process handle that wires it all together.
//! - [`metrics`]: the node's metrics in a Prometheus registry.
//! - [`limits`]: the descriptor budget and the connection gate.

pub mod limits;
pub mod log_store;
pub mod metrics;
pub(crate) mod network;
pub mod node;
pub mod offline;
pub(crate) mod peer;
pub mod prompt_election;
pub(crate) mod segment_log;
pub(crate) mod server;
pub mod snapshot_policy;
pub(crate) mod state_machine;

use std::io::Cursor;

pub use node::{Freshness, Node, NodeError, NodeSettings, ProposeError};
pub use queue::member::{NodeAddr, NodeId};
pub use queue::state::{DedupLimits, QueueState, StateSummary};
pub use queue::{Command, CommandResult, TableWrite};
pub use server::{ACCEPT_BACKOFF, MAX_REQUESTS_IN_FLIGHT};

/// Binds `settings.listen`, opens the node (storage, Raft) and serves peers and queue
/// clients on the listener. Does not initialise a cluster: see [`Node::initialize`].
pub async fn start(settings: node::NodeSettings) -> Result<Node, NodeError> {
    start_with(settings, None).await
}

/// [`start`], with a hook run before every fdatasync of the Raft log (tests hold syncs
/// back with it to drive the node's bounds).
pub async fn start_with(
    settings: node::NodeSettings,
    sync_hook: Option<log_store::SyncHook>,
) -> Result<Node, NodeError> {
    let listen = settings.listen;
    let listen_error = |source| NodeError::Listen {
        addr: listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(listen_error)?;
    let local_addr = listener.local_addr().map_err(listen_error)?;
    let node = Node::open(settings, local_addr, sync_hook).await?;
    tokio::spawn(server::serve(listener, node.clone()));
    Ok(node)
}

openraft::declare_raft_types!(
    /// openraft type configuration of the CMA cluster.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = NodeAddr,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The openraft instance type used by the CMA.
pub type Raft = openraft::Raft<TypeConfig>;
