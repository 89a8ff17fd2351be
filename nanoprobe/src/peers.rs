//! Connected sockets for recently authenticated peers, so that a datagram flood from other
//! addresses cannot crowd their datagrams out of the shared socket's receive queue.
//!
//! Once a source address (IP and port) sent an authentic datagram, a second UDP socket is
//! bound to the nanoprobe's own address (`SO_REUSEADDR`) and connected to that source. The
//! kernel delivers a datagram to the socket that matches it best, so from then on that
//! peer's datagrams (ring neighbours, packet-readers, the CMA) queue on their own socket,
//! whatever fills the shared one. A task per socket forwards what it reads to the daemon
//! loop, which verifies it like any other datagram. At most [`MAX_PEER_SOCKETS`] exist; a
//! peer silent for [`PEER_IDLE`] loses its socket, and when all are taken a new peer takes
//! the socket of one silent for [`PEER_REPLACEABLE`]. A spoofed flood with a peer's address
//! and port only fills that peer's queue.

use crate::config::SocketConfig;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Most peers with their own socket.
pub const MAX_PEER_SOCKETS: usize = 64;
/// A peer without an authentic datagram for this long loses its socket.
pub const PEER_IDLE: Duration = Duration::from_secs(60);
/// When all sockets are taken, a new peer gets the socket of the one silent longest if
/// that one was silent this long (ring neighbours send heartbeats every second or so; a
/// one-off source such as another host's probe goes silent at once).
pub const PEER_REPLACEABLE: Duration = Duration::from_secs(5);
/// Receive buffer of a peer socket: a peer sends a few datagrams per second.
const PEER_RECV_BUFFER: usize = 256 * 1024;
/// Datagrams forwarded to the daemon loop and not yet handled, all peers together.
const FORWARD_QUEUE: usize = 1024;

/// What a peer socket passes to the daemon loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Forwarded {
    /// A datagram read from the socket, and its source.
    Datagram(Vec<u8>, SocketAddr),
    /// A datagram sent to this peer met an ICMP port-unreachable: the kernel reports it
    /// on the socket connected to the peer as `ECONNREFUSED`. The peer's host is up, no
    /// process listens on its port.
    Refused(SocketAddr),
}

struct Peer {
    last_authentic: Instant,
    reader: JoinHandle<()>,
}

/// The peer sockets of one nanoprobe.
pub struct PeerSockets {
    local: SocketAddr,
    config: SocketConfig,
    peers: HashMap<SocketAddr, Peer>,
    tx: mpsc::Sender<Forwarded>,
}

impl PeerSockets {
    /// Peer sockets bound to `local` (the shared socket's address), with `config`'s DSCP
    /// and a small receive buffer; the receiver gets what they read.
    pub fn new(
        local: SocketAddr,
        config: &SocketConfig,
    ) -> (PeerSockets, mpsc::Receiver<Forwarded>) {
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
        let config = SocketConfig {
            recv_buffer: PEER_RECV_BUFFER,
            ..*config
        };
        let sockets = PeerSockets {
            local,
            config,
            peers: HashMap::new(),
            tx,
        };
        (sockets, rx)
    }

    /// `from` sent an authentic datagram: keeps its socket, or opens one if there is room.
    /// Must run inside the tokio runtime.
    pub fn authentic(&mut self, from: SocketAddr, now: Instant) -> std::io::Result<()> {
        if let Some(peer) = self.peers.get_mut(&from) {
            peer.last_authentic = now;
            return Ok(());
        }
        if from.is_ipv4() != self.local.is_ipv4() {
            return Ok(());
        }
        if self.peers.len() >= MAX_PEER_SOCKETS {
            let quietest = self
                .peers
                .iter()
                .min_by_key(|(_, p)| p.last_authentic)
                .filter(|(_, p)| {
                    now.saturating_duration_since(p.last_authentic) >= PEER_REPLACEABLE
                })
                .map(|(addr, _)| *addr);
            match quietest.and_then(|addr| self.peers.remove(&addr)) {
                Some(old) => old.reader.abort(),
                None => return Ok(()),
            }
        }
        let socket = crate::socket::bind_peer_udp(self.local, &self.config)?;
        socket.connect(from)?;
        let socket = UdpSocket::from_std(socket)?;
        let reader = tokio::spawn(forward(socket, from, self.tx.clone()));
        self.peers.insert(
            from,
            Peer {
                last_authentic: now,
                reader,
            },
        );
        tracing::debug!(%from, peers = self.peers.len(), "peer socket opened");
        Ok(())
    }

    /// Closes the sockets of peers silent for [`PEER_IDLE`].
    pub fn expire(&mut self, now: Instant) {
        self.peers.retain(|from, peer| {
            let keep = now.saturating_duration_since(peer.last_authentic) < PEER_IDLE;
            if !keep {
                peer.reader.abort();
                tracing::debug!(%from, "peer socket closed: idle");
            }
            keep
        });
    }

    /// Peers with their own socket.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer has its own socket.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

impl Drop for PeerSockets {
    fn drop(&mut self) {
        for peer in self.peers.values() {
            peer.reader.abort();
        }
    }
}

/// Reads `socket` (connected to `peer`) and forwards every datagram; a full queue makes it
/// wait, so the socket's own buffer (this peer's only) absorbs the excess. Until `connect`
/// completed the socket could receive anyone's datagrams, so the source is passed on as
/// read. An ICMP port-unreachable for a datagram sent to the peer (from any socket bound
/// to this address) is reported once on this connected socket, as `ECONNREFUSED`.
async fn forward(socket: UdpSocket, peer: SocketAddr, tx: mpsc::Sender<Forwarded>) {
    let mut buf = vec![0u8; proto::MAX_DATAGRAM + 1];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if tx
                    .send(Forwarded::Datagram(buf[..n].to_vec(), from))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                if tx.send(Forwarded::Refused(peer)).await.is_err() {
                    return;
                }
            }
            // Anything else persistent must not spin.
            Err(e) => {
                tracing::debug!(error = %e, "peer socket receive error");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_authenticated_peer_gets_its_own_queue_and_loses_it_when_idle() {
        let config = SocketConfig::default();
        let shared = crate::socket::bind_udp("127.0.0.1:0".parse().unwrap(), &config).unwrap();
        let local = shared.local_addr().unwrap();
        let (mut peers, mut rx) = PeerSockets::new(local, &config);
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let t0 = Instant::now();
        peers.authentic(peer.local_addr().unwrap(), t0).unwrap();
        assert_eq!(peers.len(), 1);
        // The peer's datagrams arrive through its socket, a stranger's on the shared one.
        peer.send_to(b"from the peer", local).unwrap();
        stranger.send_to(b"from a stranger", local).unwrap();
        let forwarded = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            forwarded,
            Forwarded::Datagram(b"from the peer".to_vec(), peer.local_addr().unwrap())
        );
        let mut buf = [0u8; 64];
        shared.set_nonblocking(false).unwrap();
        shared
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (n, from) = shared.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"from a stranger");
        assert_eq!(from, stranger.local_addr().unwrap());
        assert!(rx.try_recv().is_err());
        // Idle for PEER_IDLE: closed, and the peer's datagrams go to the shared socket again.
        peers.expire(t0 + PEER_IDLE);
        assert!(peers.is_empty());
        // The aborted reader drops its socket when the runtime gets to it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        peer.send_to(b"again", local).unwrap();
        let (n, _) = shared.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"again");
    }

    /// The peer's process is gone: a datagram sent to it from the shared socket comes
    /// back as ICMP port-unreachable, which the kernel reports on the connected peer
    /// socket; it is forwarded as `Refused` with the peer's address.
    #[tokio::test]
    async fn a_port_unreachable_from_a_peer_is_forwarded_as_refused() {
        let config = SocketConfig::default();
        let shared = crate::socket::bind_udp("127.0.0.1:0".parse().unwrap(), &config).unwrap();
        let local = shared.local_addr().unwrap();
        let (mut peers, mut rx) = PeerSockets::new(local, &config);
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer_addr = peer.local_addr().unwrap();
        peers.authentic(peer_addr, Instant::now()).unwrap();
        drop(peer); // its nanoprobe died: nothing listens on its port any more
                    // Let the forwarding task wait on the socket first: the error must wake it (an
                    // ICMP error makes the socket report an error, not readable data).
        tokio::time::sleep(Duration::from_millis(200)).await;
        shared.send_to(b"heartbeat", peer_addr).unwrap();
        let forwarded = tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .expect("the refusal forwarded at once")
            .unwrap();
        assert_eq!(forwarded, Forwarded::Refused(peer_addr));
    }

    #[tokio::test]
    async fn at_most_max_peer_sockets_and_quiet_ones_make_room() {
        let config = SocketConfig::default();
        let shared = crate::socket::bind_udp("127.0.0.1:0".parse().unwrap(), &config).unwrap();
        let (mut peers, _rx) = PeerSockets::new(shared.local_addr().unwrap(), &config);
        let now = Instant::now();
        for port in 0..(MAX_PEER_SOCKETS as u16 + 10) {
            peers
                .authentic(SocketAddr::from(([127, 0, 0, 2], 40000 + port)), now)
                .unwrap();
        }
        assert_eq!(peers.len(), MAX_PEER_SOCKETS);
        let newcomer = SocketAddr::from(([127, 0, 0, 3], 40000));
        // All busy: no room.
        peers.authentic(newcomer, now).unwrap();
        assert!(!peers.peers.contains_key(&newcomer));
        // One of them stays active, the others go quiet: the newcomer takes a quiet one's.
        let active = SocketAddr::from(([127, 0, 0, 2], 40000));
        let later = now + PEER_REPLACEABLE;
        peers.authentic(active, later).unwrap();
        peers.authentic(newcomer, later).unwrap();
        assert_eq!(peers.len(), MAX_PEER_SOCKETS);
        assert!(peers.peers.contains_key(&newcomer));
        assert!(peers.peers.contains_key(&active));
    }
}
