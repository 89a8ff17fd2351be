//! The daemon: one loop that reads the socket, feeds the pure engines (heartbeats,
//! reports, commands) with events and time, and carries out what they return.

use crate::commands::{self, Applied, CommandMemory, ProbeOrder, MAX_PROBE_TARGETS};
use crate::config::Config;
use crate::guard::SourceGuard;
use crate::heartbeat::{Action, HeartbeatEngine};
use crate::lldp::{NeighbourTable, Observed};
use crate::metrics::Metrics;
use crate::peers::{Forwarded, PeerSockets};
use crate::probes::{run_probe, EchoSetup};
use crate::recv::{self, RecvBatch};
use crate::reports::ReportSender;
use crate::{capture, discovery, socket};
use daemon::warn::WarnEvery;
use proto::{
    Ack, Body, Command, Heartbeat, HostId, KeyRing, ProbeKind, ProbeResult, ReportBody, Sealer,
    SessionId, Startup, Verifier,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Most senders whose replay state is tracked.
const MAX_SENDERS: usize = 4096;
/// Most datagrams read from the socket in one go (in `recvmmsg` batches of
/// [`recv::BATCH`]) before timers are looked at: under a flood the loop drains the socket
/// instead of paying the timer work per datagram.
const DRAIN_BATCH: usize = 256;
/// If no LLDP/CDP neighbour is heard this long after start (lldpd's default interval is
/// 30 s), an empty neighbour set is reported so the CMA forgets an earlier run's.
const LLDP_START_GRACE: Duration = Duration::from_secs(40);
/// How often the gateway's MAC is looked up in the ARP table.
const ARP_CHECK_EVERY: Duration = Duration::from_secs(2);
/// Parsed LLDP/CDP frames waiting for the daemon loop.
const LLDP_QUEUE: usize = 64;
/// A report unacknowledged for this long gets a warning (rate-limited).
const UNACKED_WARN_AFTER: Duration = Duration::from_secs(10);
/// Least time between two warnings of one kind.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The key file is unusable.
    #[error(transparent)]
    Keys(#[from] proto::KeyFileError),
    /// A socket or signal handler could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being set up.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Io { what, source }
}

use daemon::clock::wall_clock_us as wall_us;

/// The running nanoprobe.
struct Node {
    host: HostId,
    sealer: Sealer,
    verifier: Verifier,
    keys: Arc<KeyRing>,
    socket: UdpSocket,
    engine: HeartbeatEngine,
    reports: ReportSender,
    commands: CommandMemory,
    metrics: Arc<Metrics>,
    probe_tx: mpsc::Sender<ProbeResult>,
    out: Vec<u8>,
    next_nonce: u64,
    guard: SourceGuard,
    /// Own sockets of authenticated peers, and what they read.
    peer_sockets: PeerSockets,
    from_peers: mpsc::Receiver<Forwarded>,
    bad_mac_warning: WarnEvery,
    unacked_warning: WarnEvery,
    lldp: NeighbourTable,
    /// The default gateway and its MAC as last reported (one router has one MAC on all
    /// its interfaces, which is how the CMA groups gateways into routers).
    gateway: Option<std::net::IpAddr>,
    gateway_mac: Option<String>,
    next_arp_check: Instant,
}

/// Runs the nanoprobe until SIGTERM or SIGINT, then stops gracefully.
pub async fn run(config: Config) -> Result<(), NodeError> {
    let host = config.validate()?;
    let key_path = config.key_file.clone().unwrap_or_default();
    let keys = Arc::new(KeyRing::load(&key_path)?);
    let std_socket = socket::bind_udp(config.bind, &config.socket)
        .map_err(io_err(format!("binding UDP {}", config.bind)))?;
    if let Err(e) = RecvBatch::enable_drop_counter(&std_socket) {
        tracing::warn!(error = %e, "cannot enable the receive drop counter (SO_RXQ_OVFL)");
    }
    let socket = UdpSocket::from_std(std_socket).map_err(io_err("registering UDP socket"))?;
    let local = socket.local_addr().map_err(io_err("local address"))?;
    let session = SessionId::from_clock();
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(io_err(format!("binding metrics listener {addr}")))?;
        let m = metrics.clone();
        tokio::spawn(daemon::metrics::serve(
            listener,
            daemon::metrics::Limits::default(),
            metrics.listener.clone(),
            move || m.render(),
        ));
    }
    let mut stop = daemon::signals::StopSignals::install().map_err(io_err("signal handlers"))?;
    let (probe_tx, mut probe_rx) = mpsc::channel(MAX_PROBE_TARGETS);
    let (peer_sockets, from_peers) = PeerSockets::new(local, &config.socket);
    let mut node = Node {
        host,
        sealer: Sealer::new(keys.clone(), host, session),
        verifier: Verifier::new(keys.clone(), MAX_SENDERS),
        keys,
        socket,
        engine: HeartbeatEngine::new(config.timings.to_hb(), config.martian_report_interval())
            // Echo nonces start at the session id (the start time in µs) plus 2^62, apart
            // from the probe nonces, so replies from an earlier run never match.
            .with_detection(
                config.detection.to_engine(),
                session.0.wrapping_add(1 << 62),
            ),
        reports: ReportSender::new(host, &config.packet_readers, config.reports),
        commands: CommandMemory::new(config.command_memory),
        metrics,
        probe_tx,
        out: Vec::with_capacity(proto::MAX_DATAGRAM),
        next_nonce: session.0,
        guard: SourceGuard::default(),
        peer_sockets,
        from_peers,
        bad_mac_warning: WarnEvery::new(WARN_EVERY),
        unacked_warning: WarnEvery::new(WARN_EVERY),
        lldp: NeighbourTable::new(config.lldp.limits())
            .report_empty_after(Instant::now() + LLDP_START_GRACE),
        gateway: discovery::default_gateway(),
        gateway_mac: None,
        next_arp_check: Instant::now(),
    };
    // Frames parsed by the capture task; a small bound, since the table only needs the
    // latest of each neighbour (what does not fit is dropped and counted).
    let (lldp_tx, mut lldp_rx) = mpsc::channel::<capture::Heard>(LLDP_QUEUE);
    if config.lldp.enabled {
        match capture::open() {
            Ok(sock) => {
                tokio::spawn(capture::run(sock, lldp_tx, node.metrics.clone()));
            }
            Err(e) => tracing::warn!(
                error = %e,
                "cannot listen for LLDP/CDP (needs CAP_NET_RAW); the switch is learned \
                 from lldpctl at start-up only"
            ),
        }
    } else {
        drop(lldp_tx);
    }
    let startup = Startup {
        hostname: discovery::hostname(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        listen: local,
        interfaces: discovery::interfaces(),
        gateway: node.gateway,
        lldp: tokio::task::spawn_blocking(discovery::lldp_neighbour)
            .await
            .unwrap_or(None),
    };
    node.report(ReportBody::Startup(startup), Instant::now());
    node.tick(Instant::now()).await;
    tracing::info!(%host, %session, %local, "nanoprobe started; waiting for SendExpectHb");
    // The watchdog is pinged from this loop, so a stuck loop gets the daemon restarted.
    let watchdog = daemon::systemd::notify_ready();
    let mut next_watchdog = watchdog.map(|d| Instant::now() + d);
    let mut buf = vec![0u8; proto::MAX_DATAGRAM + 1];
    // One byte more than the longest valid datagram, so a longer one is seen as too long.
    let mut batch = RecvBatch::new(proto::MAX_DATAGRAM + 1);
    loop {
        let now = Instant::now();
        let deadline = [
            node.engine.next_deadline(),
            node.reports.next_deadline(),
            node.lldp.next_deadline(),
            Some(node.next_arp_check),
            next_watchdog,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_secs(3600));
        tokio::select! {
            ready = node.socket.readable() => match ready {
                Ok(()) => node.drain(&mut batch).await,
                Err(e) => tracing::debug!(error = %e, "recv error"),
            },
            Some(forwarded) = node.from_peers.recv() => {
                node.on_forwarded(forwarded, Instant::now()).await;
                node.serve_peers(Instant::now()).await;
            }
            Some(result) = probe_rx.recv() => {
                node.report(ReportBody::ProbeResult(result), Instant::now());
            }
            Some(heard) = lldp_rx.recv() => {
                node.on_lldp(heard, Instant::now());
                while let Ok(heard) = lldp_rx.try_recv() {
                    node.on_lldp(heard, Instant::now());
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
            signal = stop.recv() => {
                tracing::info!(signal, "stopping");
                break;
            }
        }
        let now = Instant::now();
        if let (Some(at), Some(every)) = (next_watchdog, watchdog) {
            if now >= at {
                daemon::systemd::ping_watchdog();
                next_watchdog = Some(now + every);
            }
        }
        node.tick(now).await;
    }
    node.shutdown(Duration::from_millis(config.shutdown_ack_wait_ms), &mut buf)
        .await;
    Ok(())
}

impl Node {
    /// Reads and handles what is queued on the socket, up to [`DRAIN_BATCH`] datagrams.
    async fn drain(&mut self, batch: &mut RecvBatch) {
        let now = Instant::now();
        for _ in 0..DRAIN_BATCH / recv::BATCH {
            let read = self
                .socket
                .try_io(tokio::io::Interest::READABLE, || batch.recv(&self.socket));
            match read {
                Ok(n) => {
                    for i in 0..n {
                        if let Some((datagram, Some(from))) = batch.get(i) {
                            self.on_datagram(datagram, from, now).await;
                        }
                    }
                    // Peers' datagrams, from their own sockets, between two batches of the
                    // shared socket: a flood there delays them by one batch at most.
                    self.serve_peers(now).await;
                    // Read again even after a short batch: only `WouldBlock` clears the
                    // socket's readiness, and it costs no more than a wake-up would.
                }
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::WouldBlock {
                        tracing::debug!(error = %e, "recv error");
                    }
                    break;
                }
            }
        }
        self.metrics.receive_overflows.inc_by(batch.take_drops());
        // Under a flood the socket is always ready, so this task would never wait and the
        // runtime (one thread) would not run the peer sockets' readers or refresh their
        // readiness; yielding after every drain lets them forward genuine datagrams.
        tokio::task::yield_now().await;
    }

    /// Handles the datagrams the peer sockets forwarded so far (a bounded number).
    async fn serve_peers(&mut self, now: Instant) {
        for _ in 0..recv::BATCH {
            match self.from_peers.try_recv() {
                Ok(forwarded) => self.on_forwarded(forwarded, now).await,
                Err(_) => break,
            }
        }
    }

    async fn on_forwarded(&mut self, forwarded: Forwarded, now: Instant) {
        match forwarded {
            Forwarded::Datagram(datagram, from) => self.on_datagram(&datagram, from, now).await,
            Forwarded::Refused(peer) => {
                self.metrics.heartbeats_refused.inc();
                for action in self.engine.on_refused(peer) {
                    if let Action::Report(ReportBody::HbRefused { peer: host }) = &action {
                        tracing::info!(peer = host.0, addr = %peer, "peer's port unreachable: its nanoprobe is not running");
                    }
                    self.act(action, now).await;
                }
            }
        }
    }

    async fn send(&mut self, body: &Body, to: SocketAddr) {
        match self.sealer.seal_into(body, &mut self.out) {
            Ok(_) => {
                if let Err(e) = self.socket.send_to(&self.out, to).await {
                    self.metrics.send_errors.inc();
                    tracing::debug!(%to, error = %e, kind = body.kind(), "send failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot seal"),
        }
    }

    fn report(&mut self, body: ReportBody, now: Instant) {
        let kind = body.kind();
        tracing::info!(kind, report = ?body, "report");
        let (_, dropped) = self.reports.enqueue(body, now);
        if let Some(d) = dropped {
            tracing::warn!(dropped = d.kind, new = kind, "report queue full");
            Metrics::inc(&self.metrics.reports_dropped, d.kind);
        }
    }

    /// One parsed LLDP/CDP frame from the capture task.
    fn on_lldp(&mut self, heard: capture::Heard, now: Instant) {
        match self.lldp.observe(&heard.iface, heard.announcement, now) {
            Observed::TableFull => Metrics::inc(&self.metrics.lldp_frames, "table_full"),
            Observed::New | Observed::Withdrawn => {
                tracing::debug!(iface = %heard.iface, "LLDP/CDP neighbour set changed")
            }
            Observed::Refreshed | Observed::Ignored => {}
        }
    }

    /// Reports the LLDP/CDP neighbour set when it changed (rate-limited by the table).
    fn poll_lldp(&mut self, now: Instant) {
        if now >= self.next_arp_check {
            self.next_arp_check = now + ARP_CHECK_EVERY;
            let mac = self.gateway.and_then(discovery::arp_mac);
            if mac.is_some() && mac != self.gateway_mac {
                self.gateway_mac = mac;
                self.lldp.force_report();
            }
        }
        if let Some(neighbours) = self.lldp.poll(now) {
            let report = proto::discovery::NeighbourReport {
                neighbours,
                gateway_mac: self.gateway_mac.clone(),
            };
            match serde_json::to_string(&report) {
                Ok(data) => self.report(
                    ReportBody::Discovery {
                        kind: proto::discovery::LLDP_KIND.to_string(),
                        data,
                    },
                    now,
                ),
                Err(e) => tracing::warn!(error = %e, "cannot encode the neighbour report"),
            }
        }
        self.metrics.lldp_neighbours.set(self.lldp.len() as i64);
    }

    /// Fires due timers of both engines and sends what they ask for.
    async fn tick(&mut self, now: Instant) {
        self.peer_sockets.expire(now);
        for action in self.engine.poll(now) {
            self.act(action, now).await;
        }
        self.poll_lldp(now);
        self.send_due_reports(now).await;
        if let Some(age) = self.reports.oldest_unacked(now) {
            if age >= UNACKED_WARN_AFTER {
                if let Some(suppressed) = self.unacked_warning.check(now) {
                    tracing::warn!(
                        waited_s = age.as_secs(),
                        reader = ?self.reports.current_reader(),
                        key_id = self.keys.primary().0 .0,
                        suppressed,
                        "reports are not acknowledged: the packet-readers are unreachable, or \
                         they do not hold this host's key (check packet_readers and key_file)"
                    );
                }
            }
        }
        self.metrics
            .reports_pending
            .set(self.reports.pending_len() as i64);
        self.metrics.peers.set(self.engine.peer_count() as i64);
    }

    async fn send_due_reports(&mut self, now: Instant) {
        for out in self.reports.poll(now) {
            let kind = out.report.body.kind();
            Metrics::inc(&self.metrics.reports_sent, kind);
            if out.retry {
                Metrics::inc(&self.metrics.reports_retried, kind);
            }
            self.send(&Body::Report(out.report), out.to).await;
        }
    }

    async fn act(&mut self, action: Action, now: Instant) {
        match action {
            Action::SendHeartbeat { to } => {
                self.metrics.heartbeats_sent.inc();
                let hb = Body::Heartbeat(Heartbeat {
                    sent_at_us: wall_us(),
                    leaving: false,
                });
                self.send(&hb, to).await;
            }
            Action::Report(body) => self.report(body, now),
            Action::SendEcho { peer, to, nonce } => {
                tracing::debug!(%peer, %to, nonce, "confirming a silent peer: echo request");
                self.metrics.confirm_echoes_sent.inc();
                // Sealed by the daemon's sealer: sequence numbers stay unique.
                self.send(&Body::EchoRequest { nonce }, to).await;
            }
            Action::DeadAverted { peer } => {
                tracing::info!(%peer, "silent peer answered during confirmation: no HbDead");
                self.metrics.dead_averted.inc();
            }
        }
    }

    async fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr, now: Instant) {
        if !self.guard.admits(from.ip(), now) {
            // This source's failure budget is spent: not even the MAC is computed.
            self.metrics.rate_limited.inc();
            return;
        }
        let verified = match self.verifier.verify(datagram) {
            Ok(v) => v,
            Err(r) => {
                self.guard.failed(from.ip(), now);
                Metrics::inc(&self.metrics.rejected, r.reason());
                tracing::debug!(%from, reason = r.reason(), "datagram rejected");
                if matches!(r.reason(), "bad_mac" | "unknown_key") {
                    if let Some(suppressed) = self.bad_mac_warning.check(now) {
                        tracing::warn!(
                            %from,
                            reason = r.reason(),
                            key_id = self.keys.primary().0 .0,
                            suppressed,
                            "datagram failed authentication: the sender uses another key \
                             (every host needs the same key file) or the traffic is forged"
                        );
                    }
                }
                return;
            }
        };
        self.guard.authentic(from.ip(), now);
        if let Err(e) = self.peer_sockets.authentic(from, now) {
            tracing::debug!(%from, error = %e, "cannot open a peer socket");
        }
        let sender = verified.header.sender;
        match verified.body {
            Body::Heartbeat(hb) => {
                if sender == self.host {
                    return;
                }
                self.metrics.heartbeats_received.inc();
                for action in self
                    .engine
                    .on_heartbeat(sender, from, hb.leaving, now, wall_us())
                {
                    self.act(action, now).await;
                }
            }
            Body::Command(cmd) => {
                let ack = Body::Ack(Ack {
                    session: verified.header.session,
                    id: cmd.id,
                });
                self.send(&ack, from).await;
                Metrics::inc(&self.metrics.commands, cmd.body.kind());
                if self.commands.first_time(cmd.id) {
                    self.apply(cmd, now).await;
                } else {
                    self.metrics.command_duplicates.inc();
                }
            }
            Body::Ack(ack) => {
                if ack.session == self.sealer.session() && !self.reports.on_ack(ack.id) {
                    tracing::debug!(id = ack.id, "ack for no pending report");
                }
            }
            Body::EchoRequest { nonce } => {
                self.send(&Body::EchoReply { nonce }, from).await;
            }
            Body::EchoReply { nonce } => {
                // Replies to the confirmation echoes (probe replies go to the probe's own
                // socket).
                for action in self.engine.on_echo_reply(sender, nonce, now, wall_us()) {
                    self.act(action, now).await;
                }
            }
            Body::Report(_) => {
                Metrics::inc(&self.metrics.rejected, "unexpected_kind");
            }
        }
    }

    async fn apply(&mut self, cmd: Command, now: Instant) {
        tracing::info!(id = cmd.id, kind = cmd.body.kind(), "applying command");
        match commands::apply(&mut self.engine, cmd.body, now) {
            Applied::Done => {}
            Applied::BadTimings { command, error } => {
                tracing::warn!(id = cmd.id, %error, "{command} with bad timings ignored")
            }
            Applied::Probe(order) => {
                let timeout = order.timeout();
                let ProbeOrder {
                    probe_id,
                    targets,
                    kind,
                    ..
                } = order;
                for target in targets {
                    let echo = match kind {
                        ProbeKind::UdpEcho { .. } => {
                            // One request per attempt, each with its own nonce and envelope
                            // sequence number (a resent datagram would be a replay).
                            let mut requests = Vec::new();
                            for _ in 0..crate::probes::echo_attempts(timeout) {
                                self.next_nonce = self.next_nonce.wrapping_add(1);
                                let nonce = self.next_nonce;
                                match self.sealer.seal(&Body::EchoRequest { nonce }) {
                                    Ok(request) => requests.push((nonce, request)),
                                    Err(e) => {
                                        tracing::warn!(error = %e, "cannot seal echo request")
                                    }
                                }
                            }
                            (!requests.is_empty()).then(|| EchoSetup {
                                requests,
                                keys: self.keys.clone(),
                            })
                        }
                        _ => None,
                    };
                    let tx = self.probe_tx.clone();
                    tokio::spawn(async move {
                        let result = run_probe(probe_id, target, kind, timeout, echo).await;
                        let _ = tx.send(result).await;
                    });
                }
            }
        }
    }

    /// Graceful stop: tell peers we are leaving, report `HbShutdown`, wait (bounded) for
    /// its ack while still answering acks for other reports.
    async fn shutdown(&mut self, wait: Duration, buf: &mut [u8]) {
        let leaving = Body::Heartbeat(Heartbeat {
            sent_at_us: wall_us(),
            leaving: true,
        });
        // Twice, so that one lost datagram does not turn a graceful stop into an alarm.
        let peers = self.engine.peer_addrs();
        for _ in 0..2 {
            for addr in &peers {
                self.send(&leaving, *addr).await;
            }
        }
        let now = Instant::now();
        let (id, dropped) = self.reports.enqueue(ReportBody::HbShutdown, now);
        if dropped.is_some() {
            tracing::warn!("report queue full at shutdown");
        }
        tracing::info!("stopping: HbShutdown sent");
        let deadline = now + wait;
        // Only reports from here on: a heartbeat after the leaving one would make the
        // peers report us as a martian.
        self.send_due_reports(now).await;
        while self.reports.is_pending(id) {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!("no ack for HbShutdown; exiting anyway");
                break;
            }
            let until = self
                .reports
                .next_deadline()
                .unwrap_or(deadline)
                .min(deadline);
            // The packet-reader's ACK comes on its peer socket if it has one.
            tokio::select! {
                received = self.socket.recv_from(buf) => {
                    if let Ok((n, from)) = received {
                        self.ack_during_shutdown(&buf[..n], from);
                    }
                }
                Some(forwarded) = self.from_peers.recv() => {
                    if let Forwarded::Datagram(datagram, from) = forwarded {
                        self.ack_during_shutdown(&datagram, from);
                    }
                }
                _ = tokio::time::sleep_until(until.into()) => {}
            }
            self.send_due_reports(Instant::now()).await;
        }
    }

    /// During shutdown only ACKs of our reports are handled.
    fn ack_during_shutdown(&mut self, datagram: &[u8], from: SocketAddr) {
        if let Ok(v) = self.verifier.verify(datagram) {
            if let Body::Ack(ack) = v.body {
                if ack.session == self.sealer.session() {
                    self.reports.on_ack(ack.id);
                }
            }
        } else {
            tracing::debug!(%from, "datagram rejected during shutdown");
        }
    }
}
