//! Fault commands: one text line each, read from stdin by the binary and used by the
//! built-in scenarios, so a benchmark script and a scenario do exactly the same thing.
//!
//! | line | effect |
//! |------|--------|
//! | `kill ID...` | these hosts die silently (power loss) |
//! | `kill-random PCT` | PCT % of the live hosts, picked at random, die (a "rack" of random machines) |
//! | `kill-block PCT [FIRST_ID]` | PCT % of all hosts with consecutive ids die, from FIRST_ID (default: the middle of the fleet) |
//! | `switch-down NAME` / `switch-up NAME` | a declared switch fails / comes back |
//! | `router-down NAME` / `router-up NAME` | a router fails / comes back |
//! | `stop ID...` | graceful stop (`leaving` heartbeats, `HbShutdown`) |
//! | `restart ID...` | these hosts restart (new session, `Startup`) |
//! | `restart-all` | every host restarts at once (power comes back: the thundering herd) |
//! | `revive` | dead hosts restart, every switch and router comes back |
//! | `status` | print the counters |
//! | `quit` | exit |

use crate::engine::{Output, Sim};
use crate::world::{random_alive, Fault, World};
use std::time::Instant;

/// A parsed command line.
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    /// Kill these host ids.
    Kill(Vec<u64>),
    /// Kill this percentage of the live hosts at random.
    KillRandom(f64),
    /// Kill this percentage of all hosts, consecutive ids from the given one.
    KillBlock(f64, Option<u64>),
    /// A switch fails.
    SwitchDown(String),
    /// A switch comes back.
    SwitchUp(String),
    /// A router fails.
    RouterDown(String),
    /// A router comes back.
    RouterUp(String),
    /// Graceful stop.
    Stop(Vec<u64>),
    /// Restart these hosts.
    Restart(Vec<u64>),
    /// Restart every host at once.
    RestartAll,
    /// Restart dead hosts, bring every switch and router back.
    Revive,
    /// Print the counters.
    Status,
    /// Exit.
    Quit,
}

/// A line that is not a command.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    /// Unknown verb.
    #[error("unknown command {0:?}")]
    Unknown(String),
    /// Bad or missing argument.
    #[error("{0}: bad or missing argument")]
    Argument(&'static str),
    /// A switch, router or host that does not exist.
    #[error("no such {0}: {1}")]
    NoSuch(&'static str, String),
}

fn ids(verb: &'static str, args: &[&str]) -> Result<Vec<u64>, ControlError> {
    if args.is_empty() {
        return Err(ControlError::Argument(verb));
    }
    args.iter()
        .map(|a| a.parse().map_err(|_| ControlError::Argument(verb)))
        .collect()
}

fn percent(verb: &'static str, arg: Option<&&str>) -> Result<f64, ControlError> {
    let p: f64 = arg
        .and_then(|a| a.parse().ok())
        .ok_or(ControlError::Argument(verb))?;
    if !(0.0..=100.0).contains(&p) {
        return Err(ControlError::Argument(verb));
    }
    Ok(p)
}

fn name(verb: &'static str, args: &[&str]) -> Result<String, ControlError> {
    args.first()
        .map(|s| s.to_string())
        .ok_or(ControlError::Argument(verb))
}

/// Parses one line.
pub fn parse(line: &str) -> Result<Control, ControlError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((verb, args)) = words.split_first() else {
        return Err(ControlError::Unknown(String::new()));
    };
    Ok(match *verb {
        "kill" => Control::Kill(ids("kill", args)?),
        "kill-random" => Control::KillRandom(percent("kill-random", args.first())?),
        "kill-block" => Control::KillBlock(
            percent("kill-block", args.first())?,
            match args.get(1) {
                Some(a) => Some(
                    a.parse()
                        .map_err(|_| ControlError::Argument("kill-block"))?,
                ),
                None => None,
            },
        ),
        "switch-down" => Control::SwitchDown(name("switch-down", args)?),
        "switch-up" => Control::SwitchUp(name("switch-up", args)?),
        "router-down" => Control::RouterDown(name("router-down", args)?),
        "router-up" => Control::RouterUp(name("router-up", args)?),
        "stop" => Control::Stop(ids("stop", args)?),
        "restart" => Control::Restart(ids("restart", args)?),
        "restart-all" => Control::RestartAll,
        "revive" => Control::Revive,
        "status" => Control::Status,
        "quit" => Control::Quit,
        other => return Err(ControlError::Unknown(other.to_string())),
    })
}

/// What a command did: the host ids it took down or cut off (for the log and for
/// matching verdicts), the host ids it (re)started.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Executed {
    /// Hosts killed, stopped or cut off from the CMA by the command.
    pub down: Vec<u64>,
    /// Hosts (re)started.
    pub started: Vec<u64>,
}

fn index(world: &World, id: u64) -> Result<u32, ControlError> {
    world
        .index_of_id(id)
        .ok_or_else(|| ControlError::NoSuch("host", id.to_string()))
}

/// The consecutive block of `pct` % of all hosts starting at host id `first` (default:
/// centred in the fleet), as host indexes.
pub fn block(world: &World, pct: f64, first: Option<u64>) -> Result<Vec<u32>, ControlError> {
    let n = world.len();
    let count = ((f64::from(n) * pct / 100.0).round() as u32).min(n);
    let start = match first {
        Some(id) => index(world, id)?,
        None => (n - count) / 2,
    };
    Ok((start..(start + count).min(n)).collect())
}

/// Carries out `control` on the simulation.
pub fn execute(
    sim: &mut Sim,
    control: &Control,
    now: Instant,
    rng: &mut impl rand::Rng,
    out: &mut Vec<Output>,
) -> Result<Executed, ControlError> {
    let mut done = Executed::default();
    let world = sim.world().clone();
    let ids_of = |v: &[u32]| v.iter().map(|&i| world.host_id(i)).collect::<Vec<u64>>();
    match control {
        Control::Kill(ids) => {
            let v = ids
                .iter()
                .map(|id| index(&world, *id))
                .collect::<Result<Vec<u32>, _>>()?;
            sim.apply_fault(&Fault::KillHosts(v.clone()), now, out);
            done.down = ids_of(&v);
        }
        Control::KillRandom(pct) => {
            let count = (f64::from(world.len()) * pct / 100.0).round() as usize;
            let v = random_alive(&world, count, rng);
            sim.apply_fault(&Fault::KillHosts(v.clone()), now, out);
            done.down = ids_of(&v);
        }
        Control::KillBlock(pct, first) => {
            let v: Vec<u32> = block(&world, *pct, *first)?
                .into_iter()
                .filter(|i| world.alive(*i))
                .collect();
            sim.apply_fault(&Fault::KillHosts(v.clone()), now, out);
            done.down = ids_of(&v);
        }
        Control::SwitchDown(n) | Control::SwitchUp(n) => {
            let s = world
                .switch_by_name(n)
                .ok_or_else(|| ControlError::NoSuch("switch", n.clone()))?;
            let up = matches!(control, Control::SwitchUp(_));
            let fault = if up {
                Fault::SwitchUp(s)
            } else {
                Fault::SwitchDown(s)
            };
            sim.apply_fault(&fault, now, out);
            if !up {
                done.down = ids_of(&world.hosts_of_switch(s).collect::<Vec<_>>());
            }
        }
        Control::RouterDown(n) | Control::RouterUp(n) => {
            let r = world
                .router_by_name(n)
                .ok_or_else(|| ControlError::NoSuch("router", n.clone()))?;
            let up = matches!(control, Control::RouterUp(_));
            let fault = if up {
                Fault::RouterUp(r)
            } else {
                Fault::RouterDown(r)
            };
            sim.apply_fault(&fault, now, out);
            if !up {
                done.down = ids_of(&world.hosts_of_router(r).collect::<Vec<_>>());
            }
        }
        Control::Stop(ids) => {
            for id in ids {
                let i = index(&world, *id)?;
                sim.stop(i, now, out);
                done.down.push(*id);
            }
        }
        Control::Restart(ids) => {
            for id in ids {
                let i = index(&world, *id)?;
                sim.start(i, now, out);
                done.started.push(*id);
            }
        }
        Control::RestartAll => {
            sim.start_all(now, out);
            done.started = ids_of(&(0..world.len()).collect::<Vec<_>>());
        }
        Control::Revive => {
            for s in 0..world.shape().switches() {
                sim.apply_fault(&Fault::SwitchUp(s), now, out);
            }
            for r in 0..world.shape().routers() {
                sim.apply_fault(&Fault::RouterUp(r), now, out);
            }
            for i in 0..world.len() {
                if !world.alive(i) {
                    sim.start(i, now, out);
                    done.started.push(world.host_id(i));
                }
            }
        }
        Control::Status | Control::Quit => {}
    }
    Ok(done)
}

/// The built-in scenarios (`--scenario`): each is one command run once the rings have
/// formed and the fleet has idled for the settle time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Cold start of every host at once; exits when the rings are formed.
    Formation,
    /// Form, then nothing.
    Idle,
    /// One host in the middle of the fleet dies.
    SingleKill,
    /// 5 % of the hosts, at random, die.
    Rack,
    /// 5 % of the hosts with consecutive ids die.
    Block,
    /// The switch in the middle of the fleet fails.
    SwitchDown,
    /// The last router fails (with everything behind it).
    RouterDown,
    /// Every host restarts at once (new sessions).
    RestartAll,
    /// A 5 % block dies; the driver kills the CMA leader when it reads the `fault` line
    /// (fleetsim does not own the CMA processes).
    LeaderKillBlock,
}

impl Scenario {
    /// The command line this scenario runs (None: nothing to do after formation).
    pub fn command(&self, world: &World) -> Option<String> {
        let n = world.len();
        let middle = world.host_id(n / 2);
        Some(match self {
            Scenario::Formation | Scenario::Idle => return None,
            Scenario::SingleKill => format!("kill {middle}"),
            Scenario::Rack => "kill-random 5".into(),
            Scenario::Block | Scenario::LeaderKillBlock => "kill-block 5".into(),
            Scenario::SwitchDown => {
                format!("switch-down {}", World::switch_name(world.switch_of(n / 2)))
            }
            Scenario::RouterDown => format!(
                "router-down {}",
                World::router_name(world.shape().routers() - 1)
            ),
            Scenario::RestartAll => "restart-all".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::Shape;

    #[test]
    fn parses_every_command_and_refuses_bad_ones() {
        assert_eq!(parse("kill 3 4").unwrap(), Control::Kill(vec![3, 4]));
        assert_eq!(parse("kill-random 5").unwrap(), Control::KillRandom(5.0));
        assert_eq!(
            parse("kill-block 5 501").unwrap(),
            Control::KillBlock(5.0, Some(501))
        );
        assert_eq!(parse(" revive ").unwrap(), Control::Revive);
        assert_eq!(
            parse("switch-down sw3").unwrap(),
            Control::SwitchDown("sw3".into())
        );
        assert!(matches!(parse("kill"), Err(ControlError::Argument("kill"))));
        assert!(matches!(
            parse("kill x"),
            Err(ControlError::Argument("kill"))
        ));
        assert!(matches!(
            parse("kill-random 101"),
            Err(ControlError::Argument(_))
        ));
        assert!(matches!(parse("explode"), Err(ControlError::Unknown(_))));
    }

    #[test]
    fn block_is_consecutive_and_centred() {
        let w = World::new(Shape {
            hosts: 2000,
            hosts_per_switch: 40,
            switches_per_router: 8,
            first_id: 1,
            port: 7070,
        })
        .unwrap();
        let b = block(&w, 5.0, None).unwrap();
        assert_eq!(b.len(), 100);
        assert_eq!(b[0], 950);
        assert!(b.windows(2).all(|x| x[1] == x[0] + 1));
        assert_eq!(block(&w, 5.0, Some(501)).unwrap()[0], 500);
        assert_eq!(
            Scenario::SwitchDown.command(&w).as_deref(),
            Some("switch-down sw25")
        );
        assert_eq!(
            Scenario::RouterDown.command(&w).as_deref(),
            Some("router-down r6")
        );
    }
}
