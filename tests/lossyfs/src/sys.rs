//! Thin wrappers over the `*at` system calls lossyfs needs and std does not offer.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens a directory (read-only) so later operations can address entries relative to it,
/// wherever it gets renamed to.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str())?;
    // SAFETY: c is a valid NUL-terminated string; the returned fd is owned by us.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly opened, valid descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Inode number of `dir/name` (not following a final symlink).
pub fn ino_at(dir: &impl AsRawFd, name: &OsStr) -> io::Result<u64> {
    let c = cstr(name)?;
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, valid C string, valid out pointer.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st.st_ino)
}

/// `renameat2(2)`; `noreplace` fails with EEXIST instead of replacing the target.
pub fn rename_at(
    from_dir: &impl AsRawFd,
    from: &OsStr,
    to_dir: &impl AsRawFd,
    to: &OsStr,
    noreplace: bool,
) -> io::Result<()> {
    let f = cstr(from)?;
    let t = cstr(to)?;
    let flags = if noreplace { libc::RENAME_NOREPLACE } else { 0 };
    // SAFETY: valid fds and C strings.
    check(unsafe {
        libc::renameat2(
            from_dir.as_raw_fd(),
            f.as_ptr(),
            to_dir.as_raw_fd(),
            t.as_ptr(),
            flags,
        )
    })
}

/// `fallocate(2)`.
pub fn fallocate(file: &File, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    let off = i64::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    let len = i64::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: valid fd.
    check(unsafe { libc::fallocate(file.as_raw_fd(), mode, off, len) })
}

/// Time argument for [`set_times`].
#[derive(Clone, Copy, Debug)]
pub enum Time {
    /// Leave unchanged.
    Omit,
    /// The current time.
    Now,
    /// A given time.
    At(SystemTime),
}

fn timespec(t: Time) -> libc::timespec {
    match t {
        Time::Omit => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Time::Now => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Time::At(t) => {
            let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
                Err(e) => {
                    let d = e.duration();
                    if d.subsec_nanos() == 0 {
                        (-(d.as_secs() as i64), 0)
                    } else {
                        (
                            -(d.as_secs() as i64) - 1,
                            1_000_000_000 - i64::from(d.subsec_nanos()),
                        )
                    }
                }
            };
            libc::timespec {
                tv_sec: sec as libc::time_t,
                tv_nsec: nsec as _,
            }
        }
    }
}

/// `utimensat(2)` on a path, not following a final symlink.
pub fn set_times(path: &Path, atime: Time, mtime: Time) -> io::Result<()> {
    let c = cstr(path.as_os_str())?;
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: valid C string and a 2-element timespec array.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// `statvfs(3)` of the file system holding `path`.
pub fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    let c = cstr(path.as_os_str())?;
    // SAFETY: zeroed statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    Ok(st)
}

/// Lazily detaches a mount (`umount2(MNT_DETACH)`), or unmounts it normally when
/// `lazy` is false.
pub fn umount(path: &Path, lazy: bool) -> io::Result<()> {
    let c = cstr(path.as_os_str())?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: valid C string.
    check(unsafe { libc::umount2(c.as_ptr(), flags) })
}
