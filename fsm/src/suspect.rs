//! The per-host statig machine: one instance per host that has ever been reported on.
//!
//! States (see the transition table in the crate docs): `watching`, and under the
//! superstate `open` (a suspicion without verdict yet) `suspected`, `investigating`,
//! `grouped`; then `down` (an alarm is open) and `left`.

use crate::action::{Action, Evidence, ProbeId, ProbeTarget, ReportKind, VerdictId, VerdictKind};
use proto::HostId;
use serde::{Deserialize, Serialize};
use statig::prelude::*;

/// Which question a host-investigation probe answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The suspect probed from a host on its own switch.
    SuspectFromLocal,
    /// The suspect probed from a host on another switch.
    SuspectFromRemote,
    /// The reporter probed from a host on another switch.
    ReporterFromRemote,
    /// The suspect probed from the reporter itself.
    SuspectFromReporter,
}

/// One outstanding or answered probe of a host investigation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSlot {
    pub role: Role,
    pub id: ProbeId,
    pub from: HostId,
    pub target: HostId,
    pub result: Option<bool>,
}

/// How many agent outages within [`FLAP_WINDOW_US`] make a host's agent flapping (row A3).
pub const FLAP_COUNT: usize = 3;
/// The window of [`FLAP_COUNT`]: 10 minutes.
pub const FLAP_WINDOW_US: u64 = 600_000_000;
/// A flapping agent's alarm closes once its agent has run this long without a refusal
/// (row F3): 5 minutes.
pub const FLAP_QUIET_US: u64 = 300_000_000;
/// Most refusal reports kept for one outage (distinct reporters).
const MAX_REFUSALS: usize = 8;

/// What the fsm knows of a host's agent (its nanoprobe) beside its heartbeats: the
/// refusals of the current outage and the recent outages, for flap detection. The engine
/// keeps it beside the machine (a group row, so host rows of earlier builds still decode)
/// and lends it to the machine in [`Ctx::agent`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Refusal reports of the current outage: (reporter, µs), first first, one per reporter.
    pub(crate) refusals: Vec<(HostId, u64)>,
    /// When recent outages were confirmed (µs; at most [`FLAP_COUNT`], within
    /// [`FLAP_WINDOW_US`] of the latest).
    pub(crate) outages: Vec<u64>,
    /// Latest refusal (µs).
    pub(crate) last_refused: u64,
    /// Latest sign of life of the agent (µs).
    pub(crate) last_alive: u64,
}

impl AgentRecord {
    /// Whether there is nothing to keep.
    pub fn is_empty(&self) -> bool {
        *self == AgentRecord::default()
    }

    /// When the current outage's first refusal came, if one is open.
    pub(crate) fn first_refusal(&self) -> Option<u64> {
        self.refusals.first().map(|(_, at)| *at)
    }

    /// When a flapping agent's alarm may close: the quiet period after the last refusal,
    /// provided the agent was heard since.
    pub(crate) fn quiet_at(&self) -> Option<u64> {
        (self.last_alive > self.last_refused).then(|| self.last_refused + FLAP_QUIET_US)
    }
}

/// Inputs of one host machine, already routed by the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Dead {
        at: u64,
        reporter: HostId,
    },
    Alive {
        at: u64,
        reporter: HostId,
    },
    Shutdown {
        at: u64,
    },
    Probe {
        at: u64,
        probe_id: ProbeId,
        reachable: bool,
    },
    Tick {
        now: u64,
    },
    /// Check the host at once with a probe from `from` (rows K1-K6).
    Check {
        at: u64,
        from: HostId,
    },
    /// A switch/router investigation takes this suspicion over. `lone`: it is the switch
    /// check of row S3a, opened after the corroboration window ran out.
    Claim {
        lone: bool,
    },
    /// The group investigation found the switch/router up (or, for a lone check, could not
    /// tell): investigate on your own. `evidence` is the group's probe record.
    Release {
        now: u64,
        evidence: Vec<Evidence>,
    },
    /// A group verdict (`SwitchDown`/`RouterDown`) covers this host.
    Covered {
        verdict: VerdictId,
    },
    /// `reporter`'s heartbeat met an ICMP port-unreachable (rows R1-R3, A1-A5).
    Refused {
        at: u64,
        reporter: HostId,
    },
}

/// Who can probe for this host, computed by the engine from the topology.
#[derive(Clone, Copy, Debug, Default)]
pub struct Helpers {
    pub local: Option<HostId>,
    pub remote: Option<HostId>,
}

/// Per-dispatch context: engine counters go in, actions come out.
#[derive(Debug, Default)]
pub struct Ctx {
    pub hb_interval_us: u64,
    pub corroboration_intervals: u64,
    pub probe_timeout_us: u64,
    pub helpers: Helpers,
    pub next_probe: u64,
    pub next_verdict: u64,
    pub out: Vec<Action>,
    /// Alarms this host no longer holds (recovered or left); the engine clears them.
    pub released_alarms: Vec<(VerdictId, u64)>,
    /// The host's agent record, lent by the engine for this dispatch.
    pub agent: AgentRecord,
}

impl Ctx {
    fn verdict(&mut self, at: u64, kind: VerdictKind, evidence: Vec<Evidence>) -> VerdictId {
        let id = VerdictId(self.next_verdict);
        self.next_verdict += 1;
        self.out.push(Action::Verdict {
            id,
            at,
            kind,
            evidence,
        });
        id
    }

    fn probe(&mut self, from: HostId, target: HostId, deadline: u64) -> ProbeId {
        let id = ProbeId(self.next_probe);
        self.next_probe += 1;
        self.out.push(Action::RequestProbe {
            probe_id: id,
            from,
            target: ProbeTarget::Host(target),
            deadline,
        });
        id
    }
}

/// Shared storage of one host machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspect {
    pub(crate) host: HostId,
    /// Start of the current suspicion (µs).
    pub(crate) since: u64,
    /// The first reporter of the current suspicion.
    pub(crate) reporter: HostId,
    pub(crate) evidence: Vec<Evidence>,
    pub(crate) probes: Vec<ProbeSlot>,
    pub(crate) probe_deadline: u64,
    /// The alarm this host is under while `down`.
    pub(crate) alarm: Option<VerdictId>,
    /// Latest `HbBackAlive` time: older `HbDead` reports are stale (reordering).
    pub(crate) last_alive: u64,
    /// A switch case took this suspicion over (rows S3a, S6): its switch is not checked
    /// again (row S3). Cleared when a new suspicion starts.
    #[serde(default)]
    pub(crate) switch_checked: bool,
    /// That switch case was the lone check of row S3a, after the corroboration window: a
    /// release goes straight to host probes (row G2b), not to a fresh window.
    #[serde(default)]
    pub(crate) window_spent: bool,
    /// The open investigation is a check (row K1): no report started it, so only an
    /// explicit "unreachable" makes a verdict; an answer or no answer ends it silently.
    #[serde(default)]
    pub(crate) check: bool,
}

impl Suspect {
    pub(crate) fn new(host: HostId) -> Self {
        Suspect {
            host,
            since: 0,
            reporter: host,
            evidence: Vec::new(),
            probes: Vec::new(),
            probe_deadline: 0,
            alarm: None,
            last_alive: 0,
            switch_checked: false,
            window_spent: false,
            check: false,
        }
    }

    fn report(&mut self, at: u64, reporter: HostId, kind: ReportKind) {
        self.evidence.push(Evidence::Report {
            at,
            reporter,
            about: self.host,
            kind,
        });
    }

    fn take_evidence(&mut self) -> Vec<Evidence> {
        let mut ev = std::mem::take(&mut self.evidence);
        for p in self.probes.drain(..) {
            ev.push(Evidence::Probe {
                probe_id: p.id,
                from: p.from,
                target: ProbeTarget::Host(p.target),
                reachable: p.result,
            });
        }
        ev
    }

    /// Clears what a previous suspicion left: a new one (or a check) starts at `at`, with
    /// `reporter` as its first reporter (for a check: the prober).
    fn reset(&mut self, at: u64, reporter: HostId) {
        self.since = at;
        self.reporter = reporter;
        self.evidence.clear();
        self.probes.clear();
        self.switch_checked = false;
        self.window_spent = false;
        self.check = false;
    }

    fn start_suspicion(&mut self, at: u64, reporter: HostId) {
        self.reset(at, reporter);
        self.report(at, reporter, ReportKind::Dead);
    }

    fn window_end(&self, ctx: &Ctx) -> u64 {
        self.since + ctx.corroboration_intervals * ctx.hb_interval_us
    }

    /// Orders the probes of an investigation (docs/design.md §5).
    fn start_probes(&mut self, ctx: &mut Ctx, now: u64) {
        let deadline = now + ctx.probe_timeout_us;
        self.probe_deadline = deadline;
        let (b, a) = (self.host, self.reporter);
        let mut plan = Vec::with_capacity(4);
        if let Some(l) = ctx.helpers.local {
            plan.push((Role::SuspectFromLocal, l, b));
        }
        if let Some(r) = ctx.helpers.remote {
            plan.push((Role::SuspectFromRemote, r, b));
            plan.push((Role::ReporterFromRemote, r, a));
        }
        // Always possible, so every investigation has at least one probe of the suspect.
        plan.push((Role::SuspectFromReporter, a, b));
        for (role, from, target) in plan {
            let id = ctx.probe(from, target, deadline);
            self.probes.push(ProbeSlot {
                role,
                id,
                from,
                target,
                result: None,
            });
        }
    }

    fn result(&self, role: Role) -> Option<bool> {
        self.probes
            .iter()
            .find(|p| p.role == role)
            .and_then(|p| p.result)
    }

    /// The outcome table of an investigation; unanswered probes count as failed.
    fn conclude(&mut self, ctx: &mut Ctx, at: u64) -> State {
        let suspect_reached = [
            Role::SuspectFromLocal,
            Role::SuspectFromRemote,
            Role::SuspectFromReporter,
        ]
        .iter()
        .any(|r| self.result(*r) == Some(true));
        let kind = if !suspect_reached {
            VerdictKind::Dead(self.host)
        } else if self.result(Role::SuspectFromReporter) == Some(true) {
            VerdictKind::FalseAlarm(self.host)
        } else if self
            .probes
            .iter()
            .any(|p| p.role == Role::ReporterFromRemote && p.result != Some(true))
        {
            VerdictKind::ReporterIsolated(self.reporter)
        } else {
            VerdictKind::LinkFault(self.reporter, self.host)
        };
        let alarm = kind.is_alarm();
        let evidence = self.take_evidence();
        let id = ctx.verdict(at, kind, evidence);
        if alarm {
            self.alarm = Some(id);
            State::down()
        } else {
            State::watching()
        }
    }

    /// Row K1: a check probes the host from `from` alone.
    fn start_check(&mut self, ctx: &mut Ctx, at: u64, from: HostId) {
        self.reset(at, from);
        self.check = true;
        let deadline = at + ctx.probe_timeout_us;
        self.probe_deadline = deadline;
        let id = ctx.probe(from, self.host, deadline);
        self.probes.push(ProbeSlot {
            role: Role::SuspectFromReporter,
            id,
            from,
            target: self.host,
            result: None,
        });
    }

    /// Rows K2-K4: only probes that all answered "unreachable" make a `Dead` verdict; an
    /// answer, or a probe that never reported (refused by the probe limiter, prober
    /// gone), ends the check without a verdict, since nothing but the check suspected the
    /// host and its new watchers will report it if it is down.
    fn end_check(&mut self, ctx: &mut Ctx, at: u64) -> State {
        self.check = false;
        let dead = !self.probes.is_empty() && self.probes.iter().all(|p| p.result == Some(false));
        if dead {
            self.conclude(ctx, at)
        } else {
            self.probes.clear();
            self.evidence.clear();
            State::watching()
        }
    }

    /// Records a refusal by `reporter`; true once two watchers refused within the
    /// corroboration window (an older outage's refusals start over).
    fn refusal(&self, ctx: &mut Ctx, at: u64, reporter: HostId) -> bool {
        let window = ctx.corroboration_intervals * ctx.hb_interval_us;
        let a = &mut ctx.agent;
        a.last_refused = a.last_refused.max(at);
        if a.first_refusal()
            .is_some_and(|first| at.abs_diff(first) > window)
        {
            a.refusals.clear();
        }
        if reporter != self.host
            && a.refusals.len() < MAX_REFUSALS
            && !a.refusals.iter().any(|(r, _)| *r == reporter)
        {
            a.refusals.push((reporter, at));
        }
        a.refusals.len() >= 2
    }

    /// Rows R2, A1-A3: two watchers met port-unreachable: the host is up, its agent is
    /// not. `AgentDown`, or `AgentFlapping` for the [`FLAP_COUNT`]th outage within
    /// [`FLAP_WINDOW_US`]. Whatever the suspicion had gathered joins the evidence; its
    /// probes are dropped.
    fn agent_verdict(&mut self, ctx: &mut Ctx, at: u64) -> State {
        self.check = false;
        let mut evidence: Vec<Evidence> = ctx
            .agent
            .refusals
            .drain(..)
            .map(|(reporter, t)| Evidence::Report {
                at: t,
                reporter,
                about: self.host,
                kind: ReportKind::Refused,
            })
            .collect();
        evidence.extend(self.take_evidence());
        let a = &mut ctx.agent;
        a.outages
            .retain(|t| at.saturating_sub(*t) <= FLAP_WINDOW_US);
        a.outages.push(at);
        if a.outages.len() > FLAP_COUNT {
            a.outages.remove(0);
        }
        let flapping = a.outages.len() >= FLAP_COUNT;
        let kind = if flapping {
            VerdictKind::AgentFlapping(self.host)
        } else {
            VerdictKind::AgentDown(self.host)
        };
        let id = ctx.verdict(at, kind, evidence);
        self.alarm = Some(id);
        if flapping {
            State::agent_flapping()
        } else {
            State::agent_down()
        }
    }

    /// The agent (or the host) is heard again while an alarm is held: `Recovered`.
    fn recover(&mut self, ctx: &mut Ctx, at: u64, reporter: HostId) -> State {
        self.last_alive = self.last_alive.max(at);
        ctx.agent.last_alive = ctx.agent.last_alive.max(at);
        ctx.agent.refusals.clear();
        if let Some(alarm) = self.alarm.take() {
            ctx.released_alarms.push((alarm, at));
        }
        let ev = vec![Evidence::Report {
            at,
            reporter,
            about: self.host,
            kind: ReportKind::Alive,
        }];
        ctx.verdict(at, VerdictKind::Recovered(self.host), ev);
        State::watching()
    }

    /// A group verdict covers a host whose agent alarm is open: the group alarm replaces it.
    fn covered_instead(&mut self, ctx: &mut Ctx, verdict: VerdictId, at: u64) -> State {
        if let Some(alarm) = self.alarm.replace(verdict) {
            ctx.released_alarms.push((alarm, at));
        }
        State::down()
    }

    fn leave(&mut self, ctx: &mut Ctx, at: u64) -> State {
        self.check = false;
        if let Some(alarm) = self.alarm.take() {
            ctx.released_alarms.push((alarm, at));
        }
        self.probes.clear();
        self.evidence.clear();
        self.report(at, self.host, ReportKind::Shutdown);
        let ev = std::mem::take(&mut self.evidence);
        ctx.verdict(at, VerdictKind::Left(self.host), ev);
        State::left()
    }
}

#[state_machine(
    initial = "State::watching()",
    state(derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize))
)]
impl Suspect {
    /// No suspicion.
    #[state]
    fn watching(&mut self, context: &mut Ctx, event: &Input) -> Outcome<State> {
        match event {
            Input::Dead { at, reporter } if *at >= self.last_alive => {
                self.start_suspicion(*at, *reporter);
                Transition(State::suspected())
            }
            Input::Alive { at, .. } => {
                self.last_alive = self.last_alive.max(*at);
                Handled
            }
            Input::Shutdown { at } => Transition(self.leave(context, *at)),
            Input::Covered { verdict } => {
                self.alarm = Some(*verdict);
                Transition(State::down())
            }
            Input::Check { at, from } if *from != self.host && *at >= self.last_alive => {
                self.start_check(context, *at, *from);
                Transition(State::investigating())
            }
            // Row R1: one port-unreachable is no evidence yet (ICMP is not authenticated).
            Input::Refused { at, reporter } if *at >= self.last_alive => {
                if self.refusal(context, *at, *reporter) {
                    Transition(self.agent_verdict(context, *at))
                } else {
                    Transition(State::refused())
                }
            }
            _ => Handled,
        }
    }

    /// One watcher's heartbeat met port-unreachable: waiting for a second within the
    /// corroboration window (rows R2, R3, R4).
    #[state]
    fn refused(&mut self, context: &mut Ctx, event: &Input) -> Outcome<State> {
        match event {
            Input::Refused { at, reporter } => {
                if self.refusal(context, *at, *reporter) {
                    Transition(self.agent_verdict(context, *at))
                } else {
                    Handled
                }
            }
            // Row R4: the deadtime path goes on; a second refusal still makes it
            // `AgentDown` (row A1).
            Input::Dead { at, reporter } if *at >= self.last_alive => {
                self.start_suspicion(*at, *reporter);
                Transition(State::suspected())
            }
            Input::Alive { at, .. } => {
                self.last_alive = self.last_alive.max(*at);
                context.agent.last_alive = context.agent.last_alive.max(*at);
                context.agent.refusals.clear();
                Transition(State::watching())
            }
            // Row R3: no second watcher within the window: a lone (perhaps spoofed)
            // port-unreachable, forgotten without a verdict.
            Input::Tick { now }
                if !matches!(context.agent.first_refusal(),
                    Some(first) if *now < first + context.corroboration_intervals * context.hb_interval_us) =>
            {
                context.agent.refusals.clear();
                Transition(State::watching())
            }
            Input::Shutdown { at } => Transition(self.leave(context, *at)),
            Input::Covered { verdict } => {
                context.agent.refusals.clear();
                self.alarm = Some(*verdict);
                Transition(State::down())
            }
            _ => Handled,
        }
    }

    /// The host is up, its agent is not (an `AgentDown` alarm is open).
    #[state]
    fn agent_down(&mut self, context: &mut Ctx, event: &Input) -> Outcome<State> {
        match event {
            // Row A4: the agent is back (its restart's `Startup`, or a watcher hears it).
            Input::Alive { at, reporter } => Transition(self.recover(context, *at, *reporter)),
            Input::Shutdown { at } => Transition(self.leave(context, *at)),
            Input::Covered { verdict } => {
                let at = context.agent.last_refused;
                Transition(self.covered_instead(context, *verdict, at))
            }
            // Row A5: its watchers' deadtime reports and further refusals are expected.
            _ => Handled,
        }
    }

    /// The host's agent keeps crashing (an `AgentFlapping` alarm is open).
    #[state]
    fn agent_flapping(&mut self, context: &mut Ctx, event: &Input) -> Outcome<State> {
        match event {
            // Row F1: back again: no verdict; the alarm stays until it stays up.
            Input::Alive { at, .. } => {
                self.last_alive = self.last_alive.max(*at);
                context.agent.last_alive = context.agent.last_alive.max(*at);
                Handled
            }
            // Row F2: down again: no verdict.
            Input::Refused { at, reporter } => {
                if self.refusal(context, *at, *reporter) {
                    context.agent.refusals.clear();
                }
                Handled
            }
            // Row F3: up for FLAP_QUIET_US without a refusal: `Recovered`.
            Input::Tick { now } if context.agent.quiet_at().is_some_and(|q| *now >= q) => {
                let at = *now;
                context.agent.outages.clear();
                let reporter = self.host;
                Transition(self.recover(context, at, reporter))
            }
            Input::Shutdown { at } => Transition(self.leave(context, *at)),
            Input::Covered { verdict } => {
                let at = context.agent.last_refused;
                Transition(self.covered_instead(context, *verdict, at))
            }
            _ => Handled,
        }
    }

    /// A suspicion without verdict: what every open state does alike.
    #[superstate]
    fn open(&mut self, context: &mut Ctx, event: &Input) -> Outcome<State> {
        match event {
            Input::Alive { at, reporter } => {
                self.last_alive = self.last_alive.max(*at);
                self.report(*at, *reporter, ReportKind::Alive);
                let ev = self.take_evidence();
                context.verdict(*at, VerdictKind::FalseAlarm(self.host), ev);
                Transition(State::watching())
            }
            Input::Shutdown { at } => Transition(self.leave(context, *at)),
            Input::Covered { verdict } => {
                self.probes.clear();
                self.evidence.clear();
                self.check = false;
                self.alarm = Some(*verdict);
                Transition(State::down())
            }
            Input::Claim { lone } => {
                self.check = false;
                self.probes.clear();
                self.switch_checked = true;
                self.window_spent |= *lone;
                Transition(State::grouped())
            }
            // Row A1: a suspicion (a watcher's deadtime) meets two refusals: the host
            // answers, its agent does not.
            Input::Refused { at, reporter } => {
                if self.refusal(context, *at, *reporter) {
                    Transition(self.agent_verdict(context, *at))
                } else {
                    Handled
                }
            }
            Input::Dead { at, reporter } => {
                if !self.evidence.iter().any(|e| {
                    matches!(e, Evidence::Report { reporter: r, kind, .. } if r == reporter && *kind == ReportKind::Dead)
                }) {
                    self.report(*at, *reporter, ReportKind::Dead);
                }
                Handled
            }
            _ => Handled,
        }
    }

    /// One watcher reported; waiting for the other within the corroboration window.
    #[state(superstate = "open")]
    fn suspected(&mut self, context: &mut Ctx, event: &Input) -> Outcome<State> {
        match event {
            Input::Dead { at, reporter }
                if *reporter != self.reporter
                    && at.abs_diff(self.since)
                        <= context.corroboration_intervals * context.hb_interval_us =>
            {
                self.report(*at, *reporter, ReportKind::Dead);
                let ev = self.take_evidence();
                let id = context.verdict((*at).max(self.since), VerdictKind::Dead(self.host), ev);
                self.alarm = Some(id);
                Transition(State::down())
            }
            Input::Dead { at, .. } | Input::Tick { now: at } if *at >= self.window_end(context) => {
                if let Input::Dead { at, reporter } = event {
                    self.report(*at, *reporter, ReportKind::Dead);
                }
                self.start_probes(context, *at);
                Transition(State::investigating())
            }
            _ => Super,
        }
    }

    /// Probes are out; concluding on the last answer or at the deadline.
    #[state(superstate = "open")]
    fn investigating(&mut self, context: &mut Ctx, event: &Input) -> Outcome<State> {
        match event {
            Input::Probe {
                at,
                probe_id,
                reachable,
            } => {
                let Some(slot) = self.probes.iter_mut().find(|p| p.id == *probe_id) else {
                    return Handled;
                };
                if slot.result.is_some() {
                    return Handled;
                }
                slot.result = Some(*reachable);
                if !self.probes.iter().all(|p| p.result.is_some()) {
                    Handled
                } else if self.check {
                    Transition(self.end_check(context, *at))
                } else {
                    Transition(self.conclude(context, *at))
                }
            }
            Input::Tick { now } if *now >= self.probe_deadline && self.check => {
                Transition(self.end_check(context, *now))
            }
            Input::Tick { now } if *now >= self.probe_deadline => {
                Transition(self.conclude(context, *now))
            }
            // Row K5: a watcher's report during a check starts an ordinary suspicion (its
            // window, then the probes of S3); the check's probe is dropped.
            Input::Dead { at, reporter } if self.check && *at >= self.last_alive => {
                self.start_suspicion(*at, *reporter);
                Transition(State::suspected())
            }
            // Row K6: the host is heard during a check: it ends without a verdict, since
            // no alarm was ever raised.
            Input::Alive { at, .. } if self.check => {
                self.last_alive = self.last_alive.max(*at);
                self.check = false;
                self.probes.clear();
                self.evidence.clear();
                Transition(State::watching())
            }
            _ => Super,
        }
    }

    /// A switch or router investigation owns this suspicion.
    #[state(superstate = "open")]
    fn grouped(&mut self, context: &mut Ctx, event: &Input) -> Outcome<State> {
        match event {
            // Row G2b: the window already ran out before the lone switch check, so the
            // host's own probes start at once.
            Input::Release { now, evidence } if self.window_spent => {
                self.evidence.extend(evidence.iter().cloned());
                self.start_probes(context, *now);
                Transition(State::investigating())
            }
            // Row G2: a fresh corroboration window, then the host's own probes (row S3:
            // the switch was just checked, so not again).
            Input::Release { now, .. } => {
                self.since = *now;
                Transition(State::suspected())
            }
            Input::Claim { .. } => Handled,
            _ => Super,
        }
    }

    /// A verdict holds an alarm for this host.
    #[state]
    fn down(&mut self, context: &mut Ctx, event: &Input) -> Outcome<State> {
        match event {
            Input::Alive { at, reporter } => {
                self.last_alive = self.last_alive.max(*at);
                if let Some(alarm) = self.alarm.take() {
                    context.released_alarms.push((alarm, *at));
                }
                let ev = vec![Evidence::Report {
                    at: *at,
                    reporter: *reporter,
                    about: self.host,
                    kind: ReportKind::Alive,
                }];
                context.verdict(*at, VerdictKind::Recovered(self.host), ev);
                Transition(State::watching())
            }
            Input::Shutdown { at } => Transition(self.leave(context, *at)),
            _ => Handled,
        }
    }

    /// Shut down gracefully; reports of its silence are expected.
    #[state]
    fn left(&mut self, event: &Input) -> Outcome<State> {
        match event {
            // Its switch or router went down while it was away: coming back is a recovery.
            Input::Covered { verdict } => {
                self.alarm = Some(*verdict);
                Transition(State::down())
            }
            Input::Alive { at, .. } => {
                self.last_alive = self.last_alive.max(*at);
                Transition(State::watching())
            }
            _ => Handled,
        }
    }
}
