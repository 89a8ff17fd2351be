//! Ringwatch central manager (CMA): the binary that wires the rooms together: its
//! configuration, the queue replica (`replica`), the worker on the leader, the admin API
//! and the sinks.

pub mod admin;
#[cfg(test)]
mod bounds_tests;
pub mod config;
pub mod sinks;
pub mod worker;
