//! Inputs of the fsm. Every timestamp is in µs and comes from the queue entry that carried
//! the report, never from a clock read here, so a replay sees the same times.

use crate::action::ProbeId;
use crate::topology::{HostFacts, RouterId, SwitchId};
use proto::HostId;
use serde::{Deserialize, Serialize};

/// One input to [`crate::Engine::handle`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Topology fact: `host` sits behind the given switch with the given ring timing.
    HostFact {
        /// The host.
        host: HostId,
        /// Its switch and heartbeat interval.
        facts: HostFacts,
    },
    /// Topology fact: `switch` hangs off `router`.
    SwitchFact {
        /// The switch.
        switch: SwitchId,
        /// Its router.
        router: RouterId,
    },
    /// `reporter` stopped hearing heartbeats from `peer` (deadtime passed).
    HbDead {
        /// Queue timestamp (µs).
        at: u64,
        /// The watcher that reported.
        reporter: HostId,
        /// The watched host.
        peer: HostId,
    },
    /// `reporter` heard `peer` late (warntime passed). Informational only.
    HbLate {
        /// Queue timestamp (µs).
        at: u64,
        /// The watcher that reported.
        reporter: HostId,
        /// The watched host.
        peer: HostId,
    },
    /// `reporter` hears `peer` again.
    HbBackAlive {
        /// Queue timestamp (µs).
        at: u64,
        /// The watcher that reported.
        reporter: HostId,
        /// The watched host.
        peer: HostId,
    },
    /// `host` announced a graceful shutdown.
    HbShutdown {
        /// Queue timestamp (µs).
        at: u64,
        /// The host leaving.
        host: HostId,
    },
    /// Outcome of a probe the fsm asked for with [`crate::Action::RequestProbe`].
    ProbeResult {
        /// Queue timestamp (µs).
        at: u64,
        /// The id from the request.
        probe_id: ProbeId,
        /// Whether the target answered.
        reachable: bool,
    },
    /// Check `host` at once with a probe from `from`, without waiting for a report: the
    /// CMA suspects it because a ring neighbour died next to it and nobody on that side
    /// reported (a block of consecutive hosts may be down; docs/worker.md, "block
    /// sweeps"). Only a host in `watching` is checked (row K1): an unreachable answer is a
    /// `Dead` verdict (K2), an answer or no answer at all (the probe may have been refused
    /// by the probe limiter) ends the check without any verdict (K3, K4).
    Check {
        /// Queue timestamp (µs).
        at: u64,
        /// The host to check.
        host: HostId,
        /// The live host that probes it (the watcher on the edge of the silent block).
        from: HostId,
    },
    /// Time passes (µs, from queue/Raft entries): fires deadlines.
    Tick {
        /// Current time (µs).
        now: u64,
    },
    /// `reporter`'s heartbeat to `peer` met an ICMP port-unreachable: `peer`'s host answered,
    /// its nanoprobe did not (rows R1-R3, A1-A5). Last variant: events of earlier builds
    /// keep their index.
    HbRefused {
        /// Queue timestamp (µs).
        at: u64,
        /// The watcher that reported.
        reporter: HostId,
        /// The watched host.
        peer: HostId,
    },
}

impl Event {
    /// The event's timestamp, if it carries one (facts do not).
    pub fn time(&self) -> Option<u64> {
        match self {
            Event::HostFact { .. } | Event::SwitchFact { .. } => None,
            Event::HbDead { at, .. }
            | Event::HbLate { at, .. }
            | Event::HbBackAlive { at, .. }
            | Event::HbShutdown { at, .. }
            | Event::HbRefused { at, .. }
            | Event::ProbeResult { at, .. }
            | Event::Check { at, .. } => Some(*at),
            Event::Tick { now } => Some(*now),
        }
    }
}
