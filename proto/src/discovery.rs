//! Typed schemas carried by [`crate::ReportBody::Discovery`] (`kind` names the schema,
//! `data` is its JSON text). Using the existing report keeps old packet-readers and
//! queues compatible: they pass the report through without knowing the schema.
//!
//! - [`LLDP_KIND`] (`"lldp"`): [`NeighbourReport`], the link-layer neighbours (LLDP or CDP)
//!   a nanoprobe currently hears, sent whenever that set changes (a new neighbour, one
//!   gone past its TTL), at most once per the nanoprobe's `report_interval_ms`. Each report is the
//!   whole current set, so a lost or coalesced report never leaves the CMA with a stale
//!   delta.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// `kind` of a [`NeighbourReport`] discovery report.
pub const LLDP_KIND: &str = "lldp";

/// Longest text field (chassis id, port id, system name, interface) in a report, bytes;
/// longer values are cut at a character boundary so a report fits one datagram.
pub const MAX_FIELD: usize = 48;

/// Most neighbours in one report (the nanoprobe keeps the ones heard first).
pub const MAX_REPORTED: usize = 2;

/// The protocol a neighbour announced itself with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkProtocol {
    /// IEEE 802.1AB LLDP.
    Lldp,
    /// Cisco Discovery Protocol.
    Cdp,
}

/// One link-layer neighbour (a switch port this host is plugged into).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Neighbour {
    /// The local interface the frames arrive on.
    pub iface: String,
    /// LLDP or CDP.
    pub protocol: LinkProtocol,
    /// The chassis id (a MAC as `aa:bb:..`, an address, or text); CDP: the device id.
    pub chassis_id: String,
    /// The port id on the neighbour.
    pub port_id: String,
    /// The neighbour's system name (CDP: the device id).
    pub system_name: Option<String>,
    /// The neighbour's management address, where it announced one.
    pub mgmt_addr: Option<IpAddr>,
    /// Seconds the announcement stays valid.
    pub ttl_s: u16,
}

/// The `data` of a [`LLDP_KIND`] discovery report: every neighbour currently heard, first
/// heard first (at most [`MAX_REPORTED`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourReport {
    /// The neighbours; empty when the last one went past its TTL.
    pub neighbours: Vec<Neighbour>,
    /// The MAC address of the host's default gateway (from the ARP table), when known:
    /// gateways sharing a MAC are one router with several interfaces.
    #[serde(default)]
    pub gateway_mac: Option<String>,
}

impl From<&Neighbour> for crate::LldpNeighbour {
    fn from(n: &Neighbour) -> Self {
        crate::LldpNeighbour {
            chassis_id: n.chassis_id.clone(),
            port_id: n.port_id.clone(),
            system_name: n.system_name.clone(),
        }
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
pub fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abcdef", 3), "abc");
        assert_eq!(clip("aé", 2), "a");
    }
}
