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
use super::topology::TopologyView;
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
/// Table of the topology operators see (one row, [`TOPOLOGY_KEY`], JSON
/// [`TopologyView`]).
pub const TOPOLOGY: &str = "topology";
/// Key of the topology row.
pub const TOPOLOGY_KEY: &[u8] = b"current";
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
        Change::Topology(view) => put(TOPOLOGY, TOPOLOGY_KEY.to_vec(), json(TOPOLOGY, view)?),
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

/// The current topology view (empty before the first host joined).
pub fn topology(queue: &QueueState) -> TopologyView {
    queue
        .table_get(TOPOLOGY, TOPOLOGY_KEY)
        .and_then(|v| serde_json::from_slice(v).ok())
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    //! The JSON of every row type, pinned: the admin API serves these bytes and
    //! `cmactl --json` prints them, so a change here breaks operators' scripts.
    use super::*;
    use crate::worker::state::{EventData, EventKind};
    use crate::worker::views::{FailureKind, FailureState, HostStatus, RingKind, WorkerStatus};
    use fsm::{Evidence, ProbeId, ProbeTarget, ReportKind, SwitchId};
    use proto::HostId;

    fn stored(change: &Change) -> String {
        String::from_utf8(encode(change).unwrap().value.unwrap()).unwrap()
    }

    #[test]
    fn host_row_json_is_pinned() {
        let row = HostRow {
            id: 3,
            hostname: "h3".into(),
            addr: "10.0.0.3:7500".parse().unwrap(),
            switch: Some("sw1".into()),
            status: HostStatus::Dead,
            since_us: 5,
            watchers: vec![2, 4],
            version: "0.1.0".into(),
        };
        let json = r#"{"id":3,"hostname":"h3","addr":"10.0.0.3:7500","switch":"sw1","status":"dead","since_us":5,"watchers":[2,4],"version":"0.1.0"}"#;
        assert_eq!(stored(&Change::Host(row.clone())), json);
        assert_eq!(serde_json::from_str::<HostRow>(json).unwrap(), row);
        for (status, name) in [
            (HostStatus::Up, "up"),
            (HostStatus::Suspect, "suspect"),
            (HostStatus::Dead, "dead"),
            (HostStatus::Left, "left"),
        ] {
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{name}\"")
            );
            assert_eq!(status.to_string(), name);
        }
    }

    #[test]
    fn ring_row_json_is_pinned() {
        for (kind, name) in [
            (RingKind::Switch, "switch"),
            (RingKind::Top, "top"),
            (RingKind::Flat, "flat"),
        ] {
            let row = RingRow {
                name: "r".into(),
                kind,
                members: vec![1, 2],
            };
            let json = format!(r#"{{"name":"r","kind":"{name}","members":[1,2]}}"#);
            assert_eq!(stored(&Change::Ring("r".into(), Some(row.clone()))), json);
            assert_eq!(serde_json::from_str::<RingRow>(&json).unwrap(), row);
        }
    }

    #[test]
    fn failure_row_json_is_pinned() {
        let row = FailureRow {
            id: 7,
            kind: FailureKind::SwitchDown,
            subject: "sw1".into(),
            hosts: vec![1, 2],
            state: FailureState::Open,
            at_us: 9,
            closed_us: None,
            summary: "switch sw1 is down (2 hosts)".into(),
            evidence: vec![
                Evidence::Report {
                    at: 8,
                    reporter: HostId(4),
                    about: HostId(2),
                    kind: ReportKind::Dead,
                },
                Evidence::Probe {
                    probe_id: ProbeId(1),
                    from: HostId(5),
                    target: ProbeTarget::Switch(SwitchId("sw1".into())),
                    reachable: Some(false),
                },
            ],
        };
        let json = concat!(
            r#"{"id":7,"kind":"switch_down","subject":"sw1","hosts":[1,2],"state":"open","#,
            r#""at_us":9,"closed_us":null,"summary":"switch sw1 is down (2 hosts)","#,
            r#""evidence":[{"Report":{"at":8,"reporter":4,"about":2,"kind":"Dead"}},"#,
            r#"{"Probe":{"probe_id":1,"from":5,"target":{"Switch":"sw1"},"reachable":false}}]}"#
        );
        assert_eq!(stored(&Change::Failure(row.clone())), json);
        assert_eq!(serde_json::from_str::<FailureRow>(json).unwrap(), row);
        // Rows written before evidence was typed (a JSON value, keys sorted) still read.
        let old = json.replace(
            r#"{"at":8,"reporter":4,"about":2,"kind":"Dead"}"#,
            r#"{"about":2,"at":8,"kind":"Dead","reporter":4}"#,
        );
        assert_eq!(serde_json::from_str::<FailureRow>(&old).unwrap(), row);
        for (kind, name) in [
            (FailureKind::Dead, "dead"),
            (FailureKind::LinkFault, "link_fault"),
            (FailureKind::ReporterIsolated, "reporter_isolated"),
            (FailureKind::SwitchDown, "switch_down"),
            (FailureKind::RouterDown, "router_down"),
            (FailureKind::FalseAlarm, "false_alarm"),
            (FailureKind::Recovered, "recovered"),
            (FailureKind::Left, "left"),
        ] {
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
            assert_eq!(
                EventKind::Verdict(kind).to_string(),
                format!("verdict.{name}")
            );
        }
        assert_eq!(
            serde_json::to_string(&FailureState::Closed).unwrap(),
            "\"closed\""
        );
    }

    #[test]
    fn event_json_is_pinned() {
        let verdict = WorkerEvent {
            id: 12,
            at_us: 9,
            kind: EventKind::Verdict(FailureKind::Dead),
            summary: "host 3 is dead".into(),
            data: EventData::Verdict {
                failure: 1,
                hosts: vec![3],
                evidence: vec![Evidence::Report {
                    at: 8,
                    reporter: HostId(2),
                    about: HostId(3),
                    kind: ReportKind::Dead,
                }],
            },
        };
        // `data` is an object with sorted keys, as `serde_json::json!` produced it.
        assert_eq!(
            stored(&Change::Event(verdict)),
            concat!(
                r#"{"id":12,"at_us":9,"kind":"verdict.dead","summary":"host 3 is dead","#,
                r#""data":{"evidence":[{"Report":{"about":3,"at":8,"kind":"Dead","reporter":2}}],"#,
                r#""failure":1,"hosts":[3]}}"#
            )
        );
        let joined = WorkerEvent {
            id: 1,
            at_us: 2,
            kind: EventKind::HostJoined,
            summary: "s".into(),
            data: EventData::HostStarted {
                host: 3,
                hostname: "h3".into(),
                addr: "10.0.0.3:7500".parse().unwrap(),
                switch: None,
            },
        };
        assert_eq!(
            stored(&Change::Event(joined)),
            concat!(
                r#"{"id":1,"at_us":2,"kind":"host.joined","summary":"s","#,
                r#""data":{"addr":"10.0.0.3:7500","host":3,"hostname":"h3","switch":null}}"#
            )
        );
        let closed = EventData::FailureClosed { failure: 4 };
        assert_eq!(serde_json::to_string(&closed).unwrap(), r#"{"failure":4}"#);
        assert_eq!(EventKind::FailureClosed.to_string(), "failure.closed");
        assert_eq!(EventKind::HostRestarted.to_string(), "host.restarted");
        assert_eq!(EventKind::HostDiscovery.to_string(), "host.discovery");
    }

    #[test]
    fn worker_status_json_is_pinned() {
        let status = WorkerStatus {
            offset: 1,
            queue_next: 2,
            backlog: 1,
            hosts_up: 3,
            hosts_dead: 1,
            hosts_left: 0,
            open_failures: 1,
        };
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            r#"{"offset":1,"queue_next":2,"backlog":1,"hosts_up":3,"hosts_dead":1,"hosts_left":0,"open_failures":1}"#
        );
    }

    #[test]
    fn deletions_and_commands_use_their_keys() {
        let w = encode(&Change::Ring("flat".into(), None)).unwrap();
        assert_eq!(
            (w.table.as_str(), w.key, w.value),
            (RINGS, b"flat".to_vec(), None)
        );
        let w = encode(&Change::EventExpired(3)).unwrap();
        assert_eq!(
            (w.table.as_str(), w.key, w.value),
            (EVENTS, id_key(3), None)
        );
        let w = encode(&Change::CommandSettled(5)).unwrap();
        assert_eq!(
            (w.table.as_str(), w.key, w.value),
            (COMMANDS, id_key(5), None)
        );
    }
}
