//! The durable Raft log in sled.
//!
//! Appends are written to the sled tree at once and acknowledged to openraft only after a
//! `flush_async` covering them completes. One flusher task serves all appends: while a flush
//! runs, later appends queue up and the next flush covers them all (group commit), so
//! concurrent batches share one fsync.

// The storage helpers return openraft's `StorageError` because the storage traits do;
// its size is not ours to choose.
#![allow(clippy::result_large_err)]

use super::{NodeId, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use prometheus_client::metrics::histogram::Histogram;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::time::Instant;
use tokio::sync::mpsc;

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const LAST_PURGED_KEY: &[u8] = b"last_purged";

/// The Raft log, vote and committed index, in two sled trees.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    logs: sled::Tree,
    meta: sled::Tree,
    flusher: mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
}

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
    /// Opens the log in `db` and starts its flusher task (needs a tokio runtime).
    /// `flush_seconds` observes every group flush.
    pub fn open(db: &sled::Db, flush_seconds: Histogram) -> Result<Self, StorageError<NodeId>> {
        let logs = db.open_tree("log").map_err(read_err)?;
        let meta = db.open_tree("meta").map_err(read_err)?;
        let (flusher, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_flusher(db.clone(), rx, flush_seconds));
        Ok(LogStore {
            db: db.clone(),
            logs,
            meta,
            flusher,
        })
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
        self.meta.insert(key, bytes).map_err(write_err)?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageError<NodeId>> {
        self.db.flush_async().await.map_err(write_err)?;
        Ok(())
    }
}

/// Flushes sled for every batch of pending appends and then acknowledges them, in order.
async fn run_flusher(
    db: sled::Db,
    mut rx: mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>,
    flush_seconds: Histogram,
) {
    let mut pending = Vec::new();
    while let Some(first) = rx.recv().await {
        pending.push(first);
        while let Ok(more) = rx.try_recv() {
            pending.push(more);
        }
        let started = Instant::now();
        let result = db.flush_async().await;
        flush_seconds.observe(started.elapsed().as_secs_f64());
        for callback in pending.drain(..) {
            let outcome = match &result {
                Ok(_) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            callback.log_io_completed(outcome);
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft log flush failed");
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
        sled_io(|| {
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
        })
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_meta(LAST_PURGED_KEY)?;
        let last = match self.logs.last().map_err(read_err)? {
            Some((_, bytes)) => {
                let entry: Entry<TypeConfig> = postcard::from_bytes(&bytes).map_err(read_err)?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
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
        self.db
            .flush_async()
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
        for entry in entries {
            let bytes = postcard::to_allocvec(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            batch.insert(&key(entry.log_id.index), bytes);
        }
        sled_io(|| self.logs.apply_batch(batch)).map_err(write_err)?;
        if let Err(mpsc::error::SendError(callback)) = self.flusher.send(callback) {
            // The flusher only stops with the runtime; flush inline rather than lose the ack.
            let result = self.db.flush_async().await;
            callback.log_io_completed(result.map(|_| ()).map_err(std::io::Error::other));
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
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Record the purge point durably first: from then on openraft never reads below
        // it, so the entries can go in the background without leaving a hole. Deleting
        // gigabytes of log inline would stall this node's runtime for seconds (sled's
        // API is synchronous) and cost it its leadership.
        self.put_meta(LAST_PURGED_KEY, &log_id)?;
        self.flush().await?;
        let logs = self.logs.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = delete_upto(&logs, log_id.index) {
                tracing::warn!(error = %e, upto = log_id.index, "purging raft log failed");
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
fn delete_upto(logs: &sled::Tree, upto: u64) -> Result<(), sled::Error> {
    const CHUNK: u64 = 256;
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
        logs.apply_batch(batch)?;
        from = to + 1;
    }
    Ok(())
}
