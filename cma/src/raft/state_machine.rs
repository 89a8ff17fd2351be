//! The replicated state: the packet queue, consumer offsets, the dedup window and the
//! generic tables; and its openraft state machine with sled-persisted snapshots.
//!
//! The state itself lives in memory ([`QueueState`], pure and deterministic). Durability
//! comes from the Raft log plus the last snapshot, which is written to sled and flushed
//! before openraft is told it exists; on restart the snapshot is loaded and openraft
//! re-applies the committed log after it.

// The storage helpers return openraft's `StorageError` because the storage traits do;
// its size is not ours to choose.
#![allow(clippy::result_large_err)]

use super::command::{AppendResult, Command, CommandResult, TableWrite};
use super::{NodeAddr, NodeId, TypeConfig};
use crate::queue::record::QueuedPacket;
use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use tokio::sync::watch;

/// Default number of recent report ids remembered per (sender, session).
pub const DEFAULT_DEDUP_WINDOW: u64 = 4096;
/// Default number of (sender, session) pairs remembered by the dedup window.
pub const DEFAULT_DEDUP_SESSIONS: usize = 100_000;

/// Limits of the dedup window (part of the replicated configuration: every node must use
/// the same values, or replicas could disagree on what is a duplicate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupLimits {
    /// Report ids more than this far below a session's highest id count as duplicates
    /// (their sender stopped retransmitting them long ago).
    pub window: u64,
    /// Sessions remembered; beyond that the least recently used are forgotten.
    pub sessions: usize,
}

impl Default for DedupLimits {
    fn default() -> Self {
        DedupLimits {
            window: DEFAULT_DEDUP_WINDOW,
            sessions: DEFAULT_DEDUP_SESSIONS,
        }
    }
}

/// Recently seen report ids of one (sender, session).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SessionWindow {
    highest: u64,
    seen: BTreeSet<u64>,
    /// Offset of the last packet stored for this session: the LRU clock for eviction.
    last_offset: u64,
}

/// The replicated queue state. Applying the same entries in the same order gives the same
/// state on every node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    /// Stored packets with offsets `first_offset .. next_offset`.
    packets: VecDeque<QueuedPacket>,
    /// Offset of `packets[0]` (everything below was trimmed).
    first_offset: u64,
    /// Offset the next stored packet gets.
    next_offset: u64,
    /// Registered consumers and the next offset each will read.
    consumers: BTreeMap<String, u64>,
    dedup: BTreeMap<(u64, u64), SessionWindow>,
    limits: DedupLimits,
    /// Generic replicated tables: table -> key -> value.
    tables: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
}

/// Counters describing the queue, for status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSummary {
    /// Lowest offset still stored.
    pub first_offset: u64,
    /// Offset the next packet will get.
    pub next_offset: u64,
    /// Packets stored (not yet trimmed).
    pub depth: u64,
    /// Registered consumers and their committed offsets.
    pub consumers: BTreeMap<String, u64>,
    /// Sessions in the dedup window.
    pub dedup_sessions: usize,
    /// Number of generic tables.
    pub tables: usize,
}

impl QueueState {
    /// An empty queue with the given dedup limits.
    pub fn new(limits: DedupLimits) -> Self {
        QueueState {
            limits,
            ..QueueState::default()
        }
    }

    /// Applies one application entry.
    pub fn apply(&mut self, command: Command) -> CommandResult {
        match command {
            Command::Append { batch } => CommandResult::Appended(self.append(batch)),
            Command::CommitOffset { consumer, offset } => {
                self.commit_offset(consumer, offset);
                CommandResult::Done
            }
            Command::Apply {
                consumer,
                offset,
                writes,
            } => {
                if let Some(offset) = offset {
                    self.commit_offset(consumer, offset);
                }
                for write in writes {
                    self.write_table(write);
                }
                CommandResult::Done
            }
            Command::RemoveConsumer { consumer } => {
                self.consumers.remove(&consumer);
                self.trim();
                CommandResult::Done
            }
        }
    }

    fn append(&mut self, batch: Vec<QueuedPacket>) -> AppendResult {
        let first_offset = self.next_offset;
        let mut duplicates = 0;
        for packet in batch {
            if self.is_duplicate_then_record(&packet) {
                duplicates += 1;
                continue;
            }
            self.packets.push_back(packet);
            self.next_offset += 1;
        }
        self.evict_sessions();
        let stored = (self.next_offset - first_offset) as usize;
        AppendResult {
            first_offset,
            last_offset: if stored == 0 {
                first_offset
            } else {
                self.next_offset - 1
            },
            duplicates,
            stored,
        }
    }

    /// Returns true when the packet was seen; otherwise remembers it.
    fn is_duplicate_then_record(&mut self, packet: &QueuedPacket) -> bool {
        let window = self.limits.window;
        let offset = self.next_offset;
        let entry = self
            .dedup
            .entry((packet.sender, packet.session))
            .or_default();
        if entry.seen.is_empty() {
            entry.highest = packet.seq;
        } else if packet.seq.saturating_add(window) <= entry.highest
            || entry.seen.contains(&packet.seq)
        {
            return true;
        }
        entry.seen.insert(packet.seq);
        entry.highest = entry.highest.max(packet.seq);
        entry.last_offset = offset;
        let floor = entry.highest.saturating_sub(window);
        while let Some(&lowest) = entry.seen.first() {
            if lowest > floor || entry.seen.len() == 1 {
                break;
            }
            entry.seen.pop_first();
        }
        false
    }

    /// Forgets the least recently used sessions once over the limit (10% at a time, so
    /// the scan is amortised).
    fn evict_sessions(&mut self) {
        let max = self.limits.sessions.max(1);
        if self.dedup.len() <= max {
            return;
        }
        let target = max - max / 10;
        let mut by_age: Vec<(u64, (u64, u64))> = self
            .dedup
            .iter()
            .map(|(key, w)| (w.last_offset, *key))
            .collect();
        by_age.sort_unstable();
        let excess = self.dedup.len() - target;
        for (_, key) in by_age.into_iter().take(excess) {
            self.dedup.remove(&key);
        }
    }

    fn commit_offset(&mut self, consumer: String, offset: u64) {
        let offset = offset.min(self.next_offset);
        let slot = self.consumers.entry(consumer).or_insert(offset);
        // Offsets only move forward: a late duplicate commit must not rewind a consumer.
        *slot = (*slot).max(offset);
        self.trim();
    }

    /// Drops packets every registered consumer has consumed.
    fn trim(&mut self) {
        let Some(&low) = self.consumers.values().min() else {
            return;
        };
        while self.first_offset < low && !self.packets.is_empty() {
            self.packets.pop_front();
            self.first_offset += 1;
        }
    }

    fn write_table(&mut self, write: TableWrite) {
        match write.value {
            Some(value) => {
                self.tables
                    .entry(write.table)
                    .or_default()
                    .insert(write.key, value);
            }
            None => {
                if let Some(table) = self.tables.get_mut(&write.table) {
                    table.remove(&write.key);
                    if table.is_empty() {
                        self.tables.remove(&write.table);
                    }
                }
            }
        }
    }

    /// Stored packets with offset >= `from`, at most `max`.
    pub fn read(&self, from: u64, max: usize) -> Vec<(u64, QueuedPacket)> {
        let start = from.max(self.first_offset);
        if start >= self.next_offset {
            return Vec::new();
        }
        let skip = (start - self.first_offset) as usize;
        self.packets
            .iter()
            .skip(skip)
            .take(max)
            .enumerate()
            .map(|(i, p)| (start + i as u64, p.clone()))
            .collect()
    }

    /// Lowest offset still stored.
    pub fn first_offset(&self) -> u64 {
        self.first_offset
    }

    /// Offset the next stored packet gets.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The committed offset of a consumer, if registered.
    pub fn consumer_offset(&self, consumer: &str) -> Option<u64> {
        self.consumers.get(consumer).copied()
    }

    /// Every registered consumer and its committed offset.
    pub fn consumers(&self) -> &BTreeMap<String, u64> {
        &self.consumers
    }

    /// One value of a generic table.
    pub fn table_get(&self, table: &str, key: &[u8]) -> Option<&Vec<u8>> {
        self.tables.get(table).and_then(|t| t.get(key))
    }

    /// A whole generic table (empty if absent), ordered by key.
    pub fn table(&self, table: &str) -> Option<&BTreeMap<Vec<u8>, Vec<u8>>> {
        self.tables.get(table)
    }

    /// Names of the generic tables that hold at least one key.
    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    /// Counters for status and metrics.
    pub fn summary(&self) -> StateSummary {
        StateSummary {
            first_offset: self.first_offset,
            next_offset: self.next_offset,
            depth: self.packets.len() as u64,
            consumers: self.consumers.clone(),
            dedup_sessions: self.dedup.len(),
            tables: self.tables.len(),
        }
    }
}

/// What a snapshot carries besides openraft's metadata.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, NodeAddr>,
    state: QueueState,
}

/// A snapshot as persisted in sled.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, NodeAddr>,
    data: Vec<u8>,
}

const SNAPSHOT_KEY: &[u8] = b"current";

/// The state shared between the state machine and readers in the same process.
pub struct SharedState {
    state: RwLock<QueueState>,
    applied: watch::Sender<u64>,
    snapshots_installed: AtomicU64,
    snapshots_built: AtomicU64,
}

impl SharedState {
    /// Read access to the applied state. Keep the guard short: apply waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, QueueState> {
        // A poisoned lock means a panic in apply; the data is still the last consistent
        // state because apply mutates only after validation, so read through it.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Index of the last applied log entry (0 before any).
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Watch of the applied index: changes whenever entries are applied.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Snapshots installed from a leader since this process started.
    pub fn snapshots_installed(&self) -> u64 {
        self.snapshots_installed.load(Ordering::Relaxed)
    }

    /// Snapshots built locally since this process started.
    pub fn snapshots_built(&self) -> u64 {
        self.snapshots_built.load(Ordering::Relaxed)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, QueueState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// openraft state machine over [`QueueState`], snapshots persisted in a sled tree.
pub struct StateMachineStore {
    shared: Arc<SharedState>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, NodeAddr>,
    snapshots: sled::Tree,
    db: sled::Db,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(&e).into()
}

impl StateMachineStore {
    /// Opens the state machine, restoring the last persisted snapshot if any.
    pub fn open(db: &sled::Db, limits: DedupLimits) -> Result<Self, StorageError<NodeId>> {
        let snapshots = db.open_tree("snapshot").map_err(read_err)?;
        let mut store = StateMachineStore {
            shared: Arc::new(SharedState {
                state: RwLock::new(QueueState::new(limits)),
                applied: watch::channel(0).0,
                snapshots_installed: AtomicU64::new(0),
                snapshots_built: AtomicU64::new(0),
            }),
            last_applied: None,
            membership: StoredMembership::default(),
            snapshots,
            db: db.clone(),
        };
        if let Some(stored) = store.load_snapshot()? {
            store.restore(&stored.data)?;
        }
        Ok(store)
    }

    /// The handle readers use.
    pub fn shared(&self) -> Arc<SharedState> {
        self.shared.clone()
    }

    fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError<NodeId>> {
        match self.snapshots.get(SNAPSHOT_KEY).map_err(read_err)? {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| StorageIOError::read_snapshot(None, &e).into()),
        }
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), StorageError<NodeId>> {
        let body: SnapshotBody = postcard::from_bytes(data)
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, &e)))?;
        let limits = self.shared.read().limits;
        let mut state = body.state;
        // Local limits win: they are configuration, identical on every node.
        state.limits = limits;
        *self.shared.write() = state;
        self.last_applied = body.last_applied;
        self.membership = body.membership;
        self.shared
            .applied
            .send_replace(self.last_applied.map(|l| l.index).unwrap_or(0));
        Ok(())
    }

    async fn persist(&self, stored: &StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let bytes = postcard::to_allocvec(stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(stored.meta.signature()), &e))?;
        self.snapshots
            .insert(SNAPSHOT_KEY, bytes)
            .map_err(|e| StorageIOError::write_snapshot(Some(stored.meta.signature()), &e))?;
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(stored.meta.signature()), &e))?;
        Ok(())
    }
}

/// Builds snapshots from a copy of the state taken when the builder was created.
pub struct SnapshotBuilder {
    body: SnapshotBody,
    shared: Arc<SharedState>,
    snapshots: sled::Tree,
    db: sled::Db,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data = postcard::to_allocvec(&self.body)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let snapshot_id = match self.body.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, data.len()),
            None => format!("empty-{}", data.len()),
        };
        let meta = SnapshotMeta {
            last_log_id: self.body.last_applied,
            last_membership: self.body.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let bytes = postcard::to_allocvec(&stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.snapshots
            .insert(SNAPSHOT_KEY, bytes)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.shared.snapshots_built.fetch_add(1, Ordering::Relaxed);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, NodeAddr>), StorageError<NodeId>>
    {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        {
            let mut state = self.shared.write();
            for entry in entries {
                self.last_applied = Some(entry.log_id);
                let result = match entry.payload {
                    EntryPayload::Blank => CommandResult::None,
                    EntryPayload::Normal(command) => state.apply(command),
                    EntryPayload::Membership(membership) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), membership);
                        CommandResult::None
                    }
                };
                results.push(result);
            }
        }
        if let Some(last) = self.last_applied {
            self.shared.applied.send_replace(last.index);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            body: SnapshotBody {
                last_applied: self.last_applied,
                membership: self.membership.clone(),
                state: self.shared.read().clone(),
            },
            shared: self.shared.clone(),
            snapshots: self.snapshots.clone(),
            db: self.db.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeAddr>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        self.restore(&stored.data)?;
        self.persist(&stored).await?;
        self.shared
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(snapshot = %meta.snapshot_id, "installed snapshot from leader");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.load_snapshot()?.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(sender: u64, session: u64, seq: u64) -> QueuedPacket {
        QueuedPacket {
            sender,
            session,
            seq,
            received_at_us: seq * 10,
            source: "127.0.0.1:9".parse().unwrap(),
            datagram: vec![seq as u8; 8],
        }
    }

    fn append(state: &mut QueueState, batch: Vec<QueuedPacket>) -> AppendResult {
        match state.apply(Command::Append { batch }) {
            CommandResult::Appended(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn append_assigns_consecutive_offsets_and_skips_duplicates() {
        let mut state = QueueState::new(DedupLimits::default());
        let r = append(&mut state, vec![packet(1, 1, 1), packet(1, 1, 2)]);
        assert_eq!(
            (r.first_offset, r.last_offset, r.stored, r.duplicates),
            (0, 1, 2, 0)
        );
        let r = append(
            &mut state,
            vec![packet(1, 1, 2), packet(2, 1, 2), packet(1, 1, 1)],
        );
        assert_eq!(
            (r.first_offset, r.last_offset, r.stored, r.duplicates),
            (2, 2, 1, 2)
        );
        let read = state.read(0, 10);
        assert_eq!(read.len(), 3);
        assert_eq!(read[2], (2, packet(2, 1, 2)));
    }

    #[test]
    fn ids_far_below_the_window_are_duplicates() {
        let mut state = QueueState::new(DedupLimits {
            window: 4,
            sessions: 10,
        });
        append(&mut state, vec![packet(1, 1, 10)]);
        let r = append(&mut state, vec![packet(1, 1, 5), packet(1, 1, 7)]);
        assert_eq!((r.stored, r.duplicates), (1, 1));
    }

    #[test]
    fn trimming_waits_for_every_consumer() {
        let mut state = QueueState::new(DedupLimits::default());
        append(&mut state, (0..10).map(|i| packet(1, 1, i)).collect());
        state.apply(Command::CommitOffset {
            consumer: "a".into(),
            offset: 6,
        });
        assert_eq!(state.first_offset(), 6);
        state.apply(Command::CommitOffset {
            consumer: "b".into(),
            offset: 3,
        });
        // b registered at 3, but 3..6 are already gone: b reads from the first stored.
        assert_eq!(state.read(3, 100).first().map(|(o, _)| *o), Some(6));
        state.apply(Command::CommitOffset {
            consumer: "a".into(),
            offset: 2,
        });
        assert_eq!(state.consumer_offset("a"), Some(6), "offsets never rewind");
        state.apply(Command::CommitOffset {
            consumer: "b".into(),
            offset: 9,
        });
        assert_eq!(state.first_offset(), 6);
        state.apply(Command::RemoveConsumer {
            consumer: "a".into(),
        });
        assert_eq!(state.first_offset(), 9);
        assert_eq!(state.read(0, 100).len(), 1);
    }

    #[test]
    fn apply_writes_tables_and_offset_together() {
        let mut state = QueueState::new(DedupLimits::default());
        append(&mut state, vec![packet(1, 1, 1)]);
        state.apply(Command::Apply {
            consumer: "worker".into(),
            offset: Some(1),
            writes: vec![
                TableWrite {
                    table: "hosts".into(),
                    key: b"a".to_vec(),
                    value: Some(b"1".to_vec()),
                },
                TableWrite {
                    table: "hosts".into(),
                    key: b"b".to_vec(),
                    value: Some(b"2".to_vec()),
                },
                TableWrite {
                    table: "hosts".into(),
                    key: b"a".to_vec(),
                    value: None,
                },
            ],
        });
        assert_eq!(state.consumer_offset("worker"), Some(1));
        assert_eq!(state.table_get("hosts", b"b"), Some(&b"2".to_vec()));
        assert_eq!(state.table_get("hosts", b"a"), None);
        assert_eq!(state.read(0, 10).len(), 0);
    }

    #[test]
    fn session_eviction_is_bounded() {
        let mut state = QueueState::new(DedupLimits {
            window: 16,
            sessions: 10,
        });
        for s in 0..25 {
            append(&mut state, vec![packet(1, s, 1)]);
        }
        assert!(state.summary().dedup_sessions <= 10);
        // The most recent session is still remembered.
        let r = append(&mut state, vec![packet(1, 24, 1)]);
        assert_eq!(r.duplicates, 1);
    }

    #[test]
    fn snapshot_body_round_trips() {
        let mut state = QueueState::new(DedupLimits::default());
        append(&mut state, vec![packet(1, 1, 1), packet(2, 2, 2)]);
        let body = SnapshotBody {
            last_applied: None,
            membership: StoredMembership::default(),
            state: state.clone(),
        };
        let bytes = postcard::to_allocvec(&body).unwrap();
        let back: SnapshotBody = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.state, state);
    }
}
