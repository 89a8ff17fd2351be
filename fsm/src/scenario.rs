//! Scenario text format: write fsm scenarios without Rust.
//!
//! One directive per line; `#` starts a comment. Times are in milliseconds.
//!
//! ```text
//! host 1 switch sw1            # topology: host 1 behind switch sw1 (`switch -` = unknown)
//! host 9 switch sw2 hb 500     # optional ring heartbeat interval in ms
//! switch sw1 router r1         # topology: switch sw1 hangs off router r1
//! world down host 3            # the simulated world: host 3 stops answering probes
//! world down switch sw1        # ... switch sw1 (and everything behind it) is unreachable
//! world down router r1         # ... router r1 and all switches behind it
//! world isolate 2              # host 2 is cut off from everything
//! world cut 2 3                # the path between 2 and 3 is broken (both directions)
//! world silent                 # no probe is ever answered (probe timeouts)
//! world up host 3              # undo `down host` (also `up switch`, `up router`,
//!                              # `unisolate 2`, `uncut 2 3`, `unsilent`)
//! 1000 dead 2 3                # at t=1000 ms host 2 reports HbDead for host 3
//! 1000 late 2 3                # HbLate
//! 1500 alive 2 3               # HbBackAlive
//! 2000 shutdown 3              # HbShutdown from host 3
//! 3000 check 2 4               # Check: host 2 probes host 4 at once (block sweep)
//! 4000 tick                    # Tick{now: 4000 ms}
//! expect dead 3                # a verdict expected, in order of emission (see
//!                              # `VerdictKind`'s Display: `linkfault 2 3`, `isolated 2`,
//!                              # `switchdown sw1 1,2,3`, `routerdown r1 sw1,sw2 1,2`,
//!                              # `falsealarm 3`, `recovered 3`, `left 3`)
//! ```
//!
//! The runner answers every `RequestProbe` at once from the simulated world (unless the
//! prober cannot be reached or the world is silent: then the probe times out), so a
//! scenario only lists reports, ticks and world changes.

use crate::action::{Action, ProbeTarget};
use crate::config::Config;
use crate::engine::Engine;
use crate::event::Event;
use crate::topology::{HostFacts, RouterId, SwitchId};
use proto::HostId;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A scenario line that could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("scenario line {line}: {reason}: {text:?}")]
pub struct ScenarioError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
    /// The offending line.
    pub text: String,
}

/// What a scenario run produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every action in order.
    pub actions: Vec<Action>,
    /// The verdicts rendered like `expect` lines.
    pub verdicts: Vec<String>,
    /// The `expect` lines of the file, in order.
    pub expected: Vec<String>,
    /// Whether suspicions were still open after the last line.
    pub open_at_end: bool,
}

/// The simulated network that answers probes.
#[derive(Debug, Default)]
struct World {
    down_hosts: BTreeSet<HostId>,
    down_switches: BTreeSet<SwitchId>,
    down_routers: BTreeSet<RouterId>,
    isolated: BTreeSet<HostId>,
    cut: BTreeSet<(HostId, HostId)>,
    silent: bool,
}

impl World {
    fn host_up(&self, engine: &Engine, h: HostId) -> bool {
        if self.down_hosts.contains(&h) || self.isolated.contains(&h) {
            return false;
        }
        match engine.topology().switch_of(h) {
            Some(s) => self.switch_up(engine, s),
            None => true,
        }
    }

    fn switch_up(&self, engine: &Engine, s: &SwitchId) -> bool {
        !self.down_switches.contains(s)
            && engine
                .topology()
                .router_of(s)
                .is_none_or(|r| !self.down_routers.contains(r))
    }

    /// `None`: the prober never answers (probe times out).
    fn probe(&self, engine: &Engine, from: HostId, target: &ProbeTarget) -> Option<bool> {
        if self.silent || !self.host_up(engine, from) {
            return None;
        }
        Some(match target {
            ProbeTarget::Host(t) => {
                self.host_up(engine, *t)
                    && !self.cut.contains(&(from, *t))
                    && !self.cut.contains(&(*t, from))
            }
            ProbeTarget::Switch(s) => self.switch_up(engine, s),
            ProbeTarget::Router(r) => !self.down_routers.contains(r),
        })
    }
}

fn host(word: Option<&str>) -> Result<HostId, String> {
    let w = word.ok_or("missing host id")?;
    w.parse::<u64>()
        .map(HostId)
        .map_err(|_| format!("bad host id {w}"))
}

/// Runs a scenario with the default [`Config`].
pub fn run(text: &str) -> Result<Outcome, ScenarioError> {
    run_with(text, Config::default())
}

/// Runs a scenario with `config`.
pub fn run_with(text: &str, config: Config) -> Result<Outcome, ScenarioError> {
    let mut engine = Engine::new(config);
    let mut world = World::default();
    let mut outcome = Outcome::default();
    let mut hb: BTreeMap<HostId, u64> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |reason: String| ScenarioError {
            line: i + 1,
            reason,
            text: raw.to_string(),
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[0] {
            "expect" => outcome.expected.push(words[1..].join(" ")),
            "host" => {
                let h = host(words.get(1).copied()).map_err(err)?;
                if words.get(2) != Some(&"switch") {
                    return Err(err("expected `switch`".into()));
                }
                let switch = match words.get(3) {
                    Some(&"-") => None,
                    Some(s) => Some(SwitchId((*s).to_string())),
                    None => return Err(err("missing switch".into())),
                };
                let hb_us = match (words.get(4), words.get(5)) {
                    (Some(&"hb"), Some(ms)) => {
                        ms.parse::<u64>().map_err(|_| err(format!("bad hb {ms}")))? * 1000
                    }
                    _ => 0,
                };
                hb.insert(h, hb_us);
                let ev = Event::HostFact {
                    host: h,
                    facts: HostFacts {
                        switch,
                        hb_interval_us: hb_us,
                    },
                };
                outcome.actions.extend(engine.handle(ev));
            }
            "switch" => match (words.get(1), words.get(2), words.get(3)) {
                (Some(s), Some(&"router"), Some(r)) => {
                    let ev = Event::SwitchFact {
                        switch: SwitchId((*s).to_string()),
                        router: RouterId((*r).to_string()),
                    };
                    outcome.actions.extend(engine.handle(ev));
                }
                _ => return Err(err("expected `switch NAME router NAME`".into())),
            },
            "world" => world_line(&mut world, &words[1..]).map_err(err)?,
            t => {
                let ms: u64 = t
                    .parse()
                    .map_err(|_| err(format!("unknown directive {t}")))?;
                let at = ms * 1000;
                let ev = match (words.get(1).copied(), words.len()) {
                    (Some("tick"), 2) => Event::Tick { now: at },
                    (Some("shutdown"), 3) => Event::HbShutdown {
                        at,
                        host: host(words.get(2).copied()).map_err(err)?,
                    },
                    (Some("check"), 4) => Event::Check {
                        at,
                        from: host(words.get(2).copied()).map_err(err)?,
                        host: host(words.get(3).copied()).map_err(err)?,
                    },
                    (Some(kind @ ("dead" | "late" | "alive")), 4) => {
                        let reporter = host(words.get(2).copied()).map_err(err)?;
                        let peer = host(words.get(3).copied()).map_err(err)?;
                        match kind {
                            "dead" => Event::HbDead { at, reporter, peer },
                            "late" => Event::HbLate { at, reporter, peer },
                            _ => Event::HbBackAlive { at, reporter, peer },
                        }
                    }
                    _ => {
                        return Err(err(
                            "expected `MS tick|shutdown H|dead|late|alive|check R P`".into(),
                        ))
                    }
                };
                feed(&mut engine, &world, ev, &mut outcome);
            }
        }
    }
    outcome.open_at_end = engine.has_open_suspicions();
    Ok(outcome)
}

/// Feeds one event and answers the probes it (and its answers) request.
fn feed(engine: &mut Engine, world: &World, first: Event, outcome: &mut Outcome) {
    let mut queue = VecDeque::from([first]);
    // Each answer can cause at most a few more probes; the bound only guards against a
    // runaway engine bug turning into an endless test.
    let mut budget = 100_000;
    while let Some(ev) = queue.pop_front() {
        budget -= 1;
        if budget == 0 {
            break;
        }
        let at = ev.time().unwrap_or(0);
        for action in engine.handle(ev) {
            match &action {
                Action::RequestProbe {
                    probe_id,
                    from,
                    target,
                    ..
                } => {
                    if let Some(reachable) = world.probe(engine, *from, target) {
                        queue.push_back(Event::ProbeResult {
                            at,
                            probe_id: *probe_id,
                            reachable,
                        });
                    }
                }
                Action::Verdict { kind, .. } => outcome.verdicts.push(kind.to_string()),
                Action::ClearAlarm { .. } => {}
            }
            outcome.actions.push(action);
        }
    }
}

fn world_line(world: &mut World, words: &[&str]) -> Result<(), String> {
    let name = |i: usize| words.get(i).map(|s| s.to_string()).ok_or("missing name");
    match words.first().copied() {
        Some(op @ ("down" | "up")) => {
            let down = op == "down";
            match words.get(1).copied() {
                Some("host") => toggle(&mut world.down_hosts, host(words.get(2).copied())?, down),
                Some("switch") => toggle(&mut world.down_switches, SwitchId(name(2)?), down),
                Some("router") => toggle(&mut world.down_routers, RouterId(name(2)?), down),
                _ => return Err("expected host|switch|router".into()),
            }
        }
        Some(op @ ("isolate" | "unisolate")) => toggle(
            &mut world.isolated,
            host(words.get(1).copied())?,
            op == "isolate",
        ),
        Some(op @ ("cut" | "uncut")) => {
            let a = host(words.get(1).copied())?;
            let b = host(words.get(2).copied())?;
            toggle(&mut world.cut, (a, b), op == "cut");
        }
        Some("silent") => world.silent = true,
        Some("unsilent") => world.silent = false,
        _ => return Err("unknown world directive".into()),
    }
    Ok(())
}

fn toggle<T: Ord>(set: &mut BTreeSet<T>, item: T, on: bool) {
    if on {
        set.insert(item);
    } else {
        set.remove(&item);
    }
}
