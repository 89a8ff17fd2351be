//! The rows the worker publishes for operators: hosts, rings, failures (and events, see
//! [`crate::Event`]). Every node serves them from its own replica (the admin API),
//! so followers answer too. Where they are stored and how they are encoded is
//! the worker's `tables` business.
//!
//! States and kinds are enums whose serde names are the lowercase strings the admin API
//! and `cmactl --json` have always shown (`up`, `dead`, `switch_down`, `open`, ...).

use fsm::{Evidence, VerdictKind};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// What a ring spans. Serialized in lowercase (`switch`, `top`, `flat`), as the rings
/// table and `cmactl rings --json` show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RingKind {
    /// The hosts behind one switch.
    Switch,
    /// The representatives of every switch ring (and of the flat ring).
    Top,
    /// The hosts of unknown topology.
    Flat,
}

impl RingKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RingKind::Switch => "switch",
            RingKind::Top => "top",
            RingKind::Flat => "flat",
        }
    }
}

impl std::fmt::Display for RingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where a monitored host stands, as the worker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// In its rings.
    Up,
    /// Under suspicion (counted with `up` by `/v1/status`; the worker does not write it
    /// today, the fsm keeps suspicions to itself until a verdict).
    Suspect,
    /// Declared dead by a verdict.
    Dead,
    /// Shut down gracefully.
    Left,
    /// Up, but its nanoprobe is not running (an `agent_down` or `agent_flapping` verdict):
    /// not monitored until its agent is back.
    AgentDown,
}

impl HostStatus {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Up => "up",
            HostStatus::Suspect => "suspect",
            HostStatus::Dead => "dead",
            HostStatus::Left => "left",
            HostStatus::AgentDown => "agent_down",
        }
    }
}

impl fmt::Display for HostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The kind of a verdict, without its subject (the `kind` column of the failures table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// [`VerdictKind::Dead`].
    Dead,
    /// [`VerdictKind::LinkFault`].
    LinkFault,
    /// [`VerdictKind::ReporterIsolated`].
    ReporterIsolated,
    /// [`VerdictKind::SwitchDown`].
    SwitchDown,
    /// [`VerdictKind::RouterDown`].
    RouterDown,
    /// [`VerdictKind::FalseAlarm`].
    FalseAlarm,
    /// [`VerdictKind::Recovered`].
    Recovered,
    /// [`VerdictKind::Left`].
    Left,
    /// [`VerdictKind::AgentDown`].
    AgentDown,
    /// [`VerdictKind::AgentFlapping`].
    AgentFlapping,
}

impl FailureKind {
    /// The snake_case name (`dead`, `link_fault`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Dead => "dead",
            FailureKind::LinkFault => "link_fault",
            FailureKind::ReporterIsolated => "reporter_isolated",
            FailureKind::SwitchDown => "switch_down",
            FailureKind::RouterDown => "router_down",
            FailureKind::FalseAlarm => "false_alarm",
            FailureKind::Recovered => "recovered",
            FailureKind::Left => "left",
            FailureKind::AgentDown => "agent_down",
            FailureKind::AgentFlapping => "agent_flapping",
        }
    }
}

impl From<&VerdictKind> for FailureKind {
    fn from(kind: &VerdictKind) -> FailureKind {
        match kind {
            VerdictKind::Dead(_) => FailureKind::Dead,
            VerdictKind::LinkFault(..) => FailureKind::LinkFault,
            VerdictKind::ReporterIsolated(_) => FailureKind::ReporterIsolated,
            VerdictKind::SwitchDown(..) => FailureKind::SwitchDown,
            VerdictKind::RouterDown(..) => FailureKind::RouterDown,
            VerdictKind::FalseAlarm(_) => FailureKind::FalseAlarm,
            VerdictKind::Recovered(_) => FailureKind::Recovered,
            VerdictKind::Left(_) => FailureKind::Left,
            VerdictKind::AgentDown(_) => FailureKind::AgentDown,
            VerdictKind::AgentFlapping(_) => FailureKind::AgentFlapping,
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Whether a failure is still open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureState {
    /// An alarm whose subject has not recovered.
    Open,
    /// Recovered, or a verdict that never was an alarm.
    Closed,
}

impl FailureState {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureState::Open => "open",
            FailureState::Closed => "closed",
        }
    }
}

impl fmt::Display for FailureState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What is known of one monitored host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRow {
    /// Host id.
    pub id: u64,
    /// Host name it reported at start-up.
    pub hostname: String,
    /// Where its nanoprobe listens.
    pub addr: SocketAddr,
    /// The switch it sits behind, if known.
    pub switch: Option<String>,
    /// `up`, `suspect`, `dead`, `left`, `agent_down`.
    pub status: HostStatus,
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
    /// `switch:<name>`, `flat` or `top`.
    pub name: String,
    /// `switch`, `top` or `flat`.
    pub kind: RingKind,
    /// Members in ring order (each sends to and expects its neighbours).
    pub members: Vec<u64>,
}

/// One verdict of the failure-disambiguation state machine and its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRow {
    /// The fsm's verdict id.
    pub id: u64,
    /// `dead`, `link_fault`, `reporter_isolated`, `switch_down`, `router_down`,
    /// `false_alarm`, `recovered`, `left`, `agent_down`, `agent_flapping`.
    pub kind: FailureKind,
    /// What failed: a host id, a switch or router name, or `a-b` for a link.
    pub subject: String,
    /// Hosts affected.
    pub hosts: Vec<u64>,
    /// `open` until the subject recovers, then `closed`.
    pub state: FailureState,
    /// When the verdict was reached (µs since the Unix epoch).
    pub at_us: u64,
    /// When it was closed, if it was.
    pub closed_us: Option<u64>,
    /// One line for humans.
    pub summary: String,
    /// The reports and probe outcomes that led to it.
    pub evidence: Vec<Evidence>,
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
    /// Known hosts that are up (or suspected).
    pub hosts_up: usize,
    /// Known hosts declared dead.
    pub hosts_dead: usize,
    /// Known hosts that left.
    pub hosts_left: usize,
    /// Known hosts that are up with their nanoprobe not running (absent when 0, and from
    /// nodes of earlier versions).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hosts_agent_down: usize,
    /// Open failures.
    pub open_failures: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Every answer: who answered, and the rows.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer<T> {
    /// The answering node.
    pub node_id: u64,
    /// Whether it is the leader (followers may lag).
    pub is_leader: bool,
    /// The leader, if known.
    pub leader_id: Option<u64>,
    /// Raft log index applied on the answering node.
    pub applied_index: u64,
    /// How fresh the rows are (absent from nodes of earlier versions).
    #[serde(default)]
    pub freshness: Option<crate::cluster::Freshness>,
    /// The rows.
    pub data: T,
}

impl<T> Answer<T> {
    /// The line to show above the rows when they may be old; `None` when current.
    pub fn stale_warning(&self) -> Option<String> {
        self.freshness.and_then(|f| f.warning(self.node_id))
    }
}

/// The evidence of a verdict in one line: who reported, and what the probes found, e.g.
/// `reported dead by 4,6; probe 4 -> 5: no answer`.
pub fn evidence_brief(items: &[Evidence]) -> String {
    let mut by_kind: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
    let mut probes = Vec::new();
    for item in items {
        match item {
            fsm::Evidence::Report { reporter, kind, .. } => {
                let kind = match kind {
                    fsm::ReportKind::Dead => "dead",
                    fsm::ReportKind::Alive => "alive",
                    fsm::ReportKind::Shutdown => "shutdown",
                    fsm::ReportKind::Refused => "port-unreachable",
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
        let evidence: Vec<Evidence> = serde_json::from_value(evidence).unwrap();
        assert_eq!(
            evidence_brief(&evidence),
            "reported dead by 4,6; probe 4 -> switch sw1: unreachable; probe 4 -> host 5: no answer"
        );
        assert_eq!(evidence_brief(&[]), "");
    }
}
