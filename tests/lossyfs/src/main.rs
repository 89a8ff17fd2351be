//! `lossyfs --backing DIR --mount MNT [--control CTL_DIR]`: see the library documentation.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};

use lossyfs::{LossyFs, Options, Shared};

/// FUSE pass-through file system that loses every change not yet fsynced when the power is
/// cut (`echo cut > CTL_DIR/command` or SIGUSR1), with a slow-disk mode
/// (CTL_DIR/sync_delay_ms). SIGTERM/SIGINT unmount cleanly without reverting.
#[derive(Debug, Parser)]
#[command(name = "lossyfs", version)]
struct Cli {
    /// Directory whose content the mount shows (and where the durable state is left).
    #[arg(long)]
    backing: PathBuf,
    /// Mount point.
    #[arg(long)]
    mount: PathBuf,
    /// Control directory: `command` (write `cut` or `unmount`), `sync_delay_ms`, and
    /// written by lossyfs: `state`, `counters`. Created if missing.
    #[arg(long)]
    control: Option<PathBuf>,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Let users other than the one mounting (root) use the mount.
    #[arg(long)]
    allow_other: bool,
    /// Log the undo records that could not be applied at the cut.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug)]
enum Event {
    Cut,
    Stop,
    Ended,
}

fn write_ctl(ctl: Option<&Path>, name: &str, content: &str) {
    if let Some(ctl) = ctl {
        let tmp = ctl.join(format!(".{name}.tmp"));
        let r = fs::write(&tmp, content).and_then(|()| fs::rename(&tmp, ctl.join(name)));
        if let Err(e) = r {
            eprintln!("lossyfs: cannot write {}/{name}: {e}", ctl.display());
        }
    }
}

fn finish(shared: &Shared, ctl: Option<&Path>, state: &str) -> ! {
    let summary = shared.summary();
    eprintln!("lossyfs: {state}: {summary}");
    write_ctl(ctl, "counters", &format!("{summary}\n"));
    write_ctl(ctl, "state", &format!("{state}\n"));
    std::process::exit(0)
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();

    // Signals are taken by a dedicated thread with sigwait: block them before any thread
    // starts so that every thread inherits the mask.
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGUSR1,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    signals.thread_block().context("blocking signals")?;
    // Modes given by the kernel are already masked with the caller's umask.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0) };

    let ctl = cli.control.clone();
    if let Some(ctl) = &ctl {
        fs::create_dir_all(ctl).with_context(|| format!("creating {}", ctl.display()))?;
        let _ = fs::remove_file(ctl.join("command"));
    }
    let mount = cli
        .mount
        .canonicalize()
        .with_context(|| format!("mount point {}", cli.mount.display()))?;
    let (fs, shared) = LossyFs::new(Options {
        backing: cli.backing.clone(),
        control: ctl.clone(),
        verbose: cli.verbose,
    })
    .with_context(|| format!("backing directory {}", cli.backing.display()))?;
    let config = lossyfs::mount_config(cli.threads, cli.allow_other);
    let session = match fuser::spawn_mount(fs, &mount, &config) {
        Ok(s) => s,
        Err(e) => {
            shared.finish_clean(); // removes the trash directory
            return Err(e).with_context(|| format!("mounting {}", mount.display()));
        }
    };
    eprintln!(
        "lossyfs: {} mounted on {} (pid {})",
        cli.backing.display(),
        mount.display(),
        std::process::id()
    );
    write_ctl(ctl.as_deref(), "state", "mounted\n");

    let (tx, rx) = mpsc::channel::<Event>();
    {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                let ev = match signals.wait() {
                    Ok(Signal::SIGUSR1) => Event::Cut,
                    Ok(_) => Event::Stop,
                    Err(_) => continue,
                };
                if tx.send(ev).is_err() {
                    return;
                }
            })?;
    }
    if let Some(ctl) = ctl.clone() {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(10));
                let cmd = fs::read_to_string(ctl.join("command")).unwrap_or_default();
                let ev = match cmd.trim() {
                    "cut" => Event::Cut,
                    "unmount" | "stop" => Event::Stop,
                    _ => continue,
                };
                let _ = fs::remove_file(ctl.join("command"));
                if tx.send(ev).is_err() {
                    return;
                }
            })?;
    }
    {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("session".into())
            .spawn(move || {
                if let Err(e) = session.join() {
                    eprintln!("lossyfs: session ended with an error: {e}");
                }
                let _ = tx.send(Event::Ended);
            })?;
    }

    match rx.recv().context("event channel")? {
        Event::Cut => {
            let start = Instant::now();
            let stats = shared.power_cut();
            if let Err(e) = lossyfs::sys::umount(&mount, true) {
                eprintln!("lossyfs: detaching {}: {e}", mount.display());
            }
            eprintln!(
                "lossyfs: power cut: reverted {} operations ({} bytes) in {:?}",
                stats.ops_reverted,
                stats.bytes_reverted,
                start.elapsed()
            );
            finish(&shared, ctl.as_deref(), "cut")
        }
        Event::Stop => {
            // Unmount; if busy, retry briefly, then detach lazily.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match lossyfs::sys::umount(&mount, false) {
                    Ok(()) => break,
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                    Err(e) if Instant::now() >= deadline => {
                        eprintln!("lossyfs: unmount {}: {e}; detaching", mount.display());
                        let _ = lossyfs::sys::umount(&mount, true);
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            // Let the session drain, bounded.
            let _ = rx.recv_timeout(Duration::from_secs(2));
            shared.finish_clean();
            finish(&shared, ctl.as_deref(), "stopped")
        }
        Event::Ended => {
            shared.finish_clean();
            finish(&shared, ctl.as_deref(), "stopped")
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lossyfs: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
