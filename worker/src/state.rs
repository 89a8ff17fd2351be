//! The worker's deterministic core: its replicated state and the step that turns queue
//! entries and ticks into state changes and effects.
//!
//! Pure: no I/O, no clock reads (time comes from queue entries and from `Tick`s whose time
//! the caller chooses). A step returns typed [`Change`]s to the rows operators read; the
//! run loop encodes them ([`super::tables`]: table names, keys and encodings live there
//! only), commits them through Raft and only then carries out the effects, so a new
//! leader that reloads the committed state and processes the same entries makes the same
//! decisions, with the same ids.
//!
//! The replicated state itself is written as rows too, only those a step changed
//! ([`WorkerState::flush`]): one [`HostRecord`] per host (what the worker and the fsm know
//! of it, and its peers), one row per fsm group case, outstanding probe and group alarm,
//! ring headers and ring places (a member and the member it follows), and one small
//! [`WorkerMeta`] row of counters. [`WorkerState::from_rows`] rebuilds the state from
//! them, equal to the state that wrote them.

use super::outbox::Outbound;
use super::rings::{self, Ring, SwitchMap};
use super::sweep::{Direction, RingKey, Standing, Sweep};
use super::topology::{self, Learned};
use api::topology::{RouterView, SwitchView, TopologyView};
use api::views::{FailureKind, FailureRow, FailureState, HostRow, HostStatus, RingKind, RingRow};
use fsm::{Action, Evidence, VerdictKind};
use proto::{Command, CommandBody, HbTimings, HostId, Peer, ProbeKind, ReportBody};
use queue::QueuedPacket;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
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
    pub status: HostStatus,
    pub since_us: u64,
}

/// What an event is about. Shown as a dotted name (`host.joined`, `verdict.dead`, ...),
/// the `kind` sinks filter on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A host's nanoprobe started for the first time.
    HostJoined,
    /// A known host's nanoprobe started again.
    HostRestarted,
    /// A nanoprobe sent discovery data.
    HostDiscovery,
    /// An alarm closed.
    FailureClosed,
    /// The fsm reached a verdict.
    Verdict(FailureKind),
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::HostJoined => f.write_str("host.joined"),
            EventKind::HostRestarted => f.write_str("host.restarted"),
            EventKind::HostDiscovery => f.write_str("host.discovery"),
            EventKind::FailureClosed => f.write_str("failure.closed"),
            EventKind::Verdict(kind) => write!(f, "verdict.{kind}"),
        }
    }
}

/// The structured details of an event (the `data` object of a stored event; serialized
/// as a plain object, without a tag).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EventData {
    /// `host.joined`, `host.restarted`.
    HostStarted {
        host: u64,
        hostname: String,
        addr: SocketAddr,
        switch: Option<String>,
    },
    /// `host.discovery`.
    Discovery {
        host: u64,
        kind: String,
        data: String,
    },
    /// `failure.closed`.
    FailureClosed { failure: u64 },
    /// `verdict.*`.
    Verdict {
        failure: u64,
        hosts: Vec<u64>,
        evidence: Vec<Evidence>,
    },
}

/// One event as the core produces it (the edge turns it into a [`api::Event`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerEvent {
    /// Increasing id (stable across leader changes).
    pub id: u64,
    /// Time (µs since the Unix epoch).
    pub at_us: u64,
    /// What it is about.
    pub kind: EventKind,
    /// One line for humans.
    pub summary: String,
    /// Details.
    pub data: EventData,
}

/// One change to the rows operators read, in the order the step made them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A host row was written (hosts are never deleted).
    Host(HostRow),
    /// A ring appeared (or changed kind) (`Some`), or vanished (`None`; its members'
    /// places are removed with [`Change::RingMember`]).
    Ring(String, Option<RingKind>),
    /// A member's place in a ring (`Some`: after that member, or first), or it left the
    /// ring (`None`). One death rewrites two places, whatever the ring's size.
    RingMember {
        /// The ring.
        ring: String,
        /// The member.
        member: u64,
        /// Where it stands.
        slot: Option<RingSlot>,
    },
    /// The worker's record of a host changed.
    Record(u64, Box<HostRecord>),
    /// A row of the fsm's group state was written (`Some`) or is gone (`None`).
    Fsm(fsm::GroupKey, Option<fsm::GroupEntry>),
    /// The counters (written with every entry).
    Meta(WorkerMeta),
    /// A failure row was written (opened, or closed).
    Failure(FailureRow),
    /// An event happened.
    Event(WorkerEvent),
    /// An old event leaves the events table (only the last [`EVENTS_KEPT`] are kept).
    EventExpired(u64),
    /// A command is committed for delivery (added by the run loop once the probe limiter
    /// let it through).
    Command(Outbound),
    /// A command was acknowledged or abandoned (added by the run loop).
    CommandSettled(u64),
    /// A switch as operators see it was written (`Some`) or vanished (`cmactl topology`).
    TopologySwitch(String, Option<SwitchView>),
    /// A router as operators see it was written (`Some`) or vanished.
    TopologyRouter(String, Option<RouterView>),
}

/// Where a member stands in a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RingSlot {
    /// The first member.
    First,
    /// Right after this member.
    After(u64),
}

/// The worker's replicated record of one host: what it knows of the host, the peers it
/// commanded it, and the fsm's record of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// `None` for a host only ever reported on (never started).
    pub info: Option<HostInfo>,
    /// Peers currently commanded (empty: none).
    pub peers: BTreeSet<u64>,
    /// The fsm's part.
    pub fsm: fsm::HostRecord,
    /// What the host told about its surroundings (interfaces, gateway, LLDP neighbours;
    /// docs/topology.md).
    pub learned: Option<topology::Surroundings>,
}

/// The worker's counters (one small row).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerMeta {
    pub next_command_id: u64,
    pub next_event_id: u64,
    pub published_upto: u64,
    pub now_us: u64,
    pub fsm: fsm::EngineCounters,
    /// Block sweeps in progress (a few at most, and only during a block failure).
    pub sweeps: Vec<Sweep>,
    /// Neighbour reports whose move was held down (docs/topology.md).
    #[serde(default)]
    pub moves_held: u64,
}

/// The topology rows as last written: a write cache, not state (two states are equal
/// whatever they last wrote; a rebuilt state starts empty and writes the rows once).
#[derive(Clone, Debug, Default)]
struct WrittenTopology(Option<TopologyView>);

impl PartialEq for WrittenTopology {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Everything the worker must carry across a leader change.
#[derive(Debug, PartialEq)]
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
    /// The rings as written in the rings tables.
    pub rings: BTreeMap<String, RingRow>,
    /// Latest time seen (µs since the Unix epoch): queue entries and ticks.
    pub now_us: u64,
    /// Events up to this id were handed to the sinks.
    pub published_upto: u64,
    /// What the hosts told about their switches and gateways (docs/topology.md; stored
    /// in each host's record).
    pub learned: Learned,
    /// The topology rows as last written (switch and router views; `None` after a
    /// rebuild, so a new leader writes them once).
    written_topology: WrittenTopology,
    /// Hosts whose record changed since the last [`WorkerState::flush`].
    dirty: BTreeSet<u64>,
    /// Block sweeps in progress ([`super::sweep`]; stored in the counters row).
    pub sweeps: Vec<Sweep>,
    /// The sweeps as last written.
    flushed_sweeps: Vec<Sweep>,
    /// Ring membership changed during this turn: replan once at its end (a block of
    /// hundreds of verdicts, or a batch of start-ups, replans once).
    replan_due: bool,
    /// Hosts joined, or their gateways changed, during this turn: the fsm is given the
    /// new switch -> router facts once at its end (an O(hosts) pass; per start-up it made
    /// forming 100,000 hosts quadratic).
    router_facts_due: bool,
    /// Neighbour reports whose move was held down (stored in the counters row).
    pub moves_held: u64,
}

/// Effects of one or several steps, to commit (changes) and then carry out.
#[derive(Debug, Default)]
pub struct Effects {
    /// Row changes, to commit before anything else happens.
    pub changes: Vec<Change>,
    /// Commands to send once committed.
    pub commands: Vec<Outbound>,
    /// Probe requests to pass through the rate limiter before sending: (investigation
    /// key, command).
    pub probes: Vec<(String, Outbound)>,
    /// Queue entries that did not decode as reports (skipped), with the first error.
    pub undecodable: Option<(u64, String)>,
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
    /// A host moved to another switch by its neighbour reports is not moved again within
    /// this, nor put in the flat ring before it has heard no neighbour for this long
    /// (docs/topology.md; 0: no hold-down).
    pub move_hold_down_ms: u64,
}

impl Effects {
    /// The events among the changes, in order.
    pub fn events(&self) -> impl Iterator<Item = &WorkerEvent> {
        self.changes.iter().filter_map(|c| match c {
            Change::Event(e) => Some(e),
            _ => None,
        })
    }
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
            rings: BTreeMap::new(),
            now_us: 0,
            published_upto: 0,
            learned: Learned::default(),
            written_topology: WrittenTopology::default(),
            dirty: BTreeSet::new(),
            sweeps: Vec::new(),
            flushed_sweeps: Vec::new(),
            replan_due: false,
            router_facts_due: false,
            moves_held: 0,
        }
    }

    /// Rebuilds the state from its rows (read back by [`super::tables`]): `meta` (`None`:
    /// nothing was ever written), the host records, the fsm's group rows, the rings and
    /// the open failures. Equal to the state that wrote them.
    pub fn from_rows(
        config: fsm::Config,
        meta: Option<WorkerMeta>,
        records: impl IntoIterator<Item = (u64, HostRecord)>,
        groups: impl IntoIterator<Item = fsm::GroupEntry>,
        rings: impl IntoIterator<Item = RingRow>,
        open_failures: impl IntoIterator<Item = FailureRow>,
    ) -> WorkerState {
        let Some(meta) = meta else {
            return WorkerState::new(config);
        };
        let mut hosts = BTreeMap::new();
        let mut peers = BTreeMap::new();
        let mut fsm_hosts = Vec::new();
        let mut learned = Learned::default();
        for (id, record) in records {
            if let Some(surroundings) = record.learned {
                if surroundings.held_since_us.is_some() {
                    learned.held.insert(id);
                }
                learned.hosts.insert(id, surroundings);
            }
            if let Some(info) = record.info {
                hosts.insert(id, info);
            }
            if !record.peers.is_empty() {
                peers.insert(id, record.peers);
            }
            if !record.fsm.is_empty() {
                fsm_hosts.push((HostId(id), record.fsm));
            }
        }
        let engine = fsm::Engine::from_records(config, meta.fsm, fsm_hosts, groups);
        // The switch → router facts given to the fsm are the fsm's own.
        learned.router_facts = engine
            .topology()
            .switch_routers()
            .map(|(s, r)| (s.0.clone(), r.0.clone()))
            .collect();
        WorkerState {
            hosts,
            peers,
            engine,
            next_command_id: meta.next_command_id,
            next_event_id: meta.next_event_id,
            open_failures: open_failures
                .into_iter()
                .filter(|f| f.state == FailureState::Open)
                .map(|f| (f.id, f))
                .collect(),
            rings: rings.into_iter().map(|r| (r.name.clone(), r)).collect(),
            now_us: meta.now_us,
            published_upto: meta.published_upto,
            learned,
            written_topology: WrittenTopology::default(),
            dirty: BTreeSet::new(),
            flushed_sweeps: meta.sweeps.clone(),
            sweeps: meta.sweeps,
            replan_due: false,
            router_facts_due: false,
            moves_held: meta.moves_held,
        }
    }

    /// The counters row.
    pub fn meta(&self) -> WorkerMeta {
        WorkerMeta {
            next_command_id: self.next_command_id,
            next_event_id: self.next_event_id,
            published_upto: self.published_upto,
            now_us: self.now_us,
            fsm: self.engine.counters(),
            sweeps: self.sweeps.clone(),
            moves_held: self.moves_held,
        }
    }

    /// The record of `host`.
    pub fn record(&self, host: u64) -> HostRecord {
        HostRecord {
            info: self.hosts.get(&host).cloned(),
            peers: self.peers.get(&host).cloned().unwrap_or_default(),
            fsm: self.engine.host_record(HostId(host)),
            learned: self.learned.hosts.get(&host).cloned(),
        }
    }

    /// The fields in which `self` and `other` differ (tests: a readable failure).
    #[cfg(test)]
    pub fn differences(&self, other: &WorkerState) -> Vec<String> {
        let mut out = Vec::new();
        for h in self.hosts.keys().chain(other.hosts.keys()) {
            let (a, b) = (self.record(*h), other.record(*h));
            if a != b {
                out.push(format!("host {h}: {a:?} != {b:?}"));
            }
        }
        if self.engine != other.engine {
            out.push(format!("engine: {:?} != {:?}", self.engine, other.engine));
        }
        if self.meta() != other.meta() {
            out.push(format!("meta: {:?} != {:?}", self.meta(), other.meta()));
        }
        if self.open_failures != other.open_failures {
            out.push(format!(
                "open failures: {:?} != {:?}",
                self.open_failures, other.open_failures
            ));
        }
        if self.rings != other.rings {
            out.push(format!("rings: {:?} != {:?}", self.rings, other.rings));
        }
        if self.peers != other.peers {
            out.push(format!("peers: {:?} != {:?}", self.peers, other.peers));
        }
        if self.learned != other.learned {
            out.push(format!(
                "learned: {:?} != {:?}",
                self.learned, other.learned
            ));
        }
        out
    }

    /// Every row the state is rebuilt from, as if all were written at once (tests).
    #[cfg(test)]
    pub fn all_rows(&self) -> Vec<Change> {
        let ids: BTreeSet<u64> = self
            .hosts
            .keys()
            .chain(self.peers.keys())
            .copied()
            .chain(self.engine.host_ids().into_iter().map(|h| h.0))
            .collect();
        let mut out: Vec<Change> = ids
            .into_iter()
            .map(|h| Change::Record(h, Box::new(self.record(h))))
            .collect();
        out.extend(
            self.engine
                .group_entries()
                .into_iter()
                .map(|g| Change::Fsm(g.key(), Some(g))),
        );
        for ring in self.rings.values() {
            out.push(Change::Ring(ring.name.clone(), Some(ring.kind)));
            out.extend(ring_places(ring, None));
        }
        out.extend(self.open_failures.values().cloned().map(Change::Failure));
        out.push(Change::Meta(self.meta()));
        out
    }

    /// Adds to `fx` the rows of the replicated state this state changed since the last
    /// flush: host records, fsm group rows, and the counters row when anything is written
    /// at all (or when `always` is set, e.g. because the consumer offset moves). Writes
    /// nothing, and encodes nothing, when nothing changed.
    pub fn flush(&mut self, fx: &mut Effects, always: bool) {
        let engine = self.engine.take_changes();
        let mut hosts = std::mem::take(&mut self.dirty);
        hosts.extend(engine.hosts.iter().map(|h| h.0));
        for h in hosts {
            fx.changes.push(Change::Record(h, Box::new(self.record(h))));
        }
        fx.changes.extend(
            engine
                .groups
                .into_iter()
                .map(|(key, entry)| Change::Fsm(key, entry)),
        );
        if always || !fx.changes.is_empty() || self.sweeps != self.flushed_sweeps {
            self.flushed_sweeps = self.sweeps.clone();
            fx.changes.push(Change::Meta(self.meta()));
        }
    }

    fn advance(&mut self, at_us: u64) -> u64 {
        self.now_us = self.now_us.max(at_us);
        self.now_us
    }

    /// Processes one queue entry, as a turn of its own (rings replanned at its end; tests).
    #[cfg(test)]
    pub fn step_packet(&mut self, s: &WorkerSettings, packet: &QueuedPacket, fx: &mut Effects) {
        self.step_packet_in_turn(s, packet, fx);
        self.end_turn(s, fx);
    }

    /// Processes one queue entry of a turn that [`WorkerState::end_turn`] ends: ring
    /// changes (joins, deaths, departures, moves) are planned once per turn, so a batch of
    /// 256 start-ups replans once, not 256 times over every host.
    pub fn step_packet_in_turn(
        &mut self,
        s: &WorkerSettings,
        packet: &QueuedPacket,
        fx: &mut Effects,
    ) {
        self.packet(s, packet, fx);
        self.end_step(s, fx);
    }

    /// Ends a turn: the rings heal and re-form once for every change of the turn.
    pub fn end_turn(&mut self, s: &WorkerSettings, fx: &mut Effects) {
        if std::mem::take(&mut self.router_facts_due) {
            self.feed_router_facts(s, fx);
        }
        if std::mem::take(&mut self.replan_due) {
            self.replan(s, fx);
        }
    }

    fn packet(&mut self, s: &WorkerSettings, packet: &QueuedPacket, fx: &mut Effects) {
        let now = self.advance(packet.received_at_us);
        let report = match proto::decode_report(&packet.report) {
            Ok(report) => report,
            Err(e) => {
                // Verified by a packet-reader before it was queued: undecodable here means
                // a version mismatch (or another producer). Skip it rather than stall the
                // queue; the run loop counts it and warns, rate-limited.
                let (count, _) = fx
                    .undecodable
                    .get_or_insert_with(|| (0, format!("from sender {}: {e}", packet.sender)));
                *count += 1;
                return;
            }
        };
        let sender = packet.sender;
        if !matches!(report.body, ReportBody::Startup(_)) {
            self.follow_source(s, sender, packet.source, fx);
        }
        match report.body {
            ReportBody::Startup(startup) => {
                let mut addr = startup.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(packet.source.ip());
                }
                let kept = self.learned.hosts.remove(&sender).unwrap_or_default();
                self.learned.hosts.insert(
                    sender,
                    topology::Surroundings {
                        interfaces: startup
                            .interfaces
                            .iter()
                            .map(|i| (i.addr, i.prefix_len))
                            .collect(),
                        gateway: startup.gateway,
                        lldpctl: startup.lldp.clone(),
                        // A restarted nanoprobe reports what it hears anew; until then
                        // the host stays where it was heard last.
                        neighbours: kept.neighbours,
                        gateway_mac: kept.gateway_mac,
                        follows_source: startup.listen.ip().is_unspecified(),
                        moved_at_us: kept.moved_at_us,
                        // Placed below from what it says now: no move is pending.
                        held_since_us: None,
                    },
                );
                self.learned.held.remove(&sender);
                let switch = self
                    .learned
                    .placement(&s.switches, sender, addr.ip())
                    .map(|p| p.switch);
                let previous = self.hosts.get(&sender).cloned();
                self.dirty.insert(sender);
                let came_back = previous.as_ref().is_some_and(|h| {
                    matches!(
                        h.status,
                        HostStatus::Dead | HostStatus::Left | HostStatus::AgentDown
                    )
                });
                self.hosts.insert(
                    sender,
                    HostInfo {
                        hostname: startup.hostname.clone(),
                        addr,
                        version: startup.version.clone(),
                        switch: switch.clone(),
                        status: HostStatus::Up,
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
                self.router_facts_due = true;
                if came_back {
                    self.host_back(s, sender, now, fx);
                }
                let kind = if previous.is_none() {
                    EventKind::HostJoined
                } else {
                    EventKind::HostRestarted
                };
                self.event(
                    kind,
                    format!("host {sender} ({}) started at {addr}", startup.hostname),
                    EventData::HostStarted {
                        host: sender,
                        hostname: startup.hostname.clone(),
                        addr,
                        switch,
                    },
                    fx,
                );
                // A restarted nanoprobe lost its peer lists: send them again in full.
                self.peers.remove(&sender);
                self.replan_due = true;
            }
            ReportBody::HbDead { peer, last_seen_us } => {
                if self.is_stale_death(s, peer.0, last_seen_us) {
                    tracing::debug!(
                        reporter = sender,
                        peer = peer.0,
                        last_seen_us,
                        "HbDead about an earlier outage of a host up since then ignored"
                    );
                    return;
                }
                let actions = self.engine.handle(fsm::Event::HbDead {
                    at: now,
                    reporter: HostId(sender),
                    peer,
                });
                self.apply_actions(s, actions, fx);
            }
            ReportBody::HbRefused { peer } => {
                let actions = self.engine.handle(fsm::Event::HbRefused {
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
                self.set_status(sender, HostStatus::Left, now, fx);
                self.replan_due = true;
            }
            ReportBody::HbMartian { from, .. } => {
                // A host we declared dead still sends heartbeats to its old peers: it is
                // back without a restart. Put it back in its rings.
                if self
                    .hosts
                    .get(&from.0)
                    .is_some_and(|h| h.status == HostStatus::Dead)
                {
                    self.host_back(s, from.0, now, fx);
                    self.replan_due = true;
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
                if kind == proto::discovery::LLDP_KIND {
                    self.on_neighbours(s, sender, &data, fx);
                }
                self.event(
                    EventKind::HostDiscovery,
                    format!("discovery {kind} from host {sender}"),
                    EventData::Discovery {
                        host: sender,
                        kind,
                        data,
                    },
                    fx,
                );
            }
        }
    }

    /// A host's LLDP/CDP neighbour report: store it and move the host when its switch
    /// changed (a host moved to another switch changes rings, without any alarm).
    fn on_neighbours(&mut self, s: &WorkerSettings, host: u64, data: &str, fx: &mut Effects) {
        let Some((neighbours, gateway_mac)) = topology::parse_report(data) else {
            tracing::warn!(host, "undecodable LLDP neighbour report ignored");
            return;
        };
        if !self.hosts.contains_key(&host) {
            return;
        }
        let learned = self.learned.hosts.entry(host).or_default();
        let mac_changed = gateway_mac.is_some() && learned.gateway_mac != gateway_mac;
        if learned.neighbours == neighbours && !mac_changed {
            // A report that changes nothing writes nothing.
            return;
        }
        learned.neighbours = neighbours;
        self.dirty.insert(host);
        if mac_changed {
            learned.gateway_mac = gateway_mac;
            // Gateways may now group into one router.
            self.router_facts_due = true;
        }
        if self.place(s, host, fx) {
            return;
        }
        if self.learned.held.contains(&host) {
            // A report that would move the host, held down: counted, applied later.
            self.moves_held += 1;
        }
        if mac_changed {
            // Routers may have merged: operators see it without a replan.
            self.write_topology(s, fx);
        }
    }

    /// Moves `host` to the switch its reports place it on, unless the move is held down
    /// ([`topology::Surroundings::decide_move`]); returns whether it moved.
    fn place(&mut self, s: &WorkerSettings, host: u64, fx: &mut Effects) -> bool {
        let Some(info) = self.hosts.get(&host) else {
            return false;
        };
        let listen = info.addr.ip();
        let before = info.switch.clone();
        let after = self
            .learned
            .placement(&s.switches, host, listen)
            .map(|p| p.switch);
        let Some(learned) = self.learned.hosts.get_mut(&host) else {
            return false;
        };
        let held_before = learned.held_since_us;
        let moved_before = learned.moved_at_us;
        let decision = learned.decide_move(
            before.as_deref(),
            after.as_deref(),
            self.now_us,
            s.move_hold_down_ms.saturating_mul(1000),
        );
        if learned.held_since_us != held_before || learned.moved_at_us != moved_before {
            self.dirty.insert(host);
        }
        match decision {
            topology::MoveDecision::Stay => {
                self.learned.held.remove(&host);
                return false;
            }
            topology::MoveDecision::HoldUntil(until_us) => {
                if self.learned.held.insert(host) {
                    tracing::info!(host, ?before, ?after, until_us, "host move held down");
                }
                return false;
            }
            topology::MoveDecision::Move => {
                self.learned.held.remove(&host);
            }
        }
        tracing::info!(host, ?before, ?after, "host placed on another switch");
        if let Some(h) = self.hosts.get_mut(&host) {
            h.switch = after.clone();
        }
        let actions = self.engine.handle(fsm::Event::HostFact {
            host: HostId(host),
            facts: fsm::HostFacts {
                switch: after.map(fsm::SwitchId),
                hb_interval_us: u64::from(s.timings.interval_ms) * 1000,
            },
        });
        self.apply_actions(s, actions, fx);
        self.router_facts_due = true;
        self.write_host(host, fx);
        self.replan_due = true;
        true
    }

    /// A host that listens on the unspecified address is reached where its reports come
    /// from: when that changes (it was re-plugged into another subnet and got a new
    /// address), its record follows and every host that exchanges heartbeats with it is
    /// told the new address (`SendExpectHb` updates a known peer's address), so its
    /// watchers keep hearing it and no alarm is raised while it moves.
    fn follow_source(
        &mut self,
        s: &WorkerSettings,
        host: u64,
        source: SocketAddr,
        fx: &mut Effects,
    ) {
        if !self
            .learned
            .hosts
            .get(&host)
            .is_some_and(|l| l.follows_source)
        {
            return;
        }
        let Some(info) = self.hosts.get_mut(&host) else {
            return;
        };
        if info.status != HostStatus::Up || info.addr.ip() == source.ip() {
            return;
        }
        let old = info.addr;
        info.addr.set_ip(source.ip());
        let new = info.addr;
        tracing::info!(host, %old, %new, "host reports from a new address");
        self.dirty.insert(host);
        self.write_host(host, fx);
        let peer = Peer {
            host: HostId(host),
            addr: new,
        };
        let others: Vec<(u64, SocketAddr)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.contains(&host))
            .filter_map(|(h, _)| {
                self.hosts
                    .get(h)
                    .filter(|i| i.status == HostStatus::Up)
                    .map(|i| (*h, i.addr))
            })
            .collect();
        for (to, addr) in others {
            let c = self.new_command(
                to,
                addr,
                CommandBody::SendExpectHb {
                    peers: vec![peer],
                    timings: s.timings,
                },
            );
            fx.commands.push(c);
        }
    }

    /// Re-decides the held-down moves whose hold-down may have ended.
    fn place_held(&mut self, s: &WorkerSettings, fx: &mut Effects) {
        if self.learned.held.is_empty() {
            return;
        }
        for host in self.learned.held.clone() {
            self.place(s, host, fx);
        }
    }

    /// Each host's switch, for the topology rules.
    fn host_switches(&self) -> BTreeMap<u64, Option<String>> {
        self.hosts
            .iter()
            .filter(|(_, h)| h.status != HostStatus::Left)
            .map(|(id, h)| (*id, h.switch.clone()))
            .collect()
    }

    /// Gives the fsm the switch -> router facts it does not have yet.
    fn feed_router_facts(&mut self, s: &WorkerSettings, fx: &mut Effects) {
        let hosts = self.host_switches();
        for (switch, router) in self.learned.new_router_facts(&s.switches, &hosts) {
            let actions = self.engine.handle(fsm::Event::SwitchFact {
                switch: fsm::SwitchId(switch),
                router: fsm::RouterId(router),
            });
            self.apply_actions(s, actions, fx);
        }
    }

    /// The topology operators see, from the hosts not departed.
    pub fn topology_view(&self, s: &WorkerSettings) -> TopologyView {
        let placements = self
            .hosts
            .iter()
            .filter(|(_, h)| h.status != HostStatus::Left)
            .map(|(id, h)| (*id, self.learned.placement(&s.switches, *id, h.addr.ip())))
            .collect();
        self.learned.view(&s.switches, &placements)
    }

    /// Lets time pass: fires the fsm's deadlines.
    pub fn step_tick(&mut self, s: &WorkerSettings, now_us: u64, fx: &mut Effects) {
        let now = self.advance(now_us);
        let actions = self.engine.handle(fsm::Event::Tick { now });
        self.apply_actions(s, actions, fx);
        self.place_held(s, fx);
        self.end_step(s, fx);
        self.end_turn(s, fx);
    }

    /// What every step ends with: sweep rounds move on.
    fn end_step(&mut self, s: &WorkerSettings, fx: &mut Effects) {
        self.advance_sweeps(s, fx);
    }

    /// Whether an `HbDead` about `peer` whose reporter last heard it at `last_seen_us`
    /// (reporter's clock; 0: never) is about an outage that ended before `peer` was last
    /// seen up (it recovered, or started again, later than the reporter last heard it,
    /// by more than one heartbeat interval of clock skew). Reports are retransmitted until
    /// acknowledged, so hosts cut off together (a switch down) deliver them once the path
    /// is back, after the hosts they name have recovered: fed to the fsm they would make
    /// dead verdicts about live hosts.
    fn is_stale_death(&self, s: &WorkerSettings, peer: u64, last_seen_us: u64) -> bool {
        let skew_us = u64::from(s.timings.interval_ms) * 1000;
        last_seen_us != 0
            && self.hosts.get(&peer).is_some_and(|h| {
                h.status == HostStatus::Up && last_seen_us.saturating_add(skew_us) < h.since_us
            })
    }

    /// How a sweep sees `host`.
    fn standing(&self, host: u64) -> Standing {
        match self.hosts.get(&host).map(|h| h.status) {
            Some(HostStatus::Dead) => Standing::Dead,
            Some(HostStatus::Up) => match self.engine.host_state(HostId(host)) {
                fsm::HostState::Watching => Standing::Quiet,
                fsm::HostState::Down => Standing::Dead,
                fsm::HostState::Left => Standing::Other,
                _ => Standing::Open,
            },
            _ => Standing::Other,
        }
    }

    /// The members of the ring of `switch` (up hosts behind it, or of unknown topology
    /// for `None`), in ring order.
    fn ring_members(&self, switch: &Option<String>) -> Vec<(RingKey, u64)> {
        self.hosts
            .iter()
            .filter(|(_, h)| h.status == HostStatus::Up && h.switch == *switch)
            .map(|(id, _)| ((switch.clone(), *id), *id))
            .collect()
    }

    /// The members of the top ring (the [`rings::REPRESENTATIVES`] lowest up hosts of
    /// each switch ring), in ring order; empty when there is one ring only.
    fn top_members(&self) -> Vec<(RingKey, u64)> {
        let mut groups: BTreeMap<&Option<String>, Vec<u64>> = BTreeMap::new();
        for (id, h) in &self.hosts {
            if h.status == HostStatus::Up {
                let g = groups.entry(&h.switch).or_default();
                if g.len() < rings::REPRESENTATIVES {
                    g.push(*id);
                }
            }
        }
        if groups.len() < 2 {
            return Vec::new();
        }
        groups
            .into_iter()
            .flat_map(|(sw, ids)| ids.into_iter().map(move |id| ((sw.clone(), id), id)))
            .collect()
    }

    fn key_of(&self, host: u64) -> RingKey {
        (self.hosts.get(&host).and_then(|h| h.switch.clone()), host)
    }

    /// Whether `host` (just declared dead) was one of its switch ring's representatives in
    /// the top ring: fewer than that many up hosts of its switch have a lower id.
    fn was_representative(&self, host: u64) -> bool {
        let switch = self.hosts.get(&host).map(|h| &h.switch);
        self.hosts
            .range(..host)
            .filter(|(_, h)| h.status == HostStatus::Up && Some(&h.switch) == switch)
            .take(rings::REPRESENTATIVES)
            .count()
            < rings::REPRESENTATIVES
    }

    /// `dead` was just declared dead, reported by `reporters`: each ring neighbour (in its
    /// own ring, and in the top ring if it was a representative) that did not report it
    /// may be dead too, so a sweep checks the hosts beyond it.
    fn start_sweeps(
        &mut self,
        s: &WorkerSettings,
        dead: u64,
        reporters: &BTreeSet<u64>,
        fx: &mut Effects,
    ) {
        let Some(switch) = self.hosts.get(&dead).map(|h| h.switch.clone()) else {
            return;
        };
        // The prober: a reporter, or for a death found by a check, the checking sweep's.
        let checked_by = self
            .sweeps
            .iter()
            .find(|w| w.pending.contains(&dead))
            .map(|w| (w.top, w.from));
        let key = self.key_of(dead);
        let own = self.ring_members(&switch);
        // Its own ring said nothing: the whole switch ring may be down, and then only the
        // top ring leads to the next one (a single death, reported by its own ring, starts
        // no top-ring sweep).
        let own_silent = [Direction::Up, Direction::Down].iter().all(|d| {
            super::sweep::round(&own, &key, *d, 1, dead, false, |_| Standing::Quiet)
                .first()
                .is_none_or(|n| !reporters.contains(n))
        });
        let mut rings = Vec::new();
        // Only a death reported from the top ring starts a top-ring sweep: a host found by
        // a sweep's check was not watched there (once the lower hosts of its ring died, it
        // would only look like a representative), and the sweep that found it goes on.
        if own_silent && checked_by.is_none() && self.was_representative(dead) {
            rings.push((true, self.top_members()));
        }
        // A death found by a sweep's own check: that sweep's next round goes on from it.
        if !matches!(checked_by, Some((false, _))) {
            rings.push((false, own));
        }
        for (top, members) in rings {
            for direction in [Direction::Up, Direction::Down] {
                let neighbour =
                    super::sweep::round(&members, &key, direction, 1, dead, false, |_| {
                        Standing::Quiet
                    });
                let Some(&n) = neighbour.first() else {
                    continue;
                };
                if reporters.contains(&n) {
                    continue;
                }
                let from = reporters
                    .iter()
                    .copied()
                    .find(|r| *r != n)
                    .or(checked_by.map(|(_, f)| f))
                    .filter(|f| *f != n);
                let Some(from) = from else {
                    continue;
                };
                // A ring that said nothing about its own member is likely down as a
                // whole: one round covers it.
                let width = if own_silent && !top {
                    super::sweep::MAX_ROUND
                } else {
                    super::sweep::FIRST_ROUND
                };
                let start = super::sweep::Start {
                    switch: &switch,
                    top,
                    members: &members,
                    dead: &key,
                    direction,
                    from,
                    width,
                };
                let started = Sweep::start(start, |h| self.standing(h));
                if let Some((sweep, check)) = started {
                    tracing::info!(
                        dead,
                        from,
                        top,
                        hosts = check.len(),
                        ?direction,
                        "block sweep started"
                    );
                    self.check(s, from, &check, fx);
                    self.sweeps.push(sweep);
                }
            }
        }
    }

    /// Starts the next round of every sweep whose round is over with all its hosts
    /// dead, and drops finished sweeps.
    fn advance_sweeps(&mut self, s: &WorkerSettings, fx: &mut Effects) {
        if self.sweeps.is_empty() {
            return;
        }
        let mut sweeps = std::mem::take(&mut self.sweeps);
        let mut keep = Vec::with_capacity(sweeps.len());
        for mut sweep in sweeps.drain(..) {
            match sweep.settle(|h| self.standing(h)) {
                None => keep.push(sweep),
                Some(false) => {}
                Some(true) => {
                    let members = if sweep.top {
                        self.top_members()
                    } else {
                        self.ring_members(&sweep.switch)
                    };
                    let frontier = self.key_of(sweep.frontier);
                    let check = sweep.next_round(&members, &frontier, |h| self.standing(h));
                    if !check.is_empty() {
                        self.check(s, sweep.from, &check, fx);
                        keep.push(sweep);
                    }
                }
            }
        }
        self.sweeps = keep;
    }

    /// fsm checks of `hosts` probed from `from`.
    fn check(&mut self, s: &WorkerSettings, from: u64, hosts: &[u64], fx: &mut Effects) {
        for &host in hosts {
            let actions = self.engine.handle(fsm::Event::Check {
                at: self.now_us,
                host: HostId(host),
                from: HostId(from),
            });
            self.apply_actions(s, actions, fx);
        }
    }

    /// A dead or departed host is alive again.
    fn host_back(&mut self, s: &WorkerSettings, host: u64, now: u64, fx: &mut Effects) {
        self.set_status(host, HostStatus::Up, now, fx);
        let actions = self.engine.handle(fsm::Event::HbBackAlive {
            at: now,
            reporter: HostId(host),
            peer: HostId(host),
        });
        self.apply_actions(s, actions, fx);
        // A flapping agent's alarm stays open over a return: the fsm closes it once the
        // agent stayed up (row F3).
        if self.engine.host_state(HostId(host)) != fsm::HostState::AgentFlapping {
            self.close_failures_of(host, now, fx);
        }
    }

    fn set_status(&mut self, host: u64, status: HostStatus, now: u64, fx: &mut Effects) {
        if let Some(h) = self.hosts.get_mut(&host) {
            if h.status != status {
                h.status = status;
                h.since_us = now;
                self.dirty.insert(host);
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
            row.state = FailureState::Closed;
            row.closed_us = Some(now);
            fx.changes.push(Change::Failure(row));
            self.event(
                EventKind::FailureClosed,
                format!("failure {id} closed"),
                EventData::FailureClosed { failure: id },
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
            fsm::ProbeTarget::Switch(sw) => {
                match self
                    .learned
                    .switch_addr(&s.switches, &sw.0, &self.host_switches())
                {
                    Some((addr, _)) => (
                        proto::ProbeTarget { host: None, addr },
                        ProbeKind::IcmpEcho,
                        format!("switch:{}", sw.0),
                    ),
                    None => return,
                }
            }
            fsm::ProbeTarget::Router(r) => match Learned::router_addr(&s.switches, &r.0) {
                Some((addr, _)) => (
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
        let name = FailureKind::from(&kind);
        let reporters: BTreeSet<u64> = evidence
            .iter()
            .filter_map(|e| match e {
                Evidence::Report {
                    reporter,
                    kind: fsm::ReportKind::Dead,
                    ..
                } => Some(reporter.0),
                _ => None,
            })
            .collect();
        let (subject, hosts): (String, Vec<u64>) = match &kind {
            VerdictKind::Dead(h)
            | VerdictKind::ReporterIsolated(h)
            | VerdictKind::FalseAlarm(h)
            | VerdictKind::Recovered(h)
            | VerdictKind::Left(h)
            | VerdictKind::AgentDown(h)
            | VerdictKind::AgentFlapping(h) => (h.to_string(), vec![h.0]),
            VerdictKind::LinkFault(a, b) => (format!("{a}-{b}"), vec![a.0, b.0]),
            VerdictKind::SwitchDown(sw, h) => (sw.0.clone(), h.iter().map(|x| x.0).collect()),
            VerdictKind::RouterDown(r, _, h) => (r.0.clone(), h.iter().map(|x| x.0).collect()),
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
            VerdictKind::AgentDown(h) => {
                format!("host {h} is up but its nanoprobe is not running")
            }
            VerdictKind::AgentFlapping(h) => format!("the nanoprobe of host {h} keeps crashing"),
        };
        let row = FailureRow {
            id,
            kind: name,
            subject,
            hosts: hosts.clone(),
            state: if alarm {
                FailureState::Open
            } else {
                FailureState::Closed
            },
            at_us: at,
            closed_us: if alarm { None } else { Some(at) },
            summary: summary.clone(),
            evidence: evidence.clone(),
        };
        fx.changes.push(Change::Failure(row.clone()));
        let open_row = alarm.then_some(row);
        self.event(
            EventKind::Verdict(name),
            summary,
            EventData::Verdict {
                failure: id,
                hosts,
                evidence,
            },
            fx,
        );
        match kind {
            VerdictKind::Dead(h) => {
                if let Some(row) = open_row {
                    self.open_failures.insert(id, row);
                }
                self.set_status(h.0, HostStatus::Dead, at, fx);
                self.start_sweeps(s, h.0, &reporters, fx);
                // Heal the ring around it (at the end of the step): its neighbours watch
                // each other.
                self.replan_due = true;
            }
            VerdictKind::Left(h) => {
                self.set_status(h.0, HostStatus::Left, at, fx);
                self.replan_due = true;
            }
            VerdictKind::AgentDown(h) | VerdictKind::AgentFlapping(h) => {
                if let Some(row) = open_row {
                    self.open_failures.insert(id, row);
                }
                // Not monitored while its agent is down: out of its rings, whose
                // neighbours then watch each other; its restart's Startup brings it back.
                self.set_status(h.0, HostStatus::AgentDown, at, fx);
                self.replan_due = true;
            }
            VerdictKind::Recovered(h) => {
                self.set_status(h.0, HostStatus::Up, at, fx);
                // A host down under a switch or router alarm kept its status: it is up
                // again from now all the same (stale reports about the outage are told
                // apart by this time: `is_stale_death`).
                if let Some(info) = self.hosts.get_mut(&h.0) {
                    if info.since_us < at {
                        info.since_us = at;
                        self.dirty.insert(h.0);
                        self.write_host(h.0, fx);
                    }
                }
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

    fn event(&mut self, kind: EventKind, summary: String, data: EventData, fx: &mut Effects) {
        let id = self.next_event_id;
        self.next_event_id += 1;
        fx.changes.push(Change::Event(WorkerEvent {
            id,
            at_us: self.now_us,
            kind,
            summary,
            data,
        }));
        if id > EVENTS_KEPT {
            fx.changes.push(Change::EventExpired(id - EVENTS_KEPT));
        }
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
            status: h.status,
            since_us: h.since_us,
            watchers,
            version: h.version.clone(),
        };
        fx.changes.push(Change::Host(row));
    }

    /// Recomputes the rings of the hosts in them (up and suspected hosts), and commands
    /// only the differences: new neighbours get `SendExpectHb`, lost ones
    /// `StopSendExpectHb`.
    fn replan(&mut self, s: &WorkerSettings, fx: &mut Effects) {
        let members: Vec<(u64, Option<String>)> = self
            .hosts
            .iter()
            .filter(|(_, h)| h.status == HostStatus::Up)
            .map(|(id, h)| (*id, h.switch.clone()))
            .collect();
        let plan: Vec<Ring> = rings::plan(&members);
        // No entry for a host without peers, so the state rebuilt from the host records
        // (where "no peers" is an empty set) is the same.
        let mut wanted = rings::peer_sets(&plan);
        wanted.retain(|_, p| !p.is_empty());
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
                .filter(|h| h.status == HostStatus::Up)
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
            self.dirty.insert(host);
            self.write_host(host, fx);
        }
        // Only what changed in the rings: a vanished ring, a new one, and the places of
        // members that came, went or follow another member now.
        let names: BTreeSet<&str> = plan.iter().map(|r| r.name.as_str()).collect();
        let gone: Vec<String> = self
            .rings
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(old) = self.rings.remove(&name) {
                fx.changes.push(Change::Ring(name.clone(), None));
                fx.changes
                    .extend(old.members.iter().map(|m| Change::RingMember {
                        ring: name.clone(),
                        member: *m,
                        slot: None,
                    }));
            }
        }
        for ring in plan {
            let row = RingRow {
                name: ring.name,
                kind: ring.kind,
                members: ring.members,
            };
            let old = self.rings.get(&row.name);
            if old.map(|o| o.kind) != Some(row.kind) {
                fx.changes
                    .push(Change::Ring(row.name.clone(), Some(row.kind)));
            }
            if old.map(|o| &o.members) != Some(&row.members) {
                fx.changes.extend(ring_places(&row, old));
                self.rings.insert(row.name.clone(), row);
            }
        }
        self.write_topology(s, fx);
    }

    /// Writes the switch and router rows of the topology view that changed since they
    /// were last written (per switch and router, so a join rewrites one small row, and a
    /// death none; hosts of unknown switch are read from the hosts rows).
    fn write_topology(&mut self, s: &WorkerSettings, fx: &mut Effects) {
        let view = self.topology_view(s);
        let before = self.written_topology.0.take().unwrap_or_default();
        let old_switches: BTreeMap<&str, &SwitchView> = before
            .switches
            .iter()
            .map(|v| (v.name.as_str(), v))
            .collect();
        let new_switches: BTreeMap<&str, &SwitchView> =
            view.switches.iter().map(|v| (v.name.as_str(), v)).collect();
        for (name, v) in &new_switches {
            if old_switches.get(name) != Some(v) {
                fx.changes
                    .push(Change::TopologySwitch(name.to_string(), Some((*v).clone())));
            }
        }
        for name in old_switches
            .keys()
            .filter(|n| !new_switches.contains_key(*n))
        {
            fx.changes
                .push(Change::TopologySwitch(name.to_string(), None));
        }
        let old_routers: BTreeMap<&str, &RouterView> = before
            .routers
            .iter()
            .map(|v| (v.name.as_str(), v))
            .collect();
        let new_routers: BTreeMap<&str, &RouterView> =
            view.routers.iter().map(|v| (v.name.as_str(), v)).collect();
        for (name, v) in &new_routers {
            if old_routers.get(name) != Some(v) {
                fx.changes
                    .push(Change::TopologyRouter(name.to_string(), Some((*v).clone())));
            }
        }
        for name in old_routers.keys().filter(|n| !new_routers.contains_key(*n)) {
            fx.changes
                .push(Change::TopologyRouter(name.to_string(), None));
        }
        self.written_topology.0 = Some(view);
    }
}

/// The member places of `ring` that differ from `old` (all of them without `old`), and
/// the removal of members of `old` that left.
fn ring_places(ring: &RingRow, old: Option<&RingRow>) -> Vec<Change> {
    let slot = |members: &[u64], i: usize| match i {
        0 => RingSlot::First,
        _ => RingSlot::After(members[i - 1]),
    };
    let before: BTreeMap<u64, RingSlot> = old
        .map(|o| {
            (0..o.members.len())
                .map(|i| (o.members[i], slot(&o.members, i)))
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut now = BTreeSet::new();
    for (i, m) in ring.members.iter().enumerate() {
        now.insert(*m);
        let s = slot(&ring.members, i);
        if before.get(m) != Some(&s) {
            out.push(Change::RingMember {
                ring: ring.name.clone(),
                member: *m,
                slot: Some(s),
            });
        }
    }
    for m in before.keys().filter(|m| !now.contains(m)) {
        out.push(Change::RingMember {
            ring: ring.name.clone(),
            member: *m,
            slot: None,
        });
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::tables;
    use proto::{Body, KeyId, KeyRing, Report, SessionId, Startup};
    use std::sync::Arc;

    /// `body` from `sender`, sealed with the test key, as a packet-reader queues it.
    pub(crate) fn packet(sender: u64, id: u64, at_us: u64, body: ReportBody) -> QueuedPacket {
        let keys = Arc::new(KeyRing::new(KeyId(1), vec![(KeyId(1), [1; 32])]).unwrap());
        let mut sealer = proto::Sealer::new(keys, HostId(sender), SessionId(1));
        let datagram = sealer.seal(&Body::Report(Report { id, body })).unwrap();
        QueuedPacket {
            sender,
            session: 1,
            seq: id,
            received_at_us: at_us,
            source: "127.0.0.1:9".parse().unwrap(),
            report: proto::report_bytes(&datagram).unwrap().to_vec(),
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
            move_hold_down_ms: 0,
        }
    }

    fn started(n: u64) -> (WorkerState, Effects) {
        let s = settings();
        let mut state = WorkerState::new(fsm::Config::default());
        let mut fx = Effects::default();
        for h in 1..=n {
            state.step_packet(&s, &packet(h, 1, 1_000_000 + h, startup(h)), &mut fx);
        }
        state.flush(&mut fx, false);
        (state, fx)
    }

    fn round_trip(state: &WorkerState) -> WorkerState {
        // Every row, encoded as the run loop stores them, applied as Raft applies them,
        // and read back as a new leader does.
        let queue = tables::tests::queue_with(&state.all_rows());
        tables::load_state(&queue, *state.engine.config()).unwrap()
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
        assert_eq!(
            state.rings.keys().collect::<Vec<_>>(),
            vec![&"flat".to_string()]
        );
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
            .events()
            .filter(|e| e.kind == EventKind::Verdict(FailureKind::Dead))
            .collect();
        assert_eq!(verdicts.len(), 1, "{:?}", fx.changes);
        assert_eq!(verdicts[0].kind.to_string(), "verdict.dead");
        assert_eq!(state.hosts[&3].status, HostStatus::Dead);
        assert!(!state.peers.contains_key(&3) || state.peers[&3].is_empty());
        assert!(state.peers[&2].contains(&4), "ring healed around 3");
        assert_eq!(state.open_failures.len(), 1);
    }

    #[test]
    fn death_reports_about_an_outage_that_ended_are_ignored() {
        let s = settings();
        let (mut state, _) = started(5);
        let mut fx = Effects::default();
        let dead = |last_seen_us| ReportBody::HbDead {
            peer: HostId(3),
            last_seen_us,
        };
        // 3 dies (last heard at 9 s), then is heard again at 20 s: recovered, up since.
        state.step_packet(&s, &packet(2, 2, 10_000_000, dead(9_000_000)), &mut fx);
        state.step_packet(&s, &packet(4, 2, 10_100_000, dead(9_000_000)), &mut fx);
        assert_eq!(state.hosts[&3].status, HostStatus::Dead);
        let back = ReportBody::HbBackAlive {
            peer: HostId(3),
            down_for_ms: 11_000,
        };
        state.step_packet(&s, &packet(2, 3, 20_000_000, back), &mut fx);
        assert_eq!(state.hosts[&3].status, HostStatus::Up);
        let verdicts = |fx: &Effects| {
            fx.events()
                .filter(|e| e.kind == EventKind::Verdict(FailureKind::Dead))
                .count()
        };
        assert_eq!(verdicts(&fx), 1);
        // Copies of reports about that outage, delivered late (the reporters were cut off
        // too): the reporters last heard 3 before it was seen up again.
        state.step_packet(&s, &packet(4, 3, 30_000_000, dead(9_000_000)), &mut fx);
        state.step_packet(&s, &packet(5, 1, 30_100_000, dead(8_500_000)), &mut fx);
        assert_eq!(state.engine.host_state(HostId(3)), fsm::HostState::Watching);
        assert_eq!(verdicts(&fx), 1, "no second dead verdict about a live host");
        // A death after it was seen up (or a peer never heard at all) counts.
        state.step_packet(&s, &packet(2, 4, 31_000_000, dead(25_000_000)), &mut fx);
        state.step_packet(&s, &packet(4, 4, 31_100_000, dead(0)), &mut fx);
        assert_eq!(state.hosts[&3].status, HostStatus::Dead);
        assert_eq!(verdicts(&fx), 2);
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
        state.flush(&mut a, false);
        replica.flush(&mut b, false);
        assert_eq!(a.changes, b.changes);
        assert_eq!(a.commands, b.commands);
        assert_eq!(state, replica);
        assert_eq!(state, round_trip(&replica));
    }

    #[test]
    fn a_state_mid_investigation_survives_its_rows() {
        let s = settings();
        let (mut state, _) = started(6);
        let mut fx = Effects::default();
        // One watcher of 3 reported it: a suspect waiting for corroboration.
        state.step_packet(
            &s,
            &packet(
                2,
                2,
                10_000_000,
                ReportBody::HbDead {
                    peer: HostId(3),
                    last_seen_us: 0,
                },
            ),
            &mut fx,
        );
        state.flush(&mut fx, false);
        assert_eq!(
            state.engine.host_state(HostId(3)),
            fsm::HostState::Suspected
        );
        assert_eq!(state, round_trip(&state));
        // The window runs out: probes are out.
        state.step_tick(&s, 20_000_000, &mut fx);
        state.flush(&mut fx, false);
        assert_eq!(
            state.engine.host_state(HostId(3)),
            fsm::HostState::Investigating
        );
        assert!(!fx.probes.is_empty());
        let mut copy = round_trip(&state);
        assert_eq!(state, copy);
        // Both decide the same from here on.
        let mut a = Effects::default();
        let mut b = Effects::default();
        for at in [21_000_000, 25_000_000, 40_000_000] {
            state.step_tick(&s, at, &mut a);
            copy.step_tick(&s, at, &mut b);
        }
        state.flush(&mut a, false);
        copy.flush(&mut b, false);
        assert_eq!(a.changes, b.changes);
        assert_eq!(a.commands, b.commands);
        assert_eq!(a.probes, b.probes);
        assert_eq!(state, copy);
    }

    #[test]
    fn a_tick_that_fires_nothing_changes_no_row() {
        let s = settings();
        let (mut state, _) = started(5);
        let mut fx = Effects::default();
        state.step_tick(&s, 50_000_000, &mut fx);
        state.flush(&mut fx, false);
        assert!(fx.changes.is_empty(), "{:?}", fx.changes);
    }
}
