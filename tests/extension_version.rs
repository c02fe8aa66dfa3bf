//! An extension built for another major version than the server's is
//! refused before any process starts, saying so, instead of every start
//! failing in the loader ("undefined symbol: DropRelationBuffers") and
//! requests retrying it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use walredo::{Config, Pool};
use walredo_testkit::harness::*;
use walredo_testkit::install::{pg_version, workspace_root};

/// This tree's pg_walredo.so built for another version than the tests', if
/// one was built (`make PG_VERSION=N`).
fn other_versions_extension() -> Option<(u32, PathBuf)> {
    [16, 17, 18, 14, 15]
        .into_iter()
        .filter(|v| *v != pg_version())
        .map(|v| {
            let dir = match v {
                15 => workspace_root().join("pg_walredo"),
                v => workspace_root().join(format!("target/pg{v}/pg_walredo")),
            };
            (v, dir.join("pg_walredo.so"))
        })
        .find(|(_, so)| so.is_file())
}

#[test]
fn an_extension_of_another_version_is_refused_before_any_start() {
    let Some((built_for, so)) = other_versions_extension() else {
        println!(
            "SKIPPED: no pg_walredo.so of a version other than {} was built here \
             (make PG_VERSION=16 extension builds one)",
            pg_version()
        );
        return;
    };
    let _test = isolated_test();
    let started = Instant::now();
    let m = spawn_failure(Pool::new(&Config {
        extension_path: Some(so.clone()),
        ..config()
    }));
    println!("{} refused in {:?}: {m}", so.display(), started.elapsed());
    let expected = format!(
        "was built for PostgreSQL {built_for}, the server is {}",
        pg_version()
    );
    assert!(m.contains(&expected), "{m}");
    assert!(
        m.contains(&format!("make PG_VERSION={}", pg_version())),
        "{m}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
