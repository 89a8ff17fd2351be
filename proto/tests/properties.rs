//! Property tests of the wire format: round trips, tamper detection, replay refusal.

use proptest::prelude::*;
use proto::envelope::{HEADER_LEN, MAC_LEN};
use proto::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

fn host() -> impl Strategy<Value = HostId> {
    any::<u64>().prop_map(HostId)
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

fn sockaddr() -> impl Strategy<Value = SocketAddr> {
    (ip(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ._:-]{0,24}"
}

fn timings() -> impl Strategy<Value = HbTimings> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(i, w, d)| HbTimings {
        interval_ms: i,
        warntime_ms: w,
        deadtime_ms: d,
    })
}

fn probe_kind() -> impl Strategy<Value = ProbeKind> {
    prop_oneof![
        Just(ProbeKind::IcmpEcho),
        any::<u16>().prop_map(|port| ProbeKind::TcpConnect { port }),
        any::<u16>().prop_map(|port| ProbeKind::UdpEcho { port }),
    ]
}

fn probe_target() -> impl Strategy<Value = ProbeTarget> {
    (proptest::option::of(host()), ip()).prop_map(|(host, addr)| ProbeTarget { host, addr })
}

fn startup() -> impl Strategy<Value = Startup> {
    (
        text(),
        text(),
        sockaddr(),
        prop::collection::vec(
            (text(), ip(), any::<u8>()).prop_map(|(name, addr, prefix_len)| InterfaceAddr {
                name,
                addr,
                prefix_len,
            }),
            0..4,
        ),
        proptest::option::of(ip()),
        proptest::option::of((text(), text(), proptest::option::of(text())).prop_map(
            |(chassis_id, port_id, system_name)| LldpNeighbour {
                chassis_id,
                port_id,
                system_name,
            },
        )),
    )
        .prop_map(
            |(hostname, version, listen, interfaces, gateway, lldp)| Startup {
                hostname,
                version,
                listen,
                interfaces,
                gateway,
                lldp,
            },
        )
}

fn report_body() -> impl Strategy<Value = ReportBody> {
    prop_oneof![
        startup().prop_map(ReportBody::Startup),
        (host(), any::<u32>())
            .prop_map(|(peer, late_by_ms)| ReportBody::HbLate { peer, late_by_ms }),
        (host(), any::<u64>())
            .prop_map(|(peer, last_seen_us)| ReportBody::HbDead { peer, last_seen_us }),
        (host(), any::<u32>())
            .prop_map(|(peer, down_for_ms)| ReportBody::HbBackAlive { peer, down_for_ms }),
        Just(ReportBody::HbShutdown),
        (host(), sockaddr()).prop_map(|(from, addr)| ReportBody::HbMartian { from, addr }),
        (
            any::<u64>(),
            probe_target(),
            probe_kind(),
            prop_oneof![
                Just(ProbeOutcome::Reachable),
                Just(ProbeOutcome::Unreachable),
                Just(ProbeOutcome::Timeout),
                text().prop_map(ProbeOutcome::Failed),
            ],
            proptest::option::of(any::<u32>()),
        )
            .prop_map(|(probe_id, target, kind, outcome, rtt_us)| {
                ReportBody::ProbeResult(ProbeResult {
                    probe_id,
                    target,
                    kind,
                    outcome,
                    rtt_us,
                })
            }),
        (text(), text()).prop_map(|(kind, data)| ReportBody::Discovery { kind, data }),
        host().prop_map(|peer| ReportBody::HbRefused { peer }),
    ]
}

fn command_body() -> impl Strategy<Value = CommandBody> {
    prop_oneof![
        (
            prop::collection::vec(
                (host(), sockaddr()).prop_map(|(host, addr)| Peer { host, addr }),
                0..6
            ),
            timings()
        )
            .prop_map(|(peers, timings)| CommandBody::SendExpectHb { peers, timings }),
        prop::collection::vec(host(), 0..6)
            .prop_map(|peers| CommandBody::StopSendExpectHb { peers }),
        proptest::option::of(timings())
            .prop_map(|timings| CommandBody::SetConfig(ConfigUpdate { timings })),
        (
            any::<u64>(),
            prop::collection::vec(probe_target(), 0..6),
            probe_kind(),
            any::<u32>()
        )
            .prop_map(
                |(probe_id, targets, kind, timeout_ms)| CommandBody::DoProbe {
                    probe_id,
                    targets,
                    kind,
                    timeout_ms
                }
            ),
    ]
}

/// Every message of docs/design.md §3.
fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (any::<u64>(), any::<bool>()).prop_map(|(sent_at_us, leaving)| Body::Heartbeat(
            Heartbeat {
                sent_at_us,
                leaving
            }
        )),
        (any::<u64>(), report_body()).prop_map(|(id, body)| Body::Report(Report { id, body })),
        (any::<u64>(), command_body()).prop_map(|(id, body)| Body::Command(Command { id, body })),
        (any::<u64>(), any::<u64>()).prop_map(|(session, id)| Body::Ack(Ack {
            session: SessionId(session),
            id
        })),
        any::<u64>().prop_map(|nonce| Body::EchoRequest { nonce }),
        any::<u64>().prop_map(|nonce| Body::EchoReply { nonce }),
    ]
}

fn ring() -> Arc<KeyRing> {
    Arc::new(KeyRing::new(KeyId(1), vec![(KeyId(1), [7u8; 32]), (KeyId(2), [9u8; 32])]).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every message survives seal + verify unchanged, with the sealer's header.
    #[test]
    fn seal_verify_round_trip(body in body(), sender in host(), session in 1u64..u64::MAX) {
        let keys = ring();
        let mut sealer = Sealer::new(keys.clone(), sender, SessionId(session));
        let mut verifier = Verifier::new(keys, 16);
        match sealer.seal(&body) {
            Ok(datagram) => {
                let verified = verifier.verify(&datagram).unwrap();
                prop_assert_eq!(&verified.body, &body);
                prop_assert_eq!(verified.header.sender, sender);
                prop_assert_eq!(verified.header.session, SessionId(session));
                prop_assert_eq!(verified.header.seq, 1);
                prop_assert_eq!(verified.header.key_id, KeyId(1));
                // Read back from the queue without the keys.
                prop_assert_eq!(decode_verified(&datagram).unwrap().body, verified.body);
                // What the packet-reader queues of a report is the report, and nothing of
                // another body.
                match &body {
                    Body::Report(report) => {
                        let bytes = report_bytes(&datagram).unwrap();
                        prop_assert_eq!(&decode_report(bytes).unwrap(), report);
                    }
                    _ => prop_assert!(report_bytes(&datagram).is_none()),
                }
            }
            // Only oversized bodies may be refused.
            Err(SealError::TooLarge { len, .. }) => prop_assert!(len > proto::envelope::MAX_BODY),
            Err(e) => prop_assert!(false, "unexpected seal error {e}"),
        }
    }

    /// Flipping any single bit of a sealed datagram makes it rejected.
    #[test]
    fn any_flipped_bit_is_rejected(body in body(), bit in any::<prop::sample::Index>()) {
        let keys = ring();
        let mut sealer = Sealer::new(keys.clone(), HostId(5), SessionId(77));
        let Ok(mut datagram) = sealer.seal(&body) else { return Ok(()); };
        let bit = bit.index(datagram.len() * 8);
        datagram[bit / 8] ^= 1 << (bit % 8);
        let mut verifier = Verifier::new(keys, 16);
        prop_assert!(verifier.verify(&datagram).is_err());
    }

    /// A datagram is accepted once; every later copy is refused as a replay.
    #[test]
    fn replayed_datagram_is_refused(body in body(), copies in 2usize..5) {
        let keys = ring();
        let mut sealer = Sealer::new(keys.clone(), HostId(5), SessionId(77));
        let Ok(datagram) = sealer.seal(&body) else { return Ok(()); };
        let mut verifier = Verifier::new(keys, 16);
        prop_assert!(verifier.verify(&datagram).is_ok());
        for _ in 1..copies {
            let rejection = verifier.verify(&datagram).unwrap_err();
            prop_assert_eq!(rejection.reason(), "replay_duplicate");
        }
    }

    /// Arbitrary bytes never panic the pipeline and are never accepted.
    #[test]
    fn garbage_is_rejected(bytes in prop::collection::vec(any::<u8>(), 0..1600)) {
        let mut verifier = Verifier::new(ring(), 16);
        prop_assert!(verifier.verify(&bytes).is_err());
        let _ = decode_verified(&bytes);
        if let Some(report) = report_bytes(&bytes) {
            let _ = decode_report(report);
        }
    }
}

/// A queued report is told from a legacy queued envelope by the envelope's magic: no report
/// may start with it (report id 82, `ReportBody` variant 87).
#[test]
fn no_report_starts_with_the_envelope_magic() {
    let mut bytes = proto::envelope::MAGIC.to_vec();
    bytes.extend_from_slice(&[0; 64]);
    assert!(postcard::from_bytes::<Report>(&bytes).is_err());
}

/// An entry queued by an older packet-reader (the whole envelope) still decodes.
#[test]
fn a_queued_envelope_still_decodes_as_its_report() {
    let mut sealer = Sealer::new(ring(), HostId(3), SessionId(4));
    let report = Report {
        id: 9,
        body: ReportBody::HbShutdown,
    };
    let datagram = sealer.seal(&Body::Report(report.clone())).unwrap();
    assert_eq!(decode_report(&datagram).unwrap(), report);
    let ack = sealer
        .seal(&Body::Ack(Ack {
            session: SessionId(1),
            id: 1,
        }))
        .unwrap();
    assert!(decode_report(&ack).is_err());
}

#[test]
fn heartbeat_fits_in_64_bytes() {
    let mut sealer = Sealer::new(ring(), HostId(u64::MAX), SessionId(u64::MAX));
    let hb = Body::Heartbeat(Heartbeat {
        sent_at_us: u64::MAX,
        leaving: true,
    });
    let datagram = sealer.seal(&hb).unwrap();
    assert!(
        datagram.len() <= 64,
        "heartbeat is {} bytes",
        datagram.len()
    );
    // A realistic heartbeat (current time in µs) is 55 bytes.
    let now = Body::Heartbeat(Heartbeat {
        sent_at_us: 1_795_000_000_000_000,
        leaving: false,
    });
    assert_eq!(sealer.seal(&now).unwrap().len(), 55);
}

#[test]
fn each_rejection_reason_is_distinct() {
    let keys = ring();
    let mut sealer = Sealer::new(keys.clone(), HostId(3), SessionId(10));
    let body = Body::EchoRequest { nonce: 1 };
    let good = sealer.seal(&body).unwrap();
    let mut verifier = Verifier::new(keys.clone(), 1);

    let reason = |v: &mut Verifier, d: &[u8]| v.verify(d).unwrap_err().reason();
    assert_eq!(reason(&mut verifier, &good[..10]), "too_short");
    assert_eq!(reason(&mut verifier, &vec![0u8; 1401]), "too_long");
    let mut bad = good.clone();
    bad[0] = b'X';
    assert_eq!(reason(&mut verifier, &bad), "bad_magic");
    let mut bad = good.clone();
    bad[2] = 9;
    assert_eq!(reason(&mut verifier, &bad), "bad_version");
    let mut bad = good.clone();
    bad[3] = 42;
    assert_eq!(reason(&mut verifier, &bad), "unknown_key");
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(reason(&mut verifier, &bad), "bad_mac");

    // A datagram sealed with a key the receiver does not hold.
    let foreign = Arc::new(KeyRing::new(KeyId(1), vec![(KeyId(1), [1u8; 32])]).unwrap());
    let forged = Sealer::new(foreign, HostId(3), SessionId(10))
        .seal(&body)
        .unwrap();
    assert_eq!(reason(&mut verifier, &forged), "bad_mac");

    assert!(verifier.verify(&good).is_ok());
    assert_eq!(reason(&mut verifier, &good), "replay_duplicate");
    for _ in 0..200 {
        sealer.seal(&body).unwrap();
    }
    let newest = sealer.seal(&body).unwrap();
    assert!(verifier.verify(&newest).is_ok());
    // Seq 3, never seen, but now more than a window behind the newest (203).
    let mut old_sealer = Sealer::new(keys.clone(), HostId(3), SessionId(10));
    let _ = old_sealer.seal(&body);
    let _ = old_sealer.seal(&body);
    let old = old_sealer.seal(&body).unwrap();
    assert_eq!(reason(&mut verifier, &old), "replay_too_old");
    let stale = Sealer::new(keys.clone(), HostId(3), SessionId(9))
        .seal(&body)
        .unwrap();
    assert_eq!(reason(&mut verifier, &stale), "replay_stale_session");
    let other = Sealer::new(keys.clone(), HostId(4), SessionId(9))
        .seal(&body)
        .unwrap();
    assert_eq!(reason(&mut verifier, &other), "replay_table_full");

    // Valid MAC over a body that is not a message: sealed by hand.
    let mut raw = good[..HEADER_LEN].to_vec();
    raw[21..29].copy_from_slice(&500u64.to_le_bytes());
    raw.extend_from_slice(&[0xff, 0xff, 0xff]);
    let tag = proto::envelope::mac(&[7u8; 32], &raw);
    raw.extend_from_slice(&tag);
    assert_eq!(reason(&mut verifier, &raw), "malformed");
    let mut raw = good[..good.len() - MAC_LEN].to_vec();
    raw[21..29].copy_from_slice(&501u64.to_le_bytes());
    raw.push(0);
    let tag = proto::envelope::mac(&[7u8; 32], &raw);
    raw.extend_from_slice(&tag);
    assert_eq!(reason(&mut verifier, &raw), "trailing_bytes");
    assert_eq!(Rejection::REASONS.len(), 12);
}

#[test]
fn rotated_keys_are_both_accepted() {
    let old = Arc::new(KeyRing::new(KeyId(1), vec![(KeyId(1), [7u8; 32])]).unwrap());
    let both = ring();
    let new_only = Arc::new(KeyRing::new(KeyId(2), vec![(KeyId(2), [9u8; 32])]).unwrap());
    let mut verifier = Verifier::new(both, 16);
    let body = Body::EchoReply { nonce: 3 };
    let a = Sealer::new(old, HostId(1), SessionId(1))
        .seal(&body)
        .unwrap();
    let b = Sealer::new(new_only, HostId(2), SessionId(1))
        .seal(&body)
        .unwrap();
    assert!(verifier.verify(&a).is_ok());
    assert!(verifier.verify(&b).is_ok());
}
