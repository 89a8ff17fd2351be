//! openraft's state machine over [`QueueState`], with snapshots persisted as files.
//!
//! The state itself lives in memory. Durability comes from the Raft log plus the last
//! snapshot, which is written to `<data_dir>/snapshot.bin` (temp file, fsync, rename,
//! fsync of the directory) before openraft is told it exists; on restart the snapshot is
//! loaded and openraft re-applies the committed log after it. Encoding and file I/O run on
//! the blocking pool so a large snapshot never stalls the async workers.
//!
//! A built snapshot is encoded straight into the temp file (no second copy of a state of
//! hundreds of MB in memory), with an fdatasync every [`PACE_BYTES`] so its pages reach
//! the disk in steps instead of one burst that the Raft log's own fdatasyncs would queue
//! behind. File layout: [`SNAPSHOT_MAGIC`], the postcard [`SnapshotMeta`], then the
//! postcard [`SnapshotBody`] (the bytes sent to a follower). Files of the previous layout
//! (a postcard `StoredSnapshot`) are still read.

// The storage helpers return openraft's `StorageError` because the storage traits do;
// its size is not ours to choose.
#![allow(clippy::result_large_err)]

use super::{NodeAddr, NodeId, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use queue::state::{DedupLimits, QueueState};
use queue::CommandResult;
use serde::{Deserialize, Serialize};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// What a snapshot carries besides openraft's metadata.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, NodeAddr>,
    state: QueueState,
}

/// A snapshot as loaded from disk (and, before [`SNAPSHOT_MAGIC`], as stored).
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, NodeAddr>,
    /// The postcard [`SnapshotBody`].
    #[serde(with = "queue::record::byte_string")]
    data: Vec<u8>,
}

const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_TMP: &str = "snapshot.tmp";
/// The replaced snapshot, kept alive by a hard link until it is released in steps.
const SNAPSHOT_OLD: &str = "snapshot.old";
/// First bytes of a snapshot file in the streamed layout. A file of the previous layout
/// starts with a postcard `Option` tag (0 or 1), never with `R`.
const SNAPSHOT_MAGIC: &[u8; 8] = b"RWSNAP2\n";
/// Bytes written to a snapshot file between two fdatasyncs of it.
pub const PACE_BYTES: u64 = 16 * 1024 * 1024;

/// Snapshot figures the node exports on `/metrics`.
#[derive(Clone)]
pub struct SnapshotMetrics {
    /// Seconds to build one snapshot (encode, write, fsync, rename).
    pub build_seconds: Histogram,
    /// Size of the last snapshot built, installed or loaded, in bytes.
    pub bytes: Gauge,
}

impl Default for SnapshotMetrics {
    fn default() -> Self {
        SnapshotMetrics {
            build_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            bytes: Gauge::default(),
        }
    }
}

/// The state shared between the state machine and readers in the same process.
pub struct SharedState {
    state: RwLock<QueueState>,
    applied: watch::Sender<u64>,
    snapshots_installed: AtomicU64,
    snapshots_built: AtomicU64,
    snapshot_bytes: AtomicU64,
    metrics: SnapshotMetrics,
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

    /// Size in bytes of the last snapshot built, installed or loaded (0: none).
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes.load(Ordering::Relaxed)
    }

    fn set_snapshot_bytes(&self, bytes: u64) {
        self.snapshot_bytes.store(bytes, Ordering::Relaxed);
        self.metrics.bytes.set(bytes.min(i64::MAX as u64) as i64);
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
        Ok(bytes) => decode_snapshot_file(bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(snapshot_read_err(e)),
    }
}

/// Splits a snapshot file into its metadata and body bytes.
fn decode_snapshot_file(mut bytes: Vec<u8>) -> Result<StoredSnapshot, StorageError<NodeId>> {
    let Some(rest) = bytes.strip_prefix(SNAPSHOT_MAGIC.as_slice()) else {
        return postcard::from_bytes(&bytes).map_err(snapshot_read_err);
    };
    let (meta, body) = postcard::take_from_bytes::<SnapshotMeta<NodeId, NodeAddr>>(rest)
        .map_err(snapshot_read_err)?;
    let header = bytes.len() - body.len();
    // In place: the body is most of the file, so no second buffer for it.
    bytes.drain(..header);
    Ok(StoredSnapshot { meta, data: bytes })
}

/// A writer that fdatasyncs its file every [`PACE_BYTES`], so a large snapshot reaches the
/// disk in steps rather than as one burst of dirty pages at the final fsync.
struct PacedFile {
    file: std::fs::File,
    written: u64,
    since_sync: u64,
}

impl Write for PacedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        self.since_sync += n as u64;
        if self.since_sync >= PACE_BYTES {
            self.file.sync_data()?;
            self.since_sync = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A writer that keeps the first I/O error it met: postcard's `to_io` reports any write
/// failure as "the serialize buffer is full", which on a full disk named the wrong cause
/// in the error that stopped the node.
struct KeepError<'a> {
    inner: &'a mut dyn Write,
    error: Option<std::io::Error>,
}

impl Write for KeepError<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).inspect_err(|e| {
            if self.error.is_none() {
                self.error = Some(std::io::Error::new(e.kind(), e.to_string()));
            }
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `postcard::to_io` that returns the writer's own I/O error (a full disk, say) when it
/// is why the encoding failed.
fn encode_into(value: &impl serde::Serialize, out: &mut dyn Write) -> std::io::Result<()> {
    let mut writer = KeepError {
        inner: out,
        error: None,
    };
    match postcard::to_io(value, &mut writer) {
        Ok(_) => Ok(()),
        Err(e) => Err(writer
            .error
            .take()
            .unwrap_or_else(|| std::io::Error::other(e))),
    }
}

/// Writes a snapshot file durably and atomically (blocking): `write_body` writes the
/// postcard body after the header. Returns the file's size.
fn persist_snapshot(
    dir: &Path,
    meta: &SnapshotMeta<NodeId, NodeAddr>,
    write_body: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<u64, StorageError<NodeId>> {
    let tmp = dir.join(SNAPSHOT_TMP);
    let file = std::fs::File::create(&tmp).map_err(snapshot_write_err)?;
    let mut out = std::io::BufWriter::with_capacity(
        1024 * 1024,
        PacedFile {
            file,
            written: 0,
            since_sync: 0,
        },
    );
    out.write_all(SNAPSHOT_MAGIC).map_err(snapshot_write_err)?;
    encode_into(meta, &mut out).map_err(snapshot_write_err)?;
    write_body(&mut out).map_err(snapshot_write_err)?;
    let paced = out
        .into_inner()
        .map_err(|e| snapshot_write_err(e.into_error()))?;
    paced.file.sync_all().map_err(snapshot_write_err)?;
    drop(paced.file);
    // The rename would free the replaced file's blocks at once; with online discard that
    // stalls the log's fdatasyncs for as long as the device takes to discard a snapshot
    // of up to hundreds of MB. A second link keeps the old file until it is released in
    // steps (`segment_log::shrink_and_remove`).
    let current = dir.join(SNAPSHOT_FILE);
    let old = dir.join(SNAPSHOT_OLD);
    let _ = std::fs::remove_file(&old);
    let kept = std::fs::hard_link(&current, &old).is_ok();
    std::fs::rename(&tmp, &current).map_err(snapshot_write_err)?;
    // The rename is durable only once the directory is.
    super::segment_log::sync_dir(dir).map_err(snapshot_write_err)?;
    if kept {
        if let Err(e) = super::segment_log::shrink_and_remove(&old) {
            tracing::warn!(error = %e, "removing the replaced snapshot file failed");
        }
    }
    Ok(paced.written)
}

/// Encodes `body` into a new snapshot file in `dir` (blocking); returns its metadata and
/// size.
fn write_snapshot(
    dir: &Path,
    body: &SnapshotBody,
) -> Result<(SnapshotMeta<NodeId, NodeAddr>, u64), StorageError<NodeId>> {
    // Unique per build: openraft tells transfers apart by id. The size is not known before
    // the streamed encoding, so the build time stands in for it.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let snapshot_id = match body.last_applied {
        Some(l) => format!("{}-{}-{nanos}", l.leader_id, l.index),
        None => format!("empty-{nanos}"),
    };
    let meta = SnapshotMeta {
        last_log_id: body.last_applied,
        last_membership: body.membership.clone(),
        snapshot_id,
    };
    let bytes = persist_snapshot(dir, &meta, |out| encode_into(body, out))?;
    Ok((meta, bytes))
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
        metrics: SnapshotMetrics,
    ) -> Result<Self, StorageError<NodeId>> {
        // Durable before a snapshot is written in it: a snapshot whose directory vanished
        // at a power cut would leave a log purged up to it and nothing to start from.
        super::segment_log::create_dir_durable(dir).map_err(snapshot_read_err)?;
        // A replaced snapshot whose release a crash interrupted.
        match std::fs::remove_file(dir.join(SNAPSHOT_OLD)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(snapshot_read_err(e)),
        }
        let mut initial = QueueState::new(limits);
        initial.set_budget(max_bytes);
        let mut store = StateMachineStore {
            shared: Arc::new(SharedState {
                state: RwLock::new(initial),
                applied: watch::channel(0).0,
                snapshots_installed: AtomicU64::new(0),
                snapshots_built: AtomicU64::new(0),
                snapshot_bytes: AtomicU64::new(0),
                metrics,
            }),
            last_applied: None,
            membership: StoredMembership::default(),
            dir: dir.to_path_buf(),
        };
        if let Some(stored) = load_snapshot(dir)? {
            let body = postcard::from_bytes(&stored.data).map_err(snapshot_read_err)?;
            store.restore(body);
            let size = std::fs::metadata(dir.join(SNAPSHOT_FILE)).map_or(0, |m| m.len());
            store.shared.set_snapshot_bytes(size);
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
        let started = Instant::now();
        let (meta, bytes) = blocking(move || write_snapshot(&dir, &body)).await?;
        let shared = &self.shared;
        shared
            .metrics
            .build_seconds
            .observe(started.elapsed().as_secs_f64());
        shared.set_snapshot_bytes(bytes);
        shared.snapshots_built.fetch_add(1, Ordering::Relaxed);
        tracing::info!(snapshot = %meta.snapshot_id, bytes, "built snapshot");
        // openraft 0.9 keeps only the metadata of a built snapshot (sm::Worker maps the
        // result to `Response::BuildSnapshot(meta)` and drops the data); a follower is sent
        // the file through `get_current_snapshot`. So no copy of the body is held here.
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
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
        let data = snapshot.into_inner();
        let meta_owned = meta.clone();
        let dir = self.dir.clone();
        // Persist first: once the state machine moves to the snapshot, a restart must
        // find it on disk (the log below it may already be gone).
        let (body, bytes) = blocking(move || {
            let body: SnapshotBody = postcard::from_bytes(&data).map_err(snapshot_read_err)?;
            let bytes = persist_snapshot(&dir, &meta_owned, |out| out.write_all(&data))?;
            Ok((body, bytes))
        })
        .await?;
        self.restore(body);
        self.shared.set_snapshot_bytes(bytes);
        self.shared
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(snapshot = %meta.snapshot_id, bytes, "installed snapshot from leader");
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

    /// A full disk is named as such in the error that stops the node, not as postcard's
    /// "serialize buffer is full".
    #[test]
    fn a_full_disk_is_named_in_the_snapshot_error() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from_raw_os_error(28))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let body = vec![7u8; 4096];
        let e = encode_into(&body, &mut Full).unwrap_err();
        assert_eq!(e.raw_os_error(), None);
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
        let stopped = snapshot_write_err(e);
        let text = format!(
            "{stopped}: {}",
            std::error::Error::source(&stopped)
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        assert!(text.contains("No space left on device"), "{text}");
    }
    use queue::Command;
    use queue::QueuedPacket;

    fn packet(seq: u64, len: usize) -> QueuedPacket {
        QueuedPacket {
            sender: 1,
            session: 2,
            seq,
            received_at_us: 4,
            source: "127.0.0.1:9".parse().unwrap(),
            report: vec![seq as u8; len],
        }
    }

    fn open(dir: &Path) -> StateMachineStore {
        StateMachineStore::open(dir, DedupLimits::default(), 0, SnapshotMetrics::default()).unwrap()
    }

    fn entry(index: u64, command: Command) -> openraft::Entry<TypeConfig> {
        openraft::Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(command),
        }
    }

    /// A snapshot built by streaming (larger than the writer's buffer and than one
    /// pacing step) restores to the state it was built from: on restart from the file,
    /// and on a follower that installs the bytes `get_current_snapshot` sends.
    #[tokio::test]
    async fn streamed_snapshot_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        // 40 batches of 100 packets of 5000 bytes: about 20 MB, above PACE_BYTES.
        let entries: Vec<_> = (0..40u64)
            .map(|b| {
                let batch = (b * 100..b * 100 + 100).map(|s| packet(s, 5000)).collect();
                entry(b + 1, Command::Append { batch })
            })
            .collect();
        store.apply(entries).await.unwrap();
        let state = store.shared().read().clone();
        assert_eq!(state.summary().depth, 4000);

        let mut builder = store.get_snapshot_builder().await;
        let built = builder.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(40));
        let size = std::fs::metadata(dir.path().join(SNAPSHOT_FILE))
            .unwrap()
            .len();
        assert!(size > PACE_BYTES, "{size}");
        assert_eq!(store.shared().snapshot_bytes(), size);
        assert!(!dir.path().join(SNAPSHOT_TMP).exists());

        // Restart from the file.
        let mut reopened = open(dir.path());
        assert_eq!(*reopened.shared().read(), state);
        assert_eq!(
            reopened.applied_state().await.unwrap().0,
            built.meta.last_log_id
        );

        // What a lagging follower is sent, installed on an empty follower.
        let current = reopened.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, built.meta);
        let follower_dir = tempfile::tempdir().unwrap();
        let mut follower = open(follower_dir.path());
        follower
            .install_snapshot(&current.meta, current.snapshot)
            .await
            .unwrap();
        assert_eq!(*follower.shared().read(), state);
        assert_eq!(follower.shared().snapshots_installed(), 1);
        // And the follower's own file restores too.
        assert_eq!(*open(follower_dir.path()).shared().read(), state);

        // A second build replaces the file; the replaced one is released, not left.
        store
            .apply([entry(
                41,
                Command::CommitOffset {
                    consumer: "c".into(),
                    offset: 0,
                },
            )])
            .await
            .unwrap();
        let rebuilt = store
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(rebuilt.meta.last_log_id.map(|l| l.index), Some(41));
        assert!(!dir.path().join(SNAPSHOT_OLD).exists());
        assert_eq!(
            open(dir.path()).applied_state().await.unwrap().0,
            rebuilt.meta.last_log_id
        );
    }

    /// A file of the layout before streaming (one postcard `StoredSnapshot`) still loads.
    #[test]
    fn snapshot_file_of_the_previous_layout_loads() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = QueueState::new(DedupLimits::default());
        state.apply(Command::Append {
            batch: vec![packet(3, 3)],
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
        std::fs::write(
            dir.path().join(SNAPSHOT_FILE),
            postcard::to_allocvec(&stored).unwrap(),
        )
        .unwrap();
        let store = open(dir.path());
        assert_eq!(*store.shared().read(), state);
    }

    #[test]
    fn corrupt_snapshot_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SNAPSHOT_FILE), b"garbage").unwrap();
        assert!(StateMachineStore::open(
            dir.path(),
            DedupLimits::default(),
            0,
            SnapshotMetrics::default()
        )
        .is_err());
        let mut truncated = SNAPSHOT_MAGIC.to_vec();
        truncated.push(1);
        std::fs::write(dir.path().join(SNAPSHOT_FILE), truncated).unwrap();
        assert!(StateMachineStore::open(
            dir.path(),
            DedupLimits::default(),
            0,
            SnapshotMetrics::default()
        )
        .is_err());
    }
}
