//! UDP ingest: SO_REUSEPORT sockets with large receive buffers, one receive loop per
//! socket. Each loop owns its verifier: the kernel spreads senders over the sockets by
//! their address, so a sender's replay window always lives in the same loop.

use crate::accepted::Accepted;
use crate::metrics::{Metrics, Reason};
use daemon::warn::WarnEvery;
use proto::{Body, KeyRing, Verifier, MAX_DATAGRAM};
use queue::QueuedPacket;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// Binds `count` sockets sharing `addr` (SO_REUSEPORT), each with a `recv_buffer` byte
/// receive buffer.
pub fn bind_sockets(
    addr: SocketAddr,
    count: usize,
    recv_buffer: usize,
) -> std::io::Result<Vec<Arc<UdpSocket>>> {
    let mut sockets = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        if let Err(e) = socket.set_recv_buffer_size(recv_buffer) {
            tracing::warn!(error = %e, recv_buffer, "cannot set receive buffer size");
        }
        socket.set_nonblocking(true)?;
        // With port 0, the first socket picks the port and the others share it.
        socket.bind(&bound.into())?;
        if let Some(local) = socket.local_addr()?.as_socket() {
            bound = local;
        }
        let std_socket: std::net::UdpSocket = socket.into();
        sockets.push(Arc::new(UdpSocket::from_std(std_socket)?));
    }
    Ok(sockets)
}

/// Receives, verifies and forwards reports until `shutdown` turns true.
#[allow(clippy::too_many_arguments)]
pub async fn receive_loop(
    index: usize,
    socket: Arc<UdpSocket>,
    keys: Arc<KeyRing>,
    max_senders: usize,
    tx: mpsc::Sender<Accepted>,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut verifier = Verifier::new(keys, max_senders);
    let mut auth_warning = auth_warning();
    // One byte more than the largest datagram so oversized ones are seen as such.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let (len, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "receive failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        handle(
            index,
            &buf[..len],
            from,
            &mut verifier,
            &tx,
            &metrics,
            &mut auth_warning,
        );
        // Drain what is already queued in the socket without going back to the reactor.
        for _ in 0..64 {
            match socket.try_recv_from(&mut buf) {
                Ok((len, from)) => handle(
                    index,
                    &buf[..len],
                    from,
                    &mut verifier,
                    &tx,
                    &metrics,
                    &mut auth_warning,
                ),
                Err(_) => break,
            }
        }
    }
}

/// Least time between two warnings about datagrams failing authentication.
pub const AUTH_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Rate limit of the warning about datagrams that fail authentication, which names the
/// source so an operator finds a host with the wrong key (or the origin of a flood).
pub fn auth_warning() -> WarnEvery {
    WarnEvery::new(AUTH_WARN_EVERY)
}

fn handle(
    index: usize,
    datagram: &[u8],
    from: SocketAddr,
    verifier: &mut Verifier,
    tx: &mpsc::Sender<Accepted>,
    metrics: &Metrics,
    auth_warning: &mut WarnEvery,
) {
    metrics.received.inc();
    let verified = match verifier.verify(datagram) {
        Ok(v) => v,
        Err(rejection) => {
            tracing::debug!(%from, %rejection, "datagram refused");
            metrics
                .rejected
                .get_or_create(&Reason::of(rejection.reason()))
                .inc();
            if matches!(rejection.reason(), "bad_mac" | "unknown_key") {
                if let Some(suppressed) = auth_warning.check(std::time::Instant::now()) {
                    tracing::warn!(
                        %from,
                        reason = rejection.reason(),
                        suppressed,
                        "datagram failed authentication: the sender has another key file \
                         (or the traffic is forged)"
                    );
                }
            }
            return;
        }
    };
    metrics.verified.inc();
    // The report alone is queued: the worker decodes it and never this envelope again.
    let (report_id, report) = match (&verified.body, proto::report_bytes(datagram)) {
        (Body::Report(report), Some(bytes)) => (report.id, bytes),
        (Body::Heartbeat(_), _) => {
            // Heartbeats go between nanoprobes; one arriving here is misdirected.
            metrics
                .dropped
                .get_or_create(&Reason::of("heartbeat"))
                .inc();
            return;
        }
        (other, _) => {
            tracing::debug!(%from, kind = other.kind(), "not a report; dropped");
            metrics
                .dropped
                .get_or_create(&Reason::of("not_report"))
                .inc();
            return;
        }
    };
    let accepted = Accepted {
        packet: QueuedPacket {
            sender: verified.header.sender.0,
            session: verified.header.session.0,
            seq: report_id,
            received_at_us: daemon::clock::wall_clock_us(),
            source: from,
            report: report.to_vec(),
        },
        report_id,
        reply_to: from,
        socket: index,
    };
    match tx.try_send(accepted) {
        Ok(()) => {
            metrics.pending.inc();
        }
        Err(_) => {
            // Queue slow or unavailable and the bound reached: drop the newest. The sender
            // retransmits it, since it gets no ACK.
            metrics.dropped.get_or_create(&Reason::of("overload")).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{HostId, KeyId, Report, ReportBody, Sealer, SessionId};

    fn sample(metrics: &Metrics, family: &str, reason: &'static str) -> u64 {
        let f = if family == "dropped" {
            &metrics.dropped
        } else {
            &metrics.rejected
        };
        f.get_or_create(&Reason::of(reason)).get()
    }

    #[test]
    fn auth_warnings_are_spaced() {
        let mut w = auth_warning();
        let t0 = std::time::Instant::now();
        assert_eq!(w.check(t0), Some(0));
        assert_eq!(w.check(t0), None);
        assert_eq!(w.check(t0 + AUTH_WARN_EVERY), Some(1));
    }

    #[test]
    fn reports_are_forwarded_others_counted() {
        let keys = Arc::new(KeyRing::generate(KeyId(1)));
        let mut sealer = Sealer::new(keys.clone(), HostId(5), SessionId(77));
        let mut verifier = Verifier::new(keys, 16);
        let metrics = Metrics::default();
        let (tx, mut rx) = mpsc::channel(1);
        let from: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mut warn = auth_warning();
        let report = Body::Report(Report {
            id: 42,
            body: ReportBody::HbShutdown,
        });
        let genuine = sealer.seal(&report).unwrap();
        handle(3, &genuine, from, &mut verifier, &tx, &metrics, &mut warn);
        let accepted = rx.try_recv().unwrap();
        assert_eq!(
            (accepted.report_id, accepted.socket, accepted.reply_to),
            (42, 3, from)
        );
        let p = &accepted.packet;
        assert_eq!((p.sender, p.session, p.seq), (5, 77, 42));
        assert_eq!(proto::decode_report(&p.report).unwrap().id, 42);
        assert_eq!(p.report, proto::report_bytes(&genuine).unwrap());

        // Replay, heartbeat, and a report beyond the channel bound.
        handle(3, &genuine, from, &mut verifier, &tx, &metrics, &mut warn);
        assert_eq!(sample(&metrics, "rejected", "replay_duplicate"), 1);
        let hb = sealer
            .seal(&Body::Heartbeat(proto::Heartbeat {
                sent_at_us: 0,
                leaving: false,
            }))
            .unwrap();
        handle(3, &hb, from, &mut verifier, &tx, &metrics, &mut warn);
        assert_eq!(sample(&metrics, "dropped", "heartbeat"), 1);
        for _ in 0..2 {
            let again = sealer.seal(&report).unwrap();
            handle(3, &again, from, &mut verifier, &tx, &metrics, &mut warn);
        }
        assert_eq!(sample(&metrics, "dropped", "overload"), 1);
        assert_eq!(metrics.received.get(), 5);
        assert_eq!(metrics.verified.get(), 4);
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_err());
    }
}
