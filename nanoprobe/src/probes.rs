//! Active probes for `DoProbe`: ICMP echo, TCP connect and an authenticated UDP echo to
//! another nanoprobe. Each probe is bounded by its timeout and yields a `ProbeResult`.
//!
//! ICMP and UDP echo probes resend their request every [`resend_interval`] (a fifth of the
//! timeout, at least 100 ms) until a valid reply or the timeout, so one lost datagram does
//! not make a live target unreachable. Every resend is a new request: a new ICMP sequence
//! number, or a new `EchoRequest` nonce sealed with a new envelope sequence number (the
//! receiver's replay window refuses a datagram sent twice). Any valid reply to any of them
//! makes the target reachable; the RTT is measured from the request it answers.

use proto::{Body, KeyRing, ProbeKind, ProbeOutcome, ProbeResult, ProbeTarget, Verifier};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::ErrorKind;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shortest time between two requests of one probe.
const MIN_RESEND: Duration = Duration::from_millis(100);

/// Time between two requests of an ICMP or UDP echo probe: `max(timeout / 5, 100 ms)`.
pub fn resend_interval(timeout: Duration) -> Duration {
    (timeout / 5).max(MIN_RESEND)
}

/// How many requests an echo probe sends at most: one at 0, then one every
/// [`resend_interval`] strictly before the timeout (1 to 5).
pub fn echo_attempts(timeout: Duration) -> usize {
    let every = resend_interval(timeout);
    let mut n = 1;
    while every * n < timeout && n < 5 {
        n += 1;
    }
    n as usize
}

/// What a UDP echo probe needs from the daemon: the sealed `EchoRequest`s, one per attempt
/// (see [`echo_attempts`]), each with its own nonce and sealed by the daemon's sealer so
/// their sequence numbers stay unique, and keys to verify the reply.
#[derive(Clone, Debug)]
pub struct EchoSetup {
    /// `(nonce, sealed EchoRequest datagram)`, in sending order.
    pub requests: Vec<(u64, Vec<u8>)>,
    /// Keys to authenticate the reply.
    pub keys: Arc<KeyRing>,
}

fn micros(d: Duration) -> Option<u32> {
    Some(u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
}

/// Probes one target and builds its result.
pub async fn run_probe(
    probe_id: u64,
    target: ProbeTarget,
    kind: ProbeKind,
    timeout: Duration,
    echo: Option<EchoSetup>,
) -> ProbeResult {
    let (outcome, rtt_us) = match kind {
        ProbeKind::IcmpEcho => {
            let addr = target.addr;
            let ident = (probe_id & 0xffff) as u16;
            tokio::task::spawn_blocking(move || icmp_echo(addr, ident, timeout))
                .await
                .unwrap_or_else(|e| (ProbeOutcome::Failed(format!("probe task: {e}")), None))
        }
        ProbeKind::TcpConnect { port } => {
            tcp_connect(SocketAddr::new(target.addr, port), timeout).await
        }
        ProbeKind::UdpEcho { port } => match echo {
            Some(echo) => udp_echo(SocketAddr::new(target.addr, port), echo, timeout).await,
            None => (ProbeOutcome::Failed("no echo request".into()), None),
        },
    };
    ProbeResult {
        probe_id,
        target,
        kind,
        outcome,
        rtt_us,
    }
}

/// TCP connect: an accepted or a refused connection both prove the host is up.
pub async fn tcp_connect(addr: SocketAddr, timeout: Duration) -> (ProbeOutcome, Option<u32>) {
    let start = Instant::now();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => (ProbeOutcome::Reachable, micros(start.elapsed())),
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {
            (ProbeOutcome::Reachable, micros(start.elapsed()))
        }
        Ok(Err(e)) if is_unreachable(&e) => (ProbeOutcome::Unreachable, None),
        Ok(Err(e)) => (ProbeOutcome::Failed(e.to_string()), None),
        Err(_) => (ProbeOutcome::Timeout, None),
    }
}

fn is_unreachable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable
    )
}

/// Authenticated UDP echo to the nanoprobe at `addr`: sends `echo.requests` one every
/// [`resend_interval`] until an authenticated `EchoReply` carrying the nonce of one of the
/// requests sent so far arrives from `addr`, or the timeout.
pub async fn udp_echo(
    addr: SocketAddr,
    echo: EchoSetup,
    timeout: Duration,
) -> (ProbeOutcome, Option<u32>) {
    let local: SocketAddr = if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = match tokio::net::UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => return (ProbeOutcome::Failed(format!("bind: {e}")), None),
    };
    if echo.requests.is_empty() {
        return (ProbeOutcome::Failed("no echo request".into()), None);
    }
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let every = resend_interval(timeout);
    let mut verifier = Verifier::new(echo.keys, 4);
    let mut buf = vec![0u8; proto::MAX_DATAGRAM + 1];
    // (nonce, when sent) of the requests sent so far.
    let mut sent: Vec<(u64, tokio::time::Instant)> = Vec::with_capacity(echo.requests.len());
    let mut next_send = Some(start);
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return (ProbeOutcome::Timeout, None);
        }
        if let Some(at) = next_send.filter(|at| *at <= now) {
            let (nonce, request) = &echo.requests[sent.len()];
            if let Err(e) = socket.send_to(request, addr).await {
                return if is_unreachable(&e) {
                    (ProbeOutcome::Unreachable, None)
                } else {
                    (ProbeOutcome::Failed(format!("send: {e}")), None)
                };
            }
            sent.push((*nonce, tokio::time::Instant::now()));
            next_send = (sent.len() < echo.requests.len())
                .then_some(at + every)
                .filter(|next| *next < deadline);
            continue;
        }
        let wake = next_send.unwrap_or(deadline).min(deadline);
        match tokio::time::timeout_at(wake, socket.recv_from(&mut buf)).await {
            Err(_) => {} // time to resend, or the deadline
            Ok(Ok((n, from))) if from == addr => {
                if let Ok(v) = verifier.verify(&buf[..n]) {
                    if let Body::EchoReply { nonce } = v.body {
                        if let Some((_, at)) = sent.iter().find(|(n, _)| *n == nonce) {
                            return (ProbeOutcome::Reachable, micros(at.elapsed()));
                        }
                    }
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {
                // ICMP port unreachable: the host answered, the nanoprobe did not.
                return (ProbeOutcome::Unreachable, None);
            }
            Ok(Err(e)) => return (ProbeOutcome::Failed(format!("recv: {e}")), None),
        }
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Builds an ICMP (v4 type 8, v6 type 128) echo request.
fn echo_request(v6: bool, ident: u16, seq: u16) -> Vec<u8> {
    let mut pkt = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    pkt.extend_from_slice(&ident.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"ringwatch-probe!");
    if !v6 {
        // The kernel computes the ICMPv6 checksum itself.
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    pkt
}

/// Opens an ICMP socket: an unprivileged datagram socket where `net.ipv4.ping_group_range`
/// allows it, else a raw socket (needs CAP_NET_RAW). Returns whether it is raw.
fn icmp_socket(v6: bool) -> std::io::Result<(Socket, bool)> {
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    match Socket::new(domain, Type::DGRAM, Some(proto)) {
        Ok(s) => Ok((s, false)),
        Err(_) => Socket::new(domain, Type::RAW, Some(proto)).map(|s| (s, true)),
    }
}

/// ICMP echo (blocking; run on the blocking pool): a request with sequence number 1, 2, …
/// every [`resend_interval`] until a reply to any of them or the timeout.
pub fn icmp_echo(addr: IpAddr, ident: u16, timeout: Duration) -> (ProbeOutcome, Option<u32>) {
    let v6 = addr.is_ipv6();
    let (socket, raw) = match icmp_socket(v6) {
        Ok(s) => s,
        Err(e) => return (ProbeOutcome::Failed(format!("no ICMP socket: {e}")), None),
    };
    // Connecting filters replies to the target's address and lets us read into a plain
    // (initialised) buffer through `std::io::Read`.
    if let Err(e) = socket.connect(&SocketAddr::new(addr, 0).into()) {
        return (ProbeOutcome::Failed(format!("connect: {e}")), None);
    }
    let start = Instant::now();
    let every = resend_interval(timeout);
    let attempts = echo_attempts(timeout);
    // Send time of request `seq` at index `seq - 1`.
    let mut sent: Vec<Instant> = Vec::with_capacity(attempts);
    let mut next_send = Some(start);
    let mut buf = [0u8; 1500];
    let mut reader = &socket;
    loop {
        let now = Instant::now();
        let left = match timeout.checked_sub(now.saturating_duration_since(start)) {
            Some(d) if !d.is_zero() => d,
            _ => return (ProbeOutcome::Timeout, None),
        };
        if let Some(at) = next_send.filter(|at| *at <= now) {
            let seq = u16::try_from(sent.len() + 1).unwrap_or(u16::MAX);
            if let Err(e) = socket.send(&echo_request(v6, ident, seq)) {
                return if is_unreachable(&e) {
                    (ProbeOutcome::Unreachable, None)
                } else {
                    (ProbeOutcome::Failed(format!("send: {e}")), None)
                };
            }
            sent.push(Instant::now());
            next_send = (sent.len() < attempts)
                .then_some(at + every)
                .filter(|next| next.saturating_duration_since(start) < timeout);
            continue;
        }
        let wait = next_send
            .map(|at| at.saturating_duration_since(now))
            .unwrap_or(left)
            .min(left)
            .max(Duration::from_millis(1));
        if socket.set_read_timeout(Some(wait)).is_err() {
            return (ProbeOutcome::Failed("set_read_timeout".into()), None);
        }
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue; // time to resend, or the timeout (checked above)
            }
            Err(e) if is_unreachable(&e) => return (ProbeOutcome::Unreachable, None),
            Err(e) => return (ProbeOutcome::Failed(format!("recv: {e}")), None),
        };
        let bytes = &buf[..n];
        // A raw IPv4 socket hands over the IP header too.
        let icmp = if raw && !v6 {
            let ihl = usize::from(bytes.first().copied().unwrap_or(0) & 0x0f) * 4;
            bytes.get(ihl..).unwrap_or(&[])
        } else {
            bytes
        };
        if icmp.len() < 8 {
            continue;
        }
        let reply_type = if v6 { 129 } else { 0 };
        let unreachable_type = if v6 { 1 } else { 3 };
        if icmp[0] == unreachable_type {
            return (ProbeOutcome::Unreachable, None);
        }
        // Datagram ICMP sockets rewrite the identifier; match on sequence there.
        let ident_ok = !raw || u16::from_be_bytes([icmp[4], icmp[5]]) == ident;
        let seq = usize::from(u16::from_be_bytes([icmp[6], icmp[7]]));
        if icmp[0] == reply_type && ident_ok {
            if let Some(at) = seq.checked_sub(1).and_then(|i| sent.get(i)) {
                return (ProbeOutcome::Reachable, micros(at.elapsed()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_echo_request_verifies() {
        let pkt = echo_request(false, 0x1234, 1);
        assert_eq!(checksum(&pkt), 0);
    }

    #[tokio::test]
    async fn tcp_connect_refused_counts_as_reachable_and_listener_too() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (outcome, rtt) = tcp_connect(addr, Duration::from_secs(5)).await;
        assert_eq!(outcome, ProbeOutcome::Reachable);
        assert!(rtt.is_some());
        drop(listener);
        let (outcome, _) = tcp_connect(addr, Duration::from_secs(5)).await;
        assert_eq!(outcome, ProbeOutcome::Reachable);
    }

    #[test]
    fn icmp_echo_to_loopback_answers_or_fails_cleanly() {
        // Depending on ping_group_range and capabilities this host may allow no ICMP
        // socket at all; then the probe must say so rather than time out.
        let (outcome, rtt) = icmp_echo("127.0.0.1".parse().unwrap(), 7, Duration::from_secs(3));
        match outcome {
            ProbeOutcome::Reachable => assert!(rtt.is_some()),
            ProbeOutcome::Failed(msg) => assert!(msg.contains("ICMP socket"), "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A fake nanoprobe on loopback that loses the first `lose` echo requests, answers the
    /// next one and stops; yields the nonces it saw.
    async fn fake_nanoprobe(
        keys: Arc<KeyRing>,
        lose: usize,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<u64>>) {
        use proto::{HostId, Sealer, SessionId, Verified};
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut verifier = Verifier::new(keys.clone(), 4);
            let mut sealer = Sealer::new(keys, HostId(2), SessionId(1));
            let mut buf = [0u8; 2048];
            let mut seen = Vec::new();
            loop {
                let (n, from) = socket.recv_from(&mut buf).await.unwrap();
                // Every resend passes the replay window: a distinct sealed datagram.
                if let Ok(Verified {
                    body: Body::EchoRequest { nonce },
                    ..
                }) = verifier.verify(&buf[..n])
                {
                    seen.push(nonce);
                    if seen.len() <= lose {
                        continue;
                    }
                    let reply = sealer.seal(&Body::EchoReply { nonce }).unwrap();
                    socket.send_to(&reply, from).await.unwrap();
                    return seen;
                }
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn udp_echo_gets_an_authenticated_reply_or_times_out() {
        use proto::{HostId, KeyId, Sealer, SessionId};
        let keys = Arc::new(KeyRing::generate(KeyId(1)));
        let (addr, _) = fake_nanoprobe(keys.clone(), 0).await;
        let mut sealer = Sealer::new(keys.clone(), HostId(1), SessionId(1));
        let setup = |sealer: &mut Sealer, nonce| EchoSetup {
            requests: vec![(nonce, sealer.seal(&Body::EchoRequest { nonce }).unwrap())],
            keys: keys.clone(),
        };
        let (outcome, rtt) = udp_echo(addr, setup(&mut sealer, 5), Duration::from_secs(5)).await;
        assert_eq!(outcome, ProbeOutcome::Reachable);
        assert!(rtt.is_some());
        // A socket that never answers: the probe ends at its timeout.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (outcome, rtt) = udp_echo(
            silent.local_addr().unwrap(),
            setup(&mut sealer, 6),
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(outcome, ProbeOutcome::Timeout);
        assert!(rtt.is_none());
    }

    #[test]
    fn resend_interval_is_a_fifth_of_the_timeout_at_least_100_ms() {
        let ms = Duration::from_millis;
        assert_eq!(resend_interval(ms(2000)), ms(400));
        assert_eq!(resend_interval(ms(300)), ms(100));
        assert_eq!(echo_attempts(ms(2000)), 5);
        assert_eq!(echo_attempts(ms(250)), 3);
        assert_eq!(echo_attempts(ms(100)), 1);
        assert_eq!(echo_attempts(ms(0)), 1);
    }

    #[tokio::test]
    async fn udp_echo_retries_past_two_lost_requests() {
        use proto::{HostId, KeyId, Sealer, SessionId};
        let keys = Arc::new(KeyRing::generate(KeyId(1)));
        let (addr, fake) = fake_nanoprobe(keys.clone(), 2).await;
        let timeout = Duration::from_millis(1000);
        let attempts = echo_attempts(timeout);
        assert_eq!(attempts, 5);
        let mut sealer = Sealer::new(keys.clone(), HostId(1), SessionId(1));
        let requests = (0..attempts as u64)
            .map(|i| {
                let nonce = 100 + i;
                (nonce, sealer.seal(&Body::EchoRequest { nonce }).unwrap())
            })
            .collect();
        let started = Instant::now();
        let (outcome, rtt) = udp_echo(
            addr,
            EchoSetup {
                requests,
                keys: keys.clone(),
            },
            timeout,
        )
        .await;
        assert_eq!(outcome, ProbeOutcome::Reachable);
        // The RTT is that of the third request, not the time since the first.
        assert!(rtt.is_some_and(|us| us < 200_000), "rtt {rtt:?}");
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert_eq!(fake.await.unwrap(), vec![100, 101, 102]);
    }
}
