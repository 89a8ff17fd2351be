//! The simulation core: every simulated nanoprobe, sans IO.
//!
//! Each simulated host runs the real nanoprobe engines (`nanoprobe::heartbeat`,
//! `nanoprobe::reports`, `nanoprobe::commands`) and the real envelope (`proto::Sealer`,
//! `proto::Verifier`, one of each per host and session, as a real nanoprobe has). What is
//! simulated is the network between hosts: a heartbeat or a confirmation echo one engine
//! asks to send is handed straight to the receiving host's engine when the world says the
//! path is up ([`World::reaches_host`]), and dropped otherwise; a `DoProbe` is answered from
//! the world ([`World::answers`]). Only datagrams to and from the CMA side (reports, ACKs,
//! commands, echo requests from `cmactl probe`) leave the core, as [`Output`]s.
//!
//! Time is injected: every call takes `now` (a monotonic [`Instant`]); wall-clock values on
//! the wire are derived from it and the `(Instant, wall µs)` epoch given at construction.

use crate::world::{Fault, World};
use nanoprobe::commands::{self, Applied, CommandMemory, ProbeOrder};
use nanoprobe::config::ReportsConfig;
use nanoprobe::heartbeat::{Action, Detection, HeartbeatEngine};
use nanoprobe::reports::ReportSender;
use proto::{
    Ack, Body, Command, HbTimings, HostId, InterfaceAddr, KeyRing, ProbeKind, ProbeOutcome,
    ProbeResult, ProbeTarget, ReportBody, Sealer, SessionId, Startup, Verifier,
};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Senders whose replay state one host tracks (the real nanoprobe's bound).
const MAX_SENDERS: usize = 4096;
/// Round-trip time reported for a probe that got an answer (a LAN).
const SIM_RTT_US: u32 = 200;
/// Martian reports per sender at most this often (the nanoprobe default).
const MARTIAN_INTERVAL: Duration = Duration::from_secs(10);
/// Command ids remembered per host (the nanoprobe default).
const COMMAND_MEMORY: usize = 1024;
/// Longest wait for the `HbShutdown` ACK of a stopping host (the nanoprobe default).
const SHUTDOWN_ACK_WAIT: Duration = Duration::from_secs(2);

/// Settings of every simulated nanoprobe.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Packet-readers every host reports to (ranked per host as a nanoprobe does).
    pub readers: Vec<SocketAddr>,
    /// Timings until the CMA sends others.
    pub timings: HbTimings,
    /// Last-chance confirmation before `HbDead`.
    pub detection: Detection,
    /// Report retransmission.
    pub reports: ReportsConfig,
    /// The `version` each host reports in `Startup`.
    pub version: String,
}

/// A datagram to send to the CMA side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The simulated host's address (the source address to send from).
    pub from: SocketAddr,
    /// Where to.
    pub to: SocketAddr,
    /// The sealed datagram.
    pub datagram: Vec<u8>,
}

/// Counters of the simulation (not reset).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Datagrams received from the CMA side for a simulated host.
    pub received: u64,
    /// Received datagrams refused by a host's verifier.
    pub rejected: u64,
    /// Received datagrams dropped because the host is dead or cut off.
    pub dropped_unreachable: u64,
    /// Received datagrams for an address no simulated host has.
    pub dropped_no_host: u64,
    /// Commands applied (first copy of an id).
    pub commands_applied: u64,
    /// Duplicate command copies (ACKed, not applied).
    pub command_duplicates: u64,
    /// Report datagrams sent (first sends and retransmissions).
    pub reports_sent: u64,
    /// Report retransmissions.
    pub reports_retried: u64,
    /// Reports that could not leave a cut-off host (still retransmitted later).
    pub reports_blocked: u64,
    /// Reports dropped by a host's bounded queue.
    pub reports_dropped: u64,
    /// ACKs of reports received.
    pub report_acks: u64,
    /// Heartbeats delivered inside the simulation.
    pub heartbeats_delivered: u64,
    /// Heartbeats lost (sender or receiver dead, path down).
    pub heartbeats_lost: u64,
    /// `HbLate` reports raised.
    pub hb_late: u64,
    /// `HbDead` reports raised.
    pub hb_dead: u64,
    /// `HbBackAlive` reports raised.
    pub hb_back_alive: u64,
    /// `HbMartian` reports raised.
    pub hb_martian: u64,
    /// `HbShutdown` reports raised.
    pub hb_shutdown: u64,
    /// Probe results reported.
    pub probe_results: u64,
    /// Silent peers that answered the last-chance confirmation.
    pub dead_averted: u64,
    /// Host (re)starts.
    pub starts: u64,
}

/// One simulated nanoprobe (one run of it: a restart replaces the whole struct).
struct SimHost {
    session: SessionId,
    sealer: Sealer,
    verifier: Verifier,
    hb: HeartbeatEngine,
    reports: ReportSender,
    commands: CommandMemory,
    /// The timer the scheduler holds for this host (stale heap entries differ from it).
    scheduled: Option<Instant>,
    /// Stopping gracefully: dies when `HbShutdown` is ACKed or at this time.
    stopping: Option<(Instant, u64)>,
}

/// A probe result due later (a timeout takes the probe's whole timeout).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DueProbe {
    at: Instant,
    seq: u64,
    host: u32,
    session: SessionId,
    result: ProbeResultKey,
}

/// [`ProbeResult`] is not `Ord`; this holds it with a total order on the sequence number.
#[derive(Debug, PartialEq, Eq)]
struct ProbeResultKey(ProbeResult);

impl PartialOrd for ProbeResultKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ProbeResultKey {
    fn cmp(&self, _other: &Self) -> std::cmp::Ordering {
        // Entries are ordered by (at, seq) first, and seq is unique.
        std::cmp::Ordering::Equal
    }
}

/// The whole simulated fleet.
pub struct Sim {
    world: World,
    config: SimConfig,
    keys: Arc<KeyRing>,
    epoch: (Instant, u64),
    /// Index = host index; `None` while the host is dead.
    hosts: Vec<Option<SimHost>>,
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    probes: BinaryHeap<Reverse<DueProbe>>,
    probe_seq: u64,
    stats: Stats,
}

impl Sim {
    /// A fleet whose hosts are all down; call [`Sim::start_all`] to boot them.
    /// `epoch` pairs an instant with the wall clock (µs since the Unix epoch) at it.
    pub fn new(world: World, config: SimConfig, keys: Arc<KeyRing>, epoch: (Instant, u64)) -> Sim {
        let n = world.len() as usize;
        let mut world = world;
        for i in 0..n as u32 {
            world.set_alive(i, false);
        }
        Sim {
            world,
            config,
            keys,
            epoch,
            hosts: (0..n).map(|_| None).collect(),
            timers: BinaryHeap::new(),
            probes: BinaryHeap::new(),
            probe_seq: 0,
            stats: Stats::default(),
        }
    }

    /// The world (read only; faults go through [`Sim::apply_fault`] and friends).
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn wall_us(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_micros() as u64
    }

    /// Session of host `i`, if it runs.
    pub fn session(&self, i: u32) -> Option<SessionId> {
        self.host(i).map(|h| h.session)
    }

    fn host(&self, i: u32) -> Option<&SimHost> {
        self.hosts.get(i as usize).and_then(Option::as_ref)
    }

    /// Peers on host `i`'s heartbeat lists (0 if it is down).
    pub fn peer_count(&self, i: u32) -> usize {
        self.host(i).map_or(0, |h| h.hb.peer_count())
    }

    /// Status of `peer` on host `i`'s lists.
    pub fn peer_status(&self, i: u32, peer: u64) -> Option<nanoprobe::heartbeat::PeerStatus> {
        self.host(i).and_then(|h| h.hb.status(HostId(peer)))
    }

    /// Reports host `i` has not had ACKed.
    pub fn pending_reports(&self, i: u32) -> usize {
        self.host(i).map_or(0, |h| h.reports.pending_len())
    }

    /// Whether every running host that can reach the CMA has been given peers (when there
    /// is more than one host) and has no report waiting for its ACK: the rings are formed.
    pub fn formed(&self) -> bool {
        let n = self.world.len();
        (0..n).all(|i| {
            let Some(h) = self.host(i) else {
                return true;
            };
            if !self.world.reaches_cma(i) || h.stopping.is_some() {
                return true;
            }
            (n == 1 || h.hb.peer_count() > 0) && h.reports.pending_len() == 0
        })
    }

    /// Starts every host at once (cold start or thundering herd after a power cut).
    pub fn start_all(&mut self, now: Instant, out: &mut Vec<Output>) {
        for i in 0..self.world.len() {
            self.start(i, now, out);
        }
    }

    /// (Re)starts host `i` with a new session: empty lists, `Startup` sent.
    pub fn start(&mut self, i: u32, now: Instant, out: &mut Vec<Output>) {
        if i >= self.world.len() {
            return;
        }
        let previous = self.host(i).map_or(0, |h| h.session.0);
        // Sessions are start times (µs), strictly increasing per host.
        let session = SessionId(self.wall_us(now).max(previous + 1));
        let id = HostId(self.world.host_id(i));
        let addr = self.world.host_addr(i);
        let hb = HeartbeatEngine::new(self.config.timings, MARTIAN_INTERVAL)
            .with_detection(self.config.detection, session.0.wrapping_add(1 << 62));
        let mut host = SimHost {
            session,
            sealer: Sealer::new(self.keys.clone(), id, session),
            verifier: Verifier::new(self.keys.clone(), MAX_SENDERS),
            hb,
            reports: ReportSender::new(id, &self.config.readers, self.config.reports),
            commands: CommandMemory::new(COMMAND_MEMORY),
            scheduled: None,
            stopping: None,
        };
        let s = self.world.switch_of(i);
        let gateway = self.world.router_ip(self.world.router_of(s));
        let startup = Startup {
            hostname: format!("sim{}", id.0),
            version: self.config.version.clone(),
            listen: addr,
            interfaces: vec![InterfaceAddr {
                name: "eth0".into(),
                addr: addr.ip(),
                prefix_len: 24,
            }],
            gateway: Some(IpAddr::V4(gateway)),
            lldp: None,
        };
        let (_, dropped) = host.reports.enqueue(ReportBody::Startup(startup), now);
        if dropped.is_some() {
            self.stats.reports_dropped += 1;
        }
        self.hosts[i as usize] = Some(host);
        self.world.set_alive(i, true);
        self.stats.starts += 1;
        self.poll_host(i, now, out);
    }

    /// Kills host `i` (silent: no goodbye).
    pub fn kill(&mut self, i: u32) {
        if let Some(slot) = self.hosts.get_mut(i as usize) {
            *slot = None;
        }
        self.world.set_alive(i, false);
    }

    /// Stops host `i` gracefully: `leaving` heartbeats to its peers, `HbShutdown`, then
    /// down once the report is ACKed (or after the nanoprobe's bounded wait).
    pub fn stop(&mut self, i: u32, now: Instant, out: &mut Vec<Output>) {
        let Some(h) = self.hosts.get_mut(i as usize).and_then(Option::as_mut) else {
            return;
        };
        if h.stopping.is_some() {
            return;
        }
        let peers = h.hb.peer_addrs();
        let (id, _) = h.reports.enqueue(ReportBody::HbShutdown, now);
        h.stopping = Some((now + SHUTDOWN_ACK_WAIT, id));
        self.stats.hb_shutdown += 1;
        let from = HostId(self.world.host_id(i));
        let from_addr = self.world.host_addr(i);
        let wall = self.wall_us(now);
        for addr in peers {
            if let Some(j) = self.world.host_at(addr) {
                if self.world.reaches_host(i, j) {
                    if let Some(peer) = self.hosts.get_mut(j as usize).and_then(Option::as_mut) {
                        // Leaving: the peer drops us without an alarm (no actions).
                        let _ = peer.hb.on_heartbeat(from, from_addr, true, now, wall);
                        self.reschedule(j);
                    }
                }
            }
        }
        self.poll_host(i, now, out);
    }

    /// Applies a world fault.
    pub fn apply_fault(&mut self, fault: &Fault, now: Instant, out: &mut Vec<Output>) {
        match fault {
            Fault::KillHosts(hosts) => {
                for &i in hosts {
                    self.kill(i);
                }
            }
            Fault::SwitchDown(s) => self.world.set_switch(*s, false),
            Fault::RouterDown(r) => self.world.set_router(*r, false),
            Fault::SwitchUp(s) => self.world.set_switch(*s, true),
            Fault::RouterUp(r) => self.world.set_router(*r, true),
        }
        // Cut-off hosts keep running; their retransmissions resume when the path is back.
        let _ = (now, out);
    }

    fn reschedule(&mut self, i: u32) {
        let Some(h) = self.hosts.get_mut(i as usize).and_then(Option::as_mut) else {
            return;
        };
        let next = [
            h.hb.next_deadline(),
            h.reports.next_deadline(),
            h.stopping.map(|(at, _)| at),
        ]
        .into_iter()
        .flatten()
        .min();
        if next != h.scheduled {
            h.scheduled = next;
            if let Some(at) = next {
                self.timers.push(Reverse((at, i)));
            }
        }
    }

    /// The earliest time [`Sim::poll`] has something to do (may be early, never late).
    pub fn next_deadline(&self) -> Option<Instant> {
        let t = self.timers.peek().map(|Reverse((at, _))| *at);
        let p = self.probes.peek().map(|Reverse(d)| d.at);
        [t, p].into_iter().flatten().min()
    }

    /// Runs every timer due at `now`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Output>) {
        while let Some(Reverse((at, i))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let current = self.host(i).and_then(|h| h.scheduled);
            if current != Some(at) {
                continue; // stale
            }
            if let Some(h) = self.hosts.get_mut(i as usize).and_then(Option::as_mut) {
                h.scheduled = None;
            }
            self.poll_host(i, now, out);
        }
        while self.probes.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Some(Reverse(due)) = self.probes.pop() else {
                break;
            };
            if self.session(due.host) == Some(due.session) {
                self.report(due.host, ReportBody::ProbeResult(due.result.0), now);
                self.poll_host(due.host, now, out);
            }
        }
    }

    /// Fires host `i`'s due timers: heartbeat engine, stop deadline, reports.
    fn poll_host(&mut self, i: u32, now: Instant, out: &mut Vec<Output>) {
        let Some(h) = self.hosts.get_mut(i as usize).and_then(Option::as_mut) else {
            return;
        };
        if let Some((until, id)) = h.stopping {
            if now >= until || !h.reports.is_pending(id) {
                self.kill(i);
                return;
            }
        } else {
            let actions = h.hb.poll(now);
            for a in actions {
                self.act(i, a, now);
            }
        }
        self.send_reports(i, now, out);
        self.reschedule(i);
    }

    fn report(&mut self, i: u32, body: ReportBody, now: Instant) {
        match &body {
            ReportBody::HbLate { .. } => self.stats.hb_late += 1,
            ReportBody::HbDead { .. } => self.stats.hb_dead += 1,
            ReportBody::HbBackAlive { .. } => self.stats.hb_back_alive += 1,
            ReportBody::HbMartian { .. } => self.stats.hb_martian += 1,
            ReportBody::ProbeResult(_) => self.stats.probe_results += 1,
            _ => {}
        }
        if let Some(h) = self.hosts.get_mut(i as usize).and_then(Option::as_mut) {
            if h.reports.enqueue(body, now).1.is_some() {
                self.stats.reports_dropped += 1;
            }
        }
    }

    /// Carries out one heartbeat-engine action of host `i`.
    fn act(&mut self, i: u32, action: Action, now: Instant) {
        match action {
            Action::SendHeartbeat { to } => {
                let Some(j) = self.world.host_at(to) else {
                    self.stats.heartbeats_lost += 1;
                    return;
                };
                if !self.world.reaches_host(i, j) || i == j {
                    self.stats.heartbeats_lost += 1;
                    return;
                }
                let from = HostId(self.world.host_id(i));
                let from_addr = self.world.host_addr(i);
                let wall = self.wall_us(now);
                let Some(peer) = self.hosts.get_mut(j as usize).and_then(Option::as_mut) else {
                    self.stats.heartbeats_lost += 1;
                    return;
                };
                if peer.stopping.is_some() {
                    return;
                }
                self.stats.heartbeats_delivered += 1;
                let actions = peer.hb.on_heartbeat(from, from_addr, false, now, wall);
                for a in actions {
                    self.act(j, a, now);
                }
                self.reschedule(j);
            }
            Action::SendEcho { peer, to, nonce } => {
                // Every nanoprobe answers an echo request, whatever its lists.
                let answered = self.world.host_at(to).is_some_and(|j| {
                    self.world.reaches_host(i, j) && self.world.reaches_host(j, i)
                });
                if answered {
                    let wall = self.wall_us(now);
                    if let Some(h) = self.hosts.get_mut(i as usize).and_then(Option::as_mut) {
                        let actions = h.hb.on_echo_reply(peer, nonce, now, wall);
                        for a in actions {
                            self.act(i, a, now);
                        }
                    }
                }
            }
            Action::Report(body) => self.report(i, body, now),
            Action::DeadAverted { .. } => self.stats.dead_averted += 1,
        }
    }

    fn send_reports(&mut self, i: u32, now: Instant, out: &mut Vec<Output>) {
        let reaches = self.world.reaches_cma(i);
        let from = self.world.host_addr(i);
        let Some(h) = self.hosts.get_mut(i as usize).and_then(Option::as_mut) else {
            return;
        };
        for o in h.reports.poll(now) {
            self.stats.reports_sent += 1;
            if o.retry {
                self.stats.reports_retried += 1;
            }
            if !reaches {
                self.stats.reports_blocked += 1;
                continue;
            }
            if let Ok(datagram) = h.sealer.seal(&Body::Report(o.report)) {
                out.push(Output {
                    from,
                    to: o.to,
                    datagram,
                });
            }
        }
    }

    /// A datagram from the CMA side arrived at `to` (a simulated host's address).
    pub fn on_datagram(
        &mut self,
        to: SocketAddr,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        self.stats.received += 1;
        let Some(i) = self.world.host_at(to) else {
            self.stats.dropped_no_host += 1;
            return;
        };
        if !self.world.reaches_cma(i) {
            self.stats.dropped_unreachable += 1;
            return;
        }
        let Some(h) = self.hosts.get_mut(i as usize).and_then(Option::as_mut) else {
            self.stats.dropped_unreachable += 1;
            return;
        };
        let verified = match h.verifier.verify(datagram) {
            Ok(v) => v,
            Err(_) => {
                self.stats.rejected += 1;
                return;
            }
        };
        match verified.body {
            Body::Command(cmd) => {
                let ack = Body::Ack(Ack {
                    session: verified.header.session,
                    id: cmd.id,
                });
                if let Ok(datagram) = h.sealer.seal(&ack) {
                    out.push(Output {
                        from: to,
                        to: from,
                        datagram,
                    });
                }
                if h.stopping.is_some() {
                    return;
                }
                if h.commands.first_time(cmd.id) {
                    self.stats.commands_applied += 1;
                    self.apply(i, cmd, now);
                } else {
                    self.stats.command_duplicates += 1;
                }
            }
            Body::Ack(ack) => {
                if ack.session == h.session && h.reports.on_ack(ack.id) {
                    self.stats.report_acks += 1;
                }
            }
            Body::EchoRequest { nonce } => {
                if let Ok(datagram) = h.sealer.seal(&Body::EchoReply { nonce }) {
                    out.push(Output {
                        from: to,
                        to: from,
                        datagram,
                    });
                }
            }
            Body::Heartbeat(_) | Body::Report(_) | Body::EchoReply { .. } => {
                self.stats.rejected += 1;
            }
        }
        self.poll_host(i, now, out);
    }

    /// Applies a command (first copy of its id) to host `i`.
    fn apply(&mut self, i: u32, cmd: Command, now: Instant) {
        let Some(h) = self.hosts.get_mut(i as usize).and_then(Option::as_mut) else {
            return;
        };
        let Applied::Probe(order) = commands::apply(&mut h.hb, cmd.body, now) else {
            return;
        };
        let ProbeOrder {
            probe_id,
            targets,
            kind,
            timeout_ms,
        } = order;
        let session = h.session;
        for target in targets {
            let (outcome, rtt_us) = self.probe_outcome(i, &target, kind);
            let result = ProbeResult {
                probe_id,
                target,
                kind,
                outcome: outcome.clone(),
                rtt_us,
            };
            if outcome == ProbeOutcome::Reachable {
                self.report(i, ReportBody::ProbeResult(result), now);
            } else {
                self.probe_seq += 1;
                self.probes.push(Reverse(DueProbe {
                    at: now + Duration::from_millis(timeout_ms.into()),
                    seq: self.probe_seq,
                    host: i,
                    session,
                    result: ProbeResultKey(result),
                }));
            }
        }
    }

    /// What probing `target` from host `i` finds in the world right now.
    fn probe_outcome(
        &self,
        i: u32,
        target: &ProbeTarget,
        kind: ProbeKind,
    ) -> (ProbeOutcome, Option<u32>) {
        let answered = match kind {
            // A UDP echo is answered by a running nanoprobe at that address and port.
            ProbeKind::UdpEcho { port } => self
                .world
                .host_at(SocketAddr::new(target.addr, port))
                .is_some_and(|j| self.world.reaches_host(i, j) && self.world.reaches_host(j, i)),
            ProbeKind::IcmpEcho | ProbeKind::TcpConnect { .. } => {
                self.world.answers(i, target.addr)
            }
        };
        if answered {
            (ProbeOutcome::Reachable, Some(SIM_RTT_US))
        } else {
            (ProbeOutcome::Timeout, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::{Shape, World};
    use proto::{decode_verified, CommandBody, KeyId, Peer, Report};

    const READER: &str = "127.0.0.9:7300";
    const CMA: u64 = 4_000_000_001;

    struct Rig {
        sim: Sim,
        keys: Arc<KeyRing>,
        cma: Sealer,
        reader: Sealer,
        t0: Instant,
        out: Vec<Output>,
        next_cmd: u64,
        clock: Instant,
    }

    fn rig(hosts: u32, per_switch: u32) -> Rig {
        let keys = Arc::new(KeyRing::generate(KeyId(1)));
        let world = World::new(Shape {
            hosts,
            hosts_per_switch: per_switch,
            switches_per_router: 2,
            first_id: 1,
            port: 7070,
        })
        .unwrap();
        let t0 = Instant::now();
        let config = SimConfig {
            readers: vec![READER.parse().unwrap()],
            timings: HbTimings::default(),
            detection: Detection::default(),
            reports: ReportsConfig::default(),
            version: "sim".into(),
        };
        let mut sim = Sim::new(world, config, keys.clone(), (t0, 1_800_000_000_000_000));
        let mut out = Vec::new();
        sim.start_all(t0, &mut out);
        Rig {
            sim,
            cma: Sealer::new(keys.clone(), HostId(CMA), SessionId(1)),
            reader: Sealer::new(keys.clone(), HostId(900_001), SessionId(1)),
            keys,
            t0,
            out,
            next_cmd: 1,
            clock: t0,
        }
    }

    impl Rig {
        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        /// Every report sent so far (datagrams to the reader), decoded, ACKed by the reader.
        fn drain_reports(&mut self, now: Instant) -> Vec<(u64, Report)> {
            let out = std::mem::take(&mut self.out);
            let mut reports = Vec::new();
            for o in out {
                if o.to != READER.parse::<SocketAddr>().unwrap() {
                    continue;
                }
                let v = decode_verified(&o.datagram).unwrap();
                if let Body::Report(r) = v.body {
                    let ack = self
                        .reader
                        .seal(&Body::Ack(Ack {
                            session: v.header.session,
                            id: r.id,
                        }))
                        .unwrap();
                    self.sim
                        .on_datagram(o.from, READER.parse().unwrap(), &ack, now, &mut self.out);
                    reports.push((v.header.sender.0, r));
                }
            }
            reports
        }

        fn command(&mut self, host: u32, id: u64, body: CommandBody, now: Instant) {
            let d = self.cma.seal(&Body::Command(Command { id, body })).unwrap();
            let to = self.sim.world().host_addr(host);
            self.sim.on_datagram(
                to,
                "127.0.0.5:7401".parse().unwrap(),
                &d,
                now,
                &mut self.out,
            );
        }

        /// A ring over host indexes `ring`, commanded at `now`.
        fn ring(&mut self, ring: &[u32], now: Instant) {
            let n = ring.len();
            for k in 0..n {
                let mut peers = Vec::new();
                for j in [ring[(k + n - 1) % n], ring[(k + 1) % n]] {
                    if j != ring[k] && !peers.iter().any(|p: &Peer| p.host.0 == j as u64 + 1) {
                        peers.push(Peer {
                            host: HostId(j as u64 + 1),
                            addr: self.sim.world().host_addr(j),
                        });
                    }
                }
                let id = self.next_cmd;
                self.next_cmd += 1;
                self.command(
                    ring[k],
                    id,
                    CommandBody::SendExpectHb {
                        peers,
                        timings: HbTimings::default(),
                    },
                    now,
                );
            }
        }

        /// Runs the simulation in 10 ms steps up to `until_ms`, collecting reports.
        fn run(&mut self, until_ms: u64) -> Vec<(u64, Report, u64)> {
            let mut got = Vec::new();
            let mut t = self.clock;
            let end = self.at(until_ms);
            while t <= end {
                self.sim.poll(t, &mut self.out);
                let ms = t.duration_since(self.t0).as_millis() as u64;
                for (s, r) in self.drain_reports(t) {
                    got.push((s, r, ms));
                }
                t += Duration::from_millis(10);
            }
            self.clock = t;
            got
        }
    }

    fn kinds(reports: &[(u64, Report, u64)]) -> Vec<&'static str> {
        reports.iter().map(|(_, r, _)| r.body.kind()).collect()
    }

    #[test]
    fn startup_describes_the_host_and_is_retransmitted_until_acked() {
        let mut r = rig(3, 10);
        // Not ACKed: the first Startup of host 0 goes out again after 200 ms.
        let first = std::mem::take(&mut r.out);
        assert_eq!(first.len(), 3);
        let v = decode_verified(&first[0].datagram).unwrap();
        let Body::Report(Report {
            id,
            body: ReportBody::Startup(s),
        }) = v.body
        else {
            panic!("not a startup: {v:?}");
        };
        assert_eq!(id, 1);
        assert_eq!(s.listen, r.sim.world().host_addr(0));
        assert_eq!(first[0].from, s.listen);
        assert_eq!(s.gateway, Some("127.99.0.0".parse().unwrap()));
        r.sim.poll(r.at(250), &mut r.out);
        let again: Vec<_> = r.out.iter().filter(|o| o.from == s.listen).collect();
        assert_eq!(again.len(), 1, "retransmitted once");
        let v2 = decode_verified(&again[0].datagram).unwrap();
        assert!(matches!(v2.body, Body::Report(Report { id: 1, .. })));
        assert!(
            v2.header.seq > v.header.seq,
            "re-sealed, new sequence number"
        );
        // ACKed: no more retransmissions.
        r.drain_reports(r.at(250));
        assert_eq!(r.sim.pending_reports(0), 0);
        r.sim.poll(r.at(2000), &mut r.out);
        assert!(r.out.is_empty());
        assert!(r.keys.get(KeyId(1)).is_some());
    }

    #[test]
    fn killed_neighbour_is_reported_dead_after_deadtime_and_confirmation() {
        let mut r = rig(3, 10);
        let t = r.at(0);
        r.drain_reports(t);
        r.ring(&[0, 1, 2], t);
        // Hosts commanded first heard from neighbours not yet commanded: martians.
        let martians = r.drain_reports(t);
        assert!(martians
            .iter()
            .all(|(_, rep)| matches!(rep.body, ReportBody::HbMartian { .. })));
        assert!(r.sim.formed());
        let quiet = r.run(5_000);
        assert!(
            quiet.is_empty(),
            "healthy ring reports nothing: {:?}",
            kinds(&quiet)
        );
        r.sim.kill(1);
        let after = r.run(10_000);
        // Hosts 1 and 3 (ids) each report HbLate then HbDead for host 2.
        let dead: Vec<_> = after
            .iter()
            .filter(|(_, rep, _)| {
                matches!(
                    rep.body,
                    ReportBody::HbDead {
                        peer: HostId(2),
                        ..
                    }
                )
            })
            .collect();
        let reporters: Vec<u64> = dead.iter().map(|(s, _, _)| *s).collect();
        assert_eq!(reporters.len(), 2, "{:?}", kinds(&after));
        assert!(reporters.contains(&1) && reporters.contains(&3));
        for (_, _, ms) in &dead {
            // Last heartbeat at most one interval before the kill at 5 s; dead after
            // deadtime (3 s) + confirmation (0.5 s), never before.
            assert!(
                *ms >= 5_000 + 3_500 - 1_000 && *ms <= 5_000 + 3_500 + 50,
                "at {ms}"
            );
        }
        assert_eq!(
            after
                .iter()
                .filter(|(_, rep, _)| matches!(rep.body, ReportBody::HbLate { .. }))
                .count(),
            2
        );
        // Restart: new session and Startup; once rewired, the survivors report it back alive.
        let t = r.at(10_000);
        r.sim.start(1, t, &mut r.out);
        let back = r.drain_reports(t);
        assert!(matches!(back[0].1.body, ReportBody::Startup(_)));
        r.ring(&[0, 1, 2], t);
        let alive = r.run(12_000);
        assert_eq!(
            alive
                .iter()
                .filter(|(_, rep, _)| matches!(rep.body, ReportBody::HbBackAlive { .. }))
                .count(),
            2,
            "{:?}",
            kinds(&alive)
        );
    }

    #[test]
    fn duplicate_command_ids_are_acked_every_time_and_applied_once() {
        let mut r = rig(3, 10);
        let t = r.at(0);
        r.drain_reports(t);
        let peers = vec![Peer {
            host: HostId(2),
            addr: r.sim.world().host_addr(1),
        }];
        let body = CommandBody::SendExpectHb {
            peers,
            timings: HbTimings::default(),
        };
        r.command(0, 77, body.clone(), t);
        r.command(0, 77, body, t);
        let acks: Vec<_> = r
            .out
            .iter()
            .filter_map(|o| match decode_verified(&o.datagram).unwrap().body {
                Body::Ack(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(acks.len(), 2);
        assert!(acks.iter().all(|a| a.id == 77 && a.session == SessionId(1)));
        assert_eq!(r.sim.stats().commands_applied, 1);
        assert_eq!(r.sim.stats().command_duplicates, 1);
        // A stop with a new id removes the peer; a replayed copy of the old SendExpectHb
        // does not bring it back.
        r.command(
            0,
            78,
            CommandBody::StopSendExpectHb {
                peers: vec![HostId(2)],
            },
            t,
        );
        assert_eq!(r.sim.peer_count(0), 0);
        let body = CommandBody::SendExpectHb {
            peers: vec![Peer {
                host: HostId(2),
                addr: r.sim.world().host_addr(1),
            }],
            timings: HbTimings::default(),
        };
        r.command(0, 77, body, t);
        assert_eq!(r.sim.peer_count(0), 0);
    }

    fn probe(r: &mut Rig, from: u32, target: ProbeTarget, kind: ProbeKind, at_ms: u64) {
        let at = r.at(at_ms);
        let id = r.next_cmd;
        r.next_cmd += 1;
        r.command(
            from,
            id,
            CommandBody::DoProbe {
                probe_id: id,
                targets: vec![target],
                kind,
                timeout_ms: 1000,
            },
            at,
        );
    }

    fn outcomes(reports: &[(u64, Report, u64)]) -> Vec<(ProbeOutcome, u64)> {
        reports
            .iter()
            .filter_map(|(_, rep, ms)| match &rep.body {
                ReportBody::ProbeResult(p) => Some((p.outcome.clone(), *ms)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn do_probe_answers_from_the_world_switches_and_routers_included() {
        // 40 hosts, 10 per switch, 2 switches per router: hosts 0-19 on router 0.
        let mut r = rig(40, 10);
        let t = r.at(0);
        r.drain_reports(t);
        let w = r.sim.world().clone();
        let host5 = ProbeTarget {
            host: Some(HostId(6)),
            addr: w.host_ip(5).into(),
        };
        let udp = ProbeKind::UdpEcho { port: 7070 };
        probe(&mut r, 30, host5.clone(), udp, 0);
        assert_eq!(outcomes(&r.run(100)), vec![(ProbeOutcome::Reachable, 0)]);
        r.sim.kill(5);
        probe(&mut r, 30, host5.clone(), udp, 200);
        // A timeout takes the probe's whole timeout.
        let got = outcomes(&r.run(1_500));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, ProbeOutcome::Timeout);
        assert!(got[0].1 >= 1_200);
        // Switch 0 down: its management address times out from host 30, while router 0
        // still answers; router 0 down: it times out too.
        let sw0 = ProbeTarget {
            host: None,
            addr: w.switch_ip(0).into(),
        };
        let r0 = ProbeTarget {
            host: None,
            addr: w.router_ip(0).into(),
        };
        let mut out = Vec::new();
        let t = r.at(1_500);
        r.sim.apply_fault(&Fault::SwitchDown(0), t, &mut out);
        probe(&mut r, 30, sw0.clone(), ProbeKind::IcmpEcho, 1_500);
        probe(&mut r, 30, r0.clone(), ProbeKind::IcmpEcho, 1_500);
        let got = outcomes(&r.run(3_000));
        assert_eq!(got.len(), 2);
        assert!(got.iter().any(|(o, _)| *o == ProbeOutcome::Reachable));
        assert!(got.iter().any(|(o, _)| *o == ProbeOutcome::Timeout));
        let t = r.at(3_000);
        r.sim.apply_fault(&Fault::RouterDown(0), t, &mut out);
        probe(&mut r, 30, r0, ProbeKind::IcmpEcho, 3_000);
        assert_eq!(outcomes(&r.run(4_500))[0].0, ProbeOutcome::Timeout);
        // A host behind the dead router gets no command at all.
        let before = r.sim.stats().dropped_unreachable;
        probe(&mut r, 1, sw0, ProbeKind::IcmpEcho, 4_500);
        assert_eq!(r.sim.stats().dropped_unreachable, before + 1);
    }

    #[test]
    fn hosts_behind_a_dead_switch_cannot_report() {
        let mut r = rig(20, 10);
        let t = r.at(0);
        r.drain_reports(t);
        r.ring(&[0, 1, 2, 10, 11], t);
        r.run(3_000);
        let mut out = Vec::new();
        let t = r.at(3_000);
        r.sim.apply_fault(&Fault::SwitchDown(0), t, &mut out);
        let got = r.run(10_000);
        // Hosts 0, 1, 2 (behind the switch) notice their neighbours but cannot tell
        // anyone; hosts 10 and 11 (ids 11, 12) report their lost neighbours.
        assert!(got.iter().all(|(s, _, _)| *s == 11 || *s == 12), "{got:?}");
        assert!(got.iter().any(|(s, rep, _)| *s == 11
            && matches!(
                rep.body,
                ReportBody::HbDead {
                    peer: HostId(3),
                    ..
                }
            )));
        assert!(r.sim.stats().reports_blocked > 0);
    }

    #[test]
    fn graceful_stop_sends_shutdown_and_no_alarm() {
        let mut r = rig(3, 10);
        let t = r.at(0);
        r.drain_reports(t);
        r.ring(&[0, 1, 2], t);
        r.run(2_000);
        let t = r.at(2_000);
        r.sim.stop(1, t, &mut r.out);
        let got = r.drain_reports(t);
        assert!(matches!(got[0].1.body, ReportBody::HbShutdown));
        let later = r.run(10_000);
        assert!(later.is_empty(), "{:?}", kinds(&later));
        assert!(!r.sim.world().alive(1));
    }
}
