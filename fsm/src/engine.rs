//! The entry point: routes events to per-host machines, correlates suspects behind one
//! switch or router into group investigations, and hands back actions.

use crate::action::{Action, Evidence, ProbeId, ProbeTarget, ReportKind, VerdictId, VerdictKind};
use crate::config::Config;
use crate::event::Event;
use crate::suspect::{Ctx, Helpers, Input, State, Suspect};
use crate::topology::{RouterId, SwitchId, Topology};
use proto::HostId;
use serde::{Deserialize, Serialize};
use statig::blocking::{IntoStateMachineExt, StateMachine};
use std::collections::{BTreeMap, BTreeSet};

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
    /// Outcome of a switch case that waits for its router case.
    parked: Option<bool>,
    evidence: Vec<Evidence>,
}

/// The failure-disambiguation engine. Pure and deterministic: the same events give the
/// same actions, also after a serde round trip of the engine in the middle.
#[derive(Serialize, Deserialize)]
pub struct Engine {
    config: Config,
    topology: Topology,
    hosts: BTreeMap<HostId, StateMachine<Suspect>>,
    /// Hosts in `suspected` or `investigating`: the ones a `Tick` must visit.
    timed: BTreeSet<HostId>,
    /// `timed` grouped by switch, so switch correlation does not scan every host behind it.
    timed_by_switch: BTreeMap<SwitchId, BTreeSet<HostId>>,
    switch_cases: BTreeMap<SwitchId, GroupCase>,
    router_cases: BTreeMap<RouterId, GroupCase>,
    probe_owner: BTreeMap<ProbeId, Owner>,
    /// Open group alarms and the hosts still down under them.
    group_alarms: BTreeMap<VerdictId, BTreeSet<HostId>>,
    next_probe: u64,
    next_verdict: u64,
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

    /// Name of the state of `host` (`watching`, `suspected`, `investigating`, `grouped`,
    /// `down`, `left`), for operators and tests.
    pub fn host_state(&self, host: HostId) -> &'static str {
        match self.hosts.get(&host).map(|m| m.state()) {
            None | Some(State::Watching {}) => "watching",
            Some(State::Suspected {}) => "suspected",
            Some(State::Investigating {}) => "investigating",
            Some(State::Grouped {}) => "grouped",
            Some(State::Down {}) => "down",
            Some(State::Left {}) => "left",
        }
    }

    /// Whether any suspicion is still without verdict.
    pub fn has_open_suspicions(&self) -> bool {
        !self.timed.is_empty() || !self.switch_cases.is_empty() || !self.router_cases.is_empty()
    }

    /// Feeds one event; returns the actions it causes, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::HostFact { host, facts } => self.topology.set_host(host, facts),
            Event::SwitchFact { switch, router } => {
                self.topology.switch_router.insert(switch, router);
            }
            Event::HbDead { at, reporter, peer } => {
                if reporter != peer {
                    let was_open = self.is_open(peer);
                    self.dispatch(peer, Input::Dead { at, reporter }, &mut out);
                    if !was_open && self.host_state(peer) == "suspected" {
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
                    self.resolve_switch(&s, reachable, at, &mut out);
                }
                Some(Owner::Router(r))
                    if self.router_cases.get(&r).map(|c| c.probe_id) == Some(probe_id) =>
                {
                    self.record_group_probe(Owner::Router(r.clone()), Some(reachable));
                    self.resolve_router(&r, reachable, at, &mut out);
                }
                _ => {}
            },
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
            self.dispatch(h, Input::Tick { now }, out);
        }
        let routers: Vec<RouterId> = self
            .router_cases
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(r, _)| r.clone())
            .collect();
        for r in routers {
            self.record_group_probe(Owner::Router(r.clone()), None);
            self.resolve_router(&r, false, now, out);
        }
        let switches: Vec<SwitchId> = self
            .switch_cases
            .iter()
            .filter(|(_, c)| c.deadline <= now && c.parked.is_none())
            .map(|(s, _)| s.clone())
            .collect();
        for s in switches {
            self.record_group_probe(Owner::Switch(s.clone()), None);
            self.resolve_switch(&s, false, now, out);
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
            _ => false,
        }
    }

    fn is_open(&self, host: HostId) -> bool {
        matches!(
            self.hosts.get(&host).map(|m| m.state()),
            Some(State::Suspected {} | State::Investigating {} | State::Grouped {})
        )
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
        };
        let before = ctx.out.len();
        let machine = self
            .hosts
            .entry(host)
            .or_insert_with(|| Suspect::new(host).state_machine());
        let old_probes: Vec<ProbeId> = machine.inner().probes.iter().map(|p| p.id).collect();
        machine.handle_with_context(&input, &mut ctx);
        let state = machine.state().clone();
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
        let is_timed = matches!(state, State::Suspected {} | State::Investigating {});
        let changed = if is_timed {
            self.timed.insert(host)
        } else {
            self.timed.remove(&host)
        };
        if changed {
            if let Some(sw) = self.topology.switch_of(host) {
                match self.timed_by_switch.get_mut(sw) {
                    Some(set) if is_timed => {
                        set.insert(host);
                    }
                    Some(set) => {
                        set.remove(&host);
                    }
                    None if is_timed => {
                        let sw = sw.clone();
                        self.timed_by_switch.entry(sw).or_default().insert(host);
                    }
                    None => {}
                }
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
        if self.host_state(host) != "grouped" {
            for case in self.switch_cases.values_mut() {
                case.hosts.remove(&host);
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
            self.dispatch(host, Input::Claim, out);
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
                        self.timed.contains(h)
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
        let deadline = at + self.config.probe_timeout_us;
        let probe_id = self.new_probe(
            Owner::Switch(switch.clone()),
            from,
            ProbeTarget::Switch(switch.clone()),
            deadline,
            out,
        );
        let mut evidence = Vec::new();
        for h in &suspects {
            if let Some(m) = self.hosts.get(h) {
                let s = m.inner();
                evidence.push(Evidence::Report {
                    at: s.since,
                    reporter: s.reporter,
                    about: *h,
                    kind: ReportKind::Dead,
                });
            }
        }
        self.switch_cases.insert(
            switch.clone(),
            GroupCase {
                opened: at,
                hosts: suspects.iter().copied().collect(),
                switches: BTreeSet::new(),
                probe_id,
                probe_from: from,
                deadline,
                parked: None,
                evidence,
            },
        );
        for h in suspects {
            self.dispatch(h, Input::Claim, out);
        }
        self.correlate_router(&switch, at, out);
    }

    fn correlate_router(&mut self, switch: &SwitchId, at: u64, out: &mut Vec<Action>) {
        let Some(router) = self.topology.router_of(switch).cloned() else {
            return;
        };
        if let Some(case) = self.router_cases.get_mut(&router) {
            case.switches.insert(switch.clone());
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
        let deadline = at + self.config.probe_timeout_us;
        let probe_id = self.new_probe(
            Owner::Router(router.clone()),
            from,
            ProbeTarget::Router(router.clone()),
            deadline,
            out,
        );
        let evidence = switches
            .iter()
            .filter_map(|s| self.switch_cases.get(s))
            .flat_map(|c| c.evidence.iter().cloned())
            .collect();
        self.router_cases.insert(
            router,
            GroupCase {
                opened: at,
                hosts: BTreeSet::new(),
                switches,
                probe_id,
                probe_from: from,
                deadline,
                parked: None,
                evidence,
            },
        );
    }

    fn resolve_switch(
        &mut self,
        switch: &SwitchId,
        reachable: bool,
        at: u64,
        out: &mut Vec<Action>,
    ) {
        let waits_for_router = self
            .topology
            .router_of(switch)
            .and_then(|r| self.router_cases.get(r))
            .is_some_and(|c| c.switches.contains(switch));
        if waits_for_router {
            if let Some(case) = self.switch_cases.get_mut(switch) {
                case.parked = Some(reachable);
            }
            return;
        }
        let Some(case) = self.switch_cases.remove(switch) else {
            return;
        };
        if reachable {
            for h in case.hosts {
                self.dispatch(h, Input::Release { now: at }, out);
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

    fn resolve_router(
        &mut self,
        router: &RouterId,
        reachable: bool,
        at: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(case) = self.router_cases.remove(router) else {
            return;
        };
        if reachable {
            for s in case.switches {
                let parked = self.switch_cases.get(&s).and_then(|c| c.parked);
                if let Some(v) = parked {
                    self.resolve_switch(&s, v, at, out);
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
