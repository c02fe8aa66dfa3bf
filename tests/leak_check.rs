//! The leak check of the tests judges only what the test's own processes
//! made: an orphaned System V segment that was on the machine before (some
//! other PostgreSQL that crashed) is not a leak of ours, and one made inside
//! the test is.

use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};

use walredo_testkit::harness::*;

/// A 56-byte segment nobody attaches to, as a killed PostgreSQL leaves one.
fn orphan_segment() -> libc::c_int {
    // SAFETY: shmget has no memory-safety preconditions.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 56, libc::IPC_CREAT | 0o600) };
    assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
    id
}

fn remove_segment(id: libc::c_int) {
    // SAFETY: IPC_RMID takes no buffer.
    let rc = unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "shmctl: {}", std::io::Error::last_os_error());
}

#[test]
fn an_orphaned_segment_that_is_not_ours_is_ignored_and_one_of_ours_is_found() {
    // Someone else's crashed server, before the test begins.
    let machine_ns: OwnedFd = std::fs::File::open("/proc/thread-self/ns/ipc")
        .unwrap()
        .into();
    let foreign = orphan_segment();

    let serial = serial();
    assert_no_leftovers();

    // A leak of ours fails the check.
    let ours = orphan_segment();
    let leaked = leaked_segments();
    assert!(
        leaked.iter().any(|s| s.shmid == i64::from(ours)),
        "{leaked:?}"
    );
    assert!(
        catch_unwind(AssertUnwindSafe(assert_no_leftovers)).is_err(),
        "a leaked segment of ours went unnoticed"
    );
    remove_segment(ours);
    assert_no_leftovers();
    drop(serial);

    // Back where the foreign segment lives (a no-op without a namespace of
    // our own), to clean up after the pretend crash.
    // SAFETY: a valid namespace descriptor; affects only this thread.
    let rc = unsafe { libc::setns(machine_ns.as_raw_fd(), libc::CLONE_NEWIPC) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    remove_segment(foreign);
}
