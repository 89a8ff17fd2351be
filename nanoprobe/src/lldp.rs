//! LLDP and CDP, pure: the frame parser (never panics, on any input) and the bounded
//! neighbour table that turns parsed frames and time into "the neighbour set changed".
//!
//! The capture socket ([`crate::capture`]) hands every frame sent to the LLDP or CDP
//! multicast addresses to [`parse_frame`]; the daemon feeds what parses to
//! [`NeighbourTable::observe`] and asks [`NeighbourTable::poll`] for a report when due.

use proto::discovery::{clip, LinkProtocol, Neighbour, MAX_FIELD, MAX_REPORTED};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Destination of LLDP frames (nearest bridge).
pub const LLDP_NEAREST_BRIDGE: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e];
/// Destination of LLDP frames (nearest non-TPMR bridge).
pub const LLDP_NON_TPMR: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x03];
/// Destination of LLDP frames (nearest customer bridge).
pub const LLDP_CUSTOMER: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x00];
/// Destination of CDP frames.
pub const CDP_MULTICAST: [u8; 6] = [0x01, 0x00, 0x0c, 0xcc, 0xcc, 0xcc];
/// EtherType of LLDP.
pub const ETHERTYPE_LLDP: u16 = 0x88cc;
const ETHERTYPE_VLAN: u16 = 0x8100;
/// Largest frame accepted (a VLAN-tagged 1500-byte payload, without FCS); the capture
/// reads larger frames whole (up to its buffer) so they are counted as `oversized`.
pub const MAX_FRAME: usize = 1518;

/// Why a frame was dropped; [`FrameError::reason`] is the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than an Ethernet header plus the protocol's fixed header.
    #[error("frame too short")]
    Truncated,
    /// Longer than [`MAX_FRAME`].
    #[error("frame over {MAX_FRAME} bytes")]
    Oversized,
    /// Neither LLDP nor CDP (the socket filter should keep these out).
    #[error("not an LLDP or CDP frame")]
    NotDiscovery,
    /// A TLV runs past the end of the frame, or has a length its type forbids.
    #[error("malformed TLV")]
    BadTlv,
    /// Chassis id, port id or TTL missing.
    #[error("mandatory TLV missing")]
    MissingTlv,
    /// A TLV appears twice where it may appear once.
    #[error("duplicate TLV")]
    DuplicateTlv,
}

impl FrameError {
    /// Every reason, for pre-registering the counters.
    pub const REASONS: [&'static str; 6] = [
        "truncated",
        "oversized",
        "not_discovery",
        "bad_tlv",
        "missing_tlv",
        "duplicate_tlv",
    ];

    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            FrameError::Truncated => "truncated",
            FrameError::Oversized => "oversized",
            FrameError::NotDiscovery => "not_discovery",
            FrameError::BadTlv => "bad_tlv",
            FrameError::MissingTlv => "missing_tlv",
            FrameError::DuplicateTlv => "duplicate_tlv",
        }
    }
}

/// What one frame announces (the interface is added by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// LLDP or CDP.
    pub protocol: LinkProtocol,
    /// Chassis id as text (MACs as `aa:bb:..`), at most [`MAX_FIELD`] bytes.
    pub chassis_id: String,
    /// Port id as text, at most [`MAX_FIELD`] bytes.
    pub port_id: String,
    /// System name, at most [`MAX_FIELD`] bytes.
    pub system_name: Option<String>,
    /// The first IPv4 or IPv6 management address.
    pub mgmt_addr: Option<IpAddr>,
    /// Validity in seconds; 0 means "forget me" (an LLDP shutdown frame).
    pub ttl_s: u16,
}

/// Parses one Ethernet frame (destination MAC first, no FCS) as LLDP or CDP.
pub fn parse_frame(frame: &[u8]) -> Result<Announcement, FrameError> {
    if frame.len() > MAX_FRAME {
        return Err(FrameError::Oversized);
    }
    if frame.len() < 14 {
        return Err(FrameError::Truncated);
    }
    let mut off = 12;
    let mut ethertype = be16(frame, off).ok_or(FrameError::Truncated)?;
    if ethertype == ETHERTYPE_VLAN {
        off += 4;
        ethertype = be16(frame, off).ok_or(FrameError::Truncated)?;
    }
    let payload = frame.get(off + 2..).ok_or(FrameError::Truncated)?;
    if ethertype == ETHERTYPE_LLDP {
        parse_lldp(payload)
    } else if ethertype <= 1500 && frame.get(..6) == Some(&CDP_MULTICAST[..]) {
        // 802.3 length field: LLC/SNAP with Cisco's OUI and the CDP protocol id.
        let llc = payload.get(..8).ok_or(FrameError::Truncated)?;
        if llc != [0xaa, 0xaa, 0x03, 0x00, 0x00, 0x0c, 0x20, 0x00] {
            return Err(FrameError::NotDiscovery);
        }
        let len = usize::from(ethertype).min(payload.len());
        parse_cdp(payload.get(8..len).ok_or(FrameError::Truncated)?)
    } else {
        Err(FrameError::NotDiscovery)
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// Text for humans: invalid UTF-8 replaced, control characters turned into `?`, clipped.
fn text(bytes: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    clip(s.trim_end_matches('\0'), MAX_FIELD).to_string()
}

fn mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An IANA address family number and address bytes as an IP address.
fn ip_of(family: u8, bytes: &[u8]) -> Option<IpAddr> {
    match (family, bytes.len()) {
        (1, 4) => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        (2, 16) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(bytes);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// A chassis or port id TLV: subtype byte, then the id (`mac_subtype` and 5/4 for a
/// network address; every other subtype is text).
fn id_value(value: &[u8], mac_subtype: u8, addr_subtype: u8) -> Result<String, FrameError> {
    let (&subtype, id) = value.split_first().ok_or(FrameError::BadTlv)?;
    if id.is_empty() || id.len() > 255 {
        return Err(FrameError::BadTlv);
    }
    Ok(if subtype == mac_subtype && id.len() == 6 {
        mac(id)
    } else if subtype == addr_subtype {
        match id.split_first().and_then(|(f, a)| ip_of(*f, a)) {
            Some(ip) => ip.to_string(),
            None => mac(id),
        }
    } else {
        text(id)
    })
}

fn parse_lldp(mut data: &[u8]) -> Result<Announcement, FrameError> {
    let mut chassis = None;
    let mut port = None;
    let mut ttl = None;
    let mut name = None;
    let mut mgmt = None;
    while !data.is_empty() {
        let header = be16(data, 0).ok_or(FrameError::BadTlv)?;
        let (kind, len) = (header >> 9, usize::from(header & 0x1ff));
        let value = data.get(2..2 + len).ok_or(FrameError::BadTlv)?;
        data = &data[2 + len..];
        match kind {
            0 => break,
            1 => set_once(&mut chassis, id_value(value, 4, 5)?)?,
            2 => set_once(&mut port, id_value(value, 3, 4)?)?,
            3 => {
                let t = (len == 2).then(|| be16(value, 0)).flatten();
                set_once(&mut ttl, t.ok_or(FrameError::BadTlv)?)?;
            }
            5 => set_once(&mut name, text(value))?,
            8 => {
                // Address string length (subtype byte + address), subtype, address, then
                // interface numbering and an OID we do not need.
                let alen = usize::from(*value.first().ok_or(FrameError::BadTlv)?);
                let addr = value.get(1..1 + alen).ok_or(FrameError::BadTlv)?;
                if mgmt.is_none() {
                    mgmt = addr.split_first().and_then(|(f, a)| ip_of(*f, a));
                }
            }
            _ => {}
        }
    }
    Ok(Announcement {
        protocol: LinkProtocol::Lldp,
        chassis_id: chassis.ok_or(FrameError::MissingTlv)?,
        port_id: port.ok_or(FrameError::MissingTlv)?,
        ttl_s: ttl.ok_or(FrameError::MissingTlv)?,
        system_name: name.filter(|n| !n.is_empty()),
        mgmt_addr: mgmt,
    })
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), FrameError> {
    if slot.is_some() {
        return Err(FrameError::DuplicateTlv);
    }
    *slot = Some(value);
    Ok(())
}

fn parse_cdp(data: &[u8]) -> Result<Announcement, FrameError> {
    // Version, TTL, checksum (not verified: the frame's FCS already was).
    let header = data.get(..4).ok_or(FrameError::Truncated)?;
    let ttl = header[1];
    let mut rest = &data[4..];
    let mut device = None;
    let mut port = None;
    let mut mgmt = None;
    while rest.len() >= 4 {
        let kind = be16(rest, 0).ok_or(FrameError::BadTlv)?;
        let len = usize::from(be16(rest, 2).ok_or(FrameError::BadTlv)?);
        if len < 4 {
            return Err(FrameError::BadTlv);
        }
        let value = rest.get(4..len).ok_or(FrameError::BadTlv)?;
        rest = &rest[len..];
        match kind {
            0x0001 => set_once(&mut device, text(value))?,
            0x0003 => set_once(&mut port, text(value))?,
            0x0002 | 0x0016 if mgmt.is_none() => mgmt = cdp_address(value),
            _ => {}
        }
    }
    let device = device
        .filter(|d| !d.is_empty())
        .ok_or(FrameError::MissingTlv)?;
    Ok(Announcement {
        protocol: LinkProtocol::Cdp,
        system_name: Some(device.clone()),
        chassis_id: device,
        port_id: port.ok_or(FrameError::MissingTlv)?,
        mgmt_addr: mgmt,
        ttl_s: u16::from(ttl),
    })
}

/// The first IPv4 address of a CDP address list (NLPID 0xcc) or IPv6 (802.2 SNAP 0x86dd).
fn cdp_address(value: &[u8]) -> Option<IpAddr> {
    let count = u32::from_be_bytes(value.get(..4)?.try_into().ok()?);
    let mut rest = value.get(4..)?;
    for _ in 0..count.min(16) {
        let proto_len = usize::from(*rest.get(1)?);
        let proto = rest.get(2..2 + proto_len)?;
        let alen = usize::from(be16(rest, 2 + proto_len)?);
        let addr = rest.get(4 + proto_len..4 + proto_len + alen)?;
        rest = &rest[4 + proto_len + alen..];
        match (proto, alen) {
            ([0xcc], 4) => return ip_of(1, addr),
            ([.., 0x86, 0xdd], 16) => return ip_of(2, addr),
            _ => {}
        }
    }
    None
}

/// Settings of the neighbour table (`[lldp]` of the nanoprobe config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableLimits {
    /// Most neighbours remembered; further new ones are refused until one expires.
    pub max_neighbours: usize,
    /// Least time between two reports: changes in between are coalesced into one.
    pub report_interval: Duration,
    /// A TTL above this is cut to it, so a hostile frame cannot pin a slot for 18 hours.
    pub max_ttl: Duration,
}

impl Default for TableLimits {
    fn default() -> Self {
        TableLimits {
            max_neighbours: 16,
            report_interval: Duration::from_secs(2),
            max_ttl: Duration::from_secs(300),
        }
    }
}

/// What [`NeighbourTable::observe`] did with an announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// A neighbour not heard before (or changed: new name, address or port).
    New,
    /// A known neighbour again: its expiry moves on.
    Refreshed,
    /// A TTL-0 frame removed a neighbour.
    Withdrawn,
    /// The table is full: the new neighbour is ignored (counted by the caller).
    TableFull,
    /// A TTL-0 frame about a neighbour we did not know.
    Ignored,
}

#[derive(Clone, Debug)]
struct Entry {
    neighbour: Neighbour,
    first_heard: u64,
    expires: Instant,
}

/// The neighbours heard, keyed by (interface, protocol, chassis id), bounded; reports the
/// set when it changed, at most once per `report_interval`.
#[derive(Debug)]
pub struct NeighbourTable {
    limits: TableLimits,
    entries: BTreeMap<(String, LinkProtocol, String), Entry>,
    order: u64,
    dirty: bool,
    last_report: Option<Instant>,
    last_sent: Option<Vec<Neighbour>>,
    empty_not_before: Option<Instant>,
}

impl NeighbourTable {
    /// An empty table.
    pub fn new(limits: TableLimits) -> NeighbourTable {
        NeighbourTable {
            limits,
            entries: BTreeMap::new(),
            order: 0,
            dirty: false,
            last_report: None,
            last_sent: None,
            empty_not_before: None,
        }
    }

    /// Reports the current set again at the next allowed time, even unchanged (something
    /// sent along with it changed).
    pub fn force_report(&mut self) {
        self.dirty = true;
        self.last_sent = None;
    }

    /// Also reports an empty set once at `at` if nothing was heard by then, so the CMA
    /// forgets what a previous run of this nanoprobe heard (a first neighbour heard
    /// earlier is reported at once, as always).
    pub fn report_empty_after(mut self, at: Instant) -> NeighbourTable {
        self.dirty = true;
        self.empty_not_before = Some(at);
        self
    }

    /// Neighbours remembered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no neighbour is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records an announcement heard on `iface` at `now`.
    pub fn observe(&mut self, iface: &str, a: Announcement, now: Instant) -> Observed {
        let key = (
            clip(iface, MAX_FIELD).to_string(),
            a.protocol,
            a.chassis_id.clone(),
        );
        if a.ttl_s == 0 {
            if self.entries.remove(&key).is_some() {
                self.dirty = true;
                return Observed::Withdrawn;
            }
            return Observed::Ignored;
        }
        let ttl = Duration::from_secs(a.ttl_s.into()).min(self.limits.max_ttl);
        let neighbour = Neighbour {
            iface: key.0.clone(),
            protocol: a.protocol,
            chassis_id: a.chassis_id,
            port_id: a.port_id,
            system_name: a.system_name,
            mgmt_addr: a.mgmt_addr,
            ttl_s: a.ttl_s,
        };
        if let Some(e) = self.entries.get_mut(&key) {
            e.expires = now + ttl;
            // The TTL itself is not part of what is reported as a change.
            let same = Neighbour {
                ttl_s: e.neighbour.ttl_s,
                ..neighbour.clone()
            } == e.neighbour;
            if same {
                return Observed::Refreshed;
            }
            e.neighbour = neighbour;
            self.dirty = true;
            return Observed::New;
        }
        self.expire(now);
        if self.entries.len() >= self.limits.max_neighbours {
            return Observed::TableFull;
        }
        self.order += 1;
        self.entries.insert(
            key,
            Entry {
                neighbour,
                first_heard: self.order,
                expires: now + ttl,
            },
        );
        self.dirty = true;
        Observed::New
    }

    /// Forgets neighbours past their TTL; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.expires > now);
        let gone = before - self.entries.len();
        if gone > 0 {
            self.dirty = true;
        }
        gone
    }

    /// The next time something may be due (an expiry, or a coalesced report).
    pub fn next_deadline(&self) -> Option<Instant> {
        let expiry = self.entries.values().map(|e| e.expires).min();
        let report = self
            .dirty
            .then(|| self.last_report.map(|t| t + self.limits.report_interval))
            .flatten();
        let empty = self
            .empty_not_before
            .filter(|_| self.dirty && self.last_sent.is_none());
        [expiry, report, empty].into_iter().flatten().min()
    }

    /// The neighbours, first heard first, at most [`MAX_REPORTED`].
    pub fn current(&self) -> Vec<Neighbour> {
        let mut all: Vec<&Entry> = self.entries.values().collect();
        all.sort_by_key(|e| e.first_heard);
        all.into_iter()
            .take(MAX_REPORTED)
            .map(|e| e.neighbour.clone())
            .collect()
    }

    /// Expires what is due; when the set changed and the last report is at least
    /// `report_interval` old, returns the set to report.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<Neighbour>> {
        self.expire(now);
        if !self.dirty {
            return None;
        }
        if self
            .last_report
            .is_some_and(|t| now < t + self.limits.report_interval)
        {
            return None;
        }
        let current = self.current();
        if current.is_empty()
            && self.last_sent.is_none()
            && self.empty_not_before.is_some_and(|t| now < t)
        {
            return None;
        }
        self.dirty = false;
        // Changes beyond the reported neighbours (or undone in the meantime) are not news.
        if self.last_sent.as_ref() == Some(&current) {
            return None;
        }
        self.last_report = Some(now);
        self.last_sent = Some(current.clone());
        Some(current)
    }
}

#[cfg(test)]
mod tests;
