//! Issue 17, "Must show": verdicts reach a real Prometheus Alertmanager and resolve.
//!
//! Real binaries on loopback (127.74.x.y): `prometheus-alertmanager` (Debian package, its
//! own config and storage in a temp dir, no cluster gossip), 3 `cma` nodes whose worker has
//! an `alertmanager` sink, a packet-reader and 4 nanoprobes. A host hangs (its nanoprobe
//! SIGSTOPped): the alert shows up firing in `GET /api/v2/alerts` with its labels and annotations, and
//! Alertmanager notifies a webhook receiver run by the test. The nanoprobe is restarted:
//! Alertmanager notifies the alert as resolved and no longer lists it as active, long
//! before the alert's own `endsAt` (4 × `resend_ms` = 4 min) could have expired it.
//!
//! Without Alertmanager installed the test prints SKIPPED and passes, unless
//! `RINGWATCH_ALERTMANAGER_REQUIRED=1` (set by `.ci/run`).

use integration::cluster::CmaCluster;
use integration::procs::{spawn, wait_until, ProcGuard};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NET: u8 = 74;
const HOSTS: u64 = 4;
use integration::loopback::{WorkerSystem, INTERVAL_MS as INTERVAL};

fn alertmanager_binary() -> Option<PathBuf> {
    ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn nanoprobe(dir: &Path, host: u64, key_file: &Path, reader: &str) -> ProcGuard {
    integration::reader::spawn_nanoprobe(dir, NET, host, key_file, reader, "info")
}

/// `GET path` over HTTP/1.0 (the server closes, no chunking): status and body.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// A webhook receiver for Alertmanager's notifications: every JSON body it gets.
fn webhook_receiver(listener: TcpListener) -> Arc<Mutex<Vec<Value>>> {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let store = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut data = Vec::new();
            let mut buf = [0u8; 8192];
            // Headers, then Content-Length bytes of body (bounded: 1 MB).
            let body = loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                }
                if data.len() > 1 << 20 {
                    break None;
                }
                let text = String::from_utf8_lossy(&data).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break Some(body[..length].to_string());
                    }
                }
            };
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            if let Some(value) = body.and_then(|b| serde_json::from_str(&b).ok()) {
                store.lock().unwrap().push(value);
            }
        }
    });
    received
}

/// Alerts about `subject` in `GET /api/v2/alerts` (active ones: resolved alerts are not
/// listed).
fn active_alerts(am: SocketAddr, subject: &str) -> Vec<Value> {
    let Some((200, body)) = http_get(am, "/api/v2/alerts") else {
        return Vec::new();
    };
    let alerts: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
    alerts
        .into_iter()
        .filter(|a| a["labels"]["subject"] == subject)
        .collect()
}

/// Whether the webhook got a notification with `status` for `subject`.
fn notified(received: &Mutex<Vec<Value>>, status: &str, subject: &str) -> bool {
    received.lock().unwrap().iter().any(|n| {
        n["alerts"].as_array().is_some_and(|alerts| {
            alerts
                .iter()
                .any(|a| a["status"] == status && a["labels"]["subject"] == subject)
        })
    })
}

#[test]
fn dead_host_fires_in_alertmanager_and_resolves_on_restart() {
    let Some(am_bin) = alertmanager_binary() else {
        assert!(
            std::env::var("RINGWATCH_ALERTMANAGER_REQUIRED").as_deref() != Ok("1"),
            "RINGWATCH_ALERTMANAGER_REQUIRED=1 but prometheus-alertmanager is not installed"
        );
        println!("SKIPPED: prometheus-alertmanager not installed (apt-get install prometheus-alertmanager)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");

    // The webhook receiver and Alertmanager, both on loopback; no gossip listener.
    let hook = TcpListener::bind(format!("127.{NET}.8.2:0")).expect("webhook listener");
    let hook_addr = hook.local_addr().expect("webhook addr");
    let received = webhook_receiver(hook);
    let am: SocketAddr = format!("127.{NET}.8.1:9093").parse().expect("addr");
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route:\n  receiver: test\n  group_by: ['alertname', 'subject']\n  group_wait: 1s\n  \
             group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: test\n    \
             webhook_configs:\n      - url: 'http://{hook_addr}/'\n        send_resolved: true\n"
        ),
    )
    .expect("alertmanager config");
    let storage = dir.path().join("am-data");
    let _alertmanager = spawn(
        &am_bin,
        &[
            &format!("--config.file={}", am_config.display()),
            &format!("--storage.path={}", storage.display()),
            &format!("--web.listen-address={am}"),
            "--cluster.listen-address=",
            "--log.level=info",
        ],
        &[],
        &dir.path().join("alertmanager.log"),
    )
    .expect("spawn alertmanager");
    assert!(
        wait_until(Duration::from_secs(30), || http_get(am, "/-/ready")
            .is_some_and(|(s, _)| s == 200)),
        "alertmanager never became ready: {}",
        std::fs::read_to_string(dir.path().join("alertmanager.log")).unwrap_or_default()
    );

    // 3 CMA nodes with the Alertmanager sink. A long re-send interval: a firing alert's
    // endsAt is 4 min ahead, so its disappearance within the test's deadline can only be
    // the sink's resolve.
    let sink = format!(
        "[[worker.sinks]]\ntype = \"alertmanager\"\nurl = \"http://{am}\"\nresend_ms = 60000\n\
         labels = {{ cluster = \"it\" }}\n"
    );
    let WorkerSystem {
        cluster,
        reader,
        mut probes,
        key_file,
    } = WorkerSystem::start(dir.path(), NET, HOSTS, &sink, "info");
    let reader_addr = reader.listen.to_string();
    let formed = wait_until(Duration::from_secs(60), || {
        let Ok(out) = cluster.cmactl(cluster.running()[0], &["--json", "hosts"]) else {
            return false;
        };
        let hosts: Vec<Value> = serde_json::from_str(&out).unwrap_or_default();
        hosts.len() == HOSTS as usize
            && hosts
                .iter()
                .all(|h| h["watchers"].as_array().is_some_and(|w| w.len() == 2))
    });
    assert!(formed, "rings not formed");
    std::thread::sleep(Duration::from_millis(3 * INTERVAL));

    // Host 3 hangs (SIGSTOP: no heartbeat, no ICMP): a firing alert with the verdict's
    // labels and annotations.
    let hung3 = probes[2].take().expect("host 3");
    hung3.freeze().expect("SIGSTOP");
    let fired = wait_until(Duration::from_secs(60), || {
        active_alerts(am, "3")
            .iter()
            .any(|a| a["status"]["state"] == "active")
    });
    assert!(fired, "no alert about host 3 in Alertmanager");
    let alert = active_alerts(am, "3").remove(0);
    println!("alert in Alertmanager: {alert:#}");
    assert_eq!(
        alert["labels"]["alertname"], "RingwatchHostDead",
        "{alert:#}"
    );
    assert_eq!(alert["labels"]["kind"], "dead");
    assert_eq!(alert["labels"]["hosts"], "3");
    assert_eq!(alert["labels"]["cluster"], "it");
    assert_eq!(alert["status"]["state"], "active", "{alert:#}");
    assert_eq!(alert["annotations"]["summary"], "host 3 is dead");
    let evidence = alert["annotations"]["evidence"].as_str().unwrap_or("");
    assert!(
        evidence.contains("reported dead by 2,4"),
        "evidence: {evidence}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || notified(
            &received, "firing", "3"
        )),
        "Alertmanager did not notify the firing alert: {:?}",
        received.lock().unwrap()
    );

    // Restart host 3 (the hung process killed first): the failure closes and the alert
    // resolves.
    drop(hung3);
    probes[2] = Some(nanoprobe(dir.path(), 3, &key_file, &reader_addr));
    let resolved = wait_until(Duration::from_secs(60), || {
        active_alerts(am, "3").is_empty() && notified(&received, "resolved", "3")
    });
    assert!(
        resolved,
        "alert about host 3 not resolved; active: {:?}; notifications: {:?}",
        active_alerts(am, "3"),
        received.lock().unwrap()
    );
    println!("alert about host 3 resolved after the restart");
    drop(probes);
    drop(reader);
}
