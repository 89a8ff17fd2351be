//! The packet-reader configuration: a TOML file, with command-line flags overriding it.
//!
//! ```toml
//! host_id = 1000001                      # this reader's id on the wire; unique per instance
//! listen = ["0.0.0.0:7300"]              # UDP address(es) nanoprobes send reports to
//!                                        # (a single string is accepted too)
//! sockets = 2                            # SO_REUSEPORT sockets per listen address
//! recv_buffer_bytes = 8388608            # SO_RCVBUF per socket
//! key_file = "/etc/ringwatch/keys.toml"
//! cma_nodes = ["10.0.0.1:7400", "10.0.0.2:7400", "10.0.0.3:7400"]
//! cluster_secret_file = "/etc/ringwatch/cluster.key"
//! # metrics_listen = "127.0.0.1:7381"   # Prometheus /metrics (off when absent)
//!
//! [batch]
//! max_packets = 512        # a batch is sent when it holds this many reports,
//! max_bytes = 262144       # or this many report bytes,
//! max_delay_us = 1500      # or when its first report waited this long
//! max_in_flight = 4        # appends awaiting commit at once
//! pending_limit = 20000    # verified reports waiting for a batch; beyond: dropped, counted
//! give_up_ms = 10000       # stop retrying a batch the queue did not take (senders retransmit)
//! request_timeout_ms = 5000 # one queue append call, leader changes and retries included
//! ```

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use daemon::ConfigError;

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This reader's host id on the wire (ACKs are sealed with it). Each packet-reader
    /// instance needs its own.
    pub host_id: u64,
    /// UDP address(es) for reports: one address or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<SocketAddr>,
    /// Number of SO_REUSEPORT sockets bound to each `listen` address (default 2).
    #[serde(default = "default_sockets")]
    pub sockets: usize,
    /// Receive buffer per socket in bytes (default 8 MiB; the kernel caps it at
    /// net.core.rmem_max).
    #[serde(default = "default_recv_buffer")]
    pub recv_buffer_bytes: usize,
    /// The key file shared with the nanoprobes.
    pub key_file: PathBuf,
    /// Addresses of the CMA nodes (Raft/client port).
    pub cma_nodes: Vec<SocketAddr>,
    /// The cluster secret file shared with the CMA nodes.
    pub cluster_secret_file: PathBuf,
    /// Prometheus `/metrics` listener; off when absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Most senders whose replay state is tracked (default 200,000).
    #[serde(default = "default_max_senders")]
    pub max_senders: usize,
    /// Batching and back-pressure.
    #[serde(default)]
    pub batch: BatchConfig,
}

/// `[batch]`: how reports are grouped into queue appends.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most reports per append (default 512).
    pub max_packets: usize,
    /// Most report bytes per append (default 256 KiB). One append is one Raft log
    /// entry. (While the CMA's log was in sled, the default was 88 KiB to stay below
    /// sled's blob threshold; the segment log has none: docs/queue.md.)
    pub max_bytes: usize,
    /// Longest a report waits for its batch to fill, in µs (default 1500).
    pub max_delay_us: u64,
    /// Appends awaiting commit at once (default 4).
    pub max_in_flight: usize,
    /// Verified reports waiting for a batch; beyond it new reports are dropped and counted
    /// (default 20,000). Bounds memory when the queue is slow or unavailable.
    pub pending_limit: usize,
    /// Stop retrying an append after this long, in ms (default 10,000); the senders
    /// retransmit what was not acknowledged.
    pub give_up_ms: u64,
    /// Longest one queue call may take, leader changes and retries included, in ms
    /// (default 5,000).
    pub request_timeout_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_packets: 512,
            max_bytes: 256 * 1024,
            max_delay_us: 1500,
            max_in_flight: 4,
            pending_limit: 20_000,
            give_up_ms: 10_000,
            request_timeout_ms: 5_000,
        }
    }
}

impl BatchConfig {
    /// Longest wait of a report for its batch.
    pub fn max_delay(&self) -> Duration {
        Duration::from_micros(self.max_delay_us)
    }

    /// Retry bound of one append.
    pub fn give_up(&self) -> Duration {
        Duration::from_millis(self.give_up_ms)
    }

    /// Bound of one queue call.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Accepts `listen = "a:p"` as well as `listen = ["a:p", ...]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(SocketAddr),
        Many(Vec<SocketAddr>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(a) => vec![a],
        OneOrMany::Many(v) => v,
    })
}

fn default_sockets() -> usize {
    2
}
fn default_recv_buffer() -> usize {
    8 * 1024 * 1024
}
fn default_max_senders() -> usize {
    proto::replay::DEFAULT_MAX_SENDERS
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        daemon::load_toml(path)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.sockets == 0 || self.sockets > 64 {
            return invalid("sockets must be between 1 and 64");
        }
        if self.listen.is_empty() {
            return invalid("listen must give at least one address");
        }
        if self.cma_nodes.is_empty() {
            return invalid("cma_nodes must list at least one CMA node");
        }
        let b = &self.batch;
        if b.max_packets == 0 || b.max_bytes < proto::MAX_DATAGRAM || b.max_in_flight == 0 {
            return invalid(
                "batch.max_packets and batch.max_in_flight must be > 0, batch.max_bytes >= 1400",
            );
        }
        if b.pending_limit < b.max_packets {
            return invalid("batch.pending_limit must be at least batch.max_packets");
        }
        if b.max_delay_us == 0 || b.give_up_ms == 0 || b.request_timeout_ms == 0 {
            return invalid(
                "batch.max_delay_us, batch.give_up_ms and batch.request_timeout_ms must be > 0",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        host_id = 9
        listen = "127.0.0.1:7300"
        key_file = "/k"
        cma_nodes = ["127.0.0.1:7400"]
        cluster_secret_file = "/s"
    "#;

    #[test]
    fn defaults_apply() {
        let c: Config = toml::from_str(MINIMAL).unwrap();
        assert_eq!(c.sockets, 2);
        assert_eq!(c.batch, BatchConfig::default());
        assert!(c.metrics_listen.is_none());
        assert_eq!(c.listen, vec!["127.0.0.1:7300".parse().unwrap()]);
        c.validate().unwrap();
        let many = MINIMAL.replace(
            "listen = \"127.0.0.1:7300\"",
            "listen = [\"127.0.0.1:7300\", \"127.0.0.2:7300\"]",
        );
        let c: Config = toml::from_str(&many).unwrap();
        assert_eq!(c.listen.len(), 2);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>(&format!("{MINIMAL}\ncolour = 1")).is_err());
        assert!(toml::from_str::<Config>("host_id = \"x\"").is_err());
        let mut c: Config = toml::from_str(MINIMAL).unwrap();
        c.cma_nodes.clear();
        assert!(c.validate().is_err());
        let mut c: Config = toml::from_str(MINIMAL).unwrap();
        c.batch.pending_limit = 1;
        assert!(c.validate().is_err());
    }
}
