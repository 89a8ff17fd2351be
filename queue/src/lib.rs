//! The contract of Ringwatch's replicated queue, shared by everything that talks to it:
//!
//! - [`record`]: [`QueuedPacket`], one verified report as stored;
//! - [`command`]: the entries proposed through Raft ([`Command`], [`TableWrite`]) and what
//!   applying them returns ([`AppendResult`], [`CommandResult`]);
//! - [`wire`]: the authenticated, length-delimited TCP framing of every connection;
//! - [`rpc`]: the requests and replies on those connections and the multiplexed
//!   [`rpc::Connection`] (generic over the peer-to-peer messages, which `cma` defines);
//! - [`client`]: [`QueueClient`] for producers (packet-readers) and consumers, and the
//!   cluster-secret loader.
//!
//! The Raft node itself (openraft, sled storage, the server) lives in `cma`; this crate
//! links neither, so a producer such as the packet-reader stays small. Design:
//! `docs/design.md` and `docs/queue.md`.

pub mod client;
pub mod command;
pub mod record;
pub mod rpc;
pub mod wire;

pub use client::{
    load_cluster_secret, parse_cluster_secret, ClientConfig, ClientError, QueueClient, SecretError,
};
pub use command::{AppendResult, Command, CommandResult, TableWrite};
pub use record::QueuedPacket;
