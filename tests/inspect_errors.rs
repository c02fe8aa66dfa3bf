//! walredo_inspect's errors that used to mislead, and its permission
//! policy, in real PostgreSQL 15 backends (a throw-away cluster from a
//! private copy of the installation, as tests/inspect.rs).

use walredo_testkit::harness::*;
use walredo_testkit::install::*;

fn err(s: &mut Session, sql: &str, want: &[&str], not: &[&str]) -> String {
    let r = s.query(sql);
    assert!(!r.ok(), "{sql} should fail, gave {}", r.out);
    for w in want {
        assert!(r.err.contains(w), "{sql}: expected {w:?} in:\n{}", r.err);
    }
    for n in not {
        assert!(
            !r.err.contains(n),
            "{sql}: did not expect {n:?} in:\n{}",
            r.err
        );
    }
    println!("errors: {sql}\n  {}", r.err.trim().replace('\n', "\n  "));
    r.err
}

#[test]
fn errors_say_what_happened() {
    let _serial = serial();
    let install = PrivateInstall::new("errors2");
    let dir = TempDir::new("inspect-errors2");
    let mut cluster = install.cluster(dir.path(), &[], WAL_KEEPING_SETTINGS);
    cluster.start();
    cluster.psql(
        "CREATE EXTENSION walredo_inspect;
         CREATE TABLE vf (id int, v text);
         INSERT INTO vf SELECT g, 'v' || g FROM generate_series(1, 100) g;
         CREATE UNLOGGED TABLE u (id int PRIMARY KEY);
         INSERT INTO u VALUES (1);
         CREATE TABLE t (id int);
         INSERT INTO t SELECT generate_series(1, 1000);
         VACUUM t;
         CHECKPOINT;
         CREATE ROLE someone;",
    );
    let before = cluster.psql("SELECT pg_current_wal_insert_lsn();");
    cluster.psql("VACUUM FULL vf;");
    let mut s = Session::open(&cluster);
    s.ok("\\set VERBOSITY verbose");
    let flush = "pg_current_wal_flush_lsn()";

    // A relation rewritten since: its current file did not hold the page
    // at that LSN. The hint is the node form, not an archive.
    err(
        &mut s,
        &format!("SELECT page_at_lsn('vf', 0, '{before}');"),
        &["page_at_lsn(spcnode, dbnode, relnode", "rewritten"],
        &["walredo_inspect.archive_dir"],
    );
    // The free-space map is not WAL-logged: said so, no archive hint.
    err(
        &mut s,
        &format!("SELECT page_at_lsn('t', 0, {flush}, 'fsm');"),
        &["not WAL-logged"],
        &["walredo_inspect.archive_dir", "wal_keep_size"],
    );
    // spcnode 0 with database 0: the shared catalogs' tablespace (1664),
    // as for pg_authid (1260).
    let blk = s.ok("SELECT (ctid::text::point)[0] FROM pg_authid WHERE rolname = 'someone';");
    let shared = s.ok(&format!(
        "SELECT md5(page_at_lsn(0, 0, 1260, {blk}, {flush}));"
    ));
    let explicit = s.ok(&format!(
        "SELECT md5(page_at_lsn(1664, 0, 1260, {blk}, {flush}));"
    ));
    assert_eq!(shared, explicit, "spcnode 0 for a shared catalog");
    // spcnode 0 with another database: that database's default tablespace;
    // with one that does not exist: an error that says so.
    let tdb: String = s.ok("SELECT dattablespace FROM pg_database WHERE datname = 'template1';");
    assert_eq!(tdb, "1663");
    err(
        &mut s,
        &format!("SELECT page_at_lsn(0, 4000000000, 16384, 0, {flush});"),
        &["database 4000000000 does not exist", "spcnode"],
        &[],
    );
    // The highest valid block number is a block number (InvalidBlockNumber
    // is 0xFFFFFFFF): asked for, not refused.
    let e = err(
        &mut s,
        &format!("SELECT page_at_lsn(1663, 5, 16384, 4294967294, {flush});"),
        &[],
        &["invalid block number"],
    );
    assert!(!e.contains("22023"), "{e}");
    err(
        &mut s,
        &format!("SELECT page_at_lsn(1663, 5, 16384, 4294967295, {flush});"),
        &["invalid block number 4294967295"],
        &[],
    );
    // An unlogged relation's init fork is WAL-logged (a heap's is empty, its
    // index's holds the metapage): both forms give it.
    let node = s.ok(&format!(
        "SELECT md5(page_at_lsn(0, (SELECT oid FROM pg_database WHERE datname = current_database()), \
         pg_relation_filenode('u_pkey'), 0, {flush}, 'init'));"
    ));
    let rel = s.ok(&format!(
        "SELECT md5(page_at_lsn('u_pkey', 0, {flush}, 'init'));"
    ));
    assert_eq!(node, rel, "the init fork of an unlogged index");
    let n = s.ok("SELECT count(*) FROM page_history('u_pkey', 0, 'init');");
    assert_ne!(n, "0");
    err(
        &mut s,
        &format!("SELECT page_at_lsn('u', 0, {flush});"),
        &["unlogged"],
        &[],
    );
    s.close();

    // A deadline too short to start a wal-redo process: a timeout, not a
    // failure to start one (a new backend: a new pool, no process yet).
    let mut s = Session::open(&cluster);
    s.ok("\\set VERBOSITY verbose");
    s.ok("SET walredo_inspect.timeout = 1;");
    err(
        &mut s,
        &format!("SELECT page_at_lsn('t', 1, {flush});"),
        &["WALREDO_TIMEOUT", "timed out"],
        &["no process from the template", "WALREDO_SPAWN_FAILED"],
    );
    s.close();
    cluster.stop();
    assert_no_leftovers();
}

/// The README's policy: members of pg_read_server_files get any page the
/// WAL rebuilds (another database's, a shared catalog's), which PostgreSQL
/// does not otherwise give them: pg_read_binary_file is denied by default.
#[test]
fn read_server_files_policy() {
    let _serial = serial();
    let install = PrivateInstall::new("policy");
    let dir = TempDir::new("inspect-policy");
    let mut cluster = install.cluster(dir.path(), &[], WAL_KEEPING_SETTINGS);
    cluster.start();
    cluster.psql(
        "CREATE EXTENSION walredo_inspect; CREATE DATABASE other;
         CREATE ROLE reader LOGIN; GRANT pg_read_server_files TO reader;
         CHECKPOINT; CREATE ROLE someone;",
    );
    let blk =
        cluster.psql("SELECT (ctid::text::point)[0] FROM pg_authid WHERE rolname = 'someone';");
    let mut o = Session::open_db(&cluster, "other", "postgres");
    o.ok("CREATE TABLE secret (v text); INSERT INTO secret VALUES ('hidden');");
    let node = o.ok("SELECT pg_relation_filenode('secret');");
    let db = o.ok("SELECT oid FROM pg_database WHERE datname = 'other';");
    o.close();
    let mut r = Session::open_db(&cluster, "postgres", "reader");
    err(
        &mut r,
        "SELECT length(pg_read_binary_file('global/pg_control'));",
        &["permission denied for function pg_read_binary_file"],
        &[],
    );
    err(
        &mut r,
        "SELECT length(pg_read_file('postgresql.conf'));",
        &["permission denied for function pg_read_file"],
        &[],
    );
    // Yet through page_at_lsn: another database's rows, a shared catalog's page.
    let page = r.ok(&format!(
        "SELECT encode(page_at_lsn(1663, {db}, {node}, 0, pg_current_wal_flush_lsn()), 'escape') LIKE '%hidden%';"
    ));
    assert_eq!(page, "t", "another database's row");
    let authid = r.ok(&format!(
        "SELECT encode(page_at_lsn(1664, 0, 1260, {blk}, pg_current_wal_flush_lsn()), 'escape') LIKE '%someone%';"
    ));
    assert_eq!(authid, "t", "pg_authid's page");
    r.close();
    cluster.stop();
    assert_no_leftovers();
}
