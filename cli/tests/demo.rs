//! The demo's path (workload, PostgreSQL's recovery, `verify`) with a small
//! workload, once per server configuration that changes what WAL looks like:
//! every page of the main fork and of the visibility maps must come out
//! identical to PostgreSQL's.

use walredo::datadir::read_page;
use walredo::wal::checksum::stamp_checksum;
use walredo::wal::uses::{block_uses_as, last_run, record_refs, Use};
use walredo::{Config, Pool, PAGE_SIZE};
use walredo_cli::verify::{control_info, read_wal, verify, VerifyOptions};
use walredo_testkit::cluster::record_workload;
use walredo_testkit::harness::*;

const SQL: &str = include_str!("../demo/workload.sql");

/// `fast_path`: whether full-page images are applied in-process.
fn demo_with(name: &str, conf: &[&str], fast_path: bool) {
    let _test = isolated_test();
    let tmp = TempDir::new(name);
    let mut initdb_args = Vec::new();
    let mut settings = vec!["wal_keep_size = 4GB", "max_wal_size = 4GB", "fsync = off"];
    for kv in conf {
        match *kv {
            "data_checksums=on" => initdb_args.push("--data-checksums"),
            other => settings.push(other),
        }
    }
    let rec = record_workload(tmp.path(), &initdb_args, &settings, &|c| {
        c.pgbench(&["-q", "-i", "-s", "1"]);
        c.pgbench(&["-n", "-t", "200"]);
        c.psql(SQL);
    });
    let opts = VerifyOptions {
        base: rec.base.clone(),
        wal: rec.wal_dir.clone(),
        expected: rec.expected.clone(),
        processes: 2,
        end: Some(rec.target_lsn),
        config: Config {
            fast_path,
            ..config()
        },
    };
    let report = verify(&opts, &|_, _| {}).unwrap();
    println!("== {name} ({}):\n{report}", conf.join(" "));
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
    vm_negative_control(&opts);
}

/// Visibility-map pages rebuilt from only the records that name them (no
/// heap record routed to them): the oracle must find some that differ.
fn vm_negative_control(opts: &VerifyOptions) {
    let base = control_info(&opts.base).unwrap();
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
/// fast_path` (whether full-page images are applied in-process).
macro_rules! demo_tests {
    ($($name:ident: $dir:literal, [$($conf:literal),*], $fast_path:literal;)*) => {
        $(
            #[test]
            fn $name() {
                demo_with($dir, &[$($conf),*], $fast_path);
            }
        )*
    };
}

demo_tests! {
    defaults: "demo-defaults", [], true;
    defaults_without_the_fast_path: "demo-no-fast-path", [], false;
    lz4_without_the_fast_path: "demo-lz4-no-fast-path", ["wal_compression=lz4"], false;
    full_page_writes_off: "demo-fpw-off", ["full_page_writes=off"], true;
    wal_compression_pglz: "demo-pglz", ["wal_compression=pglz"], true;
    wal_compression_lz4: "demo-lz4", ["wal_compression=lz4"], true;
    wal_compression_zstd: "demo-zstd", ["wal_compression=zstd"], true;
    data_checksums_on: "demo-checksums", ["data_checksums=on"], true;
    wal_log_hints_on: "demo-wal-log-hints", ["wal_log_hints=on"], true;
    full_page_writes_off_lz4: "demo-fpw-off-lz4", ["full_page_writes=off", "wal_compression=lz4"], true;
}
