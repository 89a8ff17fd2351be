//! The edge between the worker's typed rows and the replicated tables: table names, keys
//! and encodings live here and nowhere else. The core ([`super::state`]) returns typed
//! [`Change`]s; the run loop turns them into [`TableWrite`]s with [`encode`]; the admin
//! API and the run loop read rows back with the readers below.
//!
//! Encodings: the operator rows (hosts, ring headers, failures, events) are JSON (what the
//! admin API serves, and what `cmactl --json` prints: hosts, failures and events are served
//! as the stored bytes, [`RawRow`], not parsed and printed again); ring places, pending commands and
//! the worker's own rows (host records, fsm group rows, the counters row) are postcard.
//!
//! Rings are stored so that one death does not rewrite a 10,000-member row: a header row
//! per ring (`rings`, keyed by name) and one row per member (`ring_members`, keyed by
//! ring and member) naming the member it follows; [`rings`] puts them back in order.

use super::outbox::Outbound;
use super::state::{Change, HostRecord, RingSlot, WorkerEvent, WorkerMeta, WorkerState};
use api::topology::TopologyView;
use api::views::{FailureRow, FailureState, HostRow, HostStatus, RingKind, RingRow};
use api::Event;
use queue::state::QueueState;
use queue::TableWrite;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// Table of [`HostRow`], keyed by host id ([`id_key`]).
pub const HOSTS: &str = "hosts";
/// Table of ring headers (`{"name":..,"kind":..}`), keyed by ring name.
pub const RINGS: &str = "rings";
/// Table of ring places ([`RingSlot`], postcard), keyed by [`ring_member_key`].
pub const RING_MEMBERS: &str = "ring_members";
/// Table of the worker's [`HostRecord`]s (postcard), keyed by host id ([`id_key`]).
pub const WORKER_HOSTS: &str = "worker_hosts";
/// Table of the fsm's group rows ([`fsm::GroupEntry`], postcard), keyed by [`fsm_key`].
pub const WORKER_FSM: &str = "worker_fsm";
/// Table of [`FailureRow`], keyed by failure id ([`id_key`]).
pub const FAILURES: &str = "failures";
/// Table of [`api::Event`], keyed by event id ([`id_key`]).
pub const EVENTS: &str = "events";
/// Table of the worker's counters (one row, [`META_KEY`]).
pub const WORKER: &str = "worker";
/// Key of the counters row ([`WorkerMeta`], postcard).
pub const META_KEY: &[u8] = b"meta";
/// Key of the whole-state JSON row older versions wrote (ignored: see docs/worker.md).
pub const LEGACY_STATE_KEY: &[u8] = b"state";
/// Table of the switches operators see (JSON [`SwitchView`]), keyed by switch name.
pub const TOPOLOGY_SWITCHES: &str = "topology_switches";
/// Table of the routers operators see (JSON [`RouterView`]), keyed by router name.
pub const TOPOLOGY_ROUTERS: &str = "topology_routers";
/// Table of commands not yet acknowledged (postcard [`Outbound`]), keyed by command id
/// ([`id_key`]).
pub const COMMANDS: &str = "commands";

/// Key of a row addressed by a number: big-endian, so rows sort by number.
pub fn id_key(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// The prefix of a ring's places: the name's length (u32, big-endian), then the name, so
/// no ring's prefix is another's.
fn ring_prefix(ring: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + ring.len() + 8);
    key.extend_from_slice(&(ring.len() as u32).to_be_bytes());
    key.extend_from_slice(ring.as_bytes());
    key
}

/// Key of a member's place in a ring: [`ring_prefix`], then the member id (big-endian).
pub fn ring_member_key(ring: &str, member: u64) -> Vec<u8> {
    let mut key = ring_prefix(ring);
    key.extend_from_slice(&member.to_be_bytes());
    key
}

/// Key of an fsm group row: a kind byte, then the switch or router name or the id.
pub fn fsm_key(key: &fsm::GroupKey) -> Vec<u8> {
    let (tag, rest): (u8, Vec<u8>) = match key {
        fsm::GroupKey::SwitchCase(s) => (1, s.0.as_bytes().to_vec()),
        fsm::GroupKey::RouterCase(r) => (2, r.0.as_bytes().to_vec()),
        fsm::GroupKey::Probe(p) => (3, id_key(p.0)),
        fsm::GroupKey::Alarm(v) => (4, id_key(v.0)),
        fsm::GroupKey::SwitchRouter(s) => (5, s.0.as_bytes().to_vec()),
        fsm::GroupKey::Agent(h) => (6, id_key(h.0)),
    };
    let mut out = vec![tag];
    out.extend(rest);
    out
}

/// A ring's header row.
#[derive(serde::Serialize, serde::Deserialize)]
struct RingHeader {
    name: String,
    kind: RingKind,
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
    /// The turn's record (`run::TurnRecord`) could not be encoded.
    #[error("postcard encoding of the turn record")]
    Record(#[source] postcard::Error),
}

/// A row of the worker's replicated state could not be decoded (written by an
/// incompatible version).
#[derive(Debug, thiserror::Error)]
#[error("a {table} row of the committed worker state does not decode")]
pub struct DecodeError {
    /// The table.
    pub table: &'static str,
    /// Why.
    #[source]
    pub source: postcard::Error,
}

fn postcard_bytes(
    table: &'static str,
    value: &impl serde::Serialize,
) -> Result<Vec<u8>, EncodeError> {
    postcard::to_allocvec(value).map_err(|source| EncodeError::Postcard { table, source })
}

fn from_postcard<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    postcard::from_bytes(bytes).map_err(|source| DecodeError { table, source })
}

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
        Change::Ring(name, Some(kind)) => put(
            RINGS,
            name.as_bytes().to_vec(),
            json(
                RINGS,
                &RingHeader {
                    name: name.clone(),
                    kind: *kind,
                },
            )?,
        ),
        Change::Ring(name, None) => delete(RINGS, name.as_bytes().to_vec()),
        Change::RingMember { ring, member, slot } => {
            let key = ring_member_key(ring, *member);
            match slot {
                Some(slot) => put(RING_MEMBERS, key, postcard_bytes(RING_MEMBERS, slot)?),
                None => delete(RING_MEMBERS, key),
            }
        }
        Change::Record(host, record) => put(
            WORKER_HOSTS,
            id_key(*host),
            postcard_bytes(WORKER_HOSTS, record)?,
        ),
        Change::Fsm(key, Some(entry)) => {
            put(WORKER_FSM, fsm_key(key), postcard_bytes(WORKER_FSM, entry)?)
        }
        Change::Fsm(key, None) => delete(WORKER_FSM, fsm_key(key)),
        Change::Meta(meta) => put(WORKER, META_KEY.to_vec(), postcard_bytes(WORKER, meta)?),
        Change::Failure(row) => put(FAILURES, id_key(row.id), json(FAILURES, row)?),
        Change::Event(event) => put(EVENTS, id_key(event.id), json(EVENTS, &sink_event(event)?)?),
        Change::EventExpired(id) => delete(EVENTS, id_key(*id)),
        Change::Command(command) => put(
            COMMANDS,
            id_key(command.command.id),
            postcard_bytes(COMMANDS, command)?,
        ),
        Change::CommandSettled(id) => delete(COMMANDS, id_key(*id)),
        Change::TopologySwitch(name, Some(view)) => put(
            TOPOLOGY_SWITCHES,
            name.as_bytes().to_vec(),
            json(TOPOLOGY_SWITCHES, view)?,
        ),
        Change::TopologySwitch(name, None) => delete(TOPOLOGY_SWITCHES, name.as_bytes().to_vec()),
        Change::TopologyRouter(name, Some(view)) => put(
            TOPOLOGY_ROUTERS,
            name.as_bytes().to_vec(),
            json(TOPOLOGY_ROUTERS, view)?,
        ),
        Change::TopologyRouter(name, None) => delete(TOPOLOGY_ROUTERS, name.as_bytes().to_vec()),
    })
}

/// The committed worker state rebuilt from its rows, or a fresh one using `config` if
/// none was committed.
pub fn load_state(queue: &QueueState, config: fsm::Config) -> Result<WorkerState, DecodeError> {
    let Some(meta) = queue.table_get(WORKER, META_KEY) else {
        if queue.table_get(WORKER, LEGACY_STATE_KEY).is_some() {
            tracing::warn!(
                "the worker state was written whole by an older version: starting from a \
                 fresh state (hosts are known again from their next Startup)"
            );
        }
        return Ok(WorkerState::new(config));
    };
    let meta: WorkerMeta = from_postcard(WORKER, meta)?;
    let records = match queue.table(WORKER_HOSTS) {
        Some(t) => t
            .iter()
            .map(|(k, v)| {
                let id = key_id(k).ok_or(DecodeError {
                    table: WORKER_HOSTS,
                    source: postcard::Error::DeserializeUnexpectedEnd,
                })?;
                Ok((id, from_postcard::<HostRecord>(WORKER_HOSTS, v)?))
            })
            .collect::<Result<Vec<_>, DecodeError>>()?,
        None => Vec::new(),
    };
    let groups = match queue.table(WORKER_FSM) {
        Some(t) => t
            .values()
            .map(|v| from_postcard::<fsm::GroupEntry>(WORKER_FSM, v))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    Ok(WorkerState::from_rows(
        config,
        Some(meta),
        records,
        groups,
        rings(queue),
        failures(queue),
    ))
}

fn key_id(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
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

/// Every ring, by name, its members in ring order (put back together from the places).
pub fn rings(queue: &QueueState) -> Vec<RingRow> {
    let places = queue.table(RING_MEMBERS);
    json_rows::<RingHeader>(queue, RINGS)
        .into_iter()
        .map(|h| {
            let prefix = ring_prefix(&h.name);
            let mut first = Vec::new();
            let mut next: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            if let Some(t) = places {
                for (k, v) in t.range(prefix.clone()..) {
                    if !k.starts_with(&prefix) {
                        break;
                    }
                    let Some(member) = key_id(&k[prefix.len()..]) else {
                        continue;
                    };
                    match postcard::from_bytes::<RingSlot>(v) {
                        Ok(RingSlot::First) => first.push(member),
                        Ok(RingSlot::After(m)) => next.entry(m).or_default().push(member),
                        Err(_) => {}
                    }
                }
            }
            let count = first.len() + next.values().map(Vec::len).sum::<usize>();
            let mut members = Vec::with_capacity(count);
            let mut cursor = first.first().copied();
            while let Some(m) = cursor {
                if members.len() >= count {
                    break;
                }
                members.push(m);
                cursor = next.get(&m).and_then(|v| v.first().copied());
            }
            RingRow {
                name: h.name,
                kind: h.kind,
                members,
            }
        })
        .collect()
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

/// A stored operator row as the admin API serves it: the JSON the worker wrote, copied,
/// never parsed into its struct and printed again. Only its syntax is checked, so a row
/// that is not JSON (a damaged table) is skipped, as [`json_rows`] skips it.
pub type RawRow = Box<serde_json::value::RawValue>;

fn raw_row(bytes: &[u8]) -> Option<RawRow> {
    let text = std::str::from_utf8(bytes).ok()?;
    serde_json::value::RawValue::from_string(text.to_owned()).ok()
}

/// Every host row as stored, by id.
pub fn raw_hosts(queue: &QueueState) -> Vec<RawRow> {
    queue
        .table(HOSTS)
        .map(|t| t.values().filter_map(|v| raw_row(v)).collect())
        .unwrap_or_default()
}

/// How many hosts have each status, reading only each row's `status` (the admin API's
/// `/v1/status`, which the console reads on every change: decoding 10,000 whole host rows
/// for it took 56-128 ms in a debug build).
pub fn host_status_counts(queue: &QueueState) -> std::collections::BTreeMap<String, usize> {
    #[derive(serde::Deserialize)]
    struct StatusOnly {
        status: HostStatus,
    }
    let mut counts = std::collections::BTreeMap::new();
    for v in queue.table(HOSTS).into_iter().flat_map(|t| t.values()) {
        if let Ok(row) = serde_json::from_slice::<StatusOnly>(v) {
            *counts.entry(row.status.as_str().to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// How many stored failures are open, reading only each row's `state`.
pub fn open_failure_count(queue: &QueueState) -> usize {
    queue
        .table(FAILURES)
        .into_iter()
        .flat_map(|t| t.values())
        .filter(|v| failure_is_open(v) == Some(true))
        .count()
}

/// Whether a stored failure row is open; `None` if it does not decode. Only the row's
/// `state` is parsed.
fn failure_is_open(bytes: &[u8]) -> Option<bool> {
    #[derive(serde::Deserialize)]
    struct StateOnly {
        state: FailureState,
    }
    let row: StateOnly = serde_json::from_slice(bytes).ok()?;
    Some(row.state == FailureState::Open)
}

/// The failure rows as stored, by id: every open one and, with `closed_kept`, only the
/// last (newest) that many closed ones.
pub fn raw_failures(queue: &QueueState, closed_kept: Option<usize>) -> Vec<RawRow> {
    let Some(t) = queue.table(FAILURES) else {
        return Vec::new();
    };
    // The rows that decode, with whether they are open: each parsed once.
    let rows: Vec<(bool, &Vec<u8>)> = t
        .values()
        .filter_map(|v| Some((failure_is_open(v)?, v)))
        .collect();
    let closed = rows.iter().filter(|(open, _)| !open).count();
    let mut skip = closed_kept.map_or(0, |kept| closed.saturating_sub(kept));
    rows.into_iter()
        .filter(|(open, _)| {
            if *open || skip == 0 {
                return true;
            }
            skip -= 1;
            false
        })
        .filter_map(|(_, v)| raw_row(v))
        .collect()
}

/// At most `limit` events with an id of at least `from`, by id, as stored.
pub fn raw_events_from(queue: &QueueState, from: u64, limit: usize) -> Vec<RawRow> {
    match queue.table(EVENTS) {
        Some(t) => t
            .range(id_key(from)..)
            .filter_map(|(_, v)| raw_row(v))
            .take(limit)
            .collect(),
        None => Vec::new(),
    }
}

/// The current topology view (empty before the first host joined): the switch and
/// router rows, and the hosts of unknown switch from the hosts rows (not departed).
pub fn topology(queue: &QueueState) -> TopologyView {
    let unplaced = hosts(queue)
        .into_iter()
        .filter(|h| h.switch.is_none() && h.status != HostStatus::Left)
        .map(|h| h.id)
        .collect();
    TopologyView {
        switches: json_rows(queue, TOPOLOGY_SWITCHES),
        routers: json_rows(queue, TOPOLOGY_ROUTERS),
        unplaced,
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

#[cfg(test)]
pub(crate) mod tests {
    //! The JSON of every row type, pinned: the admin API serves these bytes and
    //! `cmactl --json` prints them, so a change here breaks operators' scripts.
    use super::*;
    use queue::state::DedupLimits;

    /// A queue state holding `changes`, applied as Raft applies a worker entry.
    pub(crate) fn queue_with(changes: &[Change]) -> QueueState {
        let mut q = QueueState::new(DedupLimits::default());
        let writes = changes.iter().map(|c| encode(c).unwrap()).collect();
        q.apply(queue::Command::Apply {
            consumer: crate::CONSUMER.into(),
            offset: None,
            writes,
        });
        q
    }
    use crate::state::{EventData, EventKind};
    use api::views::{FailureKind, FailureState, HostStatus, RingKind, WorkerStatus};
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
            // What the admin API serves.
            let json = format!(r#"{{"name":"r","kind":"{name}","members":[1,2]}}"#);
            assert_eq!(serde_json::to_string(&row).unwrap(), json);
            assert_eq!(serde_json::from_str::<RingRow>(&json).unwrap(), row);
            // The stored header.
            assert_eq!(
                stored(&Change::Ring("r".into(), Some(kind))),
                format!(r#"{{"name":"r","kind":"{name}"}}"#)
            );
        }
    }

    #[test]
    fn rings_are_put_back_in_ring_order_from_their_places() {
        let place = |ring: &str, member, slot| Change::RingMember {
            ring: ring.into(),
            member,
            slot: Some(slot),
        };
        // Not in id order (as the top ring, ordered by switch), and a ring whose name is
        // another's prefix.
        let mut q = queue_with(&[
            Change::Ring("top".into(), Some(RingKind::Top)),
            place("top", 7, RingSlot::First),
            place("top", 2, RingSlot::After(7)),
            place("top", 9, RingSlot::After(2)),
            Change::Ring("to".into(), Some(RingKind::Flat)),
            place("to", 1, RingSlot::First),
        ]);
        let rings = rings(&q);
        assert_eq!(rings.len(), 2);
        assert_eq!(
            (rings[0].name.as_str(), &rings[0].members),
            ("to", &vec![1])
        );
        assert_eq!(
            (rings[1].name.as_str(), rings[1].kind, &rings[1].members),
            ("top", RingKind::Top, &vec![7, 2, 9])
        );
        // 2 leaves: two places change, the rest of the ring is not rewritten.
        let writes: Vec<TableWrite> = [
            Change::RingMember {
                ring: "top".into(),
                member: 2,
                slot: None,
            },
            place("top", 9, RingSlot::After(7)),
        ]
        .iter()
        .map(|c| encode(c).unwrap())
        .collect();
        q.apply(queue::Command::Apply {
            consumer: crate::CONSUMER.into(),
            offset: None,
            writes,
        });
        assert_eq!(super::rings(&q)[1].members, vec![7, 9]);
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

    /// The admin API serves the stored bytes of hosts, failures and events unchanged;
    /// without `?all`, every open failure and only the newest closed ones.
    #[test]
    fn raw_rows_are_the_stored_bytes() {
        let host = |id| HostRow {
            id,
            hostname: format!("h{id}"),
            addr: "10.0.0.3:7500".parse().unwrap(),
            switch: None,
            status: HostStatus::Up,
            since_us: 5,
            watchers: vec![],
            version: "0.1.0".into(),
        };
        let failure = |id, state| FailureRow {
            id,
            kind: FailureKind::Dead,
            subject: format!("{id}"),
            hosts: vec![id],
            state,
            at_us: id,
            closed_us: None,
            summary: "s".into(),
            evidence: vec![],
        };
        let changes = [
            Change::Host(host(1)),
            Change::Host(host(2)),
            Change::Failure(failure(1, FailureState::Closed)),
            Change::Failure(failure(2, FailureState::Open)),
            Change::Failure(failure(3, FailureState::Closed)),
            Change::Failure(failure(4, FailureState::Closed)),
        ];
        let mut q = queue_with(&changes);
        // The counts `/v1/status` serves read only one field of each row.
        let counts = host_status_counts(&q);
        assert_eq!(counts.get("up"), Some(&2));
        assert_eq!(counts.len(), 1);
        assert_eq!(open_failure_count(&q), 1);
        let served = |rows: Vec<RawRow>| -> Vec<String> {
            rows.iter().map(|r| r.get().to_owned()).collect()
        };
        assert_eq!(
            served(raw_hosts(&q)),
            vec![stored(&changes[0]), stored(&changes[1])]
        );
        let all: Vec<String> = changes[2..].iter().map(stored).collect();
        assert_eq!(served(raw_failures(&q, None)), all);
        // Open 2, and the newest two closed (3 and 4); the oldest closed (1) is left out.
        assert_eq!(served(raw_failures(&q, Some(2))), all[1..].to_vec());
        assert_eq!(served(raw_failures(&q, Some(0))), vec![all[1].clone()]);
        // A damaged row is skipped, never served.
        q.apply(queue::Command::Apply {
            consumer: crate::CONSUMER.into(),
            offset: None,
            writes: vec![TableWrite {
                table: FAILURES.into(),
                key: id_key(9),
                value: Some(b"{not json".to_vec()),
            }],
        });
        assert_eq!(served(raw_failures(&q, None)), all);
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
            hosts_agent_down: 0,
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
