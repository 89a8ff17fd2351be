//! The in-process handle on a running Raft node: start it, propose entries, read the
//! applied state, watch progress. The worker (same process) and the TCP server use it.

use super::log_store::{LastLogId, LogStore, StoreMetrics};
use super::network::Network;
use super::prompt_election::{self, LeaseView};
use super::snapshot_policy::SnapshotRule;
use super::state_machine::{SharedState, SnapshotMetrics, StateMachineStore};
use super::{NodeAddr, NodeId, Raft};
use crate::limits::ConnectionGate;
use daemon::metrics::Reason;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{RaftMetrics, ServerState};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use queue::state::{DedupLimits, QueueState};
use queue::QueuedPacket;
use queue::{AppendResult, Command, CommandResult, TableWrite};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLockReadGuard};
use std::time::Duration;
use tokio::sync::watch;

/// sled's page cache. sled holds only the vote, the committed index and the purge point
/// (and, once, the log of an older version's data directory while it is migrated).
const SLED_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Everything needed to start a node (built from the TOML config by `cma::config`).
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// This node's id.
    pub id: NodeId,
    /// Where to listen for peers and queue clients.
    pub listen: SocketAddr,
    /// How other nodes and `cmactl` reach this node (stored in the membership).
    pub advertise: NodeAddr,
    /// Data directory (log segments, sled for the vote, snapshot).
    pub data_dir: PathBuf,
    /// Cluster secret authenticating every connection.
    pub secret: [u8; 32],
    /// openraft timings (its snapshot policy should be `Never`: `snapshot_rule` decides).
    pub raft: openraft::Config,
    /// When to build snapshots (see [`super::snapshot_policy`]).
    pub snapshot_rule: SnapshotRule,
    /// Dedup window limits (must be equal on all nodes).
    pub dedup: DedupLimits,
    /// Timeout of a TCP connect + handshake.
    pub connect_timeout: Duration,
    /// Pause before retrying an unreachable peer.
    pub peer_retry_backoff: Duration,
    /// Most packets returned by one read.
    pub max_read: usize,
    /// Connection limits of the Raft/queue port (derived from the descriptor limit).
    pub budget: crate::limits::DescriptorBudget,
    /// Time a connection has to finish the handshake.
    pub handshake_timeout: Duration,
    /// Byte budget of the in-memory queue (0: unlimited); appends beyond it are refused
    /// with [`ProposeError::QueueFull`].
    pub max_queue_bytes: u64,
    /// Run the prompt election ([`super::prompt_election`]).
    pub prompt_election: bool,
    /// Most proposals and linearizable reads this node hands Raft at once; more wait.
    pub max_inflight_proposals: usize,
    /// Longest wait of a client's call for a slot; then it is answered
    /// [`ProposeError::Busy`].
    pub max_proposal_wait: Duration,
}

/// Longest a read waits for a new leader's state machine to apply its log (see
/// [`Node::read_barrier`]); then the read is refused with [`ProposeError::CatchingUp`] and
/// retried by its caller.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory could not be opened.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: sled::Error,
    },
    /// Storage failed while starting.
    #[error("storage: {0}")]
    Storage(#[from] openraft::StorageError<NodeId>),
    /// openraft rejected the configuration.
    #[error("raft config: {0}")]
    Config(#[from] openraft::ConfigError),
    /// openraft failed to start.
    #[error("raft: {0}")]
    Raft(#[from] openraft::error::Fatal<NodeId>),
    /// The listen address could not be bound.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

/// Why a proposal (or a leader-only read) failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader.
    #[error("not the leader (leader: {leader_id:?})")]
    NotLeader {
        /// The leader's id, when known.
        leader_id: Option<NodeId>,
        /// The leader's addresses, when known.
        leader: Option<NodeAddr>,
    },
    /// Raft failed (shutting down, storage error...).
    #[error("raft: {0}")]
    Raft(String),
    /// The queue holds its byte budget; nothing of the batch was stored.
    #[error("queue full ({held_bytes} of {max_bytes} bytes)")]
    QueueFull {
        /// Bytes held.
        held_bytes: u64,
        /// The budget.
        max_bytes: u64,
    },
    /// All proposal slots stayed taken for `max_proposal_wait`: the node is overloaded
    /// and sheds the call; nothing was proposed. Retry after a pause.
    #[error("busy: no proposal slot freed within {waited_ms} ms")]
    Busy {
        /// How long the call waited.
        waited_ms: u64,
    },
    /// The entry applied but produced an unexpected result.
    #[error("unexpected result: {0}")]
    Unexpected(String),
    /// This node leads, but has not yet applied every entry its log held when it took
    /// over, so its state could be older than what the cluster acknowledged; nothing was
    /// read. Retry shortly (answered `Busy` to queue clients).
    #[error("leader still applying its log: applied {applied} of {needed}")]
    CatchingUp {
        /// Index applied on this node.
        applied: u64,
        /// Index it must reach before it serves reads.
        needed: u64,
    },
}

/// Whether a call waiting for a proposal slot may be shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admission {
    /// The node's own worker: it frees queue room, so it waits as long as it takes.
    Wait,
    /// A queue client: answered `Busy` after `max_proposal_wait`.
    Shed,
}

/// Counters and histograms the node updates; the admin API registers them.
#[derive(Clone)]
pub struct NodeMetrics {
    /// Packets newly stored by appends proposed on this node.
    pub appended_packets: Counter,
    /// Duplicate packets skipped by appends proposed on this node.
    pub duplicate_packets: Counter,
    /// Append batches committed through this node.
    pub append_batches: Counter,
    /// Seconds per group sync of the Raft log (fdatasync of the segment files written).
    pub flush_seconds: Histogram,
    /// Completed syncs of the Raft log (fdatasync of its files).
    pub syncs: Counter,
    /// Appends refused because the queue held its byte budget.
    pub queue_full: Counter,
    /// Of those, refused by the leader before proposing (no Raft entry written).
    pub queue_full_early: Counter,
    /// Seconds from propose to applied, for appends proposed on this node.
    pub commit_seconds: Histogram,
    /// Elections this node called by the prompt election.
    pub prompt_elections: Counter,
    /// Proposals and reads that waited for a slot (`max_inflight_proposals` were in flight).
    pub proposals_waited: Counter,
    /// Client calls answered `Busy`: no slot freed within `max_proposal_wait`.
    pub proposals_shed: Counter,
    /// Requests of peers and clients being served (all connections).
    pub requests_in_flight: Gauge,
    /// Times a connection had `MAX_REQUESTS_IN_FLIGHT` requests in flight, so the server
    /// stopped reading it until one was answered.
    pub connection_reads_paused: Counter,
    /// Connections refused or dropped, by reason.
    pub connection_errors: Family<Reason, Counter>,
    /// Connections turned away before the handshake (limits) and failed accepts, by
    /// reason.
    pub connections_refused: Family<Reason, Counter>,
    /// Snapshot build seconds and the last snapshot's size.
    pub snapshot: SnapshotMetrics,
    /// Seconds per background purge of the Raft log.
    pub purge_seconds: Histogram,
    /// Seconds per synchronous storage write Raft waits for (entries, committed index).
    pub log_write_seconds: Histogram,
    /// Bytes of entries appended to the Raft log.
    pub log_appended_bytes: Counter,
    /// Bytes appended to the Raft log since the last snapshot.
    pub log_bytes_since_snapshot: Gauge,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics {
            appended_packets: Counter::default(),
            duplicate_packets: Counter::default(),
            append_batches: Counter::default(),
            flush_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            syncs: Counter::default(),
            queue_full: Counter::default(),
            queue_full_early: Counter::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            prompt_elections: Counter::default(),
            proposals_waited: Counter::default(),
            proposals_shed: Counter::default(),
            requests_in_flight: Gauge::default(),
            connection_reads_paused: Counter::default(),
            connection_errors: Family::default(),
            connections_refused: Family::default(),
            snapshot: SnapshotMetrics::default(),
            purge_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
            log_write_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 20)),
            log_appended_bytes: Counter::default(),
            log_bytes_since_snapshot: Gauge::default(),
        }
    }
}

struct Inner {
    id: NodeId,
    raft: Raft,
    shared: Arc<SharedState>,
    settings: NodeSettings,
    metrics: NodeMetrics,
    local_addr: SocketAddr,
    gate: ConnectionGate,
    last_log: LastLogId,
    /// Slots for proposals and reads in flight: an overloaded leader queues callers here
    /// instead of letting an unbounded backlog of writes delay its heartbeats and votes
    /// for seconds (seen under CPU starvation: a leader 19 s behind, elections every
    /// second).
    slots: tokio::sync::Semaphore,
    /// The vote this node last served reads under as leader, and the last index of its
    /// log when it first did: see [`Node::read_barrier`].
    takeover: std::sync::Mutex<Option<(openraft::Vote<NodeId>, u64)>>,
    /// The last AppendEntries (entries or heartbeat) this node accepted from a leader.
    leader_contact: std::sync::Mutex<Option<LeaderContact>>,
}

/// When a follower last heard from a leader, and the commit index the leader sent.
#[derive(Clone, Copy, Debug)]
struct LeaderContact {
    at: std::time::Instant,
    leader: NodeId,
    leader_commit: u64,
}

/// How fresh a read of this node's applied state is (see [`Node::freshness`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// This node leads and passed the read barrier: the state reflects every write
    /// acknowledged before the call.
    Current {
        /// Index applied.
        applied: u64,
    },
    /// A follower in contact with its leader: the state lags the leader by what it has
    /// not yet applied.
    Follower {
        /// Index applied here.
        applied: u64,
        /// The leader.
        leader: NodeId,
        /// The leader's commit index as of its last message.
        leader_commit: u64,
        /// Milliseconds since that message.
        heard_ms_ago: u64,
    },
    /// This node leads and a quorum acknowledged it within the last election timeout, but
    /// the read barrier did not pass in time (the node is overloaded, or still applying
    /// the log it took over): the state may lag what the cluster acknowledged.
    Unconfirmed {
        /// Index applied here.
        applied: u64,
    },
    /// No quorum reachable from here (a leader that cannot confirm its leadership, or a
    /// follower that has heard no leader for an election timeout): the state is as of
    /// `applied`, possibly old.
    NoQuorum {
        /// Index applied here.
        applied: u64,
        /// The last commit index a leader sent here, if any.
        leader_commit: Option<u64>,
        /// Milliseconds since a leader was last heard (follower) or a quorum last
        /// acknowledged this leader, if ever.
        heard_ms_ago: Option<u64>,
    },
}

/// Opens a node's storage in `data_dir` (needs a tokio runtime: the log's flushers are
/// tasks): the log (segment files in `entries`, sled in `log`) and the state machine
/// (restored from the snapshot in `snapshot`).
// NodeError carries openraft's StorageError (over 200 bytes), as Node::open's does.
#[allow(clippy::result_large_err)]
pub(crate) fn open_storage(
    data_dir: &std::path::Path,
    dedup: DedupLimits,
    max_queue_bytes: u64,
    metrics: &NodeMetrics,
    sync_hook: Option<super::log_store::SyncHook>,
) -> Result<(LogStore, StateMachineStore), NodeError> {
    // Layout: <data_dir>/entries (the log's segment files), <data_dir>/log (sled: vote,
    // committed index, purge point), <data_dir>/snapshot.
    let log_dir = data_dir.join("log");
    // The data directory and sled's own are durable before anything is written in
    // them (sled creates them without syncing their parents).
    super::segment_log::create_dir_durable(&log_dir).map_err(|e| NodeError::DataDir {
        path: data_dir.to_path_buf(),
        source: sled::Error::Io(e),
    })?;
    let db = sled::Config::new()
        .path(&log_dir)
        // sled caches 1 GiB by default; it holds a few small keys.
        .cache_capacity(SLED_CACHE_BYTES)
        // Durability comes from our own flushes (a vote, a purge point); sled's
        // periodic background flush would only compete with the log's.
        .flush_every_ms(None)
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(|source| NodeError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
    let store_metrics = StoreMetrics {
        flush_seconds: metrics.flush_seconds.clone(),
        syncs: metrics.syncs.clone(),
        purge_seconds: metrics.purge_seconds.clone(),
        appended_bytes: metrics.log_appended_bytes.clone(),
        write_seconds: metrics.log_write_seconds.clone(),
    };
    let log_store = LogStore::open(
        &db,
        &log_dir,
        &data_dir.join("entries"),
        store_metrics,
        sync_hook,
    )?;
    let state_machine = StateMachineStore::open(
        &data_dir.join("snapshot"),
        dedup,
        max_queue_bytes,
        metrics.snapshot.clone(),
    )?;
    Ok((log_store, state_machine))
}

/// A running Raft node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl Node {
    /// Opens storage and starts Raft; `local_addr` is where the caller's listener (see
    /// [`super::start`]) serves peers and queue clients. Does not initialise a cluster:
    /// see [`Node::initialize`].
    pub(super) async fn open(
        settings: NodeSettings,
        local_addr: SocketAddr,
        sync_hook: Option<super::log_store::SyncHook>,
    ) -> Result<Node, NodeError> {
        let metrics = NodeMetrics::default();
        let (log_store, state_machine) = open_storage(
            &settings.data_dir,
            settings.dedup,
            settings.max_queue_bytes,
            &metrics,
            sync_hook,
        )?;
        let last_log = log_store.last_log();
        let shared = state_machine.shared();
        let config = Arc::new(settings.raft.clone().validate()?);
        let network = Network::new(
            settings.secret,
            settings.connect_timeout,
            settings.peer_retry_backoff,
        );
        let settings_budget = settings.budget;
        let lease = Duration::from_millis(config.election_timeout_max);
        let max_inflight = settings.max_inflight_proposals.max(1);
        let raft = Raft::new(settings.id, config, network, log_store, state_machine).await?;
        let snapshot_bytes = {
            let shared = shared.clone();
            Arc::new(move || shared.snapshot_bytes())
        };
        tokio::spawn(super::snapshot_policy::run(
            raft.clone(),
            settings.snapshot_rule,
            metrics.log_appended_bytes.clone(),
            snapshot_bytes,
            metrics.log_bytes_since_snapshot.clone(),
        ));
        if settings.prompt_election {
            tokio::spawn(prompt_election::run(
                raft.clone(),
                settings.id,
                last_log.clone(),
                settings.secret,
                lease,
                metrics.prompt_elections.clone(),
            ));
        }
        Ok(Node {
            inner: Arc::new(Inner {
                id: settings.id,
                raft,
                shared,
                settings,
                metrics,
                local_addr,
                gate: ConnectionGate::new(&settings_budget),
                last_log,
                slots: tokio::sync::Semaphore::new(max_inflight),
                takeover: std::sync::Mutex::new(None),
                leader_contact: std::sync::Mutex::new(None),
            }),
        })
    }

    /// What this node knows of its leader, for a peer's prompt election probe.
    pub async fn lease_view(&self) -> Option<LeaseView> {
        prompt_election::local_view(&self.inner.raft, &self.inner.last_log)
            .await
            .map(|(view, _)| view)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The address the peer/client listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This node's advertised addresses.
    pub fn advertise(&self) -> &NodeAddr {
        &self.inner.settings.advertise
    }

    /// The settings the node runs with.
    pub fn settings(&self) -> &NodeSettings {
        &self.inner.settings
    }

    /// The openraft handle, for membership changes and metrics.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Admission control of the Raft/queue port.
    pub fn gate(&self) -> &ConnectionGate {
        &self.inner.gate
    }

    /// Counters and histograms (registered by the admin API).
    pub fn metrics(&self) -> &NodeMetrics {
        &self.inner.metrics
    }

    /// openraft's metrics watch.
    pub fn raft_metrics(&self) -> watch::Receiver<RaftMetrics<NodeId, NodeAddr>> {
        self.inner.raft.metrics()
    }

    /// Bootstraps a new cluster with the given members (this node included).
    pub async fn initialize(
        &self,
        members: std::collections::BTreeMap<NodeId, NodeAddr>,
    ) -> Result<(), ProposeError> {
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(|e| ProposeError::Raft(e.to_string()))
    }

    /// True while this node is the Raft leader.
    pub fn is_leader(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.inner.id)
    }

    /// The current leader's id, as far as this node knows.
    pub fn leader_id(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// The current leader's addresses, as far as this node knows.
    pub fn leader_addr(&self) -> Option<NodeAddr> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        m.membership_config.membership().get_node(&leader).cloned()
    }

    /// A slot for one proposal or read, waiting while all are taken: without bound for
    /// the node's own worker ([`Admission::Wait`]), at most `max_proposal_wait` for a
    /// client ([`Admission::Shed`]), which then gets [`ProposeError::Busy`].
    async fn slot(
        &self,
        admission: Admission,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, ProposeError> {
        if let Ok(permit) = self.inner.slots.try_acquire() {
            return Ok(permit);
        }
        self.inner.metrics.proposals_waited.inc();
        let acquire = self.inner.slots.acquire();
        let acquired = match admission {
            Admission::Wait => acquire.await,
            Admission::Shed => {
                let wait = self.inner.settings.max_proposal_wait;
                match tokio::time::timeout(wait, acquire).await {
                    Ok(acquired) => acquired,
                    Err(_) => {
                        self.inner.metrics.proposals_shed.inc();
                        return Err(ProposeError::Busy {
                            waited_ms: wait.as_millis() as u64,
                        });
                    }
                }
            }
        };
        acquired.map_err(|e| ProposeError::Raft(e.to_string()))
    }

    /// Proposes an entry for the node's own worker (never shed); returns once it is
    /// committed and applied on this node.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, ProposeError> {
        self.propose_with(command, Admission::Wait).await
    }

    async fn propose_with(
        &self,
        command: Command,
        admission: Admission,
    ) -> Result<CommandResult, ProposeError> {
        let _slot = self.slot(admission).await?;
        match self.inner.raft.client_write(command).await {
            Ok(response) => Ok(response.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    leader_id: f.leader_id,
                    leader: f.leader_node,
                })
            }
            Err(e) => Err(ProposeError::Raft(e.to_string())),
        }
    }

    /// Appends a batch of packets (duplicates stored once) and waits for commit.
    pub async fn append(&self, batch: Vec<QueuedPacket>) -> Result<AppendResult, ProposeError> {
        let started = std::time::Instant::now();
        // A leader whose applied queue is at its budget refuses at once, without a Raft
        // round: with the consumer stopped, refused appends would otherwise keep growing
        // the log, and with it snapshots, purges and memory. (A follower leaves the
        // answer to the leader: its state may lag.)
        let early = if self.is_leader() {
            self.state().refusal(&batch)
        } else {
            None
        };
        let outcome = match early {
            Some(refused) => {
                self.inner.metrics.queue_full_early.inc();
                refused
            }
            None => {
                self.propose_with(Command::Append { batch }, Admission::Shed)
                    .await?
            }
        };
        match outcome {
            CommandResult::Appended(result) => {
                let m = &self.inner.metrics;
                m.commit_seconds.observe(started.elapsed().as_secs_f64());
                m.append_batches.inc();
                m.appended_packets.inc_by(result.stored as u64);
                m.duplicate_packets.inc_by(result.duplicates as u64);
                Ok(result)
            }
            CommandResult::QueueFull {
                held_bytes,
                max_bytes,
            } => {
                self.inner.metrics.queue_full.inc();
                Err(ProposeError::QueueFull {
                    held_bytes,
                    max_bytes,
                })
            }
            other => Err(ProposeError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Commits a consumer offset through Raft, for a queue client (shed when busy).
    pub async fn commit_offset(&self, consumer: &str, offset: u64) -> Result<(), ProposeError> {
        self.propose_with(
            Command::CommitOffset {
                consumer: consumer.to_string(),
                offset,
            },
            Admission::Shed,
        )
        .await
        .map(|_| ())
    }

    /// Commits a consumer offset (optional) and table writes atomically through Raft.
    pub async fn apply_writes(
        &self,
        consumer: &str,
        offset: Option<u64>,
        writes: Vec<TableWrite>,
    ) -> Result<(), ProposeError> {
        self.propose(Command::Apply {
            consumer: consumer.to_string(),
            offset,
            writes,
        })
        .await
        .map(|_| ())
    }

    /// Waits until this node is sure it is the leader and has applied everything
    /// committed before the call, so reads after it see every acknowledged write. For the
    /// node's own worker: never shed.
    ///
    /// openraft's `ensure_linearizable` alone is not enough after a restart: a node whose
    /// committed vote names itself comes back as leader of the same term, with no blank
    /// entry of its own, and asks the state machine only to reach the committed index it
    /// knows, which can be the last snapshot's. So a read also waits until the state
    /// machine has applied the last entry this node's log held when it first served
    /// under its current vote (every entry of a leader's log commits while it leads):
    /// at most [`CATCH_UP_WAIT`], then [`ProposeError::CatchingUp`].
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        self.read_barrier_with(Admission::Wait).await
    }

    /// [`Node::read_barrier`] for a queue client's read: answered
    /// [`ProposeError::Busy`] when no slot frees within `max_proposal_wait`.
    pub async fn client_read_barrier(&self) -> Result<(), ProposeError> {
        self.read_barrier_with(Admission::Shed).await
    }

    async fn read_barrier_with(&self, admission: Admission) -> Result<(), ProposeError> {
        let _slot = self.slot(admission).await?;
        match self.inner.raft.ensure_linearizable().await {
            Ok(_) => self.caught_up(CATCH_UP_WAIT).await,
            Err(e) => match e.forward_to_leader::<NodeAddr>() {
                Some(f) => Err(ProposeError::NotLeader {
                    leader_id: f.leader_id,
                    leader: f.leader_node.clone(),
                }),
                None => Err(ProposeError::Raft(e.to_string())),
            },
        }
    }

    /// The last index of this node's log when it first served a read under its current
    /// vote (recorded now if it has not yet).
    fn takeover_floor(&self) -> u64 {
        let vote = self.inner.raft.metrics().borrow().vote;
        let mut takeover = self
            .inner
            .takeover
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match *takeover {
            Some((seen, floor)) if seen == vote => floor,
            _ => {
                let floor = self.inner.last_log.get().map_or(0, |l| l.index);
                *takeover = Some((vote, floor));
                floor
            }
        }
    }

    /// Waits (at most `within`) until the state machine has applied the takeover floor.
    async fn caught_up(&self, within: Duration) -> Result<(), ProposeError> {
        let needed = self.takeover_floor();
        let mut applied = self.subscribe_applied();
        let reached = tokio::time::timeout(within, applied.wait_for(|a| *a >= needed)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ProposeError::Raft("state machine stopped".into())),
            Err(_) => Err(ProposeError::CatchingUp {
                applied: self.applied_index(),
                needed,
            }),
        }
    }

    /// Records an AppendEntries this node accepted from leader `leader` (called by the
    /// server for every successful one, heartbeats included).
    pub fn note_leader_contact(&self, leader: NodeId, leader_commit: u64) {
        *self
            .inner
            .leader_contact
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(LeaderContact {
            at: std::time::Instant::now(),
            leader,
            leader_commit,
        });
    }

    /// How fresh a read of this node's state made right after this call is. On the
    /// leader it runs the read barrier (a heartbeat round to a quorum, at most `within`);
    /// on a follower it looks at when it last heard from a leader.
    pub async fn freshness(&self, within: Duration) -> Freshness {
        let lease = Duration::from_millis(self.inner.settings.raft.election_timeout_max);
        if self.is_leader() {
            match tokio::time::timeout(within, self.client_read_barrier()).await {
                Ok(Ok(())) => {
                    return Freshness::Current {
                        applied: self.applied_index(),
                    }
                }
                Ok(Err(ProposeError::NotLeader { .. })) => {}
                _ => {
                    let acked = self.inner.raft.metrics().borrow().millis_since_quorum_ack;
                    if acked.is_some_and(|ms| u128::from(ms) <= lease.as_millis()) {
                        return Freshness::Unconfirmed {
                            applied: self.applied_index(),
                        };
                    }
                    return Freshness::NoQuorum {
                        applied: self.applied_index(),
                        leader_commit: None,
                        heard_ms_ago: acked,
                    };
                }
            }
        }
        let contact = *self
            .inner
            .leader_contact
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let applied = self.applied_index();
        match contact {
            Some(c) if c.at.elapsed() <= lease && self.leader_id() == Some(c.leader) => {
                Freshness::Follower {
                    applied,
                    leader: c.leader,
                    leader_commit: c.leader_commit,
                    heard_ms_ago: c.at.elapsed().as_millis() as u64,
                }
            }
            _ => Freshness::NoQuorum {
                applied,
                leader_commit: contact.map(|c| c.leader_commit),
                heard_ms_ago: contact.map(|c| c.at.elapsed().as_millis() as u64),
            },
        }
    }

    /// Applied packets with offset >= `from`, at most `max` (no leader check).
    pub fn read_local(&self, from: u64, max: usize) -> Vec<(u64, QueuedPacket)> {
        self.state()
            .read(from, max.min(self.inner.settings.max_read))
    }

    /// Read access to the applied state (queue, offsets, tables). Keep it short.
    pub fn state(&self) -> RwLockReadGuard<'_, QueueState> {
        self.inner.shared.read()
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.inner.shared.applied_index()
    }

    /// Watch of the applied index, for consumers waiting for new entries.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.inner.shared.subscribe_applied()
    }

    /// Snapshots installed from a leader since start.
    pub fn snapshots_installed(&self) -> u64 {
        self.inner.shared.snapshots_installed()
    }

    /// Snapshots built locally since start.
    pub fn snapshots_built(&self) -> u64 {
        self.inner.shared.snapshots_built()
    }

    /// Resolves when Raft has stopped for good (storage failure, internal error): the
    /// process should then exit so a supervisor restarts it from disk.
    pub async fn fatal(&self) -> String {
        let mut metrics = self.inner.raft.metrics();
        loop {
            if let Err(e) = &metrics.borrow_and_update().running_state {
                return e.to_string();
            }
            if metrics.changed().await.is_err() {
                return "raft stopped".to_string();
            }
        }
    }

    /// Stops Raft.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.inner.settings.secret
    }
}
