//! The LLDP/CDP capture socket: one `AF_PACKET` raw socket on every interface, filtered
//! in the kernel (a classic BPF program) to frames sent to the LLDP or CDP multicast
//! addresses, so the daemon sees nothing else. Needs `CAP_NET_RAW`, which the nanoprobe
//! already holds for ICMP probes; without it the nanoprobe runs on without capture and
//! relies on `lldpctl` at start-up ([`crate::discovery::lldp_neighbour`]).
//!
//! The socket joins the four multicast groups on every interface present at start-up, so
//! a NIC that filters multicast in hardware delivers them.

use crate::lldp::{
    parse_frame, Announcement, FrameError, CDP_MULTICAST, LLDP_CUSTOMER, LLDP_NEAREST_BRIDGE,
    LLDP_NON_TPMR,
};
use crate::metrics::Metrics;
use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use std::collections::BTreeSet;
use std::mem::MaybeUninit;
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

const ETH_P_ALL: u16 = 0x0003;
const SOL_PACKET: i32 = 263;
const PACKET_ADD_MEMBERSHIP: i32 = 1;
const PACKET_MR_MULTICAST: u16 = 0;
const PACKET_OUTGOING: u8 = 4;
/// Read buffer: larger than any accepted frame, so an oversized one is seen (and counted)
/// by its real length (`MSG_TRUNC`) rather than silently cut.
const BUF: usize = 2048;

// Classic BPF opcodes (linux/filter.h).
const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;

/// One classic BPF instruction (code, jump if true, jump if false, constant).
pub type Insn = (u16, u8, u8, u32);

/// The socket filter: accept (whole frame) when the destination MAC is one of the three
/// LLDP addresses or the CDP address, else drop. Exposed for the test that runs it.
pub fn filter_program() -> Vec<Insn> {
    let w = |m: &[u8; 6]| u32::from_be_bytes([m[0], m[1], m[2], m[3]]);
    let h = |m: &[u8; 6]| u32::from(u16::from_be_bytes([m[4], m[5]]));
    vec![
        /* 0 */ (LD_W_ABS, 0, 0, 0),
        /* 1 */ (JEQ_K, 0, 4, w(&LLDP_NEAREST_BRIDGE)),
        /* 2 */ (LD_H_ABS, 0, 0, 4),
        /* 3 */ (JEQ_K, 5, 0, h(&LLDP_NEAREST_BRIDGE)),
        /* 4 */ (JEQ_K, 4, 0, h(&LLDP_NON_TPMR)),
        /* 5 */ (JEQ_K, 3, 4, h(&LLDP_CUSTOMER)),
        /* 6 */ (JEQ_K, 0, 3, w(&CDP_MULTICAST)),
        /* 7 */ (LD_H_ABS, 0, 0, 4),
        /* 8 */ (JEQ_K, 0, 1, h(&CDP_MULTICAST)),
        /* 9: accept the whole frame */ (RET_K, 0, 0, 0x0004_0000),
        /* 10: drop */ (RET_K, 0, 0, 0),
    ]
}

/// A frame as the capture hands it to the daemon.
#[derive(Debug)]
pub struct Heard {
    /// The interface it arrived on.
    pub iface: String,
    /// What it announces.
    pub announcement: Announcement,
}

#[repr(C)]
struct PacketMreq {
    mr_ifindex: i32,
    mr_type: u16,
    mr_alen: u16,
    mr_address: [u8; 8],
}

fn join(socket: &Socket, ifindex: i32, group: &[u8; 6]) -> std::io::Result<()> {
    let mut address = [0u8; 8];
    address[..6].copy_from_slice(group);
    let mreq = PacketMreq {
        mr_ifindex: ifindex,
        mr_type: PACKET_MR_MULTICAST,
        mr_alen: 6,
        mr_address: address,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: `mreq` is a live, correctly laid out `struct packet_mreq` and its size is
    // passed with it; the kernel only reads it.
    let rc = unsafe {
        nix::libc::setsockopt(
            socket.as_raw_fd(),
            SOL_PACKET,
            PACKET_ADD_MEMBERSHIP,
            (&mreq as *const PacketMreq).cast(),
            std::mem::size_of::<PacketMreq>() as nix::libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Opens the filtered capture socket (non-blocking); errors when `CAP_NET_RAW` is missing.
pub fn open() -> std::io::Result<Socket> {
    let socket = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
    )?;
    let program: Vec<SockFilter> = filter_program()
        .into_iter()
        .map(|(code, jt, jf, k)| SockFilter::new(code, jt, jf, k))
        .collect();
    socket.attach_filter(&program)?;
    socket.set_nonblocking(true)?;
    let mut names = BTreeSet::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            if !ifa
                .flags
                .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
            {
                names.insert(ifa.interface_name);
            }
        }
    }
    for name in names {
        let Ok(index) = nix::net::if_::if_nametoindex(name.as_str()) else {
            continue;
        };
        for group in [
            &LLDP_NEAREST_BRIDGE,
            &LLDP_NON_TPMR,
            &LLDP_CUSTOMER,
            &CDP_MULTICAST,
        ] {
            if let Err(e) = join(&socket, index as i32, group) {
                tracing::debug!(iface = %name, error = %e, "cannot join a discovery multicast group");
            }
        }
    }
    Ok(socket)
}

/// The interface index and packet type of a received frame's `sockaddr_ll`.
fn link_info(addr: &socket2::SockAddr) -> Option<(u32, u8)> {
    if i32::from(addr.family()) != nix::libc::AF_PACKET
        || (addr.len() as usize) < std::mem::size_of::<nix::libc::sockaddr_ll>()
    {
        return None;
    }
    // SAFETY: the family is AF_PACKET and the address is at least as long as a
    // `sockaddr_ll`, so the storage holds one; it is only read.
    let ll = unsafe { &*(addr.as_ptr() as *const nix::libc::sockaddr_ll) };
    Some((u32::try_from(ll.sll_ifindex).ok()?, ll.sll_pkttype))
}

/// Reads frames until the receiver is gone: parses each, counts it by outcome
/// (`nanoprobe_lldp_frames_total{name=...}`) and hands what parses to the daemon. Frames
/// the daemon has no room for are dropped and counted (`queue_full`).
pub async fn run(socket: Socket, tx: mpsc::Sender<Heard>, metrics: Arc<Metrics>) {
    // SAFETY: the socket owns its descriptor, which stays open and the same until the
    // AsyncFd (which owns the socket) is dropped.
    let registered =
        unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) };
    let fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            let e = std::io::Error::from(e);
            tracing::warn!(error = %e, "cannot register the LLDP capture socket");
            return;
        }
    };
    metrics.lldp_capture_up.set(1);
    let mut buf = [MaybeUninit::<u8>::uninit(); BUF];
    loop {
        let mut guard = match fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "LLDP capture socket failed");
                break;
            }
        };
        let received = guard.try_io(|s| {
            s.get_ref()
                .recv_from_with_flags(&mut buf, nix::libc::MSG_TRUNC)
        });
        let (len, addr) = match received {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "LLDP capture read error");
                continue;
            }
            Err(_would_block) => continue,
        };
        let Some((ifindex, pkttype)) = link_info(&addr) else {
            continue;
        };
        if pkttype == PACKET_OUTGOING {
            // Our own lldpd's announcements, if one runs here.
            continue;
        }
        let result = if len > BUF {
            Err(FrameError::Oversized)
        } else {
            // SAFETY: recv_from initialised the first `len` bytes (len <= BUF here).
            let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), len) };
            parse_frame(bytes)
        };
        match result {
            Ok(announcement) => {
                let iface = nix::net::if_::if_indextoname(ifindex)
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| format!("if{ifindex}"));
                Metrics::inc(&metrics.lldp_frames, "accepted");
                match tx.try_send(Heard {
                    iface,
                    announcement,
                }) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        Metrics::inc(&metrics.lldp_frames, "queue_full")
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
            Err(e) => {
                Metrics::inc(&metrics.lldp_frames, e.reason());
                tracing::debug!(reason = e.reason(), len, "discovery frame dropped");
            }
        }
    }
    metrics.lldp_capture_up.set(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the filter over a frame the way the kernel does (the subset of opcodes used).
    fn run_filter(program: &[Insn], frame: &[u8]) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        for _ in 0..program.len() {
            let (code, jt, jf, k) = program[pc];
            let k_us = k as usize;
            match code {
                LD_W_ABS => match frame.get(k_us..k_us + 4) {
                    Some(b) => acc = u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                    None => return 0,
                },
                LD_H_ABS => match frame.get(k_us..k_us + 2) {
                    Some(b) => acc = u32::from(u16::from_be_bytes([b[0], b[1]])),
                    None => return 0,
                },
                JEQ_K => {
                    pc += 1 + usize::from(if acc == k { jt } else { jf });
                    continue;
                }
                RET_K => return k,
                _ => panic!("opcode {code:#x}"),
            }
            pc += 1;
        }
        panic!("program ran off its end");
    }

    #[test]
    fn the_filter_accepts_exactly_the_discovery_addresses() {
        let program = filter_program();
        let frame = |dst: [u8; 6]| {
            let mut f = dst.to_vec();
            f.extend_from_slice(&[0u8; 50]);
            f
        };
        for dst in [
            LLDP_NEAREST_BRIDGE,
            LLDP_NON_TPMR,
            LLDP_CUSTOMER,
            CDP_MULTICAST,
        ] {
            assert!(run_filter(&program, &frame(dst)) > 1500, "{dst:02x?}");
        }
        for dst in [
            [0xff; 6],
            [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0f],
            [0x01, 0x80, 0xc2, 0x00, 0x00, 0x01],
            [0x01, 0x00, 0x0c, 0xcc, 0xcc, 0xcd],
            [0x01, 0x00, 0x0c, 0x00, 0x00, 0x00],
            [0x02, 0x80, 0xc2, 0x00, 0x00, 0x0e],
            [0, 0, 0, 0, 0, 0],
        ] {
            assert_eq!(run_filter(&program, &frame(dst)), 0, "{dst:02x?}");
        }
        assert_eq!(run_filter(&program, &[0x01, 0x80]), 0);
    }
}
