//! A real browser for the console tests: Debian's headless Chromium driven over WebDriver
//! (`chromedriver` on a loopback port, the `fantoccini` client). The browser's own log
//! (console messages, failed loads, CSP violations) is read back so a test can require it
//! to hold no error.
//!
//! Tests skip with a `SKIPPED:` line when Chromium or ChromeDriver is missing, unless
//! `RINGWATCH_BROWSER_REQUIRED=1` (which `.ci/run` sets, as the set-up command installs
//! them).

use crate::procs::wait_until;
use fantoccini::wd::WebDriverCompatibleCommand;
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Why the browser tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    for path in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(path).exists() {
            return Some(format!(
                "{path} is missing (scripts/install-test-deps.sh installs chromium and chromium-driver)"
            ));
        }
    }
    None
}

/// Returns true when the test must skip (printing why); panics instead when
/// `RINGWATCH_BROWSER_REQUIRED=1`.
pub fn skip() -> bool {
    let Some(why) = unavailable() else {
        return false;
    };
    if std::env::var("RINGWATCH_BROWSER_REQUIRED").as_deref() == Ok("1") {
        panic!("RINGWATCH_BROWSER_REQUIRED=1 but {why}");
    }
    eprintln!("SKIPPED: {why}");
    true
}

/// One entry of the browser's log.
#[derive(Clone, Debug)]
pub struct LogEntry {
    /// `SEVERE`, `WARNING`, `INFO`, ...
    pub level: String,
    /// The message (source URL and text).
    pub message: String,
}

/// A headless Chromium session. The ChromeDriver process (and the Chromium it starts)
/// runs in a process group of its own, killed by its id when the browser is dropped.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<fantoccini::Client>,
    driver: Child,
    /// Where screenshots are saved.
    pub artifacts: PathBuf,
    log: Vec<LogEntry>,
}

/// `POST /session/{id}/se/log {"type": "browser"}`: ChromeDriver's log endpoint (not
/// part of W3C WebDriver, so fantoccini has no method for it).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or("")))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium (window `width` x `height`), with a
    /// fresh profile under `dir`; screenshots go to `artifacts`.
    pub fn start(dir: &Path, artifacts: &Path, width: u32, height: u32) -> Browser {
        Browser::start_with(dir, artifacts, width, height, &[])
    }

    /// Like [`Browser::start`], with more Chromium flags (e.g.
    /// `--enable-precise-memory-info`, so `performance.memory` is not rounded).
    pub fn start_with(
        dir: &Path,
        artifacts: &Path,
        width: u32,
        height: u32,
        extra_args: &[&str],
    ) -> Browser {
        std::fs::create_dir_all(artifacts).expect("artifact directory");
        let port = free_port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).expect("driver log");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .expect("spawn chromedriver");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        assert!(
            wait_until(Duration::from_secs(20), || TcpStream::connect(addr).is_ok()),
            "chromedriver did not listen on {addr}"
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let profile = dir.join("chromium-profile");
        // The flags Chromium needs on a closed network as root (no sandbox, no background
        // connections to Google).
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-features=Translate,MediaRouter,OptimizationHints".into(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={width},{height}"),
        ];
        let args: Vec<String> = args
            .into_iter()
            .chain(extra_args.iter().map(|a| a.to_string()))
            .collect();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": args}),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let client = runtime.block_on(async {
            fantoccini::ClientBuilder::new(
                hyper_util::client::legacy::connect::HttpConnector::new(),
            )
            .capabilities(caps)
            .connect(&format!("http://{addr}"))
            .await
        });
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(driver.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                panic!("WebDriver session: {e}");
            }
        };
        Browser {
            runtime,
            client: Some(client),
            driver,
            artifacts: artifacts.to_path_buf(),
            log: Vec::new(),
        }
    }

    fn client(&self) -> &fantoccini::Client {
        self.client.as_ref().expect("session open")
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        let client = self.client();
        self.runtime
            .block_on(client.goto(url))
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// Runs `script` (a function body: `return ...`) in the page and returns its value.
    pub fn js(&self, script: &str) -> Value {
        let client = self.client();
        self.runtime
            .block_on(client.execute(script, vec![]))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns `true`, polling every 20 ms; returns when it did (the
    /// instant of the poll that saw it), or `None` after `within`.
    pub fn wait_js(&self, script: &str, within: Duration) -> Option<Instant> {
        let deadline = Instant::now() + within;
        loop {
            if self.js(script) == Value::Bool(true) {
                return Some(Instant::now());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Saves a PNG of the window as `<artifacts>/<name>.png`; returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let client = self.client();
        let png = self
            .runtime
            .block_on(client.screenshot())
            .expect("screenshot");
        let path = self.artifacts.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// The browser log since the last call, also kept for [`Browser::errors`].
    pub fn take_log(&mut self) -> Vec<LogEntry> {
        let client = self.client();
        let value = self
            .runtime
            .block_on(client.issue_cmd(BrowserLog))
            .expect("browser log");
        let entries: Vec<LogEntry> = value
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| LogEntry {
                        level: e["level"].as_str().unwrap_or("").to_string(),
                        message: e["message"].as_str().unwrap_or("").to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.log.extend(entries.iter().cloned());
        entries
    }

    /// Every `SEVERE` entry of the browser log so far (console errors, failed loads,
    /// uncaught exceptions, CSP violations).
    pub fn errors(&mut self) -> Vec<LogEntry> {
        self.take_log();
        self.log
            .iter()
            .filter(|e| e.level == "SEVERE")
            .cloned()
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        // Chromium and its helpers are in ChromeDriver's process group.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.driver.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.driver.wait();
    }
}

/// Where the console tests save screenshots: `$RINGWATCH_ARTIFACTS/console`, else
/// `target/test-artifacts/console`.
pub fn artifacts() -> PathBuf {
    std::env::var_os("RINGWATCH_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts")
        })
        .join("console")
}

/// The wall clock in ms since the Unix epoch (the clock the page's `Date.now()` reads).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
