//! walredo_inspect's WAL path in real PostgreSQL backends (15, or
//! WALREDO_PG_VERSION), each through SQL as a user meets it:
//!
//! - `spans_boundaries_and_damage`: a page must not depend on the session's
//!   earlier calls (a record with an image spanning a segment boundary); the
//!   flush LSN right after `pg_switch_wal()`; a damaged record below the
//!   flush LSN is `ERRCODE_DATA_CORRUPTED` naming its LSN.
//! - `promoted_standby`: on a promoted standby, pages before the switch and
//!   a history across it, against PostgreSQL's recovery and the old primary.

use std::fs;
use std::time::{Duration, Instant};

use walredo::wal::{format_lsn, parse_lsn, WalReader};
use walredo_testkit::harness::*;
use walredo_testkit::install::*;

const SEG: u64 = 1024 * 1024;

fn lsn(s: &str) -> u64 {
    parse_lsn(s.trim()).unwrap_or_else(|| panic!("not an LSN: {s:?}"))
}

/// Tuples of x's page at `at` whose xmax only locks them.
const LOCKED: &str = "SELECT count(*) FROM heap_page_items(page_at_lsn('x', 0, '{at}'))
                      WHERE t_infomask & 128 <> 0;";

fn locked(s: &mut Session, at: u64) -> String {
    s.ok(&LOCKED.replace("{at}", &format_lsn(at)))
}

#[test]
fn spans_boundaries_and_damage() {
    let _serial = serial();
    let install = PrivateInstall::new("inspect-wal");
    let dir = TempDir::new("inspect-wal");
    let mut c = install.cluster(dir.path(), &["--wal-segsize=1"], WAL_KEEPING_SETTINGS);
    c.start();
    // A page must not depend on the session's earlier calls: 7 rows of 1,000 bytes in one segment;
    // three FOR UPDATE (a LOCK with an image, two plain) in the next; a
    // last LOCK with an image across the end of that segment.
    c.psql(
        "CREATE EXTENSION walredo_inspect; CREATE EXTENSION pageinspect;
         CREATE TABLE x (id int, v text) WITH (autovacuum_enabled = off);
         INSERT INTO x SELECT g, repeat('a', 1000) FROM generate_series(1, 7) g;
         SELECT pg_switch_wal();
         CHECKPOINT;",
    );
    let first_seg = lsn(&c.psql("SELECT pg_current_wal_insert_lsn();")) / SEG;
    for id in 1..=3 {
        c.psql(&format!("SELECT id FROM x WHERE id = {id} FOR UPDATE;"));
    }
    c.psql("CHECKPOINT;");
    pad_to_segment_end(&c, SEG, 2500);
    let before = lsn(&c.psql("SELECT pg_current_wal_insert_lsn();"));
    assert_eq!(
        before / SEG,
        first_seg,
        "the four LOCKs must start in one segment"
    );
    c.psql("SELECT id FROM x WHERE id = 4 FOR UPDATE;");
    let boundary = (before / SEG + 1) * SEG;
    let at = boundary + 300;
    let after = lsn(&c.psql("SELECT pg_current_wal_insert_lsn();"));
    assert!(
        after > at + 4096,
        "the LOCK should end well after {}",
        format_lsn(at)
    );

    let mut s = Session::open(&c);
    let cold = s.ok(&format!(
        "SELECT encode(page_at_lsn('x', 0, '{}'), 'hex');",
        format_lsn(at)
    ));
    assert_eq!(
        locked(&mut s, at),
        "3",
        "a fresh session at {}",
        format_lsn(at)
    );
    s.ok("SELECT length(page_at_lsn('x', 0, pg_current_wal_flush_lsn()));");
    s.ok("SELECT count(*) FROM page_history('x', 0);");
    let warm = s.ok(&format!(
        "SELECT encode(page_at_lsn('x', 0, '{}'), 'hex');",
        format_lsn(at)
    ));
    let n = locked(&mut s, at);
    assert!(
        warm == cold && n == "3",
        "the same call after page_at_lsn at the flush LSN and page_history: {n} locked tuples, \
         the page {} the fresh session's",
        if warm == cold {
            "equals"
        } else {
            "differs from"
        }
    );
    // Every 8th LSN across the boundary, in this warm session, equals a
    // fresh session's answer.
    let mut fresh = Session::open(&c);
    let q = |l: u64| format!("SELECT md5(page_at_lsn('x', 0, '{}'));", format_lsn(l));
    let mut lsns: Vec<u64> = (boundary - 64..boundary + 512).step_by(8).collect();
    lsns.extend((before..after).step_by(256));
    for &l in &lsns {
        let (w, f) = (s.query(&q(l)), fresh.query(&q(l)));
        assert_eq!(
            (w.out.as_str(), w.ok()),
            (f.out.as_str(), f.ok()),
            "at {}: warm {w:?}, fresh {f:?}",
            format_lsn(l)
        );
        fresh.close();
        fresh = Session::open(&c);
    }
    fresh.close();
    println!(
        "span: {} LSNs around {}: the warm session's pages are a fresh one's",
        lsns.len(),
        format_lsn(boundary)
    );

    // The flush LSN right after pg_switch_wal() is readable.
    s.ok("SELECT pg_switch_wal();");
    let flush = lsn(&s.ok("SELECT pg_current_wal_flush_lsn();"));
    assert_eq!(flush % SEG, 0);
    let n = s.ok(
        "SELECT count(*) FROM heap_page_items(page_at_lsn('x', 0, pg_current_wal_flush_lsn()))
                  WHERE t_infomask & 128 <> 0;",
    );
    assert_eq!(
        n,
        "4",
        "at the flush LSN {} after pg_switch_wal()",
        format_lsn(flush)
    );
    println!(
        "boundary: page_at_lsn at the flush LSN {} after pg_switch_wal(): 4 locked tuples",
        format_lsn(flush)
    );
    s.close();

    // A record damaged below the flush LSN, in the newest segment: an error.
    c.psql("CREATE TABLE y (id int, v text);");
    let y_from = lsn(&c.psql("SELECT pg_current_wal_insert_lsn();"));
    c.psql("INSERT INTO y SELECT g, repeat('b', 100) FROM generate_series(1, 200) g;");
    let y_to = lsn(&c.psql("SELECT pg_current_wal_insert_lsn();"));
    c.psql("SELECT id FROM x WHERE id = 5 FOR UPDATE; SELECT pg_switch_wal();");
    let wal = c.data.join("pg_wal");
    let bad = WalReader::open(&wal, Some(y_from))
        .unwrap()
        .map(Result::unwrap)
        .map(|r| r.start_lsn)
        .filter(|&l| l < y_to && l % 8192 + 64 < 8192)
        .nth(50)
        .expect("a record of y's");
    let file = wal.join(walredo::wal::segment_file_name(1, bad / SEG, SEG));
    let mut bytes = fs::read(&file).unwrap();
    bytes[(bad % SEG) as usize + 40] ^= 0x55;
    fs::write(&file, bytes).unwrap();
    let mut s = Session::open(&c);
    s.ok("\\set VERBOSITY verbose");
    for sql in [
        "SELECT count(*) FROM page_history('x', 0);".to_string(),
        "SELECT length(page_at_lsn('x', 0, pg_current_wal_flush_lsn()));".to_string(),
    ] {
        let r = s.query(&sql);
        assert!(
            !r.ok() && r.err.contains("XX001") && r.err.contains(&format_lsn(bad)),
            "{sql}: expected ERRCODE_DATA_CORRUPTED naming {}, got {r:?}",
            format_lsn(bad)
        );
        println!("damaged: {sql}\n  {}", r.err.trim().replace('\n', "\n  "));
    }
    // Before the damage, pages are still there.
    assert_eq!(locked(&mut s, y_from), "4");
    s.close();
    c.stop();
    assert_no_leftovers();
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// WAL across a timeline switch: a standby made with pg_basebackup -R, promoted with pg_promote();
/// its pg_wal still holds timeline 1's segments. page_at_lsn at an LSN two
/// segments before the switch equals PostgreSQL's archive recovery of the
/// base backup to it; page_history across the switch lists what the old
/// primary's (timeline 1) lists before the switch, then timeline 2's.
#[test]
fn promoted_standby() {
    let _serial = serial();
    let install = PrivateInstall::new("inspect-tli");
    let dir = TempDir::new("inspect-tli");
    let sdir = TempDir::new("inspect-tli-standby");
    let mut p = install.cluster(dir.path(), &["--wal-segsize=1"], WAL_KEEPING_SETTINGS);
    p.start();
    p.psql(
        "CREATE EXTENSION walredo_inspect;
         CREATE TABLE x (id int, v text) WITH (autovacuum_enabled = off);
         INSERT INTO x SELECT g, repeat('a', 200) FROM generate_series(1, 100) g;
         CHECKPOINT;",
    );
    let base = dir.path().join("base");
    let mut s = p.start_standby(
        sdir.path(),
        &["--wal-segsize=1"],
        WAL_KEEPING_SETTINGS,
        &base,
    );
    p.psql(
        "UPDATE x SET v = 'one' WHERE id % 3 = 0;
         SELECT pg_switch_wal();
         UPDATE x SET v = 'two' WHERE id % 5 = 0;
         CHECKPOINT;
         UPDATE x SET v = 'three' WHERE id % 7 = 0;",
    );
    let on_tli1 = p.psql("SELECT pg_current_wal_insert_lsn();");
    p.psql(
        "SELECT pg_switch_wal();
         UPDATE x SET v = 'four' WHERE id % 11 = 0;
         SELECT pg_switch_wal();
         UPDATE x SET v = 'four and a half' WHERE id % 2 = 1;",
    );
    let flushed = p.psql("SELECT pg_current_wal_flush_lsn();");
    wait_for("the standby's replay", || {
        s.psql(&format!("SELECT pg_last_wal_replay_lsn() >= '{flushed}';")) == "t"
    });
    // The old primary's history of block 0 up to here is timeline 1's.
    let old_history = p.psql("SELECT start_lsn FROM page_history('x', 0);");
    p.stop();
    s.psql("SELECT pg_promote();");
    s.psql(
        "UPDATE x SET v = 'five' WHERE id % 13 = 0;
         CHECKPOINT;
         UPDATE x SET v = 'six' WHERE id % 2 = 0;",
    );
    let switch_text = fs::read_to_string(s.data.join("pg_wal/00000002.history")).unwrap();
    let switch = lsn(switch_text.split_whitespace().nth(1).unwrap());
    assert!(lsn(&on_tli1) / SEG + 1 < switch / SEG);

    let mut ss = Session::open(&s);
    assert_eq!(
        ss.ok("SELECT timeline_id FROM pg_control_checkpoint();"),
        "2"
    );
    let new_history = ss.ok("SELECT start_lsn FROM page_history('x', 0);");
    // The standby's WAL begins with the base backup's segment.
    let label = fs::read_to_string(base.join("backup_label")).unwrap();
    let backup_start = lsn(label
        .split("START WAL LOCATION: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap());
    let old: Vec<&str> = old_history
        .lines()
        .filter(|l| lsn(l) >= backup_start)
        .collect();
    let new: Vec<&str> = new_history.lines().collect();
    let before_switch: Vec<&str> = new
        .iter()
        .copied()
        .filter(|l| lsn(l) >= backup_start && lsn(l) < switch)
        .collect();
    assert!(
        before_switch == old && old.len() > 5 && new.len() > before_switch.len(),
        "page_history on the promoted standby: {} records ({} before the switch at {}), the old \
         primary's: {}",
        new.len(),
        before_switch.len(),
        format_lsn(switch),
        old.len()
    );
    println!(
        "timeline: page_history across the switch at {}: {} records, the {} before it the old primary's",
        format_lsn(switch),
        new.len(),
        old.len()
    );
    // Pages before the switch: PostgreSQL's recovery of the base backup.
    let db: u32 = s
        .psql("SELECT oid FROM pg_database WHERE datname = 'postgres';")
        .parse()
        .unwrap();
    let relnode: u32 = s.psql("SELECT pg_relation_filenode('x');").parse().unwrap();
    let wal_copy = dir.path().join("wal");
    copy_tree(&s.data.join("pg_wal"), &wal_copy);
    let expected = dir.path().join("expected");
    copy_tree(&base, &expected);
    archive_recover(&expected, &wal_copy, dir.path(), &on_tli1);
    let file = fs::read(expected.join(format!("base/{db}/{relnode}"))).unwrap();
    for blk in 0..file.len() / 8192 {
        let got = hex_decode(&ss.ok(&format!(
            "SELECT encode(page_at_lsn('x', {blk}, '{on_tli1}'), 'hex');"
        )));
        assert!(
            got[..] == file[blk * 8192..(blk + 1) * 8192],
            "block {blk} at {on_tli1} (timeline 1) differs from PostgreSQL's recovery"
        );
    }
    println!(
        "timeline: {} pages at {on_tli1}, two segments before the switch, equal PostgreSQL's recovery",
        file.len() / 8192
    );
    ss.close();
    s.stop();
    assert_no_leftovers();
}
