//! The durable Raft log: entries in segment files, vote and purge point in sled.
//!
//! Entries go to [`SegmentLog`] (append-only files under `<data_dir>/entries`; see that
//! module for why not sled) and are acknowledged to openraft only after a sync covering
//! them completes. One flusher task serves all appends: while a sync runs, later appends
//! queue up and the next sync covers them all (group commit), so concurrent batches share
//! one fdatasync per file written.
//!
//! The vote, the committed index and the purge point stay in a small sled tree. A vote is
//! synced before `save_vote` returns. The committed index and the purge point are synced
//! by a second flusher task, beside the log's own syncs: a change wakes it, and changes
//! that arrive while it syncs, or less than 50 ms after, share the next sync (at most 20
//! extra device flushes a second under load). So after a crash or a power cut a node
//! re-applies its log locally up to (nearly) the last committed index it knew, instead of
//! waiting for its peers; what is lost is at most the changes of one sync, and reads never
//! rely on it (see `Node::read_barrier`). A sync of the meta data is sled's flush, then
//! [`DurableFiles`]. sled
//! 0.34 persists its buffers with `sync_file_range` on Linux, which writes the pages but
//! neither flushes the device's write cache nor persists the file's metadata, so on its
//! own it does not survive a power cut. [`DurableFiles`] closes that gap: it fdatasyncs
//! sled's data file (`<dir>/db`, through a descriptor of our own: fsync acts on the
//! inode, whichever descriptor wrote the pages) and every large-value file sled created
//! under `<dir>/blobs/` (sled writes those without any sync), then the `blobs` directory.
//!
//! A data directory of an older version keeps its entries in a sled tree `log`; [`migrate`]
//! copies them into segment files once, at open.

// The storage helpers return openraft's `StorageError` because the storage traits do;
// its size is not ours to choose.
#![allow(clippy::result_large_err)]

use super::segment_log::{self, sync_dir, SegmentLog};
use super::{NodeId, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt::Debug;
use std::fs::File;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const LAST_PURGED_KEY: &[u8] = b"last_purged";

/// Called on the blocking pool just before each fdatasync, with the highest log index the
/// sync will cover (0 for a sync that covers no new entry: a vote). Tests
/// use it to hold a sync back and check that nothing is acknowledged meanwhile.
pub type SyncHook = Arc<dyn Fn(u64) + Send + Sync>;

/// What the log store reports about its syncs.
#[derive(Clone)]
pub struct StoreMetrics {
    /// Seconds per group sync (sled flush + fdatasync).
    pub flush_seconds: Histogram,
    /// Completed syncs (each one fdatasync of the data file at least).
    pub syncs: Counter,
    /// Seconds per background purge (deleting the entries up to the purge point).
    pub purge_seconds: Histogram,
    /// Bytes of encoded entries appended to the log (the snapshot policy compares the
    /// growth since the last snapshot with its size).
    pub appended_bytes: Counter,
    /// Seconds per synchronous sled write made on Raft's behalf (entries, committed
    /// index): Raft waits for each, so a slow one stalls the node.
    pub write_seconds: Histogram,
}

/// The files sled writes, and the fdatasync that makes them durable.
pub struct DurableFiles {
    db_file: File,
    blobs_dir: PathBuf,
    /// Blob files already synced (the names present at the last sync).
    synced_blobs: HashSet<OsString>,
}

impl DurableFiles {
    /// Opens sled's data file in `dir` (a sled directory already opened by sled) and makes
    /// the directory entries sled created at open durable.
    pub fn open(dir: &Path) -> std::io::Result<DurableFiles> {
        let db_file = File::open(dir.join("db"))?;
        db_file.sync_all()?;
        match File::open(dir.join("conf")) {
            Ok(conf) => conf.sync_all()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        let mut files = DurableFiles {
            db_file,
            blobs_dir: dir.join("blobs"),
            synced_blobs: HashSet::new(),
        };
        files.sync()?;
        Ok(files)
    }

    /// fdatasyncs every blob file written since the last call (and then the `blobs`
    /// directory), then the data file. Blobs go first: a log record must never be durable
    /// while the blob it points to is not.
    pub fn sync(&mut self) -> std::io::Result<()> {
        let mut present = HashSet::new();
        let mut created = false;
        match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry?;
                    let name = entry.file_name();
                    if !self.synced_blobs.contains(&name) {
                        match File::open(entry.path()) {
                            Ok(f) => f.sync_data()?,
                            // Collected by sled in the meantime.
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                            Err(e) => return Err(e),
                        }
                        created = true;
                    }
                    present.insert(name);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if created {
            sync_dir(&self.blobs_dir)?;
        }
        self.synced_blobs = present;
        self.db_file.sync_data()
    }
}

/// Shared between the store's clones and the flusher task.
struct Syncer {
    db: sled::Db,
    files: Mutex<DurableFiles>,
    log: Mutex<SegmentLog>,
    /// The segment files' directory.
    entries_dir: PathBuf,
    hook: Option<SyncHook>,
    metrics: StoreMetrics,
    syncs: AtomicU64,
    synced_index: AtomicU64,
    /// Changes of the committed index or purge point so far.
    meta_changes: AtomicU64,
    /// How many of those the meta flusher has made durable.
    meta_durable: AtomicU64,
    /// Wakes the meta flusher.
    meta_changed: Arc<tokio::sync::Notify>,
}

impl Syncer {
    fn log(&self) -> std::sync::MutexGuard<'_, SegmentLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// fdatasync of the segment files written so far (and of their directory when a file
    /// was created or removed), on the blocking pool. `covered` is the highest log index
    /// written before the call.
    async fn sync_log(self: &Arc<Self>, covered: u64) -> std::io::Result<()> {
        let started = Instant::now();
        let (files, dir_dirty) = self.log().take_unsynced();
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(hook) = &me.hook {
                hook(covered);
            }
            segment_log::sync_files(&files, dir_dirty, &me.entries_dir)
        })
        .await
        .map_err(std::io::Error::other)??;
        self.synced(covered, started);
        Ok(())
    }

    /// sled flush, then fdatasync of its files (on the blocking pool): makes the vote and
    /// the purge point durable.
    async fn sync_meta(self: &Arc<Self>) -> std::io::Result<()> {
        let started = Instant::now();
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.sync_meta_blocking())
            .await
            .map_err(std::io::Error::other)??;
        self.synced(0, started);
        Ok(())
    }

    /// The blocking part of [`Syncer::sync_meta`] (also run by a purge before it deletes
    /// files).
    fn sync_meta_blocking(&self) -> std::io::Result<()> {
        self.db.flush().map_err(std::io::Error::other)?;
        if let Some(hook) = &self.hook {
            hook(0);
        }
        self.files.lock().unwrap_or_else(|e| e.into_inner()).sync()
    }

    fn synced(&self, covered: u64, started: Instant) {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.synced_index.fetch_max(covered, Ordering::SeqCst);
        self.metrics.syncs.inc();
        self.metrics
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The Raft log (segment files), vote, committed index and purge point (sled).
#[derive(Clone)]
pub struct LogStore {
    meta: sled::Tree,
    syncer: Arc<Syncer>,
    flusher: mpsc::UnboundedSender<(LogFlushed<TypeConfig>, u64)>,
    last_log: LastLogId,
}

/// The id of the last entry in the log, kept up to date by the store (append, truncate),
/// for the prompt election, which compares logs the way a vote does. Cheap to clone.
#[derive(Clone, Default)]
pub struct LastLogId(Arc<Mutex<Option<LogId<NodeId>>>>);

impl LastLogId {
    /// The last log id (None: empty log, nothing purged).
    pub fn get(&self) -> Option<LogId<NodeId>> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, id: Option<LogId<NodeId>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = id;
    }
}

/// A storage call slower than this is logged (writes Raft waits for, entry reads, purges).
const SLOW_STORAGE_CALL: std::time::Duration = std::time::Duration::from_millis(200);

/// Bytes after which the log starts a new segment file. A purge deletes whole files, so
/// the log keeps up to this much below the purge point on disk.
const SEGMENT_BYTES: u64 = 32 << 20;

/// Runs a synchronous storage call (sled, or a write to the segment files, which blocks
/// when the kernel throttles dirty pages). On a multi-threaded runtime the worker first
/// hands its other tasks (heartbeats, RPCs) to another thread, so one slow write cannot
/// freeze the node.
fn blocking_io<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

fn decode(index: u64, bytes: &[u8]) -> Result<Entry<TypeConfig>, StorageError<NodeId>> {
    let entry: Entry<TypeConfig> = postcard::from_bytes(bytes).map_err(read_err)?;
    if entry.log_id.index != index {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "raft log: record at index {index} holds entry {}",
                entry.log_id.index
            ),
        )));
    }
    Ok(entry)
}

/// Copies the entries of a data directory of an older version (sled tree `log`) into
/// segment files at `entries_dir`, then drops the tree. The copy is built in a side
/// directory, synced, and renamed into place, so a crash midway leaves either the old
/// layout or the new one, never a mix. Returns the entries copied.
fn migrate(db: &sled::Db, entries_dir: &Path) -> std::io::Result<u64> {
    let old = db.open_tree("log").map_err(std::io::Error::other)?;
    if old.is_empty() {
        return Ok(0);
    }
    if entries_dir.exists() {
        // A migration finished but the tree was not dropped yet.
        db.drop_tree("log").map_err(std::io::Error::other)?;
        db.flush().map_err(std::io::Error::other)?;
        return Ok(0);
    }
    let side = entries_dir.with_extension("migrating");
    match std::fs::remove_dir_all(&side) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let (mut log, _) = SegmentLog::open(&side, SEGMENT_BYTES, None)?;
    let mut copied = 0u64;
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut batch_first = 0;
    for item in old.iter() {
        let (k, v) = item.map_err(std::io::Error::other)?;
        let index = k.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| {
            std::io::Error::other("raft log: a key of the old layout is not an index")
        })?;
        if batch.is_empty() {
            batch_first = index;
        }
        batch.push(v.to_vec());
        copied += 1;
        if batch.len() >= 256 {
            log.append(batch_first, &batch)?;
            batch.clear();
        }
    }
    log.append(batch_first, &batch)?;
    let (files, dirty) = log.take_unsynced();
    segment_log::sync_files(&files, dirty, &side)?;
    drop(log);
    std::fs::rename(&side, entries_dir)?;
    if let Some(parent) = entries_dir.parent() {
        sync_dir(parent)?;
    }
    db.drop_tree("log").map_err(std::io::Error::other)?;
    db.flush().map_err(std::io::Error::other)?;
    tracing::info!(
        entries = copied,
        dir = %entries_dir.display(),
        "moved the raft log from sled into segment files"
    );
    Ok(copied)
}

impl LogStore {
    /// Opens the log: entries in `entries_dir`, the rest in `db` (sled directory `dir`),
    /// and starts its flusher task (needs a tokio runtime). `hook`, when set, runs before
    /// every fdatasync.
    pub fn open(
        db: &sled::Db,
        dir: &Path,
        entries_dir: &Path,
        metrics: StoreMetrics,
        hook: Option<SyncHook>,
    ) -> Result<Self, StorageError<NodeId>> {
        migrate(db, entries_dir).map_err(write_err)?;
        let meta = db.open_tree("meta").map_err(read_err)?;
        let files = DurableFiles::open(dir).map_err(write_err)?;
        let purged: Option<LogId<NodeId>> = get_meta(&meta, LAST_PURGED_KEY)?;
        let (log, recovery) = SegmentLog::open(entries_dir, SEGMENT_BYTES, purged.map(|p| p.index))
            .map_err(read_err)?;
        if recovery.discarded_bytes > 0 || recovery.removed_files > 0 {
            tracing::info!(
                records = recovery.records,
                discarded_bytes = recovery.discarded_bytes,
                removed_files = recovery.removed_files,
                "raft log recovered"
            );
        }
        let syncer = Arc::new(Syncer {
            db: db.clone(),
            files: Mutex::new(files),
            log: Mutex::new(log),
            entries_dir: entries_dir.to_path_buf(),
            hook,
            metrics,
            syncs: AtomicU64::new(0),
            synced_index: AtomicU64::new(0),
            meta_changes: AtomicU64::new(0),
            meta_durable: AtomicU64::new(0),
            meta_changed: Arc::new(tokio::sync::Notify::new()),
        });
        let (flusher, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_flusher(syncer.clone(), rx));
        tokio::spawn(run_meta_flusher(
            Arc::downgrade(&syncer),
            syncer.meta_changed.clone(),
        ));
        let store = LogStore {
            meta,
            syncer,
            flusher,
            last_log: LastLogId::default(),
        };
        store.last_log.set(store.stored_last_log_id()?);
        Ok(store)
    }

    /// The tracker of the last log id (shared with the prompt election).
    pub fn last_log(&self) -> LastLogId {
        self.last_log.clone()
    }

    /// The entries `from..to` that are stored, read outside the log's lock.
    fn read_range(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let plans = self.syncer.log().plan(from, to);
        let records = blocking_io(|| segment_log::read_plans(&plans)).map_err(read_err)?;
        records
            .iter()
            .map(|(index, bytes)| decode(*index, bytes))
            .collect()
    }

    /// The id of the last stored entry, or the last purged one when the log is empty.
    fn stored_last_log_id(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let last = self.syncer.log().last_index();
        match last {
            Some(last) => Ok(self
                .read_range(last, last + 1)?
                .pop()
                .map(|entry| entry.log_id)),
            None => self.get_meta(LAST_PURGED_KEY),
        }
    }

    /// Syncs completed since open (`cma_raft_log_syncs_total` counts them for operators).
    #[cfg(test)]
    pub fn syncs(&self) -> u64 {
        self.syncer.syncs.load(Ordering::SeqCst)
    }

    /// Whether every change of the committed index and purge point so far is durable.
    #[cfg(test)]
    pub fn meta_durable(&self) -> bool {
        self.syncer.meta_durable.load(Ordering::SeqCst)
            >= self.syncer.meta_changes.load(Ordering::SeqCst)
    }

    /// Highest log index covered by a completed sync (0: none yet).
    #[cfg(test)]
    pub fn synced_index(&self) -> u64 {
        self.syncer.synced_index.load(Ordering::SeqCst)
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError<NodeId>> {
        get_meta(&self.meta, key)
    }

    /// [`LogStore::put_meta`] for a value the meta flusher makes durable soon (committed
    /// index, purge point).
    fn put_meta_soon<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
    ) -> Result<(), StorageError<NodeId>> {
        self.put_meta(key, value)?;
        self.syncer.meta_changes.fetch_add(1, Ordering::SeqCst);
        self.syncer.meta_changed.notify_one();
        Ok(())
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = postcard::to_allocvec(value).map_err(write_err)?;
        self.timed_write("meta", || self.meta.insert(key, bytes))
            .map_err(write_err)?;
        Ok(())
    }

    /// A synchronous write (see [`blocking_io`]), timed into `write_seconds`; one slower
    /// than [`SLOW_STORAGE_CALL`] is logged, as it holds up Raft on this node.
    fn timed_write<T>(&self, what: &'static str, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = blocking_io(work);
        let took = started.elapsed();
        self.syncer
            .metrics
            .write_seconds
            .observe(took.as_secs_f64());
        if took > SLOW_STORAGE_CALL {
            tracing::warn!(
                what,
                ms = took.as_millis() as u64,
                "slow raft log write; Raft on this node waited for it"
            );
        }
        result
    }
}

fn get_meta<T: serde::de::DeserializeOwned>(
    meta: &sled::Tree,
    key: &[u8],
) -> Result<Option<T>, StorageError<NodeId>> {
    match meta.get(key).map_err(read_err)? {
        None => Ok(None),
        Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(read_err),
    }
}

/// Shortest time between two syncs of the committed index and purge point.
const META_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Syncs the meta data (committed index, purge point) whenever it changed, one sync at a
/// time and at most one per [`META_SYNC_INTERVAL`]: changes made meanwhile are covered by
/// the next. Stops with the last store handle.
async fn run_meta_flusher(syncer: std::sync::Weak<Syncer>, changed: Arc<tokio::sync::Notify>) {
    loop {
        // A change notified while a sync ran left a permit: the next wait returns at once.
        let wait = changed.notified();
        let Some(strong) = syncer.upgrade() else {
            return;
        };
        let changes = strong.meta_changes.load(Ordering::SeqCst);
        if changes > strong.meta_durable.load(Ordering::SeqCst) {
            match strong.sync_meta().await {
                Ok(()) => {
                    strong.meta_durable.store(changes, Ordering::SeqCst);
                    // At most one meta sync per interval: under load the committed index
                    // changes with every batch, and each sync costs a device flush.
                    drop(strong);
                    tokio::time::sleep(META_SYNC_INTERVAL).await;
                }
                Err(e) => {
                    // Not fatal: retried, and reads never rely on it.
                    tracing::warn!(error = %e, "syncing the raft committed index failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
            continue;
        }
        // Wait for a change without keeping the store alive; wake now and then to notice
        // that the store is gone.
        drop(strong);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), wait).await;
    }
}

/// Syncs for every batch of pending appends and then acknowledges them, in order. An
/// append is acknowledged only after a sync that started after it was written.
async fn run_flusher(
    syncer: Arc<Syncer>,
    mut rx: mpsc::UnboundedReceiver<(LogFlushed<TypeConfig>, u64)>,
) {
    let mut pending = Vec::new();
    while let Some(first) = rx.recv().await {
        pending.push(first);
        while let Ok(more) = rx.try_recv() {
            pending.push(more);
        }
        let covered = pending.iter().map(|(_, last)| *last).max().unwrap_or(0);
        let result = syncer.sync_log(covered).await;
        for (callback, _) in pending.drain(..) {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            callback.log_io_completed(outcome);
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft log sync failed");
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        let started = Instant::now();
        let read = self.read_range(start, end);
        let took = started.elapsed();
        if took > SLOW_STORAGE_CALL {
            tracing::warn!(
                ms = took.as_millis() as u64,
                "slow read of raft log entries; replication to a follower waited for it"
            );
        }
        read
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_meta(LAST_PURGED_KEY)?;
        let last = self.stored_last_log_id()?;
        self.last_log.set(last);
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put_meta(VOTE_KEY, vote).map_err(|_| {
            StorageError::from(StorageIOError::write_vote(&std::io::Error::other("encode")))
        })?;
        self.syncer
            .sync_meta()
            .await
            .map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get_meta(VOTE_KEY)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Synced soon by the meta flusher, not before this returns: losing the last
        // change only means re-applying a little less locally after a crash; reads wait
        // for the log itself (`Node::read_barrier`).
        self.put_meta_soon(COMMITTED_KEY, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self
            .get_meta::<Option<LogId<NodeId>>>(COMMITTED_KEY)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut payloads = Vec::new();
        let mut first = None;
        let mut last_id = None;
        let mut appended = 0u64;
        for entry in entries {
            first.get_or_insert(entry.log_id.index);
            last_id = Some(entry.log_id);
            let bytes = postcard::to_allocvec(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            appended += bytes.len() as u64;
            payloads.push(bytes);
        }
        if let Some(first) = first {
            self.timed_write("entries", || self.syncer.log().append(first, &payloads))
                .map_err(write_err)?;
        }
        self.syncer.metrics.appended_bytes.inc_by(appended);
        let last = last_id.map_or(0, |id| id.index);
        if last_id.is_some() {
            self.last_log.set(last_id);
        }
        if let Err(mpsc::error::SendError((callback, last))) = self.flusher.send((callback, last)) {
            // The flusher only stops with the runtime; sync inline rather than lose the ack.
            callback.log_io_completed(self.syncer.sync_log(last).await);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Durable before it returns (see `SegmentLog::truncate`): the entries replacing
        // the cut ones may be acknowledged by the next sync, and a crash after that must
        // not bring the old ones back.
        self.timed_write("truncate", || self.syncer.log().truncate(log_id.index))
            .map_err(write_err)?;
        self.last_log.set(self.stored_last_log_id()?);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // From here on openraft never reads at or below the purge point, so the segments
        // wholly below it are forgotten at once. Their files are deleted in the background
        // after the purge point is durable: a crash in between must not leave a log that
        // starts past a purge point that was never recorded.
        self.put_meta_soon(LAST_PURGED_KEY, &log_id)?;
        let detached = self.syncer.log().detach_upto(log_id.index);
        if detached.is_empty() {
            return Ok(());
        }
        let syncer = self.syncer.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let done = syncer
                .sync_meta_blocking()
                .and_then(|()| segment_log::release_files(&syncer.entries_dir, &detached));
            match done {
                Ok(_) => syncer
                    .metrics
                    .purge_seconds
                    .observe(started.elapsed().as_secs_f64()),
                Err(e) => {
                    tracing::warn!(error = %e, upto = log_id.index, "purging raft log files failed")
                }
            }
        });
        Ok(())
    }
}

/// Test support: a gate a [`SyncHook`] can hold fdatasyncs at.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    /// A gate the sync hook waits at while it is closed.
    #[derive(Default)]
    pub struct Gate {
        pub closed: AtomicBool,
        pub entered: Mutex<Vec<u64>>,
        open: (Mutex<bool>, std::sync::Condvar),
    }

    impl Gate {
        pub fn wait(&self, covered: u64) {
            if !self.closed.load(Ordering::SeqCst) {
                return;
            }
            self.entered.lock().unwrap().push(covered);
            let (lock, cvar) = &self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cvar.wait(open).unwrap();
            }
        }

        pub fn release(&self) {
            self.closed.store(false, Ordering::SeqCst);
            *self.open.0.lock().unwrap() = true;
            self.open.1.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Gate;
    use super::*;
    use crate::network::Network;
    use crate::state_machine::StateMachineStore;
    use crate::{NodeAddr, Raft};
    use queue::state::DedupLimits;
    use queue::Command;
    use std::time::Duration;

    fn metrics() -> StoreMetrics {
        StoreMetrics {
            flush_seconds: Histogram::new([0.001]),
            syncs: Counter::default(),
            purge_seconds: Histogram::new([0.001]),
            appended_bytes: Counter::default(),
            write_seconds: Histogram::new([0.001]),
        }
    }

    fn open_db(dir: &Path) -> sled::Db {
        sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .open()
            .unwrap()
    }

    /// openraft is told an entry is flushed (`LogFlushed`), and so commits it, only after
    /// the fdatasync covering it: while the sync is held back, the write stays pending.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_entry_is_acknowledged_before_its_sync() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("log");
        let db = open_db(&log_dir);
        let gate = Arc::new(Gate::default());
        let hook_gate = gate.clone();
        let hook: SyncHook = Arc::new(move |covered| hook_gate.wait(covered));
        let store = LogStore::open(
            &db,
            &log_dir,
            &dir.path().join("entries"),
            metrics(),
            Some(hook),
        )
        .unwrap();
        let probe = store.clone();
        let sm = StateMachineStore::open(
            &dir.path().join("sm"),
            DedupLimits::default(),
            0,
            Default::default(),
        )
        .unwrap();
        let config = Arc::new(openraft::Config::default().validate().unwrap());
        let network = Network::new([7; 32], Duration::from_secs(1), Duration::from_millis(100));
        let raft = Raft::new(1, config, network, store, sm).await.unwrap();
        let members = [(1, NodeAddr::default())]
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>();
        raft.initialize(members).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !raft.metrics().borrow().state.is_leader() {
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A first write goes through with the gate open.
        let warm = raft
            .client_write(Command::CommitOffset {
                consumer: "warm".into(),
                offset: 0,
            })
            .await
            .unwrap();
        let expected = warm.log_id.index + 1;
        let syncs_before = probe.syncs();

        gate.closed.store(true, Ordering::SeqCst);
        // Opens the gate even if an assertion below fails, so the held blocking thread
        // (and with it the runtime's shutdown) is never stuck.
        struct Release(Arc<Gate>);
        impl Drop for Release {
            fn drop(&mut self) {
                self.0.release();
            }
        }
        let release = Release(gate.clone());
        let writer = raft.clone();
        let write = tokio::spawn(async move {
            writer
                .client_write(Command::CommitOffset {
                    consumer: "c".into(),
                    offset: 0,
                })
                .await
        });
        // Wait until the sync covering the new entry is being held.
        while !gate.entered.lock().unwrap().iter().any(|&c| c >= expected) {
            assert!(Instant::now() < deadline, "the sync never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Held sync: nothing may be acknowledged. Give a buggy store time to do so.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!write.is_finished(), "write acknowledged before its sync");
        assert!(probe.synced_index() < expected);
        drop(release);
        let response = tokio::time::timeout(Duration::from_secs(20), write)
            .await
            .expect("write never completed")
            .unwrap()
            .unwrap();
        assert_eq!(response.log_id.index, expected);
        assert!(probe.synced_index() >= response.log_id.index);
        assert!(probe.syncs() > syncs_before);
        raft.shutdown().await.unwrap();
    }

    /// A vote is synced before `save_vote` returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn votes_are_synced() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path());
        let mut store = LogStore::open(
            &db,
            dir.path(),
            &dir.path().join("entries"),
            metrics(),
            None,
        )
        .unwrap();
        let before = store.syncs();
        store.save_vote(&Vote::new(3, 1)).await.unwrap();
        assert_eq!(store.syncs(), before + 1);
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    }

    /// Builds a fresh log store and state machine in a temporary directory for openraft's
    /// storage test suite.
    struct Builder;

    impl openraft::testing::StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir>
        for Builder
    {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<NodeId>>
        {
            let dir = tempfile::tempdir().map_err(write_err)?;
            let sled_dir = dir.path().join("log");
            let db = open_db(&sled_dir);
            let store =
                LogStore::open(&db, &sled_dir, &dir.path().join("entries"), metrics(), None)?;
            let sm = StateMachineStore::open(
                &dir.path().join("sm"),
                DedupLimits::default(),
                0,
                Default::default(),
            )?;
            Ok((dir, store, sm))
        }
    }

    /// openraft's own storage suite: log state, reads, truncation, purge, votes and the
    /// state machine, against the real stores.
    #[test]
    fn passes_openraft_storage_suite() {
        openraft::testing::Suite::test_all(Builder).unwrap();
    }

    /// Entries survive a reopen, a purge deletes whole segment files once the purge point
    /// is recorded, and the log reopens at the purge point.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purge_deletes_segment_files_and_reopens_at_the_purge_point() {
        let dir = tempfile::tempdir().unwrap();
        let sled_dir = dir.path().join("log");
        let entries = dir.path().join("entries");
        let big = "c".repeat(300_000);
        let blank = |i: u64| offset_entry(1, i, &big);
        {
            let db = open_db(&sled_dir);
            let mut store = LogStore::open(&db, &sled_dir, &entries, metrics(), None).unwrap();
            // 300 KB entries: a 32 MiB segment holds about 110.
            for i in 1..=400u64 {
                append(&mut store, vec![blank(i)]).await;
            }
            let files = std::fs::read_dir(&entries).unwrap().count();
            assert!(files >= 3, "{files} segment files");
            store
                .purge(LogId::new(openraft::CommittedLeaderId::new(1, 1), 250))
                .await
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::fs::read_dir(&entries).unwrap().count() >= files {
                assert!(
                    Instant::now() < deadline,
                    "purged segment files never deleted"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(250));
            assert_eq!(state.last_log_id.map(|l| l.index), Some(400));
        }
        let db = reopen_db(&sled_dir).await;
        let mut store = LogStore::open(&db, &sled_dir, &entries, metrics(), None).unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(250));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(400));
        let read = store.try_get_log_entries(251..=400).await.unwrap();
        assert_eq!(read.len(), 150);
        assert!(read.iter().zip(251..).all(|(e, i)| e.log_id.index == i));
    }

    /// A purge deletes no segment file before its purge point is synced: while the sync
    /// of the meta data is held back, every file is still there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purge_deletes_files_only_after_its_purge_point_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let sled_dir = dir.path().join("log");
        let entries = dir.path().join("entries");
        let gate = Arc::new(Gate::default());
        let hook_gate = gate.clone();
        let hook: SyncHook = Arc::new(move |covered| hook_gate.wait(covered));
        let db = open_db(&sled_dir);
        let mut store = LogStore::open(&db, &sled_dir, &entries, metrics(), Some(hook)).unwrap();
        let big = "c".repeat(300_000);
        for i in 1..=250u64 {
            append(&mut store, vec![offset_entry(1, i, &big)]).await;
        }
        let names = || {
            let mut names: Vec<_> = std::fs::read_dir(&entries)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            names
        };
        let before = names();
        assert!(before.len() >= 3, "{before:?}");
        gate.closed.store(true, Ordering::SeqCst);
        struct Release(Arc<Gate>);
        impl Drop for Release {
            fn drop(&mut self) {
                self.0.release();
            }
        }
        let release = Release(gate.clone());
        store
            .purge(LogId::new(openraft::CommittedLeaderId::new(1, 1), 200))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !gate.entered.lock().unwrap().contains(&0) {
            assert!(
                Instant::now() < deadline,
                "the purge never synced its purge point"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            names(),
            before,
            "files touched before the purge point was durable"
        );
        drop(release);
        while names().len() >= before.len() {
            assert!(
                Instant::now() < deadline,
                "purged segment files never deleted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A data directory of the previous layout (entries in a sled tree) is migrated into
    /// segment files at open, once, even over the leftovers of an interrupted copy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_of_the_sled_layout_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let sled_dir = dir.path().join("log");
        let entries = dir.path().join("entries");
        let entry = |i: u64| offset_entry(2, i, "old");
        {
            let db = open_db(&sled_dir);
            let old = db.open_tree("log").unwrap();
            for i in 5..=1000u64 {
                old.insert(i.to_be_bytes(), postcard::to_allocvec(&entry(i)).unwrap())
                    .unwrap();
            }
            db.flush().unwrap();
        }
        // A copy that a crash interrupted is thrown away and made again.
        std::fs::create_dir_all(dir.path().join("entries.migrating")).unwrap();
        std::fs::write(
            dir.path()
                .join("entries.migrating/00000000000000000005.seg"),
            b"half",
        )
        .unwrap();
        for _ in 0..2 {
            let db = reopen_db(&sled_dir).await;
            let mut store = LogStore::open(&db, &sled_dir, &entries, metrics(), None).unwrap();
            assert!(db.open_tree("log").unwrap().is_empty());
            assert!(!dir.path().join("entries.migrating").exists());
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_log_id, Some(entry(1000).log_id));
            let read = store.try_get_log_entries(5..=1000).await.unwrap();
            assert_eq!(read, (5..=1000).map(entry).collect::<Vec<_>>());
        }
    }

    /// An offset commit by `consumer` as the entry at `index` of leader term `term`.
    fn offset_entry(term: u64, index: u64, consumer: &str) -> openraft::Entry<TypeConfig> {
        openraft::Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(term, 1), index),
            payload: openraft::EntryPayload::Normal(Command::CommitOffset {
                consumer: consumer.into(),
                offset: index,
            }),
        }
    }

    /// Opens sled again once the previous store's tasks have let go of it (its flusher
    /// stops when the last store handle is dropped).
    async fn reopen_db(dir: &Path) -> sled::Db {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match sled::Config::new().path(dir).flush_every_ms(None).open() {
                Ok(db) => return db,
                Err(e) => {
                    assert!(Instant::now() < deadline, "sled still locked: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    async fn append(store: &mut LogStore, entries: Vec<openraft::Entry<TypeConfig>>) {
        use openraft::storage::RaftLogStorageExt;
        store.blocking_append(entries).await.unwrap();
    }

    /// The committed index and the purge point are made durable without a vote or a purge
    /// that deletes files: a copy of the data directory taken while the store still runs
    /// (the files as a SIGKILL leaves them; sled's unflushed buffers are lost) holds both.
    /// Before the meta flusher, neither was ever written while the log lived in segment
    /// files, and a restarted node re-applied only from its snapshot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_and_purge_point_survive_a_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let sled_dir = dir.path().join("log");
        let entries = dir.path().join("entries");
        let db = open_db(&sled_dir);
        let mut store = LogStore::open(&db, &sled_dir, &entries, metrics(), None).unwrap();
        for i in 1..=40u64 {
            append(&mut store, vec![offset_entry(1, i, "c")]).await;
        }
        let committed = offset_entry(1, 37, "c").log_id;
        let purged = offset_entry(1, 12, "c").log_id;
        store.save_committed(Some(committed)).await.unwrap();
        store.purge(purged).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !store.meta_durable() {
            assert!(Instant::now() < deadline, "committed index never synced");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // What a SIGKILL leaves: the files, not the process's buffers.
        let copy = tempfile::tempdir().unwrap();
        for sub in ["log", "entries"] {
            copy_dir(&dir.path().join(sub), &copy.path().join(sub));
        }
        let copied_db = open_db(&copy.path().join("log"));
        let mut reopened = LogStore::open(
            &copied_db,
            &copy.path().join("log"),
            &copy.path().join("entries"),
            metrics(),
            None,
        )
        .unwrap();
        assert_eq!(reopened.read_committed().await.unwrap(), Some(committed));
        let state = reopened.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(purged));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(40));
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }

    /// Blob files sled creates for large values are synced, and only once.
    #[test]
    fn blob_files_are_synced_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path());
        let mut files = DurableFiles::open(dir.path()).unwrap();
        db.insert(b"big", vec![1u8; 4 << 20]).unwrap();
        db.flush().unwrap();
        files.sync().unwrap();
        assert!(!files.synced_blobs.is_empty(), "sled wrote no blob");
        let known = files.synced_blobs.clone();
        files.sync().unwrap();
        assert_eq!(files.synced_blobs, known);
    }
}
