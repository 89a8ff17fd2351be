//! Framing and authentication of the CMA's TCP connections (Raft peers and queue clients).
//!
//! Frames are length-delimited. A connection starts with a mutual challenge-response over
//! the 32-byte cluster secret:
//!
//! 1. client -> server: `b"RWQ1"` + 32-byte client nonce
//! 2. server -> client: 32-byte server nonce + `MAC(secret, "server" | nc | ns)`
//! 3. client -> server: `MAC(secret, "client" | nc | ns)`
//! 4. server -> client: `b"OK"`
//!
//! Both sides then derive a session key from both nonces, and every later frame carries a
//! 16-byte keyed-BLAKE3 tag over (direction, frame counter, payload): frames cannot be
//! forged, replayed, reordered or moved between connections without the secret.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// Largest frame accepted (a snapshot chunk or a batch of log entries).
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
const MAGIC: &[u8; 4] = b"RWQ1";
const TAG_LEN: usize = 16;
const OK: &[u8] = b"OK";

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer does not hold the cluster secret (or speaks another protocol).
    #[error("authentication failed: {0}")]
    Auth(&'static str),
    /// A frame's tag did not verify.
    #[error("frame tag mismatch (forged, replayed or corrupted frame)")]
    BadTag,
}

impl WireError {
    /// Short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Io(_) => "io",
            WireError::Closed => "closed",
            WireError::HandshakeTimeout => "handshake_timeout",
            WireError::Auth(_) => "auth",
            WireError::BadTag => "bad_tag",
        }
    }
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

fn proof(secret: &[u8; 32], label: &[u8], nc: &[u8; 32], ns: &[u8; 32]) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(secret);
    h.update(label);
    h.update(nc);
    h.update(ns);
    h.finalize()
}

fn tag(key: &[u8; 32], direction: u8, counter: u64, payload: &[u8]) -> [u8; TAG_LEN] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&[direction]);
    h.update(&counter.to_le_bytes());
    h.update(payload);
    let full = h.finalize();
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&full.as_bytes()[..TAG_LEN]);
    out
}

/// Constant-time comparison, so tag checks leak no timing.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The sending half of an authenticated connection.
pub struct FrameWriter {
    inner: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    key: [u8; 32],
    direction: u8,
    counter: u64,
}

impl FrameWriter {
    /// Sends one tagged frame.
    pub async fn send(&mut self, payload: Vec<u8>) -> Result<(), WireError> {
        let t = tag(&self.key, self.direction, self.counter, &payload);
        self.counter += 1;
        let mut frame = payload;
        frame.extend_from_slice(&t);
        self.inner.send(Bytes::from(frame)).await?;
        Ok(())
    }
}

/// The receiving half of an authenticated connection.
pub struct FrameReader {
    inner: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    key: [u8; 32],
    direction: u8,
    counter: u64,
}

impl FrameReader {
    /// Receives and verifies one frame; `Closed` at end of stream.
    pub async fn recv(&mut self) -> Result<Vec<u8>, WireError> {
        let frame = match self.inner.next().await {
            None => return Err(WireError::Closed),
            Some(frame) => frame?,
        };
        if frame.len() < TAG_LEN {
            return Err(WireError::BadTag);
        }
        let (payload, got) = frame.split_at(frame.len() - TAG_LEN);
        let want = tag(&self.key, self.direction, self.counter, payload);
        if !same(got, &want) {
            return Err(WireError::BadTag);
        }
        self.counter += 1;
        Ok(payload.to_vec())
    }
}

const CLIENT_TO_SERVER: u8 = 1;
const SERVER_TO_CLIENT: u8 = 2;

fn split(
    stream: TcpStream,
    key: [u8; 32],
    send_dir: u8,
    recv_dir: u8,
) -> (FrameReader, FrameWriter) {
    let (r, w) = stream.into_split();
    (
        FrameReader {
            inner: FramedRead::new(r, codec()),
            key,
            direction: recv_dir,
            counter: 0,
        },
        FrameWriter {
            inner: FramedWrite::new(w, codec()),
            key,
            direction: send_dir,
            counter: 0,
        },
    )
}

async fn next_raw(
    framed: &mut tokio_util::codec::Framed<TcpStream, LengthDelimitedCodec>,
) -> Result<Vec<u8>, WireError> {
    match framed.next().await {
        None => Err(WireError::Closed),
        Some(frame) => Ok(frame?.to_vec()),
    }
}

/// Opens the client side of a connection: connect, authenticate, split.
pub async fn connect(
    addr: std::net::SocketAddr,
    secret: &[u8; 32],
    timeout: Duration,
) -> Result<(FrameReader, FrameWriter), WireError> {
    let work = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut framed = tokio_util::codec::Framed::new(stream, codec());
        let nc: [u8; 32] = rand::random();
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&nc);
        framed.send(Bytes::from(hello)).await?;
        let challenge = next_raw(&mut framed).await?;
        if challenge.len() != 64 {
            return Err(WireError::Auth("malformed challenge"));
        }
        let mut ns = [0u8; 32];
        ns.copy_from_slice(&challenge[..32]);
        if !same(
            &challenge[32..],
            proof(secret, b"server", &nc, &ns).as_bytes(),
        ) {
            return Err(WireError::Auth("server does not hold the cluster secret"));
        }
        let client_proof = proof(secret, b"client", &nc, &ns);
        framed
            .send(Bytes::copy_from_slice(client_proof.as_bytes()))
            .await?;
        // Wait for the server's go-ahead, so no byte of ours is in flight when the server
        // switches framing (its read buffer would be dropped with the handshake framer).
        if next_raw(&mut framed).await? != OK {
            return Err(WireError::Auth("server refused"));
        }
        let key = *proof(secret, b"session", &nc, &ns).as_bytes();
        Ok(split(
            framed.into_inner(),
            key,
            CLIENT_TO_SERVER,
            SERVER_TO_CLIENT,
        ))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| WireError::HandshakeTimeout)?
}

/// Runs the server side of the handshake on an accepted stream.
pub async fn accept(
    stream: TcpStream,
    secret: &[u8; 32],
    timeout: Duration,
) -> Result<(FrameReader, FrameWriter), WireError> {
    let work = async {
        stream.set_nodelay(true)?;
        let mut framed = tokio_util::codec::Framed::new(stream, codec());
        let hello = next_raw(&mut framed).await?;
        if hello.len() != 36 || &hello[..4] != MAGIC {
            return Err(WireError::Auth("bad hello"));
        }
        let mut nc = [0u8; 32];
        nc.copy_from_slice(&hello[4..]);
        let ns: [u8; 32] = rand::random();
        let mut challenge = ns.to_vec();
        challenge.extend_from_slice(proof(secret, b"server", &nc, &ns).as_bytes());
        framed.send(Bytes::from(challenge)).await?;
        let client_proof = next_raw(&mut framed).await?;
        if !same(&client_proof, proof(secret, b"client", &nc, &ns).as_bytes()) {
            return Err(WireError::Auth("client does not hold the cluster secret"));
        }
        framed.send(Bytes::from_static(OK)).await?;
        let key = *proof(secret, b"session", &nc, &ns).as_bytes();
        Ok(split(
            framed.into_inner(),
            key,
            SERVER_TO_CLIENT,
            CLIENT_TO_SERVER,
        ))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| WireError::HandshakeTimeout)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn frames_flow_with_the_right_secret_and_not_without() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let secret = [7u8; 32];
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (mut r, mut w) = accept(s, &secret, Duration::from_secs(5)).await.unwrap();
            let got = r.recv().await.unwrap();
            w.send(got).await.unwrap();
            let (s, _) = listener.accept().await.unwrap();
            accept(s, &secret, Duration::from_secs(5)).await.map(|_| ())
        });
        let (mut r, mut w) = connect(addr, &secret, Duration::from_secs(5))
            .await
            .unwrap();
        w.send(b"hello".to_vec()).await.unwrap();
        assert_eq!(r.recv().await.unwrap(), b"hello");
        let wrong = connect(addr, &[8u8; 32], Duration::from_secs(5)).await;
        assert!(matches!(wrong, Err(WireError::Auth(_))));
        assert!(server.await.unwrap().is_err());
    }
}
