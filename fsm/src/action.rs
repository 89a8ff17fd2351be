//! Outputs of the fsm: probes to run, verdicts to publish, alarms to clear. Ids are
//! counters inside the engine state, so a replay after failover yields the same ids.

use crate::topology::{RouterId, SwitchId};
use proto::HostId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies a probe request; the worker echoes it back in [`crate::Event::ProbeResult`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProbeId(pub u64);

/// Identifies a verdict, for `cmactl failures` and for [`Action::ClearAlarm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VerdictId(pub u64);

/// What a probe should reach; the worker resolves identities to addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeTarget {
    /// A host (echo to its nanoprobe address).
    Host(HostId),
    /// A switch's management address.
    Switch(SwitchId),
    /// A router's address.
    Router(RouterId),
}

/// The conclusion of an investigation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VerdictKind {
    /// The host is down.
    Dead(HostId),
    /// The path between the reporter (first) and the peer (second) is broken; both live.
    LinkFault(HostId, HostId),
    /// The reporter is cut off; the peer it accused is fine.
    ReporterIsolated(HostId),
    /// A switch is down; the hosts behind it get no separate alarms.
    SwitchDown(SwitchId, Vec<HostId>),
    /// A router is down; the switches and hosts behind it get no separate alarms.
    RouterDown(RouterId, Vec<SwitchId>, Vec<HostId>),
    /// The suspicion was wrong: the host answered.
    FalseAlarm(HostId),
    /// A host with an open alarm is heard again.
    Recovered(HostId),
    /// The host shut down gracefully (no alarm).
    Left(HostId),
    /// The host is up but its nanoprobe is not running: two watchers' heartbeats met an
    /// ICMP port-unreachable (rows R1-R2). Not a dead host, and not a monitored one either.
    AgentDown(HostId),
    /// The host's nanoprobe keeps crashing: its agent went down `FLAP_COUNT` times within
    /// `FLAP_WINDOW_US` (row A3). One alarm instead of a verdict per crash; it closes after
    /// `FLAP_QUIET_US` with the agent running (row F3).
    AgentFlapping(HostId),
}

impl VerdictKind {
    /// Whether this verdict opens an alarm that a later [`Action::ClearAlarm`] closes.
    pub fn is_alarm(&self) -> bool {
        matches!(
            self,
            VerdictKind::Dead(_)
                | VerdictKind::LinkFault(..)
                | VerdictKind::ReporterIsolated(_)
                | VerdictKind::SwitchDown(..)
                | VerdictKind::RouterDown(..)
                | VerdictKind::AgentDown(_)
                | VerdictKind::AgentFlapping(_)
        )
    }
}

/// Which heartbeat report an [`Evidence::Report`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportKind {
    /// `HbDead` (for group verdicts: about the host named in `about`).
    Dead,
    /// `HbBackAlive`.
    Alive,
    /// `HbShutdown`.
    Shutdown,
    /// `HbRefused`: the reporter's heartbeat to the host met an ICMP port-unreachable.
    Refused,
}

/// One fact that led to a verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Evidence {
    /// A heartbeat report.
    Report {
        /// Queue timestamp (µs).
        at: u64,
        /// Who reported.
        reporter: HostId,
        /// The host the report is about.
        about: HostId,
        /// Report kind.
        kind: ReportKind,
    },
    /// A probe outcome; `reachable: None` means it timed out.
    Probe {
        /// The probe.
        probe_id: ProbeId,
        /// Who probed.
        from: HostId,
        /// What was probed.
        target: ProbeTarget,
        /// Outcome (`None`: no answer before the deadline).
        reachable: Option<bool>,
    },
}

/// One output of [`crate::Engine::handle`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Ask `from` to probe `target`; a result must come back before `deadline` (µs) or the
    /// probe counts as failed.
    RequestProbe {
        /// Id to echo back.
        probe_id: ProbeId,
        /// The host that sends the probe.
        from: HostId,
        /// What it probes.
        target: ProbeTarget,
        /// Deadline (µs).
        deadline: u64,
    },
    /// Publish a verdict.
    Verdict {
        /// Deterministic id.
        id: VerdictId,
        /// Time of the event that concluded it (µs).
        at: u64,
        /// The conclusion.
        kind: VerdictKind,
        /// What led to it.
        evidence: Vec<Evidence>,
    },
    /// Close the alarm opened by verdict `verdict`.
    ClearAlarm {
        /// The alarm's verdict.
        verdict: VerdictId,
        /// Time (µs).
        at: u64,
    },
}

impl fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts = |h: &[HostId]| {
            h.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            VerdictKind::Dead(h) => write!(f, "dead {h}"),
            VerdictKind::LinkFault(a, b) => write!(f, "linkfault {a} {b}"),
            VerdictKind::ReporterIsolated(a) => write!(f, "isolated {a}"),
            VerdictKind::SwitchDown(s, h) => write!(f, "switchdown {s} {}", hosts(h)),
            VerdictKind::RouterDown(r, s, h) => {
                let sw = s.iter().map(|x| x.0.clone()).collect::<Vec<_>>().join(",");
                write!(f, "routerdown {r} {sw} {}", hosts(h))
            }
            VerdictKind::FalseAlarm(h) => write!(f, "falsealarm {h}"),
            VerdictKind::Recovered(h) => write!(f, "recovered {h}"),
            VerdictKind::Left(h) => write!(f, "left {h}"),
            VerdictKind::AgentDown(h) => write!(f, "agentdown {h}"),
            VerdictKind::AgentFlapping(h) => write!(f, "agentflapping {h}"),
        }
    }
}
