//! Issue 28: the web console in a real browser (headless Chromium over WebDriver) on a
//! running demo-sized Ringwatch (3 `cma` nodes, a packet-reader, 6 nanoprobes, all real
//! processes on 127.84.x.y):
//! - the page, served by a follower, draws every host up;
//! - a hung host (its nanoprobe SIGSTOPped) appears as an open `dead` failure without a
//!   reload, within 1 s of the verdict being readable from the leader's API;
//! - the CMA leader is SIGKILLed: the page shows the new leader by itself and a later
//!   verdict still arrives;
//! - the browser log holds no error (no failed load, no exception, no CSP violation).
//!
//! A screenshot per scenario is saved in `target/test-artifacts/console/`.
//!
//! `console_latency_over_kills` (ignored; a README command) measures the time from the
//! verdict readable on the leader to the page showing it over 20 kills.

use integration::browser::{self, Browser};
use integration::cluster::CmaCluster;
use integration::loopback::WorkerSystem;
use integration::reader::{http_get, spawn_nanoprobe};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

const HOSTS: u64 = 6;

/// The open `dead` failure about `host` in an admin answer's rows, if any.
fn open_dead(rows: &Value, host: u64) -> Option<u64> {
    let subject = host.to_string();
    rows["data"].as_array()?.iter().find_map(|f| {
        (f["kind"] == "dead" && f["subject"].as_str() == Some(&subject) && f["state"] == "open")
            .then(|| f["id"].as_u64())
            .flatten()
    })
}

/// Polls `admin`'s `/v1/failures` every 10 ms from another thread; returns a handle
/// whose result is (failure id, wall-clock ms when first readable), or None when
/// `within` passed first.
fn watch_api(
    admin: SocketAddr,
    host: u64,
    within: Duration,
) -> std::thread::JoinHandle<Option<(u64, u64)>> {
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some((200, body)) = http_get(admin, "/v1/failures") {
                if let Ok(rows) = serde_json::from_str::<Value>(&body) {
                    if let Some(id) = open_dead(&rows, host) {
                        return Some((id, browser::now_ms()));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    })
}

fn page_shows_dead(host: u64) -> String {
    format!(
        "return document.querySelector('#open-failures tr.open[data-kind=\"dead\"][data-subject=\"{host}\"]') !== null \
         && document.querySelector('svg .host[data-host=\"{host}\"][data-state=\"dead\"]') !== null"
    )
}

/// Kills nanoprobe `host`, waits for the verdict on the leader's API and on the page;
/// returns the milliseconds from the first to the second.
fn kill_and_time(
    browser: &Browser,
    probes: &mut [Option<integration::procs::ProcGuard>],
    leader_admin: SocketAddr,
    host: u64,
) -> i64 {
    let api = watch_api(leader_admin, host, Duration::from_secs(40));
    // The host hangs (no heartbeat, no answer, no ICMP): a `dead` verdict.
    let hung = probes[host as usize - 1].take().expect("running nanoprobe");
    hung.freeze().expect("SIGSTOP");
    let (id, api_ms) = api
        .join()
        .expect("poller")
        .unwrap_or_else(|| panic!("no dead verdict about host {host} on the leader's API"));
    assert!(
        browser
            .wait_js(&page_shows_dead(host), Duration::from_secs(30))
            .is_some(),
        "the page never showed host {host} dead"
    );
    let shown = browser.js(&format!("return window.ringwatch.shown[{id}] || 0"));
    let shown_ms = shown.as_u64().expect("shown time");
    drop(hung); // SIGKILL by PID
    shown_ms as i64 - api_ms as i64
}

#[test]
fn console_shows_verdicts_live_and_survives_a_leader_kill() {
    if browser::skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let WorkerSystem {
        mut cluster,
        reader: _reader,
        mut probes,
        ..
    } = WorkerSystem::start(dir.path(), 84, HOSTS, "", "info");
    integration::loopback::wait_rings(&cluster, HOSTS as usize);
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let url = format!("http://{}/console/", cluster.node(follower).admin);

    let mut browser = Browser::start(dir.path(), &browser::artifacts(), 1400, 1000);
    let started = std::time::Instant::now();
    browser.goto(&url);
    let all_up = format!(
        "return document.querySelectorAll('svg .host[data-state=\"up\"]').length === {HOSTS} \
         && document.getElementById('conn').dataset.state === 'live'"
    );
    assert!(
        browser.wait_js(&all_up, Duration::from_secs(30)).is_some(),
        "the page never showed {HOSTS} hosts up and live; body: {}",
        browser.js("return document.body.innerText")
    );
    eprintln!(
        "page live with every host up {:?} after load",
        started.elapsed()
    );
    browser.screenshot("1-healthy");
    // A mark that a reload would wipe.
    browser.js("window.loadedOnce = true; return null");

    // A host hangs: the page shows the verdict without a reload.
    let lag = kill_and_time(&browser, &mut probes, cluster.node(leader).admin, 3);
    eprintln!("verdict readable on the leader -> shown by the page: {lag} ms");
    assert!(
        lag <= 1000,
        "the page showed the verdict {lag} ms after the leader's API did (more than 1 s)"
    );
    let unreloaded = browser.js("return window.loadedOnce === true && window.ringwatch.ticks > 1");
    assert_eq!(unreloaded, Value::Bool(true), "no reload, many ticks");
    browser.screenshot("2-nanoprobe-killed");

    // The CMA leader SIGKILLed: the page, served by a follower, shows the new leader.
    cluster.kill(leader);
    let killed_at = std::time::Instant::now();
    let new_leader = format!(
        "const t = window.ringwatch.lastTick; \
         return t !== null && t.leader_id !== null && t.leader_id !== {leader} \
         && document.getElementById('node').textContent.includes('leader ' + t.leader_id)"
    );
    assert!(
        browser
            .wait_js(&new_leader, Duration::from_secs(30))
            .is_some(),
        "the page never showed a new leader; header: {}",
        browser.js("return document.getElementById('node').textContent")
    );
    eprintln!(
        "page shows the new leader {:?} after the leader was killed",
        killed_at.elapsed()
    );
    // And it still follows the state: a later verdict (the new leader's worker) arrives.
    let hung5 = probes[4].take().expect("host 5");
    hung5.freeze().expect("SIGSTOP");
    assert!(
        browser
            .wait_js(&page_shows_dead(5), Duration::from_secs(40))
            .is_some(),
        "after the leader change the page never showed host 5 dead"
    );
    browser.screenshot("3-after-leader-kill");

    let errors = browser.errors();
    assert!(errors.is_empty(), "the browser logged errors: {errors:#?}");
}

/// README: `cargo test -p integration --test console -- --ignored --nocapture`.
/// 20 nanoprobe kills (each restarted and back up before the next); prints the time
/// from the verdict readable on the leader's API to the page showing it.
#[test]
#[ignore = "a measurement (about 3 minutes): README command"]
fn console_latency_over_kills() {
    if browser::skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let WorkerSystem {
        cluster,
        reader,
        mut probes,
        key_file,
    } = WorkerSystem::start(dir.path(), 85, HOSTS, "", "info");
    integration::loopback::wait_rings(&cluster, HOSTS as usize);
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let browser = Browser::start(dir.path(), &browser::artifacts(), 1400, 1000);
    browser.goto(&format!("http://{}/console/", cluster.node(follower).admin));
    assert!(browser
        .wait_js(
            "return document.getElementById('conn').dataset.state === 'live' && window.ringwatch.refreshes > 0",
            Duration::from_secs(30)
        )
        .is_some());
    let mut lags = Vec::new();
    for round in 0..20u64 {
        let host = round % HOSTS + 1;
        let lag = kill_and_time(&browser, &mut probes, cluster.node(leader).admin, host);
        eprintln!("kill {:2}: host {host}: {lag} ms", round + 1);
        lags.push(lag);
        probes[host as usize - 1] = Some(spawn_nanoprobe(
            dir.path(),
            85,
            host,
            &key_file,
            &reader.listen.to_string(),
            "info",
        ));
        // Back up and watched before the next kill.
        let back = format!(
            "return document.querySelector('#open-failures tr.open[data-subject=\"{host}\"]') === null \
             && document.querySelectorAll('svg .host[data-state=\"up\"]').length === {HOSTS}"
        );
        assert!(
            browser.wait_js(&back, Duration::from_secs(60)).is_some(),
            "host {host} did not come back"
        );
        integration::loopback::wait_rings(&cluster, HOSTS as usize);
        std::thread::sleep(Duration::from_secs(2));
    }
    lags.sort_unstable();
    let q = |p: f64| lags[((lags.len() - 1) as f64 * p).round() as usize];
    println!(
        "verdict readable on the leader -> shown in the console, {} kills: p50 {} ms, p99 {} ms, max {} ms, min {} ms",
        lags.len(),
        q(0.5),
        q(0.99),
        lags[lags.len() - 1],
        lags[0]
    );
}
