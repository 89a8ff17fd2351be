//! The durable Raft log in sled.
//!
//! Appends are written to the sled tree at once and acknowledged to openraft only after a
//! sync covering them completes. One flusher task serves all appends: while a sync runs,
//! later appends queue up and the next sync covers them all (group commit), so concurrent
//! batches share one fdatasync.
//!
//! A sync is sled's `flush_async` followed by `fdatasync` of the files sled wrote. sled 0.34
//! persists its buffers with `sync_file_range` on Linux, which writes the pages but neither
//! flushes the device's write cache nor persists the file's metadata, so on its own it does
//! not survive a power cut. [`DurableFiles`] closes that gap: it fdatasyncs sled's data file
//! (`<dir>/db`, through a descriptor of our own: fsync acts on the inode, whichever
//! descriptor wrote the pages) and every large-value file sled created under
//! `<dir>/blobs/` (sled writes those without any sync), then the `blobs` directory.

// The storage helpers return openraft's `StorageError` because the storage traits do;
// its size is not ours to choose.
#![allow(clippy::result_large_err)]

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

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
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
    hook: Option<SyncHook>,
    metrics: StoreMetrics,
    syncs: AtomicU64,
    synced_index: AtomicU64,
}

impl Syncer {
    /// sled flush, then fdatasync of its files (on the blocking pool). `covered` is the
    /// highest log index written before the call.
    async fn sync(self: &Arc<Self>, covered: u64) -> std::io::Result<()> {
        let started = Instant::now();
        self.db.flush_async().await.map_err(std::io::Error::other)?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(hook) = &me.hook {
                hook(covered);
            }
            me.files.lock().unwrap_or_else(|e| e.into_inner()).sync()
        })
        .await
        .map_err(std::io::Error::other)??;
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.synced_index.fetch_max(covered, Ordering::SeqCst);
        self.metrics.syncs.inc();
        self.metrics
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// The Raft log, vote and committed index, in two sled trees.
#[derive(Clone)]
pub struct LogStore {
    logs: sled::Tree,
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

/// A sled call slower than this is logged (writes Raft waits for, entry reads, purge
/// batches).
const SLOW_SLED_CALL: std::time::Duration = std::time::Duration::from_millis(200);

/// Runs a synchronous sled call. sled blocks the calling thread when its write buffers
/// are full (a slow disk); on a multi-threaded runtime the worker first hands its other
/// tasks (heartbeats, RPCs) to another thread, so one slow write cannot freeze the node.
fn sled_io<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

impl LogStore {
    /// Opens the log in `db` (sled directory `dir`) and starts its flusher task (needs a
    /// tokio runtime). `hook`, when set, runs before every fdatasync.
    pub fn open(
        db: &sled::Db,
        dir: &Path,
        metrics: StoreMetrics,
        hook: Option<SyncHook>,
    ) -> Result<Self, StorageError<NodeId>> {
        let logs = db.open_tree("log").map_err(read_err)?;
        let meta = db.open_tree("meta").map_err(read_err)?;
        let files = DurableFiles::open(dir).map_err(write_err)?;
        let syncer = Arc::new(Syncer {
            db: db.clone(),
            files: Mutex::new(files),
            hook,
            metrics,
            syncs: AtomicU64::new(0),
            synced_index: AtomicU64::new(0),
        });
        let (flusher, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_flusher(syncer.clone(), rx));
        let store = LogStore {
            logs,
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

    /// The id of the last stored entry, or the last purged one when the log is empty.
    fn stored_last_log_id(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        match self.logs.last().map_err(read_err)? {
            Some((_, bytes)) => {
                let entry: Entry<TypeConfig> = postcard::from_bytes(&bytes).map_err(read_err)?;
                Ok(Some(entry.log_id))
            }
            None => self.get_meta(LAST_PURGED_KEY),
        }
    }

    /// Syncs completed since open (`cma_raft_log_syncs_total` counts them for operators).
    #[cfg(test)]
    pub fn syncs(&self) -> u64 {
        self.syncer.syncs.load(Ordering::SeqCst)
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
        match self.meta.get(key).map_err(read_err)? {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(read_err),
        }
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

    /// A synchronous sled write (see [`sled_io`]), timed into `write_seconds`; one slower
    /// than [`SLOW_SLED_CALL`] is logged, as it holds up Raft on this node.
    fn timed_write<T>(&self, what: &'static str, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = sled_io(work);
        let took = started.elapsed();
        self.syncer
            .metrics
            .write_seconds
            .observe(took.as_secs_f64());
        if took > SLOW_SLED_CALL {
            tracing::warn!(
                what,
                ms = took.as_millis() as u64,
                "slow sled write; Raft on this node waited for it"
            );
        }
        result
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
        let result = syncer.sync(covered).await;
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
            Bound::Included(&i) => Bound::Included(key(i)),
            Bound::Excluded(&i) => Bound::Excluded(key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let started = Instant::now();
        let read = sled_io(|| {
            let mut entries = Vec::new();
            for item in self
                .logs
                .range::<[u8; 8], _>((Bound::Included(key(start)), end))
            {
                let (_, bytes) = item.map_err(read_err)?;
                let entry: Entry<TypeConfig> = postcard::from_bytes(&bytes).map_err(read_err)?;
                entries.push(entry);
            }
            Ok(entries)
        });
        let took = started.elapsed();
        if took > SLOW_SLED_CALL {
            tracing::warn!(
                ms = took.as_millis() as u64,
                "slow sled read of log entries; replication to a follower waited for it"
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
            .sync(0)
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
        // Not flushed on its own: losing it only means re-applying from the snapshot, and
        // the next log flush persists it anyway.
        self.put_meta(COMMITTED_KEY, &committed)
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
        let mut batch = sled::Batch::default();
        let mut last = 0;
        let mut appended = 0u64;
        let mut last_id = None;
        for entry in entries {
            last = entry.log_id.index;
            last_id = Some(entry.log_id);
            let bytes = postcard::to_allocvec(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            appended += bytes.len() as u64;
            batch.insert(&key(entry.log_id.index), bytes);
        }
        self.timed_write("entries", || self.logs.apply_batch(batch))
            .map_err(write_err)?;
        self.syncer.metrics.appended_bytes.inc_by(appended);
        if last_id.is_some() {
            self.last_log.set(last_id);
        }
        if let Err(mpsc::error::SendError((callback, last))) = self.flusher.send((callback, last)) {
            // The flusher only stops with the runtime; sync inline rather than lose the ack.
            callback.log_io_completed(self.syncer.sync(last).await);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let last = self
            .logs
            .last()
            .map_err(read_err)?
            .and_then(|(k, _)| index_of(&k));
        if let Some(last) = last {
            // Highest first, so a crash midway never leaves a hole.
            let mut batch = sled::Batch::default();
            for i in (log_id.index..=last).rev() {
                batch.remove(&key(i));
            }
            self.logs.apply_batch(batch).map_err(write_err)?;
        }
        self.last_log.set(self.stored_last_log_id()?);
        // No sync of its own: sled recovers its operations in order, and the entries that
        // replace the truncated ones are acknowledged only after a sync, which covers the
        // truncation too. A crash before it leaves the old entries, which were never
        // reported as replaced.
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Record the purge point durably first: from then on openraft never reads below
        // it, so the entries can go in the background without leaving a hole. Deleting
        // gigabytes of log inline would stall this node's runtime for seconds (sled's
        // API is synchronous) and cost it its leadership.
        // sled recovers its operations in order, so no recovered state has the deletions
        // below without this record; no sync is needed (and none blocks Raft here).
        self.put_meta(LAST_PURGED_KEY, &log_id)?;
        let logs = self.logs.clone();
        let seconds = self.syncer.metrics.purge_seconds.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            match delete_upto(&logs, log_id.index) {
                Ok(()) => seconds.observe(started.elapsed().as_secs_f64()),
                Err(e) => {
                    tracing::warn!(error = %e, upto = log_id.index, "purging raft log failed")
                }
            }
        });
        Ok(())
    }
}

/// Index of a stored key.
fn index_of(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

/// Deletes the log entries with index <= `upto`, a chunk at a time, lowest first. Keys
/// are dense indices, so they are removed by number without reading the (large) values.
/// Chunks are small because sled applies a batch under a process-wide write lock: while
/// one runs, every other read and write of the node (Raft's appends, replication's
/// reads) waits. 256-entry chunks held it for 200–400 ms at saturation.
fn delete_upto(logs: &sled::Tree, upto: u64) -> Result<(), sled::Error> {
    const CHUNK: u64 = 32;
    let Some(first) = logs.first()?.and_then(|(k, _)| index_of(&k)) else {
        return Ok(());
    };
    let mut from = first;
    while from <= upto {
        let to = upto.min(from + CHUNK - 1);
        let mut batch = sled::Batch::default();
        for i in from..=to {
            batch.remove(&key(i));
        }
        let started = Instant::now();
        logs.apply_batch(batch)?;
        let took = started.elapsed();
        if took > SLOW_SLED_CALL {
            tracing::warn!(
                ms = took.as_millis() as u64,
                entries = to + 1 - from,
                "slow purge batch; sled blocks every other read and write of the node meanwhile"
            );
        }
        from = to + 1;
    }
    Ok(())
}

/// Test support: a gate a [`SyncHook`] can hold fdatasyncs at.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    /// A gate the sync hook waits at while it is closed.
    #[derive(Default)]
    pub(crate) struct Gate {
        pub(crate) closed: AtomicBool,
        pub(crate) entered: Mutex<Vec<u64>>,
        open: (Mutex<bool>, std::sync::Condvar),
    }

    impl Gate {
        pub(crate) fn wait(&self, covered: u64) {
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

        pub(crate) fn release(&self) {
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
    use crate::raft::network::Network;
    use crate::raft::queue_state::DedupLimits;
    use crate::raft::state_machine::StateMachineStore;
    use crate::raft::{NodeAddr, Raft};
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
        let store = LogStore::open(&db, &log_dir, metrics(), Some(hook)).unwrap();
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
        let mut store = LogStore::open(&db, dir.path(), metrics(), None).unwrap();
        let before = store.syncs();
        store.save_vote(&Vote::new(3, 1)).await.unwrap();
        assert_eq!(store.syncs(), before + 1);
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
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
