//! The socket edge: one UDP socket for every simulated host.
//!
//! 100,000 hosts cannot each own a socket, and the CMA sends a command to the address a
//! host announced in its `Startup` (the command carries no destination host id). So every
//! host gets its own loopback address (see [`crate::world`]) with one shared port, and a
//! single socket bound to `0.0.0.0:<port>` **and to the loopback device** (`SO_BINDTODEVICE
//! lo`: nothing from another interface reaches it) receives for all of them. `IP_PKTINFO`
//! tells the destination address of each datagram (which host it is for) and sets the
//! source address of each datagram sent (so the packet-reader's ACK and the CMA's commands
//! come back to the right host). `SO_BINDTODEVICE` on a fresh socket is allowed to any user
//! since Linux 5.7; older kernels need root or CAP_NET_RAW.

use nix::libc;
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn,
};
use socket2::{Domain, Socket, Type};
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// A socket call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> EdgeError {
    move |source| EdgeError::Io { what, source }
}

/// The shared socket.
pub struct Edge {
    socket: Socket,
}

/// One received datagram.
pub struct Received {
    /// Destination address (the simulated host it is for).
    pub to: SocketAddr,
    /// Source address.
    pub from: SocketAddr,
    /// Bytes.
    pub datagram: Vec<u8>,
}

impl Edge {
    /// Binds `0.0.0.0:port` on the loopback device only, with `IP_PKTINFO`.
    pub fn bind(port: u16, recv_buffer: usize) -> Result<Edge, EdgeError> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, None).map_err(io("socket"))?;
        socket.bind_device(Some(b"lo")).map_err(io(
            "SO_BINDTODEVICE lo (before Linux 5.7: needs root or CAP_NET_RAW)",
        ))?;
        // The kernel caps it at net.core.rmem_max; a smaller buffer only means drops,
        // which the hosts' retransmissions and the CMA's resends cover.
        let _ = socket.set_recv_buffer_size(recv_buffer);
        let _ = socket.set_send_buffer_size(recv_buffer);
        setsockopt(&socket, sockopt::Ipv4PacketInfo, &true).map_err(|e| EdgeError::Io {
            what: "IP_PKTINFO",
            source: e.into(),
        })?;
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        socket.bind(&addr.into()).map_err(io("bind"))?;
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(io("SO_RCVTIMEO"))?;
        Ok(Edge { socket })
    }

    /// Receives one datagram (None on timeout, a datagram without `IP_PKTINFO`, or from
    /// a non-IPv4 source).
    pub fn recv(&self, buf: &mut [u8]) -> Option<Received> {
        let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
        let mut iov = [IoSliceMut::new(buf)];
        let (n, from, to) = {
            let msg = recvmsg::<SockaddrIn>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            )
            .ok()?;
            let from = msg.address?;
            let mut to = None;
            for c in msg.cmsgs().ok()? {
                if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
                    to = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
                }
            }
            (msg.bytes, from, to?)
        };
        let port = self.local_port()?;
        Some(Received {
            to: SocketAddr::V4(SocketAddrV4::new(to, port)),
            from: SocketAddr::V4(SocketAddrV4::new(from.ip(), from.port())),
            datagram: buf.get(..n)?.to_vec(),
        })
    }

    fn local_port(&self) -> Option<u16> {
        self.socket.local_addr().ok()?.as_socket().map(|a| a.port())
    }

    /// Sends `datagram` to `to` with source address `from` (a simulated host's address).
    pub fn send(&self, from: SocketAddr, to: SocketAddr, datagram: &[u8]) -> std::io::Result<()> {
        let (SocketAddr::V4(from), SocketAddr::V4(to)) = (from, to) else {
            return Err(std::io::Error::other("IPv4 only"));
        };
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from(*from.ip()).to_be(),
            },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        let dest = SockaddrIn::from(to);
        sendmsg(
            self.socket.as_raw_fd(),
            &[IoSlice::new(datagram)],
            &[ControlMessage::Ipv4PacketInfo(&info)],
            MsgFlags::empty(),
            Some(&dest),
        )
        .map(|_| ())
        .map_err(std::io::Error::from)
    }
}
