//! The `cma` node configuration file (TOML). Unknown keys are errors; every timing has a
//! documented default.
//!
//! ```toml
//! node_id = 1
//! listen = "10.0.0.1:7400"              # Raft peers and queue clients (one TCP port)
//! # advertise = "10.0.0.1:7400"         # default: listen
//! admin_listen = "127.0.0.1:7480"       # HTTP admin API and /metrics
//! data_dir = "/var/lib/ringwatch/cma"
//! cluster_secret_file = "/etc/ringwatch/cluster.key"
//!
//! [raft]
//! heartbeat_interval_ms = 100
//! election_timeout_min_ms = 400
//! election_timeout_max_ms = 800
//! snapshot_after_logs = 2000
//! snapshot_log_ratio = 1.0
//! logs_to_keep_after_snapshot = 500
//! prompt_election = true
//! max_inflight_proposals = 64
//! max_proposal_wait_ms = 250
//!
//! [queue]
//! dedup_window = 1024
//!
//! [limits]                              # docs/security.md: every limit and its default
//! max_unauthenticated = 512
//! ```
//!
//! An `admin_listen` that is not a loopback address needs `admin_token_file`; secret files
//! with loose modes are refused ([`proto::secret_file`]).

use queue::state::{DedupLimits, DEFAULT_DEDUP_SESSIONS, DEFAULT_DEDUP_WINDOW};
use replica::limits::{DescriptorBudget, LimitsConfig};
use replica::node::NodeSettings;
use replica::snapshot_policy::SnapshotRule;
use replica::NodeAddr;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use daemon::ConfigError;

/// Default admin HTTP address: localhost only (see docs/design.md §9).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7480";

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7480))
}

/// The whole node configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id, unique in the cluster, never reused for another data dir.
    pub node_id: u64,
    /// TCP address for Raft peers and queue clients.
    pub listen: SocketAddr,
    /// Address other nodes and clients use to reach `listen` (default: `listen`).
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// HTTP admin API and Prometheus `/metrics` (default 127.0.0.1:7480).
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// Admin address advertised to other nodes for `cmactl` redirects (default:
    /// `admin_listen`).
    #[serde(default)]
    pub admin_advertise: Option<SocketAddr>,
    /// File holding a bearer token required on every admin request except `/metrics`
    /// (default: none, acceptable only while the admin API listens on localhost).
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Data directory (Raft log segments, sled for the vote, snapshot).
    pub data_dir: PathBuf,
    /// Cluster secret file: 64 hex digits, `#` comments allowed.
    pub cluster_secret_file: PathBuf,
    /// Raft timings and log compaction.
    #[serde(default)]
    pub raft: RaftConfig,
    /// Queue limits.
    #[serde(default)]
    pub queue: QueueConfig,
    /// The monitoring worker (active on the leader); absent: this node only runs the queue.
    #[serde(default)]
    pub worker: Option<worker::config::WorkerSection>,
    /// Connection, handshake and admin API limits (docs/security.md).
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// Default leader heartbeat interval.
pub const DEFAULT_HEARTBEAT_MS: u64 = 100;
/// Default lower bound of the election timeout.
pub const DEFAULT_ELECTION_MIN_MS: u64 = 400;
/// Default upper bound of the election timeout.
pub const DEFAULT_ELECTION_MAX_MS: u64 = 800;

/// `[raft]`: timings and compaction.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Leader heartbeat interval (default 100 ms).
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election timeout (default 400 ms).
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout (default 800 ms). openraft 0.9
    /// also makes a follower honour its leader's lease, as long as this bound, so a
    /// follower's own timer calls an election `max + its timeout` after the last
    /// heartbeat (at most 1.6 s with the defaults); the prompt election calls it as soon
    /// as the lease runs out when the leader's process is gone.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last (default 2000). Snapshots
    /// are cheap while consumers keep the queue short, and they bound the Raft log on disk.
    pub snapshot_after_logs: u64,
    /// ...and only once the log bytes appended since the last snapshot reach this multiple
    /// of its size (default 1.0; 0: entries alone decide). Bounds the snapshot writes to
    /// about 1/ratio of the log's when the state is large (consumer stopped).
    pub snapshot_log_ratio: f64,
    /// Log entries kept after a snapshot, so lagging followers catch up from the log
    /// rather than by snapshot (default 500).
    pub logs_to_keep_after_snapshot: u64,
    /// Most entries per AppendEntries RPC (default 64).
    pub max_payload_entries: u64,
    /// Timeout of one snapshot chunk transfer (default 10000 ms).
    pub install_snapshot_timeout_ms: u64,
    /// TCP connect + handshake timeout towards a peer (default 1000 ms).
    pub connect_timeout_ms: u64,
    /// Pause before retrying an unreachable peer (default 200 ms).
    pub peer_retry_backoff_ms: u64,
    /// When the leader has been silent for a whole lease, the follower with the greatest
    /// log calls the election at once, instead of waiting for its randomised timer
    /// (default true; docs/queue.md "Failover").
    pub prompt_election: bool,
    /// Most proposals and linearizable reads a node hands Raft at once (default 64); more
    /// callers wait, so an overloaded leader keeps its heartbeats and votes on time.
    pub max_inflight_proposals: usize,
    /// How long a client's append, read or offset commit waits for one of those slots
    /// before the node answers `Busy` (default 250 ms): an overloaded leader sheds load at
    /// once instead of queueing callers until they time out and retry. The node's own
    /// worker is never shed.
    pub max_proposal_wait_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_MS,
            election_timeout_min_ms: DEFAULT_ELECTION_MIN_MS,
            election_timeout_max_ms: DEFAULT_ELECTION_MAX_MS,
            snapshot_after_logs: 2000,
            snapshot_log_ratio: 1.0,
            logs_to_keep_after_snapshot: 500,
            max_payload_entries: 64,
            install_snapshot_timeout_ms: 10_000,
            connect_timeout_ms: 1000,
            peer_retry_backoff_ms: 200,
            prompt_election: true,
            max_inflight_proposals: 64,
            max_proposal_wait_ms: 250,
        }
    }
}

/// Default byte budget of the in-memory queue.
pub const DEFAULT_QUEUE_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// `[queue]`: dedup and read limits. Must be identical on every node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Report ids remembered per (sender, session) (default 1024).
    pub dedup_window: u64,
    /// (sender, session) pairs remembered (default 100000).
    pub dedup_sessions: usize,
    /// Most packets returned by one read (default 10000).
    pub max_read: usize,
    /// Byte budget of the packets held in memory (default 256 MiB; 0: unlimited). Beyond
    /// it appends are refused with a typed "queue full" reply, so producers back off.
    pub max_bytes: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            dedup_window: DEFAULT_DEDUP_WINDOW,
            dedup_sessions: DEFAULT_DEDUP_SESSIONS,
            max_read: 10_000,
            max_bytes: DEFAULT_QUEUE_MAX_BYTES,
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config: Config = daemon::load_toml(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::new(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.raft;
        if r.heartbeat_interval_ms == 0 || r.heartbeat_interval_ms >= r.election_timeout_min_ms {
            return Err(ConfigError::Invalid(
                "raft.heartbeat_interval_ms must be > 0 and below election_timeout_min_ms".into(),
            ));
        }
        if r.election_timeout_min_ms >= r.election_timeout_max_ms {
            return Err(ConfigError::Invalid(
                "raft.election_timeout_min_ms must be below election_timeout_max_ms".into(),
            ));
        }
        if r.snapshot_after_logs == 0 || r.max_payload_entries == 0 {
            return Err(ConfigError::Invalid(
                "raft.snapshot_after_logs and raft.max_payload_entries must be > 0".into(),
            ));
        }
        if !(r.snapshot_log_ratio.is_finite() && r.snapshot_log_ratio >= 0.0) {
            return Err(ConfigError::Invalid(
                "raft.snapshot_log_ratio must be a finite number >= 0".into(),
            ));
        }
        if self.queue.dedup_window == 0
            || self.queue.dedup_sessions == 0
            || self.queue.max_read == 0
        {
            return Err(ConfigError::Invalid(
                "queue.dedup_window, dedup_sessions and max_read must be > 0".into(),
            ));
        }
        self.limits.validate().map_err(ConfigError::Invalid)?;
        if !self.admin_listen.ip().is_loopback() && self.admin_token_file.is_none() {
            return Err(ConfigError::Invalid(format!(
                "admin_listen = \"{}\" is not a loopback address, so admin_token_file must be \
                 set (anyone who can reach the admin API could change the cluster's \
                 membership); set admin_token_file or bind admin_listen to 127.0.0.1",
                self.admin_listen
            )));
        }
        Ok(())
    }

    /// The addresses stored in the membership for this node.
    pub fn advertised(&self) -> NodeAddr {
        NodeAddr {
            raft: self.advertise.unwrap_or(self.listen).to_string(),
            admin: self
                .admin_advertise
                .unwrap_or(self.admin_listen)
                .to_string(),
        }
    }

    /// Loads the admin token, if one is configured.
    pub fn admin_token(&self) -> Result<Option<String>, ConfigError> {
        let Some(path) = &self.admin_token_file else {
            return Ok(None);
        };
        let token = proto::read_secret_file(path)
            .map_err(ConfigError::secret)?
            .trim()
            .to_string();
        if token.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "admin token file {} is empty",
                path.display()
            )));
        }
        Ok(Some(token))
    }

    /// Node settings (loads the cluster secret); `budget` is this process's descriptor
    /// budget ([`LimitsConfig::budget`]).
    pub fn node_settings(&self, budget: DescriptorBudget) -> Result<NodeSettings, ConfigError> {
        let secret =
            queue::load_cluster_secret(&self.cluster_secret_file).map_err(ConfigError::secret)?;
        let r = &self.raft;
        let raft = openraft::Config {
            cluster_name: "ringwatch-cma".into(),
            heartbeat_interval: r.heartbeat_interval_ms,
            election_timeout_min: r.election_timeout_min_ms,
            election_timeout_max: r.election_timeout_max_ms,
            install_snapshot_timeout: r.install_snapshot_timeout_ms,
            max_payload_entries: r.max_payload_entries,
            // The node triggers snapshots itself (replica::snapshot_policy).
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: r.logs_to_keep_after_snapshot,
            ..Default::default()
        };
        Ok(NodeSettings {
            id: self.node_id,
            listen: self.listen,
            advertise: self.advertised(),
            data_dir: self.data_dir.clone(),
            secret,
            raft,
            snapshot_rule: SnapshotRule {
                after_logs: r.snapshot_after_logs,
                log_ratio: r.snapshot_log_ratio,
            },
            dedup: DedupLimits {
                window: self.queue.dedup_window,
                sessions: self.queue.dedup_sessions,
            },
            connect_timeout: Duration::from_millis(r.connect_timeout_ms),
            peer_retry_backoff: Duration::from_millis(r.peer_retry_backoff_ms),
            max_read: self.queue.max_read,
            budget,
            handshake_timeout: self.limits.handshake_timeout(),
            max_queue_bytes: self.queue.max_bytes,
            prompt_election: r.prompt_election,
            max_inflight_proposals: r.max_inflight_proposals,
            max_proposal_wait: Duration::from_millis(r.max_proposal_wait_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        node_id = 1
        listen = "127.0.0.1:7400"
        data_dir = "/tmp/x"
        cluster_secret_file = "/tmp/k"
    "#;

    #[test]
    fn defaults_apply() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert_eq!(c.raft.heartbeat_interval_ms, DEFAULT_HEARTBEAT_MS);
        assert_eq!(c.queue.max_bytes, DEFAULT_QUEUE_MAX_BYTES);
        assert_eq!(c.advertised().raft, "127.0.0.1:7400");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(matches!(
            Config::parse(&format!("{MINIMAL}\nbogus = 1\n")),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::parse(&format!(
                "{MINIMAL}\n[raft]\nheartbeat_interval_ms = 5000\n"
            )),
            Err(ConfigError::Invalid(_))
        ));
        assert!(Config::parse("node_id = \"x\"").is_err());
        assert!(matches!(
            Config::parse(&format!("{MINIMAL}\n[limits]\nmax_unauthenticated = 0\n")),
            Err(ConfigError::Invalid(_))
        ));
        for bad in ["-1.0", "nan", "inf"] {
            assert!(matches!(
                Config::parse(&format!("{MINIMAL}\n[raft]\nsnapshot_log_ratio = {bad}\n")),
                Err(ConfigError::Invalid(_))
            ));
        }
        let c = Config::parse(&format!("{MINIMAL}\n[raft]\nsnapshot_log_ratio = 0.5\n")).unwrap();
        assert_eq!(c.raft.snapshot_log_ratio, 0.5);
        assert_eq!(Config::parse(MINIMAL).unwrap().raft.snapshot_log_ratio, 1.0);
    }

    #[test]
    fn open_admin_bind_needs_a_token() {
        for bind in ["0.0.0.0:7480", "10.1.2.3:7480", "[::]:7480"] {
            let text = format!("admin_listen = \"{bind}\"\n{MINIMAL}");
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains("admin_token_file"), "{err}");
            let with_token = format!("{text}admin_token_file = \"/etc/t\"\n");
            assert!(Config::parse(&with_token).is_ok());
        }
        for bind in ["127.0.0.1:7480", "127.0.9.9:7480", "[::1]:7480"] {
            assert!(Config::parse(&format!("admin_listen = \"{bind}\"\n{MINIMAL}")).is_ok());
        }
    }
}
