use super::*;
use crate::rings::{RouterConfig, SwitchConfig};
use crate::state::{Change, Effects, WorkerSettings, WorkerState};
use proto::discovery::{LinkProtocol, LLDP_KIND};
use proto::Startup;
use proto::{HbTimings, HostId, InterfaceAddr, ReportBody};

use crate::state::tests::packet;

/// Host `h` on subnet 198.18.`net`.0/24 with gateway 198.18.`net`.1.
fn startup(h: u64, net: u8) -> ReportBody {
    let addr: IpAddr = format!("198.18.{net}.{h}").parse().unwrap();
    ReportBody::Startup(Startup {
        hostname: format!("h{h}"),
        version: "test".into(),
        listen: std::net::SocketAddr::new(addr, 7500),
        interfaces: vec![InterfaceAddr {
            name: "eth0".into(),
            addr,
            prefix_len: 24,
        }],
        gateway: Some(format!("198.18.{net}.1").parse().unwrap()),
        lldp: None,
    })
}

fn neighbour(chassis: &str, name: &str, mgmt: &str) -> Neighbour {
    Neighbour {
        iface: "eth0".into(),
        protocol: LinkProtocol::Lldp,
        chassis_id: chassis.into(),
        port_id: "p1".into(),
        system_name: Some(name.into()),
        mgmt_addr: Some(mgmt.parse().unwrap()),
        ttl_s: 4,
    }
}

fn lldp(neighbours: Vec<Neighbour>) -> ReportBody {
    ReportBody::Discovery {
        kind: LLDP_KIND.into(),
        data: serde_json::to_string(&NeighbourReport {
            neighbours,
            gateway_mac: None,
        })
        .unwrap(),
    }
}

fn settings(map: SwitchMap) -> WorkerSettings {
    WorkerSettings {
        timings: HbTimings::default(),
        switches: map,
        probe_timeout_ms: 1000,
        move_hold_down_ms: 0,
    }
}

/// Hosts 11-13 hear "lab-sw1", hosts 21-23 hear "lab-sw2"; nothing declared.
fn zero_config(s: &WorkerSettings) -> (WorkerState, Effects) {
    let mut state = WorkerState::new(fsm::Config::default());
    let mut fx = Effects::default();
    let mut t = 1_000_000;
    for (net, hosts) in [(1u8, [11u64, 12, 13]), (2, [21, 22, 23])] {
        for h in hosts {
            t += 1000;
            state.step_packet(s, &packet(h, 1, t, startup(h, net)), &mut fx);
        }
    }
    for (net, hosts) in [(1u8, [11u64, 12, 13]), (2, [21, 22, 23])] {
        let n = neighbour(
            &format!("fe:00:00:00:00:0{net}"),
            &format!("lab-sw{net}"),
            &format!("198.18.{net}.254"),
        );
        for h in hosts {
            t += 1000;
            state.step_packet(s, &packet(h, 2, t, lldp(vec![n.clone()])), &mut fx);
        }
    }
    (state, fx)
}

/// The hosts placed on switch `name`.
fn ring(state: &WorkerState, _s: &WorkerSettings, name: &str) -> Vec<u64> {
    let mut members: Vec<u64> = state
        .hosts
        .iter()
        .filter(|(_, h)| h.switch.as_deref() == Some(name))
        .map(|(id, _)| *id)
        .collect();
    members.sort_unstable();
    members
}

#[test]
fn undeclared_switches_and_gateway_routers_are_learned() {
    let s = settings(SwitchMap::default());
    let (state, fx) = zero_config(&s);
    assert_eq!(ring(&state, &s, "lab-sw1"), vec![11, 12, 13]);
    assert_eq!(ring(&state, &s, "lab-sw2"), vec![21, 22, 23]);
    assert_eq!(
        state.rings.keys().cloned().collect::<BTreeSet<String>>(),
        BTreeSet::from([
            "switch:lab-sw1".to_string(),
            "switch:lab-sw2".to_string(),
            "top".to_string()
        ])
    );
    // The fsm knows the switches and their routers, so it can correlate.
    let topo = state.engine.topology();
    assert_eq!(
        topo.router_of(&fsm::SwitchId("lab-sw1".into())),
        Some(&fsm::RouterId("198.18.1.1".into()))
    );
    assert_eq!(
        topo.hosts_behind(&fsm::SwitchId("lab-sw2".into())),
        vec![HostId(21), HostId(22), HostId(23)]
    );
    // What operators see, with sources.
    let view = state.topology_view(&s);
    let sw1 = &view.switches[0];
    assert_eq!(sw1.name, "lab-sw1");
    assert_eq!(sw1.address, Some("198.18.1.254".parse().unwrap()));
    assert_eq!(sw1.address_source, Some(Source::Lldp));
    assert_eq!(sw1.router.as_deref(), Some("198.18.1.1"));
    assert_eq!(sw1.router_source, Some(Source::Gateway));
    assert!(sw1.hosts.iter().all(|h| h.source == Source::Lldp));
    assert_eq!(view.routers.len(), 2);
    assert_eq!(view.routers[0].address, Some("198.18.1.1".parse().unwrap()));
    assert!(view.unplaced.is_empty());
    // The rows written are that view.
    assert_eq!(written(&fx), (view.switches.clone(), view.routers.clone()));
}

/// The switch and router rows as the changes leave them (last write wins).
fn written(fx: &Effects) -> (Vec<SwitchView>, Vec<RouterView>) {
    let mut switches = std::collections::BTreeMap::new();
    let mut routers = std::collections::BTreeMap::new();
    for c in &fx.changes {
        match c {
            Change::TopologySwitch(name, v) => {
                switches.insert(name.clone(), v.clone());
            }
            Change::TopologyRouter(name, v) => {
                routers.insert(name.clone(), v.clone());
            }
            _ => {}
        }
    }
    (
        switches.into_values().flatten().collect(),
        routers.into_values().flatten().collect(),
    )
}

#[test]
fn declared_config_wins_and_sources_say_so() {
    let map = SwitchMap::new(
        vec![
            SwitchConfig {
                name: "core-a".into(),
                address: Some("198.18.1.250".parse().unwrap()),
                subnets: vec![],
                hosts: vec![11],
                lldp_chassis: None,
                router: Some("r1".into()),
            },
            SwitchConfig {
                name: "edge-b".into(),
                address: None,
                subnets: vec!["198.18.2.0/24".into()],
                hosts: vec![],
                lldp_chassis: None,
                router: None,
            },
        ],
        vec![RouterConfig {
            name: "r1".into(),
            address: Some("198.18.0.1".parse().unwrap()),
        }],
    )
    .unwrap();
    let s = settings(map);
    let (state, _) = zero_config(&s);
    // Host 11 is declared on core-a; 12 and 13 hear lab-sw1 (undeclared); 21-23 are in
    // edge-b's subnet, whatever they hear.
    assert_eq!(state.hosts[&11].switch.as_deref(), Some("core-a"));
    assert_eq!(state.hosts[&12].switch.as_deref(), Some("lab-sw1"));
    assert_eq!(ring(&state, &s, "edge-b"), vec![21, 22, 23]);
    let view = state.topology_view(&s);
    let by_name = |n: &str| view.switches.iter().find(|w| w.name == n).unwrap().clone();
    let core = by_name("core-a");
    assert_eq!(core.hosts[0].source, Source::Declared);
    assert_eq!(core.address_source, Some(Source::Declared));
    assert_eq!(core.router.as_deref(), Some("r1"));
    assert_eq!(core.router_source, Some(Source::Declared));
    let edge = by_name("edge-b");
    assert!(edge.hosts.iter().all(|h| h.source == Source::Subnet));
    // edge-b declares no address: the one its hosts hear is not its (they hear lab-sw2).
    assert_eq!(edge.address, None);
    assert_eq!(edge.router.as_deref(), Some("198.18.2.1"));
    assert_eq!(edge.router_source, Some(Source::Gateway));
}

#[test]
fn a_host_moved_to_another_switch_changes_rings_without_an_alarm() {
    let s = settings(SwitchMap::default());
    let (mut state, _) = zero_config(&s);
    let mut fx = Effects::default();
    let sw2 = neighbour("fe:00:00:00:00:02", "lab-sw2", "198.18.2.254");
    // Host 13 is re-plugged: it hears both for a while, then only lab-sw2.
    let both = vec![
        neighbour("fe:00:00:00:00:01", "lab-sw1", "198.18.1.254"),
        sw2.clone(),
    ];
    state.step_packet(&s, &packet(13, 3, 20_000_000, lldp(both)), &mut fx);
    assert_eq!(state.hosts[&13].switch.as_deref(), Some("lab-sw1"));
    state.step_packet(&s, &packet(13, 4, 22_000_000, lldp(vec![sw2])), &mut fx);
    assert_eq!(ring(&state, &s, "lab-sw2"), vec![13, 21, 22, 23]);
    assert_eq!(ring(&state, &s, "lab-sw1"), vec![11, 12]);
    assert_eq!(
        state
            .engine
            .topology()
            .switch_of(HostId(13))
            .map(|s| s.0.as_str()),
        Some("lab-sw2")
    );
    assert!(state.peers[&13].contains(&21) || state.peers[&13].contains(&23));
    assert!(
        fx.events()
            .all(|e| !e.kind.to_string().starts_with("verdict")),
        "{:?}",
        fx.changes
    );
    // Commands went out for the new neighbours.
    assert!(fx.commands.iter().any(|c| c.to.0 == 13));
}

#[test]
fn a_restarted_nanoprobe_keeps_its_switch_until_it_reports_anew() {
    let s = settings(SwitchMap::default());
    let (mut state, _) = zero_config(&s);
    let mut fx = Effects::default();
    state.step_packet(&s, &packet(12, 1, 30_000_000, startup(12, 1)), &mut fx);
    assert_eq!(state.hosts[&12].switch.as_deref(), Some("lab-sw1"));
    // It hears nothing any more: back to the flat ring.
    state.step_packet(&s, &packet(12, 2, 31_000_000, lldp(vec![])), &mut fx);
    assert_eq!(state.hosts[&12].switch, None);
    assert!(state.topology_view(&s).unplaced.contains(&12));
}

#[test]
fn hostile_reports_are_bounded() {
    let s = settings(SwitchMap::default());
    let (mut state, _) = zero_config(&s);
    let mut fx = Effects::default();
    let long = "x".repeat(10_000);
    let many: Vec<Neighbour> = (0..50)
        .map(|i| neighbour(&format!("{long}{i}"), &long, "198.18.9.9"))
        .collect();
    let report = lldp(many);
    // Too big for a datagram: the nanoprobe could not send it; parse it directly.
    let ReportBody::Discovery { data, .. } = &report else {
        unreachable!()
    };
    let (parsed, _) = parse_report(data).unwrap();
    assert_eq!(parsed.len(), MAX_REPORTED);
    assert!(parsed.iter().all(|n| n.chassis_id.len() <= MAX_FIELD));
    // Garbage is ignored, the host stays where it was.
    let junk = ReportBody::Discovery {
        kind: LLDP_KIND.into(),
        data: "{not json".into(),
    };
    state.step_packet(&s, &packet(11, 9, 40_000_000, junk), &mut fx);
    assert_eq!(state.hosts[&11].switch.as_deref(), Some("lab-sw1"));
    // The same report again changes nothing: no replan, no commands.
    let mut fx = Effects::default();
    let same = lldp(vec![neighbour(
        "fe:00:00:00:00:01",
        "lab-sw1",
        "198.18.1.254",
    )]);
    state.step_packet(&s, &packet(11, 10, 41_000_000, same), &mut fx);
    assert!(fx.commands.is_empty());
    assert!(!fx.changes.iter().any(|c| matches!(c, Change::Ring(..))));
}

#[test]
fn lldpctl_at_start_up_is_the_fallback() {
    let s = settings(SwitchMap::default());
    let mut state = WorkerState::new(fsm::Config::default());
    let mut fx = Effects::default();
    let ReportBody::Startup(mut st) = startup(5, 3) else {
        unreachable!()
    };
    st.lldp = Some(proto::LldpNeighbour {
        chassis_id: "00:11:22:33:44:55".into(),
        port_id: "Gi0/1".into(),
        system_name: None,
    });
    state.step_packet(&s, &packet(5, 1, 1, ReportBody::Startup(st)), &mut fx);
    // No system name: named by its chassis id.
    assert_eq!(state.hosts[&5].switch.as_deref(), Some("00:11:22:33:44:55"));
}

#[test]
fn state_with_learned_topology_survives_its_rows() {
    let s = settings(SwitchMap::default());
    let (state, _) = zero_config(&s);
    let back = round_trip(&state);
    assert_eq!(back.learned, state.learned);
    let differences = back.differences(&state);
    assert!(differences.is_empty(), "{differences:?}");
}

#[test]
fn gateways_sharing_a_mac_are_one_router() {
    let s = settings(SwitchMap::default());
    // One effects list from the start, so it holds every topology row written.
    let (mut state, mut fx) = zero_config(&s);
    // Every host learns its gateway's MAC: both subnets' gateways answer with one MAC.
    let mut t = 50_000_000;
    for (net, hosts) in [(1u8, [11u64, 12, 13]), (2, [21, 22, 23])] {
        let n = neighbour(
            &format!("fe:00:00:00:00:0{net}"),
            &format!("lab-sw{net}"),
            &format!("198.18.{net}.254"),
        );
        for h in hosts {
            t += 1000;
            let body = ReportBody::Discovery {
                kind: LLDP_KIND.into(),
                data: serde_json::to_string(&NeighbourReport {
                    neighbours: vec![n.clone()],
                    gateway_mac: Some("02:52:57:00:00:01".into()),
                })
                .unwrap(),
            };
            state.step_packet(&s, &packet(h, 10, t, body), &mut fx);
        }
    }
    let r = fsm::RouterId("198.18.1.1".into());
    let topo = state.engine.topology();
    for sw in ["lab-sw1", "lab-sw2"] {
        assert_eq!(topo.router_of(&fsm::SwitchId(sw.into())), Some(&r), "{sw}");
    }
    let view = state.topology_view(&s);
    // Operators see it: the rows written are that view.
    assert_eq!(written(&fx), (view.switches.clone(), view.routers.clone()));
    assert_eq!(view.routers.len(), 1, "{view:?}");
    assert_eq!(view.routers[0].switches, vec!["lab-sw1", "lab-sw2"]);
    assert_eq!(view.routers[0].address, Some("198.18.1.1".parse().unwrap()));
}

/// `body` from `sender` as the packet-reader saw it arrive from `source`.
fn packet_from(sender: u64, id: u64, at_us: u64, body: ReportBody, source: &str) -> QueuedPacket {
    let mut p = packet(sender, id, at_us, body);
    p.source = source.parse().unwrap();
    p
}

use queue::QueuedPacket;

#[test]
fn a_host_listening_on_any_address_is_followed_to_its_new_address() {
    let s = settings(SwitchMap::default());
    let (mut state, _) = zero_config(&s);
    let mut fx = Effects::default();
    // Host 14 listens on 0.0.0.0: it is reached where its reports come from.
    let ReportBody::Startup(mut st) = startup(14, 1) else {
        unreachable!()
    };
    st.listen = "0.0.0.0:7500".parse().unwrap();
    let t = 10_000_000;
    let sw1 = neighbour("fe:00:00:00:00:01", "lab-sw1", "198.18.1.254");
    state.step_packet(
        &s,
        &packet_from(14, 1, t, ReportBody::Startup(st), "198.18.1.14:7500"),
        &mut fx,
    );
    state.step_packet(
        &s,
        &packet_from(14, 2, t + 1000, lldp(vec![sw1]), "198.18.1.14:7500"),
        &mut fx,
    );
    assert_eq!(state.hosts[&14].addr, "198.18.1.14:7500".parse().unwrap());
    assert_eq!(ring(&state, &s, "lab-sw1"), vec![11, 12, 13, 14]);
    let watchers: Vec<u64> = state
        .peers
        .iter()
        .filter(|(_, p)| p.contains(&14))
        .map(|(h, _)| *h)
        .collect();
    assert!(watchers.len() >= 2, "{watchers:?}");
    // Re-plugged into subnet 2 with a new address: its next report comes from there.
    let mut fx = Effects::default();
    let body = ReportBody::HbLate {
        peer: HostId(11),
        late_by_ms: 1000,
    };
    state.step_packet(
        &s,
        &packet_from(14, 3, t + 2_000_000, body.clone(), "198.18.2.14:7500"),
        &mut fx,
    );
    let new: std::net::SocketAddr = "198.18.2.14:7500".parse().unwrap();
    assert_eq!(state.hosts[&14].addr, new);
    // Every host exchanging heartbeats with it is told the new address, nobody else.
    let mut told: Vec<u64> = fx
        .commands
        .iter()
        .filter(|c| match &c.command.body {
            proto::CommandBody::SendExpectHb { peers, .. } => {
                peers.iter().any(|p| p.host == HostId(14) && p.addr == new)
            }
            _ => false,
        })
        .map(|c| c.to.0)
        .collect();
    told.sort_unstable();
    assert_eq!(told, watchers);
    assert!(fx
        .changes
        .iter()
        .any(|c| matches!(c, Change::Host(h) if h.id == 14 && h.addr == new)));
    // The same address again: nothing to tell.
    let mut fx = Effects::default();
    state.step_packet(
        &s,
        &packet_from(14, 4, t + 3_000_000, body, "198.18.2.14:7500"),
        &mut fx,
    );
    assert!(fx.commands.is_empty(), "{:?}", fx.commands);
    // Hosts that listen on a given address are not moved by where packets come from
    // (every packet of `zero_config` comes from 127.0.0.1:9).
    assert_eq!(state.hosts[&11].addr, "198.18.1.11:7500".parse().unwrap());
    // The new address survives the rows.
    let back = round_trip(&state);
    assert!(back.differences(&state).is_empty());
}

/// The state rebuilt from the rows it writes.
fn round_trip(state: &WorkerState) -> WorkerState {
    let writes = state
        .all_rows()
        .iter()
        .map(crate::tables::encode)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let mut queue = queue::state::QueueState::new(Default::default());
    queue.apply(queue::Command::Apply {
        consumer: crate::CONSUMER.into(),
        offset: None,
        writes,
    });
    crate::tables::load_state(&queue, fsm::Config::default()).unwrap()
}

fn held_settings() -> WorkerSettings {
    WorkerSettings {
        move_hold_down_ms: 10_000,
        ..settings(SwitchMap::default())
    }
}

#[test]
fn a_re_plugged_host_hearing_nothing_for_a_moment_goes_straight_to_its_new_switch() {
    let s = held_settings();
    let (mut state, _) = zero_config(&s);
    let mut fx = Effects::default();
    let t = 20_000_000;
    // The link to lab-sw1 went away: nothing heard.
    state.step_packet(&s, &packet(13, 3, t, lldp(vec![])), &mut fx);
    assert_eq!(state.hosts[&13].switch.as_deref(), Some("lab-sw1"));
    assert!(state.learned.held.contains(&13));
    assert_eq!(state.moves_held, 1);
    // Held state survives the rows.
    assert!(round_trip(&state).differences(&state).is_empty());
    state.step_tick(&s, t + 1_000_000, &mut fx);
    assert_eq!(state.hosts[&13].switch.as_deref(), Some("lab-sw1"));
    // Two seconds later it hears lab-sw2: moved at once (it has not moved for long).
    let sw2 = neighbour("fe:00:00:00:00:02", "lab-sw2", "198.18.2.254");
    state.step_packet(&s, &packet(13, 4, t + 2_000_000, lldp(vec![sw2])), &mut fx);
    assert_eq!(ring(&state, &s, "lab-sw2"), vec![13, 21, 22, 23]);
    assert!(state.learned.held.is_empty());
    // Never in the flat ring, no alarm.
    assert!(!state.rings.contains_key("flat"));
    assert!(fx
        .events()
        .all(|e| !e.kind.to_string().starts_with("verdict")));
    // Hearing nothing for the whole hold-down does put it in the flat ring.
    state.step_packet(&s, &packet(13, 5, t + 30_000_000, lldp(vec![])), &mut fx);
    state.step_tick(&s, t + 39_000_000, &mut fx);
    assert_eq!(state.hosts[&13].switch.as_deref(), Some("lab-sw2"));
    state.step_tick(&s, t + 40_000_000, &mut fx);
    assert_eq!(state.hosts[&13].switch, None);
}

#[test]
fn a_host_flapping_between_two_switches_is_moved_a_bounded_number_of_times() {
    use crate::harness::Harness;
    let s = held_settings();
    let mut h = Harness::new(s.clone(), fsm::Config::default());
    let sw = |net: u8| {
        neighbour(
            &format!("fe:00:00:00:00:0{net}"),
            &format!("lab-sw{net}"),
            &format!("198.18.{net}.254"),
        )
    };
    for (net, hosts) in [(1u8, [11u64, 12, 13]), (2, [21, 22, 23])] {
        for host in hosts {
            h.report(host, startup(host, net));
            h.report(host, lldp(vec![sw(net)]));
        }
    }
    h.run_for(2000, 100);
    assert_eq!(h.host(13).switch.as_deref(), Some("lab-sw1"));
    // A flood: host 13 says it sits behind the other switch every 500 ms for 60 s (a
    // hostile or broken host, or two switches fighting over its port).
    let flaps = 120;
    let mut moves = 0;
    let mut last = h.host(13).switch;
    for i in 0..flaps {
        let net = if i % 2 == 0 { 2 } else { 1 };
        h.report(13, lldp(vec![sw(net)]));
        h.run_for(500, 100);
        let now = h.host(13).switch;
        if now != last {
            moves += 1;
            last = now;
        }
    }
    // At most one move per hold-down (60 s / 10 s, plus the first), not one per report.
    assert!(moves <= 7, "{moves} moves for {flaps} reports");
    assert!(moves >= 2, "the host does move: {moves}");
    // A report held down is remembered and applied once the hold-down is over.
    h.report(13, lldp(vec![sw(2)]));
    h.run_for(11_000, 100);
    assert_eq!(h.host(13).switch.as_deref(), Some("lab-sw2"));
    let state = crate::tables::load_state(&h.queue, fsm::Config::default()).unwrap();
    // Every other report would have moved it: those not applied were held and counted.
    assert!(
        state.moves_held + moves >= flaps / 2,
        "{} held, {moves} moves",
        state.moves_held
    );
    assert!(state.learned.held.is_empty());
    // No alarm from any of it.
    assert!(h.failures().is_empty(), "{:?}", h.failures());
    println!(
        "{flaps} flapping reports over 60 s: {moves} moves, {} held down",
        state.moves_held
    );
}
