//! The worker-replay check on real processes: a stopped node's stored log (its snapshot
//! and the entries after it, `replica::offline`) replayed into a fresh worker
//! (`worker::replay`) with the node's own config, up to an index the live cluster agreed
//! on, and the replayed state's digest compared with the live one.

use std::path::Path;
use worker::replay::{Replay, ReplayReport};

/// What replaying one node's log gave.
#[derive(Debug)]
pub struct NodeReplay {
    /// What the replay checked, mismatches included.
    pub report: ReplayReport,
    /// The index the snapshot the replay started from covers (0: the log from its start).
    pub snapshot_index: u64,
    /// The last index replayed.
    pub replayed_to: u64,
    /// `QueueState::digest` of the replayed state.
    pub digest: String,
}

/// Replays the log of the stopped node with `config` (its `cma` TOML) up to index `upto`,
/// which the live nodes reported as applied with one digest.
pub fn replay_node(config: &Path, upto: u64) -> Result<NodeReplay, String> {
    let config = cma::config::Config::load(config).map_err(|e| format!("{e:?}"))?;
    let section = config
        .worker
        .as_ref()
        .ok_or("the node runs no worker ([worker] missing)")?;
    let settings = section.settings().map_err(|e| format!("{e:?}"))?;
    let dedup = queue::state::DedupLimits {
        window: config.queue.dedup_window,
        sessions: config.queue.dedup_sessions,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let stored = runtime
        .block_on(replica::offline::read_stored_log(
            &config.data_dir,
            dedup,
            config.queue.max_bytes,
        ))
        .map_err(|e| format!("reading the stored log: {e:?}"))?;
    if stored.snapshot_index > upto {
        return Err(format!(
            "the snapshot covers index {}, past {upto}",
            stored.snapshot_index
        ));
    }
    let snapshot_index = stored.snapshot_index;
    let mut replay = Replay::resume(stored.state, settings, section.fsm_config());
    let mut replayed_to = snapshot_index;
    for entry in stored.entries.iter().take_while(|e| e.index <= upto) {
        replay
            .entry(entry.index, entry.term, entry.command.as_ref())
            .map_err(|e| format!("index {}: {e:?}", entry.index))?;
        replayed_to = entry.index;
    }
    let (report, state) = replay.finish();
    Ok(NodeReplay {
        report,
        snapshot_index,
        replayed_to,
        digest: state.digest(),
    })
}

impl NodeReplay {
    /// One line for a report: where the replay started and ended, what it computed again.
    pub fn summary(&self, node: u64) -> String {
        format!(
            "worker replay of node {node}: index {} to {}, {} turns ({} queue entries, {} \
             leaderships), {} mismatches",
            self.snapshot_index,
            self.replayed_to,
            self.report.turns,
            self.report.entries,
            self.report.leaderships,
            self.report.mismatches.len()
        )
    }

    /// What is wrong with this replay against the live state `digest` at index `upto`:
    /// its mismatches (the first five), or another end or digest.
    pub fn problems(&self, node: u64, upto: u64, digest: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .report
            .mismatches
            .iter()
            .take(5)
            .map(|m| format!("node {node} index {}: {}", m.index, m.what))
            .collect();
        if self.replayed_to != upto || self.digest != digest {
            out.push(format!(
                "node {node}: replayed to {} with digest {}, the live state at {upto} is {digest}",
                self.replayed_to, self.digest
            ));
        }
        out
    }
}
