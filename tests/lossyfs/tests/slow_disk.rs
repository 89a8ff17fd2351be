//! Slow-disk mode: CTL_DIR/sync_delay_ms delays each fsync.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::{fsync_dir, read, write_file, Lossy};

#[test]
fn sync_delay_delays_fsync_and_fdatasync() {
    if common::skipped("sync_delay_delays_fsync_and_fdatasync") {
        return;
    }
    let mut l = Lossy::start();
    write_file(&l.m("f"), b"data");
    let f = File::options().write(true).open(l.m("f")).unwrap();

    let start = Instant::now();
    f.sync_all().unwrap();
    let undelayed = start.elapsed();

    l.set_sync_delay_ms(300);
    let start = Instant::now();
    f.sync_all().unwrap();
    let delayed = start.elapsed();
    assert!(
        delayed >= Duration::from_millis(300),
        "fsync took {delayed:?}"
    );

    f.write_all_at(b"x", 0).unwrap();
    let start = Instant::now();
    f.sync_data().unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));

    let start = Instant::now();
    fsync_dir(&l.mnt);
    assert!(start.elapsed() >= Duration::from_millis(300));

    l.set_sync_delay_ms(0);
    let start = Instant::now();
    f.sync_all().unwrap();
    let after = start.elapsed();
    assert!(
        after < Duration::from_millis(300),
        "fsync still slow: {after:?}"
    );
    println!("fsync: undelayed {undelayed:?}, delayed {delayed:?}, reset {after:?}");
    drop(f);
    l.cut();
    assert_eq!(read(&l.b("f")).unwrap(), b"xata");
}

#[test]
fn a_cut_during_a_delayed_fsync_loses_what_it_was_syncing() {
    if common::skipped("a_cut_during_a_delayed_fsync_loses_what_it_was_syncing") {
        return;
    }
    let mut l = Lossy::start();
    write_file(&l.m("f"), b"durable");
    File::options()
        .write(true)
        .open(l.m("f"))
        .unwrap()
        .sync_all()
        .unwrap();
    fsync_dir(&l.mnt);

    let f = File::options().write(true).open(l.m("f")).unwrap();
    f.write_all_at(b"LOST!!!", 0).unwrap();
    l.set_sync_delay_ms(3_000);
    let syncer = std::thread::spawn(move || {
        let r = f.sync_all();
        drop(f);
        r
    });
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    l.cut();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "the cut waited for the sync"
    );
    let deadline = Instant::now() + common::DEADLINE;
    while !syncer.is_finished() {
        assert!(Instant::now() < deadline, "fsync never returned");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = syncer.join().unwrap();
    assert!(r.is_err(), "fsync interrupted by the cut succeeded");
    assert_eq!(read(&l.b("f")).unwrap(), b"durable");
}

#[test]
fn programs_get_errors_after_the_cut() {
    if common::skipped("programs_get_errors_after_the_cut") {
        return;
    }
    let mut l = Lossy::start();
    write_file(&l.m("f"), b"data");
    let f = File::options()
        .read(true)
        .write(true)
        .open(l.m("f"))
        .unwrap();
    l.cut();
    let mut buf = [0u8; 4];
    let e = f.read_at(&mut buf, 0).unwrap_err();
    println!("read after the cut: {e}");
    let e = f.write_at(b"x", 0).unwrap_err();
    println!("write after the cut: {e}");
    assert!(!l.b("f").exists());
}
