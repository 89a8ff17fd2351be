//! Events: verdicts and state changes, as the worker stores them in the replicated event
//! table, hands them to the sinks and serves them at `GET /v1/events`.

use serde::{Deserialize, Serialize};

/// One event: a verdict or a state change, as stored and as delivered to sinks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing id assigned by the worker through Raft (stable across leader changes).
    pub id: u64,
    /// Time of the event in µs since the Unix epoch (from the queue entry that caused it).
    pub at_us: u64,
    /// Dotted kind, e.g. `verdict.dead`, `verdict.switch_down`, `host.joined`, `host.left`.
    pub kind: String,
    /// One line for humans.
    pub summary: String,
    /// Structured details (hosts, evidence, ...).
    pub data: serde_json::Value,
}
