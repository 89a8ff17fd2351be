//! A stopped node's data directory read back: the state of its last snapshot and the log
//! entries stored after it, with the term of the leader that wrote each. For checks that
//! compute again from the log (`worker::replay`) and for post-mortems. Opens the storage
//! as a restarting node would (so never while the node runs), and needs a tokio runtime.

use crate::node::{open_storage, NodeError, NodeMetrics};
use crate::TypeConfig;
use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::EntryPayload;
use queue::state::{DedupLimits, QueueState};
use queue::Command;
use std::path::Path;

/// One stored log entry.
#[derive(Clone, Debug)]
pub struct StoredEntry {
    /// Its log index.
    pub index: u64,
    /// The term of the leader that wrote it.
    pub term: u64,
    /// Its command; `None` for blank and membership entries.
    pub command: Option<Command>,
}

/// What a data directory holds.
#[derive(Debug)]
pub struct StoredLog {
    /// The log index the snapshot covers (0: no snapshot).
    pub snapshot_index: u64,
    /// The state as of the snapshot (the empty state without one).
    pub state: QueueState,
    /// The stored entries after the snapshot, in index order. The tail may hold entries
    /// that were never committed: callers stop at an index known to be committed.
    pub entries: Vec<StoredEntry>,
}

/// Reads the snapshot and the stored entries of the node whose data directory is
/// `data_dir`, with its `[queue]` dedup limits and byte budget.
pub async fn read_stored_log(
    data_dir: &Path,
    dedup: DedupLimits,
    max_queue_bytes: u64,
) -> Result<StoredLog, NodeError> {
    let metrics = NodeMetrics::default();
    let (mut log_store, state_machine) =
        open_storage(data_dir, dedup, max_queue_bytes, &metrics, None)?;
    let shared = state_machine.shared();
    let snapshot_index = shared.applied_index();
    let state = shared.read().clone();
    let last = log_store
        .get_log_state()
        .await?
        .last_log_id
        .map_or(0, |id| id.index);
    let mut reader = log_store.get_log_reader().await;
    let stored: Vec<openraft::Entry<TypeConfig>> = if last > snapshot_index {
        reader
            .try_get_log_entries(snapshot_index + 1..=last)
            .await?
    } else {
        Vec::new()
    };
    let entries = stored
        .into_iter()
        .map(|e| StoredEntry {
            index: e.log_id.index,
            term: e.log_id.leader_id.term,
            command: match e.payload {
                EntryPayload::Normal(command) => Some(command),
                EntryPayload::Blank | EntryPayload::Membership(_) => None,
            },
        })
        .collect();
    Ok(StoredLog {
        snapshot_index,
        state,
        entries,
    })
}
