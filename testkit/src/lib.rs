//! Test tooling of walredo, for its tests, benchmarks and demos only:
//! throw-away PostgreSQL clusters (15 unless WALREDO_PG_VERSION says
//! otherwise; run as an unprivileged user when the
//! caller is root), real WAL recorded from workloads, redo fixtures cut from
//! it, private installation copies that load this tree's extensions,
//! `walredo-fake-child`, a fault-injecting stand-in for a wal-redo process,
//! and `walredo-swapper`, an attacker of the scratch directories.

pub mod cluster;
pub mod fixtures;
pub mod harness;
pub mod install;

use std::path::PathBuf;

/// The `walredo-fake-child` program, built beside the running test or
/// benchmark (`cargo build -p walredo-testkit --bins`; `make` builds it).
pub fn fake_child() -> PathBuf {
    testkit_program("walredo-fake-child")
}

/// The `walredo-swapper` program (an attacker of the scratch directories'
/// hand-over: testkit/src/bin/walredo-swapper.rs), built like `fake_child`.
pub fn swapper() -> PathBuf {
    testkit_program("walredo-swapper")
}

fn testkit_program(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable");
    // target/<profile>/deps/<test>, or target/<profile>/examples/<example>.
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("a test executable in target/<profile>/deps");
    let program = profile_dir.join(name);
    assert!(
        program.is_file(),
        "{} is missing: build it with `cargo build --release -p walredo-testkit --bins` \
         (make check does)",
        program.display()
    );
    program
}
