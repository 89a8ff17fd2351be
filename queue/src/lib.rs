//! The contract of Ringwatch's replicated queue, shared by everything that talks to it:
//!
//! - [`record`]: [`QueuedPacket`], one verified report as stored;
//! - [`command`]: the entries proposed through Raft ([`Command`], [`TableWrite`]) and what
//!   applying them returns ([`AppendResult`], [`CommandResult`]);
//! - [`wire`]: the authenticated, length-delimited TCP framing of every connection;
//! - [`rpc`]: the requests and replies on those connections and the multiplexed
//!   [`rpc::Connection`] (generic over the peer-to-peer messages, which `replica` defines);
//! - [`client`]: [`QueueClient`] for producers (packet-readers) and consumers, and the
//!   cluster-secret loader;
//! - [`state`]: [`QueueState`], the replicated state machine itself (packets, consumer
//!   offsets, dedup window, tables), pure and deterministic: what applying the entries in
//!   order gives on every node;
//! - [`member`]: [`NodeId`] and [`NodeAddr`], the members of a queue cluster.
//!
//! The Raft node that replicates it (openraft, the segment-file log, the server) lives in
//! `replica`; this crate links neither openraft nor any storage, so a producer such as the
//! packet-reader stays small. Design: `docs/design.md` and `docs/queue.md`.

pub mod client;
pub mod command;
pub mod member;
pub mod record;
pub mod rpc;
pub mod state;
pub mod wire;

pub use client::{
    load_cluster_secret, parse_cluster_secret, ClientConfig, ClientError, QueueClient, SecretError,
};
pub use command::{AppendResult, Command, CommandResult, TableWrite};
pub use member::{NodeAddr, NodeId};
pub use record::QueuedPacket;
pub use state::{QueueState, StateSummary};
