//! Messages carried on authenticated connections, and the multiplexed client side of a
//! connection (many requests in flight, matched to replies by id).
//!
//! Node-to-node (Raft) messages travel in the `Peer` variants. Their type is a parameter,
//! defined by `replica` (which links openraft); queue clients use [`NoPeer`], which cannot be
//! constructed, so a client never sends or expects one. The encoding of every other
//! variant does not depend on the parameter (postcard writes the variant index, then the
//! fields), so a client's `Request<NoPeer>` is read by a node as its `Request<P>`.

use crate::command::AppendResult;
use crate::record::QueuedPacket;
use crate::wire::{self, FrameReader, FrameWriter, WireError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The peer payload of a queue client's connection: none (an empty enum).
#[derive(Debug, Serialize, Deserialize)]
pub enum NoPeer {}

/// A request on a connection; `P` is the node-to-node request type.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request<P> {
    /// A node-to-node (Raft) request.
    Peer(P),
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

/// A reply on a connection; `P` is the node-to-node reply type.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply<P> {
    /// Answer to a `Peer` request.
    Peer(P),
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
    /// The node is overloaded: no proposal slot freed in time and nothing was done. Back
    /// off and retry. (Added last: older clients fail to decode it and retry.)
    Busy {
        /// How long the request waited for a slot.
        waited_ms: u64,
    },
}

/// Request frame.
#[derive(Debug, Serialize, Deserialize)]
pub struct RequestFrame<P> {
    /// Matches the reply.
    pub id: u64,
    /// The request.
    pub request: Request<P>,
}

/// Reply frame.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplyFrame<P> {
    /// Id of the request answered.
    pub id: u64,
    /// The reply.
    pub reply: Reply<P>,
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

type Pending<R> = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply<R>>>>>;

/// The client side of one authenticated connection; calls may run concurrently. `Q` and
/// `R` are the peer request and reply types ([`NoPeer`] for queue clients).
pub struct Connection<Q, R> {
    next_id: AtomicU64,
    pending: Pending<R>,
    outbox: mpsc::UnboundedSender<Vec<u8>>,
    closed: Arc<AtomicBool>,
    addr: SocketAddr,
    _request: std::marker::PhantomData<fn(Q)>,
}

/// A queue client's connection.
pub type ClientConnection = Connection<NoPeer, NoPeer>;

impl<Q: Serialize, R: DeserializeOwned + Send + 'static> Connection<Q, R> {
    /// Connects and authenticates.
    pub async fn open(
        addr: SocketAddr,
        secret: &[u8; 32],
        connect_timeout: Duration,
    ) -> Result<Self, CallError> {
        let (reader, writer) = wire::connect(addr, secret, connect_timeout).await?;
        let pending: Pending<R> = Arc::default();
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
            _request: std::marker::PhantomData,
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
    pub async fn call(
        &self,
        request: Request<Q>,
        timeout: Duration,
    ) -> Result<Reply<R>, CallError> {
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

impl<Q, R> Drop for Connection<Q, R> {
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

async fn read_loop<R: DeserializeOwned>(
    mut reader: FrameReader,
    pending: Pending<R>,
    closed: Arc<AtomicBool>,
) {
    loop {
        let bytes = match reader.recv().await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::debug!(error = %e, "connection closed");
                break;
            }
        };
        match postcard::from_bytes::<ReplyFrame<R>>(&bytes) {
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
