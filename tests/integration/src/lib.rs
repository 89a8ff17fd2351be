//! Shared helpers for Ringwatch's whole-binary integration tests:
//!
//! - [`procs`]: the one way to find (and if needed build) a workspace binary, spawn it
//!   with its output in a log file, and guard it (SIGKILL by PID on drop);
//! - [`cluster`]: the one way to form a CMA cluster with `cmactl` ([`cluster::CmaCluster`],
//!   used by the loopback [`cluster::Cluster`] and the lab's [`labrun::Ringwatch`]), and
//!   queue test helpers;
//! - [`reader`]: packet-reader processes and `/metrics` scraping;
//! - [`lab`], [`labrun`]: the network-namespace lab;
//! - [`verdicts`]: reading `cmactl --json failures` rows;
//! - [`nemesis`], [`checker`], [`lossy`]: the fault-injection suite, the checker of its
//!   histories, and data directories on lossyfs (power cuts, slow disks);
//! - [`replay`]: a stopped node's log replayed into a fresh worker, compared with the
//!   live cluster;
//! - [`browser`]: headless Chromium over WebDriver, for the web console.

pub mod attack;
pub mod browser;
pub mod checker;
pub mod cluster;
pub mod lab;
pub mod labrun;
pub mod loopback;
pub mod lossy;
pub mod nemesis;
pub mod procs;
pub mod reader;
pub mod replay;
pub mod verdicts;
