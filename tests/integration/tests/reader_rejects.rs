//! Must show: forged, replayed, truncated and oversized datagrams sent to a real
//! packet-reader are rejected, counted by reason on `/metrics`, and never reach the queue;
//! genuine reports around them are committed and ACKed.

use integration::cluster::{read_all, Cluster, TEST_RAFT};
use integration::reader::{sample, ReaderProc};
use proto::{
    Ack, Body, Heartbeat, HostId, KeyId, KeyRing, Report, ReportBody, Sealer, SessionId, Verifier,
    MAX_DATAGRAM,
};
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NET: u8 = 71;
const SENDER: u64 = 4242;

fn report(id: u64) -> Body {
    Body::Report(Report {
        id,
        body: ReportBody::HbBackAlive {
            peer: HostId(7),
            down_for_ms: 1500,
        },
    })
}

/// Waits (bounded) for the ACK of report `id`, ignoring other datagrams; like a
/// nanoprobe, calls `retransmit` every few seconds until it comes (an append can fail
/// while a loaded machine is slow, and the reader then relies on retransmission).
fn wait_ack(
    socket: &UdpSocket,
    verifier: &mut Verifier,
    session: SessionId,
    id: u64,
    mut retransmit: impl FnMut(),
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut next_retransmit = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if Instant::now() >= next_retransmit {
            retransmit();
            next_retransmit = Instant::now() + Duration::from_secs(3);
        }
        let Ok((len, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if let Ok(v) = verifier.verify(&buf[..len]) {
            if v.body == Body::Ack(Ack { session, id }) {
                return;
            }
        }
    }
    panic!("no ACK for report {id}");
}

/// A counter's value in a metrics text.
fn rejected(text: &str, reason: &str) -> f64 {
    sample(
        text,
        &format!("ringwatch_reader_rejected_total{{reason=\"{reason}\"}}"),
    )
}

#[test]
fn bad_datagrams_are_counted_and_never_queued() {
    let mut cluster = Cluster::new(NET, 1, TEST_RAFT);
    cluster.form();
    let dir = cluster.dir.path().to_path_buf();
    let key_file = dir.join("keys.toml");
    let keys = Arc::new(KeyRing::write_new_key_file(&key_file, KeyId(1)).expect("key file"));
    let mut reader = ReaderProc::new(
        &dir,
        NET,
        1,
        &key_file,
        &dir.join("cluster.key"),
        &cluster.raft_addrs(),
    );
    reader.start();

    let socket = UdpSocket::bind(format!("127.{NET}.2.1:0")).expect("sender socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let session = SessionId::from_clock();
    let sealer = std::cell::RefCell::new(Sealer::new(keys.clone(), HostId(SENDER), session));
    let seal = |body: &Body| sealer.borrow_mut().seal(body).expect("seal");
    let mut verifier = Verifier::new(keys.clone(), 16);
    let send = |d: &[u8]| {
        socket.send_to(d, reader.listen).expect("send");
    };

    // A genuine report first: committed and ACKed.
    let genuine = seal(&report(1));
    send(&genuine);
    wait_ack(&socket, &mut verifier, session, 1, || {
        send(&seal(&report(1)))
    });
    let before = reader.metrics_text();

    // Replayed: the very same bytes again, twice.
    send(&genuine);
    send(&genuine);
    // Forged: same key id, another key (an attacker without the key).
    let mut forger = Sealer::new(
        Arc::new(KeyRing::generate(KeyId(1))),
        HostId(SENDER),
        session,
    );
    send(&forger.seal(&report(101)).expect("seal"));
    // Forged: a genuine datagram with its body altered after sealing.
    let mut tampered = seal(&report(102));
    let body_byte = proto::envelope::HEADER_LEN + 1;
    tampered[body_byte] ^= 0x01;
    send(&tampered);
    // Forged: an unknown key id.
    let mut stranger = Sealer::new(
        Arc::new(KeyRing::generate(KeyId(9))),
        HostId(SENDER),
        session,
    );
    send(&stranger.seal(&report(103)).expect("seal"));
    // Truncated: below the minimum, and cut short (MAC no longer matches).
    let whole = seal(&report(104));
    send(&whole[..20]);
    send(&whole[..whole.len() - 1]);
    // Oversized: a datagram over the limit whose MAC is correct for its content.
    let mut oversized = seal(&report(105));
    oversized.truncate(oversized.len() - proto::envelope::MAC_LEN);
    oversized.resize(MAX_DATAGRAM + 100, 0);
    let tag = proto::envelope::mac(keys.primary().1, &oversized);
    oversized.extend_from_slice(&tag);
    send(&oversized);
    // A heartbeat is genuine but not queued.
    send(&seal(&Body::Heartbeat(Heartbeat {
        sent_at_us: 1,
        leaving: false,
    })));

    let expected = [
        ("replay_duplicate", 2.0),
        ("bad_mac", 3.0),
        ("unknown_key", 1.0),
        ("too_short", 1.0),
        ("too_long", 1.0),
    ];
    let delta = |text: &str, series: &str| sample(text, series) - sample(&before, series);
    let mut text = String::new();
    let counted = integration::procs::wait_until(Duration::from_secs(30), || {
        text = reader.metrics_text();
        expected
            .iter()
            .all(|(reason, n)| rejected(&text, reason) - rejected(&before, reason) >= *n)
            && delta(
                &text,
                "ringwatch_reader_dropped_total{reason=\"heartbeat\"}",
            ) >= 1.0
    });
    assert!(counted, "rejections not counted as expected:\n{text}");
    for (reason, n) in expected {
        assert_eq!(
            rejected(&text, reason) - rejected(&before, reason),
            n,
            "reason {reason}:\n{text}"
        );
    }
    assert_eq!(delta(&text, "ringwatch_reader_received_total"), 9.0);
    assert_eq!(delta(&text, "ringwatch_reader_verified_total"), 1.0);

    // A second genuine report after all of them: once it is ACKed, anything queued before
    // it has been committed too.
    send(&seal(&report(2)));
    wait_ack(&socket, &mut verifier, session, 2, || {
        send(&seal(&report(2)))
    });

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let stored = runtime.block_on(read_all(&cluster.client()));
    let ids: Vec<u64> = stored
        .iter()
        .filter(|(_, p)| p.sender == SENDER)
        .map(|(_, p)| p.seq)
        .collect();
    assert_eq!(ids, vec![1, 2], "only the genuine reports are queued");
    for (_, p) in &stored {
        // Only reports are queued, each as its report alone.
        let r = proto::decode_report(&p.report).expect("stored report decodes");
        assert_eq!(r.id, p.seq);
        assert!(!p.report.starts_with(&proto::envelope::MAGIC));
    }
    let text = reader.metrics_text();
    assert!(sample(&text, "ringwatch_reader_acks_total") >= 2.0);
    reader.stop_gracefully(Duration::from_secs(30));
}
