//! The topology as operators see it (`GET /v1/topology`, `cmactl topology`): switches,
//! routers and the hosts placed on them, each fact with its [`Source`]. The worker learns
//! it (`worker::topology`) and stores it as the one row of the `topology` table.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Where a topology fact comes from (shown by `cmactl topology`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Written in the CMA config (a switch's host list, a switch's router, an address).
    Declared,
    /// A declared switch's subnet holds one of the host's addresses.
    Subnet,
    /// Heard over LLDP or CDP by the host's nanoprobe (or read by `lldpctl`).
    Lldp,
    /// The host's default gateway.
    Gateway,
}

impl Source {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Declared => "declared",
            Source::Subnet => "subnet",
            Source::Lldp => "lldp",
            Source::Gateway => "gateway",
        }
    }
}

/// A host on a switch, and how it was placed there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPlacementView {
    /// Host id.
    pub host: u64,
    /// How its switch was found.
    pub source: Source,
}

/// One switch as operators see it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchView {
    /// Its name (declared, or the LLDP system name).
    pub name: String,
    /// Where it is probed.
    pub address: Option<IpAddr>,
    /// Where the address came from.
    pub address_source: Option<Source>,
    /// The router it hangs off.
    pub router: Option<String>,
    /// Where that came from.
    pub router_source: Option<Source>,
    /// Its hosts (up, dead or suspected; not departed).
    pub hosts: Vec<HostPlacementView>,
}

/// One router as operators see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterView {
    /// Its name (declared, or its gateway address).
    pub name: String,
    /// Where it is probed.
    pub address: Option<IpAddr>,
    /// Declared or gateway.
    pub source: Source,
    /// Its switches.
    pub switches: Vec<String>,
}

/// The whole topology (the one row of the `topology` table, `GET /v1/topology`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyView {
    /// Switches by name.
    pub switches: Vec<SwitchView>,
    /// Routers by name.
    pub routers: Vec<RouterView>,
    /// Hosts of unknown switch (the `flat` ring).
    pub unplaced: Vec<u64>,
}
