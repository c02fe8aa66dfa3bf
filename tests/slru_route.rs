//! Which SLRU pages and relation maps a record changes
//! (`walredo::wal::slru`), against real WAL and PostgreSQL's own recovery
//! of it: one transaction with 40,000 subtransactions (a commit over two
//! `pg_xact` pages), aborts and subtransaction rollbacks, a prepared
//! transaction committed and one rolled back, multixacts (locks by a
//! transaction and its subtransactions, and by concurrent sessions), commit
//! timestamps on, relations dropped (with their statistics, from 15) by a
//! commit, a prepared commit and an abort, and relation map updates (VACUUM FULL of a local and a
//! shared mapped catalog; CREATE DATABASE ... STRATEGY WAL_LOG from 15).
//!
//! Checked:
//! - every record of the WAL is routed without error;
//! - each SLRU page that differs between the base and PostgreSQL's archive
//!   recovery of the WAL (EXPECTED) is named by some record, and every page
//!   a record names as set differs (each write there is of a value the base
//!   cannot have);
//! - the last RelMap UPDATE of each map is, byte for byte, EXPECTED's file;
//! - each record's named pages are the ones its pg_waldump description
//!   implies (xids → `xid / 32768`, `xid / 819`; multixact, offset and
//!   member count → offsets and members pages; zero page numbers; maps);
//! - a second recovery, stopped just after the CREATE_ID of multixact 2047
//!   and a checkpoint, has written the next multixact's offset on offsets
//!   page 1 (why that page is named: design-slru.md 2.4);
//! - every SLRU page and map rebuilt from the base and the records
//!   (`SlruReplay`, as `walredo verify` does) is byte for byte EXPECTED's,
//!   and the stopped recovery's; without one commit record, a `pg_xact`
//!   page differs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Stdio;

use walredo::datadir::read_slru_page;
use walredo::pg::slru::SlruFormat;
use walredo::wal::slru::rebuild_slru_page;
use walredo::wal::slru::{
    member_pages, next_multixact, relmap_update, slru_changes, RelMapFile, SlruChange, SlruKind,
    SlruPage, SlruReplay,
};
use walredo::wal::source::{SourceError, WalSource};
use walredo::wal::{format_lsn, record};
use walredo_testkit::harness::*;
use walredo_testkit::install::pg_version;

const PAGE: usize = 8192;

fn workload(c: &Cluster) {
    c.psql(
        r#"
CREATE TABLE sx (i int);
-- One transaction, 40,000 subtransactions with an xid each: its commit
-- spans two pg_xact pages (32768 xids a page).
DO $$ BEGIN FOR i IN 1..40000 LOOP
  BEGIN INSERT INTO sx VALUES (i); EXCEPTION WHEN others THEN NULL; END;
END LOOP; END $$;
-- Subtransactions rolled back by an error.
DO $$ BEGIN FOR i IN 1..50 LOOP
  BEGIN INSERT INTO sx VALUES (-i); RAISE EXCEPTION 'no'; EXCEPTION WHEN others THEN NULL; END;
END LOOP; END $$;
BEGIN; INSERT INTO sx VALUES (-1); ROLLBACK;
BEGIN; INSERT INTO sx VALUES (-2); SAVEPOINT a; INSERT INTO sx VALUES (-3);
  ROLLBACK TO a; INSERT INTO sx VALUES (-4); COMMIT;
BEGIN; INSERT INTO sx VALUES (-5); SAVEPOINT b; INSERT INTO sx VALUES (-6);
  PREPARE TRANSACTION 'p1';
COMMIT PREPARED 'p1';
BEGIN; INSERT INTO sx VALUES (-7); SAVEPOINT c; INSERT INTO sx VALUES (-8);
  PREPARE TRANSACTION 'p2';
ROLLBACK PREPARED 'p2';
-- Commits and aborts that drop relations (and, from 15, their statistics:
-- items before the two-phase xid, 16 bytes each in 18, 12 before).
CREATE TABLE d1 (i int); CREATE TABLE d2t (i int);
DROP TABLE d1;
BEGIN; DROP TABLE d2t; INSERT INTO sx VALUES (-9); PREPARE TRANSACTION 'p3';
COMMIT PREPARED 'p3';
BEGIN; CREATE TABLE d3 (i int); INSERT INTO d3 VALUES (1); ROLLBACK;
-- Multixacts: a row key-share locked by the transaction, then share
-- locked by a subtransaction (two xids: a multixact each), enough to
-- cross an offsets page (2048) and several members pages (1636).
CREATE TABLE mx (id int PRIMARY KEY, v int);
INSERT INTO mx SELECT g, 0 FROM generate_series(1, 3000) g;
-- Multixacts 1 to 2047 (the last of offsets page 0), a checkpoint (so
-- that a recovery stopped right after it flushes its SLRU pages), then more.
DO $$ BEGIN FOR i IN 1..2047 LOOP
  PERFORM 1 FROM mx WHERE id = i FOR KEY SHARE;
  BEGIN PERFORM 1 FROM mx WHERE id = i FOR SHARE; EXCEPTION WHEN others THEN NULL; END;
END LOOP; END $$;
CHECKPOINT;
DO $$ BEGIN FOR i IN 2048..2600 LOOP
  PERFORM 1 FROM mx WHERE id = i FOR KEY SHARE;
  BEGIN PERFORM 1 FROM mx WHERE id = i FOR SHARE; EXCEPTION WHEN others THEN NULL; END;
END LOOP; END $$;
"#,
    );
    // Several sessions share-locking the same rows at once.
    let sock = c.socket_dir.to_str().unwrap().to_string();
    let sql = "SELECT count(*) FROM (SELECT 1 FROM mx WHERE id > 2600 FOR SHARE) s; \
               SELECT pg_sleep(2);";
    let sessions: Vec<_> = (0..3)
        .map(|_| {
            command(
                "psql",
                &[
                    "-X", "-q", "-h", &sock, "-U", "postgres", "-d", "postgres", "-c", sql,
                ],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
        })
        .collect();
    for mut s in sessions {
        assert!(s.wait().unwrap().success());
    }
    c.psql("VACUUM FULL pg_class; VACUUM FULL pg_database;");
    if pg_version() >= 15 {
        c.psql("CREATE DATABASE d2 STRATEGY WAL_LOG;");
    }
}

/// Every page of an SLRU in a data directory, by page number.
fn slru_pages(data: &Path, kind: SlruKind) -> BTreeMap<u64, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir(data.join(kind.dir())) else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name().into_string().unwrap();
        let Ok(segment) = u64::from_str_radix(&name, 16) else {
            continue;
        };
        let bytes = fs::read(e.path()).unwrap();
        assert_eq!(bytes.len() % PAGE, 0, "{name}: not whole pages");
        for (i, page) in bytes.chunks(PAGE).enumerate() {
            out.insert(segment * 32 + i as u64, page.to_vec());
        }
    }
    out
}

/// What pg_waldump says of one record: rmgr, type and description.
struct Dumped {
    rmgr: String,
    tx: u32,
    desc: String,
}

fn waldump_lines(rec: &RecordedWal) -> BTreeMap<u64, Dumped> {
    let out = waldump(&rec.wal_dir, rec.start_lsn, rec.target_lsn, &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = BTreeMap::new();
    for l in text.lines() {
        let field = |name: &str| {
            let at = l.find(name)? + name.len();
            Some(l[at..].split(',').next()?.trim().to_string())
        };
        let (Some(rmgr), Some(tx), Some(lsn)) = (field("rmgr:"), field("tx:"), field("lsn:"))
        else {
            continue;
        };
        let rmgr = rmgr.split_whitespace().next().unwrap().to_string();
        let desc = l[l.find("desc: ").unwrap() + 6..].to_string();
        lines.insert(
            walredo::wal::parse_lsn(&lsn).unwrap(),
            Dumped {
                rmgr,
                tx: tx.parse().unwrap(),
                desc,
            },
        );
    }
    lines
}

/// Every unsigned number in `s`, in order.
fn numbers(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect()
}

/// The changes pg_waldump's description of a record implies, as a set.
fn changes_from_dump(d: &Dumped, commit_ts: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let (op, rest) = d.desc.split_once(' ').unwrap_or((&d.desc, ""));
    let set = |kind: SlruKind, id: u64| {
        format!(
            "{:?}",
            SlruChange::Set(SlruPage {
                kind,
                pageno: id / kind.entries_per_page()
            })
        )
    };
    let zero =
        |kind: SlruKind, pageno: u64| format!("{:?}", SlruChange::Zero(SlruPage { kind, pageno }));
    match (d.rmgr.as_str(), op) {
        ("Transaction", "COMMIT" | "ABORT" | "COMMIT_PREPARED" | "ABORT_PREPARED") => {
            let (xid, after) = if op.ends_with("PREPARED") {
                let (x, after) = rest.split_once(": ").unwrap();
                (x.parse::<u64>().unwrap(), after)
            } else {
                (u64::from(d.tx), rest)
            };
            let mut ids = vec![xid];
            if let Some(s) = after.split("; subxacts: ").nth(1) {
                ids.extend(numbers(s.split(';').next().unwrap()));
            }
            for &x in &ids {
                out.insert(set(SlruKind::Xact, x));
                if op.starts_with("COMMIT") && commit_ts {
                    out.insert(set(SlruKind::CommitTs, x));
                }
            }
        }
        ("CLOG", "ZEROPAGE") => {
            out.insert(zero(SlruKind::Xact, numbers(rest)[0]));
        }
        ("CommitTs", "ZEROPAGE") => {
            out.insert(zero(SlruKind::CommitTs, numbers(rest)[0]));
        }
        ("MultiXact", "ZERO_OFF_PAGE") => {
            out.insert(zero(SlruKind::MultiXactOffsets, numbers(rest)[0]));
        }
        ("MultiXact", "ZERO_MEM_PAGE") => {
            out.insert(zero(SlruKind::MultiXactMembers, numbers(rest)[0]));
        }
        ("MultiXact", "CREATE_ID") => {
            // "<mid> offset <moff> nmembers <n>: <xid> (<mode>) ..."
            let n = numbers(rest.split(':').next().unwrap());
            let (mid, moff, count) = (n[0], n[1], n[2]);
            out.insert(set(SlruKind::MultiXactOffsets, mid));
            let next = next_multixact(mid as u32);
            out.insert(set(SlruKind::MultiXactOffsets, u64::from(next)));
            // The members, one offset after another (wrapping at 2^32).
            for i in 0..count {
                out.insert(set(SlruKind::MultiXactMembers, (moff + i) % (1 << 32)));
            }
            assert_eq!(
                member_pages(moff as u32, count).len(),
                out.iter().filter(|c| c.contains("Members")).count()
            );
        }
        ("XLOG", "PARAMETER_CHANGE") => {
            out.insert(format!(
                "{:?}",
                SlruChange::CommitTsActive(rest.contains("track_commit_timestamp=on"))
            ));
        }
        ("RelMap", "UPDATE") => {
            // "database <db> tablespace <spc> size <n>"
            let n = numbers(rest);
            let file = if n[1] == 1664 {
                RelMapFile::Global
            } else {
                RelMapFile::Database {
                    spcnode: n[1] as u32,
                    dbnode: n[0] as u32,
                }
            };
            assert_eq!(
                n[2] as usize,
                SlruFormat::of_version(pg_version()).relmap_file_size()
            );
            out.insert(format!("{:?}", SlruChange::RelMap(file)));
        }
        _ => {}
    }
    out
}

#[test]
fn slru_pages_named_by_records_are_the_ones_recovery_changes() {
    let Some(_test) = isolated_root_test("clusters run as the postgres user") else {
        return;
    };
    let tmp = TempDir::new("slru-route");
    let mut settings = WAL_KEEPING_SETTINGS.to_vec();
    settings.extend([
        "max_prepared_transactions = 10",
        "track_commit_timestamp = on",
    ]);
    let rec = record_workload(tmp.path(), &[], &settings, &workload);
    let commit_ts = controldata(&rec.base)["track_commit_timestamp setting"] == "on";
    assert!(commit_ts, "the base must have commit timestamps on");
    let format = SlruFormat::of_version(pg_version());

    // Route every record that recovery replayed.
    let mut named: BTreeMap<SlruKind, BTreeSet<u64>> = BTreeMap::new();
    let mut set_pages: BTreeMap<SlruKind, BTreeSet<u64>> = BTreeMap::new();
    let mut maps: BTreeMap<RelMapFile, Vec<u8>> = BTreeMap::new();
    let mut routed: BTreeMap<u64, Vec<SlruChange>> = BTreeMap::new();
    let mut widest_commit = 0;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let records = rec.records();
    // What routing costs, decoding included (the fastest of three passes).
    let decoded: Vec<_> = records
        .iter()
        .map(|r| record::decode_as(&r.data, record_format()).unwrap())
        .collect();
    let best = (0..3)
        .map(|_| {
            let t = std::time::Instant::now();
            let n: usize = decoded
                .iter()
                .map(|d| slru_changes(d, format, commit_ts).unwrap().len())
                .sum();
            (t.elapsed(), n)
        })
        .min()
        .unwrap();
    println!(
        "routing {} records ({} bytes): {:?} ({} changes)",
        records.len(),
        records.iter().map(|r| r.data.len()).sum::<usize>(),
        best.0,
        best.1
    );
    for r in &records {
        let d = record::decode_as(&r.data, record_format()).unwrap();
        let changes = slru_changes(&d, format, commit_ts)
            .unwrap_or_else(|e| panic!("record at {}: {e}", format_lsn(r.start_lsn)));
        if let Some((file, bytes)) = relmap_update(&d, format).unwrap() {
            maps.insert(file, bytes.to_vec());
        }
        if d.rmid == walredo::pg::rmgr::RM_XACT_ID {
            let xact = changes
                .iter()
                .filter(|c| c.page().is_some_and(|p| p.kind == SlruKind::Xact))
                .count();
            widest_commit = widest_commit.max(xact);
        }
        for c in &changes {
            *counts
                .entry(match c {
                    SlruChange::Set(_) => "set",
                    SlruChange::Zero(_) => "zero",
                    SlruChange::RelMap(_) => "relmap",
                    _ => "truncate",
                })
                .or_default() += 1;
            if let Some(p) = c.page() {
                named.entry(p.kind).or_default().insert(p.pageno);
                if matches!(c, SlruChange::Set(_)) {
                    set_pages.entry(p.kind).or_default().insert(p.pageno);
                }
            }
        }
        if !changes.is_empty() {
            routed.insert(r.start_lsn, changes);
        }
    }
    println!("changes named: {counts:?}; widest commit: {widest_commit} pg_xact pages");
    assert!(widest_commit >= 2, "a commit must span two pg_xact pages");

    // The SLRU pages recovery changed, against the ones named.
    for kind in SlruKind::ALL {
        let base = slru_pages(&rec.base, kind);
        let expected = slru_pages(&rec.expected, kind);
        let zeros = vec![0u8; PAGE];
        let pagenos: BTreeSet<u64> = base.keys().chain(expected.keys()).copied().collect();
        let differ: BTreeSet<u64> = pagenos
            .into_iter()
            .filter(|p| base.get(p).unwrap_or(&zeros) != expected.get(p).unwrap_or(&zeros))
            .collect();
        let named = named.remove(&kind).unwrap_or_default();
        let set = set_pages.remove(&kind).unwrap_or_default();
        println!(
            "{kind}: {} pages differ after recovery, {} named ({} set)",
            differ.len(),
            named.len(),
            set.len()
        );
        assert!(!differ.is_empty(), "{kind}: the workload must change pages");
        let unnamed: Vec<_> = differ.difference(&named).collect();
        assert!(
            unnamed.is_empty(),
            "{kind}: changed by recovery, named by no record: {unnamed:?}"
        );
        let unchanged: Vec<_> = set.difference(&differ).collect();
        assert!(
            unchanged.is_empty(),
            "{kind}: named as set, unchanged by recovery: {unchanged:?}"
        );
    }
    let pages_of = |kind: SlruKind| slru_pages(&rec.expected, kind).len();
    assert!(
        pages_of(SlruKind::MultiXactOffsets) >= 2,
        "multixacts must cross an offsets page"
    );
    assert!(
        pages_of(SlruKind::MultiXactMembers) >= 2,
        "members must cross a page"
    );

    // The next multixact's offset (design-slru.md 2.4): recovery stopped
    // after the CREATE_ID of the last multixact of an offsets page (and the
    // checkpoint the workload makes right after it, so that the shutdown
    // restartpoint writes the SLRU pages) must have written the first entry
    // of the next page, moff + nmembers: that is why that page is named.
    // EXPECTED cannot show it, as the next CREATE_ID writes the same value.
    let create_id = |r: &walredo::wal::WalRecord| {
        let d = record::decode_as(&r.data, record_format()).unwrap();
        (d.rmid == walredo::pg::rmgr::RM_MULTIXACT_ID
            && d.rmgr_info() == walredo::pg::slru::XLOG_MULTIXACT_CREATE_ID)
            .then(|| {
                let f = |at: usize| u32::from_le_bytes(d.main_data[at..at + 4].try_into().unwrap());
                (f(0), f(4), f(8))
            })
    };
    let i = records
        .iter()
        .position(|r| create_id(r).is_some_and(|c| c.0 % 2048 == 2047))
        .expect("a multixact that ends an offsets page");
    let (mid, moff, n) = create_id(&records[i]).unwrap();
    let checkpoint = i + records[i..]
        .iter()
        .position(|r| r.rmid() == walredo::pg::rmgr::RM_XLOG_ID && r.info() & 0xF0 == 0x10)
        .expect("a checkpoint after it");
    assert!(
        records[i + 1..checkpoint]
            .iter()
            .all(|r| create_id(r).is_none()),
        "no multixact between CREATE_ID {mid} and the checkpoint after it"
    );
    let stopped = tmp.path().join("stopped");
    copy_tree(&rec.base, &stopped);
    archive_recover(
        &stopped,
        &rec.wal_dir,
        tmp.path(),
        &format_lsn(records[checkpoint + 1].start_lsn),
    );
    let own_page = &slru_pages(&stopped, SlruKind::MultiXactOffsets)[&(u64::from(mid) / 2048)];
    let own = 4 * (mid as usize % 2048);
    assert_eq!(
        u32::from_le_bytes(own_page[own..own + 4].try_into().unwrap()),
        moff,
        "the stopped recovery wrote CREATE_ID {mid}'s own offset"
    );
    let next_page = slru_pages(&stopped, SlruKind::MultiXactOffsets)
        .remove(&(u64::from(mid) / 2048 + 1))
        .expect("the next offsets page exists after the CREATE_ID");
    let next_offset = u32::from_le_bytes(next_page[0..4].try_into().unwrap());
    println!(
        "after CREATE_ID {mid} (offset {moff}, {n} members): next multixact's offset {next_offset}"
    );
    assert_eq!(
        next_offset,
        moff + n,
        "recovery writes the next multixact's offset on the next page"
    );

    // The last map update of each file is the recovered file.
    assert!(
        maps.contains_key(&RelMapFile::Global),
        "VACUUM FULL pg_database logs the global map"
    );
    assert!(
        maps.len() >= 2,
        "VACUUM FULL pg_class logs the database's map: {maps:?}"
    );
    for (file, bytes) in &maps {
        let path = walredo::datadir::relmap_path(&rec.expected, file);
        assert_eq!(
            &fs::read(&path).unwrap(),
            bytes,
            "{file}: {}",
            path.display()
        );
        let base = fs::read(walredo::datadir::relmap_path(&rec.base, file)).ok();
        assert_ne!(
            base.as_ref(),
            Some(bytes),
            "{file}: the workload must change it"
        );
    }

    // Each record's pages against pg_waldump's description of it.
    let dumped = waldump_lines(&rec);
    if pg_version() >= 15 {
        assert!(
            dumped
                .values()
                .any(|d| d.desc.starts_with("COMMIT_PREPARED") && d.desc.contains("dropped stats")),
            "a prepared commit must drop statistics (the items before its two-phase xid)"
        );
    }
    let mut compared = 0;
    for (lsn, d) in &dumped {
        if !matches!(
            d.rmgr.as_str(),
            "Transaction" | "CLOG" | "MultiXact" | "CommitTs" | "RelMap"
        ) && !d.desc.starts_with("PARAMETER_CHANGE")
        {
            assert!(
                !routed.contains_key(lsn),
                "{} {}: named pages",
                format_lsn(*lsn),
                d.rmgr
            );
            continue;
        }
        let ours: BTreeSet<String> = routed
            .get(lsn)
            .into_iter()
            .flatten()
            .map(|c| format!("{c:?}"))
            .collect();
        let theirs = changes_from_dump(d, commit_ts);
        assert_eq!(
            ours,
            theirs,
            "record at {} ({} {})",
            format_lsn(*lsn),
            d.rmgr,
            &d.desc[..d.desc.len().min(200)]
        );
        compared += 1;
    }
    assert_eq!(
        routed.keys().filter(|l| !dumped.contains_key(l)).count(),
        0,
        "every routed record is in pg_waldump's output"
    );
    println!("{compared} records compared with pg_waldump's descriptions");

    // Rebuilt (walredo::wal::slru::SlruReplay, from the base's files): every
    // SLRU page and map the WAL changed is byte for byte what recovery left.
    let (identical, different) = rebuilt_against(&records, None, &rec.base, &rec.expected);
    println!("rebuilt against EXPECTED: {identical:?} identical");
    assert!(different.is_empty(), "rebuilt pages differ: {different:?}");
    for kind in [
        "pg_xact",
        "pg_multixact/offsets",
        "pg_multixact/members",
        "pg_commit_ts",
    ] {
        assert!(
            identical.get(kind).is_some_and(|&n| n >= 1),
            "no {kind} page rebuilt: {identical:?}"
        );
    }
    assert!(identical["pg_xact"] >= 2 && identical["pg_multixact/members"] >= 2);
    assert!(identical["pg_filenode.map"] >= 2);
    // And the stopped recovery's pages: the next multixact's offset too.
    let (identical, different) =
        rebuilt_against(&records[..=checkpoint], None, &rec.base, &stopped);
    println!("rebuilt against the stopped recovery: {identical:?} identical");
    assert!(different.is_empty(), "rebuilt pages differ: {different:?}");
    // Negative control: without one commit record, its pg_xact page differs.
    let commit = records
        .iter()
        .position(|r| {
            r.rmid() == walredo::pg::rmgr::RM_XACT_ID
                && r.info() & walredo::pg::record_type::XLOG_XACT_OPMASK
                    == walredo::pg::record_type::XLOG_XACT_COMMIT
        })
        .expect("a commit record");
    let (_, different) = rebuilt_against(&records, Some(commit), &rec.base, &rec.expected);
    assert!(
        different.iter().any(|d| d.starts_with("pg_xact")),
        "leaving out the commit at {} changed no pg_xact page: {different:?}",
        format_lsn(records[commit].start_lsn)
    );

    // A WAL source's plan for each SLRU page (walredo_wal_plan_slru):
    // from the page's ZERO record, without any base page, the page is
    // EXPECTED's; a page zeroed before the WAL kept (initdb's) is not found.
    let mut source = WalSource::new(vec![rec.wal_dir.clone()], None);
    let zeroed: BTreeSet<SlruPage> = routed
        .values()
        .flatten()
        .filter_map(|c| match c {
            SlruChange::Zero(p) => Some(*p),
            _ => None,
        })
        .collect();
    let mut planned: BTreeMap<&str, usize> = BTreeMap::new();
    let mut not_found = 0;
    for (kind, pages) in [
        SlruKind::Xact,
        SlruKind::MultiXactOffsets,
        SlruKind::MultiXactMembers,
        SlruKind::CommitTs,
    ]
    .map(|k| (k, slru_pages(&rec.expected, k)))
    {
        for (&pageno, theirs) in &pages {
            let page = SlruPage { kind, pageno };
            match source.plan_slru(&page, rec.target_lsn, &mut || false) {
                Ok(plan) => {
                    let refs: Vec<&[u8]> = plan.records.iter().map(|r| &r.data[..]).collect();
                    let ours = rebuild_slru_page(page, None, &refs, format).unwrap();
                    assert_eq!(&ours[..], &theirs[..], "{page} from its plan");
                    *planned.entry(kind.dir()).or_default() += 1;
                }
                Err(SourceError::NotFound(why)) => {
                    assert!(!zeroed.contains(&page), "{page}: {why}");
                    not_found += 1;
                }
                Err(e) => panic!("{page}: {e}"),
            }
        }
    }
    println!("planned from the WAL alone: {planned:?}; {not_found} made before it");
    assert!(
        planned.get("pg_xact").is_some_and(|&n| n >= 1),
        "{planned:?}"
    );
    assert!(
        planned.get("pg_multixact/members").is_some_and(|&n| n >= 2),
        "{planned:?}"
    );
    assert!(
        planned.get("pg_commit_ts").is_some_and(|&n| n >= 10),
        "{planned:?}"
    );
}

/// Replay `records` (but the one at `skip`) onto `base`'s SLRU pages and
/// maps with [`SlruReplay`] and compare each with `expected`'s files: the
/// identical ones per kind, and the different ones named.
fn rebuilt_against(
    records: &[walredo::wal::WalRecord],
    skip: Option<usize>,
    base: &Path,
    expected: &Path,
) -> (BTreeMap<&'static str, usize>, Vec<String>) {
    let commit_ts = controldata(base)["track_commit_timestamp setting"] == "on";
    let mut replay = SlruReplay::new(
        base.to_path_buf(),
        SlruFormat::of_version(pg_version()),
        commit_ts,
    );
    for (i, r) in records.iter().enumerate() {
        if Some(i) != skip {
            let d = record::decode_as(&r.data, record_format()).unwrap();
            replay.add(&d, r.end_lsn).unwrap();
        }
    }
    let mut identical: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut different = Vec::new();
    for (page, bytes, _) in replay.pages() {
        let theirs = read_slru_page(expected, page).unwrap();
        if theirs.as_deref() == Some(bytes) {
            *identical.entry(page.kind.dir()).or_default() += 1;
        } else {
            different.push(page.to_string());
        }
    }
    for (file, bytes, _) in replay.maps() {
        if fs::read(walredo::datadir::relmap_path(expected, file))
            .ok()
            .as_deref()
            == Some(bytes)
        {
            *identical.entry("pg_filenode.map").or_default() += 1;
        } else {
            different.push(file.to_string());
        }
    }
    (identical, different)
}
