//! Flood resistance of the nanoprobe's port (pure: the caller passes the time).
//!
//! [`SourceGuard`] limits how many *failed* datagrams per second a source address may make
//! the daemon verify: beyond a burst, datagrams from that source are dropped before any
//! MAC is computed, until its budget refills. A source that sent an authentic datagram
//! recently is never limited, so garbage sent with a peer's (spoofed) address cannot
//! silence that peer. The warnings an attacker could repeat are spaced out by
//! [`daemon::warn::WarnEvery`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failed datagrams per second a source may cause once its burst is spent.
pub const FAILURES_PER_SECOND: f64 = 50.0;
/// Failed datagrams a source may cause at once.
pub const FAILURE_BURST: f64 = 200.0;
/// How long an authentic datagram exempts its source from the limit.
pub const GOOD_FOR: Duration = Duration::from_secs(60);
/// Most sources tracked; when full, the table is cleared (every source starts over).
pub const MAX_SOURCES: usize = 8192;

struct Source {
    tokens: f64,
    refilled: Instant,
    good_until: Option<Instant>,
}

/// Per-source failure budget.
#[derive(Default)]
pub struct SourceGuard {
    sources: HashMap<IpAddr, Source>,
}

impl SourceGuard {
    /// Whether a datagram from `ip` should be verified at all.
    pub fn admits(&mut self, ip: IpAddr, now: Instant) -> bool {
        match self.sources.get_mut(&ip) {
            None => true,
            Some(s) => {
                if s.good_until.is_some_and(|t| now < t) {
                    return true;
                }
                let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
                s.tokens = (s.tokens + elapsed * FAILURES_PER_SECOND).min(FAILURE_BURST);
                s.refilled = now;
                s.tokens >= 1.0
            }
        }
    }

    /// A datagram from `ip` failed verification.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        let s = self.source(ip, now);
        s.tokens = (s.tokens - 1.0).max(0.0);
    }

    /// A datagram from `ip` was authentic.
    pub fn authentic(&mut self, ip: IpAddr, now: Instant) {
        self.source(ip, now).good_until = Some(now + GOOD_FOR);
    }

    /// The entry of `ip`, created with a full budget; a full table is emptied first, so
    /// memory stays bounded whatever the number of sources.
    fn source(&mut self, ip: IpAddr, now: Instant) -> &mut Source {
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&ip) {
            self.sources.clear();
        }
        self.sources.entry(ip).or_insert(Source {
            tokens: FAILURE_BURST,
            refilled: now,
            good_until: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_source_is_limited_after_its_burst_and_refills() {
        let mut g = SourceGuard::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        let mut admitted = 0;
        for _ in 0..1000 {
            if g.admits(ip, t0) {
                admitted += 1;
                g.failed(ip, t0);
            }
        }
        assert_eq!(admitted, FAILURE_BURST as usize);
        assert!(!g.admits(ip, t0));
        // One second later, FAILURES_PER_SECOND more.
        let t1 = t0 + Duration::from_secs(1);
        let mut later = 0;
        for _ in 0..1000 {
            if g.admits(ip, t1) {
                later += 1;
                g.failed(ip, t1);
            }
        }
        assert_eq!(later, FAILURES_PER_SECOND as usize);
        // Another source is unaffected.
        assert!(g.admits("192.0.2.2".parse().unwrap(), t1));
    }

    #[test]
    fn a_source_that_sent_authentic_datagrams_is_never_limited() {
        let mut g = SourceGuard::default();
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = Instant::now();
        g.authentic(peer, t0);
        for _ in 0..10_000 {
            assert!(g.admits(peer, t0));
            g.failed(peer, t0);
        }
        // Once the exemption expired, its spent budget applies again.
        let later = t0 + GOOD_FOR + Duration::from_millis(1);
        let mut admitted = 0;
        for _ in 0..1000 {
            if g.admits(peer, later) {
                admitted += 1;
                g.failed(peer, later);
            }
        }
        assert!(admitted <= FAILURE_BURST as usize, "{admitted}");
    }
}
