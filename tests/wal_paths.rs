//! The WAL source at the places where WAL is tricky, against real
//! PostgreSQL WAL (1 MiB segments): a record that spans a segment
//! boundary, an LSN exactly at a segment boundary (after `pg_switch_wal`,
//! with the next file absent, recycled or zero-filled), a damaged record
//! below the caller's end, and a timeline switch.
//!
//! Plans must not depend on what a source learnt from earlier calls: every
//! plan is made by a fresh source and by a source that read everything
//! first, and both must equal the plan a plain scan of every record gives;
//! a few are redone through a pool and compared with PostgreSQL's own
//! archive recovery to the same LSN.

use std::fs;
use std::path::{Path, PathBuf};

use walredo::datadir::read_page;
use walredo::wal::mapped::{MappedWal, RecordAt};
use walredo::wal::source::{SourceError, WalSource};
use walredo::wal::{format_lsn, parse_lsn, WalReader};
use walredo::wal::{pages, record};
use walredo::PageTag;
use walredo_testkit::harness::*;

const SEG: u64 = 1024 * 1024;

fn lsn(c: &Cluster, sql: &str) -> u64 {
    parse_lsn(&c.psql(sql)).unwrap()
}

fn insert_lsn(c: &Cluster) -> u64 {
    lsn(c, "SELECT pg_current_wal_insert_lsn();")
}

/// (start, end, initializes) of every record from `from` on that changes `tag`.
fn uses_of(wal: &Path, from: u64, end: u64, tag: &PageTag) -> Vec<(u64, u64, bool)> {
    let mut out = Vec::new();
    for r in WalReader::open(wal, Some(from)).unwrap() {
        let r = r.unwrap();
        if r.end_lsn > end {
            break;
        }
        let pages =
            pages::record_pages(&record::decode_as(&r.data, record_format()).unwrap()).unwrap();
        if let Some(p) = pages.iter().find(|p| p.tag == *tag) {
            out.push((r.start_lsn, r.end_lsn, p.initializes()));
        }
    }
    out
}

/// The plan a plain scan gives: from the newest initializing record that
/// ends at or before `lsn`, every record of the block that does.
fn reference_plan(uses: &[(u64, u64, bool)], lsn: u64) -> Option<Vec<(u64, u64)>> {
    let upto: Vec<_> = uses.iter().filter(|u| u.1 <= lsn).collect();
    let first = upto.iter().rposition(|u| u.2)?;
    Some(upto[first..].iter().map(|u| (u.0, u.1)).collect())
}

fn plan_of(src: &mut WalSource, tag: &PageTag, lsn: u64) -> Result<Vec<(u64, u64)>, String> {
    src.plan(tag, lsn, &mut || false)
        .map(|p| p.records.iter().map(|r| (r.start_lsn, r.end_lsn)).collect())
        .map_err(|e| e.to_string())
}

fn history_of(src: &mut WalSource, tag: &PageTag, end: u64) -> Result<Vec<u64>, SourceError> {
    let mut h = Vec::new();
    src.history(tag, end, &mut || false, &mut |e| {
        h.push(e.start_lsn);
        true
    })?;
    Ok(h)
}

/// A copy of the segment files of `from` (and `.history` files) in `to`,
/// owned by the user PostgreSQL runs as (its recovery reads them).
fn copy_wal(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let ids = walredo_testkit::cluster::user();
    let own = |p: &Path| {
        if let Some(ids) = &ids {
            std::os::unix::fs::chown(p, Some(ids.uid), Some(ids.gid)).unwrap();
        }
    };
    own(to);
    for e in fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_file() {
            let dest = to.join(e.file_name());
            fs::copy(&p, &dest).unwrap();
            own(&dest);
        }
    }
}

fn segment_path(dir: &Path, tli: u32, segno: u64) -> PathBuf {
    dir.join(walredo::wal::segment_file_name(tli, segno, SEG))
}

/// Every plan of `tag` at the LSNs `lsns`, from a fresh source each time
/// (cold) and from one source that first made a history and a plan at
/// `end` (warm), equals the reference plan; returns how many were compared.
fn cold_and_warm(
    dirs: &[PathBuf],
    tag: &PageTag,
    uses: &[(u64, u64, bool)],
    lsns: &[u64],
    end: u64,
) -> usize {
    let mut warm = WalSource::new(dirs.to_vec(), None);
    history_of(&mut warm, tag, end).unwrap();
    plan_of(&mut warm, tag, end).unwrap();
    let mut failures = Vec::new();
    for &l in lsns {
        let want = reference_plan(uses, l);
        let cold = plan_of(&mut WalSource::new(dirs.to_vec(), None), tag, l);
        let hot = plan_of(&mut warm, tag, l);
        for (what, got) in [("cold", &cold), ("warm", &hot)] {
            if got.as_ref().ok() != want.as_ref() {
                failures.push(format!(
                    "{what} plan at {}: {:?}, expected {:?}",
                    format_lsn(l),
                    got.as_ref()
                        .map(|p| p.iter().map(|r| format_lsn(r.0)).collect::<Vec<_>>()),
                    want.as_ref()
                        .map(|p| p.iter().map(|r| format_lsn(r.0)).collect::<Vec<_>>())
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} plans wrong, first ones:\n{}",
        failures.len(),
        2 * lsns.len(),
        failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    lsns.len()
}

/// A running cluster in a fresh directory `name` with 1 MiB WAL segments
/// (so that a little SQL crosses segment boundaries) that keeps its WAL.
fn small_segment_cluster(name: &str) -> (TempDir, Cluster) {
    let tmp = TempDir::new(name);
    let mut c = Cluster::init(tmp.path(), &["--wal-segsize=1"], WAL_KEEPING_SETTINGS);
    c.start();
    (tmp, c)
}

/// A record with a full-page image of the block that starts in one segment
/// and ends in the next, plans at every LSN around it, cold and warm; the
/// page at an LSN inside that record equals PostgreSQL's recovery to its
/// start.
#[test]
fn record_across_a_segment_boundary() {
    let _test = isolated_test();
    let (tmp, mut c) = small_segment_cluster("walpaths-span");
    let dir = tmp.path();
    c.stop();
    let base = dir.join("base");
    copy_tree(&c.data, &base);
    c.start();
    c.psql(
        "CHECKPOINT;
         CREATE TABLE x (id int, v text) WITH (autovacuum_enabled = off);
         INSERT INTO x SELECT g, repeat('a', 1000) FROM generate_series(1, 7) g;
         SELECT pg_switch_wal();
         CHECKPOINT;",
    );
    let first_seg = insert_lsn(&c) / SEG;
    // A LOCK with an image of the page, then two without.
    for id in 1..=3 {
        c.psql(&format!("SELECT id FROM x WHERE id = {id} FOR UPDATE;"));
    }
    c.psql("CHECKPOINT;");
    pad_to_segment_end(&c, SEG, 2500);
    let lock_start = insert_lsn(&c);
    c.psql("SELECT id FROM x WHERE id = 4 FOR UPDATE;");
    c.psql("SELECT pg_logical_emit_message(false, 'after', 'x'); CHECKPOINT;");
    let end = lsn(&c, "SELECT pg_current_wal_flush_lsn();");
    let tag = c.main_tag("x", 0);
    c.stop();
    let wal = c.data.join("pg_wal");
    let from = WalReader::open(&wal, None).unwrap().next_lsn();
    let uses = uses_of(&wal, from, end, &tag);
    let lock = *uses
        .iter()
        .find(|u| u.0 >= lock_start)
        .expect("the last LOCK record");
    let boundary = (lock.0 / SEG + 1) * SEG;
    println!(
        "span: x's records {:?}; the last LOCK {} to {} crosses {}",
        uses.iter()
            .map(|u| (format_lsn(u.0), u.2))
            .collect::<Vec<_>>(),
        format_lsn(lock.0),
        format_lsn(lock.1),
        format_lsn(boundary)
    );
    assert!(
        lock.2 && lock.1 > boundary,
        "the LOCK must carry an image and span {}",
        format_lsn(boundary)
    );
    assert_eq!(
        lock.0 / SEG,
        first_seg,
        "the three LOCKs and the last are in one segment"
    );

    // Every record read back from the segments, mapped (as `walredo verify`
    // does), is the reader's: on one page, across pages, across the
    // segment boundary.
    let mut reader = WalReader::open(&wal, Some(from)).unwrap();
    let read: Vec<_> = reader.by_ref().map(Result::unwrap).collect();
    let mapped = MappedWal::map(reader.files_read(), SEG).unwrap();
    let at: Vec<RecordAt> = read
        .iter()
        .map(|r| RecordAt {
            start_lsn: r.start_lsn,
            len: r.data.len() as u32,
        })
        .collect();
    let mut scratch = Vec::new();
    let bytes = mapped.gather(&at, &mut scratch).unwrap();
    for (r, b) in read.iter().zip(&bytes) {
        assert!(
            r.data[..] == b[..],
            "the record at {} read back mapped differs",
            format_lsn(r.start_lsn)
        );
    }
    let page_of = |lsn: u64| lsn / 8192;
    let crossing = read
        .iter()
        .filter(|r| page_of(r.start_lsn) != page_of(r.start_lsn + r.data.len() as u64 - 1))
        .count();
    assert!(
        crossing > 0 && read.iter().any(|r| r.start_lsn == lock.0),
        "records across pages, the spanning LOCK among them"
    );
    println!(
        "span: {} records ({crossing} across pages) read back mapped, the same",
        read.len()
    );

    // Every 8th LSN from the start of the three LOCKs' segment to past the
    // spanning record, at 64 bytes' steps away from it.
    let mut lsns: Vec<u64> = (first_seg * SEG + 64..lock.0 - 4096)
        .step_by(4096)
        .collect();
    lsns.extend((lock.0 - 4096..lock.1 + 512).step_by(8));
    lsns.extend((lock.1 + 512..end).step_by(64));
    lsns.push(end);
    lsns.retain(|&l| l <= end);
    let n = cold_and_warm(std::slice::from_ref(&wal), &tag, &uses, &lsns, end);
    println!("span: {n} LSNs, cold and warm plans equal a plain scan's");

    // The page inside the spanning record is PostgreSQL's as of its start.
    let pool = one_process_pool(true);
    let mut warm = WalSource::new(vec![wal.clone()], None);
    history_of(&mut warm, &tag, end).unwrap();
    for (target, at) in [(lock.0, boundary + 300), (lock.1, lock.1)] {
        let expected = dir.join(format!("expected-{target:x}"));
        copy_tree(&base, &expected);
        archive_recover(&expected, &wal, dir, &format_lsn(target));
        let want = read_page(&expected, &tag).unwrap().expect("x's page");
        for src in [&mut warm, &mut WalSource::new(vec![wal.clone()], None)] {
            let plan = src.plan(&tag, at, &mut || false).unwrap();
            let page = pool.redo(&tag, None, &plan.record_refs()).unwrap();
            assert!(
                page[..] == want[..],
                "x's page at {} differs from PostgreSQL's recovery to {}",
                format_lsn(at),
                format_lsn(target)
            );
        }
        println!(
            "span: page at {} is PostgreSQL's as of {}",
            format_lsn(at),
            format_lsn(target)
        );
    }
}

/// (start, end) of every record from `from` to `end`.
fn records(wal: &Path, from: u64, end: u64) -> Vec<(u64, u64)> {
    WalReader::open(wal, Some(from))
        .unwrap()
        .map(Result::unwrap)
        .take_while(|r| r.end_lsn <= end)
        .map(|r| (r.start_lsn, r.end_lsn))
        .collect()
}

/// After `pg_switch_wal()` the flush LSN is the start of a segment: a
/// plan, a history and the bounds at it must work
/// whether the next file is absent, a recycled segment or zero-filled (the
/// end of WAL as PostgreSQL finds it). A record damaged below the end the
/// caller gives is corruption, not the end of WAL: the history and a plan
/// past it fail naming its LSN, a plan before it still works.
#[test]
fn segment_boundary_and_damage() {
    let _test = isolated_test();
    let (tmp, mut c) = small_segment_cluster("walpaths-boundary");
    let dir = tmp.path();
    c.psql(
        "CREATE TABLE x (id int, v text) WITH (autovacuum_enabled = off);
         CREATE TABLE y (id int, v text) WITH (autovacuum_enabled = off);
         INSERT INTO x SELECT g, repeat('a', 100) FROM generate_series(1, 20) g;
         SELECT pg_switch_wal();
         CHECKPOINT;
         UPDATE x SET v = 'first' WHERE id = 1;",
    );
    let between = insert_lsn(&c);
    c.psql(
        "INSERT INTO y SELECT g, repeat('b', 100) FROM generate_series(1, 50) g;
         UPDATE x SET v = 'second' WHERE id = 2;",
    );
    c.psql("SELECT pg_switch_wal();");
    let end = lsn(&c, "SELECT pg_current_wal_flush_lsn();");
    assert_eq!(end % SEG, 0, "pg_switch_wal: flush LSN {}", format_lsn(end));
    let tag = c.main_tag("x", 0);
    c.stop();
    let wal = c.data.join("pg_wal");
    let from = WalReader::open(&wal, None).unwrap().next_lsn();
    let uses = uses_of(&wal, from, end, &tag);
    assert!(uses.len() >= 3, "{uses:?}");
    let next = end / SEG;

    // 7. The flush LSN at a segment boundary, the next file in four states.
    let old = fs::read(segment_path(&wal, 1, from / SEG)).unwrap();
    for (name, next_file) in [
        ("next segment absent", None),
        ("next segment recycled", Some(old.clone())),
        ("next segment zero-filled", Some(vec![0u8; SEG as usize])),
        (
            "next segment as the server left it",
            fs::read(segment_path(&wal, 1, next)).ok(),
        ),
    ] {
        let d = dir.join(name.replace(' ', "-"));
        copy_wal(&wal, &d);
        let p = segment_path(&d, 1, next);
        let _ = fs::remove_file(&p);
        if let Some(bytes) = next_file {
            fs::write(&p, bytes).unwrap();
        }
        let mut src = WalSource::new(vec![d.clone()], None);
        let got = plan_of(&mut src, &tag, end);
        assert_eq!(
            got.as_ref().ok(),
            reference_plan(&uses, end).as_ref(),
            "{name}: plan at the flush LSN {}: {got:?}",
            format_lsn(end)
        );
        let (_, newest) = src
            .bounds(end)
            .unwrap_or_else(|e| panic!("{name}: bounds: {e}"));
        assert_eq!(newest, end, "{name}: bounds");
        let h = history_of(&mut src, &tag, end).unwrap_or_else(|e| panic!("{name}: history: {e}"));
        assert_eq!(
            h,
            uses.iter().map(|u| u.0).collect::<Vec<_>>(),
            "{name}: history"
        );
        let n = cold_and_warm(
            std::slice::from_ref(&d),
            &tag,
            &uses,
            &[end - 8, end, end - SEG / 2],
            end,
        );
        println!(
            "boundary: {name}: {n} plans, the history and the bounds at {} right",
            format_lsn(end)
        );
    }

    // 8. A record between x's two updates, damaged (one data byte flipped).
    let recs = records(&wal, from, end);
    let y_recs: Vec<(u64, u64)> = recs
        .iter()
        .copied()
        .filter(|r| r.0 >= between && r.1 <= uses.last().unwrap().0)
        .filter(|r| r.0 % 8192 + 64 < 8192)
        .collect();
    let (bad, _) = y_recs[y_recs.len() / 2];
    let d = dir.join("damaged");
    copy_wal(&wal, &d);
    let p = segment_path(&d, 1, bad / SEG);
    let mut bytes = fs::read(&p).unwrap();
    bytes[(bad % SEG) as usize + 40] ^= 0x55;
    fs::write(&p, bytes).unwrap();
    // As in the issue, the damaged segment is the newest one.
    for s in bad / SEG + 1..bad / SEG + 64 {
        let _ = fs::remove_file(segment_path(&d, 1, s));
    }
    let named = |e: &SourceError| {
        assert!(
            matches!(e, SourceError::Corrupt { .. }) && e.to_string().contains(&format_lsn(bad)),
            "expected damage at {} named, got {e:?}: {e}",
            format_lsn(bad)
        );
        println!("damaged: {e}");
    };
    let last = *uses.last().unwrap();
    let mut src = WalSource::new(vec![d.clone()], None);
    named(&history_of(&mut src, &tag, end).expect_err("a history through damaged WAL"));
    for l in [last.1, end] {
        let e = WalSource::new(vec![d.clone()], None)
            .plan(&tag, l, &mut || false)
            .expect_err("a plan past damaged WAL");
        named(&e);
    }
    // A page of zeros there (WAL lost, or an end past what was flushed):
    // not the end of the history either.
    let z = dir.join("zeroed");
    copy_wal(&d, &z);
    let p = segment_path(&z, 1, bad / SEG);
    let mut bytes = fs::read(&p).unwrap();
    let page = (bad % SEG / 8192 * 8192) as usize;
    bytes[page..page + 8192].fill(0);
    fs::write(&p, bytes).unwrap();
    match history_of(&mut WalSource::new(vec![z.clone()], None), &tag, end) {
        Err(SourceError::NotFound(m)) if m.contains("pass an LSN the server has flushed") => {
            println!("zeroed: {m}")
        }
        other => panic!("a history through a zeroed page: {other:?}"),
    }
    // Before the damage, the plan is still there.
    let before = uses[uses.len() - 2].1;
    assert_eq!(
        plan_of(&mut src, &tag, before).ok(),
        reference_plan(&uses, before)
    );
}

fn wait_for_replay(standby: &Cluster, lsn: u64) {
    let lsn = format_lsn(lsn);
    let replayed = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}';");
    wait_until(
        &format!("the standby replays {lsn}"),
        std::time::Duration::from_secs(60),
        || standby.psql(&replayed) == "t",
    );
}

/// Start LSNs of the records pg_waldump prints for timeline `tli` from
/// `start` to `end` that reference `tag` (main fork).
fn waldump_uses(dir: &Path, tli: u32, start: u64, end: u64, tag: &PageTag) -> Vec<u64> {
    let out = waldump(dir, start, end, &["--timeline", &tli.to_string()]);
    let rel = format!(
        "rel {}/{}/{} blk {}",
        tag.rel.spcnode, tag.rel.dbnode, tag.rel.relnode, tag.blkno
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().count() > 10,
        "pg_waldump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter(|l| {
            l.match_indices(&rel)
                .any(|(i, m)| !l[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(|l| parse_lsn(l.split("lsn: ").nth(1).unwrap().split(',').next().unwrap()).unwrap())
        .collect()
}

/// The WAL of a promoted standby, timeline 1 up to the switch and timeline 2
/// after it, next to the old primary's timeline 1 segments written after the
/// switch (which are not on timeline 2's history and must not be read). Pages
/// at LSNs before and after the switch equal PostgreSQL's archive recovery of
/// the base backup to them (which follows the same history file), from a fresh
/// and a warm source; the history of a block across the switch is pg_waldump's,
/// timeline by timeline; plans at every record end around the switch, cold and
/// warm, agree.
#[test]
fn timeline_switch_of_a_promoted_standby() {
    let _test = isolated_test();
    let (tmp, mut p) = small_segment_cluster("walpaths-tli");
    let stmp = TempDir::new("walpaths-tli-standby");
    let dir = tmp.path();
    p.psql(
        "CREATE TABLE x (id int, v text) WITH (autovacuum_enabled = off);
         INSERT INTO x SELECT g, repeat('a', 200) FROM generate_series(1, 100) g;
         CHECKPOINT;",
    );
    let base = dir.join("base");
    let mut s = p.start_standby(
        stmp.path(),
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
    let on_tli1 = insert_lsn(&p);
    // Timeline 1's segments before the switch's: only they hold `on_tli1`.
    p.psql(
        "SELECT pg_switch_wal();
         UPDATE x SET v = 'four' WHERE id % 11 = 0;
         SELECT pg_switch_wal();
         UPDATE x SET v = 'four and a half' WHERE id % 2 = 1;",
    );
    wait_for_replay(&s, lsn(&p, "SELECT pg_current_wal_flush_lsn();"));
    s.psql("SELECT pg_promote();");
    s.psql(
        "UPDATE x SET v = 'five' WHERE id % 13 = 0;
         CHECKPOINT;
         UPDATE x SET v = 'six' WHERE id % 2 = 0;
         SELECT pg_switch_wal();
         UPDATE x SET v = 'seven' WHERE id % 17 = 0;",
    );
    let on_tli2 = insert_lsn(&s);
    s.psql("UPDATE x SET v = 'eight' WHERE id % 19 = 0;");
    let end = lsn(&s, "SELECT pg_current_wal_flush_lsn();");
    // The old primary goes on writing timeline 1 past the switch.
    p.psql(
        "UPDATE x SET v = 'diverged' WHERE id % 4 = 0;
         SELECT pg_switch_wal();
         UPDATE x SET v = 'diverged again' WHERE id % 6 = 0;",
    );
    let tag0 = s.main_tag("x", 0);
    p.stop();
    s.stop();
    let history = fs::read_to_string(s.data.join("pg_wal/00000002.history")).unwrap();
    let switch = parse_lsn(history.split_whitespace().nth(1).unwrap()).unwrap();
    println!(
        "timeline: switch to timeline 2 at {}; LSNs {} (timeline 1) and {} (timeline 2); end {}",
        format_lsn(switch),
        format_lsn(on_tli1),
        format_lsn(on_tli2),
        format_lsn(end)
    );
    assert!(on_tli1 / SEG + 1 < switch / SEG && switch / SEG < on_tli2 / SEG);
    // One directory as an archive would hold it: both servers' segments,
    // the standby's where both have one; and the two pg_wal directories.
    let merged = dir.join("merged");
    copy_wal(&p.data.join("pg_wal"), &merged);
    copy_wal(&s.data.join("pg_wal"), &merged);
    let diverged = segment_path(&merged, 1, on_tli2 / SEG);
    assert!(
        diverged.is_file(),
        "the old primary's timeline 1 WAL past the switch"
    );
    let both = vec![s.data.join("pg_wal"), p.data.join("pg_wal")];

    let pool = one_process_pool(true);
    let mut warm = WalSource::new(vec![merged.clone()], None);
    history_of(&mut warm, &tag0, end).unwrap();
    let mut compared = 0;
    for target in [on_tli1, on_tli2] {
        let expected = dir.join(format!("expected-{target:x}"));
        copy_tree(&base, &expected);
        archive_recover(&expected, &merged, dir, &format_lsn(target));
        let file =
            fs::read(expected.join(format!("base/{}/{}", tag0.rel.dbnode, tag0.rel.relnode)))
                .unwrap();
        for blkno in 0..(file.len() / 8192) as u32 {
            let want = &file[blkno as usize * 8192..][..8192];
            let tag = PageTag { blkno, ..tag0 };
            for (what, src) in [
                ("warm", &mut warm),
                ("fresh", &mut WalSource::new(vec![merged.clone()], None)),
                ("pg_wal of both", &mut WalSource::new(both.clone(), None)),
            ] {
                let plan = src.plan(&tag, target, &mut || false).unwrap_or_else(|e| {
                    panic!("{what}: blk {blkno} at {}: {e}", format_lsn(target))
                });
                let page = pool.redo(&tag, None, &plan.record_refs()).unwrap();
                assert!(
                    page[..] == want[..],
                    "{what}: blk {blkno} at {} differs from PostgreSQL's recovery",
                    format_lsn(target)
                );
                compared += 1;
            }
        }
    }
    println!("timeline: {compared} pages equal PostgreSQL's recovery across the switch");

    // The history across the switch is pg_waldump's, timeline by timeline.
    let oldest = WalSource::new(vec![merged.clone()], None)
        .bounds(end)
        .unwrap()
        .0;
    let switch_seg = switch / SEG * SEG;
    let mut want = waldump_uses(&merged, 1, oldest, switch_seg, &tag0);
    want.extend(waldump_uses(
        &s.data.join("pg_wal"),
        2,
        switch_seg,
        end,
        &tag0,
    ));
    for dirs in [vec![merged.clone()], both.clone()] {
        let got = history_of(&mut WalSource::new(dirs.clone(), None), &tag0, end).unwrap();
        assert_eq!(got, want, "history of block 0 in {dirs:?}");
    }
    assert!(want.iter().any(|&l| l < switch) && want.iter().any(|&l| l > switch));
    println!(
        "timeline: block 0's history of {} records is pg_waldump's",
        want.len()
    );

    // Plans at every record end around the switch, cold and warm.
    let mut ends: Vec<u64> = Vec::new();
    let mut reader = WalReader::open_segments(
        std::sync::Arc::new(
            walredo::wal::Segments::list(std::slice::from_ref(&merged), None, None).unwrap(),
        ),
        walredo::wal::Start::Segment(switch / SEG - 1),
        None,
    )
    .unwrap();
    reader.set_limit(end);
    while let Some(r) = reader.next_record().unwrap() {
        ends.push(r.end_lsn);
    }
    let uses = uses_of(&merged, oldest, end, &tag0);
    let n = cold_and_warm(std::slice::from_ref(&merged), &tag0, &uses, &ends, end);
    println!("timeline: plans at {n} record ends around the switch agree, cold and warm");
}
