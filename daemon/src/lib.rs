//! What the three Ringwatch daemons (`nanoprobe`, `packet-reader`, `cma`) share around
//! their cores: loading a TOML configuration with one error type ([`config`]), logging
//! ([`logging`]), systemd readiness and watchdog ([`systemd`]), the stop signals
//! ([`signals`]), the bounded HTTP accept loop ([`http`]), a Prometheus `/metrics`
//! listener on it with the `reason` label of every refusal counter ([`metrics`]),
//! rate-limited warnings ([`warn`]), the wall clock ([`clock`]) and the man pages
//! ([`man`]). Nothing here knows about heartbeats, queues or Raft.

pub mod clock;
pub mod config;
pub mod http;
pub mod logging;
pub mod man;
pub mod metrics;
pub mod signals;
pub mod systemd;
pub mod warn;

pub use config::{load_toml, ConfigError};
