//! The worker's deterministic core: its replicated state and the step that turns queue
//! entries and ticks into state changes and effects.
//!
//! Pure: no I/O, no clock reads (time comes from queue entries and from `Tick`s whose time
//! the caller chooses). The run loop commits the resulting table writes through Raft and
//! only then carries out the effects, so a new leader that reloads the committed state
//! and processes the same entries makes the same decisions, with the same ids.

use super::outbox::Outbound;
use super::rings::{self, Ring, SwitchMap};
use super::views::{id_key, FailureRow, HostRow, RingRow, EVENTS, FAILURES, HOSTS, RINGS};
use crate::raft::TableWrite;
use crate::sinks::Event;
use fsm::{Action, Evidence, VerdictKind};
use proto::{Body, Command, CommandBody, HbTimings, HostId, Peer, ProbeKind, ReportBody};
use queue::QueuedPacket;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// How many events the events table keeps (older ones are deleted as new ones come).
pub const EVENTS_KEPT: u64 = 10_000;

/// What the worker knows of a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    /// Where its nanoprobe listens (heartbeats, commands, UDP echo).
    pub addr: SocketAddr,
    pub version: String,
    /// The switch it sits behind, when known.
    pub switch: Option<String>,
    /// `up`, `dead`, `left`.
    pub status: String,
    pub since_us: u64,
}

/// Everything the worker must carry across a leader change.
#[derive(Serialize, Deserialize)]
pub struct WorkerState {
    pub hosts: BTreeMap<u64, HostInfo>,
    /// Peers currently commanded: host → hosts it sends heartbeats to and expects from.
    pub peers: BTreeMap<u64, BTreeSet<u64>>,
    /// The failure-disambiguation state machine.
    pub engine: fsm::Engine,
    pub next_command_id: u64,
    pub next_event_id: u64,
    /// Open alarm verdicts by id (closed on recovery).
    pub open_failures: BTreeMap<u64, FailureRow>,
    /// Names of the rings in the rings table.
    pub ring_names: BTreeSet<String>,
    /// Latest time seen (µs since the Unix epoch): queue entries and ticks.
    pub now_us: u64,
    /// Events up to this id were handed to the sinks.
    pub published_upto: u64,
}

/// Effects of one or several steps, to commit (writes) and then carry out.
#[derive(Debug, Default)]
pub struct Effects {
    pub writes: Vec<TableWrite>,
    pub commands: Vec<Outbound>,
    pub events: Vec<Event>,
    /// Probe requests to pass through the rate limiter before sending: (investigation
    /// key, command).
    pub probes: Vec<(String, Outbound)>,
}

/// Static settings of the worker (from the CMA config).
#[derive(Clone, Debug, Default)]
pub struct WorkerSettings {
    /// Heartbeat timings given to every ring.
    pub timings: HbTimings,
    /// Declared switches and routers.
    pub switches: SwitchMap,
    /// Timeout of one active probe.
    pub probe_timeout_ms: u32,
}

fn json_write<T: Serialize>(table: &str, key: Vec<u8>, value: &T) -> Option<TableWrite> {
    serde_json::to_vec(value).ok().map(|v| TableWrite {
        table: table.to_string(),
        key,
        value: Some(v),
    })
}

impl WorkerState {
    /// A fresh state whose fsm uses `config`.
    pub fn new(config: fsm::Config) -> WorkerState {
        WorkerState {
            hosts: BTreeMap::new(),
            peers: BTreeMap::new(),
            engine: fsm::Engine::new(config),
            next_command_id: 1,
            next_event_id: 1,
            open_failures: BTreeMap::new(),
            ring_names: BTreeSet::new(),
            now_us: 0,
            published_upto: 0,
        }
    }

    fn advance(&mut self, at_us: u64) -> u64 {
        self.now_us = self.now_us.max(at_us);
        self.now_us
    }

    /// Processes one queue entry.
    pub fn step_packet(&mut self, s: &WorkerSettings, packet: &QueuedPacket, fx: &mut Effects) {
        let now = self.advance(packet.received_at_us);
        let verified = match proto::decode_verified(&packet.datagram) {
            Ok(v) => v,
            Err(e) => {
                // Verified by a packet-reader before it was queued: undecodable here means
                // a version mismatch. Skip it rather than stall the queue.
                tracing::warn!(sender = packet.sender, error = %e, "undecodable queue entry skipped");
                return;
            }
        };
        let Body::Report(report) = verified.body else {
            return;
        };
        let sender = packet.sender;
        match report.body {
            ReportBody::Startup(startup) => {
                let mut addr = startup.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(packet.source.ip());
                }
                let switch = s.switches.switch_of(
                    sender,
                    addr.ip(),
                    startup.interfaces.iter().map(|i| (i.addr, i.prefix_len)),
                    startup.lldp.as_ref().map(|l| l.chassis_id.as_str()),
                );
                let previous = self.hosts.get(&sender).cloned();
                let came_back = previous
                    .as_ref()
                    .is_some_and(|h| h.status == "dead" || h.status == "left");
                self.hosts.insert(
                    sender,
                    HostInfo {
                        hostname: startup.hostname.clone(),
                        addr,
                        version: startup.version.clone(),
                        switch: switch.clone(),
                        status: "up".into(),
                        since_us: if came_back || previous.is_none() {
                            now
                        } else {
                            previous.as_ref().map_or(now, |h| h.since_us)
                        },
                    },
                );
                let facts = fsm::Event::HostFact {
                    host: HostId(sender),
                    facts: fsm::HostFacts {
                        switch: switch.clone().map(fsm::SwitchId),
                        hb_interval_us: u64::from(s.timings.interval_ms) * 1000,
                    },
                };
                let actions = self.engine.handle(facts);
                self.apply_actions(s, actions, fx);
                if let Some(sw) = &switch {
                    if let Some(router) = s.switches.router_of(sw) {
                        let actions = self.engine.handle(fsm::Event::SwitchFact {
                            switch: fsm::SwitchId(sw.clone()),
                            router: fsm::RouterId(router.to_string()),
                        });
                        self.apply_actions(s, actions, fx);
                    }
                }
                if came_back {
                    self.host_back(s, sender, now, fx);
                }
                let kind = if previous.is_none() {
                    "host.joined"
                } else {
                    "host.restarted"
                };
                self.event(
                    kind,
                    format!("host {sender} ({}) started at {addr}", startup.hostname),
                    serde_json::json!({"host": sender, "hostname": startup.hostname, "addr": addr, "switch": switch}),
                    fx,
                );
                // A restarted nanoprobe lost its peer lists: send them again in full.
                self.peers.remove(&sender);
                self.replan(s, fx);
            }
            ReportBody::HbDead { peer, .. } => {
                let actions = self.engine.handle(fsm::Event::HbDead {
                    at: now,
                    reporter: HostId(sender),
                    peer,
                });
                self.apply_actions(s, actions, fx);
            }
            ReportBody::HbLate { peer, .. } => {
                let actions = self.engine.handle(fsm::Event::HbLate {
                    at: now,
                    reporter: HostId(sender),
                    peer,
                });
                self.apply_actions(s, actions, fx);
            }
            ReportBody::HbBackAlive { peer, .. } => {
                let actions = self.engine.handle(fsm::Event::HbBackAlive {
                    at: now,
                    reporter: HostId(sender),
                    peer,
                });
                self.apply_actions(s, actions, fx);
            }
            ReportBody::HbShutdown => {
                let actions = self.engine.handle(fsm::Event::HbShutdown {
                    at: now,
                    host: HostId(sender),
                });
                self.apply_actions(s, actions, fx);
                // Whatever the fsm said, a host that said goodbye leaves its rings.
                self.set_status(sender, "left", now, fx);
                self.replan(s, fx);
            }
            ReportBody::HbMartian { from, .. } => {
                // A host we declared dead still sends heartbeats to its old peers: it is
                // back without a restart. Put it back in its rings.
                if self.hosts.get(&from.0).is_some_and(|h| h.status == "dead") {
                    self.host_back(s, from.0, now, fx);
                    self.replan(s, fx);
                }
            }
            ReportBody::ProbeResult(result) => {
                let actions = self.engine.handle(fsm::Event::ProbeResult {
                    at: now,
                    probe_id: fsm::ProbeId(result.probe_id),
                    reachable: result.outcome == proto::ProbeOutcome::Reachable,
                });
                self.apply_actions(s, actions, fx);
            }
            ReportBody::Discovery { kind, data } => {
                self.event(
                    "host.discovery",
                    format!("discovery {kind} from host {sender}"),
                    serde_json::json!({"host": sender, "kind": kind, "data": data}),
                    fx,
                );
            }
        }
    }

    /// Lets time pass: fires the fsm's deadlines.
    pub fn step_tick(&mut self, s: &WorkerSettings, now_us: u64, fx: &mut Effects) {
        let now = self.advance(now_us);
        let actions = self.engine.handle(fsm::Event::Tick { now });
        self.apply_actions(s, actions, fx);
    }

    /// A dead or departed host is alive again.
    fn host_back(&mut self, s: &WorkerSettings, host: u64, now: u64, fx: &mut Effects) {
        self.set_status(host, "up", now, fx);
        let actions = self.engine.handle(fsm::Event::HbBackAlive {
            at: now,
            reporter: HostId(host),
            peer: HostId(host),
        });
        self.apply_actions(s, actions, fx);
        self.close_failures_of(host, now, fx);
    }

    fn set_status(&mut self, host: u64, status: &str, now: u64, fx: &mut Effects) {
        if let Some(h) = self.hosts.get_mut(&host) {
            if h.status != status {
                h.status = status.to_string();
                h.since_us = now;
                self.write_host(host, fx);
            }
        }
    }

    fn close_failures_of(&mut self, host: u64, now: u64, fx: &mut Effects) {
        let ids: Vec<u64> = self
            .open_failures
            .iter()
            .filter(|(_, f)| f.hosts.contains(&host))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.close_failure(id, now, fx);
        }
    }

    /// Marks failure `id` closed.
    fn close_failure(&mut self, id: u64, now: u64, fx: &mut Effects) {
        if let Some(mut row) = self.open_failures.remove(&id) {
            row.state = "closed".into();
            row.closed_us = Some(now);
            if let Some(w) = json_write(FAILURES, id_key(id), &row) {
                fx.writes.push(w);
            }
            self.event(
                "failure.closed",
                format!("failure {id} closed"),
                serde_json::json!({"failure": id}),
                fx,
            );
        }
    }

    fn apply_actions(&mut self, s: &WorkerSettings, actions: Vec<Action>, fx: &mut Effects) {
        for action in actions {
            match action {
                Action::RequestProbe {
                    probe_id,
                    from,
                    target,
                    deadline: _,
                } => self.request_probe(s, probe_id.0, from.0, target, fx),
                Action::Verdict {
                    id,
                    at,
                    kind,
                    evidence,
                } => self.verdict(s, id.0, at, kind, evidence, fx),
                Action::ClearAlarm { verdict, at } => self.close_failure(verdict.0, at, fx),
            }
        }
    }

    fn request_probe(
        &mut self,
        s: &WorkerSettings,
        probe_id: u64,
        from: u64,
        target: fsm::ProbeTarget,
        fx: &mut Effects,
    ) {
        let Some(from_addr) = self.hosts.get(&from).map(|h| h.addr) else {
            return;
        };
        let (target, kind, key) = match &target {
            // A host is probed at its nanoprobe: the test is "is the agent alive", which is
            // what its watchers stopped hearing.
            fsm::ProbeTarget::Host(h) => match self.hosts.get(&h.0) {
                Some(info) => (
                    proto::ProbeTarget {
                        host: Some(*h),
                        addr: info.addr.ip(),
                    },
                    ProbeKind::UdpEcho {
                        port: info.addr.port(),
                    },
                    format!("host:{}", h.0),
                ),
                None => return,
            },
            fsm::ProbeTarget::Switch(sw) => match s.switches.switch_addr(&sw.0) {
                Some(addr) => (
                    proto::ProbeTarget { host: None, addr },
                    ProbeKind::IcmpEcho,
                    format!("switch:{}", sw.0),
                ),
                None => return,
            },
            fsm::ProbeTarget::Router(r) => match s.switches.router_addr(&r.0) {
                Some(addr) => (
                    proto::ProbeTarget { host: None, addr },
                    ProbeKind::IcmpEcho,
                    format!("router:{}", r.0),
                ),
                None => return,
            },
        };
        let command = self.new_command(
            from,
            from_addr,
            CommandBody::DoProbe {
                probe_id,
                targets: vec![target],
                kind,
                timeout_ms: s.probe_timeout_ms,
            },
        );
        fx.probes.push((key, command));
    }

    fn verdict(
        &mut self,
        s: &WorkerSettings,
        id: u64,
        at: u64,
        kind: VerdictKind,
        evidence: Vec<Evidence>,
        fx: &mut Effects,
    ) {
        let (name, subject, hosts): (&str, String, Vec<u64>) = match &kind {
            VerdictKind::Dead(h) => ("dead", h.to_string(), vec![h.0]),
            VerdictKind::LinkFault(a, b) => ("link_fault", format!("{a}-{b}"), vec![a.0, b.0]),
            VerdictKind::ReporterIsolated(a) => ("reporter_isolated", a.to_string(), vec![a.0]),
            VerdictKind::SwitchDown(sw, h) => {
                ("switch_down", sw.0.clone(), h.iter().map(|x| x.0).collect())
            }
            VerdictKind::RouterDown(r, _, h) => {
                ("router_down", r.0.clone(), h.iter().map(|x| x.0).collect())
            }
            VerdictKind::FalseAlarm(h) => ("false_alarm", h.to_string(), vec![h.0]),
            VerdictKind::Recovered(h) => ("recovered", h.to_string(), vec![h.0]),
            VerdictKind::Left(h) => ("left", h.to_string(), vec![h.0]),
        };
        let alarm = kind.is_alarm();
        let summary = match &kind {
            VerdictKind::Dead(h) => format!("host {h} is dead"),
            VerdictKind::LinkFault(a, b) => format!("link between {a} and {b} is faulty"),
            VerdictKind::ReporterIsolated(a) => format!("host {a} is isolated"),
            VerdictKind::SwitchDown(sw, h) => format!("switch {sw} is down ({} hosts)", h.len()),
            VerdictKind::RouterDown(r, sws, h) => format!(
                "router {r} is down ({} switches, {} hosts)",
                sws.len(),
                h.len()
            ),
            VerdictKind::FalseAlarm(h) => format!("false alarm about host {h}"),
            VerdictKind::Recovered(h) => format!("host {h} recovered"),
            VerdictKind::Left(h) => format!("host {h} left"),
        };
        let evidence = serde_json::to_value(&evidence).unwrap_or(serde_json::Value::Null);
        let row = FailureRow {
            id,
            kind: name.to_string(),
            subject,
            hosts: hosts.clone(),
            state: if alarm { "open" } else { "closed" }.to_string(),
            at_us: at,
            closed_us: if alarm { None } else { Some(at) },
            summary: summary.clone(),
            evidence: evidence.clone(),
        };
        if let Some(w) = json_write(FAILURES, id_key(id), &row) {
            fx.writes.push(w);
        }
        let open_row = alarm.then_some(row);
        self.event(
            &format!("verdict.{name}"),
            summary,
            serde_json::json!({"failure": id, "hosts": hosts, "evidence": evidence}),
            fx,
        );
        match kind {
            VerdictKind::Dead(h) => {
                if let Some(row) = open_row {
                    self.open_failures.insert(id, row);
                }
                self.set_status(h.0, "dead", at, fx);
                // Heal the ring around it: its neighbours watch each other.
                self.replan(s, fx);
            }
            VerdictKind::Left(h) => {
                self.set_status(h.0, "left", at, fx);
                self.replan(s, fx);
            }
            VerdictKind::Recovered(h) => {
                self.set_status(h.0, "up", at, fx);
                self.close_failures_of(h.0, at, fx);
            }
            _ => {
                if let Some(row) = open_row {
                    self.open_failures.insert(id, row);
                }
            }
        }
    }

    fn new_command(&mut self, to: u64, addr: SocketAddr, body: CommandBody) -> Outbound {
        let id = self.next_command_id;
        self.next_command_id += 1;
        Outbound {
            to: HostId(to),
            addr,
            command: Command { id, body },
        }
    }

    fn event(&mut self, kind: &str, summary: String, data: serde_json::Value, fx: &mut Effects) {
        let id = self.next_event_id;
        self.next_event_id += 1;
        let event = Event {
            id,
            at_us: self.now_us,
            kind: kind.to_string(),
            summary,
            data,
        };
        if let Some(w) = json_write(EVENTS, id_key(id), &event) {
            fx.writes.push(w);
        }
        if id > EVENTS_KEPT {
            fx.writes.push(TableWrite {
                table: EVENTS.to_string(),
                key: id_key(id - EVENTS_KEPT),
                value: None,
            });
        }
        fx.events.push(event);
    }

    fn write_host(&self, host: u64, fx: &mut Effects) {
        let Some(h) = self.hosts.get(&host) else {
            return;
        };
        let watchers = self
            .peers
            .get(&host)
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default();
        let row = HostRow {
            id: host,
            hostname: h.hostname.clone(),
            addr: h.addr,
            switch: h.switch.clone(),
            status: h.status.clone(),
            since_us: h.since_us,
            watchers,
            version: h.version.clone(),
        };
        if let Some(w) = json_write(HOSTS, id_key(host), &row) {
            fx.writes.push(w);
        }
    }

    /// Recomputes the rings of the hosts in them (up and suspected hosts), and commands
    /// only the differences: new neighbours get `SendExpectHb`, lost ones
    /// `StopSendExpectHb`.
    fn replan(&mut self, s: &WorkerSettings, fx: &mut Effects) {
        let members: Vec<(u64, Option<String>)> = self
            .hosts
            .iter()
            .filter(|(_, h)| h.status == "up")
            .map(|(id, h)| (*id, h.switch.clone()))
            .collect();
        let plan: Vec<Ring> = rings::plan(&members);
        let wanted = rings::peer_sets(&plan);
        let mut changed_hosts = BTreeSet::new();
        let all: BTreeSet<u64> = wanted.keys().chain(self.peers.keys()).copied().collect();
        for host in all {
            let before = self.peers.get(&host).cloned().unwrap_or_default();
            let after = wanted.get(&host).cloned().unwrap_or_default();
            if before == after {
                continue;
            }
            changed_hosts.insert(host);
            let Some(addr) = self
                .hosts
                .get(&host)
                .filter(|h| h.status == "up")
                .map(|h| h.addr)
            else {
                // A dead or departed host gets no commands.
                continue;
            };
            let added: Vec<Peer> = after
                .difference(&before)
                .filter_map(|p| {
                    self.hosts.get(p).map(|h| Peer {
                        host: HostId(*p),
                        addr: h.addr,
                    })
                })
                .collect();
            let removed: Vec<HostId> = before.difference(&after).map(|p| HostId(*p)).collect();
            if !removed.is_empty() {
                let c =
                    self.new_command(host, addr, CommandBody::StopSendExpectHb { peers: removed });
                fx.commands.push(c);
            }
            if !added.is_empty() {
                let c = self.new_command(
                    host,
                    addr,
                    CommandBody::SendExpectHb {
                        peers: added,
                        timings: s.timings,
                    },
                );
                fx.commands.push(c);
            }
        }
        self.peers = wanted;
        for host in changed_hosts {
            self.write_host(host, fx);
        }
        // Rings that vanished leave the table.
        let names: BTreeSet<String> = plan.iter().map(|r| r.name.clone()).collect();
        for gone in self.ring_names.difference(&names) {
            fx.writes.push(TableWrite {
                table: RINGS.to_string(),
                key: gone.as_bytes().to_vec(),
                value: None,
            });
        }
        self.ring_names = names;
        for ring in &plan {
            let row = RingRow {
                name: ring.name.clone(),
                kind: ring.kind.to_string(),
                members: ring.members.clone(),
            };
            if let Some(w) = json_write(RINGS, ring.name.as_bytes().to_vec(), &row) {
                fx.writes.push(w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{KeyId, KeyRing, Report, SessionId, Startup};
    use std::sync::Arc;

    fn packet(sender: u64, id: u64, at_us: u64, body: ReportBody) -> QueuedPacket {
        let keys = Arc::new(KeyRing::new(KeyId(1), vec![(KeyId(1), [1; 32])]).unwrap());
        let mut sealer = proto::Sealer::new(keys, HostId(sender), SessionId(1));
        let datagram = sealer.seal(&Body::Report(Report { id, body })).unwrap();
        QueuedPacket {
            sender,
            session: 1,
            seq: id,
            received_at_us: at_us,
            source: "127.0.0.1:9".parse().unwrap(),
            datagram,
        }
    }

    fn startup(host: u64) -> ReportBody {
        ReportBody::Startup(Startup {
            hostname: format!("h{host}"),
            version: "test".into(),
            listen: format!("127.0.0.{host}:7500").parse().unwrap(),
            interfaces: vec![],
            gateway: None,
            lldp: None,
        })
    }

    fn settings() -> WorkerSettings {
        WorkerSettings {
            timings: HbTimings::default(),
            switches: SwitchMap::default(),
            probe_timeout_ms: 1000,
        }
    }

    fn started(n: u64) -> (WorkerState, Effects) {
        let s = settings();
        let mut state = WorkerState::new(fsm::Config::default());
        let mut fx = Effects::default();
        for h in 1..=n {
            state.step_packet(&s, &packet(h, 1, 1_000_000 + h, startup(h)), &mut fx);
        }
        (state, fx)
    }

    fn round_trip(state: &WorkerState) -> WorkerState {
        // The encoding the run loop stores in the `worker` table.
        let bytes = serde_json::to_vec(state).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn joins_form_a_ring_with_two_watchers_each() {
        let (state, fx) = started(5);
        for h in 1..=5 {
            assert_eq!(state.peers[&h].len(), 2, "host {h}: {:?}", state.peers[&h]);
        }
        assert_eq!(state.peers[&1], BTreeSet::from([2, 5]));
        // Every SendExpectHb goes to an up host and names its ring neighbours.
        assert!(fx
            .commands
            .iter()
            .all(|c| state.hosts.contains_key(&c.to.0)));
        assert_eq!(state.ring_names, BTreeSet::from(["flat".to_string()]));
    }

    #[test]
    fn two_watchers_give_one_dead_verdict_and_the_ring_heals() {
        let s = settings();
        let (mut state, _) = started(5);
        let mut fx = Effects::default();
        let dead = || ReportBody::HbDead {
            peer: HostId(3),
            last_seen_us: 0,
        };
        state.step_packet(&s, &packet(2, 2, 10_000_000, dead()), &mut fx);
        state.step_packet(&s, &packet(4, 2, 10_100_000, dead()), &mut fx);
        let verdicts: Vec<_> = fx
            .events
            .iter()
            .filter(|e| e.kind == "verdict.dead")
            .collect();
        assert_eq!(verdicts.len(), 1, "{:?}", fx.events);
        assert_eq!(state.hosts[&3].status, "dead");
        assert!(!state.peers.contains_key(&3) || state.peers[&3].is_empty());
        assert!(state.peers[&2].contains(&4), "ring healed around 3");
        assert_eq!(state.open_failures.len(), 1);
    }

    #[test]
    fn state_survives_a_round_trip_and_replays_identically() {
        let s = settings();
        let (mut state, _) = started(4);
        let mut replica = round_trip(&state);
        let reports = [
            packet(
                2,
                2,
                10_000_000,
                ReportBody::HbDead {
                    peer: HostId(3),
                    last_seen_us: 0,
                },
            ),
            packet(
                4,
                2,
                10_050_000,
                ReportBody::HbDead {
                    peer: HostId(3),
                    last_seen_us: 0,
                },
            ),
            packet(1, 2, 10_060_000, ReportBody::HbShutdown),
        ];
        let mut a = Effects::default();
        let mut b = Effects::default();
        for p in &reports {
            state.step_packet(&s, p, &mut a);
            replica.step_packet(&s, p, &mut b);
        }
        state.step_tick(&s, 20_000_000, &mut a);
        replica.step_tick(&s, 20_000_000, &mut b);
        assert_eq!(a.writes, b.writes);
        assert_eq!(a.commands, b.commands);
        assert_eq!(a.events, b.events);
        assert_eq!(
            serde_json::to_vec(&state).unwrap(),
            serde_json::to_vec(&round_trip(&replica)).unwrap()
        );
    }
}
