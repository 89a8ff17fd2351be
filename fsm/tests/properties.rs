//! Property tests over random event sequences on random topologies (issue 6).

use fsm::{Action, Engine, Event, Evidence, HostFacts, HostState, RouterId, SwitchId, VerdictKind};
use proptest::prelude::*;
use proto::HostId;
use std::collections::BTreeSet;

const MS: u64 = 1000;

/// A random topology: hosts `1..=n`, each on switch `sw{k}` or unknown (`None`).
#[derive(Clone, Debug)]
struct Topo {
    hosts: Vec<Option<u8>>,
    routers: Vec<u8>,
}

#[derive(Clone, Debug)]
enum Op {
    Dead(usize, usize),
    Late(usize, usize),
    Alive(usize, usize),
    Shutdown(usize),
    Tick,
    /// The worker's block sweep checks host b from host a.
    Check(usize, usize),
    /// Answer the k-th outstanding probe.
    Answer(usize, bool),
    /// A heartbeat of a to b met port-unreachable.
    Refused(usize, usize),
}

#[derive(Clone, Debug)]
struct Step {
    advance_ms: u64,
    /// Reported as this much older than the clock (reordering in the queue).
    skew_ms: u64,
    op: Op,
}

fn topo() -> impl Strategy<Value = Topo> {
    (1usize..4, 3usize..16).prop_flat_map(|(switches, n)| {
        (
            prop::collection::vec(prop::option::weighted(0.85, 0..switches as u8), n),
            prop::collection::vec(0u8..2, switches),
        )
            .prop_map(|(hosts, routers)| Topo { hosts, routers })
    })
}

fn step(n: usize) -> impl Strategy<Value = Step> {
    let op = prop_oneof![
        4 => (0..n, 0..n).prop_map(|(a, b)| Op::Dead(a, b)),
        1 => (0..n, 0..n).prop_map(|(a, b)| Op::Late(a, b)),
        2 => (0..n, 0..n).prop_map(|(a, b)| Op::Alive(a, b)),
        1 => (0..n).prop_map(Op::Shutdown),
        2 => Just(Op::Tick),
        1 => (0..n, 0..n).prop_map(|(a, b)| Op::Check(a, b)),
        3 => (0usize..8, any::<bool>()).prop_map(|(k, r)| Op::Answer(k, r)),
        2 => (0..n, 0..n).prop_map(|(a, b)| Op::Refused(a, b)),
    ];
    (0u64..1500, 0u64..300, op).prop_map(|(advance_ms, skew_ms, op)| Step {
        advance_ms,
        skew_ms,
        op,
    })
}

fn case() -> impl Strategy<Value = (Topo, Vec<Step>)> {
    topo().prop_flat_map(|t| {
        let n = t.hosts.len();
        (Just(t), prop::collection::vec(step(n), 0..120))
    })
}

fn build(t: &Topo) -> Engine {
    let mut e = Engine::default();
    for (i, sw) in t.hosts.iter().enumerate() {
        e.handle(Event::HostFact {
            host: HostId(i as u64 + 1),
            facts: HostFacts {
                switch: sw.map(|k| SwitchId(format!("sw{k}"))),
                hb_interval_us: 0,
            },
        });
    }
    for (k, r) in t.routers.iter().enumerate() {
        e.handle(Event::SwitchFact {
            switch: SwitchId(format!("sw{k}")),
            router: RouterId(format!("r{r}")),
        });
    }
    e
}

/// Turns steps into concrete events, answering probes the engine actually requested.
struct Driver {
    clock: u64,
    outstanding: Vec<fsm::ProbeId>,
}

impl Driver {
    fn new() -> Self {
        Driver {
            clock: 0,
            outstanding: Vec::new(),
        }
    }

    fn event(&mut self, s: &Step) -> Option<Event> {
        self.clock += s.advance_ms * MS;
        let at = self.clock.saturating_sub(s.skew_ms * MS);
        let id = |i: usize| HostId(i as u64 + 1);
        Some(match s.op {
            Op::Dead(a, b) => Event::HbDead {
                at,
                reporter: id(a),
                peer: id(b),
            },
            Op::Late(a, b) => Event::HbLate {
                at,
                reporter: id(a),
                peer: id(b),
            },
            Op::Alive(a, b) => Event::HbBackAlive {
                at,
                reporter: id(a),
                peer: id(b),
            },
            Op::Shutdown(a) => Event::HbShutdown { at, host: id(a) },
            Op::Refused(a, b) => Event::HbRefused {
                at,
                reporter: id(a),
                peer: id(b),
            },
            Op::Tick => Event::Tick { now: self.clock },
            Op::Check(a, b) => Event::Check {
                at,
                host: id(b),
                from: id(a),
            },
            Op::Answer(k, reachable) => {
                if self.outstanding.is_empty() {
                    return None;
                }
                let probe_id = self.outstanding.remove(k % self.outstanding.len());
                Event::ProbeResult {
                    at: self.clock,
                    probe_id,
                    reachable,
                }
            }
        })
    }

    fn observe(&mut self, actions: &[Action]) {
        for a in actions {
            if let Action::RequestProbe { probe_id, .. } = a {
                self.outstanding.push(*probe_id);
            }
        }
    }
}

/// Runs the steps; `dup` feeds every event twice; `snapshot_at` round-trips the engine
/// through postcard before that step.
fn run(
    t: &Topo,
    steps: &[Step],
    dup: bool,
    snapshot_at: Option<usize>,
) -> (Vec<Action>, Engine, u64) {
    let mut e = build(t);
    let mut d = Driver::new();
    let mut all = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        if snapshot_at == Some(i) {
            let bytes = postcard::to_allocvec(&e).unwrap();
            e = postcard::from_bytes(&bytes).unwrap();
        }
        let Some(ev) = d.event(s) else { continue };
        let out = e.handle(ev.clone());
        d.observe(&out);
        all.extend(out);
        if dup {
            let again = e.handle(ev);
            assert!(again.is_empty(), "duplicate event produced {again:?}");
        }
    }
    (all, e, d.clock)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn no_dead_from_one_uncorroborated_report((t, steps) in case()) {
        let (actions, _, _) = run(&t, &steps, false, None);
        for a in &actions {
            if let Action::Verdict { kind: VerdictKind::Dead(_), evidence, .. } = a {
                let reporters: BTreeSet<HostId> = evidence.iter().filter_map(|e| match e {
                    Evidence::Report { reporter, kind: fsm::ReportKind::Dead, .. } => Some(*reporter),
                    _ => None,
                }).collect();
                let failed_probe = evidence.iter().any(|e| matches!(e, Evidence::Probe { reachable, .. } if *reachable != Some(true)));
                prop_assert!(reporters.len() >= 2 || failed_probe, "Dead without corroboration: {a:?}");
            }
        }
    }

    #[test]
    fn no_agent_alarm_from_one_watchers_refusals((t, steps) in case()) {
        let (actions, _, _) = run(&t, &steps, false, None);
        for a in &actions {
            if let Action::Verdict { kind: VerdictKind::AgentDown(h) | VerdictKind::AgentFlapping(h), evidence, .. } = a {
                let refusers: BTreeSet<HostId> = evidence.iter().filter_map(|e| match e {
                    Evidence::Report { reporter, kind: fsm::ReportKind::Refused, .. } if reporter != h => Some(*reporter),
                    _ => None,
                }).collect();
                prop_assert!(refusers.len() >= 2, "agent alarm without two refusing watchers: {a:?}");
            }
        }
    }

    #[test]
    fn no_dead_without_a_report_unless_every_probe_said_unreachable((t, steps) in case()) {
        let (actions, _, _) = run(&t, &steps, false, None);
        for a in &actions {
            if let Action::Verdict { kind: VerdictKind::Dead(_), evidence, .. } = a {
                let reported = evidence.iter().any(|e| matches!(e, Evidence::Report { kind: fsm::ReportKind::Dead, .. }));
                let probes: Vec<Option<bool>> = evidence.iter().filter_map(|e| match e {
                    Evidence::Probe { reachable, .. } => Some(*reachable),
                    _ => None,
                }).collect();
                prop_assert!(reported || (!probes.is_empty() && probes.iter().all(|r| *r == Some(false))),
                    "a check killed a host without an unreachable answer: {a:?}");
            }
        }
    }

    #[test]
    fn no_host_alarm_behind_a_down_switch((t, steps) in case()) {
        let (actions, _, _) = run(&t, &steps, false, None);
        let mut covered: BTreeSet<HostId> = BTreeSet::new();
        for a in &actions {
            if let Action::Verdict { kind, .. } = a {
                match kind {
                    VerdictKind::SwitchDown(_, hosts) | VerdictKind::RouterDown(_, _, hosts) => covered.extend(hosts.iter().copied()),
                    VerdictKind::Recovered(h) | VerdictKind::Left(h) => { covered.remove(h); }
                    VerdictKind::Dead(h) | VerdictKind::LinkFault(_, h) => prop_assert!(!covered.contains(h), "host alarm under a down switch: {kind:?}"),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn every_suspicion_resolves_within_the_bound((t, steps) in case()) {
        let (_, mut e, clock) = run(&t, &steps, false, None);
        let cfg = *e.config();
        let bound = cfg.suspicion_bound_us(cfg.default_hb_interval_us);
        // Ticks every heartbeat interval, as the worker feeds them; no more reports.
        let mut now = clock;
        while now <= clock + bound {
            now += cfg.default_hb_interval_us;
            e.handle(Event::Tick { now });
        }
        prop_assert!(!e.has_open_suspicions());
    }

    #[test]
    fn duplicated_events_change_nothing((t, steps) in case()) {
        let (once, _, _) = run(&t, &steps, false, None);
        let (twice, _, _) = run(&t, &steps, true, None);
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn snapshot_and_replay_equals_uninterrupted((t, steps) in case(), split in any::<prop::sample::Index>()) {
        let (whole, _, _) = run(&t, &steps, false, None);
        let at = split.index(steps.len() + 1);
        let (resumed, _, _) = run(&t, &steps, false, Some(at));
        prop_assert_eq!(whole, resumed);
    }
}

#[test]
fn engine_round_trips_through_json_too() {
    let t = Topo {
        hosts: vec![Some(0), Some(0), Some(1)],
        routers: vec![0, 0],
    };
    let mut e = build(&t);
    e.handle(Event::HbDead {
        at: 1,
        reporter: HostId(1),
        peer: HostId(2),
    });
    let json = serde_json::to_string(&e).unwrap();
    let back: Engine = serde_json::from_str(&json).unwrap();
    assert_eq!(back.host_state(HostId(2)), HostState::Suspected);
}

/// The worst case of the lone path (rows S3a, G3, G2b): the switch check of host 1 times
/// out just as a second lone check behind the same router opens a router case; the router
/// answers at its deadline, and host 1's own probes start only then.
#[test]
fn lone_suspect_worst_case_meets_the_switch_check_bound() {
    let t = Topo {
        hosts: vec![
            Some(0),
            Some(0),
            Some(0),
            Some(1),
            Some(1),
            Some(1),
            Some(2),
        ],
        routers: vec![0, 0, 1],
    };
    let mut e = build(&t);
    let cfg = *e.config();
    let hb = cfg.default_hb_interval_us;
    let p = cfg.probe_timeout_us;
    let bound = cfg.switch_check_bound_us(hb);
    assert_eq!(bound, cfg.suspicion_bound_us(hb));
    let dead = |at: u64, reporter: u64, peer: u64| Event::HbDead {
        at,
        reporter: HostId(reporter),
        peer: HostId(peer),
    };
    e.handle(dead(0, 7, 1));
    e.handle(Event::Tick { now: 2 * hb });
    assert_eq!(e.host_state(HostId(1)), HostState::Grouped);
    e.handle(dead(p, 7, 4));
    let out = e.handle(Event::Tick { now: 2 * hb + p });
    let router = out
        .iter()
        .find_map(|a| match a {
            Action::RequestProbe {
                probe_id,
                target: fsm::ProbeTarget::Router(_),
                ..
            } => Some(*probe_id),
            _ => None,
        })
        .expect("router case opened");
    e.handle(Event::ProbeResult {
        at: 2 * hb + 2 * p,
        probe_id: router,
        reachable: true,
    });
    assert_eq!(e.host_state(HostId(1)), HostState::Investigating);
    let before = e.handle(Event::Tick { now: bound - 1 });
    assert!(!before.iter().any(
        |a| matches!(a, Action::Verdict { kind: VerdictKind::Dead(h), .. } if *h == HostId(1))
    ));
    let out = e.handle(Event::Tick { now: bound });
    assert!(out.iter().any(
        |a| matches!(a, Action::Verdict { kind: VerdictKind::Dead(h), .. } if *h == HostId(1))
    ));
}

/// An engine stored before the switch check existed (no `switch_checked`, `window_spent`,
/// `lone`, `router_up` fields) still loads and carries on like the original.
#[test]
fn engine_stored_without_the_switch_check_fields_still_loads() {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for k in ["switch_checked", "window_spent", "lone", "router_up"] {
                    m.remove(k);
                }
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let t = Topo {
        hosts: vec![Some(0), Some(0), Some(0), Some(1), Some(1), Some(1)],
        routers: vec![0, 1],
    };
    let mut e = build(&t);
    // A switch case (S6) and a plain suspicion are open.
    for (at, r, p) in [(1000, 4, 1), (1100, 4, 2), (1200, 1, 5)] {
        e.handle(Event::HbDead {
            at: at * MS,
            reporter: HostId(r),
            peer: HostId(p),
        });
    }
    let mut json = serde_json::to_value(&e).unwrap();
    let before = json.to_string();
    strip(&mut json);
    assert_ne!(before, json.to_string(), "nothing was stripped");
    let mut old: Engine = serde_json::from_value(json).unwrap();
    for now in (2000..20_000).step_by(500) {
        let ev = Event::Tick { now: now * MS };
        assert_eq!(e.handle(ev.clone()), old.handle(ev));
    }
    assert!(!old.has_open_suspicions());
}
