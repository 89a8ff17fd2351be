//! The heartbeat engine: a pure state machine. It takes commands, received heartbeats and
//! the current time, and returns what to do (send a heartbeat, send a report). It owns no
//! socket and no clock, so every timing rule is unit tested deterministically.
//!
//! All peers share one timer structure (an ordered set of `(deadline, peer, kind)`), not a
//! task per peer: the daemon sleeps until [`HeartbeatEngine::next_deadline`] and then calls
//! [`HeartbeatEngine::poll`].
//!
//! Last-chance confirmation: a peer silent for deadtime is not reported dead at once. It
//! becomes [`PeerStatus::Confirming`]: the engine asks the daemon to send it an
//! authenticated `EchoRequest` ([`Action::SendEcho`]) at once and every
//! [`Detection::confirm_interval`] for [`Detection::confirm`]. A heartbeat or a matching
//! `EchoReply` ([`HeartbeatEngine::on_echo_reply`]) in that window cancels the alarm
//! ([`Action::DeadAverted`], no report); otherwise `HbDead` is reported when the window ends.
//! A zero `confirm` reports `HbDead` at deadtime, without confirmation. The confirmation
//! never lasts more than 3/10 of the ring's deadtime (150 ms with the fast profile).

use proto::{HbTimings, HostId, Peer, ReportBody};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The last-chance confirmation lasts at most this many tenths of the ring's deadtime:
/// with the default 3 s deadtime the configured 500 ms apply; the fast profile's 500 ms
/// deadtime confirms for 150 ms (docs/detection.md).
const CONFIRM_SHARE: u32 = 3;

/// Most senders remembered for martian rate limiting; the memory is cleared when full.
const MARTIAN_MEMORY: usize = 1024;

/// What the daemon must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a heartbeat to this address.
    SendHeartbeat {
        /// The peer's address.
        to: SocketAddr,
    },
    /// Send this report reliably.
    Report(ReportBody),
    /// Send an authenticated `EchoRequest { nonce }` to a peer being confirmed.
    SendEcho {
        /// The peer.
        peer: HostId,
        /// The peer's address.
        to: SocketAddr,
        /// The nonce; only a reply from `peer` echoing it (or a later one) counts.
        nonce: u64,
    },
    /// A peer being confirmed answered (heartbeat or echo reply): no `HbDead` was reported.
    DeadAverted {
        /// The peer.
        peer: HostId,
    },
}

/// Last-chance confirmation settings (the `[detection]` config section).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detection {
    /// How long to confirm a silent peer before reporting it dead; zero disables it.
    pub confirm: Duration,
    /// Time between two echo requests while confirming.
    pub confirm_interval: Duration,
}

impl Default for Detection {
    fn default() -> Self {
        Detection {
            confirm: Duration::from_millis(500),
            confirm_interval: Duration::from_millis(50),
        }
    }
}

/// Whether a peer's heartbeats are arriving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerStatus {
    /// Heard within warntime (or just added).
    Alive,
    /// Silent past warntime; `HbLate` was reported.
    Late,
    /// Silent past deadtime; echo requests are being sent before `HbDead` is reported.
    Confirming,
    /// Silent past deadtime; `HbDead` was reported.
    Dead,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// Time to send the next heartbeat.
    Send,
    /// Time to check the peer's silence against warntime or deadtime, or to end a
    /// confirmation.
    Check,
    /// Time to send the next echo request to a peer being confirmed.
    Echo,
}

/// A running last-chance confirmation.
#[derive(Debug)]
struct Confirmation {
    /// When it ends with `HbDead` unless the peer answers.
    until: Instant,
    /// The next echo request, if another one fits before `until`.
    next_echo: Option<Instant>,
    /// The first nonce sent in this confirmation: older replies do not count.
    first_nonce: u64,
}

#[derive(Debug)]
struct PeerState {
    addr: SocketAddr,
    timings: HbTimings,
    /// When the last heartbeat arrived (or when the peer was added, as a grace period).
    last_heard: Instant,
    /// Wall clock of the last heartbeat, microseconds since the epoch; 0 if never heard.
    last_heard_wall_us: u64,
    status: PeerStatus,
    next_send: Instant,
    /// The pending check, if any (none while dead).
    next_check: Option<Instant>,
    /// Set while `status` is `Confirming`.
    confirming: Option<Confirmation>,
    /// `HbRefused` was reported in this outage (cleared by the peer's next heartbeat).
    refused: bool,
}

/// The heartbeat engine of one nanoprobe (send list and expect list: every peer given by
/// `SendExpectHb` is on both).
#[derive(Debug)]
pub struct HeartbeatEngine {
    default_timings: HbTimings,
    detection: Detection,
    /// The next echo nonce (seeded by the daemon, e.g. with its session id, so that
    /// replies captured before a restart do not match).
    next_nonce: u64,
    peers: HashMap<HostId, PeerState>,
    timers: BTreeSet<(Instant, HostId, TimerKind)>,
    martian_interval: Duration,
    martian_last: HashMap<HostId, Instant>,
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl HeartbeatEngine {
    /// An engine with no peers; `martian_interval` limits `HbMartian` reports per sender.
    /// Confirmation uses [`Detection::default`]; see [`HeartbeatEngine::with_detection`].
    pub fn new(default_timings: HbTimings, martian_interval: Duration) -> HeartbeatEngine {
        HeartbeatEngine {
            default_timings,
            detection: Detection::default(),
            next_nonce: 0,
            peers: HashMap::new(),
            timers: BTreeSet::new(),
            martian_interval,
            martian_last: HashMap::new(),
        }
    }

    /// Sets the confirmation settings and the first echo nonce (use something that differs
    /// between process starts, such as the session id).
    pub fn with_detection(mut self, detection: Detection, nonce_seed: u64) -> HeartbeatEngine {
        self.detection = detection;
        self.next_nonce = nonce_seed;
        self
    }

    /// The number of peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// A peer's status, if it is on the lists.
    pub fn status(&self, peer: HostId) -> Option<PeerStatus> {
        self.peers.get(&peer).map(|p| p.status)
    }

    /// Addresses of every peer (to tell them we are leaving).
    pub fn peer_addrs(&self) -> Vec<SocketAddr> {
        self.peers.values().map(|p| p.addr).collect()
    }

    /// The earliest timer, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _, _)| *at)
    }

    fn unschedule(&mut self, host: HostId) {
        if let Some(p) = self.peers.get(&host) {
            self.timers.remove(&(p.next_send, host, TimerKind::Send));
            if let Some(at) = p.next_check {
                self.timers.remove(&(at, host, TimerKind::Check));
            }
            if let Some(at) = p.confirming.as_ref().and_then(|c| c.next_echo) {
                self.timers.remove(&(at, host, TimerKind::Echo));
            }
        }
    }

    /// Ends a confirmation because the peer answered: back to alive, heard `now`.
    fn avert(&mut self, host: HostId, now: Instant, wall_us: u64) -> Vec<Action> {
        let Some(state) = self.peers.get_mut(&host) else {
            return Vec::new();
        };
        if let Some(c) = state.confirming.take() {
            if let Some(at) = c.next_echo {
                self.timers.remove(&(at, host, TimerKind::Echo));
            }
        }
        state.status = PeerStatus::Alive;
        state.refused = false;
        state.last_heard = now;
        state.last_heard_wall_us = wall_us;
        let warn = now + Duration::from_millis(state.timings.warntime_ms.into());
        self.set_check(host, Some(warn));
        vec![Action::DeadAverted { peer: host }]
    }

    fn set_check(&mut self, host: HostId, at: Option<Instant>) {
        if let Some(p) = self.peers.get_mut(&host) {
            if let Some(old) = p.next_check {
                self.timers.remove(&(old, host, TimerKind::Check));
            }
            p.next_check = at;
            if let Some(at) = at {
                self.timers.insert((at, host, TimerKind::Check));
            }
        }
    }

    /// `SendExpectHb`: adds peers or updates their address and timings. A new peer gets a
    /// heartbeat at once and counts as heard `now`: `HbLate` no earlier than warntime and
    /// `HbDead` no earlier than deadtime (plus confirmation) from now, whatever its history.
    /// A known peer keeps its state (a running confirmation continues).
    pub fn send_expect(&mut self, peers: &[Peer], timings: HbTimings, now: Instant) {
        for peer in peers {
            if let Some(state) = self.peers.get_mut(&peer.host) {
                state.addr = peer.addr;
                state.timings = timings;
                let check = match state.status {
                    PeerStatus::Alive => {
                        Some(state.last_heard + Duration::from_millis(timings.warntime_ms.into()))
                    }
                    PeerStatus::Late => {
                        Some(state.last_heard + Duration::from_millis(timings.deadtime_ms.into()))
                    }
                    PeerStatus::Confirming => state.confirming.as_ref().map(|c| c.until),
                    PeerStatus::Dead => None,
                };
                self.set_check(peer.host, check);
                continue;
            }
            self.peers.insert(
                peer.host,
                PeerState {
                    addr: peer.addr,
                    timings,
                    last_heard: now,
                    last_heard_wall_us: 0,
                    status: PeerStatus::Alive,
                    next_send: now,
                    next_check: None,
                    confirming: None,
                    refused: false,
                },
            );
            self.timers.insert((now, peer.host, TimerKind::Send));
            self.set_check(
                peer.host,
                Some(now + Duration::from_millis(timings.warntime_ms.into())),
            );
        }
    }

    /// `StopSendExpectHb`: forgets these peers.
    pub fn stop(&mut self, peers: &[HostId]) {
        for host in peers {
            self.unschedule(*host);
            self.peers.remove(host);
        }
    }

    /// `SetConfig` timings: applies to every current peer and later default.
    pub fn set_timings(&mut self, timings: HbTimings, now: Instant) {
        self.default_timings = timings;
        let peers: Vec<Peer> = self
            .peers
            .iter()
            .map(|(host, p)| Peer {
                host: *host,
                addr: p.addr,
            })
            .collect();
        self.send_expect(&peers, timings, now);
    }

    /// The timings used when a command gives none.
    pub fn default_timings(&self) -> HbTimings {
        self.default_timings
    }

    /// An authenticated heartbeat arrived from `from` at `addr`. `wall_us` is the local
    /// wall clock (for `HbDead::last_seen_us`).
    pub fn on_heartbeat(
        &mut self,
        from: HostId,
        addr: SocketAddr,
        leaving: bool,
        now: Instant,
        wall_us: u64,
    ) -> Vec<Action> {
        let Some(state) = self.peers.get_mut(&from) else {
            if leaving {
                return Vec::new();
            }
            return self.martian(from, addr, now);
        };
        if leaving {
            // The peer stops gracefully: stop expecting it, no alarm.
            self.stop(&[from]);
            return Vec::new();
        }
        state.refused = false;
        if state.status == PeerStatus::Confirming {
            return self.avert(from, now, wall_us);
        }
        let mut actions = Vec::new();
        if state.status == PeerStatus::Dead {
            actions.push(Action::Report(ReportBody::HbBackAlive {
                peer: from,
                down_for_ms: ms(now.saturating_duration_since(state.last_heard)),
            }));
        }
        state.status = PeerStatus::Alive;
        state.last_heard = now;
        state.last_heard_wall_us = wall_us;
        let warn = now + Duration::from_millis(state.timings.warntime_ms.into());
        self.set_check(from, Some(warn));
        actions
    }

    /// An authenticated `EchoReply { nonce }` from `from` arrived on the daemon's socket. It
    /// cancels a confirmation of `from` if it answers an echo request of that confirmation.
    pub fn on_echo_reply(
        &mut self,
        from: HostId,
        nonce: u64,
        now: Instant,
        wall_us: u64,
    ) -> Vec<Action> {
        let matches = self.peers.get(&from).is_some_and(|p| {
            p.confirming
                .as_ref()
                // nonce in first_nonce..next_nonce, allowing for wrap-around.
                .is_some_and(|c| {
                    nonce.wrapping_sub(c.first_nonce) < self.next_nonce.wrapping_sub(c.first_nonce)
                })
        });
        if matches {
            self.avert(from, now, wall_us)
        } else {
            Vec::new()
        }
    }

    /// A datagram this nanoprobe sent to `addr` met an ICMP port-unreachable (the daemon's
    /// socket connected to that peer failed with `ECONNREFUSED`): the peer's host answered,
    /// its nanoprobe did not. Reports `HbRefused` about each expected peer at `addr`, once
    /// per outage: the peer's next heartbeat ends it. Not evidence on its own (ICMP is not
    /// authenticated); the CMA waits for a second watcher (fsm rows R1-R3).
    pub fn on_refused(&mut self, addr: SocketAddr) -> Vec<Action> {
        let mut actions = Vec::new();
        for (peer, state) in self.peers.iter_mut() {
            if state.addr == addr && !state.refused {
                state.refused = true;
                actions.push(Action::Report(ReportBody::HbRefused { peer: *peer }));
            }
        }
        actions
    }

    fn martian(&mut self, from: HostId, addr: SocketAddr, now: Instant) -> Vec<Action> {
        if let Some(last) = self.martian_last.get(&from) {
            if now.saturating_duration_since(*last) < self.martian_interval {
                return Vec::new();
            }
        }
        if self.martian_last.len() >= MARTIAN_MEMORY {
            self.martian_last.clear();
        }
        self.martian_last.insert(from, now);
        vec![Action::Report(ReportBody::HbMartian { from, addr })]
    }

    /// Fires every timer due at `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        while let Some(&(at, host, kind)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(state) = self.peers.get_mut(&host) else {
                continue;
            };
            match kind {
                TimerKind::Echo => {
                    let Some(c) = state.confirming.as_mut() else {
                        continue;
                    };
                    let nonce = self.next_nonce;
                    self.next_nonce = self.next_nonce.wrapping_add(1);
                    actions.push(Action::SendEcho {
                        peer: host,
                        to: state.addr,
                        nonce,
                    });
                    let mut next = at + self.detection.confirm_interval;
                    if next <= now {
                        next = now + self.detection.confirm_interval;
                    }
                    c.next_echo = (next < c.until).then_some(next);
                    if let Some(next) = c.next_echo {
                        self.timers.insert((next, host, TimerKind::Echo));
                    }
                }
                TimerKind::Send => {
                    actions.push(Action::SendHeartbeat { to: state.addr });
                    let interval = Duration::from_millis(state.timings.interval_ms.into());
                    // Keep the cadence; after a stall, restart it from now instead of
                    // sending a burst.
                    let mut next = at + interval;
                    if next <= now {
                        next = now + interval;
                    }
                    state.next_send = next;
                    self.timers.insert((next, host, TimerKind::Send));
                }
                TimerKind::Check => {
                    state.next_check = None;
                    let silence = now.saturating_duration_since(state.last_heard);
                    let warn = Duration::from_millis(state.timings.warntime_ms.into());
                    let dead = Duration::from_millis(state.timings.deadtime_ms.into());
                    let mut next_check = None;
                    if state.status == PeerStatus::Confirming {
                        let until = state.confirming.as_ref().map_or(now, |c| c.until);
                        if now < until {
                            next_check = Some(until);
                        } else {
                            if let Some(at) = state.confirming.take().and_then(|c| c.next_echo) {
                                self.timers.remove(&(at, host, TimerKind::Echo));
                            }
                            state.status = PeerStatus::Dead;
                            actions.push(Action::Report(ReportBody::HbDead {
                                peer: host,
                                last_seen_us: state.last_heard_wall_us,
                            }));
                        }
                    } else if silence >= dead
                        && state.status != PeerStatus::Dead
                        && !self.detection.confirm.is_zero()
                    {
                        // Last chance: echo requests now (the Echo timer below, handled
                        // in this same poll) and every confirm_interval, for at most
                        // CONFIRM_SHARE of the ring's deadtime.
                        let until = now + self.detection.confirm.min(dead * CONFIRM_SHARE / 10);
                        self.timers.insert((now, host, TimerKind::Echo));
                        state.status = PeerStatus::Confirming;
                        state.confirming = Some(Confirmation {
                            until,
                            next_echo: Some(now),
                            first_nonce: self.next_nonce,
                        });
                        next_check = Some(until);
                    } else if silence >= dead && state.status != PeerStatus::Dead {
                        state.status = PeerStatus::Dead;
                        actions.push(Action::Report(ReportBody::HbDead {
                            peer: host,
                            last_seen_us: state.last_heard_wall_us,
                        }));
                    } else if silence >= warn && state.status == PeerStatus::Alive {
                        state.status = PeerStatus::Late;
                        actions.push(Action::Report(ReportBody::HbLate {
                            peer: host,
                            late_by_ms: ms(silence),
                        }));
                        next_check = Some(state.last_heard + dead);
                    } else if state.status != PeerStatus::Dead {
                        // Timer fired early (timings changed): check again at the right time.
                        next_check = Some(
                            state.last_heard
                                + if state.status == PeerStatus::Alive {
                                    warn
                                } else {
                                    dead
                                },
                        );
                    }
                    if let Some(at) = next_check {
                        state.next_check = Some(at);
                        self.timers.insert((at, host, TimerKind::Check));
                    }
                }
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: HbTimings = HbTimings {
        interval_ms: 1000,
        warntime_ms: 2000,
        deadtime_ms: 3000,
    };

    fn peer(n: u64) -> Peer {
        Peer {
            host: HostId(n),
            addr: SocketAddr::from(([127, 0, 0, n as u8], 7000)),
        }
    }

    /// An engine with confirmation disabled (today's behaviour: `HbDead` at deadtime).
    fn no_confirm() -> HeartbeatEngine {
        HeartbeatEngine::new(T, Duration::from_secs(10)).with_detection(
            Detection {
                confirm: Duration::ZERO,
                confirm_interval: Duration::from_millis(100),
            },
            0,
        )
    }

    /// An engine with confirmation over 500 ms, an echo every 100 ms, nonces from 1000.
    fn confirming() -> HeartbeatEngine {
        HeartbeatEngine::new(T, Duration::from_secs(10)).with_detection(
            Detection {
                confirm: Duration::from_millis(500),
                confirm_interval: Duration::from_millis(100),
            },
            1000,
        )
    }

    fn echoes(actions: &[Action]) -> Vec<(HostId, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SendEcho { peer, nonce, .. } => Some((*peer, *nonce)),
                _ => None,
            })
            .collect()
    }

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn reports(actions: &[Action]) -> Vec<ReportBody> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Report(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn sends_every_interval_to_every_peer() {
        let base = Instant::now();
        let mut e = HeartbeatEngine::new(T, Duration::from_secs(10));
        e.send_expect(&[peer(1), peer(2)], T, base);
        let mut sends = 0;
        for step in 0..=5 {
            let now = at(base, step * 1000);
            // Keep peers alive so only sends happen.
            e.on_heartbeat(HostId(1), peer(1).addr, false, now, 1);
            e.on_heartbeat(HostId(2), peer(2).addr, false, now, 1);
            let acts = e.poll(now);
            assert!(reports(&acts).is_empty());
            sends += acts.len();
        }
        assert_eq!(sends, 12);
        assert_eq!(e.next_deadline(), Some(at(base, 6000)));
    }

    #[test]
    fn late_then_dead_then_back_alive() {
        let base = Instant::now();
        let mut e = no_confirm();
        e.send_expect(&[peer(1)], T, base);
        e.on_heartbeat(HostId(1), peer(1).addr, false, at(base, 500), 42);
        assert!(reports(&e.poll(at(base, 2499))).is_empty());
        assert_eq!(
            reports(&e.poll(at(base, 2500))),
            vec![ReportBody::HbLate {
                peer: HostId(1),
                late_by_ms: 2000
            }]
        );
        assert!(reports(&e.poll(at(base, 3499))).is_empty());
        assert_eq!(
            reports(&e.poll(at(base, 3500))),
            vec![ReportBody::HbDead {
                peer: HostId(1),
                last_seen_us: 42
            }]
        );
        assert_eq!(e.status(HostId(1)), Some(PeerStatus::Dead));
        // Dead is reported once.
        assert!(reports(&e.poll(at(base, 20_000))).is_empty());
        let back = e.on_heartbeat(HostId(1), peer(1).addr, false, at(base, 20_500), 43);
        assert_eq!(
            reports(&back),
            vec![ReportBody::HbBackAlive {
                peer: HostId(1),
                down_for_ms: 20_000
            }]
        );
        assert_eq!(e.status(HostId(1)), Some(PeerStatus::Alive));
    }

    #[test]
    fn confirmation_lasts_at_most_three_tenths_of_the_deadtime() {
        let base = Instant::now();
        // The fast profile: 100 ms / 300 ms / 500 ms; the configured confirm is 500 ms.
        let fast = HbTimings {
            interval_ms: 100,
            warntime_ms: 300,
            deadtime_ms: 500,
        };
        let mut e = HeartbeatEngine::new(fast, Duration::from_secs(10))
            .with_detection(Detection::default(), 1);
        e.send_expect(&[peer(1)], fast, base);
        let mut dead_at = None;
        for step in 1..=20 {
            let now = at(base, step * 50);
            if reports(&e.poll(now))
                .iter()
                .any(|r| matches!(r, ReportBody::HbDead { .. }))
            {
                dead_at = Some(step * 50);
                break;
            }
        }
        // Deadtime 500 ms, then 150 ms of confirmation (not 500).
        assert_eq!(dead_at, Some(650));
    }

    #[test]
    fn refused_is_reported_once_per_outage() {
        let base = Instant::now();
        let mut e = no_confirm();
        e.send_expect(&[peer(1), peer(2)], T, base);
        let refused = |e: &mut HeartbeatEngine, addr| reports(&e.on_refused(addr));
        assert_eq!(
            refused(&mut e, peer(1).addr),
            vec![ReportBody::HbRefused { peer: HostId(1) }]
        );
        // Every later heartbeat to it is refused too: reported once.
        assert!(refused(&mut e, peer(1).addr).is_empty());
        // An address of no expected peer: nothing.
        assert!(refused(&mut e, "127.9.9.9:1".parse().unwrap()).is_empty());
        // The peer is heard again (its nanoprobe restarted): a new outage is reported.
        e.on_heartbeat(HostId(1), peer(1).addr, false, at(base, 500), 1);
        assert_eq!(
            refused(&mut e, peer(1).addr),
            vec![ReportBody::HbRefused { peer: HostId(1) }]
        );
        // Refusals change no timer: deadtime still reports the silence.
        assert_eq!(e.status(HostId(1)), Some(PeerStatus::Alive));
    }

    #[test]
    fn dead_detected_exactly_at_deadtime() {
        let base = Instant::now();
        let mut e = no_confirm();
        e.send_expect(&[peer(1)], T, base);
        e.on_heartbeat(HostId(1), peer(1).addr, false, at(base, 100), 1);
        assert!(matches!(
            reports(&e.poll(at(base, 2100)))[..],
            [ReportBody::HbLate { .. }]
        ));
        // The dead check is armed for last heartbeat + deadtime, not a tick later.
        assert!(e
            .timers
            .contains(&(at(base, 3100), HostId(1), TimerKind::Check)));
        assert!(reports(&e.poll(at(base, 3099))).is_empty());
        assert!(matches!(
            reports(&e.poll(at(base, 3100)))[..],
            [ReportBody::HbDead { .. }]
        ));
    }

    #[test]
    fn leaving_peer_is_forgotten_without_alarm() {
        let base = Instant::now();
        let mut e = HeartbeatEngine::new(T, Duration::from_secs(10));
        e.send_expect(&[peer(1)], T, base);
        assert!(e
            .on_heartbeat(HostId(1), peer(1).addr, true, at(base, 100), 1)
            .is_empty());
        assert_eq!(e.peer_count(), 0);
        assert!(reports(&e.poll(at(base, 10_000))).is_empty());
        assert_eq!(e.next_deadline(), None);
    }

    #[test]
    fn martians_are_rate_limited_per_sender() {
        let base = Instant::now();
        let mut e = HeartbeatEngine::new(T, Duration::from_secs(10));
        let addr = peer(9).addr;
        assert_eq!(e.on_heartbeat(HostId(9), addr, false, base, 1).len(), 1);
        assert!(e
            .on_heartbeat(HostId(9), addr, false, at(base, 5000), 1)
            .is_empty());
        assert_eq!(
            e.on_heartbeat(HostId(8), addr, false, at(base, 5000), 1)
                .len(),
            1
        );
        assert_eq!(
            e.on_heartbeat(HostId(9), addr, false, at(base, 10_000), 1),
            vec![Action::Report(ReportBody::HbMartian {
                from: HostId(9),
                addr
            })]
        );
    }

    #[test]
    fn stop_removes_timers_and_update_keeps_state() {
        let base = Instant::now();
        let mut e = HeartbeatEngine::new(T, Duration::from_secs(10));
        e.send_expect(&[peer(1), peer(2)], T, base);
        e.poll(at(base, 2000));
        assert_eq!(e.status(HostId(1)), Some(PeerStatus::Late));
        // Re-sending the same peer keeps it late (no reset of its silence).
        e.send_expect(&[peer(1)], T, at(base, 2100));
        assert_eq!(e.status(HostId(1)), Some(PeerStatus::Late));
        e.stop(&[HostId(1), HostId(2)]);
        assert_eq!(e.next_deadline(), None);
        assert!(e.poll(at(base, 100_000)).is_empty());
    }

    #[test]
    fn shorter_timings_take_effect() {
        let base = Instant::now();
        let mut e = no_confirm();
        e.send_expect(&[peer(1)], T, base);
        let fast = HbTimings {
            interval_ms: 100,
            warntime_ms: 200,
            deadtime_ms: 400,
        };
        e.set_timings(fast, at(base, 50));
        assert!(matches!(
            reports(&e.poll(at(base, 200)))[..],
            [ReportBody::HbLate { .. }]
        ));
        assert!(matches!(
            reports(&e.poll(at(base, 400)))[..],
            [ReportBody::HbDead { .. }]
        ));
    }

    /// Silent from 500 ms: late at 2500, confirming at 3500 (echo at once), dead at 4000.
    fn silent_until_confirming(e: &mut HeartbeatEngine, base: Instant) -> u64 {
        e.send_expect(&[peer(1)], T, base);
        e.on_heartbeat(HostId(1), peer(1).addr, false, at(base, 500), 42);
        assert!(matches!(
            reports(&e.poll(at(base, 2500)))[..],
            [ReportBody::HbLate { .. }]
        ));
        let acts = e.poll(at(base, 3500));
        assert!(reports(&acts).is_empty(), "no HbDead at deadtime: {acts:?}");
        let sent = echoes(&acts);
        assert_eq!(sent.len(), 1, "{acts:?}");
        assert_eq!(sent[0].0, HostId(1));
        assert!(acts.contains(&Action::SendEcho {
            peer: HostId(1),
            to: peer(1).addr,
            nonce: sent[0].1
        }));
        assert_eq!(e.status(HostId(1)), Some(PeerStatus::Confirming));
        sent[0].1
    }

    #[test]
    fn confirmation_expires_into_dead_at_deadtime_plus_confirm() {
        let base = Instant::now();
        let mut e = confirming();
        silent_until_confirming(&mut e, base);
        // An echo every 100 ms inside the window, no report before its end.
        let mut nonces = Vec::new();
        for t in [3600, 3700, 3800, 3900] {
            let acts = e.poll(at(base, t));
            assert!(reports(&acts).is_empty());
            nonces.extend(echoes(&acts).into_iter().map(|(_, n)| n));
        }
        assert_eq!(nonces.len(), 4);
        assert!(nonces.windows(2).all(|w| w[0] != w[1]), "fresh nonces");
        assert!(e.poll(at(base, 3999)).is_empty());
        assert_eq!(
            e.poll(at(base, 4000)),
            vec![Action::Report(ReportBody::HbDead {
                peer: HostId(1),
                last_seen_us: 42
            })]
        );
        assert_eq!(e.status(HostId(1)), Some(PeerStatus::Dead));
        // Nothing more is sent to it but heartbeats, and a late reply changes nothing.
        let later = e.poll(at(base, 10_000));
        assert!(later
            .iter()
            .all(|a| matches!(a, Action::SendHeartbeat { .. })));
        assert!(e
            .on_echo_reply(HostId(1), nonces[3], at(base, 10_001), 50)
            .is_empty());
        assert_eq!(e.status(HostId(1)), Some(PeerStatus::Dead));
    }

    #[test]
    fn confirmation_cancelled_by_a_heartbeat() {
        let base = Instant::now();
        let mut e = confirming();
        silent_until_confirming(&mut e, base);
        e.poll(at(base, 3600));
        assert_eq!(
            e.on_heartbeat(HostId(1), peer(1).addr, false, at(base, 3650), 43),
            vec![Action::DeadAverted { peer: HostId(1) }]
        );
        assert_eq!(e.status(HostId(1)), Some(PeerStatus::Alive));
        // No HbDead at the end of the window, no more echoes, no HbBackAlive.
        let acts = e.poll(at(base, 5000));
        assert!(reports(&acts).is_empty(), "{acts:?}");
        assert!(echoes(&acts).is_empty(), "{acts:?}");
        // The next silence is measured from that heartbeat.
        assert!(matches!(
            reports(&e.poll(at(base, 5650)))[..],
            [ReportBody::HbLate { .. }]
        ));
    }

    #[test]
    fn confirmation_cancelled_by_an_echo_reply() {
        let base = Instant::now();
        let mut e = confirming();
        let first = silent_until_confirming(&mut e, base);
        // A reply from another host, or with a nonce not sent in this confirmation, does
        // not count.
        assert!(e
            .on_echo_reply(HostId(2), first, at(base, 3510), 1)
            .is_empty());
        assert!(e
            .on_echo_reply(HostId(1), first.wrapping_sub(1), at(base, 3510), 1)
            .is_empty());
        assert!(e
            .on_echo_reply(HostId(1), first + 1, at(base, 3510), 1)
            .is_empty());
        assert_eq!(e.status(HostId(1)), Some(PeerStatus::Confirming));
        assert_eq!(
            e.on_echo_reply(HostId(1), first, at(base, 3520), 44),
            vec![Action::DeadAverted { peer: HostId(1) }]
        );
        assert_eq!(e.status(HostId(1)), Some(PeerStatus::Alive));
        let acts = e.poll(at(base, 4000));
        assert!(reports(&acts).is_empty(), "{acts:?}");
        assert!(echoes(&acts).is_empty(), "{acts:?}");
        // Still silent afterwards: late, then confirmed again with new nonces.
        assert!(matches!(
            reports(&e.poll(at(base, 5520)))[..],
            [ReportBody::HbLate { .. }]
        ));
        let again = echoes(&e.poll(at(base, 6520)));
        assert_eq!(again.len(), 1);
        assert!(again[0].1 > first);
        // The old nonce no longer counts.
        assert!(e
            .on_echo_reply(HostId(1), first, at(base, 6530), 1)
            .is_empty());
        assert!(matches!(
            reports(&e.poll(at(base, 7020)))[..],
            [ReportBody::HbDead { .. }]
        ));
    }

    #[test]
    fn confirm_zero_reports_dead_at_deadtime_without_echoes() {
        let base = Instant::now();
        let mut e = no_confirm();
        e.send_expect(&[peer(1)], T, base);
        e.poll(at(base, 2000));
        let acts = e.poll(at(base, 3000));
        assert!(echoes(&acts).is_empty());
        assert_eq!(
            reports(&acts),
            vec![ReportBody::HbDead {
                peer: HostId(1),
                last_seen_us: 0
            }]
        );
        assert_eq!(e.status(HostId(1)), Some(PeerStatus::Dead));
    }

    #[test]
    fn peer_stopped_while_confirming_produces_nothing() {
        let base = Instant::now();
        let mut e = confirming();
        let first = silent_until_confirming(&mut e, base);
        e.stop(&[HostId(1)]);
        assert_eq!(e.status(HostId(1)), None);
        assert_eq!(e.next_deadline(), None, "every timer of the peer removed");
        assert!(e.poll(at(base, 100_000)).is_empty());
        assert!(e
            .on_echo_reply(HostId(1), first, at(base, 100_001), 1)
            .is_empty());
        // A leaving heartbeat while confirming is a graceful stop too.
        let mut e = confirming();
        silent_until_confirming(&mut e, base);
        assert!(e
            .on_heartbeat(HostId(1), peer(1).addr, true, at(base, 3600), 1)
            .is_empty());
        assert!(e.poll(at(base, 100_000)).is_empty());
    }

    #[test]
    fn sendexpect_during_confirmation_keeps_it() {
        let base = Instant::now();
        let mut e = confirming();
        silent_until_confirming(&mut e, base);
        e.send_expect(&[peer(1)], T, at(base, 3700));
        assert_eq!(e.status(HostId(1)), Some(PeerStatus::Confirming));
        assert!(matches!(
            reports(&e.poll(at(base, 4000)))[..],
            [ReportBody::HbDead { .. }]
        ));
    }

    /// Bug hunt: after a ring change a new neighbour gets deadtime (plus confirmation) from
    /// the moment we start expecting it, even if it was a peer before (stopped long ago,
    /// or dead), and it is not reported dead while its heartbeats start.
    #[test]
    fn new_peer_gets_full_grace_from_send_expect() {
        let base = Instant::now();
        let mut e = confirming();
        // Peer 3 was a neighbour once, went silent and was stopped.
        e.send_expect(&[peer(3)], T, base);
        e.on_heartbeat(HostId(3), peer(3).addr, false, at(base, 100), 1);
        e.stop(&[HostId(3)]);
        // Re-planned much later: a new peer again.
        let t0 = 60_000;
        e.send_expect(&[peer(3)], T, at(base, t0));
        assert_eq!(e.status(HostId(3)), Some(PeerStatus::Alive));
        let acts = e.poll(at(base, t0 + 2999));
        assert!(echoes(&acts).is_empty());
        assert!(matches!(reports(&acts)[..], [ReportBody::HbLate { .. }]));
        assert_eq!(echoes(&e.poll(at(base, t0 + 3000))).len(), 1);
        assert!(reports(&e.poll(at(base, t0 + 3499))).is_empty());
        assert!(matches!(
            reports(&e.poll(at(base, t0 + 3500)))[..],
            [ReportBody::HbDead {
                last_seen_us: 0,
                ..
            }]
        ));
        // Its first heartbeat 1 s after we expect it: no alarm at all.
        let mut e = confirming();
        e.send_expect(&[peer(3)], T, base);
        e.on_heartbeat(HostId(3), peer(3).addr, false, at(base, 1000), 1);
        assert!(reports(&e.poll(at(base, 2500))).is_empty());
    }
}
