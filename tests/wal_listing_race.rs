//! A segment that a checkpoint removes while a lookup lists the WAL
//! directory is WAL that is no longer there, not a bad argument: the listing
//! passes over it, and the C ABI never answers WALREDO_INVALID_ARGUMENT for
//! it (walredo_inspect turned that into SQLSTATE 22023).

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use walredo::wal::{Segments, WalError};
use walredo_testkit::harness::TempDir;

const SEG: u64 = 1024 * 1024;

#[test]
fn a_segment_removed_while_listing_is_passed_over() {
    let dir = TempDir::new("listing-race");
    let name = |segno: u64| format!("00000001{:08X}{:08X}", segno / 4096, segno % 4096);
    for segno in 1..=3 {
        fs::write(dir.path().join(name(segno)), vec![0u8; SEG as usize]).unwrap();
    }
    // The oldest segment comes and goes, as a checkpoint removes (and a
    // restore brings back) the oldest: the listing stats it first.
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = Arc::clone(&stop);
        let (from, to) = (dir.path().join(name(1)), dir.path().join("gone"));
        std::thread::spawn(move || {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                fs::rename(&from, &to).unwrap();
                fs::rename(&to, &from).unwrap();
                flips += 1;
            }
            flips
        })
    };
    let dirs = [dir.path().to_path_buf()];
    let mut io_errors = Vec::new();
    for _ in 0..100_000 {
        match Segments::list(&dirs, None, None) {
            Ok(segs) => assert_eq!(segs.segment_size(), SEG),
            Err(e @ WalError::Io { .. }) => io_errors.push(e.to_string()),
            Err(e) => panic!("listing: {e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flips = churn.join().unwrap();
    println!(
        "listing race: {flips} removals and returns, {} I/O errors",
        io_errors.len()
    );
    assert!(
        io_errors.is_empty(),
        "{} listings failed on a file that went away, e.g. {}",
        io_errors.len(),
        io_errors[0]
    );
}
