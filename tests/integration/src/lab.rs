//! The network lab (docs/design.md §10): topologies built from Linux network namespaces,
//! veth pairs and bridges, with the real Ringwatch binaries running inside them.
//!
//! - A **host** is a namespace with one interface `eth0` on its switch's subnet.
//! - A **switch** is a namespace holding a bridge `br0` with a management address
//!   (`198.18.<k>.254`, answers ping); each host and the router plug into one of its ports.
//! - A **router** is a namespace with forwarding on, one interface per switch
//!   (`198.18.<k>.1`) and one on the core segment (`198.18.0.<r>`).
//! - The **core** is a bridge namespace joining the routers and the **cma** namespace, where
//!   the CMA nodes (`198.18.0.11..`) and the packet-readers (`198.18.0.20`, `.21`) run.
//!
//! Only 198.18.0.0/15 is used, and only inside the lab's own namespaces: nothing is added
//! to the machine's own network namespace, so labs of tests running in parallel can reuse
//! the same addresses. Every object is named `rwl<tag>-...`; [`Lab::new`] first removes any
//! leftover of an earlier run with the same tag (and kills processes still running in its
//! namespaces), and dropping the [`Lab`] (also during a panic) removes everything.

use crate::procs::{spawn, ProcGuard};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output};

/// Why the lab cannot run here, or `None` when it can (root, `ip`, network namespaces).
/// Checked once per test process.
pub fn unavailable() -> Option<String> {
    static CHECK: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    CHECK.get_or_init(check_lab).clone()
}

fn check_lab() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("the network lab needs root (network namespaces)".into());
    }
    // `ip` builds the lab, `ping` checks it, `nft` emulates loss where the kernel has no
    // netem, `lldpd` announces the switches of the zero-config scenarios. All come with README's set-up command.
    for (tool, args, package) in [
        ("ip", &["-V"][..], "iproute2"),
        ("ping", &["-V"][..], "iputils-ping"),
        ("nft", &["--version"][..], "nftables"),
        ("lldpd", &["-v"][..], "lldpd"),
    ] {
        match Command::new(tool).args(args).output() {
            Ok(o) if o.status.success() => {}
            _ => {
                return Some(format!(
                "the network lab needs `{tool}` (Debian: {package}; see README's set-up command)"
            ))
            }
        }
    }
    let probe = format!("rwlprobe-{}", std::process::id());
    match Command::new("ip").args(["netns", "add", &probe]).output() {
        Ok(o) if o.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).output();
            None
        }
        Ok(o) => Some(format!(
            "cannot create a network namespace: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run ip: {e}")),
    }
}

/// Returns early from a test (with a message) when the lab cannot run, unless
/// `RINGWATCH_LAB_REQUIRED` is set (CI), in which case it fails.
#[macro_export]
macro_rules! require_lab {
    () => {
        if let Some(why) = $crate::lab::unavailable() {
            if std::env::var_os("RINGWATCH_LAB_REQUIRED").is_some() {
                panic!("network lab required (RINGWATCH_LAB_REQUIRED) but unavailable: {why}");
            }
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

/// Moves the calling thread into network namespace `ns` (sockets it opens, and
/// processes it spawns, after this live there; the rest of the process is untouched).
pub fn enter_netns(ns: &str) -> Result<(), String> {
    let file = std::fs::File::open(format!("/var/run/netns/{ns}"))
        .map_err(|e| format!("open netns {ns}: {e}"))?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns {ns}: {e}"))
}

/// Runs `ip ARGS`; an error names the command and its stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = run("ip", args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn run(program: &str, args: &[&str]) -> Result<Output, String> {
    Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))
}

/// Network namespaces whose names start with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(out) = run("ip", &["netns", "list"]) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Kills the processes still running in namespace `ns` (left by an earlier, killed run of
/// the same test) and deletes the namespace, which removes its interfaces and bridges.
fn remove_namespace(ns: &str) {
    if let Ok(out) = run("ip", &["netns", "pids", ns]) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _ = ip(&["netns", "del", ns]);
}

/// A set of namespaces owned by one test, removed on drop.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    /// Both ends of every veth pair: (namespace, interface).
    veth_ends: Vec<(String, String)>,
}

impl Lab {
    /// A lab whose objects are named `rwl<tag>-...` (tag: a few letters unique per test,
    /// so interface-independent names stay short). Removes leftovers with that prefix.
    pub fn new(tag: &str) -> Lab {
        let prefix = format!("rwl{tag}-");
        for ns in namespaces_with_prefix(&prefix) {
            eprintln!("lab: removing leftover namespace {ns}");
            remove_namespace(&ns);
        }
        Lab {
            prefix,
            namespaces: Vec::new(),
            veth_ends: Vec::new(),
        }
    }

    /// The full name of the lab's namespace `short`.
    pub fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    /// Creates namespace `short` with its loopback up; returns its full name.
    pub fn add_ns(&mut self, short: &str) -> Result<String, String> {
        let name = self.ns(short);
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// A veth pair: `a_if` in `a_ns`, `b_if` in `b_ns` (full names), both up.
    pub fn link(&mut self, a_ns: &str, a_if: &str, b_ns: &str, b_if: &str) -> Result<(), String> {
        ip(&[
            "link", "add", a_if, "netns", a_ns, "type", "veth", "peer", "name", b_if, "netns", b_ns,
        ])?;
        self.veth_ends.push((a_ns.to_string(), a_if.to_string()));
        self.veth_ends.push((b_ns.to_string(), b_if.to_string()));
        ip(&["-n", a_ns, "link", "set", "dev", a_if, "up"])?;
        ip(&["-n", b_ns, "link", "set", "dev", b_if, "up"])
    }

    /// Runs `ip -n NS ARGS`.
    pub fn ip_in(&self, ns: &str, args: &[&str]) -> Result<(), String> {
        let mut full = vec!["-n", ns];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs `PROGRAM ARGS` inside namespace `ns` and waits for it.
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> Result<Output, String> {
        let mut full = vec!["netns", "exec", ns, program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Starts `program ARGS` inside namespace `ns` (the returned guard's PID is the
    /// program's own: `ip netns exec` replaces itself with it).
    pub fn spawn(
        &self,
        ns: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> std::io::Result<ProcGuard> {
        let program = program.display().to_string();
        let mut full = vec!["netns", "exec", ns, program.as_str()];
        full.extend_from_slice(args);
        spawn(Path::new("ip"), &full, env, log)
    }

    /// Both ends of every veth pair created, as (namespace, interface).
    pub fn veth_ends(&self) -> &[(String, String)] {
        &self.veth_ends
    }

    /// The lab's namespaces (full names).
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            remove_namespace(ns);
        }
        // Anything created before a failure but not yet recorded.
        for ns in namespaces_with_prefix(&self.prefix) {
            remove_namespace(&ns);
        }
    }
}

/// One switch of a topology: its name and the host ids behind it.
#[derive(Clone, Debug)]
pub struct SwitchSpec {
    pub name: String,
    pub hosts: Vec<u64>,
}

impl SwitchSpec {
    /// A switch named `name` with `hosts` behind it.
    pub fn new(name: &str, hosts: &[u64]) -> SwitchSpec {
        SwitchSpec {
            name: name.into(),
            hosts: hosts.to_vec(),
        }
    }
}

/// One router and its switches.
#[derive(Clone, Debug)]
pub struct RouterSpec {
    pub name: String,
    pub switches: Vec<SwitchSpec>,
}

/// Where a host sits.
#[derive(Clone, Debug)]
pub struct HostPlace {
    pub ns: String,
    pub addr: Ipv4Addr,
    pub switch: String,
    /// The nanoprobe binds the unspecified address (`0.0.0.0:7500`) rather than `addr`,
    /// so it keeps working when the host gets another address ([`Topology::replug_host`]).
    pub bind_any: bool,
}

/// A built topology: routers, switches and hosts, plus the `cma` namespace on the core.
pub struct Topology {
    pub lab: Lab,
    /// Namespace of the CMA nodes and the packet-reader.
    pub cma_ns: String,
    pub hosts: BTreeMap<u64, HostPlace>,
    /// Switch name -> (namespace, subnet index k, router name).
    pub switches: BTreeMap<String, (String, u8, String)>,
    /// Router name -> (namespace, core address).
    pub routers: BTreeMap<String, (String, Ipv4Addr)>,
    /// Loss emulation installed by [`Topology::set_loss`], for the message.
    pub loss_method: Option<&'static str>,
    /// Whether the CMA config declares the switches and routers (true unless a scenario
    /// clears it: then every host is in the flat ring, as nobody said where it sits).
    pub declared: bool,
}

/// Address of the `i`th CMA node (1-based) on the core segment.
pub fn cma_addr(i: u64) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + i as u8)
}

/// Number of packet-reader addresses on the core segment.
pub const READERS: u8 = 2;

/// Address of packet-reader `n` (1-based) on the core segment.
pub fn reader_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 19 + n)
}

impl Topology {
    /// Builds the lab: core bridge, `cma` namespace, routers, switches, hosts.
    pub fn build(tag: &str, routers: &[RouterSpec]) -> Result<Topology, String> {
        let mut lab = Lab::new(tag);
        let core = lab.add_ns("core")?;
        lab.ip_in(&core, &["link", "add", "br0", "type", "bridge"])?;
        lab.ip_in(&core, &["link", "set", "br0", "up"])?;
        let cma_ns = lab.add_ns("cma")?;
        lab.link(&cma_ns, "eth0", &core, "cma")?;
        lab.ip_in(&core, &["link", "set", "cma", "master", "br0"])?;
        lab.ip_in(&cma_ns, &["addr", "add", "198.18.0.10/24", "dev", "eth0"])?;
        for i in 1..=3 {
            let a = format!("{}/24", cma_addr(i));
            lab.ip_in(&cma_ns, &["addr", "add", &a, "dev", "eth0"])?;
        }
        for n in 1..=READERS {
            let reader = format!("{}/24", reader_addr(n));
            lab.ip_in(&cma_ns, &["addr", "add", &reader, "dev", "eth0"])?;
        }

        let mut topo = Topology {
            lab,
            cma_ns,
            hosts: BTreeMap::new(),
            switches: BTreeMap::new(),
            routers: BTreeMap::new(),
            loss_method: None,
            declared: true,
        };
        let mut k: u8 = 0;
        let mut subnets_of: Vec<(Ipv4Addr, Vec<u8>)> = Vec::new();
        for (j, r) in routers.iter().enumerate() {
            let j = u8::try_from(j + 1).map_err(|_| "too many routers")?;
            let rns = topo.lab.add_ns(&r.name)?;
            let core_addr = Ipv4Addr::new(198, 18, 0, j);
            topo.lab.link(&rns, "core", &core, &r.name)?;
            topo.lab
                .ip_in(&core, &["link", "set", &r.name, "master", "br0"])?;
            topo.lab.ip_in(
                &rns,
                &["addr", "add", &format!("{core_addr}/24"), "dev", "core"],
            )?;
            let out = topo
                .lab
                .exec(&rns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
            if !out.status.success() {
                return Err(format!(
                    "enabling forwarding in {rns}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let mut mine = Vec::new();
            for sw in &r.switches {
                k = k.checked_add(1).ok_or("too many switches")?;
                mine.push(k);
                let sns = topo.lab.add_ns(&sw.name)?;
                topo.lab
                    .ip_in(&sns, &["link", "add", "br0", "type", "bridge"])?;
                topo.lab.ip_in(&sns, &["link", "set", "br0", "up"])?;
                let mgmt = format!("198.18.{k}.254/24");
                topo.lab
                    .ip_in(&sns, &["addr", "add", &mgmt, "dev", "br0"])?;
                let rif = format!("sw{k}");
                topo.lab.link(&rns, &rif, &sns, "uplink")?;
                topo.lab
                    .ip_in(&sns, &["link", "set", "uplink", "master", "br0"])?;
                let gw = format!("198.18.{k}.1");
                topo.lab
                    .ip_in(&rns, &["addr", "add", &format!("{gw}/24"), "dev", &rif])?;
                topo.lab
                    .ip_in(&sns, &["route", "add", "default", "via", &gw])?;
                for (i, host) in sw.hosts.iter().enumerate() {
                    let hns = topo.lab.add_ns(&format!("h{host}"))?;
                    let port = format!("p{host}");
                    topo.lab.link(&hns, "eth0", &sns, &port)?;
                    topo.lab
                        .ip_in(&sns, &["link", "set", &port, "master", "br0"])?;
                    let last = u8::try_from(10 + i).map_err(|_| "too many hosts")?;
                    let addr = Ipv4Addr::new(198, 18, k, last);
                    topo.lab
                        .ip_in(&hns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
                    topo.lab
                        .ip_in(&hns, &["route", "add", "default", "via", &gw])?;
                    topo.hosts.insert(
                        *host,
                        HostPlace {
                            ns: hns,
                            addr,
                            switch: sw.name.clone(),
                            bind_any: false,
                        },
                    );
                }
                topo.switches
                    .insert(sw.name.clone(), (sns, k, r.name.clone()));
            }
            subnets_of.push((core_addr, mine));
            topo.routers.insert(r.name.clone(), (rns, core_addr));
        }
        // Routes: the cma namespace reaches every subnet through its router; each router
        // reaches the other routers' subnets through them.
        for (via, subnets) in &subnets_of {
            for k in subnets {
                let net = format!("198.18.{k}.0/24");
                let via = via.to_string();
                topo.lab
                    .ip_in(&topo.cma_ns, &["route", "add", &net, "via", &via])?;
                for (rns, addr) in topo.routers.values() {
                    if addr.to_string() != via {
                        topo.lab.ip_in(rns, &["route", "add", &net, "via", &via])?;
                    }
                }
            }
        }
        Ok(topo)
    }

    /// The `[[worker.switches]]` and `[[worker.routers]]` of the CMA config (none when
    /// the topology is not `declared`).
    pub fn worker_topology_toml(&self) -> String {
        let mut text = String::new();
        if !self.declared {
            return text;
        }
        for (name, (_, k, router)) in &self.switches {
            text.push_str(&format!(
                "\n[[worker.switches]]\nname = \"{name}\"\naddress = \"198.18.{k}.254\"\n\
                 subnets = [\"198.18.{k}.0/24\"]\nrouter = \"{router}\"\n"
            ));
        }
        for (name, (_, addr)) in &self.routers {
            text.push_str(&format!(
                "\n[[worker.routers]]\nname = \"{name}\"\naddress = \"{addr}\"\n"
            ));
        }
        text
    }

    /// The LLDP system name the lab's lldpd announces for `switch` (distinct from the
    /// switch's lab name, so a test sees that the name came from the wire).
    pub fn lldp_name(switch: &str) -> String {
        format!("lldp-{switch}")
    }

    /// Starts `lldpd` (Debian package `lldpd`) in every switch namespace, announcing the
    /// switch on its host-facing ports every second (TTL 4 s) with its system name
    /// ([`Topology::lldp_name`]) and management address
    /// `198.18.<k>.254`. Control sockets, configs and logs go to `dir`. Err when `lldpd`
    /// is missing.
    pub fn start_lldpd(&self, dir: &Path) -> Result<Vec<ProcGuard>, String> {
        let mut procs = Vec::new();
        for (name, (ns, k, _)) in &self.switches {
            let conf = dir.join(format!("lldpd-{name}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "configure system hostname {}\nconfigure lldp tx-interval 1\n",
                    Topology::lldp_name(name)
                ),
            )
            .map_err(|e| format!("writing {}: {e}", conf.display()))?;
            let (sock, conf, mgmt) = (
                dir.join(format!("lldpd-{name}.sock")).display().to_string(),
                conf.display().to_string(),
                format!("198.18.{k}.254"),
            );
            // Every host port (`p<host>`), also one plugged in later
            // ([`Topology::replug_host`]): lldpd follows interfaces as they come.
            let args = ["-d", "-u", &sock, "-O", &conf, "-m", &mgmt, "-I", "p*"];
            let log = dir.join(format!("lldpd-{name}.log"));
            let proc = self
                .lab
                .spawn(ns, Path::new("lldpd"), &args, &[], &log)
                .map_err(|e| format!("starting lldpd in {ns}: {e} (Debian: lldpd)"))?;
            procs.push(proc);
        }
        Ok(procs)
    }

    /// Gives each router one MAC address on all its switch-facing interfaces
    /// (`02:52:57:00:00:<j>` for the j-th router), as routers commonly have: hosts behind
    /// different switches of one router then see gateways with one MAC, which is how the
    /// zero-config CMA tells that their gateways are one router.
    pub fn share_router_macs(&self) -> Result<(), String> {
        for (j, (router, (rns, _))) in self.routers.iter().enumerate() {
            let mac = format!("02:52:57:00:00:{:02x}", j + 1);
            for (_, k, r) in self.switches.values() {
                if r == router {
                    self.lab.ip_in(
                        rns,
                        &["link", "set", "dev", &format!("sw{k}"), "address", &mac],
                    )?;
                }
            }
        }
        Ok(())
    }

    /// The address a router is known by when nothing is declared: the lowest gateway
    /// address of its switches (the CMA groups gateways by the MAC the router shares).
    pub fn router_gateway(&self, router: &str) -> Option<Ipv4Addr> {
        self.switches
            .iter()
            .filter(|(_, (_, _, r))| r == router)
            .filter_map(|(s, _)| self.gateway_of(s))
            .min()
    }

    /// The gateway address hosts behind `switch` use (`198.18.<k>.1`).
    pub fn gateway_of(&self, switch: &str) -> Option<Ipv4Addr> {
        self.switches
            .get(switch)
            .map(|(_, k, _)| Ipv4Addr::new(198, 18, *k, 1))
    }

    /// The host ids behind `switch`.
    pub fn hosts_on(&self, switch: &str) -> Vec<u64> {
        self.hosts
            .iter()
            .filter(|(_, p)| p.switch == switch)
            .map(|(h, _)| *h)
            .collect()
    }

    fn switch_ns(&self, switch: &str) -> Result<&str, String> {
        self.switches
            .get(switch)
            .map(|(ns, _, _)| ns.as_str())
            .ok_or_else(|| format!("no switch {switch}"))
    }

    /// Re-plugs `host` into switch `to`: its veth pair is deleted and created again
    /// between the host (`eth0`, a new interface) and a new port `p<host>` of `to`'s
    /// bridge, and the host gets an address in `to`'s subnet (`198.18.<k>.<100 + host %
    /// 100>`) and `to`'s gateway as its default route, as DHCP would give it. Returns the
    /// new address.
    pub fn replug_host(&mut self, host: u64, to: &str) -> Result<Ipv4Addr, String> {
        let place = self.hosts.get(&host).ok_or("no such host")?.clone();
        let (to_ns, k, _) = self
            .switches
            .get(to)
            .cloned()
            .ok_or_else(|| format!("no switch {to}"))?;
        let last = u8::try_from(100 + host % 100).map_err(|_| "host id")?;
        let addr = Ipv4Addr::new(198, 18, k, last);
        let port = format!("p{host}");
        // Deleting one end deletes the pair (and the old switch's port with it).
        self.lab.ip_in(&place.ns, &["link", "del", "eth0"])?;
        self.lab.link(&place.ns, "eth0", &to_ns, &port)?;
        self.lab
            .ip_in(&to_ns, &["link", "set", &port, "master", "br0"])?;
        self.lab.ip_in(
            &place.ns,
            &["addr", "add", &format!("{addr}/24"), "dev", "eth0"],
        )?;
        let gw = format!("198.18.{k}.1");
        self.lab
            .ip_in(&place.ns, &["route", "add", "default", "via", &gw])?;
        if let Some(p) = self.hosts.get_mut(&host) {
            p.addr = addr;
            p.switch = to.to_string();
        }
        Ok(addr)
    }

    /// Cuts (or restores) a host's link: its switch port goes down (up).
    pub fn set_host_link(&self, host: u64, up: bool) -> Result<(), String> {
        let place = self.hosts.get(&host).ok_or("no such host")?;
        let sns = self.switch_ns(&place.switch)?;
        let port = format!("p{host}");
        let state = if up { "up" } else { "down" };
        self.lab.ip_in(sns, &["link", "set", &port, state])
    }

    /// Takes a switch down (bridge and every port down) or brings it back.
    pub fn set_switch(&self, switch: &str, up: bool) -> Result<(), String> {
        let sns = self.switch_ns(switch)?.to_string();
        let state = if up { "up" } else { "down" };
        let mut ports: Vec<String> = self
            .hosts_on(switch)
            .iter()
            .map(|h| format!("p{h}"))
            .collect();
        ports.push("uplink".into());
        ports.push("br0".into());
        for port in ports {
            self.lab.ip_in(&sns, &["link", "set", &port, state])?;
        }
        Ok(())
    }

    /// Takes a router down (every interface down) or brings it back (routes on its
    /// interfaces come back with their addresses; static routes are re-added).
    pub fn set_router(&self, router: &str, up: bool) -> Result<(), String> {
        let (rns, _) = self.routers.get(router).ok_or("no such router")?;
        let state = if up { "up" } else { "down" };
        let mut ifaces = vec!["core".to_string()];
        for (_, k, r) in self.switches.values() {
            if r == router {
                ifaces.push(format!("sw{k}"));
            }
        }
        for iface in ifaces {
            self.lab.ip_in(rns, &["link", "set", &iface, state])?;
        }
        Ok(())
    }

    /// L3 namespaces (hosts, routers, cma): where the nftables loss is applied.
    fn l3_namespaces(&self) -> Vec<String> {
        let mut all: Vec<String> = self.hosts.values().map(|p| p.ns.clone()).collect();
        all.extend(self.routers.values().map(|(ns, _)| ns.clone()));
        all.push(self.cma_ns.clone());
        all
    }

    /// Drops `percent`% of the packets leaving each end of every link, so each direction
    /// of each link loses `percent`%. Uses netem on every veth end when the kernel has
    /// it (`sch_netem`), else nftables `numgen random` drops on the way in and out of every
    /// L3 namespace (hosts, routers, cma), which drops the same share per link. Returns
    /// the method used; Err when neither works here.
    pub fn set_loss(&mut self, percent: u32) -> Result<&'static str, String> {
        let loss = format!("{percent}%");
        let netem = |ns: &str, iface: &str| {
            self.lab
                .exec(
                    ns,
                    "tc",
                    &[
                        "qdisc", "replace", "dev", iface, "root", "netem", "loss", &loss,
                    ],
                )
                .is_ok_and(|o| o.status.success())
        };
        let ends = self.lab.veth_ends().to_vec();
        if ends.first().is_some_and(|(ns, iface)| netem(ns, iface)) {
            for (ns, iface) in &ends {
                if !netem(ns, iface) {
                    return Err(format!("netem on {ns}/{iface} failed"));
                }
            }
            self.loss_method = Some("netem");
            return Ok("netem");
        }
        let ruleset = format!(
            "table inet rwloss {{\n chain in {{ type filter hook prerouting priority -300; \
             numgen random mod 100 < {percent} drop; }}\n chain out {{ type filter hook \
             postrouting priority 300; numgen random mod 100 < {percent} drop; }}\n}}\n"
        );
        let rules = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        std::fs::write(rules.path(), ruleset).map_err(|e| e.to_string())?;
        let path = rules.path().display().to_string();
        for ns in self.l3_namespaces() {
            let out = self.lab.exec(&ns, "nft", &["-f", &path])?;
            if !out.status.success() {
                return Err(format!(
                    "neither netem nor nftables can drop packets here ({ns}: {})",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        self.loss_method = Some("nftables numgen");
        Ok("nftables numgen")
    }

    /// Removes the loss set by [`Topology::set_loss`].
    pub fn clear_loss(&mut self) {
        match self.loss_method.take() {
            Some("netem") => {
                for (ns, iface) in self.lab.veth_ends() {
                    let _ = self
                        .lab
                        .exec(ns, "tc", &["qdisc", "del", "dev", iface, "root"]);
                }
            }
            Some(_) => {
                for ns in self.l3_namespaces() {
                    let _ = self
                        .lab
                        .exec(&ns, "nft", &["delete", "table", "inet", "rwloss"]);
                }
            }
            None => {}
        }
    }
}

impl Topology {
    /// The lab most scenarios use: router r1 with switches sw1 (hosts 11-14) and sw2
    /// (hosts 21-24); panics if it cannot be built.
    pub fn two_switches(tag: &str) -> Topology {
        Topology::build(
            tag,
            &[RouterSpec {
                name: "r1".into(),
                switches: vec![
                    SwitchSpec::new("sw1", &[11, 12, 13, 14]),
                    SwitchSpec::new("sw2", &[21, 22, 23, 24]),
                ],
            }],
        )
        .unwrap_or_else(|e| panic!("building the lab: {e}"))
    }
}
