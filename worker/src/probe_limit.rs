//! Limits on active probes, so a large outage cannot start a probe storm: a budget of probe
//! commands per investigation (per target, renewed after `budget_window_ms`, so a host that
//! fails again later is probed again) and a global token bucket over all investigations.
//!
//! Pure: the caller supplies the time. A probe refused here is reported back to the fsm as a
//! failed probe (`ProbeOutcome::Failed("rate limited")`), so the investigation still ends
//! within its bound, with the evidence it could gather.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// Probe limits, from the CMA config (`[probes]`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeLimitConfig {
    /// Most probe commands one investigation (one suspect) may order.
    pub per_investigation: u32,
    /// Sustained probe commands per second over the whole cluster.
    pub per_second: f64,
    /// Burst size of the global bucket.
    pub burst: u32,
    /// How long one investigation's budget lasts, from its first probe (ms): after that a
    /// new failure of the same target gets a new budget.
    pub budget_window_ms: u64,
}

impl Default for ProbeLimitConfig {
    fn default() -> Self {
        ProbeLimitConfig {
            per_investigation: 8,
            per_second: 100.0,
            // A block sweep checks up to two rounds of 256 hosts at once (one per end of
            // the block; `super::sweep`): the burst covers them with room to spare.
            burst: 1000,
            budget_window_ms: 60_000,
        }
    }
}

/// Why a probe was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeRefused {
    #[error("investigation probe budget exhausted")]
    Budget,
    #[error("global probe rate limit")]
    Rate,
}

/// The limiter state.
#[derive(Debug)]
pub struct ProbeLimiter {
    config: ProbeLimitConfig,
    tokens: f64,
    last: Option<Duration>,
    /// Probes spent per investigation, and when its budget window opened.
    spent: HashMap<String, (u32, Duration)>,
}

/// Budgets kept before expired ones are swept (so the map stays bounded).
const SWEEP_AT: usize = 4096;

impl ProbeLimiter {
    /// A limiter with a full bucket.
    pub fn new(config: ProbeLimitConfig) -> ProbeLimiter {
        ProbeLimiter {
            config,
            tokens: config.burst as f64,
            last: None,
            spent: HashMap::new(),
        }
    }

    /// The limits it enforces.
    #[cfg(test)]
    pub fn config(&self) -> ProbeLimitConfig {
        self.config
    }

    /// Asks to send one probe for `investigation` at `now`; takes a token and a unit of
    /// that investigation's budget when allowed.
    pub fn allow(&mut self, investigation: &str, now: Duration) -> Result<(), ProbeRefused> {
        if let Some(last) = self.last {
            let elapsed = now.saturating_sub(last).as_secs_f64();
            self.tokens =
                (self.tokens + elapsed * self.config.per_second).min(self.config.burst as f64);
        }
        self.last = Some(now);
        let window = Duration::from_millis(self.config.budget_window_ms);
        if self.spent.len() >= SWEEP_AT {
            self.spent
                .retain(|_, (_, since)| now.saturating_sub(*since) < window);
        }
        let (spent, since) = match self.spent.get(investigation) {
            Some(&(spent, since)) if now.saturating_sub(since) < window => (spent, since),
            _ => (0, now),
        };
        if spent >= self.config.per_investigation {
            return Err(ProbeRefused::Budget);
        }
        if self.tokens < 1.0 {
            return Err(ProbeRefused::Rate);
        }
        self.tokens -= 1.0;
        self.spent
            .insert(investigation.to_string(), (spent + 1, since));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_per_investigation() {
        let mut l = ProbeLimiter::new(ProbeLimitConfig {
            per_investigation: 2,
            per_second: 1000.0,
            burst: 1000,
            budget_window_ms: 60_000,
        });
        let t = Duration::ZERO;
        assert_eq!(l.allow("a", t), Ok(()));
        assert_eq!(l.allow("a", t), Ok(()));
        assert_eq!(l.allow("a", t), Err(ProbeRefused::Budget));
        assert_eq!(l.allow("b", t), Ok(()));
        // Still within the window: refused.
        let later = Duration::from_secs(59);
        assert_eq!(l.allow("a", later), Err(ProbeRefused::Budget));
        // The same target failing again after the window gets a new budget.
        let next_failure = Duration::from_secs(61);
        assert_eq!(l.allow("a", next_failure), Ok(()));
        assert_eq!(l.allow("a", next_failure), Ok(()));
        assert_eq!(l.allow("a", next_failure), Err(ProbeRefused::Budget));
    }

    #[test]
    fn expired_budgets_are_swept() {
        let mut l = ProbeLimiter::new(ProbeLimitConfig {
            per_investigation: 1,
            per_second: 1e9,
            burst: u32::MAX,
            budget_window_ms: 1_000,
        });
        for i in 0..SWEEP_AT {
            let _ = l.allow(&format!("host:{i}"), Duration::ZERO);
        }
        assert_eq!(l.spent.len(), SWEEP_AT);
        let _ = l.allow("host:new", Duration::from_secs(2));
        assert_eq!(l.spent.len(), 1, "expired budgets must go");
    }

    #[test]
    fn global_rate_refills_over_time() {
        let mut l = ProbeLimiter::new(ProbeLimitConfig {
            per_investigation: 1,
            per_second: 10.0,
            burst: 5,
            budget_window_ms: 60_000,
        });
        let t0 = Duration::from_secs(100);
        let allowed = (0..20)
            .filter(|i| l.allow(&format!("inv{i}"), t0).is_ok())
            .count();
        assert_eq!(allowed, 5);
        assert_eq!(l.allow("late", t0), Err(ProbeRefused::Rate));
        // 0.5 s later: 5 more tokens.
        let t1 = t0 + Duration::from_millis(500);
        let allowed = (20..40)
            .filter(|i| l.allow(&format!("inv{i}"), t1).is_ok())
            .count();
        assert_eq!(allowed, 5);
    }
}
