//! Property tests over random event sequences on random topologies (issue 6).

use fsm::{Action, Engine, Event, Evidence, HostFacts, RouterId, SwitchId, VerdictKind};
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
    /// Answer the k-th outstanding probe.
    Answer(usize, bool),
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
        3 => (0usize..8, any::<bool>()).prop_map(|(k, r)| Op::Answer(k, r)),
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
            Op::Tick => Event::Tick { now: self.clock },
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
    assert_eq!(back.host_state(HostId(2)), "suspected");
}
