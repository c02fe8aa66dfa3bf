//! Test tooling of walredo, for its tests, benchmarks and demos only:
//! throw-away PostgreSQL 15 clusters (run as an unprivileged user when the
//! caller is root), real WAL recorded from workloads, redo fixtures cut from
//! it, private installation copies that load this tree's extensions, and
//! `walredo-fake-child`, a fault-injecting stand-in for a wal-redo
//! process.

pub mod cluster;
pub mod fixtures;
pub mod harness;
pub mod install;

use std::path::PathBuf;

/// The `walredo-fake-child` program, built beside the running test or
/// benchmark (`cargo build -p walredo-testkit --bins`; `make` builds it).
pub fn fake_child() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable");
    // target/<profile>/deps/<test>, or target/<profile>/examples/<example>.
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("a test executable in target/<profile>/deps");
    let child = profile_dir.join("walredo-fake-child");
    assert!(
        child.is_file(),
        "{} is missing: build it with `cargo build --release -p walredo-testkit --bins` \
         (make check does)",
        child.display()
    );
    child
}
