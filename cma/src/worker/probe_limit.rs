//! Limits on active probes, so a large outage cannot start a probe storm: a budget of probe
//! commands per investigation and a global token bucket over all investigations.
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
}

impl Default for ProbeLimitConfig {
    fn default() -> Self {
        ProbeLimitConfig {
            per_investigation: 8,
            per_second: 50.0,
            burst: 200,
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

impl ProbeRefused {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ProbeRefused::Budget => "budget",
            ProbeRefused::Rate => "rate",
        }
    }
}

/// The limiter state.
#[derive(Debug)]
pub struct ProbeLimiter {
    config: ProbeLimitConfig,
    tokens: f64,
    last: Option<Duration>,
    spent: HashMap<String, u32>,
}

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

    /// Asks to send one probe for `investigation` at `now`; takes a token and a unit of
    /// that investigation's budget when allowed.
    pub fn allow(&mut self, investigation: &str, now: Duration) -> Result<(), ProbeRefused> {
        if let Some(last) = self.last {
            let elapsed = now.saturating_sub(last).as_secs_f64();
            self.tokens =
                (self.tokens + elapsed * self.config.per_second).min(self.config.burst as f64);
        }
        self.last = Some(now);
        let spent = self.spent.get(investigation).copied().unwrap_or(0);
        if spent >= self.config.per_investigation {
            return Err(ProbeRefused::Budget);
        }
        if self.tokens < 1.0 {
            return Err(ProbeRefused::Rate);
        }
        self.tokens -= 1.0;
        self.spent.insert(investigation.to_string(), spent + 1);
        Ok(())
    }

    /// Forgets an investigation's budget once it reached its verdict.
    pub fn finish(&mut self, investigation: &str) {
        self.spent.remove(investigation);
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
        });
        let t = Duration::ZERO;
        assert_eq!(l.allow("a", t), Ok(()));
        assert_eq!(l.allow("a", t), Ok(()));
        assert_eq!(l.allow("a", t), Err(ProbeRefused::Budget));
        assert_eq!(l.allow("b", t), Ok(()));
        l.finish("a");
        assert_eq!(l.allow("a", t), Ok(()));
    }

    #[test]
    fn global_rate_refills_over_time() {
        let mut l = ProbeLimiter::new(ProbeLimitConfig {
            per_investigation: 1,
            per_second: 10.0,
            burst: 5,
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
