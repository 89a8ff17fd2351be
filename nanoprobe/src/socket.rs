//! The nanoprobe's UDP socket, built with socket2 for options std does not expose.

use crate::config::SocketConfig;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;

/// Creates the non-blocking UDP socket bound to `bind`: address reuse (a restarted
/// nanoprobe can bind at once), sized buffers, and DSCP marking so heartbeats are queued
/// ahead of bulk traffic. Buffer and DSCP failures are logged, not fatal.
pub fn bind_udp(bind: SocketAddr, config: &SocketConfig) -> std::io::Result<std::net::UdpSocket> {
    bind_with(bind, config, true)
}

/// Like [`bind_udp`], without the warnings (capped receive buffer, options refused): for
/// the peer sockets, opened while running (the shared socket's warnings at start already
/// said it).
pub fn bind_peer_udp(
    bind: SocketAddr,
    config: &SocketConfig,
) -> std::io::Result<std::net::UdpSocket> {
    bind_with(bind, config, false)
}

fn bind_with(
    bind: SocketAddr,
    config: &SocketConfig,
    warn: bool,
) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if let Err(e) = socket.set_recv_buffer_size(config.recv_buffer) {
        if warn {
            tracing::warn!(error = %e, "cannot set receive buffer size");
        }
    }
    // Linux reports twice the size asked for (the rest is bookkeeping); a smaller figure
    // means net.core.rmem_max capped the request. With CAP_NET_ADMIN (root; the units do
    // not grant it) SO_RCVBUFFORCE passes the cap.
    let full = config.recv_buffer.saturating_mul(2);
    if socket.recv_buffer_size().is_ok_and(|got| got < full) {
        use nix::sys::socket::{setsockopt, sockopt::RcvBufForce};
        if setsockopt(&socket, RcvBufForce, &config.recv_buffer).is_ok() {
            tracing::debug!("receive buffer forced past net.core.rmem_max");
        }
    }
    match socket.recv_buffer_size() {
        Ok(got) if got < full && warn => tracing::warn!(
            asked = config.recv_buffer,
            got,
            "receive buffer capped by the kernel: raise net.core.rmem_max for flood resistance"
        ),
        Ok(got) => tracing::debug!(got, "receive buffer"),
        Err(e) => tracing::debug!(error = %e, "cannot read receive buffer size"),
    }
    if let Err(e) = socket.set_send_buffer_size(config.send_buffer) {
        if warn {
            tracing::warn!(error = %e, "cannot set send buffer size");
        }
    }
    let tos = u32::from(config.dscp) << 2;
    let marked = if bind.is_ipv4() {
        socket.set_tos_v4(tos)
    } else {
        socket.set_tclass_v6(tos)
    };
    if let (Err(e), true) = (marked, warn) {
        tracing::warn!(error = %e, dscp = config.dscp, "cannot set DSCP marking");
    }
    socket.bind(&bind.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_with_options() {
        let s = bind_udp("127.0.0.1:0".parse().unwrap(), &SocketConfig::default()).unwrap();
        let addr = s.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let s2 = Socket::from(s);
        assert_eq!(s2.tos_v4().unwrap(), 46 << 2);
        assert!(s2.reuse_address().unwrap());
    }
}
