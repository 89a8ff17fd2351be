//! `fleetsim`: many simulated nanoprobes in one process, speaking the real wire protocol to
//! real packet-readers and CMA nodes (docs/fleetsim.md).
//!
//! - [`world`]: hosts, switches, routers, loopback addressing, faults and reachability.
//! - [`engine`]: the sans-IO core; every simulated host runs the real nanoprobe engines,
//!   heartbeats and echoes between hosts stay inside the simulation.
//! - [`control`]: the fault commands (stdin lines and scenarios).
//! - [`edge`]: the one socket all hosts share (`IP_PKTINFO` on the loopback device).

pub mod control;
pub mod edge;
pub mod engine;
pub mod world;
