//! Ringwatch central manager (CMA): the `cma` binary's wiring. Its configuration
//! ([`config`]), the queue replica it starts (`replica`), the worker it runs on the leader
//! (`worker`, through the [`door`] onto the replica) and the admin API it serves ([`admin`],
//! with the worker's routes).

pub mod admin;
#[cfg(test)]
mod bounds_tests;
pub mod config;
pub mod door;
