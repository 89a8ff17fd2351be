//! The LLDP/CDP capture socket: one `AF_PACKET` raw socket on every interface, filtered
//! in the kernel (a classic BPF program) to frames sent to the LLDP or CDP multicast
//! addresses, so the daemon sees nothing else. Needs `CAP_NET_RAW`, which the nanoprobe
//! already holds for ICMP probes; without it the nanoprobe runs on without capture and
//! relies on `lldpctl` at start-up ([`crate::discovery::lldp_neighbour`]).
//!
//! The socket joins the four multicast groups on every interface, so a NIC that filters
//! multicast in hardware delivers them: the interfaces are listed again every
//! [`RESCAN_EVERY`] ([`LinkWatch`], sans-IO), and one that appears later (a NIC
//! hot-plugged, a veth or VLAN created, a cable re-plugged into a re-created interface)
//! is joined then. An interface that goes away or loses its carrier also takes what was
//! heard on it: its neighbours are withdrawn at once, as a TTL-0 frame would (lldpd does
//! the same), so a host re-plugged into another switch does not go on reporting the old
//! one until its TTL (120 s on most switches) runs out.

use crate::lldp::{
    parse_frame, Announcement, FrameError, CDP_MULTICAST, LLDP_CUSTOMER, LLDP_NEAREST_BRIDGE,
    LLDP_NON_TPMR,
};
use crate::metrics::Metrics;
use proto::discovery::LinkProtocol;
use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use std::collections::{BTreeMap, BTreeSet};
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// How often the interfaces are listed again (new ones joined, lost ones withdrawn). A
/// carrier loss shorter than this may go unseen; the TTL then expires the neighbour.
pub const RESCAN_EVERY: Duration = Duration::from_secs(1);
/// Most neighbours remembered per interface for withdrawal (the neighbour table holds
/// at most 16 in all by default); beyond that they are left to expire by their TTL.
pub const MAX_TRACKED_PER_LINK: usize = 16;
/// Most interfaces tracked (a host with more is unusual; beyond that new interfaces are
/// not joined, and counted).
pub const MAX_LINKS: usize = 256;
/// The multicast groups joined on every interface.
const GROUPS: [&[u8; 6]; 4] = [
    &LLDP_NEAREST_BRIDGE,
    &LLDP_NON_TPMR,
    &LLDP_CUSTOMER,
    &CDP_MULTICAST,
];

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
    // The groups are joined by the first rescan of [`run`], right away.
    Ok(socket)
}

/// One interface as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Its name.
    pub name: String,
    /// Its index (a re-created interface gets a new one, even with the same name).
    pub index: u32,
    /// Whether it has a carrier (`IFF_RUNNING`).
    pub running: bool,
}

/// What one rescan asks the capture to do.
#[derive(Debug, Default)]
pub struct Rescan {
    /// Interfaces to join the groups on (new ones).
    pub join: Vec<Link>,
    /// Neighbours to withdraw (heard on an interface that went away or lost its carrier),
    /// as TTL-0 announcements for the neighbour table.
    pub withdraw: Vec<Heard>,
}

/// What [`LinkWatch`] did, for the logs (totals since start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Interfaces joined (at start and later).
    pub joined: u64,
    /// Interfaces that went away or lost their carrier.
    pub lost: u64,
    /// Neighbours withdrawn with them.
    pub withdrawn: u64,
    /// Neighbours not tracked for withdrawal (past [`MAX_TRACKED_PER_LINK`]).
    pub untracked: u64,
    /// Interfaces not tracked (past [`MAX_LINKS`]).
    pub links_refused: u64,
}

#[derive(Debug)]
struct LinkState {
    name: String,
    running: bool,
    joined: bool,
    /// (protocol, chassis id) heard on it.
    heard: BTreeSet<(LinkProtocol, String)>,
}

/// The interfaces the capture listens on and what was heard on each, sans-IO: fed the
/// interface list of each rescan and every frame heard, it says which interfaces to join
/// and which neighbours to withdraw. Bounded: [`MAX_LINKS`] interfaces,
/// [`MAX_TRACKED_PER_LINK`] neighbours each.
#[derive(Debug, Default)]
pub struct LinkWatch {
    links: BTreeMap<u32, LinkState>,
    counters: LinkCounters,
}

impl LinkWatch {
    /// Totals since start.
    pub fn counters(&self) -> LinkCounters {
        self.counters
    }

    /// Interfaces joined now.
    pub fn joined(&self) -> Vec<&str> {
        self.links
            .values()
            .filter(|l| l.joined)
            .map(|l| l.name.as_str())
            .collect()
    }

    fn withdrawals(state: &mut LinkState, out: &mut Vec<Heard>) {
        for (protocol, chassis_id) in std::mem::take(&mut state.heard) {
            out.push(Heard {
                iface: state.name.clone(),
                announcement: Announcement {
                    protocol,
                    chassis_id,
                    port_id: String::new(),
                    system_name: None,
                    mgmt_addr: None,
                    ttl_s: 0,
                },
            });
        }
    }

    /// The interfaces listed now (loopback excluded by the caller): new ones are to be
    /// joined; the neighbours heard on those gone or without carrier are withdrawn.
    pub fn rescan(&mut self, links: &[Link]) -> Rescan {
        let mut out = Rescan::default();
        let listed: BTreeMap<u32, &Link> = links.iter().map(|l| (l.index, l)).collect();
        let gone: Vec<u32> = self
            .links
            .keys()
            .filter(|i| !listed.contains_key(i))
            .copied()
            .collect();
        for index in gone {
            if let Some(mut state) = self.links.remove(&index) {
                self.counters.lost += 1;
                Self::withdrawals(&mut state, &mut out.withdraw);
            }
        }
        for (index, link) in listed {
            if !self.links.contains_key(&index) && self.links.len() >= MAX_LINKS {
                self.counters.links_refused += 1;
                continue;
            }
            let state = self.links.entry(index).or_insert_with(|| LinkState {
                name: link.name.clone(),
                running: link.running,
                joined: false,
                heard: BTreeSet::new(),
            });
            state.name.clone_from(&link.name);
            if state.running && !link.running {
                self.counters.lost += 1;
                Self::withdrawals(state, &mut out.withdraw);
            }
            state.running = link.running;
            if !state.joined {
                state.joined = true;
                self.counters.joined += 1;
                out.join.push(link.clone());
            }
        }
        self.counters.withdrawn += out.withdraw.len() as u64;
        out
    }

    /// A frame heard on interface `index` (named `iface`): remembered for withdrawal (a
    /// TTL-0 frame forgets it).
    pub fn heard(&mut self, index: u32, iface: &str, a: &Announcement) {
        let key = (a.protocol, a.chassis_id.clone());
        if a.ttl_s == 0 {
            if let Some(state) = self.links.get_mut(&index) {
                state.heard.remove(&key);
            }
            return;
        }
        if !self.links.contains_key(&index) && self.links.len() >= MAX_LINKS {
            self.counters.links_refused += 1;
            return;
        }
        // Heard before a rescan listed it: it is joined at the next rescan.
        let state = self.links.entry(index).or_insert_with(|| LinkState {
            name: iface.to_string(),
            running: true,
            joined: false,
            heard: BTreeSet::new(),
        });
        if state.heard.contains(&key) {
            return;
        }
        if state.heard.len() >= MAX_TRACKED_PER_LINK {
            self.counters.untracked += 1;
            return;
        }
        state.heard.insert(key);
    }
}

/// The interfaces of this host (network namespace), loopback excluded.
fn list_links() -> Vec<Link> {
    let mut by_name: BTreeMap<String, bool> = BTreeMap::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            let flags = ifa.flags;
            if flags.contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK) {
                continue;
            }
            let running = flags.contains(nix::net::if_::InterfaceFlags::IFF_RUNNING);
            *by_name.entry(ifa.interface_name).or_default() |= running;
        }
    }
    by_name
        .into_iter()
        .filter_map(|(name, running)| {
            let index = nix::net::if_::if_nametoindex(name.as_str()).ok()?;
            Some(Link {
                name,
                index,
                running,
            })
        })
        .collect()
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
/// (`nanoprobe_lldp_frames_total{reason=...}`) and hands what parses to the daemon. Frames
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
    let mut watch = LinkWatch::default();
    let mut rescan = tokio::time::interval(RESCAN_EVERY);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let readable = tokio::select! {
            r = fd.readable() => r,
            _ = rescan.tick() => {
                let before = watch.counters();
                let todo = watch.rescan(&list_links());
                for link in &todo.join {
                    for group in GROUPS {
                        if let Err(e) = join(fd.get_ref(), link.index as i32, group) {
                            tracing::debug!(iface = %link.name, error = %e, "cannot join a discovery multicast group");
                        }
                    }
                }
                let mut closed = false;
                for heard in todo.withdraw {
                    // Few (bounded per interface); waits for room rather than drop one.
                    if tx.send(heard).await.is_err() {
                        closed = true;
                        break;
                    }
                }
                if closed {
                    break;
                }
                let after = watch.counters();
                if after != before {
                    tracing::info!(
                        joined = ?watch.joined(),
                        counters = ?after,
                        "LLDP/CDP capture interfaces changed"
                    );
                }
                continue;
            }
        };
        let mut guard = match readable {
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
                watch.heard(ifindex, &iface, &announcement);
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

    fn link(name: &str, index: u32, running: bool) -> Link {
        Link {
            name: name.into(),
            index,
            running,
        }
    }

    fn from(chassis: &str) -> Announcement {
        Announcement {
            protocol: LinkProtocol::Lldp,
            chassis_id: chassis.into(),
            port_id: "p1".into(),
            system_name: Some(format!("sw-{chassis}")),
            mgmt_addr: None,
            ttl_s: 120,
        }
    }

    fn names(links: &[Link]) -> Vec<&str> {
        links.iter().map(|l| l.name.as_str()).collect()
    }

    fn withdrawn(r: &Rescan) -> Vec<(String, String)> {
        r.withdraw
            .iter()
            .map(|h| {
                assert_eq!(h.announcement.ttl_s, 0);
                (h.iface.clone(), h.announcement.chassis_id.clone())
            })
            .collect()
    }

    #[test]
    fn interfaces_that_appear_after_start_up_are_joined() {
        let mut w = LinkWatch::default();
        let first = w.rescan(&[link("eth0", 2, true)]);
        assert_eq!(names(&first.join), ["eth0"]);
        // Listed again: nothing to do.
        let again = w.rescan(&[link("eth0", 2, true)]);
        assert!(again.join.is_empty() && again.withdraw.is_empty());
        // A NIC hot-plugged (or a VLAN created) later is joined at the next rescan.
        let later = w.rescan(&[link("eth0", 2, true), link("eth1", 5, false)]);
        assert_eq!(names(&later.join), ["eth1"]);
        assert_eq!(w.joined(), ["eth0", "eth1"]);
        assert_eq!(w.counters().joined, 2);
    }

    #[test]
    fn a_re_created_interface_is_joined_again_and_its_old_neighbours_withdrawn() {
        let mut w = LinkWatch::default();
        w.rescan(&[link("eth0", 2, true)]);
        w.heard(2, "eth0", &from("aa"));
        w.heard(2, "eth0", &from("aa"));
        // The veth was deleted and created again (re-plugged into another switch): same
        // name, new index. The new switch may be heard before the rescan sees it.
        w.heard(9, "eth0", &from("bb"));
        let r = w.rescan(&[link("eth0", 9, true)]);
        assert_eq!(withdrawn(&r), [("eth0".to_string(), "aa".to_string())]);
        assert_eq!(names(&r.join), ["eth0"]);
        let c = w.counters();
        assert_eq!((c.lost, c.withdrawn, c.joined), (1, 1, 2));
        // What is heard on the new one is withdrawn when it goes in turn.
        let r = w.rescan(&[]);
        assert_eq!(withdrawn(&r), [("eth0".to_string(), "bb".to_string())]);
        assert!(w.joined().is_empty());
    }

    #[test]
    fn a_lost_carrier_withdraws_without_joining_again() {
        let mut w = LinkWatch::default();
        w.rescan(&[link("eth0", 2, true)]);
        w.heard(2, "eth0", &from("aa"));
        let r = w.rescan(&[link("eth0", 2, false)]);
        assert_eq!(withdrawn(&r), [("eth0".to_string(), "aa".to_string())]);
        assert!(r.join.is_empty(), "the membership outlives a carrier loss");
        // Carrier back: heard anew, nothing withdrawn twice.
        let r = w.rescan(&[link("eth0", 2, true)]);
        assert!(r.join.is_empty() && r.withdraw.is_empty());
        // A shutdown frame (TTL 0) already removed it: nothing to withdraw later.
        w.heard(2, "eth0", &from("aa"));
        w.heard(
            2,
            "eth0",
            &Announcement {
                ttl_s: 0,
                ..from("aa")
            },
        );
        assert!(w.rescan(&[]).withdraw.is_empty());
    }

    #[test]
    fn a_flood_of_chassis_ids_and_interfaces_is_bounded() {
        let mut w = LinkWatch::default();
        w.rescan(&[link("eth0", 2, true)]);
        for i in 0..10_000 {
            w.heard(2, "eth0", &from(&format!("c{i}")));
        }
        assert_eq!(w.counters().untracked, 10_000 - MAX_TRACKED_PER_LINK as u64);
        assert_eq!(w.rescan(&[]).withdraw.len(), MAX_TRACKED_PER_LINK);
        let many: Vec<Link> = (0..1000)
            .map(|i| link(&format!("v{i}"), 100 + i, true))
            .collect();
        assert_eq!(w.rescan(&many).join.len(), MAX_LINKS);
        assert_eq!(w.counters().links_refused, 1000 - MAX_LINKS as u64);
        for i in 0..1000 {
            w.heard(5000 + i, "x", &from("aa"));
        }
        assert_eq!(w.links.len(), MAX_LINKS);
    }
}
