//! Write test fixtures for the C tests: real WAL from a throw-away PostgreSQL
//! 15 cluster, cut into redo requests, each with the page PostgreSQL's own
//! archive recovery produced (see testkit/src/fixtures.rs for what and the format).
//!
//!   cargo run --release -p walredo-testkit --bin make-fixtures -- OUTDIR
//!
//! Writes OUTDIR/case-000.bin, case-001.bin, ...

use std::fs;
use std::path::PathBuf;

use walredo_testkit::fixtures::make_fixtures;

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: make-fixtures OUTDIR"),
    );
    fs::create_dir_all(&out).unwrap();
    let work = std::env::temp_dir().join(format!("walredo-fixtures-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap();
    if let Some(ids) = walredo_testkit::cluster::user() {
        std::os::unix::fs::chown(&work, Some(ids.uid), Some(ids.gid)).unwrap();
    }
    let config = walredo_testkit::harness::config();
    let cases = make_fixtures(&work, &config);
    for (i, case) in cases.iter().enumerate() {
        let path = out.join(format!("case-{i:03}.bin"));
        fs::write(&path, case.to_bytes())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    let _ = fs::remove_dir_all(&work);
    println!("wrote {} fixtures to {}", cases.len(), out.display());
}
