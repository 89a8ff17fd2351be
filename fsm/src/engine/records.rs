//! The engine as rows, so a user that replicates it (the CMA worker) writes only what a
//! call changed instead of the whole engine:
//!
//! - one [`HostRecord`] per host (its machine and its topology facts), reported dirty by
//!   [`Engine::take_changes`] when a call changed it;
//! - one [`GroupEntry`] per open switch or router case, outstanding probe, open group
//!   alarm and switch→router fact, reported as the difference since the last call;
//! - the id counters ([`EngineCounters`]).
//!
//! [`Engine::from_records`] rebuilds an engine equal (`==`) to the one that produced the
//! rows; what the engine derives from them (the hosts a tick visits, suspects by switch,
//! hosts by switch) is recomputed.

use super::{Engine, GroupCase, Owner};
use crate::action::{ProbeId, VerdictId};
use crate::config::Config;
use crate::suspect::{AgentRecord, State, Suspect};
use crate::topology::{HostFacts, RouterId, SwitchId};
use proto::HostId;
use serde::{Deserialize, Serialize};
use statig::blocking::StateMachine;
use std::collections::{BTreeMap, BTreeSet};

/// One host's part of the engine: its machine (when it was ever reported on) and the
/// facts known about it. Opaque: store it and give it back to [`Engine::from_records`].
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct HostRecord {
    #[serde(with = "stable_machine")]
    machine: Option<StateMachine<Suspect>>,
    facts: Option<HostFacts>,
}

/// A machine as rows store it: its storage, then its state as a [`HostState`], whose
/// declaration order pins the index postcard writes. statig 0.4's macro declares the
/// `State` enum it generates in the iteration order of a `HashMap`, so the index its serde
/// derive wrote changed from one compilation to the next: a row written by one build of
/// `cma` was read as another state by another build (found by the worker replay check on
/// a real cluster: a suspect written `grouped` was read back `down`). Same layout as
/// statig's (storage, then the state's index), so rows of earlier builds still decode.
mod stable_machine {
    use super::super::HostState;
    use crate::suspect::{State, Suspect};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use statig::blocking::{IntoStateMachineExt, StateMachine};

    #[derive(Serialize)]
    struct Stored<'a> {
        shared_storage: &'a Suspect,
        state: HostState,
    }

    #[derive(Deserialize)]
    struct Loaded {
        shared_storage: Suspect,
        state: HostState,
    }

    pub(super) fn state_from(state: HostState) -> State {
        match state {
            HostState::Watching => State::Watching {},
            HostState::Suspected => State::Suspected {},
            HostState::Investigating => State::Investigating {},
            HostState::Grouped => State::Grouped {},
            HostState::Down => State::Down {},
            HostState::Left => State::Left {},
            HostState::Refused => State::Refused {},
            HostState::AgentDown => State::AgentDown {},
            HostState::AgentFlapping => State::AgentFlapping {},
        }
    }

    pub fn serialize<S: Serializer>(
        machine: &Option<StateMachine<Suspect>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        machine
            .as_ref()
            .map(|m| Stored {
                shared_storage: m.inner(),
                state: HostState::of(m.state()),
            })
            .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<StateMachine<Suspect>>, D::Error> {
        let loaded: Option<Loaded> = Deserialize::deserialize(deserializer)?;
        Ok(loaded.map(|l| {
            let mut machine = l.shared_storage.uninitialized_state_machine();
            *machine.state_mut() = state_from(l.state);
            machine.into()
        }))
    }
}

impl PartialEq for HostRecord {
    fn eq(&self, other: &Self) -> bool {
        self.facts == other.facts && same_machine(self.machine.as_ref(), other.machine.as_ref())
    }
}

impl Eq for HostRecord {}

impl std::fmt::Debug for HostRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRecord")
            .field("state", &self.machine.as_ref().map(|m| m.state()))
            .field("suspect", &self.machine.as_ref().map(|m| m.inner()))
            .field("facts", &self.facts)
            .finish()
    }
}

impl HostRecord {
    /// Whether the engine knows nothing about this host.
    pub fn is_empty(&self) -> bool {
        self.machine.is_none() && self.facts.is_none()
    }
}

/// Machines are equal when their state and storage are (a rebuilt machine is initialized
/// lazily on its first event; the suspect machine has no entry actions, so that is the
/// same machine).
fn same_machine(a: Option<&StateMachine<Suspect>>, b: Option<&StateMachine<Suspect>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.state() == b.state() && a.inner() == b.inner(),
        _ => false,
    }
}

/// What a [`GroupEntry`] is about (one row each).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupKey {
    /// An open switch case.
    SwitchCase(SwitchId),
    /// An open router case.
    RouterCase(RouterId),
    /// An outstanding probe and who asked for it.
    Probe(ProbeId),
    /// An open group alarm and the hosts still down under it.
    Alarm(VerdictId),
    /// The router a switch hangs off.
    SwitchRouter(SwitchId),
    /// What is known of a host's agent beside its machine.
    Agent(HostId),
}

/// One group row (opaque; its key is [`GroupEntry::key`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry(Entry);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Entry {
    SwitchCase(SwitchId, GroupCase),
    RouterCase(RouterId, GroupCase),
    Probe(ProbeId, Owner),
    Alarm(VerdictId, BTreeSet<HostId>),
    SwitchRouter(SwitchId, RouterId),
    /// Last variant: rows of earlier builds keep their index.
    Agent(HostId, AgentRecord),
}

impl GroupEntry {
    /// The row this entry is.
    pub fn key(&self) -> GroupKey {
        match &self.0 {
            Entry::SwitchCase(s, _) => GroupKey::SwitchCase(s.clone()),
            Entry::RouterCase(r, _) => GroupKey::RouterCase(r.clone()),
            Entry::Probe(p, _) => GroupKey::Probe(*p),
            Entry::Alarm(v, _) => GroupKey::Alarm(*v),
            Entry::SwitchRouter(s, _) => GroupKey::SwitchRouter(s.clone()),
            Entry::Agent(h, _) => GroupKey::Agent(*h),
        }
    }
}

/// The engine's id counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineCounters {
    /// Id of the next probe.
    pub next_probe: u64,
    /// Id of the next verdict.
    pub next_verdict: u64,
}

/// What changed since the last [`Engine::take_changes`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EngineChanges {
    /// Hosts whose [`HostRecord`] changed (read it with [`Engine::host_record`]).
    pub hosts: BTreeSet<HostId>,
    /// Group rows written (`Some`) or gone (`None`), in key order per kind.
    pub groups: Vec<(GroupKey, Option<GroupEntry>)>,
}

impl EngineChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.groups.is_empty()
    }
}

/// The group state as last reported, to report only differences.
#[derive(Debug, Default)]
pub(super) struct Reported {
    switch_cases: BTreeMap<SwitchId, GroupCase>,
    router_cases: BTreeMap<RouterId, GroupCase>,
    probe_owner: BTreeMap<ProbeId, Owner>,
    group_alarms: BTreeMap<VerdictId, BTreeSet<HostId>>,
    switch_router: BTreeMap<SwitchId, RouterId>,
    agents: BTreeMap<HostId, AgentRecord>,
}

/// Reports the difference between `reported` and `now` and brings `reported` up to date.
/// Cheap when nothing changed: the maps hold open cases only.
fn diff<K: Ord + Clone, V: PartialEq + Clone>(
    reported: &mut BTreeMap<K, V>,
    now: &BTreeMap<K, V>,
    key: impl Fn(&K) -> GroupKey,
    entry: impl Fn(&K, &V) -> Entry,
    out: &mut Vec<(GroupKey, Option<GroupEntry>)>,
) {
    reported.retain(|k, _| {
        let keep = now.contains_key(k);
        if !keep {
            out.push((key(k), None));
        }
        keep
    });
    for (k, v) in now {
        if reported.get(k) != Some(v) {
            out.push((key(k), Some(GroupEntry(entry(k, v)))));
            reported.insert(k.clone(), v.clone());
        }
    }
}

impl Engine {
    /// What changed since the last call (or since the engine was created or rebuilt):
    /// the hosts whose records changed, and the group rows written or gone.
    pub fn take_changes(&mut self) -> EngineChanges {
        let hosts = std::mem::take(&mut self.dirty_hosts);
        let mut groups = Vec::new();
        let r = &mut self.reported;
        diff(
            &mut r.switch_cases,
            &self.switch_cases,
            |k| GroupKey::SwitchCase(k.clone()),
            |k, v| Entry::SwitchCase(k.clone(), v.clone()),
            &mut groups,
        );
        diff(
            &mut r.router_cases,
            &self.router_cases,
            |k| GroupKey::RouterCase(k.clone()),
            |k, v| Entry::RouterCase(k.clone(), v.clone()),
            &mut groups,
        );
        diff(
            &mut r.probe_owner,
            &self.probe_owner,
            |k| GroupKey::Probe(*k),
            |k, v| Entry::Probe(*k, v.clone()),
            &mut groups,
        );
        diff(
            &mut r.group_alarms,
            &self.group_alarms,
            |k| GroupKey::Alarm(*k),
            |k, v| Entry::Alarm(*k, v.clone()),
            &mut groups,
        );
        diff(
            &mut r.switch_router,
            &self.topology.switch_router,
            |k| GroupKey::SwitchRouter(k.clone()),
            |k, v| Entry::SwitchRouter(k.clone(), v.clone()),
            &mut groups,
        );
        diff(
            &mut r.agents,
            &self.agents,
            |k| GroupKey::Agent(*k),
            |k, v| Entry::Agent(*k, v.clone()),
            &mut groups,
        );
        EngineChanges { hosts, groups }
    }

    /// The record of `host` (empty when the engine knows nothing about it).
    pub fn host_record(&self, host: HostId) -> HostRecord {
        HostRecord {
            machine: self.hosts.get(&host).cloned(),
            facts: self.topology.hosts.get(&host).cloned(),
        }
    }

    /// Every host the engine has a record of, sorted.
    pub fn host_ids(&self) -> BTreeSet<HostId> {
        self.hosts
            .keys()
            .chain(self.topology.hosts.keys())
            .copied()
            .collect()
    }

    /// Every group row, in key order per kind.
    pub fn group_entries(&self) -> Vec<GroupEntry> {
        let mut out = Vec::new();
        diff(
            &mut BTreeMap::new(),
            &self.switch_cases,
            |k| GroupKey::SwitchCase(k.clone()),
            |k, v| Entry::SwitchCase(k.clone(), v.clone()),
            &mut out,
        );
        diff(
            &mut BTreeMap::new(),
            &self.router_cases,
            |k| GroupKey::RouterCase(k.clone()),
            |k, v| Entry::RouterCase(k.clone(), v.clone()),
            &mut out,
        );
        diff(
            &mut BTreeMap::new(),
            &self.probe_owner,
            |k| GroupKey::Probe(*k),
            |k, v| Entry::Probe(*k, v.clone()),
            &mut out,
        );
        diff(
            &mut BTreeMap::new(),
            &self.group_alarms,
            |k| GroupKey::Alarm(*k),
            |k, v| Entry::Alarm(*k, v.clone()),
            &mut out,
        );
        diff(
            &mut BTreeMap::new(),
            &self.topology.switch_router,
            |k| GroupKey::SwitchRouter(k.clone()),
            |k, v| Entry::SwitchRouter(k.clone(), v.clone()),
            &mut out,
        );
        diff(
            &mut BTreeMap::new(),
            &self.agents,
            |k| GroupKey::Agent(*k),
            |k, v| Entry::Agent(*k, v.clone()),
            &mut out,
        );
        out.into_iter().filter_map(|(_, e)| e).collect()
    }

    /// The id counters.
    pub fn counters(&self) -> EngineCounters {
        EngineCounters {
            next_probe: self.next_probe,
            next_verdict: self.next_verdict,
        }
    }

    /// Rebuilds an engine from its rows: equal to the engine that reported them, so it
    /// makes the same decisions with the same ids.
    pub fn from_records(
        config: Config,
        counters: EngineCounters,
        hosts: impl IntoIterator<Item = (HostId, HostRecord)>,
        groups: impl IntoIterator<Item = GroupEntry>,
    ) -> Engine {
        let mut e = Engine::new(config);
        e.next_probe = counters.next_probe;
        e.next_verdict = counters.next_verdict;
        for (id, record) in hosts {
            if let Some(facts) = record.facts {
                e.topology.set_host(id, facts);
            }
            if let Some(machine) = record.machine {
                e.hosts.insert(id, machine);
            }
        }
        for GroupEntry(entry) in groups {
            match entry {
                Entry::SwitchCase(s, c) => {
                    e.switch_cases.insert(s, c);
                }
                Entry::RouterCase(r, c) => {
                    e.router_cases.insert(r, c);
                }
                Entry::Probe(p, o) => {
                    e.probe_owner.insert(p, o);
                }
                Entry::Alarm(v, h) => {
                    e.group_alarms.insert(v, h);
                }
                Entry::SwitchRouter(s, r) => {
                    e.topology.switch_router.insert(s, r);
                }
                Entry::Agent(h, a) => {
                    e.agents.insert(h, a);
                }
            }
        }
        for (h, m) in &e.hosts {
            if matches!(m.state(), State::Suspected {} | State::Investigating {}) {
                e.timed.insert(*h);
                if let Some(sw) = e.topology.switch_of(*h) {
                    e.timed_by_switch.entry(sw.clone()).or_default().insert(*h);
                }
            } else if matches!(m.state(), State::Refused {} | State::AgentFlapping {}) {
                e.timed.insert(*h);
            }
        }
        e.reported = Reported {
            switch_cases: e.switch_cases.clone(),
            router_cases: e.router_cases.clone(),
            probe_owner: e.probe_owner.clone(),
            group_alarms: e.group_alarms.clone(),
            switch_router: e.topology.switch_router.clone(),
            agents: e.agents.clone(),
        };
        e
    }

    /// `timed_by_switch` as the engine uses it: entries of hosts no longer timed, or that
    /// moved to another switch while timed, are never looked at (correlation checks both).
    fn live_timed_by_switch(&self) -> BTreeMap<&SwitchId, BTreeSet<HostId>> {
        self.timed_by_switch
            .iter()
            .map(|(s, set)| {
                let live = set
                    .iter()
                    .copied()
                    .filter(|h| self.timed.contains(h) && self.topology.switch_of(*h) == Some(s))
                    .collect::<BTreeSet<_>>();
                (s, live)
            })
            .filter(|(_, set)| !set.is_empty())
            .collect()
    }
}

/// Two engines are equal when they make the same decisions from here on: the same state,
/// cases, counters and topology (an emptied per-switch set equals a missing one), whatever
/// has been reported by [`Engine::take_changes`].
impl PartialEq for Engine {
    fn eq(&self, other: &Self) -> bool {
        let switch_hosts = |e: &Engine| {
            e.topology
                .switch_hosts
                .iter()
                .filter(|(_, set)| !set.is_empty())
                .map(|(s, set)| (s.clone(), set.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        self.config == other.config
            && self.topology.hosts == other.topology.hosts
            && self.topology.switch_router == other.topology.switch_router
            && switch_hosts(self) == switch_hosts(other)
            && self.hosts.len() == other.hosts.len()
            && self
                .hosts
                .iter()
                .zip(other.hosts.iter())
                .all(|((a, ma), (b, mb))| a == b && same_machine(Some(ma), Some(mb)))
            && self.timed == other.timed
            && self.live_timed_by_switch() == other.live_timed_by_switch()
            && self.switch_cases == other.switch_cases
            && self.router_cases == other.router_cases
            && self.probe_owner == other.probe_owner
            && self.group_alarms == other.group_alarms
            && self.agents == other.agents
            && self.next_probe == other.next_probe
            && self.next_verdict == other.next_verdict
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("hosts", &self.hosts.len())
            .field("timed", &self.timed)
            .field("switch_cases", &self.switch_cases)
            .field("router_cases", &self.router_cases)
            .field("probe_owner", &self.probe_owner)
            .field("group_alarms", &self.group_alarms)
            .field("next_probe", &self.next_probe)
            .field("next_verdict", &self.next_verdict)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    /// The stored state is `HostState`'s index in its declaration order, whatever order
    /// statig's macro gave its `State` enum in this compilation, and reads back the same.
    #[test]
    fn the_stored_state_index_is_pinned() {
        use crate::HostState;
        use statig::blocking::IntoStateMachineExt;
        let states = [
            (HostState::Watching, 0u8),
            (HostState::Suspected, 1),
            (HostState::Investigating, 2),
            (HostState::Grouped, 3),
            (HostState::Down, 4),
            (HostState::Left, 5),
            (HostState::Refused, 6),
            (HostState::AgentDown, 7),
            (HostState::AgentFlapping, 8),
        ];
        for (state, index) in states {
            let mut machine = Suspect::new(HostId(5)).uninitialized_state_machine();
            *machine.state_mut() = super::stable_machine::state_from(state);
            let record = HostRecord {
                machine: Some(machine.into()),
                facts: None,
            };
            let bytes = postcard::to_allocvec(&record).unwrap();
            // ..., the state's index, then `facts: None`.
            assert_eq!(bytes[bytes.len() - 2..], [index, 0], "{state:?}");
            let back: HostRecord = postcard::from_bytes(&bytes).unwrap();
            let read = back.machine.as_ref().map(|m| HostState::of(m.state()));
            assert_eq!(read, Some(state));
        }
    }

    fn rebuilt(e: &Engine) -> Engine {
        // Through postcard, as the CMA stores the rows.
        let hosts = e.host_ids().into_iter().map(|h| {
            let bytes = postcard::to_allocvec(&e.host_record(h)).unwrap();
            (h, postcard::from_bytes::<HostRecord>(&bytes).unwrap())
        });
        let groups = e.group_entries().into_iter().map(|g| {
            let bytes = postcard::to_allocvec(&g).unwrap();
            postcard::from_bytes::<GroupEntry>(&bytes).unwrap()
        });
        Engine::from_records(*e.config(), e.counters(), hosts, groups)
    }

    #[test]
    fn a_suspicion_and_a_switch_case_survive_rows_and_decide_the_same() {
        let mut e = Engine::default();
        for h in 1..=6 {
            let switch = SwitchId(if h <= 3 { "a" } else { "b" }.into());
            e.handle(Event::HostFact {
                host: HostId(h),
                facts: HostFacts {
                    switch: Some(switch),
                    hb_interval_us: 0,
                },
            });
        }
        let _ = e.take_changes();
        // Two suspects behind switch a: a switch case with a probe out.
        e.handle(Event::HbDead {
            at: 10,
            reporter: HostId(4),
            peer: HostId(1),
        });
        let changes = e.take_changes();
        assert_eq!(changes.hosts, BTreeSet::from([HostId(1)]));
        e.handle(Event::HbDead {
            at: 20,
            reporter: HostId(5),
            peer: HostId(2),
        });
        let changes = e.take_changes();
        assert!(changes
            .groups
            .iter()
            .any(|(k, v)| matches!(k, GroupKey::SwitchCase(_)) && v.is_some()));
        assert!(changes
            .groups
            .iter()
            .any(|(k, _)| matches!(k, GroupKey::Probe(_))));
        let mut copy = rebuilt(&e);
        assert!(copy == e);
        assert!(
            copy.take_changes().is_empty(),
            "a rebuilt engine has reported all"
        );
        // Both decide the same from here on.
        for now in [1_000_000, 5_000_000, 10_000_000] {
            assert_eq!(
                e.handle(Event::Tick { now }),
                copy.handle(Event::Tick { now })
            );
            assert!(copy == e);
        }
        // A tick that changes nothing reports nothing.
        let _ = e.take_changes();
        e.handle(Event::Tick { now: 10_000_001 });
        assert!(e.take_changes().is_empty());
    }

    #[test]
    fn an_agent_outage_survives_rows_and_decides_the_same() {
        let mut e = Engine::default();
        let refused = |at, reporter| Event::HbRefused {
            at,
            reporter: HostId(reporter),
            peer: HostId(3),
        };
        let alive = |at| Event::HbBackAlive {
            at,
            reporter: HostId(3),
            peer: HostId(3),
        };
        // Two outages (agent down, back), then a lone refusal of a third.
        for (start, back) in [(1_000_000, 2_000_000), (10_000_000, 11_000_000)] {
            e.handle(refused(start, 2));
            e.handle(refused(start + 100_000, 4));
            assert_eq!(e.host_state(HostId(3)), crate::HostState::AgentDown);
            e.handle(alive(back));
        }
        e.handle(refused(20_000_000, 2));
        assert_eq!(e.host_state(HostId(3)), crate::HostState::Refused);
        let changes = e.take_changes();
        assert!(changes
            .groups
            .iter()
            .any(|(k, v)| *k == GroupKey::Agent(HostId(3)) && v.is_some()));
        let mut copy = rebuilt(&e);
        assert!(copy == e);
        assert!(copy.take_changes().is_empty());
        // The second watcher: the third outage in 10 minutes, flapping, on both.
        let a = e.handle(refused(20_500_000, 4));
        assert_eq!(a, copy.handle(refused(20_500_000, 4)));
        assert_eq!(e.host_state(HostId(3)), crate::HostState::AgentFlapping);
        assert!(copy == e);
    }
}
