//! lossyfs: a FUSE pass-through file system that loses every change not yet made durable
//! when "the power is cut", like LazyFS does for Jepsen, plus a "slow disk" mode.
//!
//! Ringwatch's fault-injection suite puts each `cma` node's data directory on a lossyfs
//! mount and cuts the power of the whole cluster.
//!
//! # Usage
//!
//! ```text
//! lossyfs --backing DIR --mount MNT [--control CTL_DIR] [--threads N] [--allow-other] [-v]
//! ```
//!
//! MNT then shows DIR (regular files, directories, symlinks, hard links). lossyfs stays in
//! the foreground until one of:
//!
//! * **power cut**: `echo cut > CTL_DIR/command`, or `kill -USR1 <pid>`. lossyfs reverts
//!   every change that is not durable (newest first), detaches the mount and exits 0. DIR
//!   then holds exactly what a power cut would have left. Programs still using the mount
//!   get EIO, then ENOTCONN once lossyfs has exited.
//! * **clean stop**: SIGTERM or SIGINT, `echo unmount > CTL_DIR/command`, or an external
//!   `fusermount3 -u MNT` / `umount MNT`: unmounts and exits 0 *without* reverting.
//!
//! At exit it prints its counters to stderr (and writes them to `CTL_DIR/counters`):
//! `syncs`, `file_syncs`, `dir_syncs`, `writes`, `bytes_written`, `cut`, `ops_reverted`,
//! `bytes_reverted`, `ops_not_revertable`. `CTL_DIR/state` reads `mounted` once the mount is
//! ready, then `cut` or `stopped`.
//!
//! **Slow disk**: `CTL_DIR/sync_delay_ms` (absent, empty or 0: no delay) is read at each
//! fsync/fdatasync of a file or a directory, and that sync is delayed by that many
//! milliseconds before it completes (and before it makes anything durable: a cut during the
//! delay loses what it was syncing).
//!
//! # The model
//!
//! * Reads and writes go to the backing files at once, so running programs see their own
//!   writes, as with a page cache. The backing file system is never fsynced by lossyfs: the
//!   durability modelled is lossyfs's own.
//! * **File data and size.** For each file lossyfs records, for every change since that
//!   file's last fsync/fdatasync, how to undo it: for a write, its offset, the bytes it
//!   overwrote and the old size; for a size change (truncate, ftruncate, `O_TRUNC`,
//!   `fallocate`), the old size and the bytes cut off. An fsync or fdatasync of the file
//!   (through any of its descriptors) makes every change to it made before the sync started
//!   durable and drops those records. `O_SYNC`/`O_DSYNC` writes are durable at once (the
//!   kernel sends an fsync after each).
//! * **Directory entries.** A create, mknod, mkdir, symlink, link, unlink, rmdir or rename
//!   is durable only once its parent directory has been fsynced (opendir + fsync) after
//!   it; a rename needs both parents (one fsync if they are the same). Until then lossyfs
//!   records how to undo it. An unlinked file, a removed directory and a target replaced by
//!   a rename are not deleted but moved to the hidden directory `DIR/.lossyfs-trash`
//!   (invisible through the mount), keeping their inode, so that the cut can put them
//!   back; they are deleted when the removal becomes durable, and the trash directory is
//!   deleted when lossyfs exits. fsync of a file does not make its name durable (as POSIX
//!   allows; ext4 in practice would).
//! * **Power cut.** All records, of all files and directories, are undone in reverse order
//!   of the changes: data is restored through a descriptor of the file's inode (wherever it
//!   is now named); an entry created is removed (only if the name still designates the
//!   inode it was created for), a removed entry is put back (unless the name was taken
//!   since by a durable change), a rename is moved back. A directory whose creation is
//!   undone disappears with all it contains, durable or not, as an orphan would.
//!   Records that cannot be applied (e.g. their directory's own removal was durable) are
//!   counted as `ops_not_revertable`.
//!
//! # Not modelled
//!
//! * Metadata other than size and names: mode, owner and times changes are never reverted.
//! * Torn writes and reordering inside a file: a change is either fully kept or fully
//!   undone, and the changes to one file since its last sync are all lost together.
//! * Per-device caches, and anything done to DIR behind lossyfs's back while it is mounted.
//! * If lossyfs itself is killed (SIGKILL), nothing is reverted and its trash directory is
//!   left in DIR; the next lossyfs on DIR deletes it.
//! * Locks (`flock`, `fcntl`) are handled by the kernel locally (lossyfs does not negotiate
//!   FUSE lock support), which is correct for users on this machine.
//! * Only `fallocate` modes 0 and `FALLOC_FL_KEEP_SIZE`; no extended attributes.
//! * Performance: one lock serialises all changes (a write reads the bytes it overwrites
//!   first); reads run in parallel.

pub mod fs;
pub mod journal;
pub mod sys;

pub use fs::{Counters, LossyFs, Options, Shared, TRASH_DIR};
pub use journal::RevertStats;

/// The fuser configuration lossyfs mounts with: `default_permissions` (the kernel checks
/// permissions), `allow_other` if asked (otherwise only the mounting user, root, may use
/// the mount), `n_threads` worker threads sharing one `/dev/fuse` descriptor (with
/// `clone_fd`, the session sometimes failed to end after an unmount).
pub fn mount_config(threads: usize, allow_other: bool) -> fuser::Config {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("lossyfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::RW,
    ];
    if allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(threads.max(1));
    config.clone_fd = false;
    config
}
