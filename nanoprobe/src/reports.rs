//! Reliable reports: every report gets an id and is retransmitted with bounded exponential
//! backoff until a packet-reader acknowledges it. Pure like the heartbeat engine: the
//! daemon feeds it time and acks and sends what it returns.
//!
//! Reader choice: readers are ranked by rendezvous (highest random weight) hashing of this
//! host's id, so every host has a stable preferred reader and hosts spread over readers;
//! after `failover_after` unanswered retransmissions the next reader in the ranking is used.

use crate::config::ReportsConfig;
use proto::{HostId, Report, ReportBody};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Pending {
    report: Report,
    next_at: Instant,
    backoff: Duration,
    sent_once: bool,
    enqueued_at: Instant,
}

/// A report dropped because the outbound queue was full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The dropped report's kind (`ReportBody::kind`).
    pub kind: &'static str,
}

/// What [`ReportSender::poll`] asks the daemon to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The packet-reader to send to.
    pub to: SocketAddr,
    /// The report (same id on every retransmission).
    pub report: Report,
    /// Whether this is a retransmission.
    pub retry: bool,
}

/// The reliable report sender.
#[derive(Debug)]
pub struct ReportSender {
    config: ReportsConfig,
    /// Readers in this host's preference order.
    readers: Vec<SocketAddr>,
    current: usize,
    silent_retries: u32,
    next_id: u64,
    pending: VecDeque<Pending>,
}

/// Drop priority: lower is dropped first. HbLate is superseded by HbDead or by the next
/// heartbeat, so it goes first; HbDead and HbRefused are alarms and go last.
fn priority(body: &ReportBody) -> u8 {
    match body {
        ReportBody::HbLate { .. } => 0,
        ReportBody::HbMartian { .. }
        | ReportBody::ProbeResult(_)
        | ReportBody::Discovery { .. } => 1,
        ReportBody::Startup(_) | ReportBody::HbBackAlive { .. } | ReportBody::HbShutdown => 2,
        ReportBody::HbDead { .. } | ReportBody::HbRefused { .. } => 3,
    }
}

/// A stable 64-bit mix (splitmix64 finaliser); std's hasher is not promised to be stable
/// across releases, and the ranking must not change when the binary is upgraded.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn addr_key(addr: &SocketAddr) -> u64 {
    // FNV-1a over the textual address: stable and independent of the address family.
    addr.to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// The readers ranked for `host` (rendezvous hashing): the first is the preferred one.
pub fn rank_readers(host: HostId, readers: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut ranked: Vec<(u64, SocketAddr)> = readers
        .iter()
        .map(|r| (mix(host.0 ^ mix(addr_key(r))), *r))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().map(|(_, r)| r).collect()
}

impl ReportSender {
    /// A sender for `host` over `readers` (at least one).
    pub fn new(host: HostId, readers: &[SocketAddr], config: ReportsConfig) -> ReportSender {
        ReportSender {
            config,
            readers: rank_readers(host, readers),
            current: 0,
            silent_retries: 0,
            next_id: 1,
            pending: VecDeque::new(),
        }
    }

    /// The reader currently used.
    pub fn current_reader(&self) -> Option<SocketAddr> {
        self.readers.get(self.current).copied()
    }

    /// Reports waiting for an ack.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether the report `id` is still waiting for its ack.
    pub fn is_pending(&self, id: u64) -> bool {
        self.pending.iter().any(|p| p.report.id == id)
    }

    /// Queues a report to be sent at the next poll; returns its id and what the bound
    /// forced out (possibly the new report itself).
    pub fn enqueue(&mut self, body: ReportBody, now: Instant) -> (u64, Option<Dropped>) {
        let id = self.next_id;
        self.next_id += 1;
        let mut dropped = None;
        if self.pending.len() >= self.config.queue_bound {
            let new_prio = priority(&body);
            let victim = self
                .pending
                .iter()
                .enumerate()
                .min_by_key(|(i, p)| (priority(&p.report.body), *i))
                .map(|(i, p)| (i, priority(&p.report.body)));
            match victim {
                Some((i, prio)) if prio <= new_prio => {
                    if let Some(p) = self.pending.remove(i) {
                        dropped = Some(Dropped {
                            kind: p.report.body.kind(),
                        });
                    }
                }
                _ => return (id, Some(Dropped { kind: body.kind() })),
            }
        }
        self.pending.push_back(Pending {
            report: Report { id, body },
            next_at: now,
            backoff: Duration::from_millis(self.config.retry_initial_ms),
            sent_once: false,
            enqueued_at: now,
        });
        (id, dropped)
    }

    /// An ack for `id` arrived; whether it matched a pending report.
    pub fn on_ack(&mut self, id: u64) -> bool {
        self.silent_retries = 0;
        match self.pending.iter().position(|p| p.report.id == id) {
            Some(i) => {
                self.pending.remove(i);
                true
            }
            None => false,
        }
    }

    /// How long the oldest report already sent has waited for its ACK.
    pub fn oldest_unacked(&self, now: Instant) -> Option<Duration> {
        self.pending
            .iter()
            .filter(|p| p.sent_once)
            .map(|p| now.saturating_duration_since(p.enqueued_at))
            .max()
    }

    /// The next time something is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.next_at).min()
    }

    /// Everything due at `now`, with backoff and fail-over applied.
    pub fn poll(&mut self, now: Instant) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if self.readers.is_empty() {
            return out;
        }
        let max = Duration::from_millis(self.config.retry_max_ms);
        for i in 0..self.pending.len() {
            if self.pending[i].next_at > now {
                continue;
            }
            let retry = self.pending[i].sent_once;
            if retry {
                self.silent_retries += 1;
                if self.silent_retries >= self.config.failover_after && self.readers.len() > 1 {
                    self.current = (self.current + 1) % self.readers.len();
                    self.silent_retries = 0;
                }
            }
            let p = &mut self.pending[i];
            p.sent_once = true;
            p.next_at = now + p.backoff;
            p.backoff = (p.backoff * 2).min(max);
            out.push(Outgoing {
                to: self.readers[self.current],
                report: p.report.clone(),
                retry,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(bound: usize) -> ReportsConfig {
        ReportsConfig {
            retry_initial_ms: 100,
            retry_max_ms: 400,
            failover_after: 3,
            queue_bound: bound,
        }
    }

    fn readers() -> Vec<SocketAddr> {
        vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.2:1".parse().unwrap(),
            "127.0.0.3:1".parse().unwrap(),
        ]
    }

    #[test]
    fn retransmits_with_bounded_backoff_until_acked() {
        let base = Instant::now();
        let mut s = ReportSender::new(HostId(1), &readers(), cfg(10));
        let (id, _) = s.enqueue(ReportBody::HbShutdown, base);
        let mut times = Vec::new();
        let mut now = base;
        for _ in 0..5 {
            now = s.next_deadline().unwrap();
            let out = s.poll(now);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].report.id, id);
            times.push(now.duration_since(base).as_millis());
        }
        assert_eq!(times, vec![0, 100, 300, 700, 1100]);
        assert!(s.on_ack(id));
        assert!(!s.on_ack(id));
        assert!(s.poll(now + Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn fails_over_to_next_reader_on_silence_and_ranking_is_stable() {
        let ranked = rank_readers(HostId(7), &readers());
        assert_eq!(ranked, rank_readers(HostId(7), &readers()));
        let mut reversed = readers();
        reversed.reverse();
        assert_eq!(ranked, rank_readers(HostId(7), &reversed));
        let base = Instant::now();
        let mut s = ReportSender::new(HostId(7), &readers(), cfg(10));
        s.enqueue(ReportBody::HbShutdown, base);
        let mut to = Vec::new();
        for _ in 0..5 {
            let now = s.next_deadline().unwrap();
            to.push(s.poll(now)[0].to);
        }
        assert_eq!(&to[..3], &[ranked[0], ranked[0], ranked[0]]);
        assert_eq!(&to[3..], &[ranked[1], ranked[1]]);
        // Different hosts do not all prefer the same reader.
        let firsts: std::collections::HashSet<_> = (0..50)
            .map(|h| rank_readers(HostId(h), &readers())[0])
            .collect();
        assert_eq!(firsts.len(), 3);
    }

    #[test]
    fn overflow_drops_oldest_late_before_any_dead() {
        let base = Instant::now();
        let mut s = ReportSender::new(HostId(1), &readers(), cfg(3));
        let dead = |n| ReportBody::HbDead {
            peer: HostId(n),
            last_seen_us: 0,
        };
        let late = |n| ReportBody::HbLate {
            peer: HostId(n),
            late_by_ms: 1,
        };
        let (late1, _) = s.enqueue(late(1), base);
        s.enqueue(dead(2), base);
        let (late3, _) = s.enqueue(late(3), base);
        let (_, d) = s.enqueue(dead(4), base);
        assert_eq!(d, Some(Dropped { kind: "hb_late" }));
        assert!(!s.is_pending(late1) && s.is_pending(late3));
        s.enqueue(dead(5), base);
        assert!(!s.is_pending(late3));
        // Full of HbDead: a new HbLate is the one dropped.
        let (late6, d) = s.enqueue(late(6), base);
        assert_eq!(d, Some(Dropped { kind: "hb_late" }));
        assert!(!s.is_pending(late6));
        assert_eq!(s.pending_len(), 3);
    }
}
