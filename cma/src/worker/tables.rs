//! The edge between the worker's typed rows and the replicated tables: table names, keys
//! and encodings live here and nowhere else. The core ([`super::state`]) returns typed
//! [`Change`]s; the run loop turns them into [`TableWrite`]s with [`encode`]; the admin
//! API and the run loop read rows back with the readers below.
//!
//! Encodings: the operator rows (hosts, rings, failures, events) and the worker state row
//! are JSON (what the admin API serves, and what `cmactl --json` prints); pending commands
//! are postcard.

use super::outbox::Outbound;
use super::state::{Change, WorkerEvent, WorkerState};
use super::views::{FailureRow, HostRow, RingRow};
use crate::raft::queue_state::QueueState;
use crate::sinks::Event;
use queue::TableWrite;
use serde::de::DeserializeOwned;

/// Table of [`HostRow`], keyed by host id ([`id_key`]).
pub const HOSTS: &str = "hosts";
/// Table of [`RingRow`], keyed by ring name.
pub const RINGS: &str = "rings";
/// Table of [`FailureRow`], keyed by failure id ([`id_key`]).
pub const FAILURES: &str = "failures";
/// Table of [`crate::sinks::Event`], keyed by event id ([`id_key`]).
pub const EVENTS: &str = "events";
/// Table of the worker's own state (one row, [`STATE_KEY`]).
pub const WORKER: &str = "worker";
/// Key of the worker's state row.
pub const STATE_KEY: &[u8] = b"state";
/// Table of commands not yet acknowledged (postcard [`Outbound`]), keyed by command id
/// ([`id_key`]).
pub const COMMANDS: &str = "commands";

/// Key of a row addressed by a number: big-endian, so rows sort by number.
pub fn id_key(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// A row that could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// JSON encoding failed.
    #[error("JSON encoding of a {table} row")]
    Json {
        /// The table.
        table: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// Postcard encoding failed.
    #[error("postcard encoding of a {table} row")]
    Postcard {
        /// The table.
        table: &'static str,
        /// Why.
        #[source]
        source: postcard::Error,
    },
}

/// The worker state row could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("the committed worker state does not decode")]
pub struct DecodeError(#[from] serde_json::Error);

fn json(table: &'static str, value: &impl serde::Serialize) -> Result<Vec<u8>, EncodeError> {
    serde_json::to_vec(value).map_err(|source| EncodeError::Json { table, source })
}

fn put(table: &str, key: Vec<u8>, value: Vec<u8>) -> TableWrite {
    TableWrite {
        table: table.to_string(),
        key,
        value: Some(value),
    }
}

fn delete(table: &str, key: Vec<u8>) -> TableWrite {
    TableWrite {
        table: table.to_string(),
        key,
        value: None,
    }
}

/// An event as stored in the events table and handed to the sinks.
pub fn sink_event(event: &WorkerEvent) -> Result<Event, EncodeError> {
    let data = serde_json::to_value(&event.data).map_err(|source| EncodeError::Json {
        table: EVENTS,
        source,
    })?;
    Ok(Event {
        id: event.id,
        at_us: event.at_us,
        kind: event.kind.to_string(),
        summary: event.summary.clone(),
        data,
    })
}

/// The table write of one change.
pub fn encode(change: &Change) -> Result<TableWrite, EncodeError> {
    Ok(match change {
        Change::Host(row) => put(HOSTS, id_key(row.id), json(HOSTS, row)?),
        Change::Ring(name, Some(row)) => put(RINGS, name.as_bytes().to_vec(), json(RINGS, row)?),
        Change::Ring(name, None) => delete(RINGS, name.as_bytes().to_vec()),
        Change::Failure(row) => put(FAILURES, id_key(row.id), json(FAILURES, row)?),
        Change::Event(event) => put(EVENTS, id_key(event.id), json(EVENTS, &sink_event(event)?)?),
        Change::EventExpired(id) => delete(EVENTS, id_key(*id)),
        Change::Command(command) => {
            let bytes = postcard::to_allocvec(command).map_err(|source| EncodeError::Postcard {
                table: COMMANDS,
                source,
            })?;
            put(COMMANDS, id_key(command.command.id), bytes)
        }
        Change::CommandSettled(id) => delete(COMMANDS, id_key(*id)),
    })
}

/// The encoded worker state (the one row of the `worker` table).
pub fn encode_state(state: &WorkerState) -> Result<Vec<u8>, EncodeError> {
    json(WORKER, state)
}

/// The table write that stores an encoded worker state.
pub fn state_write(encoded: Vec<u8>) -> TableWrite {
    put(WORKER, STATE_KEY.to_vec(), encoded)
}

/// Decodes a worker state encoded by [`encode_state`].
pub fn decode_state(bytes: &[u8]) -> Result<WorkerState, DecodeError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// The committed worker state, or a fresh one using `config` if none was committed.
pub fn load_state(queue: &QueueState, config: fsm::Config) -> Result<WorkerState, DecodeError> {
    match queue.table_get(WORKER, STATE_KEY) {
        Some(bytes) => decode_state(bytes),
        None => Ok(WorkerState::new(config)),
    }
}

/// Rows of a JSON table in key order; a row that does not decode (written by another
/// version) is skipped.
fn json_rows<T: DeserializeOwned>(queue: &QueueState, table: &str) -> Vec<T> {
    match queue.table(table) {
        Some(t) => t
            .values()
            .filter_map(|v| serde_json::from_slice(v).ok())
            .collect(),
        None => Vec::new(),
    }
}

/// Every host row, by id.
pub fn hosts(queue: &QueueState) -> Vec<HostRow> {
    json_rows(queue, HOSTS)
}

/// One host row.
pub fn host(queue: &QueueState, id: u64) -> Option<HostRow> {
    queue
        .table_get(HOSTS, &id_key(id))
        .and_then(|v| serde_json::from_slice(v).ok())
}

/// Every ring row, by name.
pub fn rings(queue: &QueueState) -> Vec<RingRow> {
    json_rows(queue, RINGS)
}

/// Every failure row, by id.
pub fn failures(queue: &QueueState) -> Vec<FailureRow> {
    json_rows(queue, FAILURES)
}

/// At most `limit` events with an id of at least `from`, by id.
pub fn events_from(queue: &QueueState, from: u64, limit: usize) -> Vec<Event> {
    match queue.table(EVENTS) {
        Some(t) => t
            .range(id_key(from)..)
            .filter_map(|(_, v)| serde_json::from_slice(v).ok())
            .take(limit)
            .collect(),
        None => Vec::new(),
    }
}

/// Commands committed and not yet acknowledged, by id.
pub fn pending_commands(queue: &QueueState) -> Vec<Outbound> {
    match queue.table(COMMANDS) {
        Some(t) => t
            .values()
            .filter_map(|v| postcard::from_bytes(v).ok())
            .collect(),
        None => Vec::new(),
    }
}
