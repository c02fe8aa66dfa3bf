//! repair_page end to end, on a cluster whose history lives in an archive:
//! data checksums on, `archive_command` gzip-compressing segments, a base
//! backup, checkpoints until `pg_wal` no longer holds the early segments, and
//! a promotion (a timeline switch). Damaged heap and index blocks are
//! rebuilt from the archive (through `walredo_inspect.restore_command`) and
//! the base backup, installed, and reach a standby of the repaired server.

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use walredo::wal::restore::RestoreCommand;
use walredo::wal::source::WalSource;
use walredo::wal::{parse_lsn, parse_segment_file_name};
use walredo_testkit::cluster::{
    checkpoint_wal_away, damage_block, gunzip_restore_command, gzip_archiving_settings,
    wait_archived,
};
use walredo_testkit::harness::*;
use walredo_testkit::install::*;

const SEG: u64 = 1024 * 1024;

fn lsn(s: &str) -> u64 {
    parse_lsn(s.trim()).unwrap_or_else(|| panic!("not an LSN: {s:?}"))
}

fn wait_for(what: &str, done: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(120), done);
}

/// Every row of t, in one value: what the table held.
const ROWS: &str = "SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM t;";
/// The same through the index only.
const ROWS_BY_INDEX: &str = "SET enable_seqscan = off; SET enable_bitmapscan = off;
     SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM t WHERE id BETWEEN 0 AND 2000;";

#[test]
fn repair_from_archive_across_a_timeline_switch() {
    let _serial = serial();
    let install = PrivateInstall::new("repair");
    let pdir = TempDir::new("repair-primary");
    let sdir = TempDir::new("repair-standby");
    let s2dir = TempDir::new("repair-standby2");
    let archive = TempDir::new("repair-archive");
    let restore = gunzip_restore_command(archive.path());
    let initdb = ["--wal-segsize=1", "--data-checksums"];
    let mut settings = gzip_archiving_settings(archive.path());
    settings.push(format!("restore_command = '{restore}'"));
    settings
        .extend(["autovacuum = off", "fsync = off", "checkpoint_timeout = 1h"].map(String::from));
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let mut p = install.cluster(pdir.path(), &initdb, &settings);
    p.start();
    p.psql(
        "CREATE EXTENSION walredo_inspect; CREATE EXTENSION pageinspect; CREATE EXTENSION amcheck;
         CREATE TABLE t (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off, fillfactor = 50);
         INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 2000) g;
         VACUUM (FREEZE) t;
         CHECKPOINT;",
    );
    // The base backup; the standby streams from the primary.
    let base = pdir.path().join("base");
    let mut s = p.start_standby(sdir.path(), &initdb, &settings, &base);

    // The row as it was, then a bad UPDATE: its WAL ends up only in the archive.
    p.psql("UPDATE t SET v = 'before the bad update' WHERE id = 1;");
    let before_bad = lsn(&p.psql("SELECT pg_current_wal_flush_lsn();"));
    // HOT: both versions stay in heap block 0; a new row goes into leaf 1.
    p.psql("UPDATE t SET v = 'bad' WHERE id = 1; INSERT INTO t VALUES (0, 'zero');");
    checkpoint_wal_away(&p, 4);
    p.psql("UPDATE t SET v = v || '+' WHERE id > 1500; SELECT pg_switch_wal();");
    let flushed = p.psql("SELECT pg_current_wal_flush_lsn();");
    wait_for("the standby to replay the primary's WAL", || {
        s.psql(&format!(
            "SELECT pg_last_wal_replay_lsn() >= '{}';",
            flushed.trim()
        )) == "t"
    });
    wait_archived(&p);
    p.stop();

    // Promotion: timeline 2; then enough checkpoints that pg_wal forgets.
    s.psql("SELECT pg_promote();");
    wait_for("the promotion", || {
        s.psql("SELECT pg_is_in_recovery();") == "f"
    });
    checkpoint_wal_away(&s, 4);
    let expected = s.psql(ROWS);
    let heap_file = s
        .data
        .join(s.psql("SELECT pg_relation_filepath('t');").trim());
    let index_file = s
        .data
        .join(s.psql("SELECT pg_relation_filepath('t_pkey');").trim());
    // A standby of the promoted server, to receive the repairs.
    let base2 = sdir.path().join("base2");
    let mut s2 = s.start_standby(s2dir.path(), &initdb, &settings, &base2);

    // The LSN before the bad update is before the switch and before the
    // oldest segment the promoted server still has.
    let history = fs::read_to_string(s.data.join("pg_wal/00000002.history")).unwrap();
    let switch = lsn(history.split_whitespace().nth(1).unwrap());
    assert!(before_bad < switch);
    let oldest_kept = fs::read_dir(s.data.join("pg_wal"))
        .unwrap()
        .filter_map(|e| parse_segment_file_name(e.unwrap().file_name().to_str()?, SEG))
        .map(|(_, segno)| segno)
        .min()
        .unwrap();
    assert!(
        before_bad / SEG < oldest_kept,
        "pg_wal still holds segment {} (oldest {oldest_kept})",
        before_bad / SEG
    );

    // Damage while stopped: heap block 0 (last changed by the bad update),
    // heap block 2 (unchanged since the base backup) and index leaf 1 (last
    // changed by the insert), their last changes only in the archive.
    s.stop();
    damage_block(&heap_file, 0);
    damage_block(&heap_file, 2);
    damage_block(&index_file, 1);
    s.start();

    let mut ss = Session::open(&s);
    let r = ss.query(ROWS);
    assert!(!r.ok() && r.err.contains("invalid page in block"), "{r:?}");
    let r = ss.query(ROWS_BY_INDEX);
    assert!(!r.ok() && r.err.contains("invalid page in block"), "{r:?}");

    // Without the archive the WAL does not reach block 0's last image.
    let r = ss.query("SELECT result FROM repair_page('t', 0);");
    assert!(!r.ok() && r.err.contains("restore_command"), "{r:?}");

    ss.ok(&format!(
        "SET walredo_inspect.restore_command = '{restore}';
         SET walredo_inspect.base_backup = '{}';",
        base.display()
    ));
    // The row before the bad update, from the archive, on timeline 1.
    let found = ss.ok(&format!(
        "SELECT count(*) FROM heap_page_items(page_at_lsn('t', 0, '{}'))
         WHERE position(convert_to('before the bad update', 'UTF8') IN t_data) > 0;",
        walredo::wal::format_lsn(before_bad)
    ));
    assert_eq!(found.trim(), "1");

    // The block's history since the base backup, through the archive (in a
    // backend of its own: nothing fetched yet): it reaches the bad UPDATE,
    // before the oldest segment in pg_wal.
    let mut hs = Session::open(&s);
    let history = hs.ok(&format!(
        "SET walredo_inspect.restore_command = '{restore}';
         SET walredo_inspect.base_backup = '{}';
         SELECT start_lsn FROM page_history('t', 0);",
        base.display()
    ));
    drop(hs);
    // Archive directories, in order (an empty one first): the compressed
    // segments are read in place, no command run.
    let empty = TempDir::new("repair-empty-archive");
    let mut hs = Session::open(&s);
    let found = hs.ok(&format!(
        "SET walredo_inspect.archive_dir = '{}, {}';
         SELECT count(*) FROM heap_page_items(page_at_lsn('t', 0, '{}'))
         WHERE position(convert_to('before the bad update', 'UTF8') IN t_data) > 0;",
        empty.path().display(),
        archive.path().display(),
        walredo::wal::format_lsn(before_bad)
    ));
    assert_eq!(found.trim(), "1");
    drop(hs);
    // Without a base backup the history is the readable WAL's: pg_wal's.
    let mut hs = Session::open(&s);
    let readable = hs.ok(&format!(
        "SET walredo_inspect.restore_command = '{restore}';
         SELECT start_lsn FROM page_history('t', 0);"
    ));
    assert!(
        readable.lines().map(lsn).all(|s| s / SEG >= oldest_kept),
        "{readable}"
    );
    drop(hs);
    let starts: Vec<u64> = history.lines().map(lsn).collect();
    let base_start = lsn(fs::read_to_string(base.join("backup_label"))
        .unwrap()
        .split("START WAL LOCATION: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap());
    assert!(starts.iter().all(|&s| s >= base_start), "{history}");
    assert!(
        starts
            .iter()
            .any(|&s| s >= before_bad && s / SEG < oldest_kept),
        "{history}"
    );

    // A dry run reports and changes nothing.
    let report = "SELECT result, old_page_valid, old_checksum_ok, records > 0, from_base_backup";
    let dry = ss.ok(&format!(
        "{report} FROM repair_page('t', 0, dry_run => true);"
    ));
    assert_eq!(dry.trim(), "would repair|f|f|t|f");
    assert!(!ss.query(ROWS).ok());

    let heap0 = ss.ok(&format!("{report} FROM repair_page('t', 0);"));
    assert_eq!(heap0.trim(), "repaired|f|f|t|f");
    let heap2 = ss.ok("SELECT result, records, from_base_backup FROM repair_page('t', 2);");
    assert_eq!(heap2.trim(), "repaired|0|t");
    let leaf = ss.ok(&format!("{report} FROM repair_page('t_pkey', 1);"));
    assert_eq!(leaf.trim(), "repaired|f|f|t|f");
    // An undamaged page is left alone.
    let fine = ss.ok(&format!("{report} FROM repair_page('t', 3);"));
    assert!(fine.starts_with("identical|t|t|"), "{fine}");

    assert_eq!(ss.ok(ROWS), expected);
    assert_eq!(ss.ok(ROWS_BY_INDEX).trim(), expected.trim());
    assert_eq!(ss.ok("SELECT v FROM t WHERE id = 1;").trim(), "bad");
    assert_eq!(
        ss.ok("SELECT count(*) FROM verify_heapam('t');").trim(),
        "0"
    );
    ss.ok("SELECT bt_index_check('t_pkey', true);");
    let new_lsn = ss.ok("SELECT lsn FROM page_header(get_raw_page('t', 0));");

    // The standby got the images.
    let flushed = s.psql("SELECT pg_current_wal_flush_lsn();");
    wait_for("the second standby to replay the repairs", || {
        s2.psql(&format!(
            "SELECT pg_last_wal_replay_lsn() >= '{}';",
            flushed.trim()
        )) == "t"
    });
    assert_eq!(
        s2.psql("SELECT lsn FROM page_header(get_raw_page('t', 0));"),
        new_lsn.trim()
    );
    assert_eq!(s2.psql(ROWS), expected.trim());
    assert_eq!(s2.psql(ROWS_BY_INDEX).trim(), expected.trim());

    // An archive of another cluster with the same segment names is refused.
    let (other_archive, other_control) = other_clusters_archive(&install, before_bad / SEG + 2);
    let r = ss.query(&format!(
        "SET walredo_inspect.restore_command = '{}';
         SELECT length(page_at_lsn('t', 0, '{}'));",
        gunzip_restore_command(other_archive.path()),
        walredo::wal::format_lsn(before_bad)
    ));
    assert!(!r.ok() && r.err.contains("system identifier"), "{r:?}");
    // So is a base backup of another cluster (its pg_control says whose).
    let foreign = TempDir::new("repair-foreign-base");
    fs::create_dir(foreign.path().join("global")).unwrap();
    fs::copy(
        base.join("backup_label"),
        foreign.path().join("backup_label"),
    )
    .unwrap();
    fs::write(foreign.path().join("global/pg_control"), &other_control).unwrap();
    // Readable by the server's user (the test may run as root).
    use std::os::unix::fs::PermissionsExt;
    for f in ["global", "backup_label", "global/pg_control"] {
        let mode = if f == "global" { 0o755 } else { 0o644 };
        fs::set_permissions(foreign.path().join(f), fs::Permissions::from_mode(mode)).unwrap();
    }
    let r = ss.query(&format!(
        "SET walredo_inspect.base_backup = '{}';
         SELECT length(page_at_lsn('t', 0, '{}'));",
        foreign.path().display(),
        walredo::wal::format_lsn(before_bad)
    ));
    assert!(
        !r.ok() && r.err.contains("is a backup of another cluster"),
        "{r:?}"
    );
    let tag = s.main_tag("t", 0);

    // Refusals: a standby, a non-superuser.
    let mut on_standby = Session::open(&s2);
    let r = on_standby.query("SELECT result FROM repair_page('t', 0);");
    assert!(!r.ok() && r.err.contains("during recovery"), "{r:?}");
    ss.ok("CREATE ROLE mallory LOGIN; GRANT pg_read_server_files TO mallory;");
    let mut m = Session::open_db(&s, "postgres", "mallory");
    let r = m.query("SELECT result FROM repair_page('t', 0);");
    assert!(!r.ok() && r.err.contains("permission denied"), "{r:?}");
    drop((m, on_standby, ss));
    s2.stop();
    s.stop();

    // A WAL source with timeline 2's segments only: the restore command
    // fetches the history file too, and the WAL before the switch under
    // timeline 1's names.
    let only_tli2 = TempDir::new("repair-tli2");
    for e in fs::read_dir(s.data.join("pg_wal")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if matches!(parse_segment_file_name(&name, SEG), Some((2, _))) {
            fs::copy(e.path(), only_tli2.path().join(&name)).unwrap();
        }
    }
    let cache = only_tli2.path().join("restored");
    let mut source = WalSource::new(vec![only_tli2.path().to_path_buf()], None);
    let restore = RestoreCommand::new(&restore, &cache, Duration::from_secs(60), 64).unwrap();
    source.set_restore(Some(Arc::new(restore)));
    let plan = source.plan(&tag, before_bad, &mut || false).unwrap();
    assert!(cache.join("00000002.history").is_file());
    assert!(plan.records.last().unwrap().end_lsn <= before_bad);
    assert!(cache
        .join(walredo::wal::segment_file_name(1, before_bad / SEG, SEG))
        .is_file());
}

/// A cluster of its own with 1 MB segments, its WAL written past segment
/// `segments` and archived gzip-compressed: an archive whose segment names
/// are another cluster's; and that cluster's pg_control.
fn other_clusters_archive(install: &PrivateInstall, segments: u64) -> (TempDir, Vec<u8>) {
    let dir = TempDir::new("repair-other");
    let archive = TempDir::new("repair-other-archive");
    let command = format!(
        "archive_command = 'gzip < %p > {}/%f.gz'",
        archive.path().display()
    );
    let mut q = install.cluster(
        dir.path(),
        &["--wal-segsize=1"],
        &["archive_mode = on", &command, "fsync = off"],
    );
    q.start();
    for _ in 0..segments {
        q.psql("CREATE TABLE x (); DROP TABLE x; SELECT pg_switch_wal();");
    }
    wait_archived(&q);
    q.stop();
    let control = fs::read(q.data.join("global/pg_control")).unwrap();
    drop(dir);
    (archive, control)
}
