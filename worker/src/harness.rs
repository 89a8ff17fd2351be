//! In-memory harness (tests only): the queue's replicated state ([`QueueState`]) and the
//! worker's loop ([`run::turn`]) together, without processes, sockets or Raft. Reports are
//! real sealed nanoprobe envelopes; time is an injected clock; every entry the worker
//! would propose is applied through `QueueState::apply` exactly as Raft applies it, and
//! kept in a log, so a test can replay the log on a fresh replica or elect a new leader
//! that reloads the committed state. With `check_rows` (the default), every committed turn
//! also rebuilds the worker state from the rows, as a new leader would, and asserts it
//! equals the state that wrote them.

use super::outbox::Outbound;
use super::probe_limit::ProbeLimiter;
use super::replay::{Replay, ReplayReport};
use super::run::{self, TurnInput};
use super::state::{WorkerSettings, WorkerState};
use super::tables;
use api::views::{FailureRow, HostRow, RingRow};
use api::Event;
use proto::{Body, HostId, KeyId, KeyRing, Report, ReportBody, Sealer, SessionId};
use queue::state::{DedupLimits, QueueState};
use queue::{Command, QueuedPacket};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The worker as the current leader holds it in memory.
struct Leader {
    state: WorkerState,
    offset: u64,
}

impl Leader {
    /// What a node does when it becomes leader: reload the committed state and offset.
    fn load(queue: &QueueState, config: fsm::Config) -> Leader {
        let state = tables::load_state(queue, config).unwrap();
        let offset = queue
            .consumer_offset(super::CONSUMER)
            .unwrap_or_else(|| queue.first_offset());
        Leader { state, offset }
    }
}

/// A queue replica, a worker leading on it, and simulated nanoprobes.
pub(crate) struct Harness {
    /// The replicated state, as every node would hold it.
    pub queue: QueueState,
    /// Every entry applied to `queue`, in order (the Raft log).
    pub log: Vec<Command>,
    /// The term of the leader that wrote each entry of `log`.
    pub terms: Vec<u64>,
    /// The current leader's term: [`Harness::elect`] starts a new one.
    term: u64,
    /// The leader's probe limiter on the injected clock (`None`: every probe allowed).
    pub limiter: Option<ProbeLimiter>,
    /// Command ids acknowledged since the last turn, for the next one.
    pub settled: Vec<u64>,
    settings: WorkerSettings,
    config: fsm::Config,
    leader: Leader,
    keys: Arc<KeyRing>,
    /// Per host: its sealer and the id of its next report.
    probes: BTreeMap<u64, (Sealer, u64)>,
    /// The injected clock (µs since the Unix epoch).
    pub now_us: u64,
    /// Commands the worker sent after their entry committed.
    pub sent: Vec<Outbound>,
    /// Events handed to the sinks after their entry committed.
    pub published: Vec<Event>,
    /// Rebuild the state from the rows after every committed turn and compare.
    pub check_rows: bool,
}

impl Harness {
    /// An empty queue and a worker with these settings, at time 1 000 s.
    pub fn new(settings: WorkerSettings, config: fsm::Config) -> Harness {
        let queue = QueueState::new(DedupLimits::default());
        let leader = Leader::load(&queue, config);
        Harness {
            queue,
            log: Vec::new(),
            terms: Vec::new(),
            term: 1,
            limiter: None,
            settled: Vec::new(),
            settings,
            config,
            leader,
            keys: Arc::new(KeyRing::new(KeyId(1), vec![(KeyId(1), [7; 32])]).unwrap()),
            probes: BTreeMap::new(),
            now_us: 1_000_000_000,
            sent: Vec::new(),
            published: Vec::new(),
            check_rows: true,
        }
    }

    /// A fresh replica that applied `entries` (a prefix of another harness' log), with a
    /// worker that has just become leader on it.
    pub fn replica(
        settings: WorkerSettings,
        config: fsm::Config,
        entries: &[Command],
        now_us: u64,
    ) -> Harness {
        let mut h = Harness::new(settings, config);
        for e in entries {
            h.commit(e.clone());
        }
        h.now_us = now_us;
        h.elect();
        h
    }

    /// Commits one entry: applies it to the queue state as Raft would, and logs it.
    pub fn commit(&mut self, entry: Command) {
        self.log.push(entry.clone());
        self.terms.push(self.term);
        self.queue.apply(entry);
    }

    /// A new leader (or the same node after a restart): reloads the committed state and,
    /// as the run loop does, hands the events committed after `published_upto` to the
    /// sinks again.
    pub fn elect(&mut self) {
        self.term += 1;
        if let Some(l) = self.limiter.as_mut() {
            // A new leader starts with fresh budgets, as the run loop does.
            *l = ProbeLimiter::new(l.config());
        }
        self.leader = Leader::load(&self.queue, self.config);
        let from = self.leader.state.published_upto + 1;
        for e in tables::events_from(&self.queue, from, usize::MAX) {
            self.leader.state.published_upto = self.leader.state.published_upto.max(e.id);
            self.published.push(e);
        }
    }

    /// Lets `ms` milliseconds pass on the injected clock.
    pub fn advance_ms(&mut self, ms: u64) {
        self.now_us += ms * 1000;
    }

    /// Host `host`'s nanoprobe sends `body`: sealed with the test key, as a
    /// packet-reader would queue it (received now).
    pub fn report(&mut self, host: u64, body: ReportBody) {
        let keys = self.keys.clone();
        let (sealer, next_id) = self
            .probes
            .entry(host)
            .or_insert_with(|| (Sealer::new(keys, HostId(host), SessionId(1)), 1));
        let id = *next_id;
        *next_id += 1;
        let datagram = sealer.seal(&Body::Report(Report { id, body })).unwrap();
        let packet = QueuedPacket {
            sender: host,
            session: 1,
            seq: id,
            received_at_us: self.now_us,
            source: format!("127.0.0.{}:7500", host % 250 + 1).parse().unwrap(),
            report: proto::report_bytes(&datagram).unwrap().to_vec(),
        };
        self.commit(Command::Append {
            batch: vec![packet],
        });
    }

    /// One turn of the worker loop: the queued entries (at most 256), then a tick at the
    /// current time if `tick`; the resulting entry is committed, then its commands are
    /// "sent" and its events published. Returns whether anything was committed.
    pub fn turn(&mut self, tick: bool) -> bool {
        let entries = self.queue.read(self.leader.offset, 256);
        let input = TurnInput {
            entries: &entries,
            tick_at_us: tick.then_some(self.now_us),
            settled: std::mem::take(&mut self.settled),
        };
        let leader = &mut self.leader;
        let now = std::time::Duration::from_micros(self.now_us);
        let limiter = &mut self.limiter;
        let turn = run::turn(
            &mut leader.state,
            &self.settings,
            input,
            &mut leader.offset,
            |investigation| {
                limiter
                    .as_mut()
                    .is_none_or(|l| l.allow(investigation, now).is_ok())
            },
        )
        .unwrap();
        let Some(entry) = turn.entry else {
            return false;
        };
        self.commit(entry);
        if self.check_rows {
            let rebuilt = tables::load_state(&self.queue, self.config).unwrap();
            assert!(
                rebuilt == self.leader.state,
                "the state rebuilt from the rows differs from the state that wrote them: {:?}",
                rebuilt.differences(&self.leader.state)
            );
        }
        self.sent.extend(turn.commands);
        for e in turn.events {
            self.leader.state.published_upto = self.leader.state.published_upto.max(e.id);
            self.published.push(e);
        }
        true
    }

    /// Processes every queued entry (no tick).
    pub fn drain(&mut self) {
        for _ in 0..1000 {
            if self.queue.read(self.leader.offset, 1).is_empty() {
                return;
            }
            self.turn(false);
        }
        panic!("the worker did not drain the queue in 1000 turns");
    }

    /// Lets `ms` pass in ticks of `tick_ms`, processing the queue before each tick.
    pub fn run_for(&mut self, ms: u64, tick_ms: u64) {
        let mut left = ms;
        while left > 0 {
            let step = left.min(tick_ms);
            self.advance_ms(step);
            left -= step;
            self.drain();
            self.turn(true);
        }
    }

    /// Replays the log into a fresh worker ([`crate::replay`]) and asserts that every turn
    /// computes the entry that was committed and that the replay ends with the same tables;
    /// returns what it checked.
    pub fn assert_replays(&self) -> ReplayReport {
        let mut replay = Replay::new(self.settings.clone(), self.config, DedupLimits::default());
        for (i, (entry, term)) in self.log.iter().zip(&self.terms).enumerate() {
            replay.entry(i as u64 + 1, *term, Some(entry)).unwrap();
        }
        let (report, queue) = replay.finish();
        assert!(
            report.mismatches.is_empty(),
            "{} of {} turns computed another entry, first: {:?}",
            report.mismatches.len(),
            report.turns,
            report.mismatches.first()
        );
        assert_eq!(
            queue.digest(),
            self.queue.digest(),
            "the replayed tables differ"
        );
        report
    }

    /// Host `from`'s nanoprobe reports the outcome of a probe it was ordered to run.
    pub fn answer_probe(
        &mut self,
        from: u64,
        probe_id: u64,
        target: proto::ProbeTarget,
        kind: proto::ProbeKind,
        outcome: proto::ProbeOutcome,
    ) {
        let result = proto::ProbeResult {
            probe_id,
            target,
            kind,
            outcome,
            rtt_us: None,
        };
        self.report(from, ReportBody::ProbeResult(result));
    }

    /// The log with each entry's term.
    #[cfg(test)]
    pub fn clone_log(&self) -> Vec<(Command, u64)> {
        self.log
            .iter()
            .cloned()
            .zip(self.terms.iter().copied())
            .collect()
    }

    /// The host rows, as the admin API reads them.
    pub fn hosts(&self) -> Vec<HostRow> {
        tables::hosts(&self.queue)
    }

    /// One host row.
    pub fn host(&self, id: u64) -> HostRow {
        tables::host(&self.queue, id).unwrap()
    }

    /// The ring rows.
    pub fn rings(&self) -> Vec<RingRow> {
        tables::rings(&self.queue)
    }

    /// The failure rows.
    pub fn failures(&self) -> Vec<FailureRow> {
        tables::failures(&self.queue)
    }

    /// The stored events.
    pub fn events(&self) -> Vec<Event> {
        tables::events_from(&self.queue, 0, usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rings::{SwitchConfig, SwitchMap};
    use api::views::{FailureKind, FailureState, HostStatus};
    use fsm::{Evidence, ReportKind};
    use nanoprobe::commands::{self, Applied, ProbeOrder};
    use nanoprobe::heartbeat::{Action, Detection, HeartbeatEngine};
    use proto::{CommandBody, HbTimings, Peer, ProbeOutcome, Startup};
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    use std::net::SocketAddr;
    use std::time::Duration;

    pub(super) const TICK_MS: u64 = 200;

    pub(super) fn settings(switches: SwitchMap) -> WorkerSettings {
        WorkerSettings {
            timings: HbTimings::default(),
            switches,
            probe_timeout_ms: 1000,
            move_hold_down_ms: 0,
        }
    }

    /// A Startup from host `host` (any id: its address is 127.x.y.z with the id's low
    /// three bytes, so hosts up to 255 are 127.0.0.<id>).
    pub(super) fn startup(host: u64) -> ReportBody {
        let [_, _, _, _, _, a, b, c] = host.to_be_bytes();
        ReportBody::Startup(Startup {
            hostname: format!("h{host}"),
            version: "test".into(),
            listen: format!("127.{a}.{b}.{c}:7500").parse().unwrap(),
            interfaces: vec![],
            gateway: None,
            lldp: None,
        })
    }

    fn dead(peer: u64) -> ReportBody {
        ReportBody::HbDead {
            peer: HostId(peer),
            last_seen_us: 0,
        }
    }

    /// `n` hosts started, one tick apart, and the rings formed.
    fn cluster(n: u64, switches: SwitchMap) -> Harness {
        cluster_with(n, settings(switches), fsm::Config::default())
    }

    pub(super) fn cluster_with(n: u64, s: WorkerSettings, f: fsm::Config) -> Harness {
        let mut h = Harness::new(s, f);
        for host in 1..=n {
            h.report(host, startup(host));
            h.run_for(TICK_MS, TICK_MS);
        }
        h.run_for(1000, TICK_MS);
        assert!(h.hosts().iter().all(|r| r.status == HostStatus::Up));
        h
    }

    fn verdicts(h: &Harness, kind: &str) -> usize {
        h.published.iter().filter(|e| e.kind == kind).count()
    }

    /// Reporters named in a failure's evidence, with the report kind.
    fn reporters(row: &FailureRow) -> Vec<(u64, ReportKind)> {
        row.evidence
            .iter()
            .filter_map(|e| match e {
                Evidence::Report { reporter, kind, .. } => Some((reporter.0, *kind)),
                Evidence::Probe { .. } => None,
            })
            .collect()
    }

    #[test]
    fn host_death_seen_by_two_watchers_gives_one_dead_verdict_with_both_as_evidence() {
        let mut h = cluster(5, SwitchMap::default());
        assert_eq!(h.host(3).watchers, vec![2, 4]);
        h.sent.clear();
        // Both neighbours of 3 in the flat ring stop hearing it.
        h.report(2, dead(3));
        h.advance_ms(300);
        h.report(4, dead(3));
        h.run_for(10_000, TICK_MS);

        let failures = h.failures();
        assert_eq!(failures.len(), 1, "{failures:?}");
        let f = &failures[0];
        assert_eq!(
            (f.kind, f.state, f.hosts.clone(), f.subject.as_str()),
            (FailureKind::Dead, FailureState::Open, vec![3], "3")
        );
        let mut who = reporters(f);
        who.sort_by_key(|(r, _)| *r);
        assert_eq!(who, vec![(2, ReportKind::Dead), (4, ReportKind::Dead)]);
        assert_eq!(verdicts(&h, "verdict.dead"), 1);
        assert_eq!(h.host(3).status, HostStatus::Dead);
        // The ring healed around it: 2 and 4 now watch each other, and were told so.
        let flat = &h.rings()[0];
        assert_eq!(flat.members, vec![1, 2, 4, 5]);
        assert_eq!(h.host(2).watchers, vec![1, 4]);
        assert!(h.sent.iter().any(|c| c.to == HostId(2)
            && matches!(&c.command.body, CommandBody::SendExpectHb { peers, .. }
                if peers.iter().any(|p| p.host == HostId(4)))));
        assert!(
            h.sent.iter().all(|c| c.to != HostId(3)),
            "no command to the dead"
        );
    }

    #[test]
    fn graceful_shutdown_gives_left_and_no_alarm() {
        let mut h = cluster(5, SwitchMap::default());
        h.report(3, ReportBody::HbShutdown);
        h.run_for(TICK_MS, TICK_MS);
        // Its watchers may still report its silence before they get their new peers.
        h.report(2, dead(3));
        h.report(4, dead(3));
        h.run_for(20_000, TICK_MS);

        assert_eq!(h.host(3).status, HostStatus::Left);
        let failures = h.failures();
        assert!(
            failures
                .iter()
                .all(|f| f.state == FailureState::Closed && f.kind == FailureKind::Left),
            "{failures:?}"
        );
        assert_eq!(verdicts(&h, "verdict.left"), 1);
        assert!(
            h.published.iter().all(|e| e.kind != "verdict.dead"),
            "{:?}",
            h.published
        );
        assert_eq!(h.rings()[0].members, vec![1, 2, 4, 5]);
    }

    #[test]
    fn a_new_leader_replaying_the_same_entries_writes_identical_rows() {
        let mut a = cluster(5, SwitchMap::default());
        // The leader crashes right after these reports were queued, before it processed
        // them: the next leader starts from the state committed so far.
        let committed = a.log.len();
        let resumed_at = a.now_us;
        a.report(2, dead(3));
        a.report(4, dead(3));
        a.report(1, ReportBody::HbShutdown);
        let queued: Vec<Command> = a.log[committed..].to_vec();
        let sent_before = a.sent.len();
        a.run_for(10_000, TICK_MS);

        let mut b = Harness::replica(
            a.settings.clone(),
            fsm::Config::default(),
            &a.log[..committed],
            resumed_at,
        );
        for e in queued {
            b.commit(e);
        }
        b.run_for(10_000, TICK_MS);

        for table in [
            tables::HOSTS,
            tables::RINGS,
            tables::RING_MEMBERS,
            tables::FAILURES,
            tables::EVENTS,
            tables::COMMANDS,
            tables::WORKER,
            tables::WORKER_HOSTS,
            tables::WORKER_FSM,
        ] {
            assert_eq!(a.queue.table(table), b.queue.table(table), "table {table}");
        }
        assert_eq!(a.sent[sent_before..], b.sent[..]);
        assert_eq!(a.events(), b.events());
        assert_eq!(verdicts(&b, "verdict.dead"), 1);
        // And a follower that applies the whole log holds the same rows.
        let follower =
            Harness::replica(a.settings.clone(), fsm::Config::default(), &a.log, a.now_us);
        assert_eq!(follower.queue, a.queue);
    }

    #[test]
    fn a_declared_switch_going_down_gives_one_switch_down_verdict() {
        let switch = |name: &str, hosts: Vec<u64>, last: u8| SwitchConfig {
            name: name.into(),
            address: Some(format!("10.0.{last}.254").parse().unwrap()),
            subnets: vec![],
            hosts,
            lldp_chassis: None,
            router: None,
        };
        let map = SwitchMap::new(
            vec![
                switch("sw1", vec![1, 2, 3], 1),
                switch("sw2", vec![4, 5, 6], 2),
            ],
            vec![],
        )
        .unwrap();
        let mut h = cluster(6, map);
        let names: Vec<String> = h.rings().iter().map(|r| r.name.clone()).collect();
        assert_eq!(names, ["switch:sw1", "switch:sw2", "top"]);
        let top = h.rings().into_iter().find(|r| r.name == "top").unwrap();
        assert_eq!(top.members, vec![1, 2, 4, 5]);
        h.sent.clear();
        // sw1 dies: only its representatives' top-ring neighbours on sw2 can tell.
        h.report(4, dead(2));
        h.report(5, dead(1));
        let mut answered = 0;
        for _ in 0..100 {
            h.run_for(TICK_MS, TICK_MS);
            // Every switch probe the worker asks for finds sw1 unreachable.
            let probes: Vec<(u64, u64, proto::ProbeTarget, proto::ProbeKind)> = h.sent[answered..]
                .iter()
                .filter_map(|c| match &c.command.body {
                    CommandBody::DoProbe {
                        probe_id,
                        targets,
                        kind,
                        ..
                    } => Some((c.to.0, *probe_id, targets[0].clone(), *kind)),
                    _ => None,
                })
                .collect();
            answered = h.sent.len();
            for (from, probe_id, target, kind) in probes {
                assert!(target.host.is_none(), "a host probe: {target:?}");
                assert!([4, 5, 6].contains(&from), "probed from sw1's side: {from}");
                h.answer_probe(from, probe_id, target, kind, ProbeOutcome::Unreachable);
            }
            if verdicts(&h, "verdict.switch_down") > 0 {
                break;
            }
        }
        h.run_for(10_000, TICK_MS);
        let failures = h.failures();
        assert_eq!(failures.len(), 1, "{failures:?}");
        let f = &failures[0];
        assert_eq!(
            (f.kind, f.state, f.subject.as_str()),
            (FailureKind::SwitchDown, FailureState::Open, "sw1")
        );
        assert!(f.hosts.contains(&1) && f.hosts.contains(&2), "{f:?}");
        assert!(f.evidence.iter().any(|e| matches!(
            e,
            Evidence::Probe {
                reachable: Some(false),
                ..
            }
        )));
        assert_eq!(verdicts(&h, "verdict.switch_down"), 1);
        assert_eq!(verdicts(&h, "verdict.dead"), 0, "no per-host alarms");
    }

    /// `count` declared switches of `per` consecutive hosts each (sw1 = 1..=per, ...),
    /// with management addresses and no routers.
    fn declared_switches(count: u64, per: u64) -> SwitchMap {
        let switches = (0..count)
            .map(|k| SwitchConfig {
                name: format!("sw{}", k + 1),
                address: Some(format!("10.0.{}.254", k + 1).parse().unwrap()),
                subnets: vec![],
                hosts: (k * per + 1..=k * per + per).collect(),
                lldp_chassis: None,
                router: None,
            })
            .collect();
        SwitchMap::new(switches, vec![]).unwrap()
    }

    /// Every host of `down` has a `dead` verdict, no other host does, and there is no
    /// other kind of verdict.
    fn assert_only_the_block_is_dead(h: &Harness, down: &BTreeSet<u64>) {
        let failures = h.failures();
        let dead: BTreeSet<u64> = failures
            .iter()
            .filter(|f| f.kind == FailureKind::Dead)
            .flat_map(|f| f.hosts.iter().copied())
            .collect();
        assert_eq!(&dead, down, "every host of the block, and no live host");
        assert!(
            failures.iter().all(|f| f.kind == FailureKind::Dead),
            "no other verdict: {failures:?}"
        );
    }

    /// The nanoprobes of the harness's hosts in simulated time: the real heartbeat engine
    /// of every live host (`nanoprobe::heartbeat`), fed the commands the worker sends
    /// through `nanoprobe::commands::apply`, the one place the daemon and the fleet
    /// simulator apply them too. Hosts in `down` are dead: they neither send nor answer.
    /// Only the network and the probes' answers are simulated.
    struct Nanoprobes {
        epoch: std::time::Instant,
        start_us: u64,
        engines: BTreeMap<u64, HeartbeatEngine>,
        host_at: HashMap<SocketAddr, u64>,
        addr_of: HashMap<u64, SocketAddr>,
    }

    impl Nanoprobes {
        /// Every live host's engine, expecting the peers the worker last commanded (the
        /// rings as they stood before `down` died), all heard just now.
        fn start(h: &Harness, down: &BTreeSet<u64>) -> Nanoprobes {
            let addr_of: HashMap<u64, SocketAddr> =
                h.hosts().iter().map(|r| (r.id, r.addr)).collect();
            let host_at = addr_of.iter().map(|(id, a)| (*a, *id)).collect();
            let epoch = std::time::Instant::now();
            let mut engines = BTreeMap::new();
            for (host, peers) in &h.leader.state.peers {
                if down.contains(host) {
                    continue;
                }
                let mut engine =
                    HeartbeatEngine::new(HbTimings::default(), Duration::from_secs(60))
                        .with_detection(Detection::default(), *host);
                let peers: Vec<Peer> = peers
                    .iter()
                    .map(|p| Peer {
                        host: HostId(*p),
                        addr: addr_of[p],
                    })
                    .collect();
                engine.send_expect(&peers, HbTimings::default(), epoch);
                engines.insert(*host, engine);
            }
            Nanoprobes {
                epoch,
                start_us: h.now_us,
                engines,
                host_at,
                addr_of,
            }
        }

        fn instant(&self, now_us: u64) -> std::time::Instant {
            self.epoch + Duration::from_micros(now_us - self.start_us)
        }

        /// Applies a command to its host's engine; a probe order comes back to be answered.
        fn command(&mut self, to: u64, body: CommandBody, now_us: u64) -> Option<ProbeOrder> {
            let now = self.instant(now_us);
            let engine = self.engines.get_mut(&to)?;
            match commands::apply(engine, body, now) {
                Applied::Probe(order) => Some(order),
                Applied::Done | Applied::BadTimings { .. } => None,
            }
        }

        /// Runs every engine timer due by `until_us`, delivering heartbeats and echoes
        /// between live hosts at once; returns the reports the engines sent, with the
        /// simulated time each was sent at.
        fn run_until(&mut self, until_us: u64) -> Vec<(u64, u64, ReportBody)> {
            let until = self.instant(until_us);
            let mut reports = Vec::new();
            loop {
                let next = self
                    .engines
                    .iter()
                    .filter_map(|(host, e)| Some((e.next_deadline()?, *host)))
                    .min();
                let Some((at, host)) = next.filter(|(at, _)| *at <= until) else {
                    return reports;
                };
                let at_us = self.start_us + at.duration_since(self.epoch).as_micros() as u64;
                let actions = self
                    .engines
                    .get_mut(&host)
                    .map(|e| e.poll(at))
                    .unwrap_or_default();
                let mut queue: Vec<(u64, Action)> =
                    actions.into_iter().map(|a| (host, a)).collect();
                while let Some((from, action)) = queue.pop() {
                    match action {
                        Action::SendHeartbeat { to } => {
                            let Some(to) = self.host_at.get(&to).copied() else {
                                continue;
                            };
                            let from_addr = self.addr_of[&from];
                            if let Some(e) = self.engines.get_mut(&to) {
                                let more =
                                    e.on_heartbeat(HostId(from), from_addr, false, at, at_us);
                                queue.extend(more.into_iter().map(|a| (to, a)));
                            }
                        }
                        Action::SendEcho { peer, nonce, .. } => {
                            if self.engines.contains_key(&peer.0) {
                                if let Some(e) = self.engines.get_mut(&from) {
                                    let more = e.on_echo_reply(peer, nonce, at, at_us);
                                    queue.extend(more.into_iter().map(|a| (from, a)));
                                }
                            }
                        }
                        Action::Report(body) => reports.push((at_us, from, body)),
                        Action::DeadAverted { .. } => {}
                    }
                }
            }
        }
    }

    /// A world for the harness in simulated time: hosts in `down` are dead; the live
    /// ones run the real heartbeat engines ([`Nanoprobes`]), and a probe is answered as the
    /// real nanoprobe would (reachable at once, or a timeout after `timeout_ms`). Runs
    /// until every host in `down` has a dead verdict, or `limit_ms` passed; returns the
    /// simulated time that took (ms from now).
    pub(super) fn run_world(h: &mut Harness, down: &BTreeSet<u64>, limit_ms: u64) -> u64 {
        let mut probes = Nanoprobes::start(h, down);
        let start = h.now_us;
        let mut due: Vec<(u64, u64, ReportBody)> = Vec::new();
        let mut seen = h.sent.len();
        while h.now_us < start + limit_ms * 1000 {
            h.advance_ms(TICK_MS);
            let now = h.now_us;
            due.extend(probes.run_until(now));
            let (ready, later): (Vec<_>, Vec<_>) = due.into_iter().partition(|(t, _, _)| *t <= now);
            due = later;
            for (_, host, body) in ready {
                h.report(host, body);
            }
            h.drain();
            h.turn(true);
            for c in &h.sent[seen..] {
                let Some(order) = probes.command(c.to.0, c.command.body.clone(), now) else {
                    continue;
                };
                for t in order.targets.iter() {
                    let dead_target = t.host.is_some_and(|x| down.contains(&x.0));
                    let (at, outcome) = if dead_target {
                        (
                            now + u64::from(order.timeout_ms) * 1000,
                            ProbeOutcome::Timeout,
                        )
                    } else {
                        (now + 1000, ProbeOutcome::Reachable)
                    };
                    let result = proto::ProbeResult {
                        probe_id: order.probe_id,
                        target: t.clone(),
                        kind: order.kind,
                        outcome,
                        rtt_us: None,
                    };
                    due.push((at, c.to.0, ReportBody::ProbeResult(result)));
                }
            }
            seen = h.sent.len();
            let dead_rows = h
                .hosts()
                .iter()
                .filter(|r| r.status == HostStatus::Dead)
                .count();
            if dead_rows >= down.len() {
                return (h.now_us - start) / 1000;
            }
        }
        limit_ms
    }

    #[test]
    fn a_block_of_whole_switch_rings_is_found_through_the_top_ring() {
        // 8 declared switches of 5 hosts (sw1 = 1-5, ..., sw8 = 36-40), no routers.
        let mut h = cluster(40, declared_switches(8, 5));
        h.sent.clear();
        // Hosts 8-32 die: the end of sw2, all of sw3-sw6, the start of sw7. The four whole
        // switch rings have no live watcher of their own; their representatives are a block
        // of the top ring, watched only from sw2 and sw8.
        let down: BTreeSet<u64> = (8..=32).collect();
        let took_ms = run_world(&mut h, &down, 120_000);
        eprintln!(
            "block of {} over whole switch rings found after {took_ms} ms",
            down.len()
        );
        assert_only_the_block_is_dead(&h, &down);
        // Switch by switch through the top ring would take a deadtime, a switch check and
        // host probes per switch (over 40 s here).
        assert!(took_ms <= 25_000, "block found after {took_ms} ms");
    }

    #[test]
    fn a_block_over_whole_switch_rings_of_forty_is_found_in_three_rounds() {
        // The scale benchmark's shape: 40 hosts per declared switch, a block that ends
        // inside a switch at both ends and takes the 9 whole switches between (sw6 = 201-240:
        // 221-240 die; sw7-sw15 die; sw16 = 601-640: 601-620 die).
        let hps = 40u64;
        let mut s = settings(declared_switches(20, hps));
        s.probe_timeout_ms = 2000;
        let f = fsm::Config {
            probe_timeout_us: 3_500_000,
            ..fsm::Config::default()
        };
        let mut h = cluster_with(20 * hps, s, f);
        h.sent.clear();
        let down: BTreeSet<u64> = (221..=620).collect();
        let took_ms = run_world(&mut h, &down, 120_000);
        // Checks of live hosts: the ends of the sweeps (and of the top-ring sweeps, which
        // reach past the block into live representatives).
        let live_probes = h
            .sent
            .iter()
            .filter_map(|c| match &c.command.body {
                CommandBody::DoProbe { targets, .. } => Some(targets),
                _ => None,
            })
            .flatten()
            .filter(|t| t.host.is_some_and(|x| !down.contains(&x.0)))
            .count();
        eprintln!(
            "block of {} over switch rings of 40 found after {took_ms} ms, {live_probes} probes of live hosts",
            down.len()
        );
        assert_only_the_block_is_dead(&h, &down);
        // First verdicts (deadtime 3 s and the nanoprobes' 0.5 s confirmation, window 2 s,
        // switch check, host probes 2 s: 9.1 s), then one top-ring round and one round per
        // whole switch ring (2 s each). A sweep of 16 per ring, or top-ring sweeps from
        // hosts found by checks (which drain the probe budget on live representatives),
        // need a third round or more.
        assert!(took_ms <= 13_500, "block found after {took_ms} ms");
        // 121 here: top-ring sweeps started by hosts that checks found (they look like
        // representatives once the lower hosts of their ring died) made it 144, and at
        // 10,000 hosts drained the probe limiter so that ~50 hosts were found the slow way.
        assert!(live_probes <= 130, "{live_probes} probes of live hosts");
    }

    #[test]
    fn a_block_of_consecutive_dead_hosts_is_found_in_parallel() {
        let mut h = cluster(120, SwitchMap::default());
        h.sent.clear();
        // 40 consecutive hosts of the flat ring die; only 19 and 60 have live watchers
        // (19 watches 20, 60 watches 59).
        let down: BTreeSet<u64> = (20..=59).collect();
        let took_ms = run_world(&mut h, &down, 120_000);
        assert_only_the_block_is_dead(&h, &down);
        // One host per end every deadtime + confirmation + window + probe (about 7 s) would
        // take 140 s; the sweep needs the first verdicts (deadtime 3 s + confirmation 0.5 s +
        // window 2 s + probe 1 s) and then one round of checks per end (16 hosts, then the
        // rest).
        eprintln!("block of {} found after {took_ms} ms", down.len());
        assert!(took_ms <= 12_000, "block found after {took_ms} ms");
        // The ring healed around the block: 19 and 60 watch each other.
        assert_eq!(h.host(19).watchers, vec![18, 60]);
        // Sweep checks of live hosts (beyond the block's ends) left no verdict, and
        // nothing stays open.
        h.run_for(10_000, TICK_MS);
        assert_eq!(h.failures().len(), down.len());
        assert!(h.leader.state.sweeps.is_empty());
    }
}

#[cfg(test)]
mod rows {
    //! The worker's replicated state as rows: entries the size of the change, nothing
    //! written by an idle tick, and a state rebuilt from the rows that decides the same.
    use super::*;
    use crate::rings::SwitchConfig;
    use crate::rings::SwitchMap;
    use api::views::HostStatus;
    use proptest::prelude::*;
    use proto::{CommandBody, ProbeOutcome};

    use super::tests::{settings, startup, TICK_MS};

    fn dead(peer: u64) -> ReportBody {
        ReportBody::HbDead {
            peer: HostId(peer),
            last_seen_us: 0,
        }
    }

    /// `rebuilt` (from the rows) with the live state's clock and publication mark: ticks
    /// that fire nothing write nothing, so the committed clock may lag the leader's (the
    /// next tick brings a new leader to the same time), and what was handed to the sinks
    /// is recorded with the next entry (a new leader hands it again).
    fn clocked(mut rebuilt: WorkerState, live: &WorkerState) -> WorkerState {
        assert!(rebuilt.now_us <= live.now_us);
        assert!(rebuilt.published_upto <= live.published_upto);
        rebuilt.now_us = live.now_us;
        rebuilt.published_upto = live.published_upto;
        rebuilt
    }

    /// Bytes of the entries committed from `from` on: (entries, table write bytes
    /// (table + key + value), encoded entry bytes (postcard, as the Raft log stores it)).
    fn written(h: &Harness, from: usize) -> (usize, usize, usize) {
        let mut entries = 0;
        let mut writes = 0;
        let mut encoded = 0;
        for e in &h.log[from..] {
            if let Command::Apply { writes: w, .. } = e {
                entries += 1;
                writes += w
                    .iter()
                    .map(|w| w.table.len() + w.key.len() + w.value.as_ref().map_or(0, Vec::len))
                    .sum::<usize>();
                encoded += postcard::to_allocvec(e).unwrap().len();
            }
        }
        (entries, writes, encoded)
    }

    /// `n` hosts start at once; returns the harness once the rings formed and every
    /// command and verdict settled.
    fn formed(n: u64) -> Harness {
        let mut h = Harness::new(settings(SwitchMap::default()), fsm::Config::default());
        h.check_rows = false;
        for host in 1..=n {
            h.report(host, startup(host));
        }
        h.run_for(2_000, TICK_MS);
        h
    }

    /// One host death in a formed flat ring of `n`: what it costs in Raft entries.
    fn one_death(n: u64) -> (usize, usize, usize) {
        let mut h = formed(n);
        assert!(!h.turn(true), "an idle tick after formation wrote an entry");
        let before = h.log.len();
        let victim = n / 2;
        // One watcher reports it (a suspect row), the other one 300 ms later.
        h.report(victim - 1, dead(victim));
        h.run_for(300, TICK_MS);
        h.report(victim + 1, dead(victim));
        h.run_for(10_000, TICK_MS);
        assert_eq!(h.host(victim).status, HostStatus::Dead);
        assert_eq!(h.host(victim - 1).watchers, vec![victim - 2, victim + 1]);
        let cost = written(&h, before);
        // Settled: idle ticks write nothing again.
        let idle = h.log.len();
        for _ in 0..10 {
            h.advance_ms(TICK_MS);
            assert!(!h.turn(true), "an idle tick wrote an entry");
        }
        assert_eq!(h.log.len(), idle);
        // And a new leader rebuilds the same state from the rows.
        let rebuilt = clocked(
            tables::load_state(&h.queue, h.config).unwrap(),
            &h.leader.state,
        );
        assert!(
            rebuilt == h.leader.state,
            "{:?}",
            rebuilt.differences(&h.leader.state)
        );
        cost
    }

    #[test]
    fn one_death_among_2000_hosts_writes_less_than_64_kib_and_idle_ticks_write_nothing() {
        let (entries, writes, encoded) = one_death(2_000);
        println!(
            "2000 hosts, one death: {entries} entries, {writes} bytes of table writes, \
             {encoded} bytes encoded"
        );
        assert!(writes < 64 * 1024, "{writes} bytes of table writes");
        assert!(encoded < 64 * 1024, "{encoded} bytes encoded");
    }

    /// The same at 10,000 hosts (slow in a debug build: run it with
    /// `cargo test --release -p worker one_death_among_10000 -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn one_death_among_10000_hosts() {
        let (entries, writes, encoded) = one_death(10_000);
        println!(
            "10000 hosts, one death: {entries} entries, {writes} bytes of table writes, \
             {encoded} bytes encoded"
        );
        assert!(writes < 64 * 1024, "{writes} bytes of table writes");
    }

    /// What a random step of the world is.
    #[derive(Clone, Debug)]
    enum Op {
        Dead(u64, u64),
        Alive(u64, u64),
        Shutdown(u64),
        Restart(u64),
        /// Answer the `n`th unanswered probe (modulo their number).
        Answer(usize, bool),
        Wait(u64),
        /// A new leader (or the leader restarted): reload from the committed rows.
        Elect,
        /// The nanoprobe acknowledges the `n`th command sent (modulo their number).
        Ack(usize),
    }

    /// The world's state between random steps: probes not answered yet, and how many sent
    /// commands were looked at.
    #[derive(Default)]
    struct World {
        open: Vec<(u64, u64, proto::ProbeTarget, proto::ProbeKind)>,
        answered: usize,
    }

    /// One random step, then the queue drained and a tick.
    fn step(h: &mut Harness, w: &mut World, op: Op) {
        match op {
            Op::Dead(a, b) if a != b => h.report(a, dead(b)),
            Op::Alive(a, b) if a != b => h.report(
                a,
                ReportBody::HbBackAlive {
                    peer: HostId(b),
                    down_for_ms: 1_000,
                },
            ),
            Op::Shutdown(a) => h.report(a, ReportBody::HbShutdown),
            Op::Restart(a) => h.report(a, startup(a)),
            Op::Answer(n, reachable) if !w.open.is_empty() => {
                let (from, probe_id, target, kind) = w.open.remove(n % w.open.len());
                let outcome = if reachable {
                    ProbeOutcome::Reachable
                } else {
                    ProbeOutcome::Unreachable
                };
                h.answer_probe(from, probe_id, target, kind, outcome);
            }
            Op::Wait(ms) => h.advance_ms(ms),
            Op::Elect => h.elect(),
            Op::Ack(n) if !h.sent.is_empty() => {
                let id = h.sent[n % h.sent.len()].command.id;
                h.settled.push(id);
            }
            _ => {}
        }
        h.drain();
        h.turn(true);
        for c in &h.sent[w.answered..] {
            if let CommandBody::DoProbe {
                probe_id,
                targets,
                kind,
                ..
            } = &c.command.body
            {
                w.open.push((c.to.0, *probe_id, targets[0].clone(), *kind));
            }
        }
        w.answered = h.sent.len();
    }

    fn op() -> impl Strategy<Value = Op> {
        let host = 1..=8u64;
        prop_oneof![
            3 => (host.clone(), host.clone()).prop_map(|(a, b)| Op::Dead(a, b)),
            1 => (host.clone(), host.clone()).prop_map(|(a, b)| Op::Alive(a, b)),
            1 => host.clone().prop_map(Op::Shutdown),
            1 => host.prop_map(Op::Restart),
            2 => (0..8usize, any::<bool>()).prop_map(|(n, r)| Op::Answer(n, r)),
            3 => (1..8_000u64).prop_map(Op::Wait),
        ]
    }

    /// [`op`], and leader changes and acknowledgements.
    fn op_with_leaders() -> impl Strategy<Value = Op> {
        prop_oneof![
            10 => op(),
            1 => Just(Op::Elect),
            2 => (0..64usize).prop_map(Op::Ack),
        ]
    }

    /// 7 hosts behind two switches (host 8 never starts), started and settled.
    fn seven_hosts() -> Harness {
        let mut h = Harness::new(settings(two_switches()), fsm::Config::default());
        for host in 1..=7 {
            h.report(host, startup(host));
        }
        h.run_for(1_000, TICK_MS);
        h
    }

    fn two_switches() -> SwitchMap {
        let switch = |name: &str, hosts: Vec<u64>, last: u8| SwitchConfig {
            name: name.into(),
            address: Some(format!("10.0.{last}.254").parse().unwrap()),
            subnets: vec![],
            hosts,
            lldp_chassis: None,
            router: Some("r1".into()),
        };
        SwitchMap::new(
            vec![
                switch("sw1", vec![1, 2, 3, 4], 1),
                switch("sw2", vec![5, 6, 7], 2),
            ],
            vec![crate::rings::RouterConfig {
                name: "r1".into(),
                address: Some("10.0.0.1".parse().unwrap()),
            }],
        )
        .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Random reports, probe answers and waits on 7 hosts behind two switches (host
        /// 8 never started): after every committed turn the state rebuilt from the rows
        /// equals the live one (`check_rows`), and a new leader elected at the end from
        /// the committed rows makes the same decisions as the old one.
        #[test]
        fn a_state_rebuilt_from_rows_equals_the_live_one(ops in proptest::collection::vec(op(), 1..40)) {
            let mut h = seven_hosts();
            let mut w = World::default();
            for op in ops {
                step(&mut h, &mut w, op);
            }
            // A new leader from the committed log, against the old one, for a while.
            let mut b = Harness::replica(h.settings.clone(), fsm::Config::default(), &h.log, h.now_us);
            prop_assert_eq!(&clocked(tables::load_state(&b.queue, b.config).unwrap(), &h.leader.state), &h.leader.state);
            let sent = h.sent.len();
            h.run_for(30_000, TICK_MS);
            b.run_for(30_000, TICK_MS);
            prop_assert_eq!(&h.sent[sent..], &b.sent[..]);
            let differences = b.leader.state.differences(&h.leader.state);
            prop_assert!(differences.is_empty(), "{:?}", differences);
        }

        /// The worker is a pure function of its log: random reports, probe answers,
        /// waits, acknowledgements and leader changes, with a probe limiter tight enough
        /// to refuse probes; replaying the committed log into a fresh worker computes
        /// every worker entry again, byte for byte, and ends with the same tables.
        #[test]
        fn a_replay_of_the_log_computes_every_worker_entry_again(
            ops in proptest::collection::vec(op_with_leaders(), 1..60),
        ) {
            let mut h = seven_hosts();
            h.limiter = Some(ProbeLimiter::new(crate::probe_limit::ProbeLimitConfig {
                per_investigation: 2,
                per_second: 0.5,
                burst: 3,
                budget_window_ms: 10_000,
            }));
            let mut w = World::default();
            for op in ops {
                step(&mut h, &mut w, op);
            }
            h.run_for(10_000, TICK_MS);
            let report = h.assert_replays();
            prop_assert!(report.turns > 0);
            prop_assert_eq!(report.unrecorded, 0);
        }
    }

    /// Hosts that report their interfaces and gateway (as real nanoprobes do, here all
    /// on one subnet behind one gateway): a death, then a second; the replay computes the
    /// same entries.
    #[test]
    fn a_replay_with_learned_topology_computes_the_same_entries() {
        let mut h = Harness::new(settings(SwitchMap::default()), fsm::Config::default());
        for host in 1..=8u64 {
            let ReportBody::Startup(mut s) = startup(host) else {
                unreachable!()
            };
            s.interfaces = vec![proto::InterfaceAddr {
                name: "eth0".into(),
                addr: "192.0.2.2".parse().unwrap(),
                prefix_len: 24,
            }];
            s.gateway = Some("192.0.2.1".parse().unwrap());
            h.report(host, ReportBody::Startup(s));
            h.run_for(TICK_MS, TICK_MS);
        }
        h.run_for(3_000, TICK_MS);
        let mut w = World::default();
        step(&mut h, &mut w, Op::Dead(4, 5));
        step(&mut h, &mut w, Op::Dead(6, 5));
        for _ in 0..40 {
            step(&mut h, &mut w, Op::Answer(0, false));
            step(&mut h, &mut w, Op::Wait(300));
        }
        h.assert_replays();
    }

    /// The replay finds a worker entry that its inputs do not explain.
    #[test]
    fn a_replay_finds_an_entry_its_inputs_do_not_explain() {
        let mut h = seven_hosts();
        step(&mut h, &mut World::default(), Op::Dead(2, 3));
        h.run_for(5_000, TICK_MS);
        h.assert_replays();
        // A leader whose tick time was not what it recorded.
        let mut forged = h.clone_log();
        let Some(Command::ApplyRecorded { input, .. }) = forged
            .iter_mut()
            .rev()
            .find(|(c, _)| matches!(c, Command::ApplyRecorded { offset: None, .. }))
            .map(|(c, _)| c)
        else {
            panic!("no tick entry");
        };
        let mut record: crate::run::TurnRecord = postcard::from_bytes(input).unwrap();
        record.tick_at_us = record.tick_at_us.map(|t| t + 60_000_000);
        *input = postcard::to_allocvec(&record).unwrap();
        let mut replay = Replay::new(h.settings.clone(), h.config, DedupLimits::default());
        for (i, (entry, term)) in forged.iter().enumerate() {
            replay.entry(i as u64 + 1, *term, Some(entry)).unwrap();
        }
        let (report, _) = replay.finish();
        assert!(!report.mismatches.is_empty(), "{report:?}");
    }
}
