//! Topology learning, pure: which switch each host sits behind and which router each
//! switch hangs off, from what the hosts report (docs/topology.md), with the declared
//! config winning where it says something.
//!
//! Sources, in order of precedence:
//! - a switch's host list in the config (`declared`), then its subnets (`subnet`), then its
//!   declared LLDP chassis matched against what the host hears (`lldp`);
//! - otherwise the neighbour the host heard first over LLDP/CDP (its capture reports,
//!   else `lldpctl` at start-up): an undeclared switch named by its system name (the
//!   chassis id when it announces none), probed at its announced management address
//!   (`lldp`);
//! - a switch's router: the declared one, else the default gateway most of its hosts use,
//!   named by its address and probed there (`gateway`).
//!
//! Bounded: each host keeps at most [`MAX_REPORTED`] neighbours, so learned switches are
//! at most that many per host; a host's switch changes only when what it reports changes,
//! and the nanoprobe rate-limits those reports.

use super::rings::SwitchMap;
use api::topology::{HostPlacementView, RouterView, Source, SwitchView, TopologyView};
use proto::discovery::{Neighbour, NeighbourReport, MAX_FIELD, MAX_REPORTED};
use proto::LldpNeighbour;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// What a host said about its surroundings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Surroundings {
    /// Interface addresses and prefix lengths (start-up report).
    pub interfaces: Vec<(IpAddr, u8)>,
    /// Default gateway (start-up report).
    pub gateway: Option<IpAddr>,
    /// `lldpctl`'s neighbour at start-up, the fallback when capture hears nothing.
    pub lldpctl: Option<LldpNeighbour>,
    /// The neighbours its capture hears now, first heard first.
    pub neighbours: Vec<Neighbour>,
    /// Its gateway's MAC address, from its neighbour reports.
    #[serde(default)]
    pub gateway_mac: Option<String>,
    /// Its nanoprobe listens on the unspecified address, so it is reached at the address
    /// its reports come from, which may change (a host re-plugged into another subnet).
    #[serde(default)]
    pub follows_source: bool,
    /// When its reports last moved it to another switch (µs), for the hold-down.
    #[serde(default)]
    pub moved_at_us: Option<u64>,
    /// Since when its reports place it elsewhere than where it is while the move is held
    /// down (µs); `None` when it is where they place it.
    #[serde(default)]
    pub held_since_us: Option<u64>,
}

/// What to do with a host whose reports place it on another switch (or on none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveDecision {
    /// It is where its reports place it.
    Stay,
    /// Move it now.
    Move,
    /// Not before this time (µs): it moved less than the hold-down ago, or it lost all
    /// its neighbours less than the hold-down ago.
    HoldUntil(u64),
}

impl Surroundings {
    /// The move hold-down (docs/topology.md): a host whose reports place it on `wanted`
    /// while it is on `current` moves at once, unless it moved less than `hold_us` ago; a
    /// host that lost every neighbour (`wanted` is `None`: the flat ring) moves only once
    /// that has lasted `hold_us`, since a re-plugged host hears nothing for a moment
    /// before it hears its new switch. A held move is remembered (`held_since_us`) and
    /// re-decided when the hold-down ends or the next report comes. Records a move made.
    pub fn decide_move(
        &mut self,
        current: Option<&str>,
        wanted: Option<&str>,
        now_us: u64,
        hold_us: u64,
    ) -> MoveDecision {
        if current == wanted {
            self.held_since_us = None;
            return MoveDecision::Stay;
        }
        let since = *self.held_since_us.get_or_insert(now_us);
        let after_last_move = self.moved_at_us.map_or(0, |t| t.saturating_add(hold_us));
        let after_silence = if wanted.is_none() {
            since.saturating_add(hold_us)
        } else {
            0
        };
        let not_before = after_last_move.max(after_silence);
        if now_us >= not_before {
            self.moved_at_us = Some(now_us);
            self.held_since_us = None;
            MoveDecision::Move
        } else {
            MoveDecision::HoldUntil(not_before)
        }
    }
}

/// A switch resolved for a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The switch name.
    pub switch: String,
    /// Where it came from.
    pub source: Source,
}

/// What the worker learned (persisted with the worker state).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Learned {
    /// Per host.
    pub hosts: BTreeMap<u64, Surroundings>,
    /// Switch -> router facts given to the fsm, so each is given once.
    #[serde(default)]
    pub router_facts: BTreeMap<String, String>,
    /// Hosts whose move is held down (those with `held_since_us`; rebuilt from the host
    /// records), looked at on every tick.
    #[serde(skip)]
    pub held: BTreeSet<u64>,
}

fn clip(s: &str) -> String {
    proto::discovery::clip(s, MAX_FIELD).to_string()
}

/// Parses a `lldp` discovery report, bounded: at most [`MAX_REPORTED`] neighbours, text
/// fields clipped. `None` when it does not decode.
pub fn parse_report(data: &str) -> Option<(Vec<Neighbour>, Option<String>)> {
    let report: NeighbourReport = serde_json::from_str(data).ok()?;
    let mac = report.gateway_mac.as_deref().map(clip);
    Some((
        report
            .neighbours
            .into_iter()
            .take(MAX_REPORTED)
            .map(|n| Neighbour {
                iface: clip(&n.iface),
                chassis_id: clip(&n.chassis_id),
                port_id: clip(&n.port_id),
                system_name: n.system_name.as_deref().map(clip),
                ..n
            })
            .collect(),
        mac,
    ))
}

/// The name of an undeclared switch: its system name, else its chassis id.
fn learned_name(chassis: &str, system_name: Option<&str>) -> String {
    match system_name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => chassis.to_string(),
    }
}

impl Learned {
    /// The chassis (id, system name) the host heard first, or `lldpctl`'s.
    fn chassis_of(&self, host: u64) -> Option<(String, Option<String>)> {
        let s = self.hosts.get(&host)?;
        if let Some(n) = s.neighbours.first() {
            return Some((n.chassis_id.clone(), n.system_name.clone()));
        }
        s.lldpctl
            .as_ref()
            .map(|l| (l.chassis_id.clone(), l.system_name.clone()))
    }

    /// The switch of `host` (listening at `listen`), with its source.
    pub fn placement(&self, map: &SwitchMap, host: u64, listen: IpAddr) -> Option<Placement> {
        let surroundings = self.hosts.get(&host);
        let interfaces = surroundings
            .map(|s| s.interfaces.clone())
            .unwrap_or_default();
        let chassis = self.chassis_of(host);
        if let Some((switch, source)) = map.switch_of_sourced(
            host,
            listen,
            interfaces.into_iter(),
            chassis.as_ref().map(|(c, _)| c.as_str()),
        ) {
            return Some(Placement { switch, source });
        }
        let (chassis, name) = chassis?;
        Some(Placement {
            switch: learned_name(&chassis, name.as_deref()),
            source: Source::Lldp,
        })
    }

    /// A switch's management address: declared, else the one its hosts hear announced
    /// (the most often heard; ties to the lowest).
    pub fn switch_addr(
        &self,
        map: &SwitchMap,
        switch: &str,
        hosts: &BTreeMap<u64, Option<String>>,
    ) -> Option<(IpAddr, Source)> {
        if let Some(a) = map.switch_addr(switch) {
            return Some((a, Source::Declared));
        }
        let only: BTreeMap<u64, Option<String>> = hosts
            .iter()
            .filter(|(_, sw)| sw.as_deref() == Some(switch))
            .map(|(h, sw)| (*h, sw.clone()))
            .collect();
        self.tally(map, &only).switch_addr(map, switch)
    }

    /// What the hosts (`hosts`: host -> its switch) say about their switches' addresses
    /// and their gateways, gathered in one pass: the view and the router facts then cost
    /// O(hosts), not O(switches x hosts) (100,000 hosts behind 2,500 switches).
    fn tally<'a>(&'a self, map: &SwitchMap, hosts: &'a BTreeMap<u64, Option<String>>) -> Tally<'a> {
        let mut t = Tally::default();
        for (host, sw) in hosts {
            let (Some(sw), Some(s)) = (sw.as_deref(), self.hosts.get(host)) else {
                continue;
            };
            if let Some(n) = s.neighbours.first() {
                if let Some(a) = n.mgmt_addr {
                    if learned_name(&n.chassis_id, n.system_name.as_deref()) == sw
                        || map.is_declared_chassis(sw, &n.chassis_id)
                    {
                        *t.addr_votes.entry(sw).or_default().entry(a).or_default() += 1;
                    }
                }
            }
            if let Some(gw) = s.gateway {
                *t.gateway_votes
                    .entry(sw)
                    .or_default()
                    .entry(gw)
                    .or_default() += 1;
            }
        }
        // One router answers for several subnets with one MAC: the MAC of a gateway is the
        // first one reported (in host order), and the router is named by the lowest gateway
        // address reported with that MAC.
        for s in self.hosts.values() {
            if let (Some(gw), Some(mac)) = (s.gateway, s.gateway_mac.as_deref()) {
                t.mac_of.entry(gw).or_insert(mac);
                let lowest = t.lowest_gateway.entry(mac).or_insert(gw);
                *lowest = (*lowest).min(gw);
            }
        }
        t
    }

    /// Every switch's router (declared, else its hosts' most common gateway), for the
    /// switches of `hosts`.
    fn routers(
        &self,
        map: &SwitchMap,
        hosts: &BTreeMap<u64, Option<String>>,
    ) -> BTreeMap<String, (String, Source)> {
        let tally = self.tally(map, hosts);
        let switches: BTreeSet<&String> = hosts.values().flatten().collect();
        switches
            .into_iter()
            .filter_map(|sw| tally.router_of(map, sw).map(|r| (sw.clone(), r)))
            .collect()
    }

    /// A router's address: declared, else the gateway address it is named by.
    pub fn router_addr(map: &SwitchMap, router: &str) -> Option<(IpAddr, Source)> {
        if let Some(a) = map.router_addr(router) {
            return Some((a, Source::Declared));
        }
        router.parse().ok().map(|a| (a, Source::Gateway))
    }

    /// The switch -> router facts the fsm has not been given yet (and records them).
    pub fn new_router_facts(
        &mut self,
        map: &SwitchMap,
        hosts: &BTreeMap<u64, Option<String>>,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (sw, (router, _)) in self.routers(map, hosts) {
            if self.router_facts.get(&sw) != Some(&router) {
                self.router_facts.insert(sw.clone(), router.clone());
                out.push((sw, router));
            }
        }
        out
    }

    /// The operator's view of the topology (`cmactl topology`): `hosts` maps every up
    /// host to its switch placement.
    pub fn view(&self, map: &SwitchMap, hosts: &BTreeMap<u64, Option<Placement>>) -> TopologyView {
        let by_switch: BTreeMap<u64, Option<String>> = hosts
            .iter()
            .map(|(h, p)| (*h, p.as_ref().map(|p| p.switch.clone())))
            .collect();
        let mut switches: BTreeMap<String, SwitchView> = BTreeMap::new();
        let mut unplaced = Vec::new();
        for (host, placement) in hosts {
            match placement {
                Some(p) => switches
                    .entry(p.switch.clone())
                    .or_insert_with(|| SwitchView {
                        name: p.switch.clone(),
                        ..SwitchView::default()
                    })
                    .hosts
                    .push(HostPlacementView {
                        host: *host,
                        source: p.source,
                    }),
                None => unplaced.push(*host),
            }
        }
        let mut routers: BTreeMap<String, RouterView> = BTreeMap::new();
        let tally = self.tally(map, &by_switch);
        for sw in switches.values_mut() {
            if let Some((a, src)) = tally.switch_addr(map, &sw.name) {
                sw.address = Some(a);
                sw.address_source = Some(src);
            }
            if let Some((r, src)) = tally.router_of(map, &sw.name) {
                let entry = routers.entry(r.clone()).or_insert_with(|| {
                    let addr = Learned::router_addr(map, &r);
                    RouterView {
                        name: r.clone(),
                        address: addr.map(|(a, _)| a),
                        source: src,
                        switches: Vec::new(),
                    }
                });
                entry.switches.push(sw.name.clone());
                sw.router = Some(r);
                sw.router_source = Some(src);
            }
        }
        TopologyView {
            switches: switches.into_values().collect(),
            routers: routers.into_values().collect(),
            unplaced,
        }
    }
}

fn most_voted(votes: &BTreeMap<IpAddr, usize>) -> Option<IpAddr> {
    // BTreeMap order makes ties go to the lowest address.
    let best = votes.values().copied().max()?;
    votes.iter().find(|(_, v)| **v == best).map(|(a, _)| *a)
}

/// What the hosts say about their switches and gateways ([`Learned::tally`]).
#[derive(Default)]
struct Tally<'a> {
    /// Per switch: management addresses announced by the switch its hosts hear.
    addr_votes: BTreeMap<&'a str, BTreeMap<IpAddr, usize>>,
    /// Per switch: its hosts' default gateways.
    gateway_votes: BTreeMap<&'a str, BTreeMap<IpAddr, usize>>,
    /// A gateway's MAC address.
    mac_of: BTreeMap<IpAddr, &'a str>,
    /// The lowest gateway address reported with a MAC.
    lowest_gateway: BTreeMap<&'a str, IpAddr>,
}

impl Tally<'_> {
    /// A switch's management address: declared, else the most often heard.
    fn switch_addr(&self, map: &SwitchMap, switch: &str) -> Option<(IpAddr, Source)> {
        if let Some(a) = map.switch_addr(switch) {
            return Some((a, Source::Declared));
        }
        most_voted(self.addr_votes.get(switch)?).map(|a| (a, Source::Lldp))
    }

    /// A switch's router: declared, else the default gateway most of its hosts use,
    /// named by the lowest gateway address sharing its MAC (else its own address).
    fn router_of(&self, map: &SwitchMap, switch: &str) -> Option<(String, Source)> {
        if let Some(r) = map.router_of(switch) {
            return Some((r.to_string(), Source::Declared));
        }
        let gw = most_voted(self.gateway_votes.get(switch)?)?;
        let name = self
            .mac_of
            .get(&gw)
            .and_then(|mac| self.lowest_gateway.get(mac))
            .copied()
            .unwrap_or(gw);
        Some((name.to_string(), Source::Gateway))
    }
}

#[cfg(test)]
mod tests;
