//! The simulated world: which hosts exist, where they are plugged in (switch, router),
//! which of them and which switches and routers are up, and who can reach whom.
//!
//! Addressing (all on loopback, 127.0.0.0/8): host index `i` sits behind switch
//! `s = i / hosts_per_switch` at `127.(100 + s / 256).(s % 256).(i % hosts_per_switch + 1)`;
//! the switch's management address is `.254` of that /24 and the whole /24 is the switch's
//! subnet in the CMA config ([`World::cma_topology_toml`]). Switch `s` hangs off router
//! `s / switches_per_router`, whose address is `127.99.(r / 256).(r % 256)`.
//!
//! Reachability (what a heartbeat, an echo, a ping or a report needs):
//! - host to host: both alive, both switches up, and when the switches differ, both
//!   switches' routers up (inter-subnet traffic goes through the routers and the core);
//! - host to the CMA side (packet-readers, CMA nodes): alive, its switch and its router up;
//! - host to a switch's management address: like host to host with the switch in place of
//!   the other host's switch; to a router: its own switch and router up and that router up.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Most hosts behind one switch (a /24 with .254 for the switch itself).
pub const MAX_HOSTS_PER_SWITCH: u32 = 250;
/// Most hosts in one world: switch /24s from 127.100.0.0 to 127.199.255.0.
pub const MAX_HOSTS: u32 = 1_000_000;

/// The shape of the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Number of hosts.
    pub hosts: u32,
    /// Hosts behind one switch (1..=250).
    pub hosts_per_switch: u32,
    /// Switches behind one router (>= 1).
    pub switches_per_router: u32,
    /// Host id of host index 0 (ids are consecutive).
    pub first_id: u64,
    /// UDP port every simulated nanoprobe listens on (at its own address).
    pub port: u16,
}

/// A shape that cannot be simulated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShapeError {
    /// Zero hosts, or more than [`MAX_HOSTS`].
    #[error("hosts must be 1..={MAX_HOSTS}, not {0}")]
    Hosts(u32),
    /// Hosts per switch out of range.
    #[error("hosts per switch must be 1..={MAX_HOSTS_PER_SWITCH}, not {0}")]
    HostsPerSwitch(u32),
    /// Zero switches per router.
    #[error("switches per router must be at least 1")]
    SwitchesPerRouter,
    /// Port zero.
    #[error("the port must not be 0")]
    Port,
}

impl Shape {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), ShapeError> {
        if self.hosts == 0 || self.hosts > MAX_HOSTS {
            return Err(ShapeError::Hosts(self.hosts));
        }
        if self.hosts_per_switch == 0 || self.hosts_per_switch > MAX_HOSTS_PER_SWITCH {
            return Err(ShapeError::HostsPerSwitch(self.hosts_per_switch));
        }
        if self.switches_per_router == 0 {
            return Err(ShapeError::SwitchesPerRouter);
        }
        if self.port == 0 {
            return Err(ShapeError::Port);
        }
        Ok(())
    }

    /// Number of switches.
    pub fn switches(&self) -> u32 {
        self.hosts.div_ceil(self.hosts_per_switch)
    }

    /// Number of routers.
    pub fn routers(&self) -> u32 {
        self.switches().div_ceil(self.switches_per_router)
    }
}

/// What a fault did, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// These host indexes died (SIGKILL or power loss: silent).
    KillHosts(Vec<u32>),
    /// A switch went down.
    SwitchDown(u32),
    /// A switch came back.
    SwitchUp(u32),
    /// A router went down.
    RouterDown(u32),
    /// A router came back.
    RouterUp(u32),
}

/// Which side of the world an address belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A simulated host (index).
    Host(u32),
    /// A switch's management address.
    Switch(u32),
    /// A router's address.
    Router(u32),
}

/// The world state.
#[derive(Clone, Debug)]
pub struct World {
    shape: Shape,
    alive: Vec<bool>,
    switch_up: Vec<bool>,
    router_up: Vec<bool>,
}

impl World {
    /// Every host, switch and router up.
    pub fn new(shape: Shape) -> Result<World, ShapeError> {
        shape.validate()?;
        Ok(World {
            shape,
            alive: vec![true; shape.hosts as usize],
            switch_up: vec![true; shape.switches() as usize],
            router_up: vec![true; shape.routers() as usize],
        })
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Number of hosts.
    pub fn len(&self) -> u32 {
        self.shape.hosts
    }

    /// Always false (a world has at least one host).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Host id of index `i`.
    pub fn host_id(&self, i: u32) -> u64 {
        self.shape.first_id + u64::from(i)
    }

    /// Index of host id `id`, if it is simulated.
    pub fn index_of_id(&self, id: u64) -> Option<u32> {
        let i = id.checked_sub(self.shape.first_id)?;
        (i < u64::from(self.shape.hosts)).then_some(i as u32)
    }

    /// The switch of host index `i`.
    pub fn switch_of(&self, i: u32) -> u32 {
        i / self.shape.hosts_per_switch
    }

    /// The router of switch `s`.
    pub fn router_of(&self, s: u32) -> u32 {
        s / self.shape.switches_per_router
    }

    fn subnet(s: u32) -> [u8; 3] {
        [127, (100 + s / 256) as u8, (s % 256) as u8]
    }

    /// IP address of host index `i`.
    pub fn host_ip(&self, i: u32) -> Ipv4Addr {
        let [a, b, c] = Self::subnet(self.switch_of(i));
        Ipv4Addr::new(a, b, c, (i % self.shape.hosts_per_switch + 1) as u8)
    }

    /// Listen address of host index `i`.
    pub fn host_addr(&self, i: u32) -> SocketAddr {
        SocketAddr::from((self.host_ip(i), self.shape.port))
    }

    /// Management address of switch `s`.
    pub fn switch_ip(&self, s: u32) -> Ipv4Addr {
        let [a, b, c] = Self::subnet(s);
        Ipv4Addr::new(a, b, c, 254)
    }

    /// Address of router `r`.
    pub fn router_ip(&self, r: u32) -> Ipv4Addr {
        Ipv4Addr::new(127, 99, (r / 256) as u8, (r % 256) as u8)
    }

    /// Name of switch `s` in the CMA config.
    pub fn switch_name(s: u32) -> String {
        format!("sw{s}")
    }

    /// Name of router `r` in the CMA config.
    pub fn router_name(r: u32) -> String {
        format!("r{r}")
    }

    /// Index of switch named `name`.
    pub fn switch_by_name(&self, name: &str) -> Option<u32> {
        let s: u32 = name.strip_prefix("sw")?.parse().ok()?;
        (s < self.shape.switches()).then_some(s)
    }

    /// Index of router named `name`.
    pub fn router_by_name(&self, name: &str) -> Option<u32> {
        let r: u32 = name.strip_prefix('r')?.parse().ok()?;
        (r < self.shape.routers()).then_some(r)
    }

    /// What lives at `ip`, if anything simulated.
    pub fn place(&self, ip: IpAddr) -> Option<Place> {
        let IpAddr::V4(v4) = ip else {
            return None;
        };
        let [a, b, c, d] = v4.octets();
        if a != 127 {
            return None;
        }
        if b == 99 {
            let r = u32::from(c) * 256 + u32::from(d);
            return (r < self.shape.routers()).then_some(Place::Router(r));
        }
        if !(100..200).contains(&b) {
            return None;
        }
        let s = u32::from(b - 100) * 256 + u32::from(c);
        if s >= self.shape.switches() {
            return None;
        }
        if d == 254 {
            return Some(Place::Switch(s));
        }
        if d == 0 || u32::from(d) > self.shape.hosts_per_switch {
            return None;
        }
        let i = s * self.shape.hosts_per_switch + u32::from(d) - 1;
        (i < self.shape.hosts).then_some(Place::Host(i))
    }

    /// The host index listening at `addr` (address and port), if any.
    pub fn host_at(&self, addr: SocketAddr) -> Option<u32> {
        if addr.port() != self.shape.port {
            return None;
        }
        match self.place(addr.ip()) {
            Some(Place::Host(i)) => Some(i),
            _ => None,
        }
    }

    /// Whether host index `i` is alive (its machine and nanoprobe run).
    pub fn alive(&self, i: u32) -> bool {
        self.alive.get(i as usize).copied().unwrap_or(false)
    }

    /// Sets a host alive or dead.
    pub fn set_alive(&mut self, i: u32, alive: bool) {
        if let Some(a) = self.alive.get_mut(i as usize) {
            *a = alive;
        }
    }

    /// Whether switch `s` is up.
    pub fn switch_up(&self, s: u32) -> bool {
        self.switch_up.get(s as usize).copied().unwrap_or(false)
    }

    /// Whether router `r` is up.
    pub fn router_up(&self, r: u32) -> bool {
        self.router_up.get(r as usize).copied().unwrap_or(false)
    }

    /// Sets a switch up or down.
    pub fn set_switch(&mut self, s: u32, up: bool) {
        if let Some(x) = self.switch_up.get_mut(s as usize) {
            *x = up;
        }
    }

    /// Sets a router up or down.
    pub fn set_router(&mut self, r: u32, up: bool) {
        if let Some(x) = self.router_up.get_mut(r as usize) {
            *x = up;
        }
    }

    /// Host `i` can reach the CMA side (packet-readers, CMA nodes) and be reached by it.
    pub fn reaches_cma(&self, i: u32) -> bool {
        let s = self.switch_of(i);
        self.alive(i) && self.switch_up(s) && self.router_up(self.router_of(s))
    }

    /// A datagram from host `a` reaches host `b` (both alive, path up).
    pub fn reaches_host(&self, a: u32, b: u32) -> bool {
        if !self.alive(a) || !self.alive(b) {
            return false;
        }
        self.path(self.switch_of(a), self.switch_of(b))
    }

    /// The path between two switches is up (both switches, and the routers if they differ).
    fn path(&self, sa: u32, sb: u32) -> bool {
        if !self.switch_up(sa) || !self.switch_up(sb) {
            return false;
        }
        sa == sb || (self.router_up(self.router_of(sa)) && self.router_up(self.router_of(sb)))
    }

    /// Host `a` gets an answer from whatever lives at `ip` (a ping or an echo).
    pub fn answers(&self, a: u32, ip: IpAddr) -> bool {
        if !self.alive(a) {
            return false;
        }
        let sa = self.switch_of(a);
        match self.place(ip) {
            Some(Place::Host(b)) => self.reaches_host(a, b),
            Some(Place::Switch(s)) => self.path(sa, s),
            Some(Place::Router(r)) => {
                self.switch_up(sa) && self.router_up(self.router_of(sa)) && self.router_up(r)
            }
            None => false,
        }
    }

    /// Every alive host index.
    pub fn alive_hosts(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.shape.hosts).filter(|i| self.alive(*i))
    }

    /// Hosts behind switch `s`.
    pub fn hosts_of_switch(&self, s: u32) -> std::ops::Range<u32> {
        let start = s * self.shape.hosts_per_switch;
        start..(start + self.shape.hosts_per_switch).min(self.shape.hosts)
    }

    /// Hosts behind router `r`.
    pub fn hosts_of_router(&self, r: u32) -> std::ops::Range<u32> {
        let s0 = r * self.shape.switches_per_router;
        let s1 = (s0 + self.shape.switches_per_router).min(self.shape.switches());
        let start = s0 * self.shape.hosts_per_switch;
        start..(s1 * self.shape.hosts_per_switch).min(self.shape.hosts)
    }

    /// The `[[worker.switches]]` and `[[worker.routers]]` sections the CMA needs to know this
    /// world's topology (subnet per switch, management addresses, routers).
    pub fn cma_topology_toml(&self) -> String {
        let mut out = String::new();
        for r in 0..self.shape.routers() {
            out.push_str(&format!(
                "[[worker.routers]]\nname = \"{}\"\naddress = \"{}\"\n\n",
                Self::router_name(r),
                self.router_ip(r)
            ));
        }
        for s in 0..self.shape.switches() {
            let [a, b, c] = Self::subnet(s);
            out.push_str(&format!(
                "[[worker.switches]]\nname = \"{}\"\naddress = \"{}\"\nsubnets = [\"{a}.{b}.{c}.0/24\"]\nrouter = \"{}\"\n\n",
                Self::switch_name(s),
                self.switch_ip(s),
                Self::router_name(self.router_of(s))
            ));
        }
        out
    }
}

/// Picks `count` distinct alive hosts at random (a "rack" of random machines).
pub fn random_alive(world: &World, count: usize, rng: &mut impl rand::Rng) -> Vec<u32> {
    let alive: Vec<u32> = world.alive_hosts().collect();
    let mut picked: HashSet<u32> = HashSet::new();
    let count = count.min(alive.len());
    while picked.len() < count {
        let k = rng.random_range(0..alive.len());
        picked.insert(alive[k]);
    }
    let mut v: Vec<u32> = picked.into_iter().collect();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(hosts: u32) -> Shape {
        Shape {
            hosts,
            hosts_per_switch: 10,
            switches_per_router: 2,
            first_id: 1,
            port: 7070,
        }
    }

    #[test]
    fn addresses_round_trip() {
        let w = World::new(shape(1000)).unwrap();
        for i in [0, 9, 10, 999] {
            assert_eq!(w.host_at(w.host_addr(i)), Some(i));
        }
        assert_eq!(w.place(w.switch_ip(3).into()), Some(Place::Switch(3)));
        assert_eq!(w.place(w.router_ip(4).into()), Some(Place::Router(4)));
        assert_eq!(w.place("127.0.0.1".parse().unwrap()), None);
        assert_eq!(w.host_at("127.100.0.1:7071".parse().unwrap()), None);
        assert_eq!(w.switch_by_name("sw7"), Some(7));
        assert_eq!(w.router_by_name("r49"), Some(49));
        assert_eq!(w.router_by_name("r50"), None);
        assert_eq!(w.hosts_of_router(1), 20..40);
    }

    #[test]
    fn switch_and_router_failures_cut_the_right_paths() {
        let mut w = World::new(shape(100)).unwrap();
        // Hosts 0 and 1 share switch 0; 10 is on switch 1 (router 0); 20 on switch 2 (router 1).
        w.set_switch(0, false);
        assert!(!w.reaches_host(0, 1));
        assert!(!w.reaches_cma(0));
        assert!(w.reaches_host(10, 20));
        assert!(!w.answers(10, w.switch_ip(0).into()));
        w.set_switch(0, true);
        w.set_router(0, false);
        assert!(w.reaches_host(0, 1), "same switch needs no router");
        assert!(
            !w.reaches_host(0, 10),
            "switches of one router talk through it"
        );
        assert!(!w.reaches_host(10, 20));
        assert!(!w.reaches_cma(0));
        assert!(w.answers(20, w.router_ip(1).into()));
        assert!(!w.answers(20, w.router_ip(0).into()));
        assert!(w.answers(0, w.switch_ip(0).into()));
        w.set_alive(1, false);
        assert!(!w.answers(0, w.host_ip(1).into()));
    }

    #[test]
    fn topology_toml_declares_every_switch() {
        let w = World::new(shape(25)).unwrap();
        let t = w.cma_topology_toml();
        assert_eq!(t.matches("[[worker.switches]]").count(), 3);
        assert_eq!(t.matches("[[worker.routers]]").count(), 2);
        assert!(t.contains("subnets = [\"127.100.2.0/24\"]\nrouter = \"r1\""));
    }
}
