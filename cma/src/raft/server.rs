//! The TCP server of a node: accepts peers and queue clients, authenticates them, and
//! answers their requests concurrently.

use super::node::{Node, ProposeError, ReasonLabel};
use super::peer::{NodeReply as Reply, NodeRequest as Request, PeerReply, PeerRequest};
use queue::rpc::{ReplyFrame, RequestFrame};
use queue::wire;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Time allowed for a connecting peer to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections until the listener fails.
pub async fn serve(listener: TcpListener, node: Node) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let node = node.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, node.clone()).await {
                        node.metrics()
                            .connection_errors
                            .get_or_create(&ReasonLabel {
                                reason: e.reason().to_string(),
                            })
                            .inc();
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: TcpStream, node: Node) -> Result<(), wire::WireError> {
    let (mut reader, mut writer) = wire::accept(stream, node.secret(), HANDSHAKE_TIMEOUT).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer_task = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.send(bytes).await.is_err() {
                break;
            }
        }
    });
    let result = loop {
        let bytes = match reader.recv().await {
            Ok(bytes) => bytes,
            Err(wire::WireError::Closed) => break Ok(()),
            Err(e) => break Err(e),
        };
        let frame: RequestFrame<PeerRequest> = match postcard::from_bytes(&bytes) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable request; closing connection");
                break Err(wire::WireError::Auth("undecodable request"));
            }
        };
        let node = node.clone();
        let tx = tx.clone();
        // Each request runs on its own task: a client append waiting for commit must not
        // hold up the Raft RPCs sharing the listener.
        tokio::spawn(async move {
            let reply = answer(&node, frame.request).await;
            match postcard::to_allocvec(&ReplyFrame {
                id: frame.id,
                reply,
            }) {
                Ok(bytes) => {
                    let _ = tx.send(bytes);
                }
                Err(e) => tracing::error!(error = %e, "reply encoding failed"),
            }
        });
    };
    drop(tx);
    // In-flight replies still hold senders; the writer ends when they are done.
    let _ = writer_task.await;
    result
}

fn not_leader(e: ProposeError) -> Reply {
    match e {
        ProposeError::NotLeader { leader, .. } => Reply::NotLeader {
            leader: leader.map(|l| l.raft),
        },
        ProposeError::QueueFull {
            held_bytes,
            max_bytes,
        } => Reply::QueueFull {
            held_bytes,
            max_bytes,
        },
        other => Reply::Error(other.to_string()),
    }
}

async fn answer(node: &Node, request: Request) -> Reply {
    match request {
        Request::Peer(PeerRequest::AppendEntries(rpc)) => Reply::Peer(PeerReply::AppendEntries(
            node.raft().append_entries(rpc).await,
        )),
        Request::Peer(PeerRequest::Vote(rpc)) => {
            Reply::Peer(PeerReply::Vote(node.raft().vote(rpc).await))
        }
        Request::Peer(PeerRequest::InstallSnapshot(rpc)) => Reply::Peer(
            PeerReply::InstallSnapshot(node.raft().install_snapshot(rpc).await),
        ),
        Request::Append(batch) => match node.append(batch).await {
            Ok(result) => Reply::Appended(result),
            Err(e) => not_leader(e),
        },
        Request::Read { from, max } => match node.read_barrier().await {
            Ok(()) => Reply::Packets(node.read_local(from, max)),
            Err(e) => not_leader(e),
        },
        Request::CommitOffset { consumer, offset } => {
            match node.commit_offset(&consumer, offset).await {
                Ok(()) => Reply::Done,
                Err(e) => not_leader(e),
            }
        }
    }
}
