//! Helpers for tests that run real workspace binaries: find a built binary, spawn it with
//! its output captured to a log file, stop it with signals, and make sure it dies with the
//! test (a guard SIGKILLs it by PID on drop, also when the test panics).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The path of the workspace binary `name`, built next to the running test executable.
///
/// A test executable lives in `target/<profile>/deps/`; binaries of the same build are in
/// `target/<profile>/`. The first call in a test process runs `cargo build --workspace
/// --bins` with the same target directory and profile (a no-op when the README's
/// `cargo build --workspace --bins` already ran), so a test never runs a stale binary.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is not under target/<profile>/deps");
    build_workspace_binaries(profile_dir);
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "binary {} not found after cargo build --workspace --bins",
        path.display()
    );
    path
}

/// Writes a secret file (cluster secret, admin token) with mode 0600: the daemons refuse
/// secret files other users could read.
pub fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn build_workspace_binaries(profile_dir: &Path) {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target_dir = profile_dir.parent().expect("target directory");
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let mut cmd = Command::new(cargo);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--workspace", "--bins", "--target-dir"])
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("running cargo build --workspace --bins");
        assert!(status.success(), "cargo build --workspace --bins failed");
    });
}

/// A spawned child process, SIGKILLed by PID when dropped unless it was already reaped.
#[derive(Debug)]
pub struct ProcGuard {
    child: Child,
    log: PathBuf,
    name: String,
    reaped: Option<ExitStatus>,
}

/// Spawns `program` with `args` and extra environment `env`, stdout and stderr appended to
/// `log`.
pub fn spawn(
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
) -> std::io::Result<ProcGuard> {
    spawn_limited(program, args, env, log, None)
}

/// Like [`spawn`], with the child's RLIMIT_NOFILE (soft and hard) set to `nofile` when
/// given (as systemd's `LimitNOFILE` would).
pub fn spawn_limited(
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
    nofile: Option<u64>,
) -> std::io::Result<ProcGuard> {
    let out = File::options().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(n) = nofile {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is a plain system call, safe between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                    .map_err(std::io::Error::from)
            });
        }
    }
    let child = cmd.spawn()?;
    Ok(ProcGuard {
        child,
        log: log.to_path_buf(),
        name: program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        reaped: None,
    })
}

impl ProcGuard {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file receiving the child's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log's contents so far (empty if unreadable), for assertion messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` to the child, unless it has already been reaped.
    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        if self.reaped.is_some() {
            return Ok(());
        }
        kill(Pid::from_raw(self.child.id() as i32), signal)
    }

    /// Sends SIGTERM (graceful stop).
    pub fn terminate(&self) -> nix::Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Sends SIGSTOP: to its peers the process is what a hung or powered-off host is (no
    /// datagram from it, none answered, and unlike a killed process its socket stays bound,
    /// so no ICMP port-unreachable either). Dropping the guard still SIGKILLs it.
    pub fn freeze(&self) -> nix::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// Sends SIGKILL and reaps the child.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let _ = self.signal(Signal::SIGKILL);
        self.wait_timeout(Duration::from_secs(10))
    }

    /// Waits at most `timeout` for the child to exit; its status, or None if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.reaped {
            return Some(status);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.reaped = Some(status);
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return None,
            }
        }
    }

    /// A short name for messages: the program's file name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Runs `command` to completion: its stdout when it succeeds, its stderr (or why it could
/// not start) when not.
pub fn output_of(command: &mut Command) -> Result<String, String> {
    let out = command.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Polls `cond` every 20 ms until it returns true or `timeout` passes; whether it did.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
