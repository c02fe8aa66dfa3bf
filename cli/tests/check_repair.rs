//! `walredo check` and `walredo repair` on a stopped cluster with data
//! checksums, a promoted standby (timeline 2) whose early WAL is only in a
//! gzip archive: a heap block and an
//! index block damaged on disk are found as different, an older copy of a
//! page put back (its newest write dropped) as behind its WAL; `repair`
//! rewrites the three, saving the old pages, and then PostgreSQL starts,
//! amcheck's verify_heapam and bt_index_check find nothing, the rows are as
//! they were, and `check` finds nothing either.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use walredo_cli::check::saved_pages_dir;
use walredo_testkit::cluster::{
    bindir, checkpoint_wal_away, damage_block, gunzip_restore_command, gzip_archiving_settings,
    Cluster,
};
use walredo_testkit::harness::*;

const BLCKSZ: u64 = 8192;

fn walredo(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_walredo"))
        .arg("--extension")
        .arg(extension_path())
        .arg("--bindir")
        .arg(bindir())
        .args(args)
        .output()
        .unwrap();
    println!(
        "walredo {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn block(file: &Path, blkno: u64) -> Vec<u8> {
    let mut page = vec![0u8; BLCKSZ as usize];
    fs::File::open(file)
        .unwrap()
        .read_exact_at(&mut page, blkno * BLCKSZ)
        .unwrap();
    page
}

fn put_block(file: &Path, blkno: u64, page: &[u8]) {
    let f = fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(page, blkno * BLCKSZ).unwrap();
}

const ROWS: &str = "SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM t;";

#[test]
fn check_finds_and_repair_fixes_damaged_and_lost_writes() {
    let _test = isolated_test();
    let tmp = TempDir::new("check-repair");
    let archive = TempDir::new("check-repair-archive");
    let arch = archive.path().display().to_string();
    let archiving = gzip_archiving_settings(archive.path());
    let mut settings = vec!["autovacuum = off", "fsync = off", "checkpoint_timeout = 1h"];
    settings.extend(archiving.iter().map(String::as_str));
    let initdb = ["--wal-segsize=1", "--data-checksums"];
    let mut p = Cluster::init(tmp.path(), &initdb, &settings);
    p.start();
    p.psql(
        "CREATE EXTENSION amcheck;
         CREATE TABLE t (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off, fillfactor = 50);
         INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 2000) g;
         VACUUM (FREEZE) t;
         CHECKPOINT;",
    );
    // The base backup; the standby that is promoted later streams from it.
    let base = tmp.path().join("base");
    let sdir = TempDir::new("check-repair-standby");
    let restore_command = format!(
        "restore_command = '{}'",
        gunzip_restore_command(archive.path())
    );
    let mut standby_settings = settings.clone();
    standby_settings.push(&restore_command);
    let mut c = p.start_standby(sdir.path(), &initdb, &standby_settings, &base);
    p.psql(
        "UPDATE t SET v = 'changed' WHERE id = 1;
         INSERT INTO t VALUES (0, 'zero');
         UPDATE t SET v = v || '!' WHERE id BETWEEN 500 AND 520;",
    );
    let early = p.psql("SELECT pg_current_wal_flush_lsn();");
    checkpoint_wal_away(&p, 2);
    let flushed = p.psql("SELECT pg_current_wal_flush_lsn();");
    let two_minutes = std::time::Duration::from_secs(120);
    wait_until("the standby to catch up", two_minutes, || {
        c.psql(&format!("SELECT pg_last_wal_replay_lsn() >= '{flushed}';")) == "t"
    });
    p.stop();
    // A timeline switch: the cluster checked is the promoted standby.
    c.psql("SELECT pg_promote();");
    wait_until("the promotion", two_minutes, || {
        c.psql("SELECT pg_is_in_recovery();") == "f"
    });
    c.psql("CHECKPOINT;");
    let heap = c.data.join(c.psql("SELECT pg_relation_filepath('t');"));
    let index = c
        .data
        .join(c.psql("SELECT pg_relation_filepath('t_pkey');"));
    let rel = |file: &Path| {
        let rel = file.strip_prefix(&c.data).unwrap();
        let parts: Vec<&str> = rel.iter().map(|p| p.to_str().unwrap()).collect();
        format!("1663/{}/{}", parts[1], parts[2])
    };
    let (heap_rel, index_rel) = (rel(&heap), rel(&index));
    let block5 = c
        .psql("SELECT DISTINCT (ctid::text::point)[0]::int FROM t WHERE id = 510;")
        .parse::<u64>()
        .unwrap();
    // The page before its newest write, which only WAL will then have.
    let old_copy = block(&heap, block5);
    c.psql("UPDATE t SET v = v || '?' WHERE id BETWEEN 505 AND 510;");
    checkpoint_wal_away(&c, 4);
    let expected = c.psql(ROWS);
    c.stop();
    assert!(c.data.join("pg_wal/00000002.history").is_file());

    let data = c.data.to_str().unwrap().to_string();
    let base_s = base.to_str().unwrap().to_string();
    let pg_wal = c.data.join("pg_wal").display().to_string();
    let sources = [
        "--data",
        &data,
        "--base",
        &base_s,
        "--wal",
        &pg_wal,
        "--archive",
        &arch,
    ];
    // Undamaged: nothing to report.
    let out = walredo(&[&["check"][..], &sources].concat());
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(", 0 damaged"));
    // Without the archive the WAL since the base cannot be read.
    let out = walredo(&["check", "--data", &data, "--base", &base_s]);
    assert_eq!(out.status.code(), Some(2));
    // A page as of an LSN before the base: refused, not the base's newer copy.
    let block5_s = block5.to_string();
    let out = walredo(&[
        "page",
        "--base",
        &base_s,
        "--wal",
        &pg_wal,
        "--archive",
        &arch,
        "--rel",
        &heap_rel,
        "--block",
        &block5_s,
        "--lsn",
        "0/100",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give a base taken before"));
    // The rows as they were early on, before the switch, from the archive.
    let page = tmp.path().join("page");
    let out = walredo(&[
        "page",
        "--base",
        &base_s,
        "--wal",
        &pg_wal,
        "--archive",
        &arch,
        "--rel",
        &heap_rel,
        "--block",
        &block5_s,
        "--lsn",
        &early,
        "--out",
        page.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let bytes = fs::read(&page).unwrap();
    assert!(bytes.windows(8).any(|w| w == b"row 510!"));
    assert!(!bytes.windows(9).any(|w| w == b"row 510!?"));
    // The same on timeline 1, named; a timeline that is not there: an error.
    let on_tli1 = tmp.path().join("page-tli1");
    let page_on = |timeline: &str| {
        walredo(&[
            "page",
            "--base",
            &base_s,
            "--wal",
            &pg_wal,
            "--archive",
            &arch,
            "--rel",
            &heap_rel,
            "--block",
            &block5_s,
            "--lsn",
            &early,
            "--timeline",
            timeline,
            "--out",
            on_tli1.to_str().unwrap(),
        ])
    };
    let out = page_on("1");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(fs::read(&on_tli1).unwrap(), bytes);
    let out = page_on("3");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timeline 3"));

    damage_block(&heap, 0);
    damage_block(&index, 1);
    put_block(&heap, block5, &old_copy);

    let out = walredo(&[&["check"][..], &sources].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains(&format!(
        "damaged: {heap_rel} main block 0: different: it fails PostgreSQL's checks"
    )));
    assert!(text.contains(&format!(
        "damaged: {heap_rel} main block {block5}: behind its WAL"
    )));
    assert!(text.contains(&format!(
        "damaged: {index_rel} main block 1: different: it fails PostgreSQL's checks"
    )));
    assert!(text.contains(", 3 damaged"), "{text}");

    // A running cluster is refused.
    c.start();
    let out = walredo(&[&["repair", "--all-damaged"][..], &sources].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("running"));
    c.stop();

    let out = walredo(&[&["repair", "--all-damaged"][..], &sources].concat());
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("repaired: 3 pages"));
    let saved = saved_pages_dir(&c.data);
    assert_eq!(fs::read_dir(&saved).unwrap().count(), 3);
    // The saved pages hold rows: the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for f in fs::read_dir(&saved).unwrap() {
        let mode = f.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = walredo(&[&["check"][..], &sources].concat());
    assert_eq!(out.status.code(), Some(0));

    c.start();
    assert_eq!(c.psql(ROWS), expected);
    assert_eq!(c.psql("SELECT count(*) FROM verify_heapam('t');"), "0");
    c.psql("SELECT bt_index_check('t_pkey', true);");
    assert_eq!(
        c.psql("SELECT v FROM t WHERE id = 510;"),
        "row 510!?",
        "the lost write is back"
    );
    c.stop();
    fs::remove_dir_all(&saved).unwrap();
}
