//! An extension built for another major version than the server's is
//! refused before any process starts, saying so, instead of every start
//! failing in the loader ("undefined symbol: DropRelationBuffers") and
//! requests retrying it; and one that gets past that check but that the
//! loader refuses fails every request by its deadline with the loader's
//! message. Both need another version's build (`make PG_VERSION=16
//! extension`), and say SKIPPED without one.

use std::time::{Duration, Instant};

use walredo::{Config, Pool};
use walredo_testkit::harness::fake::*;
use walredo_testkit::harness::*;
use walredo_testkit::install::{claiming_version, other_versions_extension, pg_version};

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

#[test]
fn an_extension_the_loader_refuses_fails_requests_by_their_deadline_with_its_message() {
    let Some((_, so)) = other_versions_extension() else {
        println!(
            "SKIPPED: no pg_walredo.so of a version other than {} was built here",
            pg_version()
        );
        return;
    };
    let _test = isolated_test();
    let tmp = TempDir::new("ext-disguised");
    let disguised = tmp.path().join("pg_walredo.so");
    std::fs::write(
        &disguised,
        claiming_version(&std::fs::read(&so).unwrap(), pg_version()),
    )
    .unwrap();
    let timeout = Duration::from_secs(1);
    let pool = Pool::new(&Config {
        extension_path: Some(disguised),
        processes: 1,
        timeout,
        ..config()
    })
    .unwrap();
    // More callers than processes: some drive the slot, some wait in the
    // queue; every one gets the loader's message by its deadline.
    let outcomes: Vec<(Duration, String)> = std::thread::scope(|s| {
        let callers: Vec<_> = (0..4)
            .map(|i| {
                let pool = &pool;
                s.spawn(move || {
                    (0..3)
                        .map(|_| {
                            let tag = fake_tag(NORMAL, i);
                            let recs = synthetic_records(&tag, 1);
                            let started = Instant::now();
                            let m = spawn_failure(pool.redo(&tag, None, &record_refs(&recs)));
                            (started.elapsed(), m)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        callers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    let slowest = outcomes.iter().map(|(d, _)| *d).max().unwrap();
    println!(
        "12 requests, the slowest failed after {slowest:?}: {:?}",
        outcomes[0].1
    );
    for (took, m) in &outcomes {
        assert!(m.contains("could not load library"), "{m}");
        assert!(
            *took < timeout + Duration::from_millis(500),
            "{took:?}: {m}"
        );
    }
    assert_eq!(pool.stats().spawns, 0);
}
