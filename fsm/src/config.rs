//! Timings of the fsm, each a named field with a documented default.

use serde::{Deserialize, Serialize};

/// Tunables of the [`crate::Engine`]. All durations in µs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Heartbeat interval used for hosts whose ring timing is unknown. Default 1 s.
    pub default_hb_interval_us: u64,
    /// How many heartbeat intervals the second watcher has to corroborate a `HbDead`
    /// before the fsm investigates with probes. Default 2 (docs/design.md §5).
    pub corroboration_intervals: u64,
    /// How long a probe may take before it counts as failed. Default 3 s.
    pub probe_timeout_us: u64,
    /// Window in which suspects behind one switch (or suspect switches behind one router)
    /// are grouped into one investigation. Default 5 s.
    pub correlation_window_us: u64,
    /// How many suspects behind one switch (or suspect switches behind one router) open a
    /// group investigation. Default 2.
    pub group_min_suspects: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_hb_interval_us: 1_000_000,
            corroboration_intervals: 2,
            probe_timeout_us: 3_000_000,
            correlation_window_us: 5_000_000,
            group_min_suspects: 2,
        }
    }
}

impl Config {
    /// The documented bound: a suspicion that gets no switch check (row S3: its switch is
    /// undeclared, a switch case is already open for it, or nobody off the switch can
    /// probe it) and is not absorbed into a group investigation reaches a verdict at most
    /// this long after its first `HbDead` (as seen by the first `Tick` at or after that
    /// time) for a host with heartbeat interval `hb_interval_us`: window + host probes.
    pub fn host_bound_us(&self, hb_interval_us: u64) -> u64 {
        self.corroboration_intervals * hb_interval_us + self.probe_timeout_us
    }

    /// The documented bound for a lone suspect whose switch is checked when its window
    /// runs out (row S3a): window + switch probe + at most one router probe it waits for
    /// (a router case it is parked in, or its own router check, row G4) + host probes,
    /// which start at once on release (row G2b, no fresh window).
    pub fn switch_check_bound_us(&self, hb_interval_us: u64) -> u64 {
        self.host_bound_us(hb_interval_us) + 2 * self.probe_timeout_us
    }

    /// The documented bound for any suspicion: the larger of the lone path above and a
    /// suspect grouped at once (row S6) by a switch and then a router investigation that
    /// is released again (two group probes, a fresh window, host probes). Both come to
    /// `2·hb + 3·P`.
    pub fn suspicion_bound_us(&self, hb_interval_us: u64) -> u64 {
        let grouped = 2 * self.probe_timeout_us + self.host_bound_us(hb_interval_us);
        grouped.max(self.switch_check_bound_us(hb_interval_us))
    }
}
