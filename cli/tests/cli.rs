//! The `walredo` command: a page as it was before an UPDATE (the forensic
//! use), and errors that say what to do.

use std::process::Command;
use std::sync::Mutex;

use walredo_testkit::cluster::record_workload;
use walredo_testkit::harness::*;
use walredo_testkit::install::{claiming_version, other_versions_extension};

fn walredo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_walredo"))
        .arg("--extension")
        .arg(extension_path())
        .args(args)
        .output()
        .unwrap()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn page_shows_a_row_as_it_was_before_an_update_and_errors_are_clear() {
    let _test = isolated_test();
    let tmp = TempDir::new("cli");
    let found = Mutex::new((String::new(), String::new()));
    let rec = record_workload(tmp.path(), &[], &["wal_keep_size = 1GB"], &|c| {
        c.psql(
            "CREATE TABLE accounts (id int PRIMARY KEY, note text);
             INSERT INTO accounts SELECT g, 'balance ok ' || g FROM generate_series(1, 50) g;",
        );
        let before = c.psql("SELECT pg_current_wal_insert_lsn();");
        c.psql("UPDATE accounts SET note = 'OOPS bad update' WHERE id = 7;");
        let path = c.psql("SELECT pg_relation_filepath('accounts');");
        *found.lock().unwrap() = (before, path);
    });
    let (before, path) = found.into_inner().unwrap();
    // base/<db>/<relfilenode> of the default tablespace.
    let parts: Vec<&str> = path.split('/').collect();
    let rel = format!("1663/{}/{}", parts[1], parts[2]);
    let (base, wal) = (rec.base.to_str().unwrap(), rec.wal_dir.to_str().unwrap());

    let out_file = tmp.path().join("page.bin");
    let out_path = out_file.to_str().unwrap();
    // `walredo page` for block 0 of the table, with `extra` arguments; it
    // must succeed.
    let page = |extra: &[&str]| {
        let mut args = vec![
            "page", "--base", base, "--wal", wal, "--rel", &rel, "--block", "0",
        ];
        args.extend_from_slice(extra);
        let out = walredo(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    page(&["--lsn", &before, "--out", out_path]);
    let old_page = std::fs::read(&out_file).unwrap();
    assert_eq!(old_page.len(), 8192);
    assert!(contains(&old_page, "balance ok 7"));
    assert!(
        !contains(&old_page, "OOPS bad update"),
        "the page before the UPDATE"
    );

    let now = page(&[]);
    let dump = String::from_utf8_lossy(&now.stdout);
    assert!(dump.starts_with("0000: "), "a hex dump: {dump}");
    assert!(dump.trim_end().ends_with("2000"), "a whole page: {dump}");
    page(&["--out", out_path]);
    let new_page = std::fs::read(&out_file).unwrap();
    assert!(
        contains(&new_page, "OOPS bad update"),
        "the page after the UPDATE"
    );

    // Errors say what is wrong and what to do; exit code 2.
    let expect_error = |args: &[&str], what: &str| {
        let out = walredo(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(what), "{args:?}: {err}");
    };
    let nowhere = tmp.path().join("nowhere");
    let nowhere = nowhere.to_str().unwrap();
    expect_error(
        &[
            "verify",
            "--base",
            nowhere,
            "--wal",
            wal,
            "--expected",
            base,
        ],
        "is not a PostgreSQL data directory",
    );
    let empty = TempDir::new("cli-empty-wal");
    expect_error(
        &[
            "verify",
            "--base",
            base,
            "--wal",
            empty.path().to_str().unwrap(),
            "--expected",
            base,
        ],
        "WAL",
    );
    // A BASE that is not a cleanly stopped cluster (the recovered one stopped
    // in recovery) is refused, and says so.
    expect_error(
        &[
            "verify",
            "--base",
            rec.expected.to_str().unwrap(),
            "--wal",
            wal,
            "--expected",
            base,
        ],
        "was not cleanly shut down",
    );
    // A missing segment: only the first segment is kept.
    let partial = TempDir::new("cli-partial-wal");
    let mut segments: Vec<_> = std::fs::read_dir(wal)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().len() == 24)
        .map(|e| e.path())
        .collect();
    segments.sort();
    std::fs::copy(
        &segments[0],
        partial.path().join(segments[0].file_name().unwrap()),
    )
    .unwrap();
    let far = walredo::wal::format_lsn(rec.target_lsn + 64 * 1024 * 1024);
    expect_error(
        &[
            "verify",
            "--base",
            base,
            "--wal",
            partial.path().to_str().unwrap(),
            "--expected",
            rec.expected.to_str().unwrap(),
            "--end",
            &far,
        ],
        "a segment is missing",
    );
    expect_error(
        &[
            "page", "--base", base, "--wal", wal, "--rel", "1663/5", "--block", "0",
        ],
        "SPC/DB/REL",
    );
}

/// `walredo` with `env` set (PG_CONFIG) and `args`, without `--extension`.
fn walredo_env(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_walredo"))
        .env_remove("PG_CONFIG")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap()
}

/// Another major version's pg_config, if this machine has one (Debian's
/// /usr/lib/postgresql/N, or a build in scripts/pg-binaries.sh's cache).
fn other_versions_pg_config() -> Option<(u32, std::path::PathBuf)> {
    let ours = walredo_testkit::install::pg_version();
    let cache = std::fs::read_dir("/var/cache/walredo/pg")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/pg_config"));
    let debian = (14..=18).map(|v| format!("/usr/lib/postgresql/{v}/bin/pg_config").into());
    debian.chain(cache).find_map(|p: std::path::PathBuf| {
        let out = Command::new(&p).arg("--version").output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let major: u32 = text
            .strip_prefix("PostgreSQL ")?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        (major != ours).then_some((major, p))
    })
}

#[test]
fn verify_replays_with_the_server_named_and_says_which() {
    let _test = isolated_test();
    let tmp = TempDir::new("cli-server");
    let rec = record_workload(tmp.path(), &[], &["wal_keep_size = 1GB"], &|c| {
        c.psql(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 500) g;",
        );
    });
    let (base, wal) = (rec.base.to_str().unwrap(), rec.wal_dir.to_str().unwrap());
    let expected = rec.expected.to_str().unwrap();
    // `walredo [flags] --extension SO verify ...` with `env` set.
    let verify = |env: &[(&str, &str)], extension: &str, flags: &[&str]| {
        let mut args = flags.to_vec();
        args.extend(["--extension", extension, "verify", "--base", base]);
        args.extend(["--wal", wal, "--expected", expected, "--processes", "1"]);
        walredo_env(env, &args)
    };
    let extension = extension_path();
    let extension = extension.to_str().unwrap();
    let bindir = walredo_testkit::cluster::bindir();
    let pg_config = bindir.join("pg_config");
    let pg_config = pg_config.to_str().unwrap();
    let postgres = bindir.join("postgres");
    let version = walredo_testkit::install::pg_version();

    // Named by --pg-config, by PG_CONFIG, by --bindir: the report says which
    // server replayed (its version and its postgres), and every page agrees.
    let ways = [
        (None, vec!["--pg-config", pg_config]),
        (Some(("PG_CONFIG", pg_config)), vec![]),
        (None, vec!["--bindir", bindir.to_str().unwrap()]),
    ];
    for (env, flags) in &ways {
        let out = verify(env.as_slice(), extension, flags);
        let report = String::from_utf8_lossy(&out.stdout);
        println!("{env:?} {flags:?}:\n{report}");
        assert!(
            out.status.success(),
            "{env:?} {flags:?}: {report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let first = report.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("replayed by PostgreSQL {version}."))
                && first.ends_with(&format!(", {}", postgres.display())),
            "{first}"
        );
        assert!(report.contains(" 0 different"), "{report}");
    }

    // A flag beats PG_CONFIG; a pg_config that cannot run says so.
    let bad_env = [("PG_CONFIG", "/nonexistent/pg_config")];
    let out = verify(&bad_env, extension, &["--pg-config", pg_config]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = verify(&bad_env, extension, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("PG_CONFIG /nonexistent/pg_config: cannot run it"),
        "{err}"
    );

    // A server of another major version than the data directory's is refused.
    match other_versions_pg_config() {
        None => println!("SKIPPED: no pg_config of a version other than {version} here"),
        Some((other, other_pg_config)) => {
            let out = verify(
                &[],
                extension,
                &["--pg-config", other_pg_config.to_str().unwrap()],
            );
            let err = String::from_utf8_lossy(&out.stderr);
            println!("{}: {err}", other_pg_config.display());
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(err.contains(&format!("is PostgreSQL {other}.")), "{err}");
            assert!(
                err.contains(&format!("but the data directory is PostgreSQL {version}")),
                "{err}"
            );
        }
    }

    // An extension built for another version fails at once, saying so; one
    // whose magic block was made to lie fails in the loader, and verify
    // stops at once with the loader's message instead of trying every page.
    let Some((other, so)) = other_versions_extension() else {
        println!("SKIPPED: no pg_walredo.so of a version other than {version} was built here");
        return;
    };
    let started = std::time::Instant::now();
    let out = verify(&[], so.to_str().unwrap(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{} in {:?}: {err}", so.display(), started.elapsed());
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "was built for PostgreSQL {other}, the server is {version}"
        )),
        "{err}"
    );
    let disguised = tmp.path().join("disguised.so");
    std::fs::write(
        &disguised,
        claiming_version(&std::fs::read(&so).unwrap(), version),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = verify(&[], disguised.to_str().unwrap(), &[]);
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("disguised {} in {took:?}: {err}", so.display());
    assert_eq!(out.status.code(), Some(2), "{err}");
    let last = err
        .lines()
        .rev()
        .find(|l| !l.starts_with('['))
        .unwrap_or_default();
    assert!(last.contains("could not load library"), "{err}");
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
}
