//! Topology (which switch a host sits behind) and the ring plan, both pure.
//!
//! Rings (docs/design.md §4): the hosts behind one switch form a switch ring, ordered by
//! host id, where each host sends heartbeats to and expects them from its predecessor and
//! successor, so each is watched by two peers on its own switch (one in a 2-host ring,
//! none alone). The two lowest-id hosts of each switch ring (its representatives) also join
//! the `top` ring spanning switches, which sees a whole switch go silent: the top ring is
//! ordered by switch, then host id, so the two representatives of a switch are adjacent and
//! a dead switch shows as two suspects behind it, each reported by a host on another switch
//! (what the fsm needs to open one switch investigation instead of two host alarms). Hosts
//! of unknown topology form the `flat` ring, which joins the top ring the same way. The plan is a
//! function of the member set only, so it is the same whatever the history of joins and
//! leaves; the worker sends only the differences between two plans.

use api::topology::Source;
use api::views::RingKind;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// A switch declared in the CMA config (`[[switches]]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    /// Name operators use (e.g. `sw1`).
    pub name: String,
    /// Management address that answers ping (probed when the switch is suspected).
    pub address: Option<IpAddr>,
    /// Subnets behind it, as `a.b.c.d/len`; a host with an address inside is behind it.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Host ids declared behind it (wins over subnets).
    #[serde(default)]
    pub hosts: Vec<u64>,
    /// LLDP chassis id seen by hosts plugged into it.
    #[serde(default)]
    pub lldp_chassis: Option<String>,
    /// The router it hangs off.
    #[serde(default)]
    pub router: Option<String>,
}

/// A router declared in the CMA config (`[[routers]]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Name operators use (e.g. `r1`).
    pub name: String,
    /// Address that answers ping.
    pub address: Option<IpAddr>,
}

/// The declared topology, resolved for lookups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwitchMap {
    switches: Vec<(SwitchConfig, Vec<(IpAddr, u8)>)>,
    routers: Vec<RouterConfig>,
    /// Declared host id → index of the first switch declaring it (lookups are per host
    /// and per topology view, so a scan of every switch's host list would make them
    /// O(hosts) each at 10,000 hosts).
    by_host: BTreeMap<u64, usize>,
    /// Declared subnet (family, prefix length, masked network) → index of the first
    /// switch declaring it, and the prefix lengths in use per family: a host's subnet
    /// lookup is a few map lookups instead of a scan of every switch (2,500 switches at
    /// 100,000 hosts, for every host of every topology view).
    by_subnet: BTreeMap<(u8, u8, u128), usize>,
    prefix_lens: BTreeSet<(u8, u8)>,
    /// Switch name → index.
    by_name: BTreeMap<String, usize>,
}

/// `ip` masked to `len` bits, with its family (4 or 6), as a subnet index key.
fn subnet_key(ip: IpAddr, len: u8) -> (u8, u8, u128) {
    match ip {
        IpAddr::V4(a) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len.min(32))
            };
            (4, len, u128::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len.min(128))
            };
            (6, len, u128::from(a) & mask)
        }
    }
}

/// A declared topology that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// Two switches with one name.
    #[error("switch {0:?} declared twice")]
    DuplicateSwitch(String),
    /// A switch names a router that is not declared.
    #[error("switch {switch:?}: unknown router {router:?}")]
    UnknownRouter {
        /// The switch.
        switch: String,
        /// The router it names.
        router: String,
    },
    /// A subnet without `/`.
    #[error("subnet {0:?}: expected address/prefix-length")]
    SubnetSyntax(String),
    /// A subnet whose address does not parse.
    #[error("subnet {subnet:?}: bad address")]
    SubnetAddr {
        /// The subnet as written.
        subnet: String,
        /// Why the address was refused.
        #[source]
        source: std::net::AddrParseError,
    },
    /// A subnet whose prefix length does not parse.
    #[error("subnet {subnet:?}: bad prefix length")]
    SubnetLen {
        /// The subnet as written.
        subnet: String,
        /// Why the length was refused.
        #[source]
        source: std::num::ParseIntError,
    },
    /// A prefix longer than the address.
    #[error("subnet {subnet:?}: prefix length over {max}")]
    SubnetTooLong {
        /// The subnet as written.
        subnet: String,
        /// 32 or 128.
        max: u8,
    },
}

fn parse_subnet(text: &str) -> Result<(IpAddr, u8), TopologyError> {
    let (addr, len) = text
        .split_once('/')
        .ok_or_else(|| TopologyError::SubnetSyntax(text.to_string()))?;
    let addr: IpAddr = addr.parse().map_err(|source| TopologyError::SubnetAddr {
        subnet: text.to_string(),
        source,
    })?;
    let len: u8 = len.parse().map_err(|source| TopologyError::SubnetLen {
        subnet: text.to_string(),
        source,
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(TopologyError::SubnetTooLong {
            subnet: text.to_string(),
            max,
        });
    }
    Ok((addr, len))
}

impl SwitchMap {
    /// Checks and indexes the declared topology.
    pub fn new(
        switches: Vec<SwitchConfig>,
        routers: Vec<RouterConfig>,
    ) -> Result<SwitchMap, TopologyError> {
        let mut names = BTreeSet::new();
        let mut resolved = Vec::new();
        for sw in switches {
            if !names.insert(sw.name.clone()) {
                return Err(TopologyError::DuplicateSwitch(sw.name));
            }
            if let Some(r) = &sw.router {
                if !routers.iter().any(|x| &x.name == r) {
                    return Err(TopologyError::UnknownRouter {
                        switch: sw.name.clone(),
                        router: r.clone(),
                    });
                }
            }
            let subnets = sw
                .subnets
                .iter()
                .map(|s| parse_subnet(s))
                .collect::<Result<Vec<_>, _>>()?;
            resolved.push((sw, subnets));
        }
        let mut by_host = BTreeMap::new();
        let mut by_subnet = BTreeMap::new();
        let mut prefix_lens = BTreeSet::new();
        let mut by_name = BTreeMap::new();
        for (i, (sw, subnets)) in resolved.iter().enumerate() {
            for h in &sw.hosts {
                by_host.entry(*h).or_insert(i);
            }
            for (net, len) in subnets {
                let key = subnet_key(*net, *len);
                prefix_lens.insert((key.0, key.1));
                by_subnet.entry(key).or_insert(i);
            }
            by_name.insert(sw.name.clone(), i);
        }
        Ok(SwitchMap {
            switches: resolved,
            routers,
            by_host,
            by_subnet,
            prefix_lens,
            by_name,
        })
    }

    /// The switch of a host: declared host list, then subnet of its addresses, then LLDP
    /// chassis; `None` when unknown.
    pub fn switch_of(
        &self,
        host: u64,
        listen: IpAddr,
        interfaces: impl Iterator<Item = (IpAddr, u8)>,
        lldp_chassis: Option<&str>,
    ) -> Option<String> {
        self.switch_of_sourced(host, listen, interfaces, lldp_chassis)
            .map(|(name, _)| name)
    }

    /// As [`SwitchMap::switch_of`], with the source of the answer (host list: declared;
    /// subnet; LLDP chassis).
    pub fn switch_of_sourced(
        &self,
        host: u64,
        listen: IpAddr,
        interfaces: impl Iterator<Item = (IpAddr, u8)>,
        lldp_chassis: Option<&str>,
    ) -> Option<(String, Source)> {
        if let Some((sw, _)) = self.by_host.get(&host).and_then(|i| self.switches.get(*i)) {
            return Some((sw.name.clone(), Source::Declared));
        }
        // The first switch (in declaration order) with a subnet holding any address.
        let first = std::iter::once(listen)
            .chain(interfaces.map(|(a, _)| a))
            .flat_map(|a| {
                let family = if a.is_ipv4() { 4 } else { 6 };
                self.prefix_lens
                    .iter()
                    .filter(move |(f, _)| *f == family)
                    .filter_map(move |(_, len)| self.by_subnet.get(&subnet_key(a, *len)))
            })
            .min();
        if let Some((sw, _)) = first.and_then(|i| self.switches.get(*i)) {
            return Some((sw.name.clone(), Source::Subnet));
        }
        let chassis = lldp_chassis?;
        self.switches
            .iter()
            .find(|(s, _)| s.lldp_chassis.as_deref() == Some(chassis))
            .map(|(s, _)| (s.name.clone(), Source::Lldp))
    }

    /// Whether `chassis` is the declared LLDP chassis of `switch`.
    pub fn is_declared_chassis(&self, switch: &str, chassis: &str) -> bool {
        self.declared(switch)
            .is_some_and(|s| s.lldp_chassis.as_deref() == Some(chassis))
    }

    /// The declared switch named `switch`.
    fn declared(&self, switch: &str) -> Option<&SwitchConfig> {
        self.by_name
            .get(switch)
            .and_then(|i| self.switches.get(*i))
            .map(|(s, _)| s)
    }

    /// The router a switch hangs off.
    pub fn router_of(&self, switch: &str) -> Option<&str> {
        self.declared(switch).and_then(|s| s.router.as_deref())
    }

    /// A switch's management address.
    pub fn switch_addr(&self, switch: &str) -> Option<IpAddr> {
        self.declared(switch).and_then(|s| s.address)
    }

    /// A router's address.
    pub fn router_addr(&self, router: &str) -> Option<IpAddr> {
        self.routers
            .iter()
            .find(|r| r.name == router)
            .and_then(|r| r.address)
    }
}

/// One ring of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    /// `switch:<name>`, `flat` or `top`.
    pub name: String,
    /// What it spans.
    pub kind: RingKind,
    /// Members in ring order.
    pub members: Vec<u64>,
}

/// Representatives of each switch (and of the flat ring) in the top ring.
pub const REPRESENTATIVES: usize = 2;

/// The rings of a member set: `(host, switch)` pairs.
pub fn plan(members: &[(u64, Option<String>)]) -> Vec<Ring> {
    let mut groups: BTreeMap<Option<String>, Vec<u64>> = BTreeMap::new();
    for (host, switch) in members {
        groups.entry(switch.clone()).or_default().push(*host);
    }
    let mut rings = Vec::new();
    let mut representatives = Vec::new();
    for (switch, mut hosts) in groups {
        hosts.sort_unstable();
        hosts.dedup();
        representatives.extend(hosts.iter().take(REPRESENTATIVES).copied());
        let (name, kind) = match switch {
            Some(s) => (format!("switch:{s}"), RingKind::Switch),
            None => ("flat".to_string(), RingKind::Flat),
        };
        rings.push(Ring {
            name,
            kind,
            members: hosts,
        });
    }
    // More than one ring to span (not merely one ring with two representatives).
    if rings.len() > 1 {
        rings.push(Ring {
            name: "top".into(),
            kind: RingKind::Top,
            members: representatives,
        });
    }
    rings
}

/// Who each host exchanges heartbeats with under a plan (symmetric: A has B iff B has A).
pub fn peer_sets(rings: &[Ring]) -> BTreeMap<u64, BTreeSet<u64>> {
    let mut peers: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for ring in rings {
        let n = ring.members.len();
        for (i, &host) in ring.members.iter().enumerate() {
            let entry = peers.entry(host).or_default();
            if n < 2 {
                continue;
            }
            entry.insert(ring.members[(i + 1) % n]);
            entry.insert(ring.members[(i + n - 1) % n]);
        }
    }
    peers
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sw(name: &str) -> Option<String> {
        Some(name.to_string())
    }

    #[test]
    fn switch_rings_and_top_ring() {
        let members = vec![
            (5, sw("a")),
            (1, sw("a")),
            (3, sw("a")),
            (7, sw("b")),
            (9, sw("b")),
            (2, None),
        ];
        let rings = plan(&members);
        let names: Vec<&str> = rings.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["flat", "switch:a", "switch:b", "top"]);
        assert_eq!(rings[1].members, vec![1, 3, 5]);
        // Ordered by ring (flat, a, b), two representatives each (flat has one host).
        assert_eq!(rings[3].members, vec![2, 1, 3, 7, 9]);
        let peers = peer_sets(&rings);
        assert_eq!(peers[&5], BTreeSet::from([1, 3]));
        // Host 1: switch ring neighbours 3 and 5, top ring neighbours 2 and 3.
        assert_eq!(peers[&1], BTreeSet::from([2, 3, 5]));
        // Host 3: switch ring 1 and 5, top ring 1 and 7.
        assert_eq!(peers[&3], BTreeSet::from([1, 5, 7]));
        assert_eq!(peers[&9], BTreeSet::from([2, 7]));
        assert_eq!(peers[&2], BTreeSet::from([1, 9]));
    }

    proptest! {
        /// The subnet index answers as a scan of every switch in declaration order
        /// would: the first switch with a subnet holding any of the host's addresses
        /// (overlapping subnets of different lengths, IPv4 and IPv6).
        #[test]
        fn subnet_index_answers_as_a_scan(
            nets in prop::collection::vec((0u32..64, prop::sample::select(vec![0u8, 8, 26, 28, 30, 32]), any::<bool>()), 1..12),
            addrs in prop::collection::vec((0u32..64, any::<bool>()), 1..4),
        ) {
            let ip = |x: u32, v6: bool| -> IpAddr {
                if v6 {
                    IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, x as u16))
                } else {
                    IpAddr::V4(std::net::Ipv4Addr::from(0xc612_0000 | x))
                }
            };
            let switches: Vec<SwitchConfig> = nets
                .iter()
                .enumerate()
                .map(|(i, (x, len, v6))| SwitchConfig {
                    name: format!("sw{i}"),
                    address: None,
                    subnets: vec![format!("{}/{}", ip(*x, *v6), if *v6 { 96 + len } else { *len })],
                    hosts: vec![],
                    lldp_chassis: None,
                    router: None,
                })
                .collect();
            let map = SwitchMap::new(switches.clone(), vec![]).unwrap();
            let host: Vec<IpAddr> = addrs.iter().map(|(x, v6)| ip(*x, *v6)).collect();
            let contains = |a: IpAddr, (net, len): (IpAddr, u8)| match (a, net) {
                (IpAddr::V4(a), IpAddr::V4(n)) => {
                    let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                    u32::from(a) & m == u32::from(n) & m
                }
                (IpAddr::V6(a), IpAddr::V6(n)) => {
                    let m = if len == 0 { 0 } else { u128::MAX << (128 - len) };
                    u128::from(a) & m == u128::from(n) & m
                }
                _ => false,
            };
            let scan = switches
                .iter()
                .find(|sw| {
                    let net = parse_subnet(&sw.subnets[0]).unwrap();
                    host.iter().any(|a| contains(*a, net))
                })
                .map(|sw| sw.name.clone());
            let indexed = map.switch_of(1, host[0], host[1..].iter().map(|a| (*a, 24)), None);
            prop_assert_eq!(indexed, scan);
        }
    }

    #[test]
    fn topology_resolution_order() {
        let map = SwitchMap::new(
            vec![
                SwitchConfig {
                    name: "sw1".into(),
                    address: Some("198.18.1.254".parse().unwrap()),
                    subnets: vec!["198.18.1.0/24".into()],
                    hosts: vec![42],
                    lldp_chassis: None,
                    router: Some("r1".into()),
                },
                SwitchConfig {
                    name: "sw2".into(),
                    address: None,
                    subnets: vec![],
                    hosts: vec![],
                    lldp_chassis: Some("00:11:22:33:44:55".into()),
                    router: None,
                },
            ],
            vec![RouterConfig {
                name: "r1".into(),
                address: Some("198.18.0.1".parse().unwrap()),
            }],
        )
        .unwrap();
        let none = std::iter::empty();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(map.switch_of(42, ip("10.0.0.1"), none, None), sw("sw1"));
        assert_eq!(
            map.switch_of(7, ip("198.18.1.7"), std::iter::empty(), None),
            sw("sw1")
        );
        assert_eq!(
            map.switch_of(
                7,
                ip("10.0.0.7"),
                std::iter::empty(),
                Some("00:11:22:33:44:55")
            ),
            sw("sw2")
        );
        assert_eq!(
            map.switch_of(7, ip("10.0.0.7"), std::iter::empty(), None),
            None
        );
        assert_eq!(map.router_of("sw1"), Some("r1"));
        assert_eq!(map.router_addr("r1"), Some(ip("198.18.0.1")));
        assert!(SwitchMap::new(
            vec![SwitchConfig {
                name: "x".into(),
                address: None,
                subnets: vec!["nonsense".into()],
                hosts: vec![],
                lldp_chassis: None,
                router: None
            }],
            vec![]
        )
        .is_err());
    }

    proptest! {
        /// Heartbeat relations are symmetric and every host of a switch ring of three or
        /// more is watched by at least its two ring neighbours.
        #[test]
        fn symmetric_and_two_watchers(hosts in prop::collection::btree_map(0u64..200, 0u8..4, 1..60)) {
            let members: Vec<(u64, Option<String>)> = hosts
                .iter()
                .map(|(h, s)| (*h, (*s > 0).then(|| format!("sw{s}"))))
                .collect();
            let rings = plan(&members);
            let peers = peer_sets(&rings);
            for (a, set) in &peers {
                for b in set {
                    prop_assert!(peers[b].contains(a), "{a} -> {b} not symmetric");
                }
            }
            for ring in &rings {
                if ring.members.len() >= 3 {
                    for h in &ring.members {
                        prop_assert!(peers[h].len() >= 2);
                    }
                }
            }
            // A whole ring going silent is seen from outside: each of its representatives
            // has a top-ring neighbour in another ring.
            if let Some(top) = rings.iter().find(|r| r.kind == RingKind::Top) {
                let ring_of = |h: u64| rings.iter().position(|r| r.kind != RingKind::Top && r.members.contains(&h));
                let n = top.members.len();
                for (i, h) in top.members.iter().enumerate() {
                    let outside = [top.members[(i + 1) % n], top.members[(i + n - 1) % n]]
                        .iter()
                        .any(|p| ring_of(*p) != ring_of(*h));
                    prop_assert!(outside, "representative {h} has no watcher outside its ring");
                }
            }
            // Every member appears in exactly one non-top ring.
            for (h, _) in &members {
                let n = rings.iter().filter(|r| r.kind != RingKind::Top && r.members.contains(h)).count();
                prop_assert_eq!(n, 1);
            }
        }

        /// Removing one host changes the peers of its ring neighbours only (and of the top
        /// ring when it was a representative, whose place the next host of its ring takes).
        #[test]
        fn leave_touches_only_neighbours(hosts in prop::collection::btree_set(0u64..100, 4..40), pick in any::<prop::sample::Index>()) {
            let members: Vec<(u64, Option<String>)> = hosts.iter().map(|h| (*h, Some(format!("sw{}", h % 3)))).collect();
            let before = peer_sets(&plan(&members));
            let gone = members[pick.index(members.len())].0;
            let rest: Vec<_> = members.iter().filter(|(h, _)| *h != gone).cloned().collect();
            let after = peer_sets(&plan(&rest));
            let top = |m: &[(u64, Option<String>)]| -> BTreeSet<u64> {
                plan(m).iter().filter(|r| r.kind == RingKind::Top).flat_map(|r| r.members.clone()).collect()
            };
            let (top_before, top_after) = (top(&members), top(&rest));
            for (h, set) in &after {
                if before.get(h) != Some(set) {
                    prop_assert!(before[&gone].contains(h) || top_before.contains(h) || top_after.contains(h),
                        "host {h} changed but was not a neighbour of {gone}");
                }
            }
        }
    }
}
