//! The undo journal: every change not yet durable, with what is needed to revert it.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::sys;

/// How to undo one change.
#[derive(Debug)]
pub enum Undo {
    /// A write at `offset` that overwrote `old` (the bytes that were there, only the part
    /// below the old size) in a file of size `old_size`.
    Write {
        /// Backing inode of the file.
        ino: u64,
        /// Offset of the write.
        offset: u64,
        /// Bytes overwritten.
        old: Vec<u8>,
        /// File size before the write.
        old_size: u64,
    },
    /// A size change (truncate, ftruncate, O_TRUNC, fallocate) from `old_size` to
    /// `new_size`; `cut` holds the bytes `new_size..old_size` when it shrank the file.
    SetSize {
        /// Backing inode of the file.
        ino: u64,
        /// Size before.
        old_size: u64,
        /// Size after.
        new_size: u64,
        /// Bytes cut off.
        cut: Vec<u8>,
    },
    /// A new name `parent/name` for inode `ino` (create, mknod, mkdir, symlink, link).
    /// Undone by moving that name to the trash if it still names `ino`.
    Create {
        /// Backing inode of the parent directory.
        parent: u64,
        /// Entry name.
        name: OsString,
        /// Backing inode the name was given to.
        ino: u64,
    },
    /// An unlink or rmdir: `parent/name` was moved to the trash as `trash`.
    Remove {
        /// Backing inode of the parent directory.
        parent: u64,
        /// Entry name.
        name: OsString,
        /// Name in the trash directory.
        trash: OsString,
    },
    /// A rename of inode `ino` from `old_parent/old_name` to `new_parent/new_name`; a
    /// replaced target was moved to the trash as `replaced`.
    Rename {
        /// Backing inode of the source directory.
        old_parent: u64,
        /// Source name.
        old_name: OsString,
        /// Backing inode of the target directory.
        new_parent: u64,
        /// Target name.
        new_name: OsString,
        /// Backing inode renamed.
        ino: u64,
        /// Trash name of the replaced target, if any.
        replaced: Option<OsString>,
    },
}

impl Undo {
    /// Trash entry owned by this record, to delete once the change is durable.
    fn trash(&self) -> Option<&OsStr> {
        match self {
            Undo::Remove { trash, .. } => Some(trash),
            Undo::Rename {
                replaced: Some(t), ..
            } => Some(t),
            _ => None,
        }
    }
}

/// What makes a record durable.
#[derive(Debug)]
enum Pending {
    /// fsync/fdatasync of this file (backing inode).
    File(u64),
    /// fsync of each of these directories (backing inodes); removed one by one.
    Dirs(Vec<u64>),
}

#[derive(Debug)]
struct Record {
    seq: u64,
    pending: Pending,
    undo: Undo,
}

/// Result of a revert.
#[derive(Debug, Default, Clone, Copy)]
pub struct RevertStats {
    /// Undo records applied.
    pub ops_reverted: u64,
    /// Undo records that could not be applied (their file or directory is gone for good,
    /// or the name was taken by a durable change).
    pub ops_skipped: u64,
    /// Bytes of file data restored or cut off.
    pub bytes_reverted: u64,
}

/// Ordered undo records of all changes not yet durable.
#[derive(Debug, Default)]
pub struct Journal {
    records: Vec<Record>,
    next_seq: u64,
    next_trash: u64,
}

impl Journal {
    /// Sequence number of the last record (0 when none was ever added); a sync that started
    /// when this was `s` makes durable the records with `seq <= s`.
    pub fn last_seq(&self) -> u64 {
        self.next_seq
    }

    /// A fresh name for the trash directory.
    pub fn trash_name(&mut self) -> OsString {
        self.next_trash += 1;
        OsString::from(format!("{}", self.next_trash))
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when everything is durable.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn push(&mut self, pending: Pending, undo: Undo) {
        self.next_seq += 1;
        self.records.push(Record {
            seq: self.next_seq,
            pending,
            undo,
        });
    }

    /// Records a data change of a file, durable at its next fsync/fdatasync.
    pub fn file_change(&mut self, undo: Undo) {
        let ino = match &undo {
            Undo::Write { ino, .. } | Undo::SetSize { ino, .. } => *ino,
            _ => return,
        };
        self.push(Pending::File(ino), undo);
    }

    /// Records a directory change, durable once every directory in `dirs` was fsynced.
    pub fn dir_change(&mut self, dirs: &[u64], undo: Undo) {
        let mut d = dirs.to_vec();
        d.dedup();
        self.push(Pending::Dirs(d), undo);
    }

    /// fsync/fdatasync of file `ino` that started at `upto`: its earlier data changes are
    /// durable. Returns how many records were dropped.
    pub fn sync_file(&mut self, ino: u64, upto: u64) -> usize {
        let before = self.records.len();
        self.records
            .retain(|r| !(r.seq <= upto && matches!(r.pending, Pending::File(i) if i == ino)));
        before - self.records.len()
    }

    /// fsync of directory `dir` that started at `upto`. Returns the trash entries of the
    /// changes that became durable (the caller deletes them).
    pub fn sync_dir(&mut self, dir: u64, upto: u64) -> Vec<OsString> {
        let mut trash = Vec::new();
        self.records.retain_mut(|r| {
            if r.seq > upto {
                return true;
            }
            let Pending::Dirs(dirs) = &mut r.pending else {
                return true;
            };
            dirs.retain(|d| *d != dir);
            if dirs.is_empty() {
                if let Some(t) = r.undo.trash() {
                    trash.push(t.to_os_string());
                }
                false
            } else {
                true
            }
        });
        trash
    }

    /// Inode `ino` no longer exists (its last name's removal became durable and lossyfs
    /// deleted it): drops the records about its data, about entries in it (if it was a
    /// directory) and about its creation, so that a later inode reusing the number is not
    /// touched by the revert.
    pub fn forget_inode(&mut self, ino: u64) {
        self.records.retain(|r| match &r.undo {
            Undo::Write { ino: i, .. } | Undo::SetSize { ino: i, .. } => *i != ino,
            Undo::Create { parent, ino: i, .. } => *parent != ino && *i != ino,
            Undo::Remove { parent, .. } => *parent != ino,
            Undo::Rename {
                old_parent,
                new_parent,
                ..
            } => *old_parent != ino && *new_parent != ino,
        });
    }

    /// Drops every record (a clean unmount: everything is kept as it is).
    pub fn clear(&mut self) {
        self.records.clear();
    }

    /// Backing inodes of the files and directories the records refer to:
    /// (files with data records, directories with namespace records).
    pub fn referenced(&self) -> (HashSet<u64>, HashSet<u64>) {
        let mut files = HashSet::new();
        let mut dirs = HashSet::new();
        for r in &self.records {
            match &r.undo {
                Undo::Write { ino, .. } | Undo::SetSize { ino, .. } => {
                    files.insert(*ino);
                }
                Undo::Create { parent, .. } | Undo::Remove { parent, .. } => {
                    dirs.insert(*parent);
                }
                Undo::Rename {
                    old_parent,
                    new_parent,
                    ..
                } => {
                    dirs.insert(*old_parent);
                    dirs.insert(*new_parent);
                }
            }
        }
        (files, dirs)
    }

    /// Applies every record in reverse order and empties the journal. `files` and `dirs`
    /// are open descriptors of the backing inodes returned by [`Journal::referenced`]
    /// (missing ones: records on them are skipped), `trash` the trash directory, into which
    /// undone names are moved.
    pub fn revert(
        &mut self,
        files: &HashMap<u64, File>,
        dirs: &HashMap<u64, File>,
        trash: &File,
        verbose: bool,
    ) -> RevertStats {
        let mut stats = RevertStats::default();
        let records = std::mem::take(&mut self.records);
        for r in records.into_iter().rev() {
            match self.undo_one(&r.undo, files, dirs, trash) {
                Ok(bytes) => {
                    stats.ops_reverted += 1;
                    stats.bytes_reverted += bytes;
                }
                Err(e) => {
                    stats.ops_skipped += 1;
                    if verbose {
                        eprintln!("lossyfs: could not revert {:?}: {e}", r.undo);
                    }
                }
            }
        }
        stats
    }

    fn undo_one(
        &mut self,
        undo: &Undo,
        files: &HashMap<u64, File>,
        dirs: &HashMap<u64, File>,
        trash: &File,
    ) -> std::io::Result<u64> {
        let gone = || std::io::Error::from_raw_os_error(libc::ENOENT);
        let dir = |ino: &u64| dirs.get(ino).ok_or_else(gone);
        match undo {
            Undo::Write {
                ino,
                offset,
                old,
                old_size,
            } => {
                let f = files.get(ino).ok_or_else(gone)?;
                let size = f.metadata()?.len();
                if !old.is_empty() {
                    f.write_all_at(old, *offset)?;
                }
                if size != *old_size {
                    f.set_len(*old_size)?;
                }
                Ok(old.len() as u64 + size.abs_diff(*old_size))
            }
            Undo::SetSize {
                ino,
                old_size,
                new_size,
                cut,
            } => {
                let f = files.get(ino).ok_or_else(gone)?;
                f.set_len(*old_size)?;
                if !cut.is_empty() {
                    f.write_all_at(cut, *new_size)?;
                }
                Ok(old_size.abs_diff(*new_size))
            }
            Undo::Create { parent, name, ino } => {
                let p = dir(parent)?;
                if sys::ino_at(p, name)? != *ino {
                    return Err(std::io::Error::from_raw_os_error(libc::ESTALE));
                }
                let t = self.trash_name();
                sys::rename_at(p, name, trash, &t, true)?;
                Ok(0)
            }
            Undo::Remove {
                parent,
                name,
                trash: t,
            } => {
                let p = dir(parent)?;
                sys::rename_at(trash, t, p, name, true)?;
                Ok(0)
            }
            Undo::Rename {
                old_parent,
                old_name,
                new_parent,
                new_name,
                ino,
                replaced,
            } => {
                let op = dir(old_parent)?;
                let np = dir(new_parent)?;
                if matches!(sys::ino_at(np, new_name), Ok(i) if i == *ino) {
                    sys::rename_at(np, new_name, op, old_name, true)?;
                }
                if let Some(t) = replaced {
                    sys::rename_at(trash, t, np, new_name, true)?;
                }
                Ok(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn ino(p: &std::path::Path) -> u64 {
        std::fs::symlink_metadata(p).unwrap().ino()
    }

    #[test]
    fn data_records_revert_in_reverse_order_until_the_file_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let f = File::options().read(true).write(true).open(&p).unwrap();
        let i = ino(&p);
        let mut j = Journal::default();
        // write "AB" at 8: overwrites "89", grows nothing
        j.file_change(Undo::Write {
            ino: i,
            offset: 8,
            old: b"89".to_vec(),
            old_size: 10,
        });
        f.write_all_at(b"AB", 8).unwrap();
        let synced = j.last_seq();
        // write "XYZ" at 9: overwrites "B", grows to 12
        j.file_change(Undo::Write {
            ino: i,
            offset: 9,
            old: b"B".to_vec(),
            old_size: 10,
        });
        f.write_all_at(b"XYZ", 9).unwrap();
        // truncate to 4
        j.file_change(Undo::SetSize {
            ino: i,
            old_size: 12,
            new_size: 4,
            cut: b"4567AXYZ".to_vec(),
        });
        f.set_len(4).unwrap();
        assert_eq!(j.sync_file(i, synced), 1);
        assert_eq!(j.sync_file(i + 1, u64::MAX), 0);
        let trash_dir = dir.path().join("trash");
        std::fs::create_dir(&trash_dir).unwrap();
        let trash = File::open(&trash_dir).unwrap();
        let files = HashMap::from([(i, f)]);
        let stats = j.revert(&files, &HashMap::new(), &trash, true);
        assert_eq!(stats.ops_reverted, 2);
        assert_eq!(stats.ops_skipped, 0);
        assert!(j.is_empty());
        assert_eq!(std::fs::read(&p).unwrap(), b"01234567AB");
    }

    #[test]
    fn a_rename_needs_both_parents_synced() {
        let mut j = Journal::default();
        j.dir_change(
            &[1, 2],
            Undo::Rename {
                old_parent: 1,
                old_name: "a".into(),
                new_parent: 2,
                new_name: "b".into(),
                ino: 9,
                replaced: Some("7".into()),
            },
        );
        let upto = j.last_seq();
        assert!(j.sync_dir(1, upto).is_empty());
        assert_eq!(j.len(), 1);
        assert_eq!(j.sync_dir(2, upto), vec![OsString::from("7")]);
        assert!(j.is_empty());
    }

    #[test]
    fn namespace_records_revert_through_directory_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let trash_dir = root.join("trash");
        std::fs::create_dir(&trash_dir).unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/old"), b"old").unwrap();
        let (ri, di) = (ino(root), ino(&root.join("d")));
        let mut j = Journal::default();
        // unlink d/old (moved to the trash)
        let t = j.trash_name();
        std::fs::rename(root.join("d/old"), trash_dir.join(&t)).unwrap();
        j.dir_change(
            &[di],
            Undo::Remove {
                parent: di,
                name: "old".into(),
                trash: t,
            },
        );
        // create d/new
        std::fs::write(root.join("d/new"), b"new").unwrap();
        j.dir_change(
            &[di],
            Undo::Create {
                parent: di,
                name: "new".into(),
                ino: ino(&root.join("d/new")),
            },
        );
        // rename d -> e (the records on d still find it)
        std::fs::rename(root.join("d"), root.join("e")).unwrap();
        j.dir_change(
            &[ri],
            Undo::Rename {
                old_parent: ri,
                old_name: "d".into(),
                new_parent: ri,
                new_name: "e".into(),
                ino: di,
                replaced: None,
            },
        );
        let dirs = HashMap::from([
            (ri, File::open(root).unwrap()),
            (di, File::open(root.join("e")).unwrap()),
        ]);
        let trash = File::open(&trash_dir).unwrap();
        let stats = j.revert(&HashMap::new(), &dirs, &trash, true);
        assert_eq!(stats.ops_reverted, 3);
        assert_eq!(std::fs::read(root.join("d/old")).unwrap(), b"old");
        assert!(!root.join("d/new").exists());
        assert!(!root.join("e").exists());
    }
}
