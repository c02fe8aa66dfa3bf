//! The demo's path (workload, PostgreSQL's recovery, `verify`) with a small
//! workload, once per server configuration that changes what WAL looks like:
//! every page of the main fork and of the visibility maps must come out
//! identical to PostgreSQL's.

use walredo::datadir::read_page;
use walredo::wal::checksum::stamp_checksum;
use walredo::wal::uses::{block_uses_as, last_run, record_refs, Use};
use walredo::{Config, Pool, PAGE_SIZE};
use walredo_cli::check::{check, CheckOptions};
use walredo_cli::verify::{control_info, read_wal, verify, VerifyOptions, WalSpec};
use walredo_testkit::cluster::record_workload;
use walredo_testkit::harness::*;

const SQL: &str = include_str!("../demo/workload.sql");
/// The demo's part for SLRU pages and relation maps (cli/examples/demo.rs).
const SHARE_LOCKS: &str = include_str!("../demo/share-locks.sql");
const SLRU_SQL: &str = include_str!("../demo/slru.sql");

/// `fast_path`: whether full-page images are applied in-process; `slru`:
/// whether the workload includes the demo's SLRU part (and its rows are
/// checked).
fn demo_with(name: &str, conf: &[&str], fast_path: bool, slru: bool) {
    let _test = isolated_test();
    let tmp = TempDir::new(name);
    let mut initdb_args = Vec::new();
    let mut settings = vec![
        "wal_keep_size = 4GB",
        "max_wal_size = 4GB",
        "fsync = off",
        "max_prepared_transactions = 10",
    ];
    for kv in conf {
        match *kv {
            "data_checksums=on" => initdb_args.push("--data-checksums"),
            other => settings.push(other),
        }
    }
    let share_locks = tmp.path().join("share-locks.sql");
    std::fs::write(&share_locks, SHARE_LOCKS).unwrap();
    let rec = record_workload(tmp.path(), &initdb_args, &settings, &|c| {
        c.pgbench(&["-q", "-i", "-s", "1"]);
        c.pgbench(&["-n", "-t", "200"]);
        if slru {
            c.pgbench(&[
                "-n",
                "-c",
                "3",
                "-t",
                "100",
                "-f",
                share_locks.to_str().unwrap(),
            ]);
            c.psql(SLRU_SQL);
        }
        c.psql(SQL);
    });
    let opts = VerifyOptions {
        base: rec.base.clone(),
        wal: rec.wal_dir.clone(),
        archives: Vec::new(),
        restore_command: None,
        timeline: None,
        expected: rec.expected.clone(),
        expected_is: Default::default(),
        processes: 2,
        end: Some(rec.target_lsn),
        config: Config {
            fast_path,
            ..config()
        },
    };
    let report = verify(&opts, &|_, _| {}).unwrap();
    println!("== {name} ({}):\n{report}", conf.join(" "));
    // The report names the server that replayed: the tests' own.
    let postgres = walredo_testkit::cluster::bindir().join("postgres");
    assert!(
        report.server.starts_with(&format!(
            "PostgreSQL {}.",
            walredo_testkit::install::pg_version()
        )) && report
            .server
            .ends_with(&format!(", {}", postgres.display())),
        "{}",
        report.server
    );
    let counted = report.counted();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(counted.different, 0);
    assert!(
        counted.pages >= 3000,
        "only {} pages compared",
        counted.pages
    );
    assert_eq!(counted.identical, counted.pages);
    if fast_path && !conf.contains(&"full_page_writes=off") {
        assert!(report.fast_path_pages > 100, "the fast path was not used");
    }
    if !fast_path {
        assert_eq!((report.fast_path_pages, report.image_starts), (0, 0));
    }
    // A visibility-map page BASE lacks starts from a zero page, as in
    // PostgreSQL's recovery: every block has a starting point.
    assert!(
        report.unstartable.is_empty(),
        "blocks without a starting point: {:?}",
        report.unstartable
    );
    // Visibility-map pages, with the heap changes routed to them, are
    // compared and counted like main-fork pages.
    let vm = report
        .groups
        .iter()
        .filter(|((fork, _), _)| *fork == 2)
        .fold((0, 0), |(p, i), (_, g)| (p + g.pages, i + g.identical));
    assert!(vm.0 >= 10, "only {} visibility-map pages compared", vm.0);
    assert_eq!(vm.1, vm.0, "visibility-map pages differ");
    for kind in [
        "Heap/UPDATE",
        "Heap/DELETE",
        "Heap/LOCK",
        "Storage/TRUNCATE",
    ] {
        assert!(
            report.vm_side_effects.contains_key(kind),
            "no {kind} record was routed to a visibility-map page: {:?}",
            report.vm_side_effects
        );
    }
    // The primary's own data directory against its WAL (walredo check): every
    // page as its WAL makes it once masked as wal_consistency_checking masks,
    // every access method's.
    let checked = check(
        &CheckOptions {
            data: tmp.path().join("data"),
            base: rec.base.clone(),
            wal: WalSpec::dir(&rec.wal_dir),
            processes: 2,
            config: config(),
        },
        &|_, _| {},
    )
    .unwrap();
    println!("== {name}: walredo check of the primary:\n{checked}");
    assert!(checked.clean(), "{checked}");
    assert!(checked.verify.groups.values().map(|g| g.pages).sum::<u64>() >= 3000);
    // Every access method of the workload was rebuilt and compared.
    for rmgr in [
        "Heap", "Heap2", "Btree", "Hash", "Gin", "SPGist", "BRIN", "Sequence", "XLOG",
    ] {
        assert!(
            report
                .groups
                .keys()
                .any(|(fork, r)| *fork == 0 && *r == rmgr),
            "no {rmgr} page was compared"
        );
    }
    if slru {
        slru_rows(&report, conf.contains(&"track_commit_timestamp=on"));
    }
    vm_negative_control(&opts);
}

/// The SLRU part of the workload gives a row for each SLRU (commit
/// timestamps only when on) and for the relation maps, all identical.
fn slru_rows(report: &walredo_cli::verify::Report, commit_ts: bool) {
    assert!(report.slru.skipped.is_none(), "{:?}", report.slru.skipped);
    let names = walredo_cli::verify::SLRU_ROW_NAMES;
    for (name, row) in names.iter().zip(&report.slru.rows) {
        assert_eq!(row.different, 0, "{name}: {:?}", row.differences);
        let least = match *name {
            "pg_commit_ts" if !commit_ts => 0,
            "pg_xact" | "pg_multixact/offsets" | "pg_multixact/members" | "pg_filenode.map" => 2,
            _ => 1,
        };
        assert!(
            row.pages >= least,
            "{name}: {} pages compared, at least {least} expected",
            row.pages
        );
        if *name == "pg_commit_ts" && !commit_ts {
            assert_eq!(row.pages, 0, "commit timestamps are off");
        }
    }
}

/// Visibility-map pages rebuilt from only the records that name them (no
/// heap record routed to them): the oracle must find some that differ.
fn vm_negative_control(opts: &VerifyOptions) {
    let base = control_info(&opts.base, &opts.config).unwrap();
    let records = read_wal(&base, &opts.wal, opts.end).unwrap();
    let blocks = block_uses_as(records.iter().map(|r| &r.data[..]), record_format()).unwrap();
    let pool = Pool::new(&Config {
        data_checksums: base.data_checksums,
        wal_log_hints: base.wal_log_hints,
        ..config()
    })
    .unwrap();
    let (mut compared, mut different) = (0, 0);
    for (tag, uses) in &blocks {
        if tag.forknum != 2 || !uses.iter().any(|u| u.side_effect) {
            continue;
        }
        let Some(expected) = read_page(&opts.expected, tag).unwrap() else {
            continue;
        };
        let named: Vec<Use> = uses.iter().filter(|u| !u.side_effect).copied().collect();
        let base_page = read_page(&opts.base, tag)
            .unwrap()
            .unwrap_or_else(|| Box::new([0u8; PAGE_SIZE]));
        let mut page = if named.is_empty() {
            base_page
        } else {
            let run = last_run(&named);
            if run[0].removal.is_some() {
                continue; // removed by a truncation or a drop
            }
            let start = (!run[0].initializes).then_some(&*base_page);
            pool.redo(tag, start, &record_refs(&records, run)).unwrap()
        };
        if base.data_checksums {
            stamp_checksum(&mut page, tag.blkno);
        }
        compared += 1;
        if *page != *expected {
            different += 1;
        }
    }
    println!(
        "negative control: {different} of {compared} visibility-map pages differ from \
         PostgreSQL's recovery without the records routed to them"
    );
    assert!(different > 0, "dropping the routed records changed nothing");
}

/// One test per server configuration: `name: directory, [settings],
/// fast_path, slru` (whether full-page images are applied in-process;
/// whether the SLRU part runs: on three configurations, as it adds a few
/// seconds to each).
macro_rules! demo_tests {
    ($($name:ident: $dir:literal, [$($conf:literal),*], $fast_path:literal, $slru:literal;)*) => {
        $(
            #[test]
            fn $name() {
                demo_with($dir, &[$($conf),*], $fast_path, $slru);
            }
        )*
    };
}

demo_tests! {
    defaults: "demo-defaults", [], true, true;
    defaults_without_the_fast_path: "demo-no-fast-path", [], false, false;
    lz4_without_the_fast_path: "demo-lz4-no-fast-path", ["wal_compression=lz4"], false, false;
    full_page_writes_off: "demo-fpw-off", ["full_page_writes=off"], true, false;
    wal_compression_pglz: "demo-pglz", ["wal_compression=pglz"], true, false;
    wal_compression_lz4: "demo-lz4", ["wal_compression=lz4"], true, false;
    wal_compression_zstd: "demo-zstd", ["wal_compression=zstd"], true, false;
    data_checksums_on: "demo-checksums", ["data_checksums=on"], true, false;
    wal_log_hints_on: "demo-wal-log-hints", ["wal_log_hints=on"], true, false;
    track_commit_timestamp_on: "demo-commit-ts", ["track_commit_timestamp=on"], true, true;
    full_page_writes_off_lz4: "demo-fpw-off-lz4", ["full_page_writes=off", "wal_compression=lz4"], true, true;
}
