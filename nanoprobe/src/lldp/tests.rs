use super::*;
use proptest::prelude::*;

/// Frames recorded from lldpd 1.0.16 in a network namespace (tcpdump on the host side of
/// a veth plugged into the "switch" namespace's bridge), see docs/topology.md.
const REAL_LLDP: &[u8] = include_bytes!("../../tests/frames/lldpd-1.0.16-lldp.bin");
const REAL_CDP: &[u8] = include_bytes!("../../tests/frames/lldpd-1.0.16-cdpv2.bin");
const REAL_SHUTDOWN: &[u8] = include_bytes!("../../tests/frames/lldpd-1.0.16-shutdown.bin");

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn parses_a_real_lldp_frame() {
    let a = parse_frame(REAL_LLDP).unwrap();
    assert_eq!(
        a,
        Announcement {
            protocol: LinkProtocol::Lldp,
            chassis_id: "fe:5b:1d:c7:bd:41".into(),
            port_id: "fe:5b:1d:c7:bd:41".into(),
            system_name: Some("lab-sw1".into()),
            mgmt_addr: Some(ip("198.18.1.254")),
            ttl_s: 4,
        }
    );
}

#[test]
fn parses_a_real_cdp_frame() {
    let a = parse_frame(REAL_CDP).unwrap();
    assert_eq!(
        a,
        Announcement {
            protocol: LinkProtocol::Cdp,
            chassis_id: "lab-sw1".into(),
            port_id: "p1".into(),
            system_name: Some("lab-sw1".into()),
            mgmt_addr: Some(ip("198.18.1.254")),
            ttl_s: 4,
        }
    );
}

#[test]
fn parses_a_real_shutdown_frame() {
    let a = parse_frame(REAL_SHUTDOWN).unwrap();
    assert_eq!(a.ttl_s, 0);
    assert_eq!(a.chassis_id, "fe:5b:1d:c7:bd:41");
}

#[test]
fn every_truncation_of_real_frames_is_refused_or_parsed_without_panic() {
    for frame in [REAL_LLDP, REAL_CDP, REAL_SHUTDOWN] {
        for len in 0..frame.len() {
            let _ = parse_frame(&frame[..len]);
        }
    }
    // Cut inside the chassis TLV: a clear error.
    assert_eq!(parse_frame(&REAL_LLDP[..13]), Err(FrameError::Truncated));
    assert_eq!(parse_frame(&REAL_LLDP[..20]), Err(FrameError::BadTlv));
    // Cut right after the chassis TLV: the port id and TTL are missing.
    assert_eq!(parse_frame(&REAL_LLDP[..23]), Err(FrameError::MissingTlv));
}

#[test]
fn refuses_oversized_foreign_and_duplicated() {
    let mut big = REAL_LLDP.to_vec();
    big.resize(MAX_FRAME + 1, 0);
    assert_eq!(parse_frame(&big), Err(FrameError::Oversized));
    let mut ipv4 = REAL_LLDP.to_vec();
    ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(parse_frame(&ipv4), Err(FrameError::NotDiscovery));
    // The chassis TLV twice.
    let mut dup = REAL_LLDP[..14].to_vec();
    dup.extend_from_slice(&REAL_LLDP[14..23]);
    dup.extend_from_slice(&REAL_LLDP[14..]);
    assert_eq!(parse_frame(&dup), Err(FrameError::DuplicateTlv));
    // A TTL TLV of the wrong length.
    let mut ttl = REAL_LLDP.to_vec();
    ttl[32..34].copy_from_slice(&[0x06, 0x01]);
    assert!(parse_frame(&ttl).is_err());
}

#[test]
fn vlan_tagged_frames_parse() {
    let mut tagged = REAL_LLDP[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
    tagged.extend_from_slice(&REAL_LLDP[12..]);
    assert_eq!(parse_frame(&tagged), parse_frame(REAL_LLDP));
}

#[test]
fn hostile_text_is_sanitised_and_clipped() {
    let name: Vec<u8> = b"\x1b[2Jevil\n"
        .iter()
        .copied()
        .chain([b'x'; 200])
        .collect();
    let frame = lldp_frame("c1", "p1", 120, Some(&name));
    let a = parse_frame(&frame).unwrap();
    let got = a.system_name.unwrap();
    assert!(got.starts_with("?[2Jevil?"), "{got:?}");
    assert_eq!(got.len(), MAX_FIELD);
}

/// A well-formed LLDP frame with text chassis (subtype 7, local) and port (subtype 5).
fn lldp_frame(chassis: &str, port: &str, ttl: u16, name: Option<&[u8]>) -> Vec<u8> {
    let mut f = LLDP_NEAREST_BRIDGE.to_vec();
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x88, 0xcc]);
    let mut tlv = |kind: u16, value: &[u8]| {
        f.extend_from_slice(&((kind << 9) | value.len() as u16).to_be_bytes());
        f.extend_from_slice(value);
    };
    tlv(1, &[&[7u8][..], chassis.as_bytes()].concat());
    tlv(2, &[&[5u8][..], port.as_bytes()].concat());
    tlv(3, &ttl.to_be_bytes());
    if let Some(n) = name {
        tlv(5, n);
    }
    tlv(8, &[5, 1, 198, 18, 7, 254, 2, 0, 0, 0, 1, 0]);
    tlv(0, &[]);
    f
}

fn limits(max: usize) -> TableLimits {
    TableLimits {
        max_neighbours: max,
        report_interval: Duration::from_secs(2),
        max_ttl: Duration::from_secs(300),
    }
}

fn ann(chassis: &str, ttl: u16) -> Announcement {
    parse_frame(&lldp_frame(chassis, "p1", ttl, Some(b"sw"))).unwrap()
}

#[test]
fn new_neighbour_is_reported_then_expires_past_its_ttl() {
    let t0 = Instant::now();
    let mut table = NeighbourTable::new(limits(4));
    assert_eq!(table.observe("eth0", ann("a", 10), t0), Observed::New);
    let first = table.poll(t0).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].chassis_id, "a");
    assert_eq!(first[0].mgmt_addr, Some(ip("198.18.7.254")));
    // Refreshing changes nothing to report.
    assert_eq!(
        table.observe("eth0", ann("a", 10), t0 + Duration::from_secs(5)),
        Observed::Refreshed
    );
    assert_eq!(table.poll(t0 + Duration::from_secs(6)), None);
    // Silent past its TTL (counted from the last frame): reported gone.
    assert_eq!(table.poll(t0 + Duration::from_secs(14)), None);
    assert!(table.next_deadline().unwrap() <= t0 + Duration::from_secs(15));
    assert_eq!(table.poll(t0 + Duration::from_secs(16)), Some(vec![]));
    assert!(table.is_empty());
}

#[test]
fn shutdown_frame_withdraws_at_once() {
    let t0 = Instant::now();
    let mut table = NeighbourTable::new(limits(4));
    let a = parse_frame(REAL_LLDP).unwrap();
    table.observe("eth0", a, t0);
    assert!(table.poll(t0).is_some());
    let bye = parse_frame(REAL_SHUTDOWN).unwrap();
    assert_eq!(table.observe("eth0", bye.clone(), t0), Observed::Withdrawn);
    assert_eq!(table.observe("eth0", bye, t0), Observed::Ignored);
    assert_eq!(table.poll(t0 + Duration::from_secs(2)), Some(vec![]));
}

#[test]
fn a_flood_of_chassis_ids_is_bounded_and_reports_are_rate_limited() {
    let t0 = Instant::now();
    let mut table = NeighbourTable::new(limits(8));
    let mut reports = Vec::new();
    let mut full = 0;
    // 10 000 frames, each with a new chassis id, over 10 s.
    for i in 0..10_000u32 {
        let now = t0 + Duration::from_millis(u64::from(i));
        if table.observe("eth0", ann(&format!("evil{i}"), 300), now) == Observed::TableFull {
            full += 1;
        }
        assert!(table.len() <= 8);
        if let Some(r) = table.poll(now) {
            reports.push((now, r));
        }
    }
    assert_eq!(full, 10_000 - 8);
    // The first frame is reported at once, the next seven coalesced into one report two
    // seconds later; nothing after that changes what is reported.
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(reports.iter().all(|(_, r)| r.len() <= MAX_REPORTED));
    for pair in reports.windows(2) {
        assert!(pair[1].0 - pair[0].0 >= Duration::from_secs(2));
    }
    // The neighbours heard first stay first: a flood does not move a host's switch.
    assert_eq!(reports[1].1[0].chassis_id, "evil0");
}

#[test]
fn a_hostile_ttl_is_capped() {
    let t0 = Instant::now();
    let mut table = NeighbourTable::new(limits(2));
    table.observe("eth0", ann("a", u16::MAX), t0);
    table.poll(t0);
    assert_eq!(table.expire(t0 + Duration::from_secs(301)), 1);
}

#[test]
fn a_report_of_the_most_neighbours_fits_one_datagram() {
    // Quotes double in JSON: the worst case for the size of a report.
    let long = "\"".repeat(255);
    let n = Neighbour {
        iface: long[..MAX_FIELD].to_string(),
        protocol: LinkProtocol::Lldp,
        chassis_id: long[..MAX_FIELD].to_string(),
        port_id: long[..MAX_FIELD].to_string(),
        system_name: Some(long[..MAX_FIELD].to_string()),
        mgmt_addr: Some(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
        ttl_s: u16::MAX,
    };
    let report = proto::discovery::NeighbourReport {
        neighbours: vec![n; MAX_REPORTED],
        gateway_mac: Some("ff:ff:ff:ff:ff:ff".into()),
    };
    let body = proto::Body::Report(proto::Report {
        id: u64::MAX,
        body: proto::ReportBody::Discovery {
            kind: proto::discovery::LLDP_KIND.into(),
            data: serde_json::to_string(&report).unwrap(),
        },
    });
    let keys = proto::KeyRing::new(proto::KeyId(1), vec![(proto::KeyId(1), [1; 32])]).unwrap();
    let mut sealer = proto::Sealer::new(
        std::sync::Arc::new(keys),
        proto::HostId(u64::MAX),
        proto::SessionId(u64::MAX),
    );
    let sealed = sealer.seal(&body).unwrap();
    assert!(sealed.len() <= proto::MAX_DATAGRAM);
}

proptest! {
    #[test]
    fn never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let _ = parse_frame(&bytes);
    }

    #[test]
    fn never_panics_on_mutated_real_frames(
        which in 0usize..3,
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut frame = [REAL_LLDP, REAL_CDP, REAL_SHUTDOWN][which].to_vec();
        for (at, byte) in edits {
            let i = at % frame.len();
            frame[i] = byte;
        }
        let _ = parse_frame(&frame);
    }

    #[test]
    fn well_formed_frames_round_trip(
        chassis in "[a-z0-9:.-]{1,48}",
        port in "[A-Za-z0-9/]{1,48}",
        name in "[a-z0-9-]{1,48}",
        ttl in 1u16..,
    ) {
        let a = parse_frame(&lldp_frame(&chassis, &port, ttl, Some(name.as_bytes()))).unwrap();
        prop_assert_eq!(a.chassis_id, chassis);
        prop_assert_eq!(a.port_id, port);
        prop_assert_eq!(a.system_name, Some(name));
        prop_assert_eq!(a.ttl_s, ttl);
        prop_assert_eq!(a.mgmt_addr, Some(ip("198.18.7.254")));
    }

    /// Whatever arrives, the table stays within its bound and reports at most once per
    /// interval.
    #[test]
    fn table_is_bounded_and_rate_limited(
        frames in prop::collection::vec((0u8..40, 0u16..20, 0u64..500), 0..300),
    ) {
        let t0 = Instant::now();
        let mut table = NeighbourTable::new(limits(8));
        let mut now = t0;
        let mut last: Option<Instant> = None;
        for (chassis, ttl, step) in frames {
            now += Duration::from_millis(step);
            table.observe("eth0", ann(&format!("c{chassis}"), ttl), now);
            prop_assert!(table.len() <= 8);
            if table.poll(now).is_some() {
                if let Some(l) = last {
                    prop_assert!(now - l >= Duration::from_secs(2));
                }
                last = Some(now);
            }
        }
    }
}

#[test]
fn an_empty_set_is_reported_once_after_the_start_up_grace() {
    let t0 = Instant::now();
    let grace = t0 + Duration::from_secs(40);
    let mut table = NeighbourTable::new(limits(4)).report_empty_after(grace);
    assert_eq!(table.poll(t0), None);
    assert_eq!(table.next_deadline(), Some(grace));
    assert_eq!(table.poll(grace), Some(vec![]));
    assert_eq!(table.poll(grace + Duration::from_secs(60)), None);
    // A neighbour heard during the grace is reported at once.
    let mut table = NeighbourTable::new(limits(4)).report_empty_after(grace);
    table.observe("eth0", ann("a", 10), t0);
    assert_eq!(table.poll(t0).map(|r| r.len()), Some(1));
}
