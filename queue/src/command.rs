//! The entries proposed through Raft and what applying them returns.

use crate::record::QueuedPacket;
use serde::{Deserialize, Serialize};

/// One write to a generic replicated table (the worker's state), applied atomically with
/// the other writes of its entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableWrite {
    /// Table name (e.g. `hosts`, `rings`).
    pub table: String,
    /// Key within the table.
    pub key: Vec<u8>,
    /// New value, or `None` to delete the key.
    pub value: Option<Vec<u8>>,
}

/// An application entry of the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Store a batch of verified packets at consecutive offsets (duplicates skipped).
    Append {
        /// The packets, in arrival order.
        batch: Vec<QueuedPacket>,
    },
    /// Record a consumer's progress: every offset below `offset` is consumed. The first
    /// commit of a consumer registers it, and from then on entries are trimmed only once
    /// it has consumed them.
    CommitOffset {
        /// Consumer name.
        consumer: String,
        /// Next offset the consumer will read.
        offset: u64,
    },
    /// Commit a consumer offset (optional) and table writes in one atomic entry.
    Apply {
        /// Consumer name (registered like `CommitOffset` when `offset` is set).
        consumer: String,
        /// Next offset the consumer will read, if it advanced.
        offset: Option<u64>,
        /// Table writes, applied in order.
        writes: Vec<TableWrite>,
    },
    /// Unregister a consumer so it no longer holds back trimming.
    RemoveConsumer {
        /// Consumer name.
        consumer: String,
    },
    /// An `Apply` that also records what the consumer's turn read besides the queue
    /// entries (opaque here: the worker's `TurnRecord`, its clock, tick time, settled
    /// commands and the probes its limiter refused), so that its writes can be computed
    /// again from the log alone and compared (`worker::replay`). Applied as `Apply`.
    ApplyRecorded {
        /// Consumer name (registered like `CommitOffset` when `offset` is set).
        consumer: String,
        /// Next offset the consumer will read, if it advanced.
        offset: Option<u64>,
        /// Table writes, applied in order.
        writes: Vec<TableWrite>,
        /// The consumer's record of the turn's other inputs.
        #[serde(with = "crate::record::byte_string")]
        input: Vec<u8>,
    },
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Append { batch } => write!(f, "Append({} packets)", batch.len()),
            Command::CommitOffset { consumer, offset } => {
                write!(f, "CommitOffset({consumer}, {offset})")
            }
            Command::Apply {
                consumer,
                offset,
                writes,
            } => write!(f, "Apply({consumer}, {offset:?}, {} writes)", writes.len()),
            Command::RemoveConsumer { consumer } => write!(f, "RemoveConsumer({consumer})"),
            Command::ApplyRecorded {
                consumer,
                offset,
                writes,
                ..
            } => write!(
                f,
                "ApplyRecorded({consumer}, {offset:?}, {} writes)",
                writes.len()
            ),
        }
    }
}

/// Result of applying an `Append`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// Offset of the first newly stored packet (when `stored == 0`: the next free offset).
    pub first_offset: u64,
    /// Offset of the last newly stored packet (when `stored == 0`: equal to `first_offset`).
    pub last_offset: u64,
    /// Packets skipped because an identical (sender, session, seq) was already stored.
    pub duplicates: usize,
    /// Packets newly stored.
    pub stored: usize,
}

/// What applying an entry returned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Blank and membership entries.
    #[default]
    None,
    /// An `Append` was applied.
    Appended(AppendResult),
    /// A `CommitOffset`, `Apply` or `RemoveConsumer` was applied.
    Done,
    /// An `Append` was refused: the queue holds its byte budget (`[queue] max_bytes`).
    /// Nothing of the batch was stored; retry once the consumer has caught up.
    QueueFull {
        /// Bytes held when the append was refused.
        held_bytes: u64,
        /// The budget.
        max_bytes: u64,
    },
}
