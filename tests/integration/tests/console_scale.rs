//! Issue 28, "usable at 10,000 hosts": the web console in headless Chromium on a real
//! 3-node `cma` cluster (worker on), a real packet-reader and 10,000 simulated nanoprobes
//! (`fleetsim`: 250 switches of 40 hosts, 16 switches per router, every switch and router
//! declared), CMA and reader on 127.86.x.y, the simulated hosts on 127.100+.x.y port 27086.
//!
//! `console_at_10000_hosts` (ignored: a measurement of several minutes; README command)
//! prints:
//! - the size of each JSON answer the page reads, and how long the serving node takes;
//! - the time from opening the page to the 10,000-host state drawn and the stream live;
//! - over an idle minute: each refresh's duration (reads + render) and each render's, how
//!   often each URL was read, the main thread's long tasks, the JS heap
//!   (`performance.memory.usedJSHeapSize`, Chromium run with `--enable-precise-memory-info`)
//!   and the number of DOM elements;
//! - switch sw125 (hosts 5001-5040) down, then hosts 2001-2050 SIGKILLed (simulated): for each verdict the
//!   time from first readable on the leader's API (polled every 50 ms) to shown by the page
//!   (`window.ringwatch.shown`), and the refreshes during the storm;
//! - the search box finding `sim2001` and that host's page opened;
//! - no error in the browser's log.
//!
//! Screenshots: `target/test-artifacts/console/6-10k-hosts.png`, `7-10k-host-page.png`,
//! `8-10k-switch-down.png`.
//!
//! The page's own code is not changed for the measurement: the test wraps the page's
//! `readAll` and `render` functions (globals of the classic script) with timers and reads
//! the Performance API (resource timing, long tasks, memory).

use integration::browser::{self, Browser};
use integration::cluster::{Cluster, CmaCluster, TEST_RAFT};
use integration::procs::binary;
use integration::reader::{http_get, ReaderProc};
use proto::{KeyId, KeyRing};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NET: u8 = 86;
const HOSTS: u64 = 10_000;
const SWITCHES: usize = 250;
const PORT: &str = "27086";
const SHAPE: [&str; 6] = [
    "--hosts",
    "10000",
    "--hosts-per-switch",
    "40",
    "--switches-per-router",
    "16",
];
/// The switch taken down (hosts 5001-5040).
const SWITCH: &str = "sw125";
/// The block killed: hosts 2001-2050 (0.5 % from 2001).
const BLOCK_FIRST: u64 = 2001;
const BLOCK_LEN: u64 = 50;

/// fleetsim with a pipe on its stdin (fault commands); SIGKILLed by PID when dropped.
struct Fleet {
    child: Child,
    stdin: ChildStdin,
    log: PathBuf,
}

impl Fleet {
    fn start(args: &[&str], log: &Path) -> Fleet {
        let out = std::fs::File::create(log).expect("fleetsim log");
        let err = out.try_clone().expect("log");
        let mut child = Command::new(binary("fleetsim"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn fleetsim");
        let stdin = child.stdin.take().expect("stdin");
        Fleet {
            child,
            stdin,
            log: log.to_path_buf(),
        }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("fleetsim stdin");
        self.stdin.flush().expect("fleetsim stdin");
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// Polls `deadline`-bounded until `cond` holds, every `every`; whether it did.
fn poll(within: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

fn get_json(admin: SocketAddr, path: &str) -> Option<Value> {
    match http_get(admin, path) {
        Some((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// An open failure first readable on the leader's API.
#[derive(Clone, Debug)]
struct Seen {
    at_ms: u64,
    kind: String,
    subject: String,
}

/// Polls the leader's `/v1/failures` every 50 ms until stopped; records when each open
/// failure was first readable.
struct ApiWatch {
    seen: Arc<Mutex<HashMap<u64, Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiWatch {
    fn start(admin: SocketAddr) -> ApiWatch {
        let seen: Arc<Mutex<HashMap<u64, Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let Some(rows) = get_json(admin, "/v1/failures") {
                    let at_ms = browser::now_ms();
                    let mut seen = s.lock().expect("lock");
                    for f in rows["data"].as_array().into_iter().flatten() {
                        let Some(id) = f["id"].as_u64() else { continue };
                        if f["state"] == "open" && !seen.contains_key(&id) {
                            seen.insert(
                                id,
                                Seen {
                                    at_ms,
                                    kind: f["kind"].as_str().unwrap_or("").into(),
                                    subject: f["subject"].as_str().unwrap_or("").into(),
                                },
                            );
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        ApiWatch {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> HashMap<u64, Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for ApiWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn quantiles(label: &str, mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return format!("{label}: none");
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    format!(
        "{label}: n={} p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        v.len(),
        q(0.5),
        q(0.9),
        v[v.len() - 1]
    )
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// Wraps the page's `readAll` and `render` with timers, observes long tasks and keeps
/// every resource timing entry.
const INSTRUMENT: &str = r#"
const rw = window.ringwatch;
if (!rw.probe) {
  rw.probe = { refresh: [], tables: [], render: [], longtasks: [] };
  const split = typeof readTables === 'function';
  const read0 = readAll;
  readAll = async function (...a) {
    const t = performance.now();
    const before = S.tablesAt;
    try { return await read0(...a); } finally {
      const ms = performance.now() - t;
      (!split && S.tablesAt !== before ? rw.probe.tables : rw.probe.refresh).push(ms);
    }
  };
  // Since the tables are read apart from the rest (readTables), time that too.
  if (typeof readTables === 'function') {
    const tables0 = readTables;
    readTables = async function (...a) {
      const t = performance.now();
      const before = S.tablesAt;
      try { return await tables0(...a); } finally {
        if (S.tablesAt !== before) rw.probe.tables.push(performance.now() - t);
      }
    };
  }
  // Where a render's time goes: total ms per part.
  rw.probe.parts = {};
  for (const name of ['renderHeader', 'renderSummary', 'renderFailures', 'renderTopology',
    'renderCluster', 'renderEvents', 'renderClosed', 'renderHostPage', 'renderSearch']) {
    const f = window[name];
    if (typeof f !== 'function') continue;
    window[name] = function (...a) {
      const t = performance.now();
      try { return f(...a); } finally {
        rw.probe.parts[name] = (rw.probe.parts[name] || 0) + performance.now() - t;
      }
    };
  }
  const render0 = render;
  render = function (...a) {
    const t = performance.now();
    try { return render0(...a); } finally { rw.probe.render.push(performance.now() - t); }
  };
  new PerformanceObserver((l) => { for (const e of l.getEntries()) rw.probe.longtasks.push(e.duration); })
    .observe({ type: 'longtask' });
  performance.setResourceTimingBufferSize(100000);
}
return true;
"#;

/// What the page did since the last call (and resets it).
const COLLECT: &str = r#"
const p = window.ringwatch.probe;
const byPath = {};
for (const e of performance.getEntriesByType('resource')) {
  if (e.initiatorType !== 'fetch') continue;
  const k = new URL(e.name).pathname;
  const b = byPath[k] || (byPath[k] = { n: 0, ms: 0, max_ms: 0, bytes: 0 });
  b.n += 1; b.ms += e.duration; b.max_ms = Math.max(b.max_ms, e.duration);
  b.bytes = Math.max(b.bytes, e.decodedBodySize);
}
performance.clearResourceTimings();
const heap = performance.memory.usedJSHeapSize;
if (window.gc) window.gc();
const out = {
  refresh: p.refresh, tables: p.tables, render: p.render, longtasks: p.longtasks, byPath,
  parts: p.parts,
  heap, heap_after_gc: performance.memory.usedJSHeapSize,
  dom: document.getElementsByTagName('*').length,
  refreshes: window.ringwatch.refreshes, ticks: window.ringwatch.ticks,
};
p.refresh = []; p.tables = []; p.render = []; p.longtasks = []; p.parts = {};
return out;
"#;

fn report(phase: &str, stats: &Value, seconds: f64) {
    println!("-- {phase} ({seconds:.0} s)");
    println!(
        "   {}",
        quantiles("refresh without tables", floats(&stats["refresh"]))
    );
    println!(
        "   {}",
        quantiles(
            "refresh with hosts/rings/topology",
            floats(&stats["tables"])
        )
    );
    println!("   {}", quantiles("render", floats(&stats["render"])));
    let lt = floats(&stats["longtasks"]);
    println!(
        "   long tasks (> 50 ms): {} totalling {:.0} ms ({:.1} % of the time), longest {:.0} ms",
        lt.len(),
        lt.iter().sum::<f64>(),
        lt.iter().sum::<f64>() / (seconds * 10.0),
        lt.iter().copied().fold(0.0, f64::max)
    );
    if let Some(parts) = stats["parts"].as_object() {
        let mut parts: Vec<(String, f64)> = parts
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
            .collect();
        parts.sort_by(|a, b| b.1.total_cmp(&a.1));
        let text: Vec<String> = parts.iter().map(|(k, v)| format!("{k} {v:.0}")).collect();
        println!("   render parts, ms in all: {}", text.join(", "));
    }
    if let Some(paths) = stats["byPath"].as_object() {
        let mut paths: Vec<_> = paths.iter().collect();
        paths.sort_by_key(|(k, _)| k.to_string());
        for (path, b) in paths {
            let n = b["n"].as_f64().unwrap_or(0.0);
            println!(
                "   read {path}: {n} times, mean {:.0} ms, max {:.0} ms, {} bytes",
                b["ms"].as_f64().unwrap_or(0.0) / n.max(1.0),
                b["max_ms"].as_f64().unwrap_or(0.0),
                b["bytes"]
            );
        }
    }
    println!(
        "   JS heap used {:.1} MiB ({:.1} MiB after a GC), {} DOM elements, {} refreshes and {} ticks since load",
        stats["heap"].as_f64().unwrap_or(0.0) / 1048576.0,
        stats["heap_after_gc"].as_f64().unwrap_or(0.0) / 1048576.0,
        stats["dom"],
        stats["refreshes"],
        stats["ticks"]
    );
}

/// The `/v1/hosts` rows of `admin`: how many are up.
fn hosts_up(admin: SocketAddr) -> Option<u64> {
    get_json(admin, "/v1/status")?["data"]["hosts_up"].as_u64()
}

/// README: `cargo test -p integration --test console_scale -- --ignored --nocapture`
/// (after `cargo build --workspace --bins`; `--release` on both for release figures).
#[test]
#[ignore = "a measurement (several minutes, 10,000 simulated hosts): README command"]
fn console_at_10000_hosts() {
    if browser::skip() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("keys.toml");
    KeyRing::write_new_key_file(&key_file, KeyId(1)).expect("key file");
    let topology = Command::new(binary("fleetsim"))
        .arg("topology")
        .args(SHAPE)
        .output()
        .expect("fleetsim topology");
    assert!(topology.status.success());
    let topology = String::from_utf8(topology.stdout).expect("utf-8");
    assert_eq!(topology.matches("[[worker.switches]]").count(), SWITCHES);
    // The worker's default timings (1 s / 2 s / 3 s, tick 200 ms), as bench/scale.sh.
    let worker = format!(
        "{TEST_RAFT}\n[worker]\nkey_file = \"{}\"\n\n{topology}",
        key_file.display()
    );
    let mut cluster = Cluster::new(NET, 3, &worker);
    cluster.form();
    let cluster_key = cluster.dir.path().join("cluster.key");
    let mut reader = ReaderProc::new(
        dir.path(),
        NET,
        1,
        &key_file,
        &cluster_key,
        &cluster.raft_addrs(),
    );
    reader.start();
    let reader_addr = reader.listen.to_string();
    let keys = key_file.display().to_string();
    let mut args = vec!["run"];
    args.extend_from_slice(&SHAPE);
    args.extend_from_slice(&[
        "--port",
        PORT,
        "--reader",
        &reader_addr,
        "--key-file",
        &keys,
        "--stats-every-s",
        "30",
    ]);
    let mut fleet = Fleet::start(&args, &dir.path().join("fleetsim.log"));

    // Formation: fleetsim's own view, then the CMA's.
    let formed = poll(Duration::from_secs(900), Duration::from_millis(500), || {
        fleet.events().iter().any(|e| e["event"] == "formed")
    });
    assert!(formed, "fleetsim never formed:\n{}", fleet.tail());
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let leader_admin = cluster.node(leader).admin;
    let all_up = poll(Duration::from_secs(600), Duration::from_secs(1), || {
        hosts_up(leader_admin) == Some(HOSTS)
    });
    assert!(
        all_up,
        "the CMA never had {HOSTS} hosts up: {:?}\n{}",
        hosts_up(leader_admin),
        fleet.tail()
    );
    println!(
        "== {HOSTS} hosts formed and up in the CMA {:.1} s after the start",
        started.elapsed().as_secs_f64()
    );
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let admin = cluster.node(follower).admin;

    // The JSON the page reads, as the serving follower answers it.
    for path in [
        "/cluster/status",
        "/v1/status",
        "/v1/failures",
        "/v1/events?since=0&limit=1000",
        "/v1/events?since=0&limit=10000",
        "/v1/hosts",
        "/v1/rings",
        "/v1/topology",
    ] {
        let t = Instant::now();
        let (status, body) = http_get(admin, path).expect("answer");
        println!(
            "   GET {path}: {status}, {} bytes in {:.0} ms",
            body.len(),
            t.elapsed().as_secs_f64() * 1000.0
        );
    }

    let mut browser = Browser::start_with(
        dir.path(),
        &browser::artifacts(),
        1400,
        1000,
        &["--enable-precise-memory-info", "--js-flags=--expose-gc"],
    );
    let url = format!("http://{admin}/console/");
    let t = Instant::now();
    browser.goto(&url);
    let drawn = format!(
        "const up = document.querySelector('#tile-up b'); \
         return document.getElementById('conn').dataset.state === 'live' \
         && up !== null && up.textContent === '{HOSTS}' \
         && document.getElementById('topology-mode').textContent.includes('{HOSTS} hosts') \
         && document.querySelectorAll('#topology-box .box.switch').length === {SWITCHES}"
    );
    assert!(
        browser.wait_js(&drawn, Duration::from_secs(120)).is_some(),
        "the page never drew {HOSTS} hosts; body: {}",
        browser.js("return document.body.innerText.slice(0, 2000)")
    );
    println!(
        "== page opened -> {HOSTS} hosts drawn, stream live: {:.0} ms (page's clock: {} ms since navigation)",
        t.elapsed().as_secs_f64() * 1000.0,
        browser.js("return Math.round(performance.now())")
    );
    browser.js(INSTRUMENT);
    let first = browser.js(COLLECT);
    report("page load (until drawn)", &first, t.elapsed().as_secs_f64());
    browser.screenshot("6-10k-hosts");

    // An idle minute: ticks, the 5 s reads, the 30 s table reads.
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(60));
    let idle = browser.js(COLLECT);
    report("idle", &idle, t.elapsed().as_secs_f64());

    // A switch down, then a block of hosts killed.
    let watch = ApiWatch::start(leader_admin);
    let t = Instant::now();
    let switch_ms = browser::now_ms();
    fleet.send(&format!("switch-down {SWITCH}"));
    let on_page = format!(
        "return document.querySelector('#open-failures tr.open[data-kind=\"switch_down\"][data-subject=\"{SWITCH}\"]') !== null \
         && document.querySelector('#topology-box .box.switch[data-name=\"{SWITCH}\"][data-state=\"down\"]') !== null"
    );
    assert!(
        browser
            .wait_js(&on_page, Duration::from_secs(120))
            .is_some(),
        "the page never showed {SWITCH} down"
    );
    let seen = watch.seen();
    let (id, api) = seen
        .iter()
        .find(|(_, s)| s.kind == "switch_down" && s.subject == SWITCH)
        .map(|(id, s)| (*id, s.clone()))
        .expect("the switch_down verdict seen on the leader's API");
    let shown = browser.js(&format!("return window.ringwatch.shown[{id}] || 0"));
    let shown = shown.as_u64().expect("shown");
    println!(
        "== {SWITCH} down: verdict on the leader's API {} ms after the fault, on the page {} ms after the API ({} ms after the fault)",
        api.at_ms as i64 - switch_ms as i64,
        shown as i64 - api.at_ms as i64,
        shown as i64 - switch_ms as i64
    );
    // The switch's box counts its hosts unreachable (from the verdict, at once).
    let counts = "return [...document.querySelectorAll('#topology-box .counts text')] \
         .some((t) => t.textContent === '40 unreachable')";
    assert!(
        browser.wait_js(counts, Duration::from_secs(30)).is_some(),
        "no switch box reads '40 unreachable'"
    );
    browser.js(&format!(
        "document.querySelector('#topology-box .box.switch[data-name=\"{SWITCH}\"]') \
         .scrollIntoView({{ block: 'center' }}); return null"
    ));
    browser.screenshot("8-10k-switch-down");
    browser.js("window.scrollTo(0, 0); return null");

    let block_ms = browser::now_ms();
    let block: Vec<u64> = (BLOCK_FIRST..BLOCK_FIRST + BLOCK_LEN).collect();
    let ids: Vec<String> = block.iter().map(u64::to_string).collect();
    fleet.send(&format!("kill {}", ids.join(" ")));
    let page_dead = format!(
        "const ids = new Set({block:?}.map(String)); \
         return [...document.querySelectorAll('#open-failures tr.open[data-kind=\"dead\"]')] \
           .filter((r) => ids.has(r.dataset.subject)).length === {BLOCK_LEN} \
         && document.querySelector('#tile-dead b').textContent === '{BLOCK_LEN}'"
    );
    let page_all = browser.wait_js(&page_dead, Duration::from_secs(180));
    assert!(
        page_all.is_some(),
        "the page never showed the {BLOCK_LEN} hosts dead; fleetsim:\n{}",
        fleet.tail()
    );
    let page_all_ms = browser::now_ms();
    let seen = watch.seen();
    drop(watch);
    let dead: Vec<(u64, Seen)> = seen
        .into_iter()
        .filter(|(_, s)| {
            s.kind == "dead" && s.subject.parse::<u64>().is_ok_and(|h| block.contains(&h))
        })
        .collect();
    assert_eq!(dead.len() as u64, BLOCK_LEN, "dead verdicts on the API");
    let shown = browser.js("return window.ringwatch.shown");
    let lags: Vec<f64> = dead
        .iter()
        .map(|(id, s)| shown[id.to_string()].as_f64().expect("shown") - s.at_ms as f64)
        .collect();
    let last_api = dead.iter().map(|(_, s)| s.at_ms).max().unwrap_or(0);
    println!(
        "== hosts {BLOCK_FIRST}-{} killed: last verdict on the API {:.1} s after the fault; page showed all {} with the tile at {BLOCK_LEN} dead {:.1} s after the fault",
        BLOCK_FIRST + BLOCK_LEN - 1,
        (last_api - block_ms) as f64 / 1000.0,
        BLOCK_LEN,
        (page_all_ms - block_ms) as f64 / 1000.0
    );
    println!(
        "   {}",
        quantiles("verdict readable on the leader -> shown on the page", lags)
    );
    let storm = browser.js(COLLECT);
    report(
        "switch down and block killed",
        &storm,
        t.elapsed().as_secs_f64(),
    );

    // The search box finds a host; its page opens.
    let search = browser.js(
        "const s = document.getElementById('search'); const t0 = performance.now(); \
         s.value = 'sim1'; s.dispatchEvent(new Event('input')); const broad = performance.now() - t0; \
         const t1 = performance.now(); s.value = 'sim2001'; s.dispatchEvent(new Event('input')); \
         const one = performance.now() - t1; \
         const links = [...document.querySelectorAll('#search-results a')].map((a) => a.getAttribute('href')); \
         return { broad, one, links };",
    );
    println!(
        "== search: 'sim1' (1,111 matches) {:.1} ms, 'sim2001' {:.1} ms -> {}",
        search["broad"].as_f64().unwrap_or(0.0),
        search["one"].as_f64().unwrap_or(0.0),
        search["links"]
    );
    assert_eq!(search["links"], serde_json::json!(["#host/2001"]));
    let t = Instant::now();
    browser.js("document.querySelector('#search-results a').click(); return null");
    let host_page = "const t = document.getElementById('host-title').textContent; \
         return !document.getElementById('host-page').hidden && t.includes('Host 2001') \
         && t.includes('dead') \
         && document.querySelector('#host-failures tr[data-kind=\"dead\"][data-subject=\"2001\"]') !== null";
    assert!(
        browser
            .wait_js(host_page, Duration::from_secs(30))
            .is_some(),
        "host 2001's page: {}",
        browser.js("return document.getElementById('host-page').innerText")
    );
    println!(
        "== host 2001's page drawn {:.0} ms after the click",
        t.elapsed().as_secs_f64() * 1000.0
    );
    browser.screenshot("7-10k-host-page");
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(15));
    let on_host = browser.js(COLLECT);
    report("on a host's page", &on_host, t.elapsed().as_secs_f64());

    let errors = browser.errors();
    assert!(errors.is_empty(), "the browser logged errors: {errors:#?}");
    fleet.send("quit");
    drop(browser);
    drop(fleet);
    drop(reader);
    drop(cluster);
}
