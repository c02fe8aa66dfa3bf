//! The `walredo` command: a page as it was before an UPDATE (the forensic
//! use), and errors that say what to do.

use std::process::Command;
use std::sync::Mutex;

use walredo_testkit::cluster::record_workload;
use walredo_testkit::harness::*;

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
