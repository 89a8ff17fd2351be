//! The replicated packet queue as seen by producers and consumers: the stored record and
//! the network client that follows the Raft leader.

pub mod client;
pub mod record;

pub use client::{load_cluster_secret, AppendResult, ClientConfig, ClientError, QueueClient};
pub use record::QueuedPacket;
