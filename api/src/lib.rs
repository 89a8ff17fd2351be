//! The language of Ringwatch's admin API: every type its routes answer or take, as JSON,
//! and nothing else (no server, no client, no replica). The `cma` binary serves them;
//! `cmactl` and the tests read them.
//!
//! - [`cluster`]: a node's view of the cluster and the bodies that form it
//!   (`/cluster/...`), and the body of every error answer;
//! - [`views`]: the rows the worker publishes (hosts, rings, failures, its status) and the
//!   [`views::Answer`] envelope of every `/v1/...` answer;
//! - [`topology`]: the topology as operators see it, each fact with its [`topology::Source`];
//! - [`event`]: [`Event`], a verdict or state change as stored and delivered to sinks;
//! - [`probe`]: the body and answer of `POST /v1/probe`.
//!
//! Serde names are what the admin API and `cmactl --json` have always shown; changing one
//! changes the API.

pub mod cluster;
pub mod event;
pub mod probe;
pub mod topology;
pub mod views;

pub use event::Event;
