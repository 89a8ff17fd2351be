//! Issue 29 item 4: Ringwatch and Serf side by side in the network lab (`bench/vs-serf.sh`,
//! docs/lab.md "Side by side with Serf").
//!
//! The same two-switch topology (router r1; sw1 with hosts 11-14, sw2 with hosts 21-24)
//! is built afresh for every trial and runs either Ringwatch (3 `cma`, a packet-reader and
//! a nanoprobe per host: [`Ringwatch::start`]) or one Debian `serf` agent per host
//! namespace, bound to the host's 198.18 address, all joined (`-profile=lan` or
//! `-profile=local`). The same faults are injected into each, several times:
//!
//! - agent kill: SIGKILL of host 14's agent (nanoprobe or serf agent) only;
//! - host kill: host 23's `eth0` down in its namespace, then its agent SIGKILLed;
//! - switch down: `Topology::set_switch("sw1", false)`;
//! - 10% loss at both ends of every link ([`Topology::set_loss`]) for 60 s.
//!
//! Alarms: for Ringwatch the rows of `cmactl --json failures --all` (time of the first is
//! its `at_us`); for Serf the lines a `member-failed` event handler appends (one per
//! failed member, stamped with the wall clock when the handler runs). Serf's agents log
//! `EventMemberFailed` when memberlist declares a member failed, before the agent's event
//! coalescing runs the handler; the first such log line (stamped when this test sees it,
//! polled every 50 ms) is printed too.
//!
//! Prints a table; fails only when the harness fails (a cluster that does not form, a
//! fault that cannot be injected), never on the figures. `#[ignore]`d: it takes about
//! half an hour. Knobs: `VS_SERF_REPS` (3), `VS_SERF_LOSS_SECS` (60), `VS_SERF_FAULTS`
//! (comma-separated subset of `agent,host,switch,loss`), `VS_SERF_SYSTEMS` (subset of
//! `ringwatch,lan,local`).

use integration::cluster::CmaCluster;
use integration::lab::Topology;
use integration::labrun::{now_us, Ringwatch};
use integration::procs::{wait_until, ProcGuard};
use integration::require_lab;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Host whose agent is killed.
const AGENT_VICTIM: u64 = 14;
/// Host killed (interface down, agent killed).
const HOST_VICTIM: u64 = 23;
/// Switch taken down.
const SWITCH: &str = "sw1";
/// A fault's alarms are counted until MIN_WATCH after the fault and QUIET after the last
/// new alarm, MAX_WATCH at most (for the loss: until QUIET after the loss is removed); no
/// alarm within FIRST_DEADLINE of the fault ends the trial with none.
const MIN_WATCH: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_secs(10);
const MAX_WATCH: Duration = Duration::from_secs(90);
const FIRST_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    AgentKill,
    HostKill,
    SwitchDown,
    Loss,
}

impl Fault {
    const ALL: [Fault; 4] = [
        Fault::AgentKill,
        Fault::HostKill,
        Fault::SwitchDown,
        Fault::Loss,
    ];

    fn key(self) -> &'static str {
        match self {
            Fault::AgentKill => "agent",
            Fault::HostKill => "host",
            Fault::SwitchDown => "switch",
            Fault::Loss => "loss",
        }
    }

    fn describe(self, loss_secs: u64) -> String {
        match self {
            Fault::AgentKill => format!("agent kill (h{AGENT_VICTIM})"),
            Fault::HostKill => format!("host kill (h{HOST_VICTIM})"),
            Fault::SwitchDown => format!("switch down ({SWITCH}, 4 hosts)"),
            Fault::Loss => format!("10% loss, {loss_secs} s"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum System {
    Ringwatch,
    SerfLan,
    SerfLocal,
}

impl System {
    const ALL: [System; 3] = [System::Ringwatch, System::SerfLan, System::SerfLocal];

    fn key(self) -> &'static str {
        match self {
            System::Ringwatch => "ringwatch",
            System::SerfLan => "lan",
            System::SerfLocal => "local",
        }
    }

    fn name(self) -> &'static str {
        match self {
            System::Ringwatch => "Ringwatch",
            System::SerfLan => "Serf lan",
            System::SerfLocal => "Serf local",
        }
    }
}

/// One alarm: when (µs since the epoch) and what (verdict kind and subject, or the
/// observer and the member it declared failed).
#[derive(Clone, Debug)]
struct Alarm {
    at_us: u64,
    what: String,
}

/// What one trial measured.
#[derive(Clone, Debug, Default)]
struct Outcome {
    /// Seconds from the fault to the first alarm (None: no alarm).
    first_s: Option<f64>,
    alarms: usize,
    /// Ringwatch: the verdict kinds; Serf: nothing.
    kinds: Vec<String>,
    /// Serf only: seconds from the fault to the first `EventMemberFailed` in an agent log.
    logged_s: Option<f64>,
    /// Serf switch down: alarm lines written by the agents behind the dead switch (cut
    /// off themselves, so nothing could deliver them).
    cut_off: usize,
}

/// A system under test in its lab.
trait Side {
    fn topo(&self) -> &Topology;
    fn topo_mut(&mut self) -> &mut Topology;
    /// SIGKILLs `host`'s agent.
    fn kill_agent(&mut self, host: u64);
    /// Every alarm so far.
    fn alarms(&self) -> Vec<Alarm>;
    /// Called every poll (50 ms at most apart while watching).
    fn poll(&mut self) {}
    /// The first agent-log detection at or after `since_us` (Serf only).
    fn logged_since(&self, _since_us: u64) -> Option<u64> {
        None
    }
    /// How often [`Side::alarms`] is worth asking.
    fn alarm_period(&self) -> Duration;
}

impl Side for Ringwatch {
    fn topo(&self) -> &Topology {
        &self.topo
    }
    fn topo_mut(&mut self) -> &mut Topology {
        &mut self.topo
    }
    fn kill_agent(&mut self, host: u64) {
        // The inherent method: the nanoprobe alone (its host stays up).
        Ringwatch::kill_agent(self, host);
    }
    fn alarms(&self) -> Vec<Alarm> {
        self.failures()
            .iter()
            .map(|f| Alarm {
                at_us: f["at_us"].as_u64().unwrap_or(0),
                what: format!(
                    "{} {}",
                    f["kind"].as_str().unwrap_or("?"),
                    f["subject"].as_str().unwrap_or("?")
                ),
            })
            .collect()
    }
    fn alarm_period(&self) -> Duration {
        Duration::from_millis(500)
    }
}

/// One serf agent per host namespace. Fields drop in order: the agents (SIGKILLed by PID)
/// before their scratch directory and the namespaces.
struct SerfLab {
    agents: BTreeMap<u64, Option<ProcGuard>>,
    /// Log file -> `EventMemberFailed` lines seen so far, and when each was first seen.
    logged: BTreeMap<PathBuf, Vec<u64>>,
    dir: tempfile::TempDir,
    topo: Topology,
}

/// The `member-failed` handler: one line per failed member, `<µs> <observer> <member>`,
/// stamped when serf runs it. Serf runs it with `/bin/sh -c`, the alarm file as `$1`.
const HANDLER: &str = "#!/bin/sh\n\
# Serf member-failed handler (tests/integration/tests/vs_serf.rs)\n\
now=$(date +%s%6N)\n\
while read -r name rest; do\n\
  printf '%s %s %s\\n' \"$now\" \"$SERF_SELF_NAME\" \"$name\" >> \"$1\"\n\
done\n";

impl SerfLab {
    fn start(topo: Topology, profile: &str) -> SerfLab {
        let dir = tempfile::tempdir().expect("tempdir");
        let handler = dir.path().join("member-failed.sh");
        std::fs::write(&handler, HANDLER).expect("handler");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o755))
                .expect("chmod handler");
        }
        let alarms = dir.path().join("alarms.log");
        std::fs::write(&alarms, "").expect("alarm file");
        let mut lab = SerfLab {
            agents: BTreeMap::new(),
            logged: BTreeMap::new(),
            dir,
            topo,
        };
        let seed = lab
            .topo
            .hosts
            .values()
            .next()
            .map(|p| format!("{}:7946", p.addr))
            .expect("a host");
        let on_failed = format!("member-failed={} {}", handler.display(), alarms.display());
        for (h, place) in &lab.topo.hosts {
            let node = format!("h{h}");
            let bind = format!("{}:7946", place.addr);
            let mut args = vec![
                "agent",
                "-node",
                &node,
                "-bind",
                &bind,
                "-rpc-addr",
                "127.0.0.1:7373",
                "-profile",
                profile,
                "-log-level",
                "info",
                "-event-handler",
                &on_failed,
            ];
            if bind != seed {
                args.extend_from_slice(&["-retry-join", &seed, "-retry-interval", "1s"]);
            }
            let log = lab.dir.path().join(format!("serf-{node}.log"));
            let agent = lab
                .topo
                .lab
                .spawn(&place.ns, Path::new("serf"), &args, &[], &log)
                .unwrap_or_else(|e| panic!("starting serf in {}: {e} (Debian: serf)", place.ns));
            lab.agents.insert(*h, Some(agent));
            lab.logged.insert(log, Vec::new());
        }
        let n = lab.topo.hosts.len();
        let joined = wait_until(Duration::from_secs(60), || {
            lab.topo
                .hosts
                .keys()
                .all(|h| lab.alive_seen_by(*h) == Some(n))
        });
        assert!(
            joined,
            "serf agents did not all join ({profile}): {:?}\n{}",
            lab.topo
                .hosts
                .keys()
                .map(|h| (*h, lab.alive_seen_by(*h)))
                .collect::<Vec<_>>(),
            lab.logs_tail()
        );
        lab
    }

    /// How many members `host`'s agent sees alive (`serf members -status alive`).
    fn alive_seen_by(&self, host: u64) -> Option<usize> {
        let ns = &self.topo.hosts.get(&host)?.ns;
        let out = self
            .topo
            .lab
            .exec(
                ns,
                "serf",
                &["members", "-rpc-addr", "127.0.0.1:7373", "-status", "alive"],
            )
            .ok()?;
        if !out.status.success() {
            return None;
        }
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count(),
        )
    }

    fn logs_tail(&self) -> String {
        let mut text = String::new();
        for f in self.logged.keys() {
            let body = std::fs::read_to_string(f).unwrap_or_default();
            let lines: Vec<&str> = body.lines().rev().take(10).collect();
            text.push_str(&format!("---- {} ----\n", f.display()));
            for l in lines.iter().rev() {
                text.push_str(l);
                text.push('\n');
            }
        }
        text
    }
}

impl Side for SerfLab {
    fn topo(&self) -> &Topology {
        &self.topo
    }
    fn topo_mut(&mut self) -> &mut Topology {
        &mut self.topo
    }
    fn kill_agent(&mut self, host: u64) {
        if let Some(mut a) = self.agents.get_mut(&host).and_then(Option::take) {
            a.kill();
        }
    }
    fn alarms(&self) -> Vec<Alarm> {
        let body = std::fs::read_to_string(self.dir.path().join("alarms.log")).unwrap_or_default();
        body.lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let at_us = it.next()?.parse().ok()?;
                let observer = it.next()?;
                let member = it.next()?;
                Some(Alarm {
                    at_us,
                    what: format!("{observer}: {member} failed"),
                })
            })
            .collect()
    }
    fn poll(&mut self) {
        let now = now_us();
        for (file, seen) in self.logged.iter_mut() {
            let body = std::fs::read_to_string(file).unwrap_or_default();
            let n = body.matches("EventMemberFailed").count();
            while seen.len() < n {
                seen.push(now);
            }
        }
    }
    fn logged_since(&self, since_us: u64) -> Option<u64> {
        self.logged
            .values()
            .flatten()
            .filter(|t| **t >= since_us)
            .min()
            .copied()
    }
    fn alarm_period(&self) -> Duration {
        Duration::from_millis(50)
    }
}

fn two_switch_topology() -> Topology {
    Topology::two_switches("vs")
}

/// Injects `fault`, watches the alarms and removes what needs removing (the loss); the
/// cluster is not reused.
fn trial(side: &mut dyn Side, fault: Fault, loss_secs: u64) -> Outcome {
    let before = side.alarms().len();
    if before > 0 {
        println!("vs-serf:   note: {before} alarm(s) before the fault (not counted)");
    }
    let at = now_us();
    match fault {
        Fault::AgentKill => side.kill_agent(AGENT_VICTIM),
        Fault::HostKill => {
            let ns = side.topo().hosts[&HOST_VICTIM].ns.clone();
            side.topo()
                .lab
                .ip_in(&ns, &["link", "set", "eth0", "down"])
                .unwrap_or_else(|e| panic!("host {HOST_VICTIM} down: {e}"));
            side.kill_agent(HOST_VICTIM);
        }
        Fault::SwitchDown => side
            .topo()
            .set_switch(SWITCH, false)
            .unwrap_or_else(|e| panic!("switch down: {e}")),
        Fault::Loss => {
            let method = side
                .topo_mut()
                .set_loss(10)
                .unwrap_or_else(|e| panic!("cannot emulate loss: {e}"));
            println!("vs-serf:   10% loss on every link ({method}) for {loss_secs} s");
        }
    }
    let start = Instant::now();
    let loss_for = Duration::from_secs(if fault == Fault::Loss { loss_secs } else { 0 });
    let mut loss_on = fault == Fault::Loss;
    let mut last_ask = None::<Instant>;
    // When the number of alarms since the fault last grew (None: no alarm yet).
    let (mut seen, mut last_new) = (0, None::<Instant>);
    loop {
        side.poll();
        let due = match last_ask {
            Some(t) => t.elapsed() >= side.alarm_period(),
            None => true,
        };
        if due {
            let n = side.alarms().iter().filter(|a| a.at_us >= at).count();
            last_ask = Some(Instant::now());
            if n > seen {
                (seen, last_new) = (n, Some(Instant::now()));
            }
        }
        let elapsed = start.elapsed();
        if loss_on && elapsed >= loss_for {
            side.topo_mut().clear_loss();
            loss_on = false;
        }
        let done = if fault == Fault::Loss {
            elapsed >= loss_for + QUIET
        } else {
            match last_new {
                Some(t) => (elapsed >= MIN_WATCH && t.elapsed() >= QUIET) || elapsed >= MAX_WATCH,
                None => elapsed >= FIRST_DEADLINE,
            }
        };
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if loss_on {
        side.topo_mut().clear_loss();
    }
    let alarms = side.alarms();
    let counted: Vec<&Alarm> = alarms.iter().filter(|a| a.at_us >= at).collect();
    let first = counted.iter().map(|a| a.at_us).min();
    let cut_off = if fault == Fault::SwitchDown {
        let behind: Vec<String> = side
            .topo()
            .hosts_on(SWITCH)
            .iter()
            .map(|h| format!("h{h}: "))
            .collect();
        counted
            .iter()
            .filter(|a| behind.iter().any(|b| a.what.starts_with(b.as_str())))
            .count()
    } else {
        0
    };
    let mut kinds: Vec<String> = counted
        .iter()
        .map(|a| a.what.split(' ').next().unwrap_or("").to_string())
        .collect();
    kinds.sort();
    kinds.dedup();
    for a in counted.iter().take(12) {
        println!(
            "vs-serf:     +{:.2} s {}",
            a.at_us.saturating_sub(at) as f64 / 1e6,
            a.what
        );
    }
    if counted.len() > 12 {
        println!("vs-serf:     ... {} more", counted.len() - 12);
    }
    Outcome {
        first_s: first.map(|f| f.saturating_sub(at) as f64 / 1e6),
        alarms: counted.len(),
        kinds,
        logged_s: side
            .logged_since(at)
            .map(|t| t.saturating_sub(at) as f64 / 1e6),
        cut_off,
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn selected<T: Copy>(all: &[T], var: &str, key: impl Fn(T) -> &'static str) -> Vec<T> {
    match std::env::var(var) {
        Ok(list) if !list.trim().is_empty() => {
            let want: Vec<&str> = list.split(',').map(str::trim).collect();
            all.iter()
                .copied()
                .filter(|x| want.contains(&key(*x)))
                .collect()
        }
        _ => all.to_vec(),
    }
}

/// `first alarm` cell: median over the repetitions with an alarm, and how many had none.
fn time_cell(outs: &[Outcome], pick: impl Fn(&Outcome) -> Option<f64>) -> String {
    if outs.is_empty() {
        return "-".to_string();
    }
    let times: Vec<f64> = outs.iter().filter_map(&pick).collect();
    let none = outs.len() - times.len();
    match median(times) {
        None => "none".to_string(),
        Some(m) if none == 0 => format!("{m:.2} s"),
        Some(m) => format!("{m:.2} s ({none}x none)"),
    }
}

fn count_cell(outs: &[Outcome]) -> String {
    if outs.is_empty() {
        return "-".to_string();
    }
    let counts: Vec<f64> = outs.iter().map(|o| o.alarms as f64).collect();
    let (lo, hi) = counts
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), c| (lo.min(*c), hi.max(*c)));
    let m = median(counts).unwrap_or(0.0);
    if lo == hi {
        format!("{m}")
    } else {
        format!("{m} ({lo}-{hi})")
    }
}

fn ratio(serf: Option<f64>, rw: Option<f64>) -> String {
    match (serf, rw) {
        (Some(s), Some(r)) if r > 0.0 => format!("{:.1}x", s / r),
        (Some(s), Some(_)) if s > 0.0 => "inf".to_string(),
        _ => "-".to_string(),
    }
}

#[test]
#[ignore = "bench: about 30 minutes; run with bench/vs-serf.sh"]
fn ringwatch_and_serf_side_by_side() {
    require_lab!();
    match Command::new("serf").arg("version").output() {
        Ok(o) if o.status.success() => {
            let v = String::from_utf8_lossy(&o.stdout);
            println!("vs-serf: {}", v.lines().next().unwrap_or("serf"));
        }
        _ => panic!("serf not found: apt-get install serf (bench/vs-serf.sh does it)"),
    }
    let reps = env_u64("VS_SERF_REPS", 3).max(1);
    let loss_secs = env_u64("VS_SERF_LOSS_SECS", 60);
    let faults = selected(&Fault::ALL, "VS_SERF_FAULTS", Fault::key);
    let systems = selected(&System::ALL, "VS_SERF_SYSTEMS", System::key);
    let started = Instant::now();
    let mut results: BTreeMap<(Fault, System), Vec<Outcome>> = BTreeMap::new();
    for fault in &faults {
        for rep in 1..=reps {
            for system in &systems {
                println!(
                    "vs-serf: {} / {} / repetition {rep} of {reps}",
                    fault.describe(loss_secs),
                    system.name()
                );
                let topo = two_switch_topology();
                let out = match system {
                    System::Ringwatch => trial(&mut Ringwatch::start(topo), *fault, loss_secs),
                    System::SerfLan => trial(&mut SerfLab::start(topo, "lan"), *fault, loss_secs),
                    System::SerfLocal => {
                        trial(&mut SerfLab::start(topo, "local"), *fault, loss_secs)
                    }
                };
                println!(
                    "vs-serf:   -> first alarm {}, {} alarm(s){}{}",
                    out.first_s
                        .map_or("none".to_string(), |s| format!("{s:.2} s")),
                    out.alarms,
                    if out.kinds.is_empty() || *system != System::Ringwatch {
                        String::new()
                    } else {
                        format!(", kinds {}", out.kinds.join(","))
                    },
                    out.logged_s.map_or(String::new(), |s| format!(
                        ", first EventMemberFailed logged {s:.2} s"
                    ))
                );
                if out.cut_off > 0 {
                    println!(
                        "vs-serf:   ({} of the lines from agents behind {SWITCH}, cut off)",
                        out.cut_off
                    );
                }
                results.entry((*fault, *system)).or_default().push(out);
            }
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    println!();
    println!(
        "vs-serf: Ringwatch vs Serf, two-switch lab (r1; sw1: 11-14, sw2: 21-24), {reps} \
         repetition(s) per fault, fresh cluster per repetition, {minutes:.1} min"
    );
    println!(
        "vs-serf: first alarm = median over repetitions (fault -> Ringwatch verdict at_us / \
         Serf member-failed handler line); alarms = median lines per repetition (range)"
    );
    println!(
        "vs-serf: Serf logged = first EventMemberFailed in an agent log (before the handler's \
         event coalescing)"
    );
    let empty = Vec::new();
    let get = |f: Fault, s: System| results.get(&(f, s)).unwrap_or(&empty);
    let header = format!(
        "| {:<26} | {:<22} | {:<9} | {:<22} | {:<10} | {:<10} | {:<22} | {:<10} | {:<10} | {:<21} | {:<21} |",
        "fault",
        "Ringwatch first (kind)",
        "RW alarms",
        "Serf lan first",
        "lan logged",
        "lan alarms",
        "Serf local first",
        "loc logged",
        "loc alarms",
        "lan/RW time, alarms",
        "local/RW time, alarms"
    );
    println!("{header}");
    println!(
        "|{}|",
        header[1..header.len() - 1]
            .split('|')
            .map(|c| "-".repeat(c.len()))
            .collect::<Vec<_>>()
            .join("|")
    );
    for fault in &faults {
        let rw = get(*fault, System::Ringwatch);
        let lan = get(*fault, System::SerfLan);
        let local = get(*fault, System::SerfLocal);
        let mut kinds: Vec<String> = rw.iter().flat_map(|o| o.kinds.clone()).collect();
        kinds.sort();
        kinds.dedup();
        let rw_first = format!(
            "{}{}",
            time_cell(rw, |o| o.first_s),
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(","))
            }
        );
        let med = |outs: &[Outcome]| median(outs.iter().filter_map(|o| o.first_s).collect());
        let med_n = |outs: &[Outcome]| {
            if outs.is_empty() {
                None
            } else {
                median(outs.iter().map(|o| o.alarms as f64).collect())
            }
        };
        let ratios = |serf: &[Outcome]| {
            format!(
                "{}, {}",
                ratio(med(serf), med(rw)),
                ratio(med_n(serf), med_n(rw))
            )
        };
        println!(
            "| {:<26} | {:<22} | {:<9} | {:<22} | {:<10} | {:<10} | {:<22} | {:<10} | {:<10} | {:<21} | {:<21} |",
            fault.describe(loss_secs),
            rw_first,
            count_cell(rw),
            time_cell(lan, |o| o.first_s),
            time_cell(lan, |o| o.logged_s),
            count_cell(lan),
            time_cell(local, |o| o.first_s),
            time_cell(local, |o| o.logged_s),
            count_cell(local),
            ratios(lan),
            ratios(local),
        );
    }
    for system in [System::SerfLan, System::SerfLocal] {
        let outs = get(Fault::SwitchDown, system);
        if outs.iter().any(|o| o.cut_off > 0) {
            let cut: Vec<f64> = outs.iter().map(|o| o.cut_off as f64).collect();
            println!(
                "vs-serf: {} switch down: median {} of the alarm lines per repetition came from \
                 the 4 agents behind {SWITCH} (cut off themselves)",
                system.name(),
                median(cut).unwrap_or(0.0)
            );
        }
    }
}
