//! The packet-reader: a small, stateless daemon that receives nanoprobe reports over UDP,
//! verifies them, appends them in batches to the Raft-replicated queue of the CMA nodes,
//! and acknowledges each report only once its batch is committed.
//!
//! - [`accepted`]: the verified report on its way from ingest to ACK.
//! - [`ingest`]: sockets and receive loops (verification, filtering).
//! - [`batcher`]: batching by count, bytes and time, with bounded in-flight appends.
//! - [`acker`]: append with retry, then ACK.
//! - [`config`], [`metrics`].

pub mod accepted;
pub mod acker;
pub mod batcher;
pub mod config;
pub mod ingest;
pub mod metrics;

use crate::acker::Submitter;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use proto::{HostId, KeyFileError, KeyRing, Sealer, SessionId};
use queue::SecretError;
use queue::{load_cluster_secret, ClientConfig, ClientError, QueueClient};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Why a packet-reader could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The key file could not be loaded.
    #[error("loading key file {path}: {source}")]
    Keys {
        /// The key file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        source: KeyFileError,
    },
    /// The cluster secret could not be loaded.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The queue client refused its settings.
    #[error("queue client: {0}")]
    Client(#[from] ClientError),
    /// A UDP socket or the metrics listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

/// A started packet-reader.
pub struct Reader {
    /// The addresses the sockets are bound to (one per `listen` entry, port resolved).
    pub local_addrs: Vec<SocketAddr>,
    /// The metrics, for tests and embedding.
    pub metrics: Metrics,
    shutdown: watch::Sender<bool>,
    receivers: Vec<tokio::task::JoinHandle<()>>,
    batcher: tokio::task::JoinHandle<()>,
    acker: tokio::task::JoinHandle<()>,
}

impl Reader {
    /// Binds the sockets and the metrics listener and starts every task.
    pub async fn start(config: &Config) -> Result<Reader, StartError> {
        config.validate()?;
        let keys =
            Arc::new(
                KeyRing::load(&config.key_file).map_err(|source| StartError::Keys {
                    path: config.key_file.clone(),
                    source,
                })?,
            );
        let secret = load_cluster_secret(&config.cluster_secret_file)?;
        let mut client_config = ClientConfig::new(config.cma_nodes.clone(), secret);
        client_config.request_timeout = config.batch.request_timeout();
        let client = QueueClient::new(client_config)?;
        let mut sockets = Vec::new();
        let mut local_addrs = Vec::new();
        for &listen in &config.listen {
            let bind_error = |source| StartError::Bind {
                addr: listen,
                source,
            };
            let bound = ingest::bind_sockets(listen, config.sockets, config.recv_buffer_bytes)
                .map_err(bind_error)?;
            if let Some(first) = bound.first() {
                local_addrs.push(first.local_addr().map_err(bind_error)?);
            }
            sockets.extend(bound);
        }
        let metrics = Metrics::default();
        if let Some(addr) = config.metrics_listen {
            let mut registry = metrics.registry();
            let stats = daemon::metrics::ListenerStats::default();
            stats.register(&mut registry);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?;
            tokio::spawn(daemon::metrics::serve(
                listener,
                daemon::metrics::Limits::default(),
                stats,
                move || daemon::metrics::render(&registry),
            ));
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (tx, rx) = mpsc::channel(config.batch.pending_limit);
        let (committed_tx, committed_rx) = mpsc::channel(config.batch.max_in_flight);
        let sealer = Sealer::new(
            keys.clone(),
            HostId(config.host_id),
            SessionId::from_clock(),
        );
        let acker = tokio::spawn(acker::send_acks(
            committed_rx,
            sealer,
            sockets.clone(),
            metrics.clone(),
        ));
        let submitter = Arc::new(Submitter {
            client,
            committed: committed_tx,
            metrics: metrics.clone(),
            give_up: config.batch.give_up(),
        });
        let batcher = tokio::spawn(batcher::run(
            config.batch,
            rx,
            submitter,
            shutdown_rx.clone(),
        ));
        let receivers = sockets
            .iter()
            .enumerate()
            .map(|(index, socket)| {
                tokio::spawn(ingest::receive_loop(
                    index,
                    socket.clone(),
                    keys.clone(),
                    config.max_senders,
                    tx.clone(),
                    metrics.clone(),
                    shutdown_rx.clone(),
                ))
            })
            .collect();
        tracing::info!(
            ?local_addrs,
            sockets = config.sockets,
            host_id = config.host_id,
            "packet-reader listening"
        );
        Ok(Reader {
            local_addrs,
            metrics,
            shutdown,
            receivers,
            batcher,
            acker,
        })
    }

    /// Stops receiving, commits and ACKs what was already received (each append bounded
    /// by `batch.give_up_ms`), then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.receivers {
            let _ = task.await;
        }
        let _ = self.batcher.await;
        let _ = self.acker.await;
    }
}
