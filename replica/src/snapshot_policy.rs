//! When to build a snapshot: proportional to the log, not to entries alone.
//!
//! openraft's own policy (a snapshot every N entries) costs a full encoding, write and
//! fsync of the whole state every N entries. That is nothing while the consumer keeps the
//! queue short, but with the consumer stopped the state is hundreds of MB and a snapshot
//! every few seconds competes with the log's fdatasyncs. So openraft runs with
//! `SnapshotPolicy::Never` and [`run`] triggers snapshots by [`SnapshotRule::due`]: at
//! least `after_logs` entries applied since the last snapshot AND at least `log_ratio`
//! times the last snapshot's size appended to the log since. Snapshot writes are then at
//! most about `1 / log_ratio` times the log's own writes, and the log on disk stays near
//! `(1 + log_ratio)` times the state at the last snapshot (plus `after_logs` entries).
//! The purge after each snapshot is openraft's (`max_in_snapshot_log_to_keep`).
//!
//! [`Scheduler`] is the sans-IO core (observations and an injected clock in, a decision
//! out); [`run`] is the task at the edge that feeds it from the node.

use super::Raft;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pause between two evaluations of the rule (the metrics watch fires on every apply).
const EVALUATE_EVERY: Duration = Duration::from_millis(50);

/// After triggering a build, how long to wait for it before triggering again. openraft
/// ignores a trigger while a build runs, so a repeat only matters if one was lost.
pub const RETRIGGER_AFTER: Duration = Duration::from_secs(60);

/// The snapshot rule (`[raft] snapshot_after_logs` and `snapshot_log_ratio`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SnapshotRule {
    /// Least entries applied since the last snapshot.
    pub after_logs: u64,
    /// Least log bytes appended since the last snapshot, as a multiple of its size.
    pub log_ratio: f64,
}

impl SnapshotRule {
    /// True when a snapshot is due: `entries_since` applied entries and `log_bytes_since`
    /// appended log bytes since the last snapshot, which was `snapshot_bytes` long (0: no
    /// snapshot yet, then entries alone decide).
    pub fn due(&self, entries_since: u64, log_bytes_since: u64, snapshot_bytes: u64) -> bool {
        entries_since >= self.after_logs
            && log_bytes_since as f64 >= self.log_ratio * snapshot_bytes as f64
    }
}

/// What the node reports at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Last applied log index (0: none).
    pub applied_index: u64,
    /// Log index of the current snapshot, built or installed (0: none).
    pub snapshot_index: u64,
    /// Bytes appended to the log since the process started (a counter).
    pub log_bytes: u64,
    /// Size of the current snapshot in bytes (0: none).
    pub snapshot_bytes: u64,
}

/// What to do after an observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing.
    Wait,
    /// Ask openraft to build a snapshot now.
    Build,
}

/// Log position when the current snapshot was taken.
#[derive(Clone, Copy, Debug)]
struct Mark {
    snapshot_index: u64,
    log_bytes: u64,
}

/// A trigger sent and not yet answered by a new snapshot.
#[derive(Clone, Copy, Debug)]
struct Requested {
    at: Instant,
    log_bytes: u64,
}

/// Decides when to trigger snapshots (sans-IO).
#[derive(Debug)]
pub struct Scheduler {
    rule: SnapshotRule,
    mark: Option<Mark>,
    requested: Option<Requested>,
}

impl Scheduler {
    /// A scheduler applying `rule`.
    pub fn new(rule: SnapshotRule) -> Scheduler {
        Scheduler {
            rule,
            mark: None,
            requested: None,
        }
    }

    /// Log bytes appended since the current snapshot (as of the last observation's
    /// counter `log_bytes`).
    pub fn log_bytes_since(&self, log_bytes: u64) -> u64 {
        self.mark
            .map_or(0, |m| log_bytes.saturating_sub(m.log_bytes))
    }

    /// Takes one observation; `now` is the injected clock.
    pub fn observe(&mut self, p: Progress, now: Instant) -> Decision {
        let moved = match self.mark {
            None => true,
            Some(m) => m.snapshot_index != p.snapshot_index,
        };
        if moved {
            // A snapshot finished (or this is the first observation, or one was installed
            // from the leader). The state a triggered build captured is the one at the
            // trigger, so the log counts from there. After a restart the log already on
            // disk is not counted: at worst one extra log's worth stays until the next.
            let log_bytes = match self.requested.take() {
                Some(r) if self.mark.is_some() => r.log_bytes,
                _ => p.log_bytes,
            };
            self.mark = Some(Mark {
                snapshot_index: p.snapshot_index,
                log_bytes,
            });
        }
        if let Some(r) = self.requested {
            if now.saturating_duration_since(r.at) < RETRIGGER_AFTER {
                return Decision::Wait;
            }
        }
        let entries_since = p.applied_index.saturating_sub(p.snapshot_index);
        let bytes_since = self.log_bytes_since(p.log_bytes);
        if !self.rule.due(entries_since, bytes_since, p.snapshot_bytes) {
            return Decision::Wait;
        }
        // A repeat keeps the first trigger's position: the build may be the first one's.
        let log_bytes = self.requested.map_or(p.log_bytes, |r| r.log_bytes);
        self.requested = Some(Requested { at: now, log_bytes });
        Decision::Build
    }
}

/// Runs the scheduler against a node until Raft stops: `log_bytes` is the log store's
/// appended-bytes counter, `snapshot_bytes` reads the current snapshot's size, and
/// `since_gauge` shows the log bytes appended since the last snapshot.
pub(super) async fn run(
    raft: Raft,
    rule: SnapshotRule,
    log_bytes: Counter,
    snapshot_bytes: Arc<dyn Fn() -> u64 + Send + Sync>,
    since_gauge: Gauge,
) {
    let mut metrics = raft.metrics();
    let mut scheduler = Scheduler::new(rule);
    loop {
        let progress = {
            let m = metrics.borrow_and_update();
            if m.running_state.is_err() {
                return;
            }
            Progress {
                applied_index: m.last_applied.map_or(0, |l| l.index),
                snapshot_index: m.snapshot.map_or(0, |l| l.index),
                log_bytes: log_bytes.get(),
                snapshot_bytes: snapshot_bytes(),
            }
        };
        let decision = scheduler.observe(progress, Instant::now());
        since_gauge.set(
            scheduler
                .log_bytes_since(progress.log_bytes)
                .min(i64::MAX as u64) as i64,
        );
        if decision == Decision::Build {
            tracing::debug!(?progress, "triggering a snapshot");
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
        tokio::time::sleep(EVALUATE_EVERY).await;
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: SnapshotRule = SnapshotRule {
        after_logs: 2000,
        log_ratio: 1.0,
    };

    #[test]
    fn rule_needs_both_entries_and_log_bytes() {
        assert!(!RULE.due(1999, u64::MAX, 0));
        assert!(
            RULE.due(2000, 0, 0),
            "no snapshot yet: entries alone decide"
        );
        assert!(!RULE.due(5000, 99, 100));
        assert!(RULE.due(2000, 100, 100));
        let half = SnapshotRule {
            log_ratio: 0.5,
            ..RULE
        };
        assert!(half.due(2000, 50, 100));
        let zero = SnapshotRule {
            log_ratio: 0.0,
            ..RULE
        };
        assert!(zero.due(2000, 0, u64::MAX), "ratio 0: entries alone");
    }

    /// Drives a scheduler through a run where each entry adds `entry_bytes` to the log
    /// and `state_per_entry` to the state, the snapshot completing at once when
    /// triggered; returns the indices at which snapshots were taken.
    fn simulate(entries: u64, entry_bytes: u64, state_base: u64, state_per_entry: u64) -> Vec<u64> {
        let mut s = Scheduler::new(RULE);
        let now = Instant::now();
        let mut p = Progress::default();
        let mut taken = Vec::new();
        for index in 1..=entries {
            p.applied_index = index;
            p.log_bytes += entry_bytes;
            if s.observe(p, now) == Decision::Build {
                // Built at once: the next observation sees it.
                p.snapshot_index = index;
                p.snapshot_bytes = state_base + state_per_entry * index;
                taken.push(index);
            }
        }
        taken
    }

    #[test]
    fn small_queue_snapshots_every_after_logs_entries() {
        // The consumer keeps the state at ~100 KB; entries are ~3 KB (10 reports).
        let taken = simulate(10_000, 3_000, 100_000, 0);
        assert_eq!(taken, vec![2000, 4000, 6000, 8000, 10_000]);
    }

    #[test]
    fn big_state_waits_for_enough_log_bytes() {
        // No consumer: every entry of 3 KB stays in the state.
        let taken = simulate(100_000, 3_000, 0, 3_000);
        // The first after 2000 entries; each next one once the log since has grown as
        // large as the last snapshot, i.e. the index doubles.
        assert_eq!(taken, vec![2000, 4000, 8000, 16_000, 32_000, 64_000]);
        // Snapshot bytes written: about the log's own bytes (ratio 1), not
        // (entries / 2000) times the state.
        let written: u64 = taken.iter().map(|i| i * 3_000).sum();
        assert!(written <= 2 * 100_000 * 3_000, "{written}");
    }

    #[test]
    fn big_state_of_tables_waits_too() {
        // 300 MB of state that does not grow (tables, or a stopped consumer with the
        // producers stopped too), small entries: the log must reach 300 MB.
        let taken = simulate(200_000, 1_000, 300_000_000, 0);
        assert_eq!(taken, vec![2000]);
        let taken = simulate(400_000, 1_000, 300_000_000, 0);
        assert_eq!(taken, vec![2000, 302_000]);
    }

    #[test]
    fn one_trigger_until_the_snapshot_moves_then_retrigger_after_a_while() {
        let mut s = Scheduler::new(RULE);
        let t0 = Instant::now();
        let mut p = Progress {
            applied_index: 2000,
            ..Progress::default()
        };
        assert_eq!(s.observe(p, t0), Decision::Build);
        p.applied_index = 2500;
        p.log_bytes = 1000;
        assert_eq!(s.observe(p, t0 + Duration::from_secs(1)), Decision::Wait);
        // Lost trigger: asked again after RETRIGGER_AFTER.
        assert_eq!(s.observe(p, t0 + RETRIGGER_AFTER), Decision::Build);
        // The build of the first trigger lands: the log counts from that trigger (0 bytes).
        p.snapshot_index = 2000;
        p.snapshot_bytes = 500;
        p.log_bytes = 2000;
        assert_eq!(s.observe(p, t0 + RETRIGGER_AFTER), Decision::Wait);
        assert_eq!(s.log_bytes_since(2000), 2000);
    }

    #[test]
    fn installed_snapshot_restarts_the_count() {
        let mut s = Scheduler::new(RULE);
        let t0 = Instant::now();
        let mut p = Progress {
            applied_index: 10,
            log_bytes: 5_000,
            ..Progress::default()
        };
        assert_eq!(s.observe(p, t0), Decision::Wait);
        // A snapshot of the leader at 9000 is installed; the log then grows by 100 bytes.
        p.snapshot_index = 9000;
        p.applied_index = 9000;
        p.snapshot_bytes = 1_000_000;
        assert_eq!(s.observe(p, t0), Decision::Wait);
        p.log_bytes = 5_100;
        p.applied_index = 12_000;
        assert_eq!(s.observe(p, t0), Decision::Wait);
        assert_eq!(s.log_bytes_since(p.log_bytes), 100);
    }
}
