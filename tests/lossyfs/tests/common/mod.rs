//! Test harness: runs the `lossyfs` binary on a temporary directory and always unmounts.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Bound of every wait in the tests.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Returns why real mounts cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (mounting FUSE needs root)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    None
}

/// Prints `SKIPPED: <why>` and returns true when the test must be skipped.
pub fn skipped(test: &str) -> bool {
    match skip_reason() {
        Some(why) => {
            println!("SKIPPED: {test}: {why}");
            true
        }
        None => false,
    }
}

/// A running lossyfs over `backing`, mounted on `mnt`, controlled through `ctl`.
pub struct Lossy {
    pub dir: tempfile::TempDir,
    pub backing: PathBuf,
    pub mnt: PathBuf,
    pub ctl: PathBuf,
    stderr: PathBuf,
    child: Option<Child>,
}

fn is_mounted(mnt: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let m = mnt.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(m.as_ref()))
}

impl Lossy {
    /// Creates the directories and mounts.
    pub fn start() -> Lossy {
        let dir = tempfile::tempdir().expect("tempdir");
        let backing = dir.path().join("backing");
        let mnt = dir.path().join("mnt");
        let ctl = dir.path().join("ctl");
        for d in [&backing, &mnt, &ctl] {
            fs::create_dir_all(d).expect("mkdir");
        }
        let mut l = Lossy {
            stderr: dir.path().join("lossyfs.stderr"),
            mnt: mnt.canonicalize().expect("canonicalize"),
            dir,
            backing,
            ctl,
            child: None,
        };
        l.mount();
        l
    }

    /// (Re)starts lossyfs and waits until the mount is ready.
    pub fn mount(&mut self) {
        assert!(self.child.is_none(), "already mounted");
        let _ = fs::remove_file(self.ctl.join("state"));
        let err = File::options()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_lossyfs"))
            .arg("--backing")
            .arg(&self.backing)
            .arg("--mount")
            .arg(&self.mnt)
            .arg("--control")
            .arg(&self.ctl)
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn lossyfs");
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        loop {
            let state = fs::read_to_string(self.ctl.join("state")).unwrap_or_default();
            if state.trim() == "mounted" && is_mounted(&self.mnt) {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    panic!("lossyfs exited early ({status}): {}", self.stderr());
                }
            }
            assert!(
                Instant::now() < deadline,
                "mount not ready: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Path inside the mount.
    pub fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Path inside the backing directory.
    pub fn b(&self, rel: &str) -> PathBuf {
        self.backing.join(rel)
    }

    /// What lossyfs printed on stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        let child = self.child.as_mut().expect("not running");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "lossyfs did not exit: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Cuts the power (through the control file) and waits for lossyfs to exit.
    pub fn cut(&mut self) {
        let tmp = self.ctl.join(".command");
        fs::write(&tmp, "cut\n").expect("write command");
        fs::rename(&tmp, self.ctl.join("command")).expect("rename command");
        let status = self.wait_exit();
        assert!(status.success(), "lossyfs exit {status}: {}", self.stderr());
        assert!(!is_mounted(&self.mnt), "still mounted after the cut");
    }

    /// Clean unmount through SIGTERM; waits for lossyfs to exit.
    pub fn unmount(&mut self) {
        let pid = self.pid().expect("not running");
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let status = self.wait_exit();
        assert!(status.success(), "lossyfs exit {status}: {}", self.stderr());
        assert!(!is_mounted(&self.mnt), "still mounted after SIGTERM");
    }

    /// Sets the slow-disk delay.
    pub fn set_sync_delay_ms(&self, ms: u64) {
        let tmp = self.ctl.join(".sync_delay_ms");
        fs::write(&tmp, format!("{ms}\n")).expect("write delay");
        fs::rename(&tmp, self.ctl.join("sync_delay_ms")).expect("rename delay");
    }
}

impl Drop for Lossy {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let ok = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Creates or truncates `path` with `data`, without any fsync.
pub fn write_file(path: &Path, data: &[u8]) {
    let mut f = File::create(path).expect("create");
    f.write_all(data).expect("write");
}

/// fsync of a file.
pub fn fsync(path: &Path) {
    File::options()
        .write(true)
        .open(path)
        .expect("open for fsync")
        .sync_all()
        .expect("fsync");
}

/// fsync of a directory (opendir + fsync).
pub fn fsync_dir(path: &Path) {
    File::open(path)
        .expect("open dir")
        .sync_all()
        .expect("fsync dir");
}

/// Content of a file, None if it does not exist.
pub fn read(path: &Path) -> Option<Vec<u8>> {
    fs::read(path).ok()
}
