//! The I/O shell around the [`Outbox`]: one UDP socket on the leader that sends sealed
//! commands to nanoprobes, retransmits them until acknowledged and receives the ACKs.

use super::outbox::{Outbound, Outbox, OutboxConfig, Settled};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use proto::{Body, HostId, KeyRing, Sealer, SessionId, Verifier, MAX_DATAGRAM};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Counters of the command channel.
#[derive(Clone, Default)]
pub struct CommanderMetrics {
    /// Command datagrams sent (first sends and retransmissions).
    pub sent: Counter,
    /// Commands acknowledged.
    pub acked: Counter,
    /// Commands given up without an ACK.
    pub gave_up: Counter,
    /// Commands refused because the outbox was full.
    pub overflow: Counter,
    /// Datagrams received on the command socket and refused, by reason.
    pub rejected: Family<Vec<(String, String)>, Counter>,
    /// Commands waiting for an ACK.
    pub pending: Gauge,
}

impl CommanderMetrics {
    /// Registers the metrics under `ringwatch_commands_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ringwatch_commands_sent",
            "Command datagrams sent",
            self.sent.clone(),
        );
        registry.register(
            "ringwatch_commands_acked",
            "Commands acknowledged",
            self.acked.clone(),
        );
        registry.register(
            "ringwatch_commands_gave_up",
            "Commands given up without an ACK",
            self.gave_up.clone(),
        );
        registry.register(
            "ringwatch_commands_overflow",
            "Commands refused because the outbox was full",
            self.overflow.clone(),
        );
        registry.register(
            "ringwatch_commands_rejected",
            "Datagrams refused on the command socket, by reason",
            self.rejected.clone(),
        );
        registry.register(
            "ringwatch_commands_pending",
            "Commands waiting for an ACK",
            self.pending.clone(),
        );
    }
}

/// What the worker hands to the commander.
#[derive(Debug)]
pub enum CommanderRequest {
    /// Deliver these commands (already committed through Raft).
    Send(Vec<Outbound>),
}

/// A handle to the running commander task.
#[derive(Clone)]
pub struct Commander {
    tx: mpsc::Sender<CommanderRequest>,
    local: SocketAddr,
    sealer: SharedSealer,
}

/// The node's one sealer for datagrams to nanoprobes (commands and `cmactl probe` echo
/// requests). A nanoprobe accepts only the newest session of a sender, so everything this
/// node sends under its wire host id must share one session and one sequence.
pub type SharedSealer = Arc<std::sync::Mutex<Sealer>>;

/// Seals `body` with the shared sealer (a poisoned lock still holds a usable sealer).
pub fn seal_shared(
    sealer: &SharedSealer,
    body: &Body,
    out: &mut Vec<u8>,
) -> Result<u64, proto::SealError> {
    match sealer.lock() {
        Ok(mut s) => s.seal_into(body, out),
        Err(poisoned) => poisoned.into_inner().seal_into(body, out),
    }
}

impl Commander {
    /// Binds the command socket and starts the task. `acked` receives every settled command.
    pub async fn start(
        bind: SocketAddr,
        keys: Arc<KeyRing>,
        sender: HostId,
        config: OutboxConfig,
        metrics: CommanderMetrics,
        settled: mpsc::UnboundedSender<Settled>,
    ) -> std::io::Result<Commander> {
        let socket = UdpSocket::bind(bind).await?;
        let local = socket.local_addr()?;
        let (tx, rx) = mpsc::channel(1024);
        let session = SessionId::from_clock();
        let sealer = Arc::new(std::sync::Mutex::new(Sealer::new(
            keys.clone(),
            sender,
            session,
        )));
        let verifier = Verifier::new(keys, proto::replay::DEFAULT_MAX_SENDERS);
        tokio::spawn(run(
            socket,
            sealer.clone(),
            verifier,
            Outbox::new(config),
            rx,
            metrics,
            settled,
        ));
        Ok(Commander { tx, local, sealer })
    }

    /// The sealer the commands are sealed with, for other datagrams this node sends to
    /// nanoprobes.
    pub fn sealer(&self) -> SharedSealer {
        self.sealer.clone()
    }

    /// The socket's address (where ACKs come back).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Queues commands for delivery; waits only if the task is far behind.
    pub async fn send(&self, commands: Vec<Outbound>) {
        if commands.is_empty() {
            return;
        }
        if self
            .tx
            .send(CommanderRequest::Send(commands))
            .await
            .is_err()
        {
            tracing::error!("commander task is gone; commands not sent");
        }
    }
}

async fn run(
    socket: UdpSocket,
    sealer: SharedSealer,
    mut verifier: Verifier,
    mut outbox: Outbox,
    mut rx: mpsc::Receiver<CommanderRequest>,
    metrics: CommanderMetrics,
    settled: mpsc::UnboundedSender<Settled>,
) {
    let session = match sealer.lock() {
        Ok(s) => s.session(),
        Err(poisoned) => poisoned.into_inner().session(),
    };
    let epoch = Instant::now();
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    loop {
        let wake = outbox
            .next_due()
            .map(|d| epoch + d)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            request = rx.recv() => match request {
                Some(CommanderRequest::Send(commands)) => {
                    let now = epoch.elapsed();
                    for outbound in commands {
                        if outbox.push(outbound, now).is_err() {
                            metrics.overflow.inc();
                        }
                    }
                }
                None => return,
            },
            received = socket.recv_from(&mut buf) => {
                let (len, from) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "command socket receive failed");
                        continue;
                    }
                };
                match verifier.verify(&buf[..len]) {
                    Ok(v) => match v.body {
                        Body::Ack(ack) if ack.session == session => {
                            if let Some(s) = outbox.ack(ack.id) {
                                metrics.acked.inc();
                                let _ = settled.send(s);
                            }
                        }
                        other => {
                            tracing::debug!(%from, kind = other.kind(), "unexpected datagram on command socket");
                            metrics.rejected.get_or_create(&vec![("reason".into(), "unexpected".into())]).inc();
                        }
                    },
                    Err(rejection) => {
                        metrics
                            .rejected
                            .get_or_create(&vec![("reason".into(), rejection.reason().into())])
                            .inc();
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let (due, gave_up) = outbox.due(epoch.elapsed());
        for outbound in due {
            let body = Body::Command(outbound.command.clone());
            match seal_shared(&sealer, &body, &mut out) {
                Ok(_) => {
                    if let Err(e) = socket.send_to(&out, outbound.addr).await {
                        tracing::debug!(to = %outbound.addr, error = %e, "command send failed");
                    }
                    metrics.sent.inc();
                }
                Err(e) => {
                    tracing::error!(command = outbound.command.id, error = %e, "cannot seal command");
                    outbox.ack(outbound.command.id);
                }
            }
        }
        for s in gave_up {
            if let Settled::GaveUp { id, to, attempts } = &s {
                tracing::warn!(command = id, host = %to, attempts, "command never acknowledged; giving up");
            }
            metrics.gave_up.inc();
            let _ = settled.send(s);
        }
        metrics.pending.set(outbox.len() as i64);
    }
}
