//! Power-cut semantics on a real mount: file data and size, then directory entries.

mod common;

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;

use common::{fsync, fsync_dir, read, write_file, Lossy};

#[test]
fn unsynced_file_data_and_size_are_lost_at_the_cut() {
    if common::skipped("unsynced_file_data_and_size_are_lost_at_the_cut") {
        return;
    }
    let mut l = Lossy::start();
    // Names made durable first, so only data is at stake here.
    for name in [
        "rewritten",
        "extended",
        "synced_twice",
        "truncated",
        "fdatasynced",
    ] {
        write_file(&l.m(name), b"synced content");
        fsync(&l.m(name));
    }
    fsync_dir(&l.mnt);

    // Rewritten in place, not synced: back to its synced content.
    let f = File::options().write(true).open(l.m("rewritten")).unwrap();
    f.write_all_at(b"LOST", 0).unwrap();
    f.write_all_at(b"LOST", 7).unwrap();
    drop(f);
    // Extended, not synced: back to its synced size.
    let mut f = File::options().append(true).open(l.m("extended")).unwrap();
    f.write_all(b" and more that is lost").unwrap();
    drop(f);
    // Written and synced again: the last synced content survives.
    let f = File::options()
        .write(true)
        .open(l.m("synced_twice"))
        .unwrap();
    f.write_all_at(b"SYNCED", 0).unwrap();
    f.write_all_at(b" and grown", 14).unwrap();
    f.sync_all().unwrap();
    f.write_all_at(b"lost", 0).unwrap();
    drop(f);
    // Truncated, not synced: size and cut bytes come back.
    let f = File::options().write(true).open(l.m("truncated")).unwrap();
    f.set_len(3).unwrap();
    f.write_all_at(b"X", 10).unwrap();
    drop(f);
    // fdatasync counts as a sync.
    let f = File::options()
        .write(true)
        .open(l.m("fdatasynced"))
        .unwrap();
    f.write_all_at(b"DATASYNC", 0).unwrap();
    f.sync_data().unwrap();
    drop(f);

    // The running program sees its own writes.
    assert_eq!(read(&l.m("rewritten")).unwrap(), b"LOSTed LOSTent");
    assert_eq!(
        read(&l.m("extended")).unwrap(),
        b"synced content and more that is lost"
    );

    l.cut();
    assert_eq!(read(&l.b("rewritten")).unwrap(), b"synced content");
    assert_eq!(read(&l.b("extended")).unwrap(), b"synced content");
    assert_eq!(
        read(&l.b("synced_twice")).unwrap(),
        b"SYNCED content and grown"
    );
    assert_eq!(read(&l.b("truncated")).unwrap(), b"synced content");
    assert_eq!(read(&l.b("fdatasynced")).unwrap(), b"DATASYNContent");
    assert!(!l.b(lossyfs::TRASH_DIR).exists(), "trash left behind");
    let err = l.stderr();
    assert!(err.contains("ops_reverted="), "counters not printed: {err}");
    assert!(
        err.contains("bytes_reverted="),
        "counters not printed: {err}"
    );
}

#[test]
fn unsynced_directory_operations_are_undone_at_the_cut() {
    if common::skipped("unsynced_directory_operations_are_undone_at_the_cut") {
        return;
    }
    let mut l = Lossy::start();
    // Durable starting point.
    for (name, data) in [
        ("kept", &b"kept"[..]),
        ("to_rename", b"to_rename"),
        ("to_unlink", b"to_unlink"),
        ("src", b"src"),
        ("dst", b"dst"),
        ("snapshot", b"snapshot data"),
    ] {
        write_file(&l.m(name), data);
        fsync(&l.m(name));
    }
    fs::create_dir(l.m("sub")).unwrap();
    fsync_dir(&l.mnt);

    // A file created and fsynced whose directory was never fsynced disappears.
    write_file(&l.m("never_named"), b"data");
    fsync(&l.m("never_named"));
    // A rename not made durable is undone.
    fs::rename(l.m("to_rename"), l.m("renamed")).unwrap();
    // An unlink not made durable is undone, with the file's data.
    fs::remove_file(l.m("to_unlink")).unwrap();
    // A rename replacing a target: both come back.
    fs::rename(l.m("src"), l.m("dst")).unwrap();
    assert_eq!(read(&l.m("dst")).unwrap(), b"src");
    // A directory created but not durable disappears with its (synced) content.
    fs::create_dir(l.m("lost_dir")).unwrap();
    write_file(&l.m("lost_dir/f"), b"f");
    fsync(&l.m("lost_dir/f"));
    fsync_dir(&l.m("lost_dir"));
    // Made durable in a durable subdirectory: survives.
    write_file(&l.m("sub/durable"), b"durable");
    fsync(&l.m("sub/durable"));
    fsync_dir(&l.m("sub"));
    // Hard link then unlink, made durable: the snapshot pattern.
    fs::hard_link(l.m("snapshot"), l.m("sub/snapshot.link")).unwrap();
    fsync_dir(&l.m("sub"));
    fs::remove_file(l.m("snapshot")).unwrap();
    // A durable rename in a subdirectory, both parents synced.
    write_file(&l.m("sub/moved"), b"moved");
    fsync(&l.m("sub/moved"));
    fsync_dir(&l.m("sub"));
    fs::rename(l.m("sub/moved"), l.m("moved_out")).unwrap();
    fsync_dir(&l.m("sub"));

    let names: Vec<String> = fs::read_dir(&l.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n == lossyfs::TRASH_DIR),
        "trash visible: {names:?}"
    );
    assert!(names.iter().any(|n| n == "renamed"), "{names:?}");

    fsync_dir(&l.mnt); // makes the unlink of "snapshot" and the rename "moved_out" durable...
                       // ...and what follows is not durable again.
    fs::rename(l.m("kept"), l.m("kept_renamed")).unwrap();

    l.cut();
    // Everything up to the last root fsync is kept...
    assert_eq!(read(&l.b("never_named")).unwrap(), b"data");
    assert_eq!(read(&l.b("renamed")).unwrap(), b"to_rename");
    assert!(!l.b("to_rename").exists());
    assert!(!l.b("to_unlink").exists());
    assert_eq!(read(&l.b("dst")).unwrap(), b"src");
    assert!(!l.b("src").exists());
    assert!(!l.b("snapshot").exists());
    assert_eq!(read(&l.b("sub/snapshot.link")).unwrap(), b"snapshot data");
    assert_eq!(read(&l.b("moved_out")).unwrap(), b"moved");
    assert!(!l.b("sub/moved").exists());
    assert_eq!(read(&l.b("sub/durable")).unwrap(), b"durable");
    assert_eq!(read(&l.b("lost_dir/f")).unwrap(), b"f");
    // ...and the last rename is undone.
    assert_eq!(read(&l.b("kept")).unwrap(), b"kept");
    assert!(!l.b("kept_renamed").exists());
    assert!(!l.b(lossyfs::TRASH_DIR).exists());
}

#[test]
fn directory_operations_without_a_directory_fsync_are_lost() {
    if common::skipped("directory_operations_without_a_directory_fsync_are_lost") {
        return;
    }
    let mut l = Lossy::start();
    for (name, data) in [
        ("to_rename", &b"to_rename"[..]),
        ("to_unlink", b"to_unlink"),
        ("src", b"src"),
        ("dst", b"dst"),
        ("snapshot", b"snapshot data"),
    ] {
        write_file(&l.m(name), data);
        fsync(&l.m(name));
    }
    fs::create_dir(l.m("sub")).unwrap();
    fsync_dir(&l.mnt);

    write_file(&l.m("never_named"), b"data");
    fsync(&l.m("never_named"));
    fs::rename(l.m("to_rename"), l.m("renamed")).unwrap();
    fs::remove_file(l.m("to_unlink")).unwrap();
    fs::rename(l.m("src"), l.m("dst")).unwrap();
    fs::create_dir(l.m("lost_dir")).unwrap();
    write_file(&l.m("lost_dir/f"), b"f");
    fsync(&l.m("lost_dir/f"));
    fsync_dir(&l.m("lost_dir"));
    fs::hard_link(l.m("snapshot"), l.m("sub/snapshot.link")).unwrap();
    fsync_dir(&l.m("sub"));
    fs::remove_file(l.m("snapshot")).unwrap();
    // A rename between directories with only one parent synced is undone.
    write_file(&l.m("sub/durable"), b"durable");
    fsync(&l.m("sub/durable"));
    fsync_dir(&l.m("sub"));
    fs::rename(l.m("sub/durable"), l.m("moved_out")).unwrap();
    fsync_dir(&l.m("sub"));

    l.cut();
    assert!(
        !l.b("never_named").exists(),
        "create without dir fsync survived"
    );
    assert_eq!(read(&l.b("to_rename")).unwrap(), b"to_rename");
    assert!(!l.b("renamed").exists());
    assert_eq!(read(&l.b("to_unlink")).unwrap(), b"to_unlink");
    assert_eq!(read(&l.b("src")).unwrap(), b"src");
    assert_eq!(read(&l.b("dst")).unwrap(), b"dst");
    assert!(
        !l.b("lost_dir").exists(),
        "mkdir without parent fsync survived"
    );
    assert_eq!(read(&l.b("snapshot")).unwrap(), b"snapshot data");
    assert_eq!(read(&l.b("sub/snapshot.link")).unwrap(), b"snapshot data");
    // sub/durable -> moved_out: only sub was synced after it, undone.
    assert_eq!(read(&l.b("sub/durable")).unwrap(), b"durable");
    assert!(!l.b("moved_out").exists());
    assert!(!l.b(lossyfs::TRASH_DIR).exists());
}

#[test]
fn clean_unmount_keeps_everything() {
    if common::skipped("clean_unmount_keeps_everything") {
        return;
    }
    let mut l = Lossy::start();
    write_file(&l.m("a"), b"never synced");
    fs::create_dir(l.m("d")).unwrap();
    write_file(&l.m("d/b"), b"b");
    write_file(&l.m("gone"), b"x");
    fs::remove_file(l.m("gone")).unwrap();
    l.unmount();
    assert_eq!(read(&l.b("a")).unwrap(), b"never synced");
    assert_eq!(read(&l.b("d/b")).unwrap(), b"b");
    assert!(!l.b("gone").exists());
    assert!(!l.b(lossyfs::TRASH_DIR).exists());
    // Mount again, cut at once: nothing to revert.
    l.mount();
    assert_eq!(read(&l.m("a")).unwrap(), b"never synced");
    l.cut();
    assert_eq!(read(&l.b("a")).unwrap(), b"never synced");
}
