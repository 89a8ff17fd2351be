//! The Ringwatch nanoprobe: the agent on every monitored host (docs/design.md §3-4).
//!
//! - [`config`]: TOML configuration with documented defaults.
//! - [`heartbeat`]: the pure heartbeat engine (send/expect lists, late/dead/back-alive,
//!   martians), one timer structure for all peers.
//! - [`reports`]: reliable reports (ids, bounded backoff, reader choice and fail-over,
//!   bounded queue).
//! - [`commands`]: idempotent command application (pure: dedup, then the engine's part
//!   of each command; probes come back as orders).
//! - [`probes`]: ICMP echo, TCP connect and UDP echo probes.
//! - [`guard`]: per-source failure budget (flood resistance).
//! - [`lldp`]: the LLDP/CDP frame parser and the bounded neighbour table (pure).
//! - [`discovery`]: hostname, interfaces, default gateway, LLDP neighbour.
//! - [`capture`]: the filtered AF_PACKET socket that hears LLDP/CDP frames.
//! - [`socket`]: the UDP socket and its options.
//! - [`recv`]: batched reads (`recvmmsg`) with the kernel's drop counter.
//! - [`peers`]: connected sockets for authenticated peers (their own receive queue).
//! - [`metrics`]: counters and the optional Prometheus listener.
//! - [`node`]: the daemon loop wiring them together.

pub mod capture;
pub mod commands;
pub mod config;
pub mod discovery;
pub mod guard;
pub mod heartbeat;
pub mod lldp;
pub mod metrics;
pub mod node;
pub mod peers;
pub mod probes;
pub mod recv;
pub mod reports;
pub mod socket;
