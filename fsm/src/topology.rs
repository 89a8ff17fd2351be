//! Topology facts the fsm correlates on: which switch a host sits behind, which router a
//! switch hangs off, and the heartbeat timing of each host's ring.

use proto::HostId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A switch, named as operators configure it (e.g. `sw1`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SwitchId(pub String);

/// A router, named as operators configure it (e.g. `r1`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RouterId(pub String);

impl fmt::Display for SwitchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for RouterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the fsm knows about one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// The switch the host sits behind; `None` puts it in the flat "unknown" group, which
    /// gets no switch correlation.
    pub switch: Option<SwitchId>,
    /// Heartbeat interval of the host's ring in µs; 0 means "use the configured default".
    pub hb_interval_us: u64,
}

/// The topology as far as facts have been fed in. Kept sorted so snapshots are stable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub(crate) hosts: BTreeMap<HostId, HostFacts>,
    pub(crate) switch_hosts: BTreeMap<SwitchId, BTreeSet<HostId>>,
    pub(crate) switch_router: BTreeMap<SwitchId, RouterId>,
}

impl Topology {
    /// Records (or moves) a host; returns nothing because a move is not an error.
    pub(crate) fn set_host(&mut self, host: HostId, facts: HostFacts) {
        if let Some(old) = self.hosts.get(&host).and_then(|f| f.switch.clone()) {
            if let Some(set) = self.switch_hosts.get_mut(&old) {
                set.remove(&host);
            }
        }
        if let Some(sw) = &facts.switch {
            self.switch_hosts
                .entry(sw.clone())
                .or_default()
                .insert(host);
        }
        self.hosts.insert(host, facts);
    }

    /// The switch of `host`, if known.
    pub fn switch_of(&self, host: HostId) -> Option<&SwitchId> {
        self.hosts.get(&host).and_then(|f| f.switch.as_ref())
    }

    /// Every switch → router fact given so far.
    pub fn switch_routers(&self) -> impl Iterator<Item = (&SwitchId, &RouterId)> {
        self.switch_router.iter()
    }

    /// The router `switch` hangs off, if a `SwitchFact` said so.
    pub fn router_of(&self, switch: &SwitchId) -> Option<&RouterId> {
        self.switch_router.get(switch)
    }

    /// Hosts known to sit behind `switch`, sorted.
    pub fn hosts_behind(&self, switch: &SwitchId) -> Vec<HostId> {
        self.switch_hosts
            .get(switch)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Switches known to hang off `router`, sorted.
    pub fn switches_behind(&self, router: &RouterId) -> Vec<SwitchId> {
        self.switch_router
            .iter()
            .filter(|(_, r)| *r == router)
            .map(|(s, _)| s.clone())
            .collect()
    }

    pub(crate) fn hb_interval(&self, host: HostId, default_us: u64) -> u64 {
        match self.hosts.get(&host) {
            Some(f) if f.hb_interval_us > 0 => f.hb_interval_us,
            _ => default_us,
        }
    }
}
