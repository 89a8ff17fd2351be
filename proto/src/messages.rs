//! Every message that crosses the wire (docs/design.md §3).
//!
//! A datagram carries exactly one [`Body`] inside an authenticated envelope
//! (see [`crate::envelope`]). The envelope already names the sender host, its session and a
//! per-datagram sequence number used for replay protection, so messages do not repeat them.
//!
//! Reliable messages (reports and commands) carry their own `id`, distinct from the envelope
//! sequence number: a retransmission is sealed again with a fresh envelope sequence number
//! (so the receiver's replay window accepts it) but keeps the same `id`, which is what the
//! receiver acknowledges and what the queue deduplicates on.

use crate::ids::{HostId, SessionId};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// The payload of one datagram.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Ring heartbeat between nanoprobes. Never acknowledged.
    Heartbeat(Heartbeat),
    /// Nanoprobe -> packet-reader, reliable (acknowledged by [`Body::Ack`]).
    Report(Report),
    /// CMA -> nanoprobe, reliable (acknowledged by [`Body::Ack`]).
    Command(Command),
    /// Acknowledgement of a report or a command.
    Ack(Ack),
    /// Active UDP probe of a nanoprobe by another one (`ProbeKind::UdpEcho`).
    EchoRequest { nonce: u64 },
    /// Answer to [`Body::EchoRequest`], echoing its nonce.
    EchoReply { nonce: u64 },
}

impl Body {
    /// A short stable name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Heartbeat(_) => "heartbeat",
            Body::Report(_) => "report",
            Body::Command(_) => "command",
            Body::Ack(_) => "ack",
            Body::EchoRequest { .. } => "echo_request",
            Body::EchoReply { .. } => "echo_reply",
        }
    }
}

/// A ring heartbeat: the smallest message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sender's wall clock at send time, microseconds since the Unix epoch (diagnostics only;
    /// receivers time heartbeats with their own monotonic clock).
    pub sent_at_us: u64,
    /// The sender is stopping gracefully: stop expecting heartbeats from it, raise no alarm.
    pub leaving: bool,
}

/// A reliable report from a nanoprobe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Report id, increasing within the sender's session; acknowledged by `Ack{id}` and
    /// the queue's deduplication key together with the sender and session.
    pub id: u64,
    /// What is reported.
    pub body: ReportBody,
}

/// What a nanoprobe reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportBody {
    /// The nanoprobe started (or restarted) and describes itself.
    Startup(Startup),
    /// A peer's heartbeat is overdue past `warntime`.
    HbLate { peer: HostId, late_by_ms: u32 },
    /// A peer's heartbeat is overdue past `deadtime`.
    HbDead {
        peer: HostId,
        /// Reporter's wall clock when the peer's last heartbeat arrived, microseconds since
        /// the Unix epoch (0 if never heard).
        last_seen_us: u64,
    },
    /// A peer previously reported dead sends heartbeats again.
    HbBackAlive { peer: HostId, down_for_ms: u32 },
    /// The reporter is stopping gracefully (no alarm).
    HbShutdown,
    /// An authenticated heartbeat from a host that is not on the expect list.
    HbMartian { from: HostId, addr: SocketAddr },
    /// The outcome of a `DoProbe` command.
    ProbeResult(ProbeResult),
    /// Free-form discovery data (`kind` names the schema, `data` is JSON text).
    Discovery { kind: String, data: String },
    /// A heartbeat to `peer` met an ICMP port-unreachable: its host's kernel answered, its
    /// nanoprobe did not. Sent once per outage (the peer's next heartbeat ends it). Last
    /// variant, so older decoders still read every earlier one.
    HbRefused { peer: HostId },
}

impl ReportBody {
    /// A short stable name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ReportBody::Startup(_) => "startup",
            ReportBody::HbLate { .. } => "hb_late",
            ReportBody::HbDead { .. } => "hb_dead",
            ReportBody::HbBackAlive { .. } => "hb_back_alive",
            ReportBody::HbShutdown => "hb_shutdown",
            ReportBody::HbMartian { .. } => "hb_martian",
            ReportBody::ProbeResult(_) => "probe_result",
            ReportBody::Discovery { .. } => "discovery",
            ReportBody::HbRefused { .. } => "hb_refused",
        }
    }
}

/// Self-description sent at start-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Startup {
    pub hostname: String,
    /// The nanoprobe's version string.
    pub version: String,
    /// Where the nanoprobe receives heartbeats and commands.
    pub listen: SocketAddr,
    /// Interface addresses (loopback excluded).
    pub interfaces: Vec<InterfaceAddr>,
    /// Default IPv4 gateway from the routing table, if any.
    pub gateway: Option<IpAddr>,
    /// LLDP neighbour (the switch port this host is plugged into), where one could be read.
    pub lldp: Option<LldpNeighbour>,
}

/// One address of one interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceAddr {
    pub name: String,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// The switch seen through LLDP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LldpNeighbour {
    pub chassis_id: String,
    pub port_id: String,
    pub system_name: Option<String>,
}

/// A reliable command from the CMA to one nanoprobe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Command id, unique across the deployment (assigned through Raft); nanoprobes apply
    /// a given id at most once and acknowledge every copy.
    pub id: u64,
    pub body: CommandBody,
}

/// What the CMA orders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandBody {
    /// Send heartbeats to, and expect heartbeats from, these peers (added to or updated in
    /// the current lists).
    SendExpectHb {
        peers: Vec<Peer>,
        timings: HbTimings,
    },
    /// Stop sending heartbeats to and expecting heartbeats from these peers.
    StopSendExpectHb { peers: Vec<HostId> },
    /// Change run-time settings.
    SetConfig(ConfigUpdate),
    /// Probe targets actively and report a `ProbeResult` per target.
    DoProbe {
        probe_id: u64,
        targets: Vec<ProbeTarget>,
        kind: ProbeKind,
        timeout_ms: u32,
    },
}

impl CommandBody {
    /// A short stable name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            CommandBody::SendExpectHb { .. } => "send_expect_hb",
            CommandBody::StopSendExpectHb { .. } => "stop_send_expect_hb",
            CommandBody::SetConfig(_) => "set_config",
            CommandBody::DoProbe { .. } => "do_probe",
        }
    }
}

/// A ring neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Peer {
    pub host: HostId,
    pub addr: SocketAddr,
}

/// Heartbeat timings of a ring, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HbTimings {
    /// Time between two heartbeats sent to a peer.
    pub interval_ms: u32,
    /// Silence after which a peer is reported late (`HbLate`).
    pub warntime_ms: u32,
    /// Silence after which a peer is reported dead (`HbDead`).
    pub deadtime_ms: u32,
}

impl Default for HbTimings {
    /// Defaults of docs/design.md §3: interval 1 s, warntime 2 s, deadtime 3 s.
    fn default() -> Self {
        HbTimings {
            interval_ms: 1000,
            warntime_ms: 2000,
            deadtime_ms: 3000,
        }
    }
}

impl HbTimings {
    /// Checks that the timings make sense: all non-zero and interval < warntime <= deadtime.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval_ms == 0 {
            return Err("interval_ms must be > 0".into());
        }
        if self.warntime_ms <= self.interval_ms {
            return Err(format!(
                "warntime_ms ({}) must be greater than interval_ms ({})",
                self.warntime_ms, self.interval_ms
            ));
        }
        if self.deadtime_ms < self.warntime_ms {
            return Err(format!(
                "deadtime_ms ({}) must be at least warntime_ms ({})",
                self.deadtime_ms, self.warntime_ms
            ));
        }
        Ok(())
    }
}

/// Run-time settings the CMA may change; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigUpdate {
    /// New timings for every current peer and for later `SendExpectHb` without timings.
    pub timings: Option<HbTimings>,
}

/// A thing to probe.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProbeTarget {
    /// The host, when the target is a monitored host (None for switches and routers).
    pub host: Option<HostId>,
    pub addr: IpAddr,
}

/// How to probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProbeKind {
    /// ICMP echo request.
    IcmpEcho,
    /// TCP connect to a port (a refused connection still proves the host is up).
    TcpConnect { port: u16 },
    /// Authenticated UDP echo to the nanoprobe listening on this port.
    UdpEcho { port: u16 },
}

/// The outcome of probing one target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub probe_id: u64,
    pub target: ProbeTarget,
    pub kind: ProbeKind,
    pub outcome: ProbeOutcome,
    /// Round-trip time when the target answered.
    pub rtt_us: Option<u32>,
}

/// Whether a target answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeOutcome {
    /// The target answered.
    Reachable,
    /// The network said the target cannot be reached (ICMP unreachable, no route).
    Unreachable,
    /// No answer before the timeout.
    Timeout,
    /// The probe could not be carried out (for example no permission for ICMP).
    Failed(String),
}

/// Acknowledges the reliable message `id` sent by the receiver of this ack in `session`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The session of the acknowledged message's sender (stale acks from an earlier run
    /// are ignored).
    pub session: SessionId,
    /// The report id or command id acknowledged.
    pub id: u64,
}
