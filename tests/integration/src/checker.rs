//! The fault-injection suite's checker (docs/reliability.md): a pure function of the
//! recorded history of a run. Every client operation is recorded with when it was invoked
//! and when it completed (time since the run started) and what it returned; the checker
//! then looks for what a correct replicated queue can never show, whatever failed:
//!
//! - [`AnomalyKind::LostAppend`]: an acknowledged append whose packets no read ever saw
//!   (the consumer reads every offset once the cluster is healed);
//! - [`AnomalyKind::DuplicateAppend`]: one packet stored at two offsets;
//! - [`AnomalyKind::OrderDisagreement`]: two reads (possibly served by different leaders)
//!   returning different packets at one offset;
//! - [`AnomalyKind::AckOffsetMismatch`]: an append acknowledged at offsets where its
//!   packets are not;
//! - [`AnomalyKind::StaleRead`]: a read that ends before an append acknowledged before
//!   the read began;
//! - [`AnomalyKind::OffsetMovedBack`]: a read showing the queue start below a consumer
//!   offset whose commit was acknowledged before the read began;
//! - [`AnomalyKind::ReplicaDivergence`]: two nodes at the same applied index whose
//!   replicated states differ (digests taken once the cluster is healed and idle).
//!
//! An operation that failed or timed out may or may not have taken effect: the checker
//! never counts it either way.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A packet of the workload: (sender, report id).
pub type PacketId = (u64, u64);

/// One append call.
#[derive(Clone, Debug)]
pub struct AppendOp {
    pub ids: Vec<PacketId>,
    pub invoked: Duration,
    pub completed: Duration,
    /// `Ok((first_offset, stored, duplicates))` when acknowledged.
    pub result: Result<(u64, usize, usize), String>,
}

/// One read call.
#[derive(Clone, Debug)]
pub struct ReadOp {
    pub from: u64,
    pub max: usize,
    pub invoked: Duration,
    pub completed: Duration,
    pub result: Result<Vec<(u64, PacketId)>, String>,
}

/// One consumer offset commit.
#[derive(Clone, Debug)]
pub struct CommitOp {
    pub offset: u64,
    pub invoked: Duration,
    pub completed: Duration,
    pub ok: bool,
}

/// Everything the clients did in one run.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub appends: Vec<AppendOp>,
    pub reads: Vec<ReadOp>,
    pub commits: Vec<CommitOp>,
    /// Each node's state digest at the end: (node, applied index, digest).
    pub digests: Vec<(u64, u64, String)>,
    /// Another consumer (the workers) holds the queue back too: the queue then starts at
    /// or below the workload consumer's offset, and a start that moved back is found by
    /// comparing reads with each other instead.
    pub other_consumers: bool,
}

/// What the checker can find.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    LostAppend,
    DuplicateAppend,
    OrderDisagreement,
    AckOffsetMismatch,
    StaleRead,
    OffsetMovedBack,
    ReplicaDivergence,
    /// A node's stored log, replayed into a fresh worker, computed another worker entry or
    /// another state (`crate::replay`; not from the history).
    WorkerReplay,
}

impl AnomalyKind {
    /// Every kind, in report order.
    pub const ALL: [AnomalyKind; 8] = [
        AnomalyKind::LostAppend,
        AnomalyKind::DuplicateAppend,
        AnomalyKind::OrderDisagreement,
        AnomalyKind::AckOffsetMismatch,
        AnomalyKind::StaleRead,
        AnomalyKind::OffsetMovedBack,
        AnomalyKind::ReplicaDivergence,
        AnomalyKind::WorkerReplay,
    ];

    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::LostAppend => "lost-append",
            AnomalyKind::DuplicateAppend => "duplicate-append",
            AnomalyKind::OrderDisagreement => "order-disagreement",
            AnomalyKind::AckOffsetMismatch => "ack-offset-mismatch",
            AnomalyKind::StaleRead => "stale-read",
            AnomalyKind::OffsetMovedBack => "offset-moved-back",
            AnomalyKind::ReplicaDivergence => "replica-divergence",
            AnomalyKind::WorkerReplay => "worker-replay",
        }
    }
}

/// One anomaly found, with what shows it.
#[derive(Clone, Debug)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub detail: String,
}

/// Counts of what the history holds, for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub appends_ok: usize,
    pub appends_failed: usize,
    pub packets_acked: usize,
    pub reads_ok: usize,
    pub reads_failed: usize,
    pub commits_ok: usize,
    pub commits_failed: usize,
}

impl History {
    /// Operations by outcome.
    pub fn counts(&self) -> OpCounts {
        let mut c = OpCounts::default();
        for a in &self.appends {
            match a.result {
                Ok(_) => {
                    c.appends_ok += 1;
                    c.packets_acked += a.ids.len();
                }
                Err(_) => c.appends_failed += 1,
            }
        }
        for r in &self.reads {
            match r.result {
                Ok(_) => c.reads_ok += 1,
                Err(_) => c.reads_failed += 1,
            }
        }
        for m in &self.commits {
            if m.ok {
                c.commits_ok += 1;
            } else {
                c.commits_failed += 1;
            }
        }
        c
    }
}

/// Checks a history; returns every anomaly found (empty: none).
pub fn check(history: &History) -> Vec<Anomaly> {
    let mut found = Vec::new();
    let mut report = |kind, detail: String| found.push(Anomaly { kind, detail });

    // What every successful read saw, offset by offset.
    let mut at: BTreeMap<u64, PacketId> = BTreeMap::new();
    for read in &history.reads {
        let Ok(rows) = &read.result else { continue };
        for &(offset, id) in rows {
            match at.get(&offset) {
                Some(&seen) if seen != id => report(
                    AnomalyKind::OrderDisagreement,
                    format!(
                        "offset {offset}: {seen:?} in one read, {id:?} in the read at {:?}",
                        read.invoked
                    ),
                ),
                Some(_) => {}
                None => {
                    at.insert(offset, id);
                }
            }
        }
    }
    let mut offsets_of: HashMap<PacketId, Vec<u64>> = HashMap::new();
    for (&offset, &id) in &at {
        offsets_of.entry(id).or_default().push(offset);
    }
    for (id, offsets) in &offsets_of {
        if offsets.len() > 1 {
            report(
                AnomalyKind::DuplicateAppend,
                format!("{id:?} stored at offsets {offsets:?}"),
            );
        }
    }

    // Acknowledged appends: present, where the acknowledgement said.
    // (completed, highest offset of its packets) of each acknowledged append.
    let mut acked: Vec<(Duration, u64)> = Vec::new();
    for append in &history.appends {
        let Ok((first, stored, duplicates)) = append.result else {
            continue;
        };
        let mut highest = None;
        for (i, id) in append.ids.iter().enumerate() {
            match offsets_of.get(id).and_then(|o| o.first()) {
                None => report(
                    AnomalyKind::LostAppend,
                    format!(
                        "{id:?} acknowledged at {:?} (offset {}) never read",
                        append.completed,
                        first + i as u64
                    ),
                ),
                Some(&offset) => {
                    highest = highest.max(Some(offset));
                    if duplicates == 0 && stored == append.ids.len() && offset != first + i as u64 {
                        report(
                            AnomalyKind::AckOffsetMismatch,
                            format!(
                                "{id:?} acknowledged at offset {} but read at {offset}",
                                first + i as u64
                            ),
                        );
                    }
                }
            }
        }
        if let Some(highest) = highest {
            acked.push((append.completed, highest));
        }
    }
    acked.sort();
    // The highest acknowledged offset among appends completed before `t`.
    let acked_before = |t: Duration| -> Option<u64> {
        let n = acked.partition_point(|(c, _)| *c < t);
        acked[..n].iter().map(|(_, o)| *o).max()
    };
    let committed_before = |t: Duration| -> Option<u64> {
        history
            .commits
            .iter()
            .filter(|c| c.ok && c.completed < t)
            .map(|c| c.offset)
            .max()
    };
    // Commits that may have taken effect before `t` (invoked before it, whatever their
    // outcome): the queue may legitimately start there.
    let maybe_committed_before = |t: Duration| -> Option<u64> {
        history
            .commits
            .iter()
            .filter(|c| c.invoked < t)
            .map(|c| c.offset)
            .max()
    };

    if history.other_consumers {
        queue_start_moved_back(history, &mut report);
    }
    for read in &history.reads {
        let Ok(rows) = &read.result else { continue };
        // A read that began after a commit was acknowledged never shows the queue
        // starting below it (when the workload is the only consumer).
        if let (Some(&(first, _)), Some(committed), false) = (
            rows.first(),
            committed_before(read.invoked),
            history.other_consumers,
        ) {
            if first < committed {
                report(
                    AnomalyKind::OffsetMovedBack,
                    format!(
                        "read at {:?} from {} starts at {first}, below the offset {committed} \
                         committed before it",
                        read.invoked, read.from
                    ),
                );
            }
        }
        // A read that began after an append was acknowledged reaches it (unless the page
        // was full, or the packets may have been consumed and trimmed).
        let Some(needed) = acked_before(read.invoked) else {
            continue;
        };
        let trimmed_to = maybe_committed_before(read.completed).unwrap_or(0);
        if rows.len() >= read.max || needed < read.from || needed < trimmed_to {
            continue;
        }
        let reached = rows.last().map(|&(o, _)| o);
        if reached.is_none_or(|r| r < needed) {
            report(
                AnomalyKind::StaleRead,
                format!(
                    "read at {:?} from {} ended at {reached:?}; offset {needed} was acknowledged \
                     before it began",
                    read.invoked, read.from
                ),
            );
        }
    }
    // Replicas at one applied index hold one state.
    let mut by_index: BTreeMap<u64, Vec<(u64, &str)>> = BTreeMap::new();
    for (node, applied, digest) in &history.digests {
        by_index
            .entry(*applied)
            .or_default()
            .push((*node, digest.as_str()));
    }
    for (applied, nodes) in by_index {
        if nodes.iter().any(|(_, d)| *d != nodes[0].1) {
            report(
                AnomalyKind::ReplicaDivergence,
                format!("at applied index {applied}: {nodes:?}"),
            );
        }
    }
    found
}

/// Anomalies by kind (every kind listed, zeros included).
pub fn by_kind(anomalies: &[Anomaly]) -> BTreeMap<AnomalyKind, usize> {
    let mut counts: BTreeMap<AnomalyKind, usize> =
        AnomalyKind::ALL.iter().map(|k| (*k, 0)).collect();
    for a in anomalies {
        *counts.entry(a.kind).or_default() += 1;
    }
    counts
}

/// Trimmed packets never come back, whoever consumed them: a read that began after
/// another one completed never returns an offset below where that one showed the queue
/// starting. A read shows where the queue starts when its first row lies above the
/// offset it asked for.
fn queue_start_moved_back(history: &History, report: &mut impl FnMut(AnomalyKind, String)) {
    let firsts: Vec<(&ReadOp, u64)> = history
        .reads
        .iter()
        .filter_map(|r| Some((r, r.result.as_ref().ok()?.first()?.0)))
        .collect();
    let mut by_completion: Vec<(Duration, u64)> = firsts
        .iter()
        .filter(|(r, first)| *first > r.from)
        .map(|(r, first)| (r.completed, *first))
        .collect();
    by_completion.sort();
    let mut by_invocation: Vec<&(&ReadOp, u64)> = firsts.iter().collect();
    by_invocation.sort_by_key(|(r, _)| r.invoked);
    let (mut next, mut highest) = (0, None::<(u64, Duration)>);
    for (read, start) in by_invocation {
        while next < by_completion.len() && by_completion[next].0 < read.invoked {
            let (done, s) = by_completion[next];
            if highest.is_none_or(|(h, _)| s > h) {
                highest = Some((s, done));
            }
            next += 1;
        }
        if let Some((h, done)) = highest.filter(|(h, _)| start < h) {
            report(
                AnomalyKind::OffsetMovedBack,
                format!(
                    "read at {:?} from {} returned offset {start}; a read completed at \
                     {done:?} showed the queue starting at {h}",
                    read.invoked, read.from
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    //! One test per anomaly kind: the checker finds it in a history that shows it, and
    //! finds nothing in the same history without it.
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn append(ids: &[u64], first: u64, invoked: u64, completed: u64) -> AppendOp {
        AppendOp {
            ids: ids.iter().map(|&s| (1, s)).collect(),
            invoked: ms(invoked),
            completed: ms(completed),
            result: Ok((first, ids.len(), 0)),
        }
    }

    fn read(from: u64, rows: &[(u64, u64)], invoked: u64, completed: u64) -> ReadOp {
        ReadOp {
            from,
            max: 100,
            invoked: ms(invoked),
            completed: ms(completed),
            result: Ok(rows.iter().map(|&(o, s)| (o, (1, s))).collect()),
        }
    }

    fn commit(offset: u64, invoked: u64, completed: u64) -> CommitOp {
        CommitOp {
            offset,
            invoked: ms(invoked),
            completed: ms(completed),
            ok: true,
        }
    }

    /// Two appends, read in full after both: correct.
    fn good() -> History {
        History {
            appends: vec![append(&[10, 11], 0, 0, 5), append(&[12], 2, 6, 9)],
            reads: vec![read(0, &[(0, 10), (1, 11), (2, 12)], 10, 12)],
            commits: vec![],
            digests: vec![],
            other_consumers: false,
        }
    }

    fn kinds(h: &History) -> Vec<AnomalyKind> {
        check(h).into_iter().map(|a| a.kind).collect()
    }

    #[test]
    fn a_correct_history_has_no_anomaly() {
        assert_eq!(kinds(&good()), vec![]);
        assert_eq!(good().counts().packets_acked, 3);
    }

    #[test]
    fn finds_a_lost_append() {
        let mut h = good();
        h.reads = vec![read(0, &[(0, 10), (1, 11)], 20, 21)];
        h.reads[0].max = 2; // a full page: not a stale read, only the loss
        assert_eq!(kinds(&h), vec![AnomalyKind::LostAppend]);
    }

    #[test]
    fn finds_a_duplicate() {
        let mut h = good();
        h.reads.push(read(3, &[(3, 12)], 20, 21));
        assert_eq!(kinds(&h), vec![AnomalyKind::DuplicateAppend]);
    }

    #[test]
    fn finds_two_reads_disagreeing_on_an_offset() {
        let mut h = good();
        h.reads.push(read(1, &[(1, 12), (2, 11)], 20, 21));
        assert_eq!(
            kinds(&h),
            vec![
                AnomalyKind::OrderDisagreement,
                AnomalyKind::OrderDisagreement
            ]
        );
    }

    #[test]
    fn finds_an_acknowledgement_at_the_wrong_offset() {
        let mut h = good();
        h.appends[1].result = Ok((7, 1, 0));
        assert_eq!(kinds(&h), vec![AnomalyKind::AckOffsetMismatch]);
    }

    #[test]
    fn finds_a_stale_read() {
        let mut h = good();
        // Began after the second append was acknowledged, yet ends before it.
        h.reads.push(read(0, &[(0, 10), (1, 11)], 15, 16));
        assert_eq!(kinds(&h), vec![AnomalyKind::StaleRead]);
        // Concurrent with the append: not stale.
        let mut h = good();
        h.reads.push(read(0, &[(0, 10), (1, 11)], 7, 8));
        assert_eq!(kinds(&h), vec![]);
    }

    #[test]
    fn finds_a_consumer_offset_moving_back() {
        let mut h = good();
        h.commits.push(commit(2, 12, 13));
        // The queue shown from offset 0 after offset 2 was committed: the restart bug of
        // issue 25 (a leader reading its snapshot's state).
        h.reads.push(read(0, &[(0, 10), (1, 11), (2, 12)], 14, 15));
        assert_eq!(kinds(&h), vec![AnomalyKind::OffsetMovedBack]);
        // After the commit the queue starts at 2: correct; an empty read is too.
        let mut h = good();
        h.commits.push(commit(2, 12, 13));
        h.reads.push(read(0, &[(2, 12)], 14, 15));
        h.reads.push(read(3, &[], 16, 17));
        assert_eq!(kinds(&h), vec![]);
    }

    #[test]
    fn finds_the_queue_start_moving_back_with_another_consumer() {
        // Another consumer lags: the queue may start below the workload's offset...
        let mut h = good();
        h.other_consumers = true;
        h.commits.push(commit(2, 12, 13));
        h.reads.push(read(0, &[(1, 11), (2, 12)], 14, 15));
        assert_eq!(kinds(&h), vec![]);
        // ...but not below where an earlier read saw it start.
        h.reads.push(read(0, &[(0, 10), (1, 11), (2, 12)], 16, 17));
        assert_eq!(kinds(&h), vec![AnomalyKind::OffsetMovedBack]);
        // Concurrent reads may see either.
        h.reads.pop();
        h.reads.push(read(0, &[(0, 10), (1, 11), (2, 12)], 14, 15));
        assert_eq!(kinds(&h), vec![]);
    }

    #[test]
    fn finds_replicas_that_diverge() {
        let mut h = good();
        h.digests = vec![
            (1, 40, "aa".into()),
            (2, 40, "aa".into()),
            (3, 39, "bb".into()),
        ];
        assert_eq!(kinds(&h), vec![]);
        h.digests.push((3, 40, "cc".into()));
        assert_eq!(kinds(&h), vec![AnomalyKind::ReplicaDivergence]);
    }

    #[test]
    fn failed_operations_count_neither_way() {
        let mut h = good();
        h.appends.push(AppendOp {
            ids: vec![(1, 99)],
            invoked: ms(1),
            completed: ms(3),
            result: Err("timeout".into()),
        });
        h.commits.push(CommitOp {
            offset: 3,
            invoked: ms(11),
            completed: ms(30),
            ok: false,
        });
        assert_eq!(kinds(&h), vec![]);
        assert_eq!(h.counts().appends_failed, 1);
    }
}
