//! Messages carried on authenticated connections, and the multiplexed client side of a
//! connection (many requests in flight, matched to replies by id).

use super::command::AppendResult;
use super::wire::{self, FrameReader, FrameWriter, WireError};
use super::{NodeId, TypeConfig};
use crate::queue::record::QueuedPacket;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A request on a connection.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Raft AppendEntries from the leader.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft RequestVote from a candidate.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot from the leader.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Queue client: append a batch and wait for commit.
    Append(Vec<QueuedPacket>),
    /// Queue client: read committed packets from an offset.
    Read {
        /// First offset wanted.
        from: u64,
        /// Most packets returned.
        max: usize,
    },
    /// Queue client: commit a consumer offset.
    CommitOffset {
        /// Consumer name.
        consumer: String,
        /// Next offset the consumer will read.
        offset: u64,
    },
}

/// A reply on a connection.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to `AppendEntries`.
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// Answer to `Vote`.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// Answer to `InstallSnapshot`.
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// Answer to `Append`.
    Appended(AppendResult),
    /// Answer to `Read`.
    Packets(Vec<(u64, QueuedPacket)>),
    /// Answer to `CommitOffset`.
    Done,
    /// This node is not the leader; `leader` is the leader's Raft address when known.
    NotLeader {
        /// Where to retry.
        leader: Option<String>,
    },
    /// The request failed on the server.
    Error(String),
    /// Append refused: the queue holds its byte budget. Back off and retry later.
    QueueFull {
        /// Bytes held.
        held_bytes: u64,
        /// The budget.
        max_bytes: u64,
    },
}

/// Request frame.
#[derive(Debug, Serialize, Deserialize)]
pub struct RequestFrame {
    /// Matches the reply.
    pub id: u64,
    /// The request.
    pub request: Request,
}

/// Reply frame.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplyFrame {
    /// Id of the request answered.
    pub id: u64,
    /// The reply.
    pub reply: Reply,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Wire(#[from] WireError),
    /// No reply in time.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// A message could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[from] postcard::Error),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// The client side of one authenticated connection; calls may run concurrently.
pub struct Connection {
    next_id: AtomicU64,
    pending: Pending,
    outbox: mpsc::UnboundedSender<Vec<u8>>,
    closed: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl Connection {
    /// Connects and authenticates.
    pub async fn open(
        addr: SocketAddr,
        secret: &[u8; 32],
        connect_timeout: Duration,
    ) -> Result<Connection, CallError> {
        let (reader, writer) = wire::connect(addr, secret, connect_timeout).await?;
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (outbox, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(writer, rx, closed.clone()));
        tokio::spawn(read_loop(reader, pending.clone(), closed.clone()));
        Ok(Connection {
            next_id: AtomicU64::new(1),
            pending,
            outbox,
            closed,
            addr,
        })
    }

    /// The address this connection goes to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// True once the connection failed; open a new one.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Sends a request and waits for its reply.
    pub async fn call(&self, request: Request, timeout: Duration) -> Result<Reply, CallError> {
        if self.is_closed() {
            return Err(WireError::Closed.into());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = postcard::to_allocvec(&RequestFrame { id, request })?;
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        if self.outbox.send(bytes).is_err() {
            lock(&self.pending).remove(&id);
            return Err(WireError::Closed.into());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(WireError::Closed.into()),
            Err(_) => {
                lock(&self.pending).remove(&id);
                Err(CallError::Timeout(timeout))
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Stops the write loop (channel closed) which shuts the socket down.
        self.closed.store(true, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn write_loop(
    mut writer: FrameWriter,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    closed: Arc<AtomicBool>,
) {
    while let Some(bytes) = rx.recv().await {
        if writer.send(bytes).await.is_err() {
            break;
        }
    }
    closed.store(true, Ordering::Relaxed);
}

async fn read_loop(mut reader: FrameReader, pending: Pending, closed: Arc<AtomicBool>) {
    loop {
        let bytes = match reader.recv().await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::debug!(error = %e, "connection closed");
                break;
            }
        };
        match postcard::from_bytes::<ReplyFrame>(&bytes) {
            Ok(frame) => {
                if let Some(tx) = lock(&pending).remove(&frame.id) {
                    let _ = tx.send(frame.reply);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "undecodable reply; closing connection");
                break;
            }
        }
    }
    closed.store(true, Ordering::Relaxed);
    // Dropping the senders fails every waiting call at once.
    lock(&pending).clear();
}
