//! sled 0.34 runs on the mount: open (takes its file lock), insert, flush, reopen after a
//! clean unmount and read back.

mod common;

use std::os::fd::AsRawFd;

use common::Lossy;

#[test]
fn sled_opens_writes_flushes_and_reopens() {
    if common::skipped("sled_opens_writes_flushes_and_reopens") {
        return;
    }
    let mut l = Lossy::start();
    let path = l.m("node1/db");
    {
        let db = sled::open(&path).expect("sled open on the mount");
        for i in 0u32..2000 {
            db.insert(format!("key{i:05}"), format!("value{i}").as_bytes())
                .expect("insert");
        }
        let t = db.open_tree("log").expect("tree");
        t.insert(b"entry", vec![7u8; 64 * 1024])
            .expect("big insert");
        db.flush().expect("flush");
        for i in 0u32..1000 {
            db.remove(format!("key{i:05}")).expect("remove");
        }
        db.flush().expect("flush");
    }
    l.unmount();
    l.mount();
    {
        let db = sled::open(&path).expect("sled reopen on the mount");
        assert_eq!(db.len(), 1000);
        assert_eq!(
            db.get("key01999").expect("get").as_deref(),
            Some(&b"value1999"[..])
        );
        assert!(db.get("key00000").expect("get").is_none());
        let t = db.open_tree("log").expect("tree");
        assert_eq!(
            t.get(b"entry").expect("get").map(|v| v.len()),
            Some(64 * 1024)
        );
        db.insert("after", "reopen").expect("insert");
        db.flush().expect("flush");
    }
    l.unmount();
    // The same database read directly from the backing directory.
    let db = sled::open(l.b("node1/db")).expect("sled open on the backing dir");
    assert_eq!(db.len(), 1001);
}

#[test]
fn file_locks_work_on_the_mount() {
    if common::skipped("file_locks_work_on_the_mount") {
        return;
    }
    let l = Lossy::start();
    let a = std::fs::File::create(l.m("lockfile")).unwrap();
    let b = std::fs::File::options()
        .write(true)
        .open(l.m("lockfile"))
        .unwrap();
    let flock = |f: &std::fs::File, op: libc::c_int| {
        // SAFETY: valid fd.
        unsafe { libc::flock(f.as_raw_fd(), op) == 0 }
    };
    assert!(flock(&a, libc::LOCK_EX | libc::LOCK_NB), "flock");
    assert!(
        !flock(&b, libc::LOCK_EX | libc::LOCK_NB),
        "second exclusive flock succeeded"
    );
    assert!(flock(&a, libc::LOCK_UN), "unlock");
    assert!(
        flock(&b, libc::LOCK_EX | libc::LOCK_NB),
        "flock after unlock"
    );
    // fcntl (POSIX) locks
    let fl = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: valid fd and flock struct.
    let r = unsafe { libc::fcntl(a.as_raw_fd(), libc::F_SETLK, &fl) };
    assert_eq!(r, 0, "fcntl F_SETLK: {}", std::io::Error::last_os_error());
}

#[test]
fn sled_flushed_data_survives_a_cut_once_its_directories_are_synced() {
    if common::skipped("sled_flushed_data_survives_a_cut_once_its_directories_are_synced") {
        return;
    }
    let mut l = Lossy::start();
    std::fs::create_dir(l.m("node1")).unwrap();
    common::fsync_dir(&l.mnt);
    let path = l.m("node1/db");
    let db = sled::open(&path).expect("sled open on the mount");
    for i in 0u32..500 {
        db.insert(format!("key{i:05}"), format!("value{i}").as_bytes())
            .expect("insert");
    }
    db.flush().expect("flush");
    // sled 0.34's flush only calls sync_file_range(2) on Linux, which is no durability
    // (and never reaches a FUSE file system): like cma's DurableFiles, fsync sled's data
    // file and the directories.
    std::fs::File::open(l.m("node1/db/db"))
        .unwrap()
        .sync_data()
        .unwrap();
    common::fsync(&l.m("node1/db/conf"));
    common::fsync_dir(&l.m("node1/db"));
    common::fsync_dir(&l.m("node1"));
    // Not flushed: lost at the cut.
    db.insert("unflushed", "x").expect("insert");
    l.cut();
    drop(db);
    let db = sled::open(l.b("node1/db")).expect("sled open after the cut");
    assert_eq!(db.len(), 500);
    assert!(db.get("unflushed").expect("get").is_none());
}
