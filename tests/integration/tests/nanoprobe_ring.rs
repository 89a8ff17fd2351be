//! Three real nanoprobes in a ring on 127.61.0.x, with a stand-in receiver (written here,
//! over the real envelope) playing the packet-reader and the CMA: it records reports,
//! ACKs them, and sends `SendExpectHb`. SIGKILL one: both neighbours report `HbDead`;
//! restart it: `HbBackAlive`; SIGTERM one: `HbShutdown` and no `HbDead` for it.
//!
//! Needs the `nanoprobe` binary: `cargo build -p nanoprobe` (or `--workspace --bins`).

use integration::procs::{self, ProcGuard};
use proto::{
    Body, Command, CommandBody, HbTimings, HostId, KeyRing, Peer, ProbeKind, ProbeOutcome,
    ProbeTarget, ReportBody, Sealer, SessionId, Verifier,
};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// This test's own loopback range, so parallel tests never share addresses.
const NET: [u8; 3] = [127, 61, 0];
const PORT: u16 = 27061;
const STAND_IN: u64 = 1000;
/// Node 1's Prometheus listener.
const METRICS: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 61, 0, 1)),
    27161,
);
const WAIT: Duration = Duration::from_secs(15);
const TIMINGS: HbTimings = HbTimings {
    interval_ms: 200,
    warntime_ms: 400,
    deadtime_ms: 800,
};

fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([NET[0], NET[1], NET[2], last], port))
}

fn node_addr(host: u64) -> SocketAddr {
    addr(host as u8, PORT)
}

#[derive(Default)]
struct Record {
    /// Every distinct report received: (sender, report id, session, body).
    reports: Vec<(HostId, SessionId, u64, ReportBody)>,
    /// Command ids acknowledged by nanoprobes.
    acked_commands: Vec<u64>,
}

/// Plays packet-reader and CMA on one socket.
struct StandIn {
    socket: Arc<UdpSocket>,
    /// One sealer for ACKs and commands: a second session of the same host id would make
    /// the nanoprobes refuse the older one as stale.
    sealer: Arc<Mutex<Sealer>>,
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    next_command: Mutex<u64>,
}

impl StandIn {
    fn start(keys: Arc<KeyRing>) -> StandIn {
        let socket = Arc::new(UdpSocket::bind(addr(100, PORT)).unwrap());
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let sealer = Arc::new(Mutex::new(Sealer::new(
            keys.clone(),
            HostId(STAND_IN),
            SessionId::from_clock(),
        )));
        let record = Arc::new(Mutex::new(Record::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (socket, record, stop, keys, acker) = (
                socket.clone(),
                record.clone(),
                stop.clone(),
                keys.clone(),
                sealer.clone(),
            );
            std::thread::spawn(move || {
                let mut verifier = Verifier::new(keys, 64);
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let Ok(v) = verifier.verify(&buf[..n]) else {
                        continue;
                    };
                    match v.body {
                        Body::Report(report) => {
                            let ack = Body::Ack(proto::Ack {
                                session: v.header.session,
                                id: report.id,
                            });
                            let datagram = acker.lock().unwrap().seal(&ack).unwrap();
                            socket.send_to(&datagram, from).unwrap();
                            let mut rec = record.lock().unwrap();
                            let key = (v.header.sender, v.header.session, report.id);
                            if !rec.reports.iter().any(|(h, s, id, _)| (*h, *s, *id) == key) {
                                rec.reports.push((key.0, key.1, key.2, report.body));
                            }
                        }
                        Body::Ack(ack) => record.lock().unwrap().acked_commands.push(ack.id),
                        _ => {}
                    }
                }
            })
        };
        StandIn {
            socket,
            sealer,
            record,
            stop,
            thread: Some(thread),
            next_command: Mutex::new(1),
        }
    }

    /// Sends a command reliably: retransmitted (same id) until the nanoprobe ACKs it.
    fn command(&self, to: SocketAddr, body: CommandBody) {
        let id = {
            let mut n = self.next_command.lock().unwrap();
            *n += 1;
            *n
        };
        let cmd = Body::Command(Command { id, body });
        let acked = procs::wait_until(WAIT, || {
            let datagram = self.sealer.lock().unwrap().seal(&cmd).unwrap();
            self.socket.send_to(&datagram, to).unwrap();
            procs::wait_until(Duration::from_millis(300), || {
                self.record.lock().unwrap().acked_commands.contains(&id)
            })
        });
        assert!(acked, "command {id} to {to} never acknowledged");
    }

    fn ring(&self, host: u64, peers: &[u64]) {
        let peers = peers
            .iter()
            .map(|p| Peer {
                host: HostId(*p),
                addr: node_addr(*p),
            })
            .collect();
        self.command(
            node_addr(host),
            CommandBody::SendExpectHb {
                peers,
                timings: TIMINGS,
            },
        );
    }

    fn reports(&self) -> Vec<(HostId, ReportBody)> {
        self.record
            .lock()
            .unwrap()
            .reports
            .iter()
            .map(|(h, _, _, b)| (*h, b.clone()))
            .collect()
    }

    fn count(&self, since: usize, pred: impl Fn(&(HostId, ReportBody)) -> bool) -> usize {
        self.reports()
            .iter()
            .skip(since)
            .filter(|r| pred(r))
            .count()
    }

    fn wait_for(&self, what: &str, since: usize, pred: impl Fn(&(HostId, ReportBody)) -> bool) {
        assert!(
            procs::wait_until(WAIT, || self.count(since, &pred) > 0),
            "timed out waiting for {what}; reports: {:#?}",
            self.reports()
        );
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A minimal HTTP/1.0 GET (the test needs no HTTP client crate); the whole response.
fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut text = String::new();
    let ok = procs::wait_until(WAIT, || {
        let Ok(mut conn) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        else {
            return false;
        };
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        text.clear();
        conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .is_ok()
            && conn.read_to_string(&mut text).is_ok()
            && text.starts_with("HTTP/1")
    });
    assert!(ok, "no HTTP answer from {addr}");
    text
}

fn spawn_node(host: u64, dir: &Path, keys: &Path) -> ProcGuard {
    let bin = procs::binary("nanoprobe");
    let bind = node_addr(host).to_string();
    let reader = addr(100, PORT).to_string();
    let host_s = host.to_string();
    let keys_s = keys.to_string_lossy().into_owned();
    let metrics = METRICS.to_string();
    let mut args = vec![
        "--host-id",
        &host_s,
        "--bind",
        &bind,
        "--packet-reader",
        &reader,
        "--key-file",
        &keys_s,
        "--interval-ms",
        "200",
        "--warntime-ms",
        "400",
        "--deadtime-ms",
        "800",
    ];
    if host == 1 {
        args.extend(["--metrics-listen", &metrics]);
    }
    procs::spawn(
        &bin,
        &args,
        &[("RUST_LOG", "info")],
        &dir.join(format!("node{host}.log")),
    )
    .unwrap()
}

fn is_startup(host: u64) -> impl Fn(&(HostId, ReportBody)) -> bool {
    move |(h, b)| {
        *h == HostId(host) && matches!(b, ReportBody::Startup(s) if s.listen == node_addr(host))
    }
}

#[test]
fn ring_detects_death_return_and_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("keys.toml");
    let keygen = procs::spawn(
        &procs::binary("nanoprobe"),
        &[
            "keygen",
            "--out",
            key_path.to_str().unwrap(),
            "--key-id",
            "5",
        ],
        &[],
        &dir.path().join("keygen.log"),
    );
    let status = keygen.unwrap().wait_timeout(WAIT).unwrap();
    assert!(status.success());
    let keys = Arc::new(KeyRing::load(&key_path).unwrap());
    let stand_in = StandIn::start(keys);

    let mut nodes: Vec<ProcGuard> = (1..=3)
        .map(|h| spawn_node(h, dir.path(), &key_path))
        .collect();
    for h in 1..=3 {
        stand_in.wait_for(&format!("Startup from {h}"), 0, is_startup(h));
    }
    stand_in.ring(1, &[2, 3]);
    stand_in.ring(2, &[3, 1]);
    stand_in.ring(3, &[1, 2]);

    // DoProbe from node 1: authenticated UDP echo to node 2's nanoprobe and TCP connect to
    // node 1's metrics listener; both come back as ProbeResult with an RTT.
    let mark = stand_in.reports().len();
    stand_in.command(
        node_addr(1),
        CommandBody::DoProbe {
            probe_id: 77,
            targets: vec![ProbeTarget {
                host: Some(HostId(2)),
                addr: node_addr(2).ip(),
            }],
            kind: ProbeKind::UdpEcho { port: PORT },
            timeout_ms: 5000,
        },
    );
    stand_in.command(
        node_addr(1),
        CommandBody::DoProbe {
            probe_id: 78,
            targets: vec![ProbeTarget {
                host: None,
                addr: METRICS.ip(),
            }],
            kind: ProbeKind::TcpConnect {
                port: METRICS.port(),
            },
            timeout_ms: 5000,
        },
    );
    for probe in [77, 78] {
        stand_in.wait_for(&format!("ProbeResult {probe}"), mark, move |(r, b)| {
            *r == HostId(1)
                && matches!(b, ReportBody::ProbeResult(p) if p.probe_id == probe
                    && p.outcome == ProbeOutcome::Reachable && p.rtt_us.is_some())
        });
    }
    // The metrics listener (enabled on node 1 only) counts what was sent.
    let metrics = http_get(METRICS, "/metrics");
    assert!(
        metrics.contains("nanoprobe_heartbeats_sent_total"),
        "{metrics}"
    );

    // SIGKILL node 2: both neighbours report it dead.
    let mark = stand_in.reports().len();
    nodes[1].kill();
    for h in [1, 3] {
        stand_in.wait_for(&format!("HbDead for 2 from {h}"), mark, move |(r, b)| {
            *r == HostId(h) && matches!(b, ReportBody::HbDead { peer, .. } if *peer == HostId(2))
        });
    }

    // Restart it: it sends Startup again, gets its ring back, neighbours see it return.
    let mark = stand_in.reports().len();
    nodes[1] = spawn_node(2, dir.path(), &key_path);
    stand_in.wait_for("second Startup from 2", mark, is_startup(2));
    stand_in.ring(2, &[3, 1]);
    for h in [1, 3] {
        stand_in.wait_for(
            &format!("HbBackAlive for 2 from {h}"),
            mark,
            move |(r, b)| {
                *r == HostId(h)
                    && matches!(b, ReportBody::HbBackAlive { peer, .. } if *peer == HostId(2))
            },
        );
    }

    // SIGTERM node 3: HbShutdown, exit 0, and its neighbours raise no alarm.
    let mark = stand_in.reports().len();
    nodes[2].terminate().unwrap();
    stand_in.wait_for("HbShutdown from 3", mark, |(r, b)| {
        *r == HostId(3) && matches!(b, ReportBody::HbShutdown)
    });
    let status = nodes[2].wait_timeout(WAIT).expect("node 3 did not exit");
    assert!(
        status.success(),
        "node 3 exit: {status:?}\n{}",
        nodes[2].log_text()
    );
    // Wait well past deadtime before checking nothing was reported dead.
    std::thread::sleep(Duration::from_millis(3 * u64::from(TIMINGS.deadtime_ms)));
    // On a loaded machine a neighbour may have reported 3 dead just before the SIGTERM
    // (then it also reported it back alive); only a death never followed by a return, i.e.
    // one caused by the stop itself, is a failure.
    let after: Vec<(HostId, ReportBody)> = stand_in.reports().into_iter().skip(mark).collect();
    let dead_3 = after
        .iter()
        .enumerate()
        .filter(|(i, (reporter, b))| {
            matches!(b, ReportBody::HbDead { peer, .. } if *peer == HostId(3))
                && !after[i + 1..].iter().any(|(r, b)| {
                    r == reporter
                        && matches!(b, ReportBody::HbBackAlive { peer, .. } if *peer == HostId(3))
                })
        })
        .count();
    assert_eq!(dead_3, 0, "reports: {:#?}", stand_in.reports());
}

#[test]
fn garbage_config_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "host_id = \"one\"\ncolour = 3\n").unwrap();
    let log = dir.path().join("bad.log");
    let mut p = procs::spawn(
        &procs::binary("nanoprobe"),
        &["--config", config.to_str().unwrap()],
        &[],
        &log,
    )
    .unwrap();
    let status = p
        .wait_timeout(WAIT)
        .expect("nanoprobe with bad config kept running");
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("invalid config file"), "{text}");
}
