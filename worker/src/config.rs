//! The `[worker]` section of the CMA config: what the worker needs besides the Raft node.
//!
//! ```toml
//! [worker]
//! key_file = "/etc/ringwatch/keys.toml"   # the nanoprobes' key file
//! # host_id = 4000000001                  # id on the wire (commands); default: base + node id
//! command_listen = "10.0.0.1:7401"        # UDP socket commands leave from, ACKs come to
//! tick_ms = 200                           # how often time advances in the fsm
//! probe_timeout_ms = 2000                 # timeout of one active probe
//! move_hold_down_ms = 10000               # a host moved by LLDP is not moved again within
//!
//! [worker.timings]                        # heartbeat timings given to every ring
//! profile = "default"                     # "default": 1 s / 2 s / 3 s; "fast": 100 / 300 / 500 ms
//! interval_ms = 1000                      # each field overrides the profile's value
//! warntime_ms = 2000
//! deadtime_ms = 3000
//!
//! [[worker.switches]]
//! name = "sw1"
//! address = "10.0.1.254"                  # management address (pinged when suspected)
//! subnets = ["10.0.1.0/24"]
//! router = "r1"
//!
//! [[worker.routers]]
//! name = "r1"
//! address = "10.0.0.254"
//!
//! [[worker.sinks]]
//! type = "log"
//! [[worker.sinks]]
//! type = "jsonl"
//! path = "/var/lib/ringwatch/events.jsonl"
//! events = ["verdict"]
//! ```

use super::outbox::OutboxConfig;
use super::probe_limit::ProbeLimitConfig;
use super::rings::{RouterConfig, SwitchConfig, SwitchMap, TopologyError};
use super::state::WorkerSettings;
use crate::sinks::SinkConfig;
use proto::HbTimings;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Default wire host id of CMA node N is this plus N (far from nanoprobe ids).
pub const DEFAULT_HOST_ID_BASE: u64 = 0xFFFF_FFFF_0000_0000;

fn default_tick_ms() -> u64 {
    200
}
fn default_probe_timeout_ms() -> u32 {
    2000
}
fn default_move_hold_down_ms() -> u64 {
    10_000
}
fn default_batch() -> usize {
    256
}
fn default_command_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// A `[worker]` section that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// `[worker.timings]` is inconsistent (the check says why; it has no source error).
    #[error("worker.timings: {0}")]
    Timings(String),
    /// The declared switches and routers.
    #[error("worker topology")]
    Topology(#[from] TopologyError),
}

/// `[worker]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    /// The key file shared with the nanoprobes.
    pub key_file: PathBuf,
    /// This node's host id on the wire, for sealing commands; unique in the deployment
    /// (default: [`DEFAULT_HOST_ID_BASE`] + node id).
    #[serde(default)]
    pub host_id: Option<u64>,
    /// UDP address commands are sent from and ACKs received on (default: any address,
    /// ephemeral port).
    #[serde(default = "default_command_listen")]
    pub command_listen: SocketAddr,
    /// Period of fsm ticks in ms (default 200).
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Timeout of one active probe in ms (default 2000).
    #[serde(default = "default_probe_timeout_ms")]
    pub probe_timeout_ms: u32,
    /// A host moved to another switch by its LLDP/CDP reports is not moved again within
    /// this many ms, nor put in the flat ring before it has heard no neighbour for that
    /// long (default 10 000; docs/topology.md).
    #[serde(default = "default_move_hold_down_ms")]
    pub move_hold_down_ms: u64,
    /// Most queue entries processed per Raft proposal (default 256).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Heartbeat timings of every ring: a profile (default 1 s / 2 s / 3 s), each field
    /// overridable.
    #[serde(default)]
    pub timings: TimingsConfig,
    /// Declared switches.
    #[serde(default)]
    pub switches: Vec<SwitchConfig>,
    /// Declared routers.
    #[serde(default)]
    pub routers: Vec<RouterConfig>,
    /// Event sinks.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// Probe budget and rate limit.
    #[serde(default)]
    pub probes: ProbeLimitConfig,
    /// Command retransmission.
    #[serde(default)]
    pub outbox: OutboxConfig,
}

/// A named set of heartbeat timings (docs/detection.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// 1 s heartbeats, 2 s warntime, 3 s deadtime: a host's death is named in about 3.5 s,
    /// a crashed agent in about 1 s; robust to 10 % loss on every link.
    #[default]
    Default,
    /// 100 ms heartbeats, 300 ms warntime, 500 ms deadtime: a host's death in under 1 s, a
    /// crashed agent in about 150 ms, for ten times the heartbeat traffic; for LANs with
    /// little loss (tested at 1 %).
    Fast,
}

impl Profile {
    /// The profile's timings.
    pub fn timings(self) -> HbTimings {
        match self {
            Profile::Default => HbTimings::default(),
            Profile::Fast => HbTimings {
                interval_ms: 100,
                warntime_ms: 300,
                deadtime_ms: 500,
            },
        }
    }
}

/// `[worker.timings]`: a profile, and any field set overrides the profile's value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingsConfig {
    /// The profile (default `"default"`).
    #[serde(default)]
    pub profile: Profile,
    /// Time between two heartbeats.
    pub interval_ms: Option<u32>,
    /// Silence after which a peer is reported late.
    pub warntime_ms: Option<u32>,
    /// Silence after which a peer is reported dead.
    pub deadtime_ms: Option<u32>,
}

impl TimingsConfig {
    /// The timings given to every ring.
    pub fn resolve(&self) -> HbTimings {
        let base = self.profile.timings();
        HbTimings {
            interval_ms: self.interval_ms.unwrap_or(base.interval_ms),
            warntime_ms: self.warntime_ms.unwrap_or(base.warntime_ms),
            deadtime_ms: self.deadtime_ms.unwrap_or(base.deadtime_ms),
        }
    }
}

impl WorkerSection {
    /// This node's host id on the wire: `host_id`, or the default for `node_id`.
    pub fn wire_host_id(&self, node_id: u64) -> u64 {
        self.host_id.unwrap_or(DEFAULT_HOST_ID_BASE + node_id)
    }

    /// The fsm's timings, derived from the ring timings and the probe timeout.
    pub fn fsm_config(&self) -> fsm::Config {
        fsm::Config {
            default_hb_interval_us: u64::from(self.timings.resolve().interval_ms) * 1000,
            // The fsm waits for a probe a little longer than the nanoprobe does, so the
            // result (carried through the queue) can arrive.
            probe_timeout_us: (u64::from(self.probe_timeout_ms) + 1500) * 1000,
            ..fsm::Config::default()
        }
    }

    /// Checks the section and resolves it into the worker's settings.
    pub fn settings(&self) -> Result<WorkerSettings, SettingsError> {
        let timings = self.timings.resolve();
        timings.validate().map_err(SettingsError::Timings)?;
        let switches = SwitchMap::new(self.switches.clone(), self.routers.clone())?;
        Ok(WorkerSettings {
            timings,
            switches,
            probe_timeout_ms: self.probe_timeout_ms,
            move_hold_down_ms: self.move_hold_down_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_sets_the_timings_and_fields_override_it() {
        let timings = |toml_text: &str| {
            let section: WorkerSection =
                toml::from_str(&format!("key_file = \"/k\"\n{toml_text}")).unwrap();
            section.settings().unwrap().timings
        };
        assert_eq!(timings(""), HbTimings::default());
        let fast = timings("[timings]\nprofile = \"fast\"");
        assert_eq!(
            (fast.interval_ms, fast.warntime_ms, fast.deadtime_ms),
            (100, 300, 500)
        );
        let mixed = timings("[timings]\nprofile = \"fast\"\ndeadtime_ms = 800");
        assert_eq!((mixed.interval_ms, mixed.deadtime_ms), (100, 800));
        let plain = timings("[timings]\ninterval_ms = 500\nwarntime_ms = 1000\ndeadtime_ms = 1500");
        assert_eq!(plain.deadtime_ms, 1500);
        // An unknown profile or key is an error, not a silent default.
        for bad in [
            "[timings]\nprofile = \"turbo\"",
            "[timings]\nintervl_ms = 5",
        ] {
            assert!(
                toml::from_str::<WorkerSection>(&format!("key_file = \"/k\"\n{bad}")).is_err(),
                "{bad}"
            );
        }
        // Inconsistent timings are refused.
        let section: WorkerSection =
            toml::from_str("key_file = \"/k\"\n[timings]\nprofile = \"fast\"\nwarntime_ms = 900")
                .unwrap();
        assert!(section.settings().is_err());
    }

    #[test]
    fn the_move_hold_down_defaults_to_ten_seconds_and_reaches_the_settings() {
        let section: WorkerSection = toml::from_str("key_file = \"/k\"").unwrap();
        assert_eq!(section.move_hold_down_ms, 10_000);
        assert_eq!(section.settings().unwrap().move_hold_down_ms, 10_000);
        let section: WorkerSection =
            toml::from_str("key_file = \"/k\"\nmove_hold_down_ms = 0").unwrap();
        assert_eq!(section.settings().unwrap().move_hold_down_ms, 0);
    }
}
