//! openraft's state machine over [`QueueState`], with snapshots persisted as files.
//!
//! The state itself lives in memory. Durability comes from the Raft log plus the last
//! snapshot, which is written to `<data_dir>/snapshot.bin` (temp file, fsync, rename,
//! fsync of the directory) before openraft is told it exists; on restart the snapshot is
//! loaded and openraft re-applies the committed log after it. Encoding and file I/O run on
//! the blocking pool so a large snapshot never stalls the async workers.

// The storage helpers return openraft's `StorageError` because the storage traits do;
// its size is not ours to choose.
#![allow(clippy::result_large_err)]

use super::queue_state::{DedupLimits, QueueState};
use super::{NodeAddr, NodeId, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use queue::CommandResult;
use serde::{Deserialize, Serialize};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use tokio::sync::watch;

/// What a snapshot carries besides openraft's metadata.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, NodeAddr>,
    state: QueueState,
}

/// A snapshot as persisted on disk.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, NodeAddr>,
    #[serde(with = "queue::record::byte_string")]
    data: Vec<u8>,
}

const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_TMP: &str = "snapshot.tmp";

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
        // A poisoned lock means a panic in apply, which never leaves the state half
        // written (it mutates in place only after validation), so read through it.
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

/// openraft state machine over [`QueueState`].
pub struct StateMachineStore {
    shared: Arc<SharedState>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, NodeAddr>,
    dir: PathBuf,
}

fn snapshot_read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_snapshot(None, &e).into()
}

fn snapshot_write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, &e).into()
}

/// Reads the persisted snapshot, if any (blocking).
fn load_snapshot(dir: &Path) -> Result<Option<StoredSnapshot>, StorageError<NodeId>> {
    match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(bytes) => postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(snapshot_read_err),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(snapshot_read_err(e)),
    }
}

/// Writes a snapshot durably and atomically (blocking).
fn persist_snapshot(dir: &Path, stored: &StoredSnapshot) -> Result<(), StorageError<NodeId>> {
    let bytes = postcard::to_allocvec(stored).map_err(snapshot_write_err)?;
    let tmp = dir.join(SNAPSHOT_TMP);
    let mut file = std::fs::File::create(&tmp).map_err(snapshot_write_err)?;
    file.write_all(&bytes).map_err(snapshot_write_err)?;
    file.sync_all().map_err(snapshot_write_err)?;
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE)).map_err(snapshot_write_err)?;
    // The rename is durable only once the directory is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(snapshot_write_err)?;
    Ok(())
}

/// Runs blocking work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError<NodeId>> + Send + 'static,
) -> Result<T, StorageError<NodeId>> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(snapshot_write_err)?
}

impl StateMachineStore {
    /// Opens the state machine in `dir`, restoring the last persisted snapshot if any.
    /// `max_bytes` is the queue's byte budget (0: unlimited), equal on every node.
    pub fn open(
        dir: &Path,
        limits: DedupLimits,
        max_bytes: u64,
    ) -> Result<Self, StorageError<NodeId>> {
        std::fs::create_dir_all(dir).map_err(snapshot_read_err)?;
        let mut initial = QueueState::new(limits);
        initial.set_budget(max_bytes);
        let mut store = StateMachineStore {
            shared: Arc::new(SharedState {
                state: RwLock::new(initial),
                applied: watch::channel(0).0,
                snapshots_installed: AtomicU64::new(0),
                snapshots_built: AtomicU64::new(0),
            }),
            last_applied: None,
            membership: StoredMembership::default(),
            dir: dir.to_path_buf(),
        };
        if let Some(stored) = load_snapshot(dir)? {
            let body = postcard::from_bytes(&stored.data).map_err(snapshot_read_err)?;
            store.restore(body);
        }
        Ok(store)
    }

    /// The handle readers use.
    pub fn shared(&self) -> Arc<SharedState> {
        self.shared.clone()
    }

    fn restore(&mut self, body: SnapshotBody) {
        let (limits, budget) = {
            let current = self.shared.read();
            (current.limits(), current.budget())
        };
        let mut state = body.state;
        // Local limits win: they are configuration, identical on every node.
        state.set_limits(limits);
        state.set_budget(budget);
        *self.shared.write() = state;
        self.last_applied = body.last_applied;
        self.membership = body.membership;
        self.shared
            .applied
            .send_replace(self.last_applied.map(|l| l.index).unwrap_or(0));
    }
}

/// Builds snapshots from a copy of the state taken when the builder was created (cheap:
/// packet segments are shared).
pub struct SnapshotBuilder {
    body: Option<SnapshotBody>,
    shared: Arc<SharedState>,
    dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let body = self
            .body
            .take()
            .ok_or_else(|| snapshot_write_err(std::io::Error::other("builder used twice")))?;
        let dir = self.dir.clone();
        let stored = blocking(move || {
            let data = postcard::to_allocvec(&body).map_err(snapshot_write_err)?;
            let snapshot_id = match body.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, data.len()),
                None => format!("empty-{}", data.len()),
            };
            let stored = StoredSnapshot {
                meta: SnapshotMeta {
                    last_log_id: body.last_applied,
                    last_membership: body.membership,
                    snapshot_id,
                },
                data,
            };
            persist_snapshot(&dir, &stored)?;
            Ok(stored)
        })
        .await?;
        self.shared.snapshots_built.fetch_add(1, Ordering::Relaxed);
        tracing::info!(snapshot = %stored.meta.snapshot_id, "built snapshot");
        Ok(Snapshot {
            meta: stored.meta,
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
            body: Some(SnapshotBody {
                last_applied: self.last_applied,
                membership: self.membership.clone(),
                state: self.shared.read().clone(),
            }),
            shared: self.shared.clone(),
            dir: self.dir.clone(),
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
        let dir = self.dir.clone();
        // Persist first: once the state machine moves to the snapshot, a restart must
        // find it on disk (the log below it may already be gone).
        let (stored, body) = blocking(move || {
            let body: SnapshotBody =
                postcard::from_bytes(&stored.data).map_err(snapshot_read_err)?;
            persist_snapshot(&dir, &stored)?;
            Ok((stored, body))
        })
        .await?;
        self.restore(body);
        self.shared
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(snapshot = %stored.meta.snapshot_id, "installed snapshot from leader");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let dir = self.dir.clone();
        let stored = blocking(move || load_snapshot(&dir)).await?;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue::Command;
    use queue::QueuedPacket;

    #[test]
    fn snapshot_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = QueueState::new(DedupLimits::default());
        state.apply(Command::Append {
            batch: vec![QueuedPacket {
                sender: 1,
                session: 2,
                seq: 3,
                received_at_us: 4,
                source: "127.0.0.1:9".parse().unwrap(),
                datagram: vec![1, 2, 3],
            }],
        });
        let body = SnapshotBody {
            last_applied: None,
            membership: StoredMembership::default(),
            state: state.clone(),
        };
        let stored = StoredSnapshot {
            meta: SnapshotMeta::default(),
            data: postcard::to_allocvec(&body).unwrap(),
        };
        persist_snapshot(dir.path(), &stored).unwrap();
        let store = StateMachineStore::open(dir.path(), DedupLimits::default(), 0).unwrap();
        assert_eq!(*store.shared().read(), state);
    }

    #[test]
    fn corrupt_snapshot_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SNAPSHOT_FILE), b"garbage").unwrap();
        assert!(StateMachineStore::open(dir.path(), DedupLimits::default(), 0).is_err());
    }
}
