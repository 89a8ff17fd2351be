//! Batched reads from the nanoprobe's UDP socket.
//!
//! One `recvmmsg` call returns up to [`BATCH`] datagrams with their source addresses, so a
//! flood costs one system call per batch instead of one per datagram, and the loop gets
//! back to genuine traffic sooner. Each read also carries the kernel's count of datagrams
//! it dropped on this socket because the receive buffer was full (`SO_RXQ_OVFL`): the
//! datagrams the daemon never saw, genuine ones included.

use nix::sys::socket::{
    recvmmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage,
};
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

/// Most datagrams one read returns.
pub const BATCH: usize = 64;

/// Reusable buffers for [`BATCH`] datagrams of up to `capacity` bytes each.
pub struct RecvBatch {
    capacity: usize,
    buffers: Vec<u8>,
    /// (length, source) of each datagram of the last read.
    got: Vec<(usize, Option<SocketAddr>)>,
    /// The socket's drop counter as last reported by the kernel.
    drops_seen: u32,
    drops_new: u64,
}

impl RecvBatch {
    /// Buffers for datagrams of up to `capacity` bytes (a longer one is truncated to
    /// `capacity`, so pass one more than the longest valid datagram to see it as too long).
    pub fn new(capacity: usize) -> RecvBatch {
        RecvBatch {
            capacity,
            buffers: vec![0; capacity * BATCH],
            got: Vec::with_capacity(BATCH),
            drops_seen: 0,
            drops_new: 0,
        }
    }

    /// Asks the kernel to report its drop counter with every datagram read from `socket`.
    pub fn enable_drop_counter<F: AsFd>(socket: &F) -> std::io::Result<()> {
        setsockopt(socket, sockopt::RxqOvfl, &1).map_err(std::io::Error::from)
    }

    /// Reads what is queued on the non-blocking `socket`, up to [`BATCH`] datagrams;
    /// returns how many (`WouldBlock` when none).
    pub fn recv<F: AsRawFd>(&mut self, socket: &F) -> std::io::Result<usize> {
        self.got.clear();
        let mut slices: Vec<[IoSliceMut; 1]> = self
            .buffers
            .chunks_exact_mut(self.capacity)
            .map(|b| [IoSliceMut::new(b)])
            .collect();
        // Fresh headers for every read: the kernel shrinks each header's address and
        // control lengths to what it wrote (no control message at all while the drop count
        // is zero), and reusing them would truncate later reads' addresses and counts.
        let mut headers =
            MultiHeaders::<SockaddrStorage>::preallocate(BATCH, Some(nix::cmsg_space!(u32)));
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(std::io::Error::from)?;
        let mut latest_drops = None;
        for msg in results {
            let from = msg.address.as_ref().and_then(socket_addr);
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::RxqOvfl(n) = c {
                        latest_drops = Some(n);
                    }
                }
            }
            self.got.push((msg.bytes.min(self.capacity), from));
        }
        if let Some(n) = latest_drops {
            // A cumulative u32 that wraps; the difference is what is new.
            self.drops_new += u64::from(n.wrapping_sub(self.drops_seen));
            self.drops_seen = n;
        }
        Ok(self.got.len())
    }

    /// Datagram `i` of the last read and its source (`None` for a source that is not an IP
    /// address, which cannot happen on a UDP socket).
    pub fn get(&self, i: usize) -> Option<(&[u8], Option<SocketAddr>)> {
        let (len, from) = *self.got.get(i)?;
        let start = i * self.capacity;
        Some((&self.buffers[start..start + len], from))
    }

    /// Datagrams the kernel dropped on the socket since the last call. The kernel stamps each
    /// datagram with the count when it queues it, so drops show with the next datagram
    /// queued after them.
    pub fn take_drops(&mut self) -> u64 {
        std::mem::take(&mut self.drops_new)
    }
}

fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    match s.as_sockaddr_in() {
        Some(v4) => Some(std::net::SocketAddrV4::from(*v4).into()),
        None => s
            .as_sockaddr_in6()
            .map(|v6| std::net::SocketAddrV6::from(*v6).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    fn pair(recv_buffer: usize) -> (UdpSocket, UdpSocket) {
        let config = crate::config::SocketConfig {
            recv_buffer,
            ..Default::default()
        };
        let rx = crate::socket::bind_udp("127.0.0.1:0".parse().unwrap(), &config).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        (rx, tx)
    }

    /// Reads until `want` datagrams arrived, nothing came for 200 ms, or 5 s passed.
    fn read_all(rx: &UdpSocket, batch: &mut RecvBatch, want: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = Instant::now();
        while out.len() < want && Instant::now() < deadline {
            if last.elapsed() > Duration::from_millis(200) {
                break;
            }
            match batch.recv(rx) {
                Ok(n) => {
                    last = Instant::now();
                    assert!(n <= BATCH);
                    for i in 0..n {
                        let (d, from) = batch.get(i).unwrap();
                        out.push((d.to_vec(), from.unwrap()));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        out
    }

    #[test]
    fn reads_datagrams_in_batches_with_their_sources_and_truncates_long_ones() {
        let (rx, tx) = pair(1 << 20);
        let mut batch = RecvBatch::new(100);
        assert_eq!(
            batch.recv(&rx).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        for i in 0..150u8 {
            tx.send(&vec![i; 1 + usize::from(i)]).unwrap();
        }
        let got = read_all(&rx, &mut batch, 150);
        assert_eq!(got.len(), 150);
        for (i, (d, from)) in got.iter().enumerate() {
            assert_eq!(*from, tx.local_addr().unwrap());
            // Longer than the buffer: cut at the buffer's size, so the verifier sees a
            // datagram longer than any valid one.
            assert_eq!(d.len(), (i + 1).min(100));
            assert!(d.iter().all(|b| usize::from(*b) == i));
        }
        assert!(batch.get(BATCH).is_none());
        assert_eq!(batch.take_drops(), 0);
    }

    #[test]
    fn counts_what_the_kernel_dropped_on_a_full_buffer() {
        // The smallest buffer the kernel allows holds a few dozen datagrams.
        let (rx, tx) = pair(1);
        RecvBatch::enable_drop_counter(&rx).unwrap();
        let mut batch = RecvBatch::new(100);
        let sent = 2000;
        for _ in 0..sent {
            tx.send(&[7; 64]).unwrap();
        }
        let received = read_all(&rx, &mut batch, sent).len();
        assert!(received < sent, "a full buffer dropped nothing");
        // The drops are reported with the next datagram queued after them.
        tx.send(&[8; 64]).unwrap();
        let last = read_all(&rx, &mut batch, 1);
        assert_eq!(last.len(), 1);
        assert_eq!(batch.take_drops(), (sent - received) as u64);
    }
}
