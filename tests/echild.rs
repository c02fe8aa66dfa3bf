//! A host that reaps children itself: with SIGCHLD ignored, the kernel reaps
//! every child at once and waitpid() fails with ECHILD. The pool must neither
//! spin nor hang nor leak then. (Its own test binary: the signal disposition
//! is process-wide.)

use std::time::{Duration, Instant};

use walredo::{Config, Error, PageTag, Pool, RecordRef, RelFileNode};
use walredo_testkit::harness::*;

fn request(pool: &Pool, relnode: u32) -> walredo::Result<Box<[u8; walredo::PAGE_SIZE]>> {
    let tag = PageTag {
        rel: RelFileNode {
            spcnode: 1663,
            dbnode: 5,
            relnode,
        },
        forknum: 0,
        blkno: 1,
    };
    let rec = synthetic_record(&tag, true);
    pool.redo(
        &tag,
        None,
        &[RecordRef {
            end_lsn: 0x1000,
            data: &rec,
        }],
    )
}

#[test]
fn a_host_that_reaps_children_does_not_hang_the_pool() {
    // Only the segments this test makes count (assert_no_leftovers).
    isolate_ipc();
    // SAFETY: setting a signal disposition; this test binary runs only this.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let config = Config {
        child_program: Some((walredo_testkit::fake_child(), vec![])),
        processes: 1,
        timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let pool = Pool::new(&config).unwrap();
    let started = Instant::now();
    request(&pool, 1).unwrap();
    // Crashes (relnode 2): the children die and vanish without our waitpid.
    assert!(matches!(request(&pool, 2), Err(Error::RedoFailed { .. })));
    // Hangs (relnode 3): killed at the deadline; reaping finds nothing.
    assert!(matches!(request(&pool, 3), Err(Error::Timeout { .. })));
    request(&pool, 1).unwrap();
    drop(pool);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    assert_no_leftovers();
}
