//! Ringwatch central manager (CMA): the Raft-replicated packet queue, the worker on top of
//! it, the admin API and the `cmactl` client.

pub mod admin;
pub mod config;
pub mod raft;
pub mod sinks;
pub mod worker;
