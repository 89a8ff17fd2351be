//! A data directory on `lossyfs` (`tests/lossyfs`): a FUSE mount that loses every write and
//! directory change not yet fsynced when its power is cut, and can delay every fsync (a
//! slow disk). Used by the fault-injection suite and the power-cut regression test.

use crate::procs::{binary, spawn, wait_until, ProcGuard};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why lossyfs cannot run here (it needs root and /dev/fuse), or `None`.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("power cuts need root (FUSE mounts)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("power cuts need /dev/fuse".into());
    }
    None
}

/// Unsynced changes power cuts threw away.
#[derive(Clone, Copy, Debug, Default)]
pub struct LossCounts {
    pub ops: u64,
    pub bytes: u64,
}

/// A lossyfs mount; unmounted cleanly (SIGTERM, then a lazy unmount) when dropped.
pub struct LossyDisk {
    proc: Option<ProcGuard>,
    backing: PathBuf,
    mount: PathBuf,
    ctl: PathBuf,
    log: PathBuf,
}

impl LossyDisk {
    /// Mounts `mount` as lossyfs over `backing` (control files in `ctl`, output in `log`)
    /// and waits until it serves.
    pub fn mount(
        backing: &Path,
        mount: &Path,
        ctl: &Path,
        log: &Path,
    ) -> Result<LossyDisk, String> {
        let mut disk = LossyDisk {
            proc: None,
            backing: backing.into(),
            mount: mount.into(),
            ctl: ctl.into(),
            log: log.into(),
        };
        disk.start()?;
        Ok(disk)
    }

    fn start(&mut self) -> Result<(), String> {
        for d in [&self.backing, &self.mount, &self.ctl] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let _ = std::fs::remove_file(self.ctl.join("state"));
        let path = |p: &Path| p.display().to_string();
        let proc = spawn(
            &binary("lossyfs"),
            &[
                "--backing",
                &path(&self.backing),
                "--mount",
                &path(&self.mount),
                "--control",
                &path(&self.ctl),
            ],
            &[],
            &self.log,
        )
        .map_err(|e| format!("spawn lossyfs: {e}"))?;
        self.proc = Some(proc);
        if self.wait_state("mounted") {
            Ok(())
        } else {
            Err(format!("lossyfs on {} never mounted", self.mount.display()))
        }
    }

    fn wait_state(&self, want: &str) -> bool {
        let state = self.ctl.join("state");
        wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(&state).is_ok_and(|s| s.trim() == want)
        })
    }

    /// Cuts the power (whatever uses the mount should be dead already): everything not
    /// fsynced is thrown away; then the disk is mounted again. Returns what was lost.
    pub fn power_cut(&mut self) -> Result<LossCounts, String> {
        std::fs::write(self.ctl.join("command"), "cut\n").map_err(|e| e.to_string())?;
        if !self.wait_state("cut") {
            return Err(format!("lossyfs on {} did not cut", self.mount.display()));
        }
        if let Some(mut p) = self.proc.take() {
            p.wait_timeout(Duration::from_secs(10));
        }
        let counters = std::fs::read_to_string(self.ctl.join("counters")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            counters
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
                .unwrap_or(0)
        };
        let lost = LossCounts {
            ops: field("ops_reverted"),
            bytes: field("bytes_reverted"),
        };
        self.start()?;
        Ok(lost)
    }

    /// Delays every fsync by `ms` milliseconds (0: none).
    pub fn set_sync_delay(&self, ms: u64) -> Result<(), String> {
        std::fs::write(self.ctl.join("sync_delay_ms"), format!("{ms}\n")).map_err(|e| e.to_string())
    }
}

impl Drop for LossyDisk {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.terminate();
            if p.wait_timeout(Duration::from_secs(5)).is_none() {
                p.kill();
            }
        }
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .output();
    }
}
