//! walredo_inspect in real PostgreSQL backends (15, or WALREDO_PG_VERSION), for blocks that stop
//! existing: a VACUUM that truncates a table (main fork and visibility map),
//! a dropped table, a dropped database, a database made by copying files
//! (CREATE DATABASE ... STRATEGY FILE_COPY). At LSNs before, between and
//! after, `page_at_lsn` must give the page PostgreSQL's archive recovery to
//! that LSN has, and where recovery has no such block, the error that says
//! the block did not exist then (never an older version of the page).

use std::fs;

use walredo_testkit::harness::*;
use walredo_testkit::install::*;

/// A relation file the test follows: (name, database oid, relfilenode, fork).
#[derive(Clone)]
struct RelFile {
    name: String,
    db: u32,
    node: u32,
    fork: &'static str,
}

impl RelFile {
    fn path(&self, data: &std::path::Path) -> std::path::PathBuf {
        let suffix = match self.fork {
            "main" => "",
            "vm" => "_vm",
            _ => unreachable!(),
        };
        data.join(format!("base/{}/{}{suffix}", self.db, self.node))
    }
}

/// A page to ask for: (index into the files, block, LSN, step name, what
/// recovery has: its page, or None for a block gone since an earlier LSN).
type Case<'a> = (usize, usize, &'a str, &'a str, Option<Vec<u8>>);

#[test]
fn truncated_and_dropped_blocks() {
    let _serial = serial();
    let install = PrivateInstall::new("lifetime");
    let dir = TempDir::new("inspect-lifetime");
    let rec_sockets = TempDir::new("inspect-lifetime-rec");
    let mut cluster = install.cluster(dir.path(), &["--data-checksums"], WAL_KEEPING_SETTINGS);
    cluster.start();
    cluster.stop();
    let base = dir.path().join("base");
    copy_tree(&cluster.data, &base);
    cluster.start();
    cluster.psql("CHECKPOINT; CREATE EXTENSION walredo_inspect;");
    let lsn = |c: &walredo_testkit::cluster::Cluster| c.psql("SELECT pg_current_wal_insert_lsn();");
    let node = |c: &walredo_testkit::cluster::Cluster, rel: &str| -> u32 {
        c.psql(&format!("SELECT pg_relation_filenode('{rel}');"))
            .parse()
            .unwrap()
    };
    let db: u32 = cluster
        .psql("SELECT oid FROM pg_database WHERE datname = 'postgres';")
        .parse()
        .unwrap();

    // tr: 6 blocks, then VACUUM truncates it to 2, then new rows make block
    // 2 (and 3) again. tz: truncated to nothing, visibility map included.
    // gone: dropped.
    cluster.psql(
        "CREATE TABLE tr (id int, pad text);
         INSERT INTO tr SELECT g, repeat('x', 500) FROM generate_series(1, 80) g;
         CREATE TABLE tz (id int, pad text);
         INSERT INTO tz SELECT g, repeat('z', 500) FROM generate_series(1, 30) g;
         VACUUM tz;
         CREATE TABLE gone (id int);
         INSERT INTO gone SELECT generate_series(1, 100);",
    );
    let (tr, tz, gone) = (
        node(&cluster, "tr"),
        node(&cluster, "tz"),
        node(&cluster, "gone"),
    );
    // Each step in segments of its own, so that lookups meet the removals
    // through the segment summaries too.
    let switch = |c: &walredo_testkit::cluster::Cluster| c.psql("SELECT pg_switch_wal();");
    switch(&cluster);
    let full = lsn(&cluster);
    assert_eq!(
        cluster.psql("SELECT pg_relation_size('tr') / 8192;"),
        "6",
        "tr's size before the truncation"
    );
    cluster.psql(
        "DELETE FROM tr WHERE (ctid::text::point)[0] >= 2;
         VACUUM tr;
         DELETE FROM tz; VACUUM tz;",
    );
    // The drop alone in its segment: no other record of gone's there.
    switch(&cluster);
    cluster.psql("DROP TABLE gone;");
    switch(&cluster);
    let truncated = lsn(&cluster);
    assert_eq!(cluster.psql("SELECT pg_relation_size('tr') / 8192;"), "2");
    assert_eq!(cluster.psql("SELECT pg_relation_size('tz') / 8192;"), "0");
    cluster.psql("INSERT INTO tr SELECT g, repeat('y', 500) FROM generate_series(81, 100) g;");
    switch(&cluster);
    let again = lsn(&cluster);
    assert_eq!(cluster.psql("SELECT pg_relation_size('tr') / 8192;"), "4");

    // other: a database with a table, copied by FILE_COPY, then dropped.
    cluster.psql("CREATE DATABASE other;");
    let other: u32 = cluster
        .psql("SELECT oid FROM pg_database WHERE datname = 'other';")
        .parse()
        .unwrap();
    let mut o = Session::open_db(&cluster, "other", "postgres");
    o.ok("CREATE TABLE t2 (id int, v text); INSERT INTO t2 SELECT g, 'v' || g FROM generate_series(1, 50) g; CHECKPOINT;");
    let t2: u32 = o.ok("SELECT pg_relation_filenode('t2');").parse().unwrap();
    o.close();
    let db_full = lsn(&cluster);
    // 14 has only the file copy (and no STRATEGY).
    if walredo_testkit::install::pg_version() == 14 {
        cluster.psql("CREATE DATABASE copied TEMPLATE other;");
    } else {
        cluster.psql("CREATE DATABASE copied TEMPLATE other STRATEGY FILE_COPY;");
    }
    let copied: u32 = cluster
        .psql("SELECT oid FROM pg_database WHERE datname = 'copied';")
        .parse()
        .unwrap();
    let after_copy = lsn(&cluster);
    cluster.psql("DROP DATABASE other;");
    let db_dropped = lsn(&cluster);
    cluster.psql("CHECKPOINT;");
    let wal = dir.path().join("wal");
    copy_tree(&cluster.data.join("pg_wal"), &wal);

    let files = [
        RelFile {
            name: "tr".into(),
            db,
            node: tr,
            fork: "main",
        },
        RelFile {
            name: "tr".into(),
            db,
            node: tr,
            fork: "vm",
        },
        RelFile {
            name: "tz".into(),
            db,
            node: tz,
            fork: "main",
        },
        RelFile {
            name: "tz".into(),
            db,
            node: tz,
            fork: "vm",
        },
        RelFile {
            name: "gone".into(),
            db,
            node: gone,
            fork: "main",
        },
        RelFile {
            name: "t2".into(),
            db: other,
            node: t2,
            fork: "main",
        },
    ];
    let lsns = [
        ("full", &full),
        ("truncated", &truncated),
        ("again", &again),
        ("db_full", &db_full),
        ("db_dropped", &db_dropped),
    ];
    let mut s = Session::open(&cluster);
    s.ok("\\set VERBOSITY verbose");
    let page_at = |s: &mut Session, f: &RelFile, blk: usize, at: &str| {
        s.query(&format!(
            "SELECT encode(page_at_lsn(1663, {}, {}, {blk}, '{at}', '{}'), 'hex');",
            f.db, f.node, f.fork
        ))
    };
    // What recovery to each LSN has: (file, block, LSN, step, its page, or
    // None for a block it lacks that existed at an earlier LSN of the list).
    let mut existed = std::collections::BTreeSet::new();
    let mut cases: Vec<Case> = Vec::new();
    for (step, at) in lsns {
        let expected = dir.path().join(format!("expected-{step}"));
        copy_tree(&base, &expected);
        archive_recover(&expected, &wal, rec_sockets.path(), at);
        for (i, f) in files.iter().enumerate() {
            let blocks = fs::read(f.path(&expected)).unwrap_or_default();
            for blk in 0..7 {
                match blocks.get(blk * 8192..(blk + 1) * 8192) {
                    Some(want) => {
                        existed.insert((i, blk));
                        cases.push((i, blk, at.as_str(), step, Some(want.to_vec())));
                    }
                    None if existed.contains(&(i, blk)) => cases.push((i, blk, at, step, None)),
                    None => {}
                }
            }
        }
        fs::remove_dir_all(&expected).unwrap();
    }
    // Newest LSN first in this session (each lookup reads segments newest
    // first, leaving summaries), then oldest first in a session whose
    // page_history read every segment whole.
    let judge = |s: &mut Session,
                 order: &mut dyn Iterator<Item = &(usize, usize, &str, &str, Option<Vec<u8>>)>,
                 pass: &str| {
        let (mut compared, mut absent) = (0, 0);
        let mut failures = Vec::new();
        for (i, blk, at, step, want) in order {
            let f = &files[*i];
            let r = page_at(s, f, *blk, at);
            let what = format!("{} {} blk {blk} at {at} ({step}, {pass})", f.name, f.fork);
            match want {
                Some(want) if !r.ok() => {
                    failures.push(format!("{what}: recovery has it, we: {}", r.err))
                }
                Some(want) if hex_decode(&r.out) != *want => {
                    failures.push(format!("{what}: differs from recovery's"))
                }
                Some(_) => compared += 1,
                None if r.ok() => failures.push(format!(
                    "{what}: recovery has no such block, we returned a page"
                )),
                None if !r.err.contains("did not exist") => {
                    failures.push(format!("{what}: not the absence error: {}", r.err))
                }
                None => absent += 1,
            }
        }
        println!("lifetime ({pass}): {compared} pages identical to recovery's, {absent} absences");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(
            compared >= 15 && absent >= 8,
            "{compared} pages, {absent} absences"
        );
    };
    judge(&mut s, &mut cases.iter().rev(), "newest first");
    let mut warm = Session::open(&cluster);
    warm.ok("SELECT count(*) FROM page_history('tr', 0);");
    judge(&mut warm, &mut cases.iter(), "oldest first, warm");
    warm.close();

    // The absence: its own SQLSTATE, naming the record that removed it.
    let r = page_at(&mut s, &files[0], 2, &truncated);
    println!("lifetime: {}", r.err.trim());
    assert!(r.err.contains("ERROR:  58P01:"), "{}", r.err);
    assert!(r.err.contains("Storage/TRUNCATE"), "{}", r.err);
    let r = page_at(&mut s, &files[4], 0, &truncated);
    assert!(r.err.contains("Transaction/COMMIT"), "{}", r.err);
    let r = page_at(&mut s, &files[5], 0, &db_dropped);
    assert!(r.err.contains("Database/DROP"), "{}", r.err);
    // A copied database's files are not in WAL: said so.
    let r = s.query(&format!(
        "SELECT page_at_lsn(1663, {copied}, {t2}, 0, '{after_copy}');"
    ));
    println!("lifetime: {}", r.err.trim());
    assert!(!r.ok() && r.err.contains("FILE_COPY"), "{}", r.err);

    // page_history lists the truncation among the block's records.
    let h = s.ok("SELECT rmgr || '/' || record_type FROM page_history('tr', 2);");
    println!("lifetime: history of tr block 2: {}", h.replace('\n', ", "));
    assert!(h.lines().any(|l| l == "Storage/TRUNCATE"), "{h}");
    let h = s.ok("SELECT rmgr || '/' || record_type FROM page_history('tr', 0, 'vm');");
    assert!(h.lines().any(|l| l == "Storage/TRUNCATE"), "{h}");
    s.close();
    cluster.stop();
    assert_no_leftovers();
}
