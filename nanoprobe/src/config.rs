//! The nanoprobe's configuration: a TOML file whose every field has a documented default,
//! overridden by command-line flags (see `main.rs`).

use crate::heartbeat::Detection;
use proto::{HbTimings, HostId};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use daemon::ConfigError;

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This host's id on the wire (required: from the file or `--host-id`).
    pub host_id: Option<u64>,
    /// Where to receive heartbeats, commands and acks.
    pub bind: SocketAddr,
    /// Packet-reader addresses; reports go to one chosen by consistent hash of the host id.
    pub packet_readers: Vec<SocketAddr>,
    /// The key file (format in `proto::keys`).
    pub key_file: Option<PathBuf>,
    /// Heartbeat timings used until the CMA sends others.
    pub timings: TimingsConfig,
    /// Failure detection on this host (not per ring: the CMA does not send it).
    pub detection: DetectionConfig,
    /// Reliable report sending.
    pub reports: ReportsConfig,
    /// The UDP socket.
    pub socket: SocketConfig,
    /// LLDP/CDP capture (`[lldp]`).
    pub lldp: LldpConfig,
    /// The Prometheus listener, e.g. "127.0.0.1:9464"; off when absent.
    pub metrics_listen: Option<SocketAddr>,
    /// Martian heartbeats reported at most once per sender per this many milliseconds.
    pub martian_report_interval_ms: u64,
    /// How long a graceful stop waits for the ACK of `HbShutdown`.
    pub shutdown_ack_wait_ms: u64,
    /// How many recent command ids are remembered to ignore duplicates.
    pub command_memory: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host_id: None,
            bind: SocketAddr::from(([0, 0, 0, 0], 7070)),
            packet_readers: Vec::new(),
            key_file: None,
            timings: TimingsConfig::default(),
            detection: DetectionConfig::default(),
            reports: ReportsConfig::default(),
            socket: SocketConfig::default(),
            lldp: LldpConfig::default(),
            metrics_listen: None,
            martian_report_interval_ms: 10_000,
            shutdown_ack_wait_ms: 2_000,
            command_memory: 1024,
        }
    }
}

/// Default heartbeat timings (docs/design.md §3).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimingsConfig {
    /// Time between two heartbeats to a peer (default 1000 ms).
    pub interval_ms: u32,
    /// Silence after which a peer is reported late (default 2000 ms).
    pub warntime_ms: u32,
    /// Silence after which a peer is reported dead (default 3000 ms).
    pub deadtime_ms: u32,
}

impl Default for TimingsConfig {
    fn default() -> Self {
        let d = HbTimings::default();
        TimingsConfig {
            interval_ms: d.interval_ms,
            warntime_ms: d.warntime_ms,
            deadtime_ms: d.deadtime_ms,
        }
    }
}

impl TimingsConfig {
    /// As wire timings.
    pub fn to_hb(self) -> HbTimings {
        HbTimings {
            interval_ms: self.interval_ms,
            warntime_ms: self.warntime_ms,
            deadtime_ms: self.deadtime_ms,
        }
    }
}

/// Last-chance confirmation of a peer silent past deadtime (`[detection]`).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionConfig {
    /// How long to send echo requests to a silent peer before reporting `HbDead`
    /// (default 500 ms); 0 reports `HbDead` at deadtime without confirmation.
    pub confirm_ms: u32,
    /// Time between two echo requests while confirming (default 50 ms).
    pub confirm_interval_ms: u32,
}

impl Default for DetectionConfig {
    /// The engine's defaults ([`Detection::default`]).
    fn default() -> Self {
        let d = Detection::default();
        DetectionConfig {
            confirm_ms: u32::try_from(d.confirm.as_millis()).unwrap_or(u32::MAX),
            confirm_interval_ms: u32::try_from(d.confirm_interval.as_millis()).unwrap_or(u32::MAX),
        }
    }
}

impl DetectionConfig {
    /// As engine settings.
    pub fn to_engine(self) -> Detection {
        Detection {
            confirm: Duration::from_millis(self.confirm_ms.into()),
            confirm_interval: Duration::from_millis(self.confirm_interval_ms.into()),
        }
    }
}

/// Retransmission of reports until a packet-reader ACKs them.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// First retransmission delay (default 200 ms); doubled after every retry.
    pub retry_initial_ms: u64,
    /// Upper bound of the retransmission delay (default 5000 ms).
    pub retry_max_ms: u64,
    /// Unacknowledged sends to one reader before failing over to the next (default 3).
    pub failover_after: u32,
    /// Most reports waiting for an ACK (default 256); beyond it the oldest HbLate, then
    /// the oldest other report, is dropped and counted.
    pub queue_bound: usize,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            retry_initial_ms: 200,
            retry_max_ms: 5_000,
            failover_after: 3,
            queue_bound: 256,
        }
    }
}

/// LLDP/CDP capture (`[lldp]`).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LldpConfig {
    /// Listen for LLDP and CDP frames on every interface (default true; needs
    /// `CAP_NET_RAW`, without which the nanoprobe logs it and runs on without).
    pub enabled: bool,
    /// Most neighbours remembered (default 16); new ones beyond are dropped and counted
    /// until one expires.
    pub max_neighbours: usize,
    /// Least time between two neighbour reports (default 2000 ms); changes in between
    /// are coalesced.
    pub report_interval_ms: u64,
    /// Longest TTL honoured (default 300 s); a longer announced TTL is cut to it.
    pub max_ttl_s: u64,
}

impl Default for LldpConfig {
    fn default() -> Self {
        let d = crate::lldp::TableLimits::default();
        LldpConfig {
            enabled: true,
            max_neighbours: d.max_neighbours,
            report_interval_ms: u64::try_from(d.report_interval.as_millis()).unwrap_or(u64::MAX),
            max_ttl_s: d.max_ttl.as_secs(),
        }
    }
}

impl LldpConfig {
    /// As table limits.
    pub fn limits(self) -> crate::lldp::TableLimits {
        crate::lldp::TableLimits {
            max_neighbours: self.max_neighbours,
            report_interval: Duration::from_millis(self.report_interval_ms),
            max_ttl: Duration::from_secs(self.max_ttl_s),
        }
    }
}

/// UDP socket options.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketConfig {
    /// Receive buffer size in bytes (default 16 MiB, so a garbage flood does not crowd
    /// genuine datagrams out of the queue while the daemon waits for a CPU; the kernel caps
    /// it at `net.core.rmem_max` unless the daemon has CAP_NET_ADMIN, and a lower effective
    /// size is logged at start). Memory is used only while datagrams are queued.
    pub recv_buffer: usize,
    /// Send buffer size in bytes (default 262144).
    pub send_buffer: usize,
    /// DSCP code point for every datagram (default 46, expedited forwarding), so
    /// heartbeats are not delayed behind bulk traffic.
    pub dscp: u8,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            recv_buffer: 16 * 1024 * 1024,
            send_buffer: 256 * 1024,
            dscp: 46,
        }
    }
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        daemon::load_toml(path)
    }

    /// Parses config text.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: "<text>".into(),
            source,
        })
    }

    /// Checks the values and returns the host id.
    pub fn validate(&self) -> Result<HostId, ConfigError> {
        let host = self
            .host_id
            .ok_or_else(|| ConfigError::Invalid("host_id is required".into()))?;
        self.timings
            .to_hb()
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("timings: {e}")))?;
        if self.packet_readers.is_empty() {
            return Err(ConfigError::Invalid(
                "at least one packet_readers address is required".into(),
            ));
        }
        if self.key_file.is_none() {
            return Err(ConfigError::Invalid("key_file is required".into()));
        }
        let d = &self.detection;
        if d.confirm_ms > 0 && d.confirm_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "detection: confirm_interval_ms must be > 0 when confirm_ms > 0".into(),
            ));
        }
        if d.confirm_ms > 60_000 {
            return Err(ConfigError::Invalid(
                "detection: confirm_ms must be at most 60000".into(),
            ));
        }
        let r = &self.reports;
        if r.retry_initial_ms == 0 || r.retry_max_ms < r.retry_initial_ms {
            return Err(ConfigError::Invalid(
                "reports: need 0 < retry_initial_ms <= retry_max_ms".into(),
            ));
        }
        if r.queue_bound == 0 || r.failover_after == 0 {
            return Err(ConfigError::Invalid(
                "reports: queue_bound and failover_after must be > 0".into(),
            ));
        }
        let l = &self.lldp;
        if l.max_neighbours == 0 || l.max_neighbours > 1024 {
            return Err(ConfigError::Invalid(
                "lldp: max_neighbours must be 1..=1024".into(),
            ));
        }
        if l.max_ttl_s == 0 || l.max_ttl_s > 65_535 {
            return Err(ConfigError::Invalid(
                "lldp: max_ttl_s must be 1..=65535".into(),
            ));
        }
        if l.report_interval_ms > 600_000 {
            return Err(ConfigError::Invalid(
                "lldp: report_interval_ms must be at most 600000".into(),
            ));
        }
        if self.socket.dscp > 63 {
            return Err(ConfigError::Invalid("socket.dscp must be 0..=63".into()));
        }
        Ok(HostId(host))
    }

    /// The martian report interval as a duration.
    pub fn martian_report_interval(&self) -> Duration {
        Duration::from_millis(self.martian_report_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::from_toml_str(
            "host_id = 3\npacket_readers = [\"127.0.0.1:9000\"]\nkey_file = \"k\"\n[timings]\ninterval_ms = 200\nwarntime_ms = 400\ndeadtime_ms = 800\n",
        )
        .unwrap();
        assert_eq!(c.validate().unwrap(), HostId(3));
        assert_eq!(c.timings.deadtime_ms, 800);
        assert_eq!(c.reports.queue_bound, 256);
        assert!(c.metrics_listen.is_none());
        assert_eq!(c.detection.confirm_ms, 500);
        assert_eq!(c.detection.confirm_interval_ms, 50);
    }

    #[test]
    fn detection_section() {
        let base = "host_id = 1\npacket_readers = [\"127.0.0.1:9000\"]\nkey_file = \"k\"\n";
        let c = Config::from_toml_str(&format!(
            "{base}[detection]\nconfirm_ms = 800\nconfirm_interval_ms = 200\n"
        ))
        .unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(
            c.detection.to_engine(),
            Detection {
                confirm: Duration::from_millis(800),
                confirm_interval: Duration::from_millis(200)
            }
        );
        let off = Config::from_toml_str(&format!(
            "{base}[detection]\nconfirm_ms = 0\nconfirm_interval_ms = 0\n"
        ))
        .unwrap();
        assert!(off.validate().is_ok(), "0 disables confirmation");
        let bad = Config::from_toml_str(&format!("{base}[detection]\nconfirm_interval_ms = 0\n"))
            .unwrap();
        assert!(matches!(bad.validate(), Err(ConfigError::Invalid(_))));
        // Unknown keys remain errors, in [detection] too, and the settings are not timings.
        assert!(matches!(
            Config::from_toml_str(&format!("{base}[detection]\nconfirm = 1\n")),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::from_toml_str(&format!("{base}[timings]\nconfirm_ms = 1\n")),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn rejects_garbage_and_unknown_fields() {
        assert!(matches!(
            Config::from_toml_str("colour = 1"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::from_toml_str("\u{0}{{"),
            Err(ConfigError::Parse { .. })
        ));
        let c = Config::from_toml_str("packet_readers = [\"127.0.0.1:9000\"]").unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::Invalid(_))));
        let c = Config::from_toml_str(
            "host_id = 1\npacket_readers = [\"127.0.0.1:9000\"]\nkey_file = \"k\"\n[timings]\nwarntime_ms = 500\n",
        )
        .unwrap();
        assert!(c.validate().is_err(), "warntime below interval");
    }
}
