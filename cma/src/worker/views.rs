//! What the worker publishes in the replicated tables for operators: hosts, rings,
//! failures and events, as JSON rows. Every node serves them from its own replica (the
//! admin API), so followers answer too.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Table of [`HostRow`], keyed by host id (big-endian u64).
pub const HOSTS: &str = "hosts";
/// Table of [`RingRow`], keyed by ring name.
pub const RINGS: &str = "rings";
/// Table of [`FailureRow`], keyed by failure id (big-endian u64).
pub const FAILURES: &str = "failures";
/// Table of [`crate::sinks::Event`], keyed by event id (big-endian u64).
pub const EVENTS: &str = "events";
/// Table of the worker's own state (one row, [`STATE_KEY`]).
pub const WORKER: &str = "worker";
/// Key of the worker's state row.
pub const STATE_KEY: &[u8] = b"state";
/// Table of commands not yet acknowledged, keyed by command id (big-endian u64).
pub const COMMANDS: &str = "commands";

/// Key of a row addressed by a number: big-endian, so rows sort by number.
pub fn id_key(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// What is known of one monitored host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRow {
    pub id: u64,
    pub hostname: String,
    /// Where its nanoprobe listens.
    pub addr: SocketAddr,
    /// The switch it sits behind, if known.
    pub switch: Option<String>,
    /// `up`, `suspect`, `dead`, `left`.
    pub status: String,
    /// When the status last changed (µs since the Unix epoch).
    pub since_us: u64,
    /// Hosts that expect its heartbeats.
    pub watchers: Vec<u64>,
    /// Nanoprobe version.
    pub version: String,
}

/// One heartbeat ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingRow {
    pub name: String,
    /// `switch`, `top` or `flat`.
    pub kind: String,
    /// Members in ring order (each sends to and expects its neighbours).
    pub members: Vec<u64>,
}

/// One verdict of the failure-disambiguation state machine and its life.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureRow {
    pub id: u64,
    /// `dead`, `link_fault`, `reporter_isolated`, `switch_down`, `router_down`,
    /// `false_alarm`, `recovered`, `left`.
    pub kind: String,
    /// What failed: a host id, a switch or router name, or `a-b` for a link.
    pub subject: String,
    /// Hosts affected.
    pub hosts: Vec<u64>,
    /// `open` until the subject recovers, then `closed`.
    pub state: String,
    /// When the verdict was reached (µs since the Unix epoch).
    pub at_us: u64,
    /// When it was closed, if it was.
    pub closed_us: Option<u64>,
    /// One line for humans.
    pub summary: String,
    /// The reports and probe outcomes that led to it.
    pub evidence: serde_json::Value,
}

/// Progress of the worker, for `cmactl status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Next queue offset the worker will process.
    pub offset: u64,
    /// Next free queue offset.
    pub queue_next: u64,
    /// Entries waiting in the queue.
    pub backlog: u64,
    /// Known hosts, by status.
    pub hosts_up: usize,
    pub hosts_dead: usize,
    pub hosts_left: usize,
    /// Open failures.
    pub open_failures: usize,
}

/// The evidence of a verdict in one line: who reported, and what the probes found, e.g.
/// `reported dead by 4,6; probe 4 -> 5: no answer`.
pub fn evidence_brief(evidence: &serde_json::Value) -> String {
    let Ok(items) = serde_json::from_value::<Vec<fsm::Evidence>>(evidence.clone()) else {
        return String::new();
    };
    let mut by_kind: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
    let mut probes = Vec::new();
    for item in &items {
        match item {
            fsm::Evidence::Report { reporter, kind, .. } => {
                let kind = match kind {
                    fsm::ReportKind::Dead => "dead",
                    fsm::ReportKind::Alive => "alive",
                    fsm::ReportKind::Shutdown => "shutdown",
                };
                let list = by_kind.entry(kind).or_default();
                if !list.contains(&reporter.0) {
                    list.push(reporter.0);
                }
            }
            fsm::Evidence::Probe {
                from,
                target,
                reachable,
                ..
            } => {
                let target = match target {
                    fsm::ProbeTarget::Host(h) => format!("host {h}"),
                    fsm::ProbeTarget::Switch(s) => format!("switch {s}"),
                    fsm::ProbeTarget::Router(r) => format!("router {r}"),
                };
                let outcome = match reachable {
                    Some(true) => "reachable",
                    Some(false) => "unreachable",
                    None => "no answer",
                };
                probes.push(format!("probe {from} -> {target}: {outcome}"));
            }
        }
    }
    let mut parts: Vec<String> = by_kind
        .into_iter()
        .map(|(kind, mut who)| {
            who.sort_unstable();
            format!(
                "reported {kind} by {}",
                who.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    parts.extend(probes);
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_reads_as_one_line() {
        let evidence = serde_json::json!([
            { "Report": { "about": 5, "at": 1, "kind": "Dead", "reporter": 6 } },
            { "Report": { "about": 5, "at": 2, "kind": "Dead", "reporter": 4 } },
            { "Report": { "about": 5, "at": 3, "kind": "Dead", "reporter": 4 } },
            { "Probe": { "probe_id": 3, "from": 4, "target": { "Switch": "sw1" }, "reachable": false } },
            { "Probe": { "probe_id": 4, "from": 4, "target": { "Host": 5 }, "reachable": null } }
        ]);
        assert_eq!(
            evidence_brief(&evidence),
            "reported dead by 4,6; probe 4 -> switch sw1: unreachable; probe 4 -> host 5: no answer"
        );
        assert_eq!(evidence_brief(&serde_json::json!("garbage")), "");
    }
}
