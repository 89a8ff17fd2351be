//! The entry point: routes events to per-host machines, correlates suspects behind one
//! switch or router into group investigations, and hands back actions.

use crate::action::{Action, Evidence, ProbeId, ProbeTarget, ReportKind, VerdictId, VerdictKind};
use crate::config::Config;
use crate::event::Event;
use crate::suspect::{AgentRecord, Ctx, Helpers, Input, State, Suspect};
use crate::topology::{RouterId, SwitchId, Topology};
use proto::HostId;
use serde::{Deserialize, Serialize};
use statig::blocking::{IntoStateMachineExt, StateMachine};
use std::collections::{BTreeMap, BTreeSet};

mod records;
pub use records::{EngineChanges, EngineCounters, GroupEntry, GroupKey, HostRecord};

/// How far the helper search scans before giving up, so one event stays cheap on a large
/// topology.
const HELPER_SCAN_LIMIT: usize = 512;

/// Who asked for a probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Owner {
    Host(HostId),
    Switch(SwitchId),
    Router(RouterId),
}

/// A switch or router investigation (`SwitchSuspected`/`RouterSuspected`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct GroupCase {
    opened: u64,
    /// Suspects this case took over (switch cases only).
    hosts: BTreeSet<HostId>,
    /// Switch cases this router case took over (router cases only).
    switches: BTreeSet<SwitchId>,
    probe_id: ProbeId,
    probe_from: HostId,
    deadline: u64,
    /// Outcome of a switch case that waits for its router case: `Some(true)` releases
    /// its suspects, `Some(false)` is a `SwitchDown`.
    parked: Option<bool>,
    evidence: Vec<Evidence>,
    /// A lone check (row S3a: one uncorroborated suspect whose window ran out; row G4:
    /// the router check after its switch answered unreachable). A lone case widens to a
    /// group verdict only on an explicit "unreachable": a timeout releases (row G2b).
    /// Cleared when a second suspect (switch) or switch (router) joins.
    #[serde(default)]
    lone: bool,
    /// The router of this switch answered while the case was open: no router check (G4).
    #[serde(default)]
    router_up: bool,
}

impl GroupCase {
    /// Another switch case joins this router case: it is no longer a lone check.
    fn join_switch(&mut self, switch: &SwitchId) {
        if self.switches.insert(switch.clone()) {
            self.lone = false;
        }
    }
}

/// Where one host's machine stands (the states of TRANSITIONS.md), for operators and
/// tests. Serialized and displayed in lowercase (`watching`, `suspected`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    /// Heard from, or never reported on.
    Watching,
    /// One watcher reported it dead; waiting for corroboration.
    Suspected,
    /// A probe is out.
    Investigating,
    /// Taken over by a switch or router case.
    Grouped,
    /// Declared dead.
    Down,
    /// Shut down gracefully.
    Left,
    /// One watcher met port-unreachable; waiting for a second (row R1).
    Refused,
    /// Up, but its agent is not running (an `AgentDown` alarm).
    AgentDown,
    /// Its agent keeps crashing (an `AgentFlapping` alarm).
    AgentFlapping,
}

impl HostState {
    /// The state of a suspect machine.
    pub(crate) fn of(state: &State) -> HostState {
        match state {
            State::Watching {} => HostState::Watching,
            State::Suspected {} => HostState::Suspected,
            State::Investigating {} => HostState::Investigating,
            State::Grouped {} => HostState::Grouped,
            State::Down {} => HostState::Down,
            State::Left {} => HostState::Left,
            State::Refused {} => HostState::Refused,
            State::AgentDown {} => HostState::AgentDown,
            State::AgentFlapping {} => HostState::AgentFlapping,
        }
    }

    /// The lowercase name (`watching`, `suspected`, `investigating`, `grouped`, `down`,
    /// `left`, `refused`, `agent_down`, `agent_flapping`).
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Refused => "refused",
            HostState::AgentDown => "agent_down",
            HostState::AgentFlapping => "agent_flapping",
            HostState::Watching => "watching",
            HostState::Suspected => "suspected",
            HostState::Investigating => "investigating",
            HostState::Grouped => "grouped",
            HostState::Down => "down",
            HostState::Left => "left",
        }
    }
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The failure-disambiguation engine. Pure and deterministic: the same events give the
/// same actions, also after a serde round trip of the engine in the middle.
#[derive(Serialize, Deserialize)]
pub struct Engine {
    config: Config,
    topology: Topology,
    hosts: BTreeMap<HostId, StateMachine<Suspect>>,
    /// Hosts in `suspected`, `investigating`, `refused` or `agent_flapping`: the ones a
    /// `Tick` must visit.
    timed: BTreeSet<HostId>,
    /// The suspicions of `timed` (`suspected`, `investigating`) grouped by switch, so switch
    /// correlation does not scan every host behind it.
    timed_by_switch: BTreeMap<SwitchId, BTreeSet<HostId>>,
    switch_cases: BTreeMap<SwitchId, GroupCase>,
    router_cases: BTreeMap<RouterId, GroupCase>,
    probe_owner: BTreeMap<ProbeId, Owner>,
    /// Open group alarms and the hosts still down under them.
    group_alarms: BTreeMap<VerdictId, BTreeSet<HostId>>,
    next_probe: u64,
    next_verdict: u64,
    /// What is known of each host's agent beside its machine (refusals, recent outages);
    /// only hosts with something to keep.
    #[serde(default)]
    agents: BTreeMap<HostId, AgentRecord>,
    /// Hosts whose machine or facts changed since [`Engine::take_changes`] (not part of
    /// the state: a bookkeeping of what to write).
    #[serde(skip)]
    dirty_hosts: BTreeSet<HostId>,
    /// The group state as last reported by [`Engine::take_changes`].
    #[serde(skip)]
    reported: records::Reported,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new(Config::default())
    }
}

impl Engine {
    /// An engine with no topology and no suspicion.
    pub fn new(config: Config) -> Self {
        Engine {
            config,
            topology: Topology::default(),
            hosts: BTreeMap::new(),
            timed: BTreeSet::new(),
            timed_by_switch: BTreeMap::new(),
            switch_cases: BTreeMap::new(),
            router_cases: BTreeMap::new(),
            probe_owner: BTreeMap::new(),
            group_alarms: BTreeMap::new(),
            next_probe: 1,
            next_verdict: 1,
            agents: BTreeMap::new(),
            dirty_hosts: BTreeSet::new(),
            reported: records::Reported::default(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The topology known so far.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The state of `host`'s machine (a host never reported on is `Watching`).
    pub fn host_state(&self, host: HostId) -> HostState {
        self.hosts
            .get(&host)
            .map_or(HostState::Watching, |m| HostState::of(m.state()))
    }

    /// Whether any suspicion is still without verdict.
    pub fn has_open_suspicions(&self) -> bool {
        // A flapping agent's alarm waiting for its quiet period is no suspicion.
        self.timed
            .iter()
            .any(|h| self.host_state(*h) != HostState::AgentFlapping)
            || !self.switch_cases.is_empty()
            || !self.router_cases.is_empty()
    }

    /// Feeds one event; returns the actions it causes, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::HostFact { host, facts } => {
                if self.topology.hosts.get(&host) != Some(&facts) {
                    self.dirty_hosts.insert(host);
                    self.topology.set_host(host, facts);
                }
            }
            Event::SwitchFact { switch, router } => {
                self.topology.switch_router.insert(switch, router);
            }
            Event::HbDead { at, reporter, peer } => {
                if reporter != peer {
                    // A check is not a suspicion yet: a report during it starts one (K5),
                    // which correlates like any first report.
                    let was_open = self.is_open(peer) && !self.in_check(peer);
                    // A report after the window ends it like a Tick (row S3a before S3).
                    if let Some((switch, from)) = self.lone_check(peer, at, Some(reporter)) {
                        self.open_lone_case(peer, switch, from, at, &mut out);
                    }
                    self.dispatch(peer, Input::Dead { at, reporter }, &mut out);
                    if !was_open && self.host_state(peer) == HostState::Suspected {
                        self.correlate(peer, at, &mut out);
                    }
                }
            }
            // Late heartbeats are a warning, not a suspicion (transition table row W2).
            Event::HbLate { .. } => {}
            Event::HbBackAlive { at, reporter, peer } => {
                self.dispatch(peer, Input::Alive { at, reporter }, &mut out);
                self.ungroup(peer);
            }
            Event::HbShutdown { at, host } => {
                self.dispatch(host, Input::Shutdown { at }, &mut out);
                self.ungroup(host);
            }
            Event::HbRefused { at, reporter, peer } => {
                if reporter != peer {
                    self.dispatch(peer, Input::Refused { at, reporter }, &mut out);
                    // An agent verdict ends whatever group case held the suspicion.
                    if matches!(
                        self.host_state(peer),
                        HostState::AgentDown | HostState::AgentFlapping
                    ) {
                        self.ungroup(peer);
                    }
                }
            }
            Event::ProbeResult {
                at,
                probe_id,
                reachable,
            } => match self.probe_owner.get(&probe_id).cloned() {
                Some(Owner::Host(h)) => {
                    let input = Input::Probe {
                        at,
                        probe_id,
                        reachable,
                    };
                    self.dispatch(h, input, &mut out);
                }
                Some(Owner::Switch(s))
                    if self.switch_cases.get(&s).map(|c| c.probe_id) == Some(probe_id) =>
                {
                    self.record_group_probe(Owner::Switch(s.clone()), Some(reachable));
                    self.resolve_switch(&s, Some(reachable), at, &mut out);
                }
                Some(Owner::Router(r))
                    if self.router_cases.get(&r).map(|c| c.probe_id) == Some(probe_id) =>
                {
                    self.record_group_probe(Owner::Router(r.clone()), Some(reachable));
                    self.resolve_router(&r, Some(reachable), at, &mut out);
                }
                _ => {}
            },
            Event::Check { at, host, from } => {
                if host != from {
                    self.dispatch(host, Input::Check { at, from }, &mut out);
                }
            }
            Event::Tick { now } => self.tick(now, &mut out),
        }
        out
    }

    fn tick(&mut self, now: u64, out: &mut Vec<Action>) {
        // Only hosts whose window or probe deadline has passed: a full dispatch for every
        // open suspicion on every tick would dominate the cost on large topologies.
        let due: Vec<HostId> = self
            .timed
            .iter()
            .copied()
            .filter(|h| self.due(*h, now))
            .collect();
        for h in due {
            match self.lone_check(h, now, None) {
                Some((switch, from)) => self.open_lone_case(h, switch, from, now, out),
                None => self.dispatch(h, Input::Tick { now }, out),
            }
        }
        let routers: Vec<RouterId> = self
            .router_cases
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(r, _)| r.clone())
            .collect();
        for r in routers {
            self.record_group_probe(Owner::Router(r.clone()), None);
            self.resolve_router(&r, None, now, out);
        }
        let switches: Vec<SwitchId> = self
            .switch_cases
            .iter()
            .filter(|(_, c)| c.deadline <= now && c.parked.is_none())
            .map(|(s, _)| s.clone())
            .collect();
        for s in switches {
            self.record_group_probe(Owner::Switch(s.clone()), None);
            self.resolve_switch(&s, None, now, out);
        }
    }

    /// Whether a `Tick` at `now` can change `host` (a timed host).
    fn due(&self, host: HostId, now: u64) -> bool {
        let Some(m) = self.hosts.get(&host) else {
            return false;
        };
        let s = m.inner();
        match m.state() {
            State::Suspected {} => {
                let hb = self
                    .topology
                    .hb_interval(host, self.config.default_hb_interval_us);
                now >= s.since + self.config.corroboration_intervals * hb
            }
            State::Investigating {} => now >= s.probe_deadline,
            State::Refused {} => {
                let hb = self
                    .topology
                    .hb_interval(host, self.config.default_hb_interval_us);
                let first = self.agents.get(&host).and_then(AgentRecord::first_refusal);
                !matches!(first, Some(first) if now < first + self.config.corroboration_intervals * hb)
            }
            State::AgentFlapping {} => self
                .agents
                .get(&host)
                .and_then(AgentRecord::quiet_at)
                .is_some_and(|q| now >= q),
            _ => false,
        }
    }

    fn is_open(&self, host: HostId) -> bool {
        matches!(
            self.hosts.get(&host).map(|m| m.state()),
            Some(State::Suspected {} | State::Investigating {} | State::Grouped {})
        )
    }

    fn in_check(&self, host: HostId) -> bool {
        self.hosts.get(&host).is_some_and(|m| m.inner().check)
    }

    fn is_healthy(&self, host: HostId) -> bool {
        matches!(
            self.hosts.get(&host).map(|m| m.state()),
            None | Some(State::Watching {})
        )
    }

    /// Probers for an investigation of `host` reported by `reporter`: one healthy host on
    /// its switch, one healthy host on a third switch (or any other host when topology
    /// is unknown).
    fn helpers(&self, host: HostId, reporter: HostId) -> Helpers {
        let usable = |h: &HostId| *h != host && *h != reporter && self.is_healthy(*h);
        let own = self.topology.switch_of(host);
        let rep = self.topology.switch_of(reporter);
        let local = own.and_then(|s| {
            self.topology
                .switch_hosts
                .get(s)
                .and_then(|set| set.iter().take(HELPER_SCAN_LIMIT).copied().find(usable))
        });
        let remote = self
            .topology
            .hosts
            .iter()
            .filter(|(_, f)| f.switch.is_some() || own.is_none())
            .filter(|(_, f)| {
                own.is_none() || (f.switch.as_ref() != own && f.switch.as_ref() != rep)
            })
            .map(|(h, _)| *h)
            .take(HELPER_SCAN_LIMIT)
            .find(usable);
        Helpers { local, remote }
    }

    /// A healthy host outside `avoid_switches` to probe a switch or router from.
    fn outside_helper(&self, avoid: impl Fn(Option<&SwitchId>) -> bool) -> Option<HostId> {
        self.topology
            .hosts
            .iter()
            .filter(|(_, f)| !avoid(f.switch.as_ref()))
            .map(|(h, _)| *h)
            .take(HELPER_SCAN_LIMIT)
            .find(|h| self.is_healthy(*h))
    }

    fn dispatch(&mut self, host: HostId, input: Input, out: &mut Vec<Action>) {
        let hb = self
            .topology
            .hb_interval(host, self.config.default_hb_interval_us);
        let helpers = match (self.hosts.get(&host), &input) {
            (Some(m), Input::Tick { now: t } | Input::Dead { at: t, .. })
                if matches!(m.state(), State::Suspected {})
                    && *t >= m.inner().since + self.config.corroboration_intervals * hb =>
            {
                self.helpers(host, m.inner().reporter)
            }
            (Some(m), Input::Release { .. })
                if matches!(m.state(), State::Grouped {}) && m.inner().window_spent =>
            {
                self.helpers(host, m.inner().reporter)
            }
            _ => Helpers::default(),
        };
        let mut ctx = Ctx {
            hb_interval_us: hb,
            corroboration_intervals: self.config.corroboration_intervals,
            probe_timeout_us: self.config.probe_timeout_us,
            helpers,
            next_probe: self.next_probe,
            next_verdict: self.next_verdict,
            out: std::mem::take(out),
            released_alarms: Vec::new(),
            agent: self.agents.remove(&host).unwrap_or_default(),
        };
        let before = ctx.out.len();
        let was = self
            .hosts
            .get(&host)
            .map(|m| (m.state().clone(), m.inner().clone()));
        let machine = self
            .hosts
            .entry(host)
            .or_insert_with(|| Suspect::new(host).state_machine());
        let old_probes: Vec<ProbeId> = machine.inner().probes.iter().map(|p| p.id).collect();
        machine.handle_with_context(&input, &mut ctx);
        let state = machine.state().clone();
        let agent = std::mem::take(&mut ctx.agent);
        if !agent.is_empty() {
            self.agents.insert(host, agent);
        }
        if was.as_ref() != Some(&(state.clone(), machine.inner().clone())) {
            self.dirty_hosts.insert(host);
        }
        self.next_probe = ctx.next_probe;
        self.next_verdict = ctx.next_verdict;
        *out = ctx.out;
        for action in &out[before..] {
            if let Action::RequestProbe { probe_id, .. } = action {
                self.probe_owner.insert(*probe_id, Owner::Host(host));
            }
        }
        if !matches!(state, State::Investigating {}) {
            for id in old_probes {
                self.probe_owner.remove(&id);
            }
        }
        // Suspicions are timed and counted per switch (correlation); an agent waiting for a
        // second refusal or a flapping agent's quiet period is timed only.
        let is_suspicion = matches!(state, State::Suspected {} | State::Investigating {});
        let is_timed = is_suspicion || matches!(state, State::Refused {} | State::AgentFlapping {});
        if is_timed {
            self.timed.insert(host);
        } else {
            self.timed.remove(&host);
        }
        if let Some(sw) = self.topology.switch_of(host) {
            match self.timed_by_switch.get_mut(sw) {
                Some(set) if is_suspicion => {
                    set.insert(host);
                }
                Some(set) => {
                    set.remove(&host);
                }
                None if is_suspicion => {
                    let sw = sw.clone();
                    self.timed_by_switch.entry(sw).or_default().insert(host);
                }
                None => {}
            }
        }
        for (alarm, at) in ctx.released_alarms {
            self.release_alarm(alarm, host, at, out);
        }
    }

    fn release_alarm(&mut self, alarm: VerdictId, host: HostId, at: u64, out: &mut Vec<Action>) {
        match self.group_alarms.get_mut(&alarm) {
            Some(hosts) => {
                hosts.remove(&host);
                if hosts.is_empty() {
                    self.group_alarms.remove(&alarm);
                    out.push(Action::ClearAlarm { verdict: alarm, at });
                }
            }
            None => out.push(Action::ClearAlarm { verdict: alarm, at }),
        }
    }

    fn ungroup(&mut self, host: HostId) {
        if self.host_state(host) == HostState::Grouped {
            return;
        }
        for case in self.switch_cases.values_mut() {
            case.hosts.remove(&host);
        }
        // Row G5: a lone check has nothing left to decide once its one suspect is gone.
        let emptied: Vec<SwitchId> = self
            .switch_cases
            .iter()
            .filter(|(_, c)| c.lone && c.hosts.is_empty())
            .map(|(s, _)| s.clone())
            .collect();
        for s in emptied {
            if let Some(c) = self.switch_cases.remove(&s) {
                self.probe_owner.remove(&c.probe_id);
            }
            let Some(r) = self.topology.router_of(&s).cloned() else {
                continue;
            };
            let lone_router = self
                .router_cases
                .get(&r)
                .is_some_and(|c| c.lone && c.switches.iter().all(|x| *x == s));
            if lone_router {
                if let Some(c) = self.router_cases.remove(&r) {
                    self.probe_owner.remove(&c.probe_id);
                }
            }
        }
    }

    fn new_probe(
        &mut self,
        owner: Owner,
        from: HostId,
        target: ProbeTarget,
        deadline: u64,
        out: &mut Vec<Action>,
    ) -> ProbeId {
        let probe_id = ProbeId(self.next_probe);
        self.next_probe += 1;
        self.probe_owner.insert(probe_id, owner);
        out.push(Action::RequestProbe {
            probe_id,
            from,
            target,
            deadline,
        });
        probe_id
    }

    /// Opens a switch or router case: asks `from` to probe `target` (deadline one probe
    /// timeout from `at`). The caller fills in what the case is about and stores it.
    fn start_case(
        &mut self,
        owner: Owner,
        target: ProbeTarget,
        from: HostId,
        at: u64,
        out: &mut Vec<Action>,
    ) -> GroupCase {
        let deadline = at + self.config.probe_timeout_us;
        let probe_id = self.new_probe(owner, from, target, deadline, out);
        GroupCase {
            opened: at,
            hosts: BTreeSet::new(),
            switches: BTreeSet::new(),
            probe_id,
            probe_from: from,
            deadline,
            parked: None,
            evidence: Vec::new(),
            lone: false,
            router_up: false,
        }
    }

    /// The first `HbDead` report of each suspicion, as group evidence.
    fn suspicion_reports(&self, hosts: &[HostId]) -> Vec<Evidence> {
        hosts
            .iter()
            .filter_map(|h| {
                let s = self.hosts.get(h)?.inner();
                Some(Evidence::Report {
                    at: s.since,
                    reporter: s.reporter,
                    about: *h,
                    kind: ReportKind::Dead,
                })
            })
            .collect()
    }

    fn record_group_probe(&mut self, owner: Owner, reachable: Option<bool>) {
        let (case, target) = match &owner {
            Owner::Switch(s) => (self.switch_cases.get_mut(s), ProbeTarget::Switch(s.clone())),
            Owner::Router(r) => (self.router_cases.get_mut(r), ProbeTarget::Router(r.clone())),
            Owner::Host(_) => return,
        };
        if let Some(case) = case {
            self.probe_owner.remove(&case.probe_id);
            case.evidence.push(Evidence::Probe {
                probe_id: case.probe_id,
                from: case.probe_from,
                target,
                reachable,
            });
        }
    }

    /// Groups suspects behind one switch (and suspect switches behind one router).
    fn correlate(&mut self, host: HostId, at: u64, out: &mut Vec<Action>) {
        let Some(switch) = self.topology.switch_of(host).cloned() else {
            return;
        };
        if let Some(case) = self.switch_cases.get_mut(&switch) {
            case.hosts.insert(host);
            // A second suspect behind the switch: no longer a lone check (row S6).
            case.lone = false;
            self.dispatch(host, Input::Claim { lone: false }, out);
            return;
        }
        let window = self.config.correlation_window_us;
        let suspects: Vec<HostId> = self
            .timed_by_switch
            .get(&switch)
            .map(|set| {
                set.iter()
                    .copied()
                    .filter(|h| {
                        // A check (row K1) is no suspicion: nobody reported it.
                        self.timed.contains(h)
                            && !self.in_check(*h)
                            && self.topology.switch_of(*h) == Some(&switch)
                            && self
                                .hosts
                                .get(h)
                                .is_some_and(|m| m.inner().since + window >= at)
                    })
                    .collect()
            })
            .unwrap_or_default();
        if suspects.len() < self.config.group_min_suspects {
            return;
        }
        let Some(from) = self.outside_helper(|s| s == Some(&switch)) else {
            return;
        };
        let case = GroupCase {
            hosts: suspects.iter().copied().collect(),
            evidence: self.suspicion_reports(&suspects),
            ..self.start_case(
                Owner::Switch(switch.clone()),
                ProbeTarget::Switch(switch.clone()),
                from,
                at,
                out,
            )
        };
        self.switch_cases.insert(switch.clone(), case);
        for h in suspects {
            self.dispatch(h, Input::Claim { lone: false }, out);
        }
        self.correlate_router(&switch, at, out);
    }

    /// Row S3a: whether `host`'s window has run out at `t` without corroboration and its
    /// switch should be checked before the host's own probes; the switch and the prober.
    /// `reporter`: the event is an `HbDead` from that host (it may corroborate, row S1).
    fn lone_check(
        &self,
        host: HostId,
        t: u64,
        reporter: Option<HostId>,
    ) -> Option<(SwitchId, HostId)> {
        let m = self.hosts.get(&host)?;
        let s = m.inner();
        if !matches!(m.state(), State::Suspected {}) || s.switch_checked {
            return None;
        }
        let hb = self
            .topology
            .hb_interval(host, self.config.default_hb_interval_us);
        let window = self.config.corroboration_intervals * hb;
        if t < s.since + window {
            return None;
        }
        if reporter.is_some_and(|r| r != s.reporter && t.abs_diff(s.since) <= window) {
            return None;
        }
        let switch = self.topology.switch_of(host)?;
        // A declared switch: one a `SwitchFact` was given for.
        let router = self.topology.router_of(switch)?;
        if self.switch_cases.contains_key(switch) {
            return None;
        }
        // A prober off the switch's router answers "unreachable" (rather than timing out)
        // when the router is down too; G4 then tells the two apart.
        let topology = &self.topology;
        let from = self
            .outside_helper(|s| s.and_then(|s| topology.router_of(s)) == Some(router))
            .or_else(|| self.outside_helper(|s| s == Some(switch)))?;
        Some((switch.clone(), from))
    }

    /// Row S3a: a switch case for one suspect, then router correlation (G3).
    fn open_lone_case(
        &mut self,
        host: HostId,
        switch: SwitchId,
        from: HostId,
        at: u64,
        out: &mut Vec<Action>,
    ) {
        let case = GroupCase {
            hosts: BTreeSet::from([host]),
            evidence: self.suspicion_reports(&[host]),
            lone: true,
            ..self.start_case(
                Owner::Switch(switch.clone()),
                ProbeTarget::Switch(switch.clone()),
                from,
                at,
                out,
            )
        };
        self.switch_cases.insert(switch.clone(), case);
        self.dispatch(host, Input::Claim { lone: true }, out);
        self.correlate_router(&switch, at, out);
    }

    fn correlate_router(&mut self, switch: &SwitchId, at: u64, out: &mut Vec<Action>) {
        let Some(router) = self.topology.router_of(switch).cloned() else {
            return;
        };
        if let Some(case) = self.router_cases.get_mut(&router) {
            case.join_switch(switch);
            return;
        }
        let window = self.config.correlation_window_us;
        let switches: BTreeSet<SwitchId> = self
            .switch_cases
            .iter()
            .filter(|(s, c)| c.opened + window >= at && self.topology.router_of(s) == Some(&router))
            .map(|(s, _)| s.clone())
            .collect();
        if switches.len() < self.config.group_min_suspects {
            return;
        }
        let topology = &self.topology;
        let Some(from) =
            self.outside_helper(|s| s.and_then(|s| topology.router_of(s)) == Some(&router))
        else {
            return;
        };
        let evidence = switches
            .iter()
            .filter_map(|s| self.switch_cases.get(s))
            .flat_map(|c| c.evidence.iter().cloned())
            .collect();
        let case = GroupCase {
            switches,
            evidence,
            ..self.start_case(
                Owner::Router(router.clone()),
                ProbeTarget::Router(router.clone()),
                from,
                at,
                out,
            )
        };
        self.router_cases.insert(router, case);
    }

    /// Row G4: a lone switch check found the switch unreachable; probe its router before
    /// concluding. Returns whether the case now waits for a router case.
    fn check_router(&mut self, switch: &SwitchId, at: u64, out: &mut Vec<Action>) -> bool {
        let Some(router) = self.topology.router_of(switch).cloned() else {
            return false;
        };
        if let Some(case) = self.router_cases.get_mut(&router) {
            case.join_switch(switch);
        } else {
            let topology = &self.topology;
            let Some(from) =
                self.outside_helper(|s| s.and_then(|s| topology.router_of(s)) == Some(&router))
            else {
                return false;
            };
            let evidence = self
                .switch_cases
                .get(switch)
                .map(|c| c.evidence.clone())
                .unwrap_or_default();
            let case = GroupCase {
                switches: BTreeSet::from([switch.clone()]),
                evidence,
                lone: true,
                ..self.start_case(
                    Owner::Router(router.clone()),
                    ProbeTarget::Router(router.clone()),
                    from,
                    at,
                    out,
                )
            };
            self.router_cases.insert(router, case);
        }
        if let Some(case) = self.switch_cases.get_mut(switch) {
            case.parked = Some(false);
        }
        true
    }

    /// A switch case's probe answered (`Some`) or timed out (`None`).
    fn resolve_switch(
        &mut self,
        switch: &SwitchId,
        reachable: Option<bool>,
        at: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(case) = self.switch_cases.get(switch) else {
            return;
        };
        // Missing answers count as failed (G1), except for a lone check (G2b).
        let release = reachable.unwrap_or(case.lone);
        let wants_router = !release && case.lone && !case.router_up;
        let waits_for_router = self
            .topology
            .router_of(switch)
            .and_then(|r| self.router_cases.get(r))
            .is_some_and(|c| c.switches.contains(switch));
        if waits_for_router {
            if let Some(case) = self.switch_cases.get_mut(switch) {
                case.parked = Some(release);
            }
            return;
        }
        if wants_router && self.check_router(switch, at, out) {
            return;
        }
        self.conclude_switch(switch, release, at, out);
    }

    /// Ends a switch case: release its suspects (G2, G2b) or one `SwitchDown` (G1).
    fn conclude_switch(
        &mut self,
        switch: &SwitchId,
        release: bool,
        at: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(case) = self.switch_cases.remove(switch) else {
            return;
        };
        self.probe_owner.remove(&case.probe_id);
        if release {
            let probes: Vec<Evidence> = case
                .evidence
                .iter()
                .filter(|e| matches!(e, Evidence::Probe { .. }))
                .cloned()
                .collect();
            for h in case.hosts {
                let input = Input::Release {
                    now: at,
                    evidence: probes.clone(),
                };
                self.dispatch(h, input, out);
            }
            return;
        }
        let hosts = self.topology.hosts_behind(switch);
        let id = self.group_verdict(
            at,
            VerdictKind::SwitchDown(switch.clone(), hosts.clone()),
            case.evidence,
            &hosts,
            out,
        );
        for h in hosts {
            self.dispatch(h, Input::Covered { verdict: id }, out);
        }
    }

    /// A router case's probe answered (`Some`) or timed out (`None`).
    fn resolve_router(
        &mut self,
        router: &RouterId,
        reachable: Option<bool>,
        at: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(case) = self.router_cases.remove(router) else {
            return;
        };
        self.probe_owner.remove(&case.probe_id);
        // Missing answers count as failed (G3), except for the lone router check of G4,
        // which then settles for the `SwitchDown` its switch already earned.
        if reachable.unwrap_or(case.lone) {
            // The router check of G4 belongs in the evidence of the switch's verdict.
            let router_probe: Vec<Evidence> = case
                .evidence
                .iter()
                .filter(|e| {
                    case.lone
                        && matches!(
                            e,
                            Evidence::Probe {
                                target: ProbeTarget::Router(_),
                                ..
                            }
                        )
                })
                .cloned()
                .collect();
            for s in case.switches {
                let parked = match self.switch_cases.get_mut(&s) {
                    Some(c) => {
                        c.router_up = true;
                        c.evidence.extend(router_probe.iter().cloned());
                        c.parked
                    }
                    None => None,
                };
                if let Some(v) = parked {
                    self.conclude_switch(&s, v, at, out);
                }
            }
            return;
        }
        let switches = self.topology.switches_behind(router);
        let hosts: Vec<HostId> = switches
            .iter()
            .flat_map(|s| self.topology.hosts_behind(s))
            .collect();
        for s in &switches {
            if let Some(c) = self.switch_cases.remove(s) {
                self.probe_owner.remove(&c.probe_id);
            }
        }
        let kind = VerdictKind::RouterDown(router.clone(), switches, hosts.clone());
        let id = self.group_verdict(at, kind, case.evidence, &hosts, out);
        for h in hosts {
            self.dispatch(h, Input::Covered { verdict: id }, out);
        }
    }

    fn group_verdict(
        &mut self,
        at: u64,
        kind: VerdictKind,
        evidence: Vec<Evidence>,
        hosts: &[HostId],
        out: &mut Vec<Action>,
    ) -> VerdictId {
        let id = VerdictId(self.next_verdict);
        self.next_verdict += 1;
        out.push(Action::Verdict {
            id,
            at,
            kind,
            evidence,
        });
        // Hosts already down keep their own alarm; the group alarm covers the rest.
        let covered: BTreeSet<HostId> = hosts
            .iter()
            .copied()
            .filter(|h| !matches!(self.hosts.get(h).map(|m| m.state()), Some(State::Down {})))
            .collect();
        if covered.is_empty() {
            out.push(Action::ClearAlarm { verdict: id, at });
        } else {
            self.group_alarms.insert(id, covered);
        }
        id
    }
}
