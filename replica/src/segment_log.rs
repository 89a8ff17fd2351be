//! The Raft log's entries as an append-only log of segment files.
//!
//! Why not sled: sled keeps 4 to 16 entries in a B-tree leaf and writes a leaf larger than
//! a quarter of its 512 KiB segment as a file of its own. With the packet-reader's
//! appends of 75-90 KB, every leaf is such a file: each consolidation and each merge
//! after a purge creates, writes and later deletes one, and every new one must be
//! fdatasynced before an acknowledgement. A profile of the end of a saturation run showed
//! the purge thread of all three nodes spending 198 of 222 samples creating those files,
//! in step, for half a second, and appends waiting up to 958 ms meanwhile
//! (docs/queue.md). A log is appended at the end, truncated at the end and purged at the
//! front, which a few files do at the cost of the bytes written: a purge deletes whole
//! files and writes nothing.
//!
//! Layout: `<dir>/<first index, 20 digits>.seg`; a file holds consecutive entries from
//! its first index on, each as a record `[payload length: u32 LE][CRC-32 of payload: u32
//! LE][payload]`. A new file starts once the current one reaches `max_segment_bytes`.
//!
//! Durability: [`SegmentLog::take_unsynced`] hands out the files written since its last
//! call (and whether a file was created or removed); the caller fdatasyncs them and then
//! the directory ([`sync_files`]) before it acknowledges anything written before the
//! call. A truncation is made durable before it returns (it is rare and must never be
//! undone by a crash after the entries replacing it are acknowledged).
//!
//! Recovery ([`SegmentLog::open`]) reads every record and checks its length and CRC. The
//! first bad or incomplete record ends the log: the file is cut there and later files are
//! removed. Nothing after that record was acknowledged, because a sync covers every file
//! written before it started, so an acknowledged entry never follows one that is not
//! durable.
//!
//! This module does no encoding of entries and knows nothing of Raft: it stores opaque
//! payloads by index.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes before each payload: length and CRC-32.
pub const RECORD_HEADER_BYTES: u64 = 8;

/// Largest payload a record may carry (a bound for recovery, which must not trust a
/// length read from a damaged file).
pub const MAX_RECORD_BYTES: u64 = 256 << 20;

const SUFFIX: &str = ".seg";

/// One segment file and where its records start.
struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Byte offset of the record of entry `first + i`.
    offsets: Vec<u64>,
    /// Bytes of valid records (the file's length).
    len: u64,
}

impl Segment {
    /// Index the next record of this segment would have.
    fn next(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }

    /// Byte range of entry `index`'s record (which must be in this segment).
    fn span(&self, index: u64) -> (u64, u64) {
        let i = (index - self.first) as usize;
        let start = self.offsets[i];
        let end = self.offsets.get(i + 1).copied().unwrap_or(self.len);
        (start, end)
    }
}

/// What [`SegmentLog::open`] found and repaired.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records read back.
    pub records: u64,
    /// Bytes cut from the end of the log: an incomplete or damaged record and all that
    /// followed it (files removed included).
    pub discarded_bytes: u64,
    /// Segment files removed: after the first bad record, or wholly at or below the purge
    /// point (a purge interrupted by a crash).
    pub removed_files: u64,
}

/// Where to read a run of records: one read of `len` bytes at `offset` of `file`, holding
/// the records of entries `first..first + count`.
pub struct ReadPlan {
    file: Arc<File>,
    offset: u64,
    /// Offsets of the records relative to `offset`, and the end of the last.
    bounds: Vec<u64>,
    first: u64,
}

/// The log's segment files.
pub struct SegmentLog {
    dir: PathBuf,
    segments: std::collections::VecDeque<Segment>,
    max_segment_bytes: u64,
    /// Files written since the last [`SegmentLog::take_unsynced`].
    unsynced: Vec<Arc<File>>,
    /// A file was created or removed since then: the directory needs a sync too.
    dir_dirty: bool,
    /// Lowest index that may be read: entries below it are purged, even where their
    /// segment (which holds later entries too) is still there.
    floor: u64,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{SUFFIX}"))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// fsync of a directory, which makes the names created or removed in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and its missing ancestors) so that it survives a power cut: the parent of
/// every directory created is synced, top down, and so is `dir`'s own parent when `dir`
/// already existed (an earlier run may have crashed before syncing it). Found by the
/// fault-injection suite's power cuts: a `snapshot` directory whose entry was never synced
/// vanished with its snapshot while the log it replaced stayed purged, and the node could
/// not start.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    let parent_of = |d: &Path| -> Option<std::path::PathBuf> {
        d.parent().map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".").to_path_buf()
            } else {
                p.to_path_buf()
            }
        })
    };
    let mut missing = Vec::new();
    let mut at = Some(dir.to_path_buf());
    while let Some(d) = at {
        if d.exists() {
            break;
        }
        at = parent_of(&d);
        missing.push(d);
    }
    std::fs::create_dir_all(dir)?;
    if missing.is_empty() {
        missing.push(dir.to_path_buf());
    }
    for d in missing.iter().rev() {
        if let Some(parent) = parent_of(d) {
            sync_dir(&parent)?;
        }
    }
    Ok(())
}

/// fdatasyncs `files`, then `dir` when `dir_dirty`.
pub fn sync_files(files: &[Arc<File>], dir_dirty: bool, dir: &Path) -> io::Result<()> {
    for file in files {
        file.sync_data()?;
    }
    if dir_dirty {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Deletes files at once, then syncs the directory (truncation, recovery; a purge uses
/// [`release_files`]).
pub fn remove_files(dir: &Path, paths: &[PathBuf]) -> io::Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    for path in paths {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    sync_dir(dir)
}

/// Suffix of a purged segment file on its way out (ignored, then deleted, at open).
const PURGED_SUFFIX: &str = ".purged";

/// Bytes cut from the end of a purged file per step of [`release_files`].
pub const RELEASE_CHUNK_BYTES: u64 = 1 << 20;

/// Pause between two steps of [`release_files`].
const RELEASE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// Deletes the files of purged segments without stalling the disk: each is renamed out
/// of the log (`*.purged`, the directory synced, so recovery never sees a half-deleted
/// segment), cut from its end [`RELEASE_CHUNK_BYTES`] at a time with a short pause
/// between steps, then unlinked. On a file system mounted with online discard (ext4 `-o
/// discard`, common on cloud VMs) freeing blocks sends the device a synchronous discard;
/// unlinking ten 32 MiB segments at once after a saturation run held every node's
/// fdatasyncs for about 450 ms (all three nodes purge in step). Returns the bytes freed.
pub fn release_files(dir: &Path, paths: &[PathBuf]) -> io::Result<u64> {
    if paths.is_empty() {
        return Ok(0);
    }
    let mut doomed = Vec::new();
    for path in paths {
        let mut name = path.clone().into_os_string();
        name.push(PURGED_SUFFIX);
        let to = PathBuf::from(name);
        match std::fs::rename(path, &to) {
            Ok(()) => doomed.push(to),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    sync_dir(dir)?;
    let mut freed = 0;
    for path in &doomed {
        freed += shrink_and_remove(path)?;
    }
    Ok(freed)
}

/// Cuts a file from its end [`RELEASE_CHUNK_BYTES`] at a time, pausing between steps,
/// then unlinks it (see [`release_files`] for why). The caller makes sure nothing needs
/// the file any more. Returns its size.
pub fn shrink_and_remove(path: &Path) -> io::Result<u64> {
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    let mut len = size;
    while len > RELEASE_CHUNK_BYTES {
        len -= RELEASE_CHUNK_BYTES;
        file.set_len(len)?;
        std::thread::sleep(RELEASE_PAUSE);
    }
    drop(file);
    std::fs::remove_file(path)?;
    Ok(size)
}

/// Reads the records of one segment file; returns their offsets and the length of the
/// valid prefix (shorter than the file when it ends in a bad record).
fn scan(bytes: &[u8]) -> (Vec<u64>, u64) {
    let mut offsets = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= RECORD_HEADER_BYTES as usize {
        let header = &bytes[at..at + RECORD_HEADER_BYTES as usize];
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let start = at + RECORD_HEADER_BYTES as usize;
        if len > MAX_RECORD_BYTES || (bytes.len() - start) < len as usize {
            break;
        }
        let payload = &bytes[start..start + len as usize];
        if crc32fast::hash(payload) != crc {
            break;
        }
        offsets.push(at as u64);
        at = start + len as usize;
    }
    (offsets, at as u64)
}

impl SegmentLog {
    /// Opens (creating `dir` if needed) and recovers the log. Segments wholly at or below
    /// `purged` (the last purged index) are removed; the log must be contiguous above it.
    pub fn open(
        dir: &Path,
        max_segment_bytes: u64,
        purged: Option<u64>,
    ) -> io::Result<(SegmentLog, Recovery)> {
        // The directory's own entry must be durable before anything in it is
        // acknowledged.
        create_dir_durable(dir)?;
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(PURGED_SUFFIX) {
                // A purge's release interrupted by a crash.
                std::fs::remove_file(dir.join(name))?;
                continue;
            }
            let Some(stem) = name.strip_suffix(SUFFIX) else {
                continue;
            };
            if let Ok(first) = stem.parse::<u64>() {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut report = Recovery::default();
        let mut segments = std::collections::VecDeque::new();
        let mut cut = false;
        for first in firsts {
            let path = segment_path(dir, first);
            if cut {
                report.discarded_bytes += std::fs::metadata(&path)?.len();
                std::fs::remove_file(&path)?;
                report.removed_files += 1;
                continue;
            }
            let bytes = std::fs::read(&path)?;
            let (offsets, valid) = scan(&bytes);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            if valid < bytes.len() as u64 {
                // An incomplete or damaged record: the log ends here.
                tracing::warn!(
                    file = %path.display(),
                    valid_bytes = valid,
                    file_bytes = bytes.len(),
                    "raft log ends in an incomplete or damaged record; cutting it there \
                     (entries after it were never acknowledged)"
                );
                report.discarded_bytes += bytes.len() as u64 - valid;
                file.set_len(valid)?;
                file.sync_all()?;
                cut = true;
            }
            report.records += offsets.len() as u64;
            let segment = Segment {
                first,
                path,
                file: Arc::new(file),
                offsets,
                len: valid,
            };
            segments.push_back(segment);
        }
        // Drop what a purge already covers, and empty files (a crash right after creating
        // one, or a cut at a file's first record).
        let mut log = SegmentLog {
            dir: dir.to_path_buf(),
            segments,
            max_segment_bytes: max_segment_bytes.max(1),
            unsynced: Vec::new(),
            dir_dirty: false,
            floor: 0,
        };
        let mut stale = Vec::new();
        if let Some(purged) = purged {
            stale.extend(log.detach_upto(purged));
        }
        while log.segments.back().is_some_and(|s| s.offsets.is_empty()) {
            if let Some(s) = log.segments.pop_back() {
                stale.push(s.path);
            }
        }
        let mut expected = None;
        for s in &log.segments {
            if expected.is_some_and(|e| e != s.first) {
                return Err(invalid(format!(
                    "raft log: a hole before segment {} (expected index {})",
                    s.path.display(),
                    expected.unwrap_or_default()
                )));
            }
            expected = Some(s.next());
        }
        report.removed_files += stale.len() as u64;
        remove_files(dir, &stale)?;
        if report.discarded_bytes > 0 {
            sync_dir(dir)?;
        }
        Ok((log, report))
    }

    /// Index of the first stored entry.
    #[cfg(test)]
    pub fn first_index(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| !s.offsets.is_empty())
            .map(|s| s.first.max(self.floor))
    }

    /// Index of the last stored entry.
    pub fn last_index(&self) -> Option<u64> {
        self.segments
            .iter()
            .rev()
            .find(|s| !s.offsets.is_empty())
            .map(|s| s.next() - 1)
    }

    /// Number of segment files.
    #[cfg(test)]
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Appends records for consecutive indices starting at `first`. `first` must follow
    /// the last stored entry, or the log must be empty (after a purge of everything, a
    /// follower's log restarts after an installed snapshot).
    pub fn append(&mut self, first: u64, payloads: &[Vec<u8>]) -> io::Result<()> {
        if payloads.is_empty() {
            return Ok(());
        }
        match self.last_index() {
            Some(last) if last + 1 != first => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("raft log: append at {first} after last entry {last}"),
                ));
            }
            _ => {}
        }
        let start_new = match self.segments.back() {
            None => true,
            Some(s) => s.len >= self.max_segment_bytes || s.next() != first,
        };
        if start_new {
            let path = segment_path(&self.dir, first);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            self.dir_dirty = true;
            self.segments.push_back(Segment {
                first,
                path,
                file: Arc::new(file),
                offsets: Vec::new(),
                len: 0,
            });
        }
        let Some(segment) = self.segments.back_mut() else {
            return Err(io::Error::other("raft log: no segment to append to"));
        };
        let total: usize = payloads
            .iter()
            .map(|p| p.len() + RECORD_HEADER_BYTES as usize)
            .sum();
        let mut buf = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(payloads.len());
        for payload in payloads {
            if payload.len() as u64 > MAX_RECORD_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("raft log: entry of {} bytes", payload.len()),
                ));
            }
            offsets.push(segment.len + buf.len() as u64);
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            buf.extend_from_slice(payload);
        }
        if let Err(e) = segment.file.write_all_at(&buf, segment.len) {
            // Leave the file as long as what is recorded, so a later append does not
            // follow a partial record.
            let _ = segment.file.set_len(segment.len);
            return Err(e);
        }
        segment.len += buf.len() as u64;
        segment.offsets.extend(offsets);
        if !self.unsynced.iter().any(|f| Arc::ptr_eq(f, &segment.file)) {
            self.unsynced.push(segment.file.clone());
        }
        Ok(())
    }

    /// Files written and whether the directory changed since the last call; the caller
    /// syncs them ([`sync_files`]) before acknowledging what was written before.
    pub fn take_unsynced(&mut self) -> (Vec<Arc<File>>, bool) {
        let dirty = std::mem::take(&mut self.dir_dirty);
        (std::mem::take(&mut self.unsynced), dirty)
    }

    /// Where to read the records of entries `from..to` (clamped to what is stored): one
    /// plan per segment touched. Reading them ([`read_plans`]) needs no lock on the log.
    pub fn plan(&self, from: u64, to: u64) -> Vec<ReadPlan> {
        let mut plans = Vec::new();
        let from = from.max(self.floor);
        for s in &self.segments {
            let lo = from.max(s.first);
            let hi = to.min(s.next());
            if lo >= hi {
                continue;
            }
            let (start, _) = s.span(lo);
            let (_, end) = s.span(hi - 1);
            let mut bounds: Vec<u64> = (lo..hi).map(|i| s.span(i).0 - start).collect();
            bounds.push(end - start);
            plans.push(ReadPlan {
                file: s.file.clone(),
                offset: start,
                bounds,
                first: lo,
            });
        }
        plans
    }

    /// Removes the entries from `from` on, durably: the cut file is fdatasynced and
    /// later files are deleted before this returns.
    pub fn truncate(&mut self, from: u64) -> io::Result<()> {
        let mut removed = Vec::new();
        while let Some(s) = self.segments.back() {
            if s.first >= from {
                if let Some(s) = self.segments.pop_back() {
                    self.unsynced.retain(|f| !Arc::ptr_eq(f, &s.file));
                    removed.push(s.path);
                }
            } else {
                break;
            }
        }
        if let Some(s) = self.segments.back_mut() {
            if from < s.next() {
                let (start, _) = s.span(from);
                s.file.set_len(start)?;
                s.offsets.truncate((from - s.first) as usize);
                s.len = start;
                s.file.sync_data()?;
            }
        }
        remove_files(&self.dir, &removed)
    }

    /// Forgets the segments whose entries are all at or below `upto` and returns their
    /// paths, for the caller to delete ([`remove_files`]) once the purge point is durable.
    pub fn detach_upto(&mut self, upto: u64) -> Vec<PathBuf> {
        self.floor = self.floor.max(upto.saturating_add(1));
        let mut detached = Vec::new();
        while let Some(s) = self.segments.front() {
            if s.next() <= upto.saturating_add(1) {
                if let Some(s) = self.segments.pop_front() {
                    self.unsynced.retain(|f| !Arc::ptr_eq(f, &s.file));
                    detached.push(s.path);
                }
            } else {
                break;
            }
        }
        detached
    }
}

/// Reads and checks the records of `plans`, in index order: `(index, payload)`.
pub fn read_plans(plans: &[ReadPlan]) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    for plan in plans {
        let total = plan.bounds.last().copied().unwrap_or(0);
        let mut bytes = vec![0u8; total as usize];
        plan.file.read_exact_at(&mut bytes, plan.offset)?;
        for (i, pair) in plan.bounds.windows(2).enumerate() {
            let record = &bytes[pair[0] as usize..pair[1] as usize];
            let index = plan.first + i as u64;
            if record.len() < RECORD_HEADER_BYTES as usize {
                return Err(invalid(format!("raft log: record {index} is cut short")));
            }
            let (header, payload) = record.split_at(RECORD_HEADER_BYTES as usize);
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if len != payload.len() || crc32fast::hash(payload) != crc {
                return Err(invalid(format!(
                    "raft log: record {index} fails its length or CRC check"
                )));
            }
            out.push((index, payload.to_vec()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn payload(index: u64) -> Vec<u8> {
        let len = (index * 37 % 300) as usize + 1;
        (0..len)
            .map(|i| (index as u8).wrapping_add(i as u8))
            .collect()
    }

    fn read_all(log: &SegmentLog) -> Vec<(u64, Vec<u8>)> {
        read_plans(&log.plan(0, u64::MAX)).unwrap()
    }

    /// One append per entry (a new segment starts only between appends).
    fn append_range(log: &mut SegmentLog, from: u64, to: u64) {
        for i in from..to {
            log.append(i, &[payload(i)]).unwrap();
        }
    }

    #[test]
    fn appends_roll_into_segments_and_read_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, report) = SegmentLog::open(dir.path(), 1000, None).unwrap();
        assert_eq!(report, Recovery::default());
        for start in (1..200).step_by(7) {
            let payloads: Vec<_> = (start..(start + 7).min(200)).map(payload).collect();
            log.append(start, &payloads).unwrap();
        }
        assert!(log.segment_count() > 5, "{} segments", log.segment_count());
        let expected: Vec<_> = (1..200).map(|i| (i, payload(i))).collect();
        assert_eq!(read_all(&log), expected);
        assert_eq!(read_plans(&log.plan(50, 53)).unwrap(), expected[49..52]);
        let (files, dirty) = log.take_unsynced();
        assert!(dirty && !files.is_empty());
        sync_files(&files, dirty, dir.path()).unwrap();
        drop(log);
        let (log, report) = SegmentLog::open(dir.path(), 1000, None).unwrap();
        assert_eq!(report.records, 199);
        assert_eq!(report.discarded_bytes, 0);
        assert_eq!(read_all(&log), expected);
        assert_eq!((log.first_index(), log.last_index()), (Some(1), Some(199)));
    }

    /// A record cut short or damaged (a crash before its sync) ends the log there: the
    /// entries before it survive, the later files go.
    #[test]
    fn a_torn_or_damaged_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 500, None).unwrap();
        append_range(&mut log, 1, 40);
        let files = log.segment_count();
        assert!(files > 3);
        // Flip a payload byte of entry 20.
        let plan = log.plan(20, 21);
        let at = plan[0].offset + RECORD_HEADER_BYTES + 1;
        let file = plan[0].file.clone();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0xff], at).unwrap();
        drop((log, plan, file));
        let (mut log, report) = SegmentLog::open(dir.path(), 500, None).unwrap();
        assert_eq!(log.last_index(), Some(19));
        assert_eq!(report.records, 19);
        assert!(report.removed_files >= 1);
        assert_eq!(
            read_all(&log),
            (1..20).map(|i| (i, payload(i))).collect::<Vec<_>>()
        );
        // The log goes on from there.
        append_range(&mut log, 20, 25);
        assert_eq!(log.last_index(), Some(24));

        // A half-written header at the end.
        let path = log.segments.back().unwrap().path.clone();
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, &[9, 0, 0]).unwrap();
        let (log, report) = SegmentLog::open(dir.path(), 500, None).unwrap();
        assert_eq!(report.discarded_bytes, 3);
        assert_eq!(log.last_index(), Some(24));
    }

    /// Purged files are released (cut from the end, then deleted); one left half-released
    /// by a crash is ignored and deleted at open.
    #[test]
    fn purged_files_are_released_and_leftovers_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 3 << 20, None).unwrap();
        for i in 1..=8u64 {
            log.append(i, &[vec![i as u8; 1 << 20]]).unwrap();
        }
        assert_eq!(log.segment_count(), 3);
        let paths = log.detach_upto(4);
        assert_eq!(paths.len(), 1);
        assert_eq!(
            release_files(dir.path(), &paths).unwrap(),
            3 * ((1 << 20) + RECORD_HEADER_BYTES)
        );
        assert!(!paths[0].exists());
        // A crash during the release of the next one.
        let paths = log.detach_upto(6);
        let mut name = paths[0].clone().into_os_string();
        name.push(PURGED_SUFFIX);
        std::fs::rename(&paths[0], &name).unwrap();
        OpenOptions::new()
            .write(true)
            .open(&name)
            .unwrap()
            .set_len(12345)
            .unwrap();
        drop(log);
        let (log, report) = SegmentLog::open(dir.path(), 3 << 20, Some(6)).unwrap();
        assert!(!PathBuf::from(&name).exists());
        assert_eq!(report.discarded_bytes, 0);
        assert_eq!(read_plans(&log.plan(7, 9)).unwrap().len(), 2);
    }

    #[test]
    fn a_hole_between_segments_is_an_error_not_a_silent_gap() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 200, None).unwrap();
        append_range(&mut log, 1, 30);
        let second = log.segments[1].path.clone();
        drop(log);
        std::fs::remove_file(second).unwrap();
        assert!(SegmentLog::open(dir.path(), 200, None).is_err());
    }

    #[test]
    fn bad_appends_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 200, None).unwrap();
        append_range(&mut log, 5, 10);
        assert!(log.append(12, &[vec![1]]).is_err());
        assert!(log.append(7, &[vec![1]]).is_err());
        assert_eq!(log.last_index(), Some(9));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Append(u8),
        Truncate(u8),
        Purge(u8),
        Reopen,
        /// Reopen after losing what was written since the last sync (a power cut).
        Crash,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u8..20).prop_map(Op::Append),
            1 => any::<u8>().prop_map(Op::Truncate),
            1 => any::<u8>().prop_map(Op::Purge),
            1 => Just(Op::Reopen),
            1 => Just(Op::Crash),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Against a model (a map of index to payload): appends, truncations, purges,
        /// reopens and crashes that lose unsynced writes never lose a synced entry and
        /// never return a wrong one.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec(op(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let open = |purged| SegmentLog::open(dir.path(), 300, purged).unwrap().0;
            let mut log = open(None);
            let mut model = std::collections::BTreeMap::<u64, Vec<u8>>::new();
            let mut synced = 0u64; // entries up to here survive a crash
            let mut purged: Option<u64> = None;
            let mut next = 1u64;
            for op in ops {
                match op {
                    Op::Append(n) => {
                        let payloads: Vec<_> = (next..next + n as u64).map(payload).collect();
                        log.append(next, &payloads).unwrap();
                        for (i, p) in payloads.into_iter().enumerate() {
                            model.insert(next + i as u64, p);
                        }
                        next += n as u64;
                        // Every other append is synced, as the flusher would.
                        if n % 2 == 0 {
                            let (files, dirty) = log.take_unsynced();
                            sync_files(&files, dirty, dir.path()).unwrap();
                            synced = next - 1;
                        }
                    }
                    Op::Truncate(k) => {
                        let low = purged.map_or(1, |p| p + 1);
                        if next > low {
                            let from = low + k as u64 % (next - low);
                            log.truncate(from).unwrap();
                            model.retain(|&i, _| i < from);
                            next = from;
                            synced = synced.min(from - 1);
                        }
                    }
                    Op::Purge(k) => {
                        let upto = purged.unwrap_or(0) + k as u64 % 20;
                        if upto > 0 {
                            purged = Some(upto.max(purged.unwrap_or(0)));
                            let upto = purged.unwrap_or(0);
                            let paths = log.detach_upto(upto);
                            remove_files(dir.path(), &paths).unwrap();
                            model.retain(|&i, _| i > upto);
                            if next <= upto {
                                next = upto + 1;
                            }
                            synced = synced.max(upto.min(next - 1));
                        }
                    }
                    Op::Reopen => {
                        let (files, dirty) = log.take_unsynced();
                        sync_files(&files, dirty, dir.path()).unwrap();
                        synced = next - 1;
                        drop(log);
                        log = open(purged);
                    }
                    Op::Crash => {
                        // The page cache survives a process crash, so simulate the loss
                        // of unsynced writes by cutting them off: everything after
                        // `synced` goes, as far as a power cut may take it.
                        log.truncate(synced + 1).unwrap();
                        model.retain(|&i, _| i <= synced);
                        next = synced + 1;
                        drop(log);
                        log = open(purged);
                    }
                }
                let low = purged.unwrap_or(0);
                let stored: Vec<_> = read_all(&log).into_iter().filter(|(i, _)| *i > low).collect();
                let expected: Vec<_> = model.iter().map(|(i, p)| (*i, p.clone())).collect();
                prop_assert_eq!(stored, expected);
                let last = log.last_index().filter(|&l| l > low);
                prop_assert_eq!(last, model.keys().next_back().copied());
            }
        }
    }
}
