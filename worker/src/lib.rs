//! The worker: runs on the Raft leader, consumes the queue in order, drives the fsm and the
//! ring planner, and carries out their decisions once they are committed through Raft. It
//! reaches the replica only through its [`door`] ([`Replica`]); the rows it publishes are
//! the `api` crate's types.
//!
//! - [`state`]: the deterministic core (state + step).
//! - [`rings`]: topology resolution and the ring plan (pure).
//! - [`topology`]: topology learned from LLDP/CDP and gateways, and its view (pure).
//! - [`run`]: the I/O shell (leadership, Raft proposals, commands, sinks).
//! - [`door`]: what the worker needs of the replica ([`Replica`]).
//! - [`sinks`]: where events go besides the event table (log, JSON lines, webhooks,
//!   Alertmanager).
//! - [`commander`] / [`outbox`]: reliable command delivery.
//! - [`probe_limit`]: probe budget and rate limit.
//! - [`sweep`]: block sweeps (a block of consecutive dead hosts found in parallel).
//! - [`routes`]: the admin API's routes over those rows (their types are the `api` crate's).
//! - [`tables`]: table names, keys and encodings of those rows (the edge; nothing else
//!   chooses them).
//! - `harness` (tests only): the queue state and the worker loop in memory.

// The public surface is what the binaries and tests use: the HTTP routes and their types,
// the run loop's entry points, the operator rows and the worker's config section.
pub(crate) mod commander;
pub mod config;
pub mod door;
#[cfg(test)]
mod harness;
pub(crate) mod outbox;
pub(crate) mod probe_limit;
pub mod replay;
pub mod rings;
pub mod routes;
pub mod run;
pub mod sinks;
pub(crate) mod state;
pub(crate) mod sweep;
pub(crate) mod tables;
pub mod topology;

pub use door::{Door, Replica, ReplicaError};

/// The worker's consumer name in the queue (its committed offset).
pub const CONSUMER: &str = "worker";
