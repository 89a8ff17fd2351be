//! One test per row of the transition table in `fsm/TRANSITIONS.md`.

use fsm::{
    Action, Config, Engine, Event, Evidence, HostFacts, HostState, ProbeId, ProbeTarget, RouterId,
    SwitchId, VerdictKind,
};
use proto::HostId;

const MS: u64 = 1000;

fn h(n: u64) -> HostId {
    HostId(n)
}

/// sw1 = 1..=6, sw2 = 7..=12 (router r1), sw3 = 13..=15 (router r2); hb 1 s, probe 3 s.
fn engine() -> Engine {
    engine_with(Config::default())
}

fn engine_with(config: Config) -> Engine {
    let mut e = hosts_only(config);
    for (s, r) in [("sw1", "r1"), ("sw2", "r1"), ("sw3", "r2")] {
        e.handle(Event::SwitchFact {
            switch: SwitchId(s.into()),
            router: RouterId(r.into()),
        });
    }
    e
}

/// The hosts of [`engine`] without `SwitchFact`s: no switch is declared.
fn hosts_only(config: Config) -> Engine {
    let mut e = Engine::new(config);
    for n in 1..=15u64 {
        let sw = match n {
            1..=6 => "sw1",
            7..=12 => "sw2",
            _ => "sw3",
        };
        e.handle(Event::HostFact {
            host: h(n),
            facts: HostFacts {
                switch: Some(SwitchId(sw.into())),
                hb_interval_us: 0,
            },
        });
    }
    e
}

fn sw(name: &str) -> SwitchId {
    SwitchId(name.into())
}

fn dead(at_ms: u64, a: u64, b: u64) -> Event {
    Event::HbDead {
        at: at_ms * MS,
        reporter: h(a),
        peer: h(b),
    }
}

fn alive(at_ms: u64, a: u64, b: u64) -> Event {
    Event::HbBackAlive {
        at: at_ms * MS,
        reporter: h(a),
        peer: h(b),
    }
}

fn tick(at_ms: u64) -> Event {
    Event::Tick { now: at_ms * MS }
}

fn verdicts(actions: &[Action]) -> Vec<VerdictKind> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Verdict { kind, .. } => Some(kind.clone()),
            _ => None,
        })
        .collect()
}

fn probes(actions: &[Action]) -> Vec<(ProbeId, HostId, ProbeTarget)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::RequestProbe {
                probe_id,
                from,
                target,
                ..
            } => Some((*probe_id, *from, target.clone())),
            _ => None,
        })
        .collect()
}

fn clears(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::ClearAlarm { .. }))
        .count()
}

fn answer(e: &mut Engine, at_ms: u64, probe_id: ProbeId, reachable: bool) -> Vec<Action> {
    e.handle(Event::ProbeResult {
        at: at_ms * MS,
        probe_id,
        reachable,
    })
}

/// Suspects 3 (reported by 2), lets the corroboration window pass and answers the switch
/// check (S3a) with "reachable" at once, so the host's own probes start at 3000 (G2b).
fn investigating() -> (Engine, Vec<(ProbeId, HostId, ProbeTarget)>) {
    let mut e = engine();
    e.handle(dead(1000, 2, 3));
    let check = probes(&e.handle(tick(3000)));
    assert_eq!(check.len(), 1);
    assert_eq!(check[0].2, ProbeTarget::Switch(sw("sw1")));
    let out = answer(&mut e, 3000, check[0].0, true);
    assert_eq!(e.host_state(h(3)), HostState::Investigating);
    (e, probes(&out))
}

/// Answers each probe of an investigation with `reach(from, target)`.
fn conclude(
    e: &mut Engine,
    ps: &[(ProbeId, HostId, ProbeTarget)],
    reach: impl Fn(HostId, &ProbeTarget) -> bool,
) -> Vec<Action> {
    let mut out = Vec::new();
    for (id, from, target) in ps {
        out.extend(answer(e, 3100, *id, reach(*from, target)));
    }
    out
}

#[test]
fn w1_dead_report_suspects() {
    let mut e = engine();
    let out = e.handle(dead(1000, 2, 3));
    assert!(out.is_empty());
    assert_eq!(e.host_state(h(3)), HostState::Suspected);
}

#[test]
fn w2_late_is_only_a_warning() {
    let mut e = engine();
    let out = e.handle(Event::HbLate {
        at: 1000 * MS,
        reporter: h(2),
        peer: h(3),
    });
    assert!(out.is_empty());
    assert_eq!(e.host_state(h(3)), HostState::Watching);
}

#[test]
fn w3_alive_while_watching_does_nothing() {
    let mut e = engine();
    assert!(e.handle(alive(1000, 2, 3)).is_empty());
    assert_eq!(e.host_state(h(3)), HostState::Watching);
}

#[test]
fn w4_shutdown_is_left_without_alarm() {
    let mut e = engine();
    let out = e.handle(Event::HbShutdown {
        at: 1000 * MS,
        host: h(3),
    });
    assert_eq!(verdicts(&out), vec![VerdictKind::Left(h(3))]);
    assert_eq!(e.host_state(h(3)), HostState::Left);
}

#[test]
fn w5_stale_dead_report_is_ignored() {
    let mut e = engine();
    e.handle(alive(2000, 2, 3));
    assert!(e.handle(dead(1500, 2, 3)).is_empty());
    assert_eq!(e.host_state(h(3)), HostState::Watching);
}

#[test]
fn s1_corroboration_within_two_intervals_is_dead() {
    let mut e = engine();
    e.handle(dead(1000, 2, 3));
    let out = e.handle(dead(2900, 4, 3));
    assert_eq!(verdicts(&out), vec![VerdictKind::Dead(h(3))]);
    assert_eq!(e.host_state(h(3)), HostState::Down);
}

#[test]
fn s1_late_corroboration_is_not_enough() {
    let mut e = engine();
    e.handle(dead(1000, 2, 3));
    let out = e.handle(dead(3500, 4, 3));
    assert!(verdicts(&out).is_empty());
    // The window is over: the switch is checked first (S3a), then the host (G2b).
    assert_eq!(e.host_state(h(3)), HostState::Grouped);
    assert_eq!(probes(&out)[0].2, ProbeTarget::Switch(sw("sw1")));
}

#[test]
fn s2_same_reporter_twice_is_not_corroboration() {
    let mut e = engine();
    e.handle(dead(1000, 2, 3));
    assert!(e.handle(dead(1200, 2, 3)).is_empty());
    assert_eq!(e.host_state(h(3)), HostState::Suspected);
}

#[test]
fn s3_window_passes_probes_are_ordered() {
    // No SwitchFact: the switch is not declared, so no switch check (S3a) applies.
    let mut e = hosts_only(Config::default());
    e.handle(dead(1000, 2, 3));
    assert!(e.handle(tick(2999)).is_empty());
    let out = e.handle(tick(3000));
    let ps = probes(&out);
    // From sw1 (not 2 or 3), from a third switch, of the reporter, and from the reporter.
    assert_eq!(ps.len(), 4);
    assert_eq!((ps[0].1, &ps[0].2), (h(1), &ProbeTarget::Host(h(3))));
    assert_eq!((ps[1].1, &ps[1].2), (h(7), &ProbeTarget::Host(h(3))));
    assert_eq!((ps[2].1, &ps[2].2), (h(7), &ProbeTarget::Host(h(2))));
    assert_eq!((ps[3].1, &ps[3].2), (h(2), &ProbeTarget::Host(h(3))));
    for a in &out {
        if let Action::RequestProbe { deadline, .. } = a {
            assert_eq!(*deadline, 6000 * MS);
        }
    }
}

#[test]
fn s3_no_prober_off_the_switch_falls_back_to_host_probes() {
    // Only sw1 exists: nobody can probe the switch from outside.
    let mut e = Engine::default();
    for n in 1..=6u64 {
        e.handle(Event::HostFact {
            host: h(n),
            facts: HostFacts {
                switch: Some(sw("sw1")),
                hb_interval_us: 0,
            },
        });
    }
    e.handle(Event::SwitchFact {
        switch: sw("sw1"),
        router: RouterId("r1".into()),
    });
    e.handle(dead(1000, 2, 3));
    let out = e.handle(tick(3000));
    assert_eq!(e.host_state(h(3)), HostState::Investigating);
    let ps = probes(&out);
    assert!(!ps.is_empty());
    assert!(ps.iter().all(|p| matches!(p.2, ProbeTarget::Host(_))));
}

#[test]
fn s3_open_switch_case_falls_back_to_host_probes() {
    // Three suspects make a group here, so two lone ones behind sw1 are not grouped (S6).
    let mut e = engine_with(Config {
        group_min_suspects: 3,
        ..Config::default()
    });
    e.handle(dead(1000, 2, 1));
    e.handle(dead(1000, 2, 3));
    let out = e.handle(tick(3000));
    // 1 checks sw1 (S3a); 3 finds that case open and probes on its own (S3).
    assert_eq!(e.host_state(h(1)), HostState::Grouped);
    assert_eq!(e.host_state(h(3)), HostState::Investigating);
    let ps = probes(&out);
    assert_eq!(ps[0].2, ProbeTarget::Switch(sw("sw1")));
    assert_eq!(ps.len(), 1 + 4);
}

#[test]
fn s3_switch_checked_once_per_suspicion() {
    // After the switch case of S6 released them (G2), the fresh window ends in host probes.
    let mut e = engine();
    e.handle(dead(1000, 13, 1));
    let ps = probes(&e.handle(dead(1100, 13, 2)));
    answer(&mut e, 1200, ps[0].0, true);
    let out = e.handle(tick(3200));
    assert_eq!(e.host_state(h(1)), HostState::Investigating);
    assert!(probes(&out)
        .iter()
        .all(|p| matches!(p.2, ProbeTarget::Host(_))));
}

#[test]
fn s3a_lone_suspect_checks_its_switch_first() {
    let mut e = engine();
    e.handle(dead(1000, 2, 3));
    assert!(e.handle(tick(2999)).is_empty());
    let out = e.handle(tick(3000));
    let ps = probes(&out);
    // One probe of sw1's management address, from a host off router r1 (sw3).
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].2, ProbeTarget::Switch(sw("sw1")));
    assert_eq!(ps[0].1, h(13));
    assert!(matches!(out[0], Action::RequestProbe { deadline, .. } if deadline == 6000 * MS));
    assert_eq!(e.host_state(h(3)), HostState::Grouped);
    assert!(verdicts(&out).is_empty());
    // Duplicates of the tick and of the first report change nothing.
    assert!(e.handle(tick(3000)).is_empty());
    assert!(e.handle(dead(1000, 2, 3)).is_empty());
}

#[test]
fn s3a_late_report_ends_the_window_too() {
    let mut e = engine();
    e.handle(dead(1000, 2, 3));
    let out = e.handle(dead(3100, 2, 3));
    assert_eq!(probes(&out).len(), 1);
    assert_eq!(probes(&out)[0].2, ProbeTarget::Switch(sw("sw1")));
    assert_eq!(e.host_state(h(3)), HostState::Grouped);
}

#[test]
fn s3a_corroboration_at_the_window_edge_still_wins() {
    let mut e = engine();
    e.handle(dead(1000, 2, 3));
    let out = e.handle(dead(3000, 4, 3));
    assert_eq!(verdicts(&out), vec![VerdictKind::Dead(h(3))]);
    assert!(probes(&out).is_empty());
}

#[test]
fn s3a_a_later_suspicion_is_checked_again() {
    let (mut e, ps) = investigating();
    // The first suspicion ends with a false alarm ...
    let out = conclude(&mut e, &ps, |_, _| true);
    assert_eq!(verdicts(&out), vec![VerdictKind::FalseAlarm(h(3))]);
    // ... and the next one checks the switch again.
    e.handle(dead(10_000, 2, 3));
    let out = e.handle(tick(12_000));
    assert_eq!(probes(&out).len(), 1);
    assert_eq!(probes(&out)[0].2, ProbeTarget::Switch(sw("sw1")));
}

#[test]
fn s4_alive_while_open_is_false_alarm() {
    let mut e = engine();
    e.handle(dead(1000, 2, 3));
    let out = e.handle(alive(1500, 2, 3));
    assert_eq!(verdicts(&out), vec![VerdictKind::FalseAlarm(h(3))]);
    let (mut e, _) = investigating();
    let out = e.handle(alive(3500, 4, 3));
    assert_eq!(verdicts(&out), vec![VerdictKind::FalseAlarm(h(3))]);
    assert_eq!(e.host_state(h(3)), HostState::Watching);
}

#[test]
fn s5_shutdown_while_open_is_left() {
    let (mut e, _) = investigating();
    let out = e.handle(Event::HbShutdown {
        at: 3500 * MS,
        host: h(3),
    });
    assert_eq!(verdicts(&out), vec![VerdictKind::Left(h(3))]);
    assert_eq!(e.host_state(h(3)), HostState::Left);
}

#[test]
fn s6_two_suspects_behind_one_switch_are_grouped() {
    let mut e = engine();
    assert!(e.handle(dead(1000, 13, 1)).is_empty());
    let out = e.handle(dead(1100, 13, 2));
    let ps = probes(&out);
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].2, ProbeTarget::Switch(SwitchId("sw1".into())));
    assert_ne!(ps[0].1, h(1));
    assert_eq!(e.host_state(h(1)), HostState::Grouped);
    assert_eq!(e.host_state(h(2)), HostState::Grouped);
    // A third suspect joins the open case.
    e.handle(dead(1200, 13, 4));
    assert_eq!(e.host_state(h(4)), HostState::Grouped);
}

#[test]
fn i1_c1_no_probe_reaches_suspect_is_dead() {
    let (mut e, ps) = investigating();
    let out = conclude(&mut e, &ps, |_, t| *t != ProbeTarget::Host(h(3)));
    assert_eq!(verdicts(&out), vec![VerdictKind::Dead(h(3))]);
}

#[test]
fn c2_reporter_reaches_suspect_is_false_alarm() {
    let (mut e, ps) = investigating();
    let out = conclude(&mut e, &ps, |_, _| true);
    assert_eq!(verdicts(&out), vec![VerdictKind::FalseAlarm(h(3))]);
    assert_eq!(e.host_state(h(3)), HostState::Watching);
}

#[test]
fn c3_unreachable_reporter_is_isolated() {
    let (mut e, ps) = investigating();
    let out = conclude(&mut e, &ps, |from, t| {
        from != h(2) && *t != ProbeTarget::Host(h(2))
    });
    assert_eq!(verdicts(&out), vec![VerdictKind::ReporterIsolated(h(2))]);
}

#[test]
fn c4_only_the_pair_is_cut_is_link_fault() {
    let (mut e, ps) = investigating();
    let out = conclude(&mut e, &ps, |from, _| from != h(2));
    assert_eq!(verdicts(&out), vec![VerdictKind::LinkFault(h(2), h(3))]);
    assert_eq!(e.host_state(h(3)), HostState::Down);
}

#[test]
fn i2_deadline_counts_missing_answers_as_failed() {
    let (mut e, ps) = investigating();
    // One answer only, and it failed; the rest never come.
    answer(&mut e, 3100, ps[0].0, false);
    assert!(verdicts(&e.handle(tick(5999))).is_empty());
    let out = e.handle(tick(6000));
    assert_eq!(verdicts(&out), vec![VerdictKind::Dead(h(3))]);
    assert!(!e.has_open_suspicions());
}

#[test]
fn i3_unknown_and_duplicate_results_change_nothing() {
    let (mut e, ps) = investigating();
    assert!(answer(&mut e, 3100, ProbeId(9999), true).is_empty());
    assert!(answer(&mut e, 3100, ps[0].0, true).is_empty());
    assert!(answer(&mut e, 3100, ps[0].0, false).is_empty());
    assert_eq!(e.host_state(h(3)), HostState::Investigating);
}

#[test]
fn g1_switch_probe_fails_one_switch_down_verdict() {
    let mut e = engine();
    e.handle(dead(1000, 13, 1));
    let ps = probes(&e.handle(dead(1100, 13, 2)));
    let out = answer(&mut e, 1200, ps[0].0, false);
    let hosts: Vec<HostId> = (1..=6).map(h).collect();
    assert_eq!(
        verdicts(&out),
        vec![VerdictKind::SwitchDown(SwitchId("sw1".into()), hosts)]
    );
    for n in 1..=6 {
        assert_eq!(e.host_state(h(n)), HostState::Down);
    }
    // Later reports about hosts behind it raise nothing.
    assert!(verdicts(&e.handle(dead(1300, 13, 5))).is_empty());
    assert!(verdicts(&e.handle(tick(60_000))).is_empty());
}

#[test]
fn g1_switch_probe_timeout_is_switch_down() {
    let mut e = engine();
    e.handle(dead(1000, 13, 1));
    e.handle(dead(1100, 13, 2));
    let out = e.handle(tick(4100));
    assert!(matches!(verdicts(&out)[..], [VerdictKind::SwitchDown(..)]));
}

#[test]
fn g2_switch_answers_hosts_investigate_alone() {
    let mut e = engine();
    e.handle(dead(1000, 13, 1));
    let ps = probes(&e.handle(dead(1100, 13, 2)));
    assert!(answer(&mut e, 1200, ps[0].0, true).is_empty());
    assert_eq!(e.host_state(h(1)), HostState::Suspected);
    let out = e.handle(tick(3200));
    assert_eq!(e.host_state(h(1)), HostState::Investigating);
    assert_eq!(probes(&out).len(), 8);
}

#[test]
fn g2b_switch_answers_host_probes_start_at_once() {
    let mut e = engine();
    e.handle(dead(1000, 2, 3));
    let check = probes(&e.handle(tick(3000)));
    let out = answer(&mut e, 3050, check[0].0, true);
    assert_eq!(e.host_state(h(3)), HostState::Investigating);
    // The probes of S3, at once, with their deadline from the release.
    let ps = probes(&out);
    assert_eq!(ps.len(), 4);
    assert_eq!((ps[0].1, &ps[0].2), (h(1), &ProbeTarget::Host(h(3))));
    assert_eq!((ps[1].1, &ps[1].2), (h(7), &ProbeTarget::Host(h(3))));
    assert_eq!((ps[2].1, &ps[2].2), (h(7), &ProbeTarget::Host(h(2))));
    assert_eq!((ps[3].1, &ps[3].2), (h(2), &ProbeTarget::Host(h(3))));
    assert!(out
        .iter()
        .all(|a| matches!(a, Action::RequestProbe { deadline, .. } if *deadline == 6050 * MS)));
    // Unanswered, they conclude at their deadline: one Dead, its evidence naming the
    // switch check; no second switch check on the way.
    let out = e.handle(tick(6050));
    let v: Vec<&Action> = out
        .iter()
        .filter(|a| matches!(a, Action::Verdict { .. }))
        .collect();
    assert_eq!(v.len(), 1);
    let Action::Verdict { kind, evidence, .. } = v[0] else {
        unreachable!()
    };
    assert_eq!(*kind, VerdictKind::Dead(h(3)));
    assert!(evidence.iter().any(|e| matches!(
        e,
        Evidence::Probe { target: ProbeTarget::Switch(s), reachable: Some(true), .. } if *s == sw("sw1")
    )));
    assert!(probes(&out).is_empty());
    assert!(!e.has_open_suspicions());
}

#[test]
fn g2b_switch_probe_timeout_releases_too() {
    // A lone report is no ground for a group verdict on a missing answer.
    let mut e = engine();
    e.handle(dead(1000, 2, 3));
    e.handle(tick(3000));
    let out = e.handle(tick(6000));
    assert!(verdicts(&out).is_empty());
    assert_eq!(e.host_state(h(3)), HostState::Investigating);
    assert_eq!(probes(&out).len(), 4);
    assert_eq!(
        verdicts(&e.handle(tick(9000))),
        vec![VerdictKind::Dead(h(3))]
    );
}

#[test]
fn g4_unreachable_switch_checks_its_router() {
    let mut e = engine();
    e.handle(dead(1000, 14, 1));
    let check = probes(&e.handle(tick(3000)));
    let out = answer(&mut e, 3050, check[0].0, false);
    assert!(verdicts(&out).is_empty());
    let ps = probes(&out);
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].2, ProbeTarget::Router(RouterId("r1".into())));
    assert!(ps[0].1 .0 >= 13, "router probed from behind another router");
    // The router answers: the switch alone is down.
    let out = answer(&mut e, 3100, ps[0].0, true);
    let hosts: Vec<HostId> = (1..=6).map(h).collect();
    assert_eq!(
        verdicts(&out),
        vec![VerdictKind::SwitchDown(sw("sw1"), hosts)]
    );
    assert_eq!(e.host_state(h(1)), HostState::Down);
    assert!(!e.has_open_suspicions());
}

#[test]
fn g4_router_unreachable_is_router_down() {
    let mut e = engine();
    e.handle(dead(1000, 14, 1));
    let check = probes(&e.handle(tick(3000)));
    let router = probes(&answer(&mut e, 3050, check[0].0, false));
    let out = answer(&mut e, 3100, router[0].0, false);
    let v = verdicts(&out);
    assert_eq!(v.len(), 1);
    assert!(
        matches!(&v[0], VerdictKind::RouterDown(r, s, hosts) if r.0 == "r1" && s.len() == 2 && hosts.len() == 12)
    );
    // The other switch's representative, reported later, is already covered.
    assert!(e.handle(dead(1500, 13, 8)).is_empty());
    assert!(verdicts(&e.handle(tick(20_000))).is_empty());
    assert!(!e.has_open_suspicions());
}

#[test]
fn g4_router_timeout_settles_for_switch_down() {
    let mut e = engine();
    e.handle(dead(1000, 14, 1));
    let check = probes(&e.handle(tick(3000)));
    answer(&mut e, 3050, check[0].0, false);
    let out = e.handle(tick(6050));
    assert!(matches!(&verdicts(&out)[..], [VerdictKind::SwitchDown(s, _)] if *s == sw("sw1")));
}

#[test]
fn g5_alive_suspect_closes_its_lone_check() {
    let mut e = engine();
    e.handle(dead(1000, 2, 3));
    let check = probes(&e.handle(tick(3000)));
    let out = e.handle(alive(3100, 2, 3));
    assert_eq!(verdicts(&out), vec![VerdictKind::FalseAlarm(h(3))]);
    assert!(!e.has_open_suspicions());
    // The late switch answer belongs to nobody now.
    assert!(answer(&mut e, 3200, check[0].0, false).is_empty());
    assert!(e.handle(tick(20_000)).is_empty());
}

#[test]
fn g3_two_lone_switch_checks_open_a_router_case() {
    // Router r1 dies; only the top-ring watchers on sw3 report, one representative each.
    let mut e = engine();
    e.handle(dead(1000, 14, 1));
    e.handle(dead(1000, 13, 8));
    let out = e.handle(tick(3000));
    let ps = probes(&out);
    assert_eq!(
        ps.iter().map(|p| p.2.clone()).collect::<Vec<_>>(),
        vec![
            ProbeTarget::Switch(sw("sw1")),
            ProbeTarget::Switch(sw("sw2")),
            ProbeTarget::Router(RouterId("r1".into())),
        ]
    );
    // Switch answers wait for the router case; its failure is the one verdict.
    assert!(answer(&mut e, 3050, ps[0].0, false).is_empty());
    assert!(answer(&mut e, 3050, ps[1].0, false).is_empty());
    let out = answer(&mut e, 3100, ps[2].0, false);
    let v = verdicts(&out);
    assert_eq!(v.len(), 1);
    assert!(
        matches!(&v[0], VerdictKind::RouterDown(r, s, hosts) if r.0 == "r1" && s.len() == 2 && hosts.len() == 12)
    );
    assert!(verdicts(&e.handle(tick(20_000))).is_empty());
    assert!(!e.has_open_suspicions());
}

#[test]
fn g3_two_switch_cases_behind_a_router() {
    let mut e = engine();
    e.handle(dead(1000, 13, 1));
    e.handle(dead(1000, 13, 2));
    e.handle(dead(1100, 13, 7));
    let ps = probes(&e.handle(dead(1100, 13, 8)));
    let router = ps
        .iter()
        .find(|p| p.2 == ProbeTarget::Router(RouterId("r1".into())))
        .cloned()
        .unwrap();
    assert!(
        router.1 .0 >= 13,
        "router probed from behind another router"
    );
    let out = answer(&mut e, 1200, router.0, false);
    let v = verdicts(&out);
    assert_eq!(v.len(), 1);
    assert!(
        matches!(&v[0], VerdictKind::RouterDown(r, s, hosts) if r.0 == "r1" && s.len() == 2 && hosts.len() == 12)
    );
    assert!(!e.has_open_suspicions());
}

#[test]
fn g3_router_answers_switch_outcome_applies() {
    let mut e = engine();
    e.handle(dead(1000, 13, 1));
    let sw1 = probes(&e.handle(dead(1000, 13, 2)));
    e.handle(dead(1100, 13, 7));
    let rest = probes(&e.handle(dead(1100, 13, 8)));
    let router = rest
        .iter()
        .find(|p| matches!(p.2, ProbeTarget::Router(_)))
        .unwrap()
        .0;
    // sw1's probe fails but waits for the router case.
    assert!(answer(&mut e, 1150, sw1[0].0, false).is_empty());
    let out = answer(&mut e, 1200, router, true);
    assert!(matches!(&verdicts(&out)[..], [VerdictKind::SwitchDown(s, _)] if s.0 == "sw1"));
}

#[test]
fn d1_recovery_clears_the_alarm() {
    let mut e = engine();
    e.handle(dead(1000, 2, 3));
    e.handle(dead(1500, 4, 3));
    let out = e.handle(alive(9000, 2, 3));
    assert_eq!(verdicts(&out), vec![VerdictKind::Recovered(h(3))]);
    assert_eq!(clears(&out), 1);
    assert_eq!(e.host_state(h(3)), HostState::Watching);
}

#[test]
fn d1_group_alarm_clears_with_its_last_host() {
    let mut e = engine();
    e.handle(dead(1000, 13, 1));
    e.handle(dead(1100, 13, 2));
    e.handle(tick(4100));
    for n in 1..=5 {
        assert_eq!(clears(&e.handle(alive(9000, 13, n))), 0);
    }
    assert_eq!(clears(&e.handle(alive(9000, 13, 6))), 1);
}

#[test]
fn d2_dead_while_down_is_idempotent() {
    let mut e = engine();
    e.handle(dead(1000, 2, 3));
    e.handle(dead(1500, 4, 3));
    assert!(e.handle(dead(1600, 4, 3)).is_empty());
    assert!(e.handle(dead(1000, 2, 3)).is_empty());
}

#[test]
fn d3_shutdown_while_down_leaves_and_clears() {
    let mut e = engine();
    e.handle(dead(1000, 2, 3));
    e.handle(dead(1500, 4, 3));
    let out = e.handle(Event::HbShutdown {
        at: 2000 * MS,
        host: h(3),
    });
    assert_eq!(verdicts(&out), vec![VerdictKind::Left(h(3))]);
    assert_eq!(clears(&out), 1);
}

#[test]
fn l1_l2_left_host_returns_silently() {
    let mut e = engine();
    e.handle(Event::HbShutdown {
        at: 1000 * MS,
        host: h(3),
    });
    assert!(e.handle(dead(2000, 2, 3)).is_empty());
    assert_eq!(e.host_state(h(3)), HostState::Left);
    assert!(e.handle(alive(3000, 2, 3)).is_empty());
    assert_eq!(e.host_state(h(3)), HostState::Watching);
}

#[test]
fn l3_left_host_behind_a_down_switch_is_covered() {
    let mut e = engine();
    e.handle(Event::HbShutdown {
        at: 500 * MS,
        host: h(6),
    });
    e.handle(dead(1000, 13, 1));
    e.handle(dead(1100, 13, 2));
    e.handle(tick(4100));
    assert_eq!(e.host_state(h(6)), HostState::Down);
    let out = e.handle(alive(9000, 13, 6));
    assert_eq!(verdicts(&out), vec![VerdictKind::Recovered(h(6))]);
}

fn check(at_ms: u64, from: u64, host: u64) -> Event {
    Event::Check {
        at: at_ms * MS,
        host: h(host),
        from: h(from),
    }
}

/// Starts a check of 4 from 3 at 5000 ms; returns the one probe it orders.
fn checking(e: &mut Engine) -> (ProbeId, HostId, ProbeTarget) {
    let ps = probes(&e.handle(check(5000, 3, 4)));
    assert_eq!(ps.len(), 1, "a check orders exactly one probe");
    assert_eq!(e.host_state(h(4)), HostState::Investigating);
    ps[0].clone()
}

#[test]
fn k1_check_probes_from_the_given_host_at_once() {
    let mut e = engine();
    let (_, from, target) = checking(&mut e);
    assert_eq!(from, h(3));
    assert_eq!(target, ProbeTarget::Host(h(4)));
    // Only a watching host is checked: a suspect, a down host or a second check order
    // nothing.
    assert!(probes(&e.handle(check(5100, 5, 4))).is_empty());
    e.handle(dead(5200, 8, 9));
    assert!(probes(&e.handle(check(5300, 3, 9))).is_empty());
    assert_eq!(e.host_state(h(9)), HostState::Suspected);
    // A host cannot check itself.
    assert!(probes(&e.handle(check(5400, 9, 9))).is_empty());
}

#[test]
fn k2_unreachable_check_is_dead_with_probe_evidence() {
    let mut e = engine();
    let (id, _, _) = checking(&mut e);
    let out = answer(&mut e, 5100, id, false);
    assert_eq!(verdicts(&out), vec![VerdictKind::Dead(h(4))]);
    assert_eq!(e.host_state(h(4)), HostState::Down);
    let evidence = out.iter().find_map(|a| match a {
        Action::Verdict { evidence, .. } => Some(evidence.clone()),
        _ => None,
    });
    assert!(matches!(
        evidence.as_deref(),
        Some([Evidence::Probe {
            reachable: Some(false),
            ..
        }])
    ));
}

#[test]
fn k3_reachable_check_ends_without_verdict() {
    let mut e = engine();
    let (id, _, _) = checking(&mut e);
    let out = answer(&mut e, 5100, id, true);
    assert!(verdicts(&out).is_empty());
    assert_eq!(e.host_state(h(4)), HostState::Watching);
    assert!(!e.has_open_suspicions());
}

#[test]
fn k4_unanswered_check_ends_without_verdict() {
    let mut e = engine();
    checking(&mut e);
    let out = e.handle(tick(5000 + 4000 + 1));
    assert!(
        verdicts(&out).is_empty(),
        "no answer is not evidence of death"
    );
    assert_eq!(e.host_state(h(4)), HostState::Watching);
    assert!(!e.has_open_suspicions());
}

#[test]
fn k5_report_during_a_check_starts_an_ordinary_suspicion() {
    let mut e = engine();
    let (id, _, _) = checking(&mut e);
    e.handle(dead(5100, 5, 4));
    assert_eq!(e.host_state(h(4)), HostState::Suspected);
    // The check's late answer belongs to nothing any more.
    assert!(verdicts(&answer(&mut e, 5200, id, false)).is_empty());
    // A second watcher corroborates within the window: an ordinary Dead (S1).
    let out = e.handle(dead(5300, 3, 4));
    assert_eq!(verdicts(&out), vec![VerdictKind::Dead(h(4))]);
}

#[test]
fn k6_heard_during_a_check_ends_it_without_verdict() {
    let mut e = engine();
    checking(&mut e);
    let out = e.handle(alive(5100, 5, 4));
    assert!(
        verdicts(&out).is_empty(),
        "no alarm was raised, so no false alarm either"
    );
    assert_eq!(e.host_state(h(4)), HostState::Watching);
}

// ---- Agent rows (R, A, F): a heartbeat met an ICMP port-unreachable ----------------

fn refused(at_ms: u64, a: u64, b: u64) -> Event {
    Event::HbRefused {
        at: at_ms * MS,
        reporter: h(a),
        peer: h(b),
    }
}

fn refusers(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Verdict { evidence, .. } => Some(evidence),
            _ => None,
        })
        .flatten()
        .filter_map(|e| match e {
            Evidence::Report {
                reporter,
                kind: fsm::ReportKind::Refused,
                ..
            } => Some(reporter.0),
            _ => None,
        })
        .collect()
}

/// One outage of host 3's agent seen by watchers 2 and 4; returns the second refusal's
/// actions.
fn agent_outage(e: &mut Engine, at_ms: u64) -> Vec<Action> {
    assert!(verdicts(&e.handle(refused(at_ms, 2, 3))).is_empty());
    e.handle(refused(at_ms + 300, 4, 3))
}

#[test]
fn r1_one_refusal_is_no_verdict() {
    let mut e = engine();
    assert!(e.handle(refused(1000, 2, 3)).is_empty());
    assert_eq!(e.host_state(h(3)), HostState::Refused);
}

#[test]
fn r2_a_second_watcher_refused_within_two_intervals_is_agent_down() {
    let mut e = engine();
    e.handle(refused(1000, 2, 3));
    let out = e.handle(refused(2900, 4, 3));
    assert_eq!(verdicts(&out), vec![VerdictKind::AgentDown(h(3))]);
    assert_eq!(refusers(&out), vec![2, 4]);
    assert_eq!(e.host_state(h(3)), HostState::AgentDown);
}

#[test]
fn r3_a_lone_refusal_expires_without_verdict() {
    let mut e = engine();
    e.handle(refused(1000, 2, 3));
    // The same watcher again (every heartbeat is refused, or a spoofer repeats): no verdict.
    assert!(e.handle(refused(1500, 2, 3)).is_empty());
    assert!(e.handle(tick(3000)).is_empty());
    assert_eq!(e.host_state(h(3)), HostState::Watching);
    // A second watcher after the window is a new lone refusal, not a corroboration.
    assert!(e.handle(refused(3500, 4, 3)).is_empty());
    assert_eq!(e.host_state(h(3)), HostState::Refused);
}

#[test]
fn r4_a_refused_host_reported_dead_is_suspected() {
    let mut e = engine();
    e.handle(refused(1000, 2, 3));
    assert!(e.handle(dead(1100, 4, 3)).is_empty());
    assert_eq!(e.host_state(h(3)), HostState::Suspected);
}

#[test]
fn r5_back_alive_ends_a_lone_refusal_silently() {
    let mut e = engine();
    e.handle(refused(1000, 2, 3));
    assert!(e.handle(alive(1200, 2, 3)).is_empty());
    assert_eq!(e.host_state(h(3)), HostState::Watching);
}

#[test]
fn a1_a_suspicion_with_two_refusals_is_agent_down_not_dead() {
    let mut e = engine();
    e.handle(dead(1000, 2, 3));
    e.handle(refused(1100, 2, 3));
    let out = e.handle(refused(1200, 4, 3));
    assert_eq!(verdicts(&out), vec![VerdictKind::AgentDown(h(3))]);
    assert_eq!(refusers(&out), vec![2, 4]);
    // The deadtime reports that follow change nothing (row A5).
    assert!(e.handle(dead(1500, 4, 3)).is_empty());
    assert!(e.handle(tick(20_000)).is_empty());
    assert_eq!(e.host_state(h(3)), HostState::AgentDown);
}

#[test]
fn a2_a_dead_host_without_refusals_is_dead() {
    let mut e = engine();
    e.handle(dead(1000, 2, 3));
    let out = e.handle(dead(1500, 4, 3));
    assert_eq!(verdicts(&out), vec![VerdictKind::Dead(h(3))]);
    // A refusal after the verdict does not turn it into an agent alarm.
    assert!(e.handle(refused(1600, 2, 3)).is_empty());
    assert!(e.handle(refused(1700, 4, 3)).is_empty());
    assert_eq!(e.host_state(h(3)), HostState::Down);
}

#[test]
fn a3_the_third_outage_in_ten_minutes_is_agent_flapping() {
    let mut e = engine();
    for start in [1_000, 60_000] {
        let out = agent_outage(&mut e, start);
        assert_eq!(verdicts(&out), vec![VerdictKind::AgentDown(h(3))]);
        let back = e.handle(alive(start + 5_000, 3, 3));
        assert_eq!(verdicts(&back), vec![VerdictKind::Recovered(h(3))]);
    }
    let out = agent_outage(&mut e, 120_000);
    assert_eq!(verdicts(&out), vec![VerdictKind::AgentFlapping(h(3))]);
    assert_eq!(e.host_state(h(3)), HostState::AgentFlapping);
}

#[test]
fn a3_outages_further_apart_than_the_window_are_not_flapping() {
    let mut e = engine();
    for start in [1_000, 400_000, 800_000] {
        let out = agent_outage(&mut e, start);
        assert_eq!(verdicts(&out), vec![VerdictKind::AgentDown(h(3))]);
        e.handle(alive(start + 5_000, 3, 3));
    }
}

#[test]
fn a4_the_agent_back_closes_agent_down() {
    let mut e = engine();
    agent_outage(&mut e, 1000);
    let out = e.handle(alive(4000, 3, 3));
    assert_eq!(verdicts(&out), vec![VerdictKind::Recovered(h(3))]);
    assert_eq!(clears(&out), 1);
    assert_eq!(e.host_state(h(3)), HostState::Watching);
}

#[test]
fn a5_agent_down_ignores_deadtime_and_refusals() {
    let mut e = engine();
    agent_outage(&mut e, 1000);
    assert!(e.handle(dead(4000, 2, 3)).is_empty());
    assert!(e.handle(dead(4100, 4, 3)).is_empty());
    assert!(e.handle(refused(5000, 2, 3)).is_empty());
    assert!(e.handle(tick(30_000)).is_empty());
    assert_eq!(e.host_state(h(3)), HostState::AgentDown);
}

#[test]
fn f1_f2_a_flapping_agent_raises_nothing_more() {
    let mut e = engine();
    for start in [1_000, 60_000, 120_000] {
        agent_outage(&mut e, start);
        e.handle(alive(start + 5_000, 3, 3));
    }
    assert_eq!(e.host_state(h(3)), HostState::AgentFlapping);
    // Down and back again, twice: no verdict.
    for start in [180_000, 240_000] {
        assert!(verdicts(&agent_outage(&mut e, start)).is_empty());
        assert!(e.handle(alive(start + 5_000, 3, 3)).is_empty());
    }
    assert_eq!(e.host_state(h(3)), HostState::AgentFlapping);
}

#[test]
fn f3_a_flapping_agent_up_for_the_quiet_period_recovers() {
    let mut e = engine();
    for start in [1_000, 60_000, 120_000] {
        agent_outage(&mut e, start);
        e.handle(alive(start + 5_000, 3, 3));
    }
    let last_refusal_ms = 120_300;
    let quiet_ms = fsm::FLAP_QUIET_US / MS;
    assert!(e.handle(tick(last_refusal_ms + quiet_ms - 1)).is_empty());
    let out = e.handle(tick(last_refusal_ms + quiet_ms));
    assert_eq!(verdicts(&out), vec![VerdictKind::Recovered(h(3))]);
    assert_eq!(clears(&out), 1);
    assert_eq!(e.host_state(h(3)), HostState::Watching);
    // Its history is forgiven: the next outage is an ordinary `AgentDown`.
    let later = last_refusal_ms + quiet_ms + 1_000;
    assert_eq!(
        verdicts(&agent_outage(&mut e, later)),
        vec![VerdictKind::AgentDown(h(3))]
    );
}

#[test]
fn f3_a_flapping_agent_still_down_stays_flapping() {
    let mut e = engine();
    for start in [1_000, 60_000] {
        agent_outage(&mut e, start);
        e.handle(alive(start + 5_000, 3, 3));
    }
    agent_outage(&mut e, 120_000);
    // Never heard again: the alarm stays open.
    assert!(e
        .handle(tick(120_000 + 2 * fsm::FLAP_QUIET_US / MS))
        .is_empty());
    assert_eq!(e.host_state(h(3)), HostState::AgentFlapping);
}
