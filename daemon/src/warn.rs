//! Rate limit for a warning that a peer or an attacker could otherwise make the daemon
//! repeat thousands of times a second (failed authentication, refused connections, failed
//! accepts): [`WarnEvery::check`] says yes at most once per period, with the number of
//! occurrences it said no to since. Pure: the caller passes the time.

use std::time::{Duration, Instant};

/// Says yes at most once per period; counts the no's in between.
#[derive(Clone, Debug)]
pub struct WarnEvery {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnEvery {
    /// At most one warning per `period`.
    pub fn new(period: Duration) -> WarnEvery {
        WarnEvery {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last yes)` when the warning should be logged `now`.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_spaced() {
        let mut w = WarnEvery::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(w.check(t0), Some(0));
        assert_eq!(w.check(t0), None);
        assert_eq!(w.check(t0 + Duration::from_secs(1)), None);
        assert_eq!(w.check(t0 + Duration::from_secs(2)), None);
        assert_eq!(w.check(t0 + Duration::from_secs(11)), Some(3));
        // A period of zero says yes every time.
        let mut w = WarnEvery::new(Duration::ZERO);
        assert_eq!(w.check(t0), Some(0));
        assert_eq!(w.check(t0), Some(0));
    }
}
