//! The FUSE file system: pass-through to the backing directory, journaling undo records.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

use crate::journal::{Journal, RevertStats, Undo};
use crate::sys;

/// Name of the hidden directory, inside the backing directory, that keeps the data of
/// unlinked files and removed directories until their removal is durable. Hidden from the
/// mount; removed when lossyfs exits.
pub const TRASH_DIR: &str = ".lossyfs-trash";

const TTL: Duration = Duration::from_secs(1);
const GEN: Generation = Generation(0);

/// Settings of a [`LossyFs`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The directory whose content the mount shows.
    pub backing: PathBuf,
    /// Control directory: `sync_delay_ms` in it is read at each fsync.
    pub control: Option<PathBuf>,
    /// Log each undo record that cannot be applied.
    pub verbose: bool,
}

/// Counters, printed when lossyfs exits.
#[derive(Debug, Default)]
pub struct Counters {
    /// fsync/fdatasync of files.
    pub file_syncs: AtomicU64,
    /// fsync of directories.
    pub dir_syncs: AtomicU64,
    /// write requests.
    pub writes: AtomicU64,
    /// bytes written.
    pub bytes_written: AtomicU64,
}

#[derive(Debug)]
struct Node {
    /// Inode number in the backing file system.
    bino: u64,
    /// Known paths (relative to the backing directory); hard links have several, an unlinked
    /// file its trash path.
    paths: Vec<PathBuf>,
}

#[derive(Debug)]
struct Handle {
    ino: u64,
    bino: u64,
    file: Arc<File>,
}

#[derive(Debug)]
struct DirEntry {
    ino: u64,
    kind: FileType,
    name: OsString,
}

#[derive(Debug)]
struct State {
    nodes: HashMap<u64, Node>,
    by_bino: HashMap<u64, u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    dir_handles: HashMap<u64, Vec<DirEntry>>,
    next_fh: u64,
    journal: Journal,
    /// Set at the power cut or at a clean stop: every request then fails with EIO.
    stopped: bool,
    revert: Option<RevertStats>,
}

type Res<T> = Result<T, Errno>;

fn err(e: io::Error) -> Errno {
    Errno::from(e)
}

fn trash_rel(name: &OsStr) -> PathBuf {
    Path::new(TRASH_DIR).join(name)
}

impl State {
    fn node(&self, ino: u64) -> Res<&Node> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn path_of(&self, ino: u64) -> Res<PathBuf> {
        self.node(ino)?.paths.first().cloned().ok_or(Errno::ENOENT)
    }

    fn bino_of(&self, ino: u64) -> Res<u64> {
        Ok(self.node(ino)?.bino)
    }

    /// The FUSE inode for backing inode `bino`, now known at `rel`.
    fn register(&mut self, bino: u64, rel: PathBuf) -> u64 {
        if let Some(&ino) = self.by_bino.get(&bino) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                if !node.paths.contains(&rel) {
                    // Real names first, trash names last.
                    if rel.starts_with(TRASH_DIR) {
                        node.paths.push(rel);
                    } else {
                        node.paths.insert(0, rel);
                    }
                }
                return ino;
            }
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_bino.insert(bino, ino);
        self.nodes.insert(
            ino,
            Node {
                bino,
                paths: vec![rel],
            },
        );
        ino
    }

    /// `from` (and everything below it) is now at `to`.
    fn rename_paths(&mut self, from: &Path, to: &Path) {
        for node in self.nodes.values_mut() {
            for p in node.paths.iter_mut() {
                if let Ok(rest) = p.strip_prefix(from) {
                    *p = if rest.as_os_str().is_empty() {
                        to.to_path_buf()
                    } else {
                        to.join(rest)
                    };
                }
            }
        }
    }

    /// `path` and everything below it are gone.
    fn forget_paths(&mut self, path: &Path) {
        for node in self.nodes.values_mut() {
            node.paths.retain(|p| !p.starts_with(path));
        }
    }

    fn handle(&self, fh: u64) -> Res<&Handle> {
        self.handles.get(&fh).ok_or(Errno::EBADF)
    }

    fn any_handle_of(&self, ino: u64) -> Option<&Handle> {
        self.handles.values().find(|h| h.ino == ino)
    }
}

fn kind_of(ft: fs::FileType) -> FileType {
    FileType::from_std(ft).unwrap_or(FileType::RegularFile)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let nsecs = nsecs.clamp(0, 999_999_999) as u32;
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs)
    } else {
        UNIX_EPOCH - Duration::new(secs.unsigned_abs(), 0) + Duration::new(0, nsecs)
    }
}

fn attr(ino: u64, m: &Metadata) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: m.size(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: kind_of(m.file_type()),
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: m.blksize() as u32,
        flags: 0,
    }
}

/// Reads exactly `len` bytes at `offset` (fewer at end of file).
fn read_range(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// State shared by the FUSE threads and the controller (power cut, clean stop, counters).
#[derive(Debug)]
pub struct Shared {
    backing: PathBuf,
    trash: PathBuf,
    control: Option<PathBuf>,
    verbose: bool,
    state: Mutex<State>,
    /// Counters.
    pub counters: Counters,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the state, failing with EIO after the cut or stop.
    fn live(&self) -> Res<MutexGuard<'_, State>> {
        let st = self.lock();
        if st.stopped {
            Err(Errno::EIO)
        } else {
            Ok(st)
        }
    }

    fn full(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.backing.clone()
        } else {
            self.backing.join(rel)
        }
    }

    /// The slow-disk delay, read from `CTL_DIR/sync_delay_ms` at each sync.
    pub fn sync_delay(&self) -> Duration {
        let Some(ctl) = &self.control else {
            return Duration::ZERO;
        };
        match fs::read_to_string(ctl.join("sync_delay_ms")) {
            Ok(s) => Duration::from_millis(s.trim().parse::<u64>().unwrap_or(0)),
            Err(_) => Duration::ZERO,
        }
    }

    /// Number of undo records held (changes not yet durable).
    pub fn pending(&self) -> usize {
        self.lock().journal.len()
    }

    /// The power cut: stops serving (every later request fails with EIO) and reverts every
    /// change not durable, newest first, so that the backing directory holds what a power
    /// cut would have left. Idempotent.
    pub fn power_cut(&self) -> RevertStats {
        let mut st = self.lock();
        if st.stopped {
            return st.revert.unwrap_or_default();
        }
        st.stopped = true;
        let (file_inos, dir_inos) = st.journal.referenced();
        let open = |bino: u64, dir: bool| -> Option<File> {
            let ino = st.by_bino.get(&bino)?;
            let node = st.nodes.get(ino)?;
            node.paths.iter().find_map(|p| {
                let full = self.full(p);
                let f = if dir {
                    File::open(&full).ok()?
                } else {
                    OpenOptions::new().read(true).write(true).open(&full).ok()?
                };
                let m = f.metadata().ok()?;
                (m.ino() == bino && m.is_dir() == dir).then_some(f)
            })
        };
        let files: HashMap<u64, File> = file_inos
            .into_iter()
            .filter_map(|b| open(b, false).map(|f| (b, f)))
            .collect();
        let dirs: HashMap<u64, File> = dir_inos
            .into_iter()
            .filter_map(|b| open(b, true).map(|f| (b, f)))
            .collect();
        let stats = match File::open(&self.trash) {
            Ok(trash) => {
                let verbose = self.verbose;
                st.journal.revert(&files, &dirs, &trash, verbose)
            }
            Err(e) => {
                eprintln!("lossyfs: cannot open the trash directory, nothing reverted: {e}");
                RevertStats::default()
            }
        };
        drop(files);
        drop(dirs);
        if let Err(e) = fs::remove_dir_all(&self.trash) {
            eprintln!("lossyfs: cannot remove {}: {e}", self.trash.display());
        }
        st.revert = Some(stats);
        stats
    }

    /// A clean stop: stops serving and keeps everything as it is (all changes are kept,
    /// unlinked data is deleted). Does nothing after a cut.
    pub fn finish_clean(&self) {
        let mut st = self.lock();
        if st.stopped {
            return;
        }
        st.stopped = true;
        st.journal.clear();
        if let Err(e) = fs::remove_dir_all(&self.trash) {
            eprintln!("lossyfs: cannot remove {}: {e}", self.trash.display());
        }
    }

    /// One-line summary of the counters.
    pub fn summary(&self) -> String {
        let st = self.lock();
        let r = st.revert.unwrap_or_default();
        let c = &self.counters;
        let fsyncs = c.file_syncs.load(Ordering::Relaxed);
        let dsyncs = c.dir_syncs.load(Ordering::Relaxed);
        format!(
            "syncs={} file_syncs={} dir_syncs={} writes={} bytes_written={} cut={} \
             ops_reverted={} bytes_reverted={} ops_not_revertable={} pending_at_exit={}",
            fsyncs + dsyncs,
            fsyncs,
            dsyncs,
            c.writes.load(Ordering::Relaxed),
            c.bytes_written.load(Ordering::Relaxed),
            st.revert.is_some(),
            r.ops_reverted,
            r.bytes_reverted,
            r.ops_skipped,
            st.journal.len(),
        )
    }

    /// Changes the size of `file` (backing inode `bino`), recording how to undo it.
    fn set_size(st: &mut State, bino: u64, file: &File, new: u64) -> io::Result<()> {
        let old = file.metadata()?.len();
        if old != new {
            let cut = if new < old {
                read_range(file, new, old - new)?
            } else {
                Vec::new()
            };
            st.journal.file_change(Undo::SetSize {
                ino: bino,
                old_size: old,
                new_size: new,
                cut,
            });
        }
        file.set_len(new)
    }

    fn stat_ino(&self, st: &State, ino: u64, fh: Option<u64>) -> Res<Metadata> {
        if let Some(h) = fh.and_then(|fh| st.handles.get(&fh)) {
            return h.file.metadata().map_err(err);
        }
        let by_path = st
            .path_of(ino)
            .and_then(|rel| fs::symlink_metadata(self.full(&rel)).map_err(err));
        match by_path {
            Ok(m) => Ok(m),
            Err(e) => match st.any_handle_of(ino) {
                Some(h) => h.file.metadata().map_err(err),
                None => Err(e),
            },
        }
    }

    /// `parent/name` as a path relative to the backing directory; refuses the trash.
    fn child(&self, st: &State, parent: INodeNo, name: &OsStr) -> Res<PathBuf> {
        if parent == INodeNo::ROOT && name == TRASH_DIR {
            return Err(Errno::EPERM);
        }
        Ok(st.path_of(parent.0)?.join(name))
    }

    /// Bookkeeping for a new name `parent/name` (at `rel`): owner, undo record, inode.
    fn new_entry(
        &self,
        st: &mut State,
        owner: Option<&Request>,
        parent: INodeNo,
        name: &OsStr,
        rel: PathBuf,
    ) -> Res<(u64, Metadata)> {
        let full = self.full(&rel);
        if let Some(req) = owner {
            std::os::unix::fs::lchown(&full, Some(req.uid()), Some(req.gid())).map_err(err)?;
        }
        let m = fs::symlink_metadata(&full).map_err(err)?;
        let pb = st.bino_of(parent.0)?;
        st.journal.dir_change(
            &[pb],
            Undo::Create {
                parent: pb,
                name: name.to_os_string(),
                ino: m.ino(),
            },
        );
        let ino = st.register(m.ino(), rel);
        Ok((ino, m))
    }

    fn open_backing(full: &Path, flags: i32) -> io::Result<File> {
        // Read-write whatever the caller asked (the kernel checked permissions): writes
        // need to read the bytes they overwrite. O_APPEND is dropped: the kernel gives the
        // offset of each write.
        match OpenOptions::new().read(true).write(true).open(full) {
            Ok(f) => Ok(f),
            Err(_) => {
                let mut o = OpenOptions::new();
                match flags & libc::O_ACCMODE {
                    libc::O_WRONLY => o.write(true),
                    libc::O_RDWR => o.read(true).write(true),
                    _ => o.read(true),
                };
                o.open(full)
            }
        }
    }

    fn add_handle(st: &mut State, ino: u64, bino: u64, file: File) -> u64 {
        let fh = st.next_fh;
        st.next_fh += 1;
        st.handles.insert(
            fh,
            Handle {
                ino,
                bino,
                file: Arc::new(file),
            },
        );
        fh
    }

    fn do_sync(&self, ino: INodeNo, fh: Option<u64>, dir: bool) -> Res<()> {
        let upto = self.live()?.journal.last_seq();
        let delay = self.sync_delay();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut st = self.live()?;
        let bino = match fh.and_then(|fh| st.handles.get(&fh)) {
            Some(h) => h.bino,
            None => st.bino_of(ino.0)?,
        };
        if dir {
            let trash = st.journal.sync_dir(bino, upto);
            for t in trash {
                let full = self.trash.join(&t);
                let meta = fs::symlink_metadata(&full);
                let r = match &meta {
                    Ok(m) if m.is_dir() => fs::remove_dir_all(&full),
                    Ok(_) => fs::remove_file(&full),
                    Err(e) => Err(io::Error::from(e.kind())),
                };
                match r {
                    Ok(()) => {
                        if let Ok(m) = meta {
                            if m.is_dir() || m.nlink() <= 1 {
                                // The inode is gone; its number may be reused.
                                st.journal.forget_inode(m.ino());
                                st.by_bino.remove(&m.ino());
                            }
                        }
                    }
                    Err(e) => eprintln!("lossyfs: cannot delete {}: {e}", full.display()),
                }
                st.forget_paths(&trash_rel(&t));
            }
            self.counters.dir_syncs.fetch_add(1, Ordering::Relaxed);
        } else {
            st.journal.sync_file(bino, upto);
            self.counters.file_syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    // ---- operations, each returning a Result mapped to the reply by the trait impl ----

    fn lookup(&self, parent: INodeNo, name: &OsStr) -> Res<FileAttr> {
        let mut st = self.live()?;
        let rel = self.child(&st, parent, name).map_err(|_| Errno::ENOENT)?;
        let m = fs::symlink_metadata(self.full(&rel)).map_err(err)?;
        let ino = st.register(m.ino(), rel);
        Ok(attr(ino, &m))
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<u64>,
    ) -> Res<FileAttr> {
        let mut st = self.live()?;
        let m = self.stat_ino(&st, ino.0, fh)?;
        let bino = m.ino();
        let path = st.path_of(ino.0).ok().map(|r| self.full(&r));
        let handle_file = fh
            .and_then(|fh| st.handles.get(&fh))
            .or_else(|| st.any_handle_of(ino.0))
            .map(|h| h.file.clone());
        if let Some(size) = size {
            if m.is_dir() {
                return Err(Errno::EISDIR);
            }
            let file = match (&handle_file, &path) {
                (Some(f), _) => f.clone(),
                (None, Some(p)) => Arc::new(
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(p)
                        .map_err(err)?,
                ),
                (None, None) => return Err(Errno::ENOENT),
            };
            Self::set_size(&mut st, bino, &file, size).map_err(err)?;
        }
        if let Some(mode) = mode {
            if !m.file_type().is_symlink() {
                let perms = fs::Permissions::from_mode(mode & 0o7777);
                match (&handle_file, &path) {
                    (Some(f), _) => f.set_permissions(perms).map_err(err)?,
                    (None, Some(p)) => fs::set_permissions(p, perms).map_err(err)?,
                    (None, None) => return Err(Errno::ENOENT),
                }
            }
        }
        if uid.is_some() || gid.is_some() {
            let p = path.as_ref().ok_or(Errno::ENOENT)?;
            std::os::unix::fs::lchown(p, uid, gid).map_err(err)?;
        }
        if atime.is_some() || mtime.is_some() {
            let conv = |t: Option<TimeOrNow>| match t {
                None => sys::Time::Omit,
                Some(TimeOrNow::Now) => sys::Time::Now,
                Some(TimeOrNow::SpecificTime(t)) => sys::Time::At(t),
            };
            let p = path.as_ref().ok_or(Errno::ENOENT)?;
            sys::set_times(p, conv(atime), conv(mtime)).map_err(err)?;
        }
        let m = self.stat_ino(&st, ino.0, fh)?;
        Ok(attr(ino.0, &m))
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32) -> Res<FileAttr> {
        let mut st = self.live()?;
        let rel = self.child(&st, parent, name)?;
        fs::DirBuilder::new()
            .mode(mode & 0o7777)
            .create(self.full(&rel))
            .map_err(err)?;
        let (ino, m) = self.new_entry(&mut st, Some(req), parent, name, rel)?;
        Ok(attr(ino, &m))
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32) -> Res<FileAttr> {
        let fmt = mode & libc::S_IFMT;
        if fmt != 0 && fmt != libc::S_IFREG {
            return Err(Errno::EPERM);
        }
        let mut st = self.live()?;
        let rel = self.child(&st, parent, name)?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .open(self.full(&rel))
            .map_err(err)?;
        let (ino, m) = self.new_entry(&mut st, Some(req), parent, name, rel)?;
        Ok(attr(ino, &m))
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &Path,
    ) -> Res<FileAttr> {
        let mut st = self.live()?;
        let rel = self.child(&st, parent, name)?;
        std::os::unix::fs::symlink(target, self.full(&rel)).map_err(err)?;
        let (ino, m) = self.new_entry(&mut st, Some(req), parent, name, rel)?;
        Ok(attr(ino, &m))
    }

    fn link(&self, ino: INodeNo, newparent: INodeNo, newname: &OsStr) -> Res<FileAttr> {
        let mut st = self.live()?;
        let src = st.path_of(ino.0)?;
        if src.starts_with(TRASH_DIR) {
            return Err(Errno::ENOENT);
        }
        let rel = self.child(&st, newparent, newname)?;
        fs::hard_link(self.full(&src), self.full(&rel)).map_err(err)?;
        let (ino, m) = self.new_entry(&mut st, None, newparent, newname, rel)?;
        Ok(attr(ino, &m))
    }

    fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool) -> Res<()> {
        let mut st = self.live()?;
        let rel = self.child(&st, parent, name)?;
        let full = self.full(&rel);
        let m = fs::symlink_metadata(&full).map_err(err)?;
        if dir {
            if !m.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            if fs::read_dir(&full).map_err(err)?.next().is_some() {
                return Err(Errno::ENOTEMPTY);
            }
        } else if m.is_dir() {
            return Err(Errno::EISDIR);
        }
        let pb = st.bino_of(parent.0)?;
        let t = st.journal.trash_name();
        fs::rename(&full, self.trash.join(&t)).map_err(err)?;
        st.journal.dir_change(
            &[pb],
            Undo::Remove {
                parent: pb,
                name: name.to_os_string(),
                trash: t.clone(),
            },
        );
        if dir {
            st.rename_paths(&rel, &trash_rel(&t));
        } else {
            st.forget_paths(&rel);
            st.register(m.ino(), trash_rel(&t));
        }
        Ok(())
    }

    fn rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Res<()> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let mut st = self.live()?;
        let from = self.child(&st, parent, name)?;
        let to = self.child(&st, newparent, newname)?;
        let from_full = self.full(&from);
        let to_full = self.full(&to);
        let ms = fs::symlink_metadata(&from_full).map_err(err)?;
        let pb = st.bino_of(parent.0)?;
        let npb = st.bino_of(newparent.0)?;
        let mut replaced = None;
        match fs::symlink_metadata(&to_full) {
            Ok(mt) => {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                if mt.ino() == ms.ino() {
                    return Ok(());
                }
                if ms.is_dir() {
                    if !mt.is_dir() {
                        return Err(Errno::ENOTDIR);
                    }
                    if fs::read_dir(&to_full).map_err(err)?.next().is_some() {
                        return Err(Errno::ENOTEMPTY);
                    }
                } else if mt.is_dir() {
                    return Err(Errno::EISDIR);
                }
                let t = st.journal.trash_name();
                fs::rename(&to_full, self.trash.join(&t)).map_err(err)?;
                replaced = Some((t, mt));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        if let Err(e) = fs::rename(&from_full, &to_full) {
            if let Some((t, _)) = &replaced {
                let _ = fs::rename(self.trash.join(t), &to_full);
            }
            return Err(err(e));
        }
        if let Some((t, mt)) = &replaced {
            if mt.is_dir() {
                st.rename_paths(&to, &trash_rel(t));
            } else {
                st.forget_paths(&to);
                st.register(mt.ino(), trash_rel(t));
            }
        }
        st.rename_paths(&from, &to);
        st.journal.dir_change(
            &[pb, npb],
            Undo::Rename {
                old_parent: pb,
                old_name: name.to_os_string(),
                new_parent: npb,
                new_name: newname.to_os_string(),
                ino: ms.ino(),
                replaced: replaced.map(|(t, _)| t),
            },
        );
        Ok(())
    }

    fn open(&self, ino: INodeNo, flags: i32) -> Res<u64> {
        let mut st = self.live()?;
        let rel = st.path_of(ino.0)?;
        let file = Self::open_backing(&self.full(&rel), flags).map_err(err)?;
        let bino = file.metadata().map_err(err)?.ino();
        if flags & libc::O_TRUNC != 0 {
            Self::set_size(&mut st, bino, &file, 0).map_err(err)?;
        }
        Ok(Self::add_handle(&mut st, ino.0, bino, file))
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Res<(FileAttr, u64)> {
        let mut st = self.live()?;
        let rel = self.child(&st, parent, name)?;
        let full = self.full(&rel);
        let created = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .open(&full);
        let (ino, file) = match created {
            Ok(file) => {
                let (ino, _) = self.new_entry(&mut st, Some(req), parent, name, rel)?;
                (ino, file)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && flags & libc::O_EXCL == 0 => {
                let file = Self::open_backing(&full, flags).map_err(err)?;
                let m = file.metadata().map_err(err)?;
                if m.is_dir() {
                    return Err(Errno::EISDIR);
                }
                if flags & libc::O_TRUNC != 0 {
                    Self::set_size(&mut st, m.ino(), &file, 0).map_err(err)?;
                }
                (st.register(m.ino(), rel), file)
            }
            Err(e) => return Err(err(e)),
        };
        let m = file.metadata().map_err(err)?;
        let fh = Self::add_handle(&mut st, ino, m.ino(), file);
        Ok((attr(ino, &m), fh))
    }

    fn read(&self, fh: u64, offset: u64, size: u32) -> Res<Vec<u8>> {
        let file = self.live()?.handle(fh)?.file.clone();
        read_range(&file, offset, u64::from(size)).map_err(err)
    }

    fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Res<u32> {
        let mut st = self.live()?;
        let h = st.handle(fh)?;
        let (bino, file) = (h.bino, h.file.clone());
        let old_size = file.metadata().map_err(err)?.len();
        let end = offset.saturating_add(data.len() as u64);
        let old = if offset < old_size {
            read_range(&file, offset, end.min(old_size) - offset).map_err(err)?
        } else {
            Vec::new()
        };
        st.journal.file_change(Undo::Write {
            ino: bino,
            offset,
            old,
            old_size,
        });
        file.write_all_at(data, offset).map_err(err)?;
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        u32::try_from(data.len()).map_err(|_| Errno::EIO)
    }

    fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> Res<()> {
        if mode != 0 && mode != libc::FALLOC_FL_KEEP_SIZE {
            return Err(Errno::EOPNOTSUPP);
        }
        let mut st = self.live()?;
        let h = st.handle(fh)?;
        let (bino, file) = (h.bino, h.file.clone());
        let old_size = file.metadata().map_err(err)?.len();
        let r = sys::fallocate(&file, mode, offset, length);
        let new_size = file.metadata().map_err(err)?.len();
        if new_size != old_size {
            st.journal.file_change(Undo::SetSize {
                ino: bino,
                old_size,
                new_size,
                cut: Vec::new(),
            });
        }
        r.map_err(err)
    }

    fn opendir(&self, ino: INodeNo) -> Res<u64> {
        let mut st = self.live()?;
        let rel = st.path_of(ino.0)?;
        let mut entries = vec![
            DirEntry {
                ino: ino.0,
                kind: FileType::Directory,
                name: ".".into(),
            },
            DirEntry {
                ino: ino.0,
                kind: FileType::Directory,
                name: "..".into(),
            },
        ];
        for e in fs::read_dir(self.full(&rel)).map_err(err)? {
            let e = e.map_err(err)?;
            let name = e.file_name();
            if ino == INodeNo::ROOT && name == TRASH_DIR {
                continue;
            }
            let kind = e.file_type().map(kind_of).unwrap_or(FileType::RegularFile);
            let cino = st.register(std::os::unix::fs::DirEntryExt::ino(&e), rel.join(&name));
            entries.push(DirEntry {
                ino: cino,
                kind,
                name,
            });
        }
        let fh = st.next_fh;
        st.next_fh += 1;
        st.dir_handles.insert(fh, entries);
        Ok(fh)
    }

    fn statfs(&self) -> Res<libc::statvfs> {
        drop(self.live()?);
        sys::statvfs(&self.backing).map_err(err)
    }
}

/// The file system handed to fuser.
#[derive(Debug)]
pub struct LossyFs {
    shared: Arc<Shared>,
}

impl LossyFs {
    /// Prepares a file system over `opts.backing`: creates the (empty) trash directory in it.
    /// A trash directory left by a lossyfs that was killed is deleted first (its unlinks
    /// are then kept).
    pub fn new(opts: Options) -> io::Result<(LossyFs, Arc<Shared>)> {
        let backing = opts.backing.canonicalize()?;
        let root = fs::metadata(&backing)?;
        if !root.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        let trash = backing.join(TRASH_DIR);
        if fs::symlink_metadata(&trash).is_ok() {
            fs::remove_dir_all(&trash)?;
        }
        fs::create_dir(&trash)?;
        let mut state = State {
            nodes: HashMap::new(),
            by_bino: HashMap::new(),
            next_ino: 2,
            handles: HashMap::new(),
            dir_handles: HashMap::new(),
            next_fh: 1,
            journal: Journal::default(),
            stopped: false,
            revert: None,
        };
        state.by_bino.insert(root.ino(), INodeNo::ROOT.0);
        state.nodes.insert(
            INodeNo::ROOT.0,
            Node {
                bino: root.ino(),
                paths: vec![PathBuf::new()],
            },
        );
        let shared = Arc::new(Shared {
            backing,
            trash,
            control: opts.control,
            verbose: opts.verbose,
            state: Mutex::new(state),
            counters: Counters::default(),
        });
        Ok((
            LossyFs {
                shared: shared.clone(),
            },
            shared,
        ))
    }
}

impl Filesystem for LossyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.shared.lookup(parent, name) {
            Ok(a) => reply.entry(&TTL, &a, GEN),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = self.shared.live().and_then(|st| {
            self.shared
                .stat_ino(&st, ino.0, fh.map(|f| f.0))
                .map(|m| attr(ino.0, &m))
        });
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let fh = fh.map(|f| f.0);
        match self
            .shared
            .setattr(ino, mode, uid, gid, size, atime, mtime, fh)
        {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self.shared.live().and_then(|st| {
            let rel = st.path_of(ino.0)?;
            fs::read_link(self.shared.full(&rel)).map_err(err)
        });
        match r {
            Ok(t) => reply.data(std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str())),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        match self.shared.mknod(req, parent, name, mode) {
            Ok(a) => reply.entry(&TTL, &a, GEN),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.shared.mkdir(req, parent, name, mode) {
            Ok(a) => reply.entry(&TTL, &a, GEN),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.shared.remove(parent, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.shared.remove(parent, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self.shared.symlink(req, parent, link_name, target) {
            Ok(a) => reply.entry(&TTL, &a, GEN),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.shared.rename(parent, name, newparent, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.shared.link(ino, newparent, newname) {
            Ok(a) => reply.entry(&TTL, &a, GEN),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.shared.open(ino, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.shared.read(fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.shared.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.shared.do_sync(ino, Some(fh.0), false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.shared.opendir(ino) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = self.shared.lock();
        let Some(entries) = st.dir_handles.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, e) in entries.iter().enumerate().skip(start) {
            if reply.add(INodeNo(e.ino), (i + 1) as u64, e.kind, &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.lock().dir_handles.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // The dir handle is not a file handle: sync by inode.
        match self.shared.do_sync(ino, None, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.shared.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (default_permissions); only existence here.
        match self.shared.live().and_then(|st| st.path_of(ino.0)) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.shared.create(req, parent, name, mode, flags) {
            Ok((a, fh)) => reply.created(&TTL, &a, GEN, FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.shared.fallocate(fh.0, offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
