//! What the three Ringwatch daemons (`nanoprobe`, `packet-reader`, `cma`) share around
//! their cores: loading a TOML configuration with one error type ([`config`]), logging
//! ([`logging`]), systemd readiness and watchdog ([`systemd`]), the stop signals
//! ([`signals`]), a bounded Prometheus `/metrics` listener ([`metrics`]) and the wall
//! clock ([`clock`]). Nothing here knows about heartbeats, queues or Raft.

pub mod clock;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod signals;
pub mod systemd;

pub use config::{load_toml, ConfigError};
