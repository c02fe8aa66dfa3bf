//! The real thing: WAL written by a real PostgreSQL 15, every block it touched
//! rebuilt by pg_walredo with consistency checking on, and the final pages
//! compared byte for byte with PostgreSQL's own archive recovery of the same
//! WAL. Plus negative controls that must be caught.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use walredo::datadir::read_page;
use walredo::tag::{FSM_FORKNUM, MAIN_FORKNUM, VISIBILITYMAP_FORKNUM};
use walredo::wal::pages::starts_as_zero_page;
use walredo::wal::record;
use walredo::wal::uses::{block_uses_as, record_refs, runs, Use};
use walredo::wal::{format_lsn, next_record_start, WalRecord};
use walredo::{Config, Error, PageTag, RecordRef, Redoer, PAGE_SIZE};
use walredo_testkit::harness::*;

/// Inserts, HOT and cross-page updates, deletes, vacuum (prune, freeze,
/// btree deletion), btree page splits, COPY (multi-insert), TOAST.
const WORKLOAD: &str = r#"
CREATE TABLE t (id int PRIMARY KEY, v text, n int);
CREATE INDEX t_n ON t (n);
INSERT INTO t SELECT g, repeat('x', 20 + g % 80), g % 500 FROM generate_series(1, 6000) g;
CREATE TABLE h (id int PRIMARY KEY, v text) WITH (fillfactor = 50);
INSERT INTO h SELECT g, 'h' || g FROM generate_series(1, 2000) g;
UPDATE h SET v = v || '-hot' WHERE id % 3 = 0;
UPDATE t SET n = n + 1 WHERE id % 10 = 0;
UPDATE t SET v = repeat('z', 300) WHERE id % 17 = 0;
DELETE FROM t WHERE id % 4 = 0;
VACUUM t;
DELETE FROM t WHERE id > 5200;
VACUUM t;
VACUUM FREEZE h;
SELECT count(*) FROM (SELECT id FROM h WHERE id % 13 = 0 FOR SHARE) l;
CREATE TABLE c (a int, b text);
COPY c FROM STDIN;
1	one
2	two
3	three
4	four
\.
INSERT INTO c SELECT g, repeat(md5(g::text), 200) FROM generate_series(5, 40) g;
UPDATE h SET v = v || '-again' WHERE id % 5 = 0;
CREATE TABLE w (id int PRIMARY KEY, pad text);
INSERT INTO w SELECT g, (SELECT string_agg(md5((g * 100 + i)::text), '') FROM generate_series(1, 45) i)
  FROM generate_series(1, 3000) g;
UPDATE w SET pad = pad || 'x' WHERE id % 9 = 0;
DELETE FROM w WHERE id % 5 = 0;
VACUUM w;
CREATE TABLE p (id int, v text) PARTITION BY RANGE (id);
CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (1000);
CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (1000) TO (2000);
CREATE TABLE p3 PARTITION OF p FOR VALUES FROM (2000) TO (3000);
INSERT INTO p SELECT g, repeat('p', 50) FROM generate_series(0, 2999) g;
VACUUM FREEZE p;
UPDATE p SET v = v || '+' WHERE id % 100 = 1;
DELETE FROM p WHERE id % 100 = 2;
INSERT INTO p SELECT g, 'again' FROM generate_series(0, 2999, 150) g;
SELECT count(*) FROM (SELECT id FROM p WHERE id % 100 = 3 FOR UPDATE) l;
DELETE FROM p WHERE id % 1000 > 800;
VACUUM p;
CREATE TABLE tr (id int, pad text);
INSERT INTO tr SELECT g, repeat('t', 100) FROM generate_series(1, 3000) g;
VACUUM tr;
DELETE FROM tr WHERE id > 2000;
VACUUM tr;
CHECKPOINT;
"#;

struct Wal {
    base: PathBuf,
    expected: PathBuf,
    records: Vec<WalRecord>,
    /// Every block referenced, with the records that use it in LSN order.
    blocks: BTreeMap<PageTag, Vec<Use>>,
}

fn write_workload(tmp: &Path) -> Wal {
    let settings = [
        "wal_consistency_checking = all",
        "autovacuum = off",
        "max_wal_size = 4GB",
        "checkpoint_timeout = 1h",
        "wal_keep_size = 4GB",
        "fsync = off",
    ];
    let rec = record_workload(tmp, &[], &settings, &|c| {
        c.psql(WORKLOAD);
    });
    println!(
        "PostgreSQL's archive recovery took {:.2} s",
        rec.recovery_time.as_secs_f64()
    );
    let records = rec.records();
    assert_eq!(
        records
            .last()
            .map(|r| next_record_start(r.end_lsn, 16 * 1024 * 1024)),
        Some(rec.target_lsn),
        "the WAL read must reach the target LSN"
    );
    let blocks = block_uses_as(records.iter().map(|r| &r.data[..]), record_format()).unwrap();
    Wal {
        base: rec.base,
        expected: rec.expected,
        records,
        blocks,
    }
}

#[derive(Default, Debug)]
struct Tally {
    requests: u64,
    records_applied: u64,
    checks_expected: u64,
    unstartable: u64,
    failures: Vec<String>,
    /// Per fork: compared with recovery, identical, different, gone from the
    /// recovered cluster (relation dropped or truncated).
    compared: [u64; 4],
    identical: [u64; 4],
    different: Vec<String>,
    /// Free-space-map pages: not WAL-logged, compared but not judged.
    fsm_different: Vec<String>,
    gone: [u64; 4],
}

/// Rebuild every block through pg_walredo: one request per run of records
/// between two initializing records, so that every record is applied (and
/// checked) once.
fn rebuild_all(wal: &Wal, blocks: &[(&PageTag, &Vec<Use>)]) -> (Tally, String) {
    let config = Config {
        verify: true,
        ..config()
    };
    let mut redoer = Redoer::new(&config).unwrap();
    let mut t = Tally::default();
    for (tag, refs) in blocks {
        let mut last_page = None;
        let mut removed = false;
        for seg in runs(refs) {
            // A truncation or drop: the block is gone after it (a removal
            // followed by records that do not initialize it cannot be
            // rebuilt).
            removed = seg[0].removal.is_some();
            if removed {
                last_page = None;
                if seg.len() > 1 {
                    t.unstartable += 1;
                }
                continue;
            }
            let base = if seg[0].initializes {
                None
            } else {
                match read_page(&wal.base, tag).unwrap() {
                    Some(p) => Some(p),
                    None if starts_as_zero_page(tag) => Some(Box::new([0u8; PAGE_SIZE])),
                    None => {
                        t.unstartable += 1;
                        last_page = None;
                        continue;
                    }
                }
            };
            let recs = record_refs(&wal.records, seg);
            t.requests += 1;
            match redoer.redo(tag, base.as_deref(), &recs) {
                Ok(page) => {
                    t.records_applied += recs.len() as u64;
                    t.checks_expected += seg.iter().filter(|u| u.checked).count() as u64;
                    last_page = Some(page);
                }
                Err(e) => {
                    t.failures.push(format!("{tag}: {e}"));
                    last_page = None;
                }
            }
        }

        let fork = tag.forknum as usize;
        let Some(page) = last_page else {
            if removed {
                match read_page(&wal.expected, tag).unwrap() {
                    None => t.gone[fork] += 1,
                    Some(_) => t
                        .different
                        .push(format!("{tag}: removed by the WAL, but recovery has it")),
                }
            }
            continue;
        };
        match read_page(&wal.expected, tag).unwrap() {
            None => t.gone[fork] += 1,
            Some(expected) => {
                t.compared[fork] += 1;
                if *expected == *page {
                    t.identical[fork] += 1;
                } else {
                    let off = (0..PAGE_SIZE).find(|&i| expected[i] != page[i]).unwrap();
                    let line = format!("{tag}: first difference at byte {off}");
                    // Free-space-map pages are not WAL-logged: PostgreSQL's
                    // recovery keeps whatever the base had, roughly updated.
                    if fork == FSM_FORKNUM as usize {
                        t.fsm_different.push(line);
                    } else {
                        t.different.push(line);
                    }
                }
            }
        }
    }
    let summary = redoer.shutdown();
    (t, summary)
}

/// The counts pg_walredo reports when it exits with verification on.
fn parse_summary(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("pg_walredo verification summary"))
        .unwrap_or_else(|| panic!("no verification summary in:\n{stderr}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    (field("records"), field("checks"), field("skipped"))
}

#[test]
fn real_wal_matches_postgres() {
    // Only the segments this test makes count (assert_no_leftovers).
    isolate_ipc();
    init_logging();
    let tmp = TempDir::new("realwal");
    let wal = write_workload(tmp.path());
    let wal_bytes: usize = wal.records.iter().map(|r| r.data.len()).sum();
    println!(
        "WAL: {} records ({} MB) touching {} blocks",
        wal.records.len(),
        wal_bytes / 1_000_000,
        wal.blocks.len()
    );

    // Two workers, one process each: the machine has two cores.
    let all: Vec<_> = wal.blocks.iter().collect();
    let started = Instant::now();
    let halves: Vec<_> = all.chunks(all.len().div_ceil(2)).collect();
    let results: Vec<(Tally, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = halves
            .iter()
            .map(|chunk| s.spawn(|| rebuild_all(&wal, chunk)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = started.elapsed();

    let mut t = Tally::default();
    let (mut records, mut checks, mut skipped) = (0, 0, 0);
    for (part, summary) in results {
        let (r, c, s) = parse_summary(&summary);
        records += r;
        checks += c;
        skipped += s;
        t.requests += part.requests;
        t.records_applied += part.records_applied;
        t.checks_expected += part.checks_expected;
        t.unstartable += part.unstartable;
        t.failures.extend(part.failures);
        t.different.extend(part.different);
        t.fsm_different.extend(part.fsm_different);
        for f in 0..4 {
            t.compared[f] += part.compared[f];
            t.identical[f] += part.identical[f];
            t.gone[f] += part.gone[f];
        }
    }

    println!(
        "rebuilt {} blocks in {} requests in {:.2} s",
        wal.blocks.len(),
        t.requests,
        took.as_secs_f64()
    );
    println!(
        "records applied: {} (pg_walredo counted {records})",
        t.records_applied
    );
    println!("consistency checks made: {checks} (skipped {skipped}: will-init or applied images); mismatches: 0");
    println!("blocks without a starting point: {}", t.unstartable);
    for (f, name) in ["main", "fsm", "vm", "init"].iter().enumerate() {
        println!(
            "fork {name}: compared with PostgreSQL's recovery {}, identical {}, not in recovered cluster {}",
            t.compared[f], t.identical[f], t.gone[f]
        );
    }
    for d in t.different.iter().take(20) {
        println!("DIFFERENT {d}");
    }
    for d in &t.fsm_different {
        println!("different (free-space map, not WAL-logged): {d}");
    }
    for f in t.failures.iter().take(20) {
        println!("FAILED {f}");
    }

    assert!(
        t.failures.is_empty(),
        "{} requests failed",
        t.failures.len()
    );
    assert_eq!(
        records, t.records_applied,
        "pg_walredo applied every record sent"
    );
    // Every check the WAL asked for was made or legitimately skipped.
    assert!(checks + skipped >= t.checks_expected);
    assert!(
        checks >= 5000,
        "too few consistency checks ({checks}) to mean anything"
    );
    assert_eq!(t.unstartable, 0);
    assert!(t.compared[MAIN_FORKNUM as usize] >= 800);
    let vm = VISIBILITYMAP_FORKNUM as usize;
    assert!(
        t.compared[vm] >= 6,
        "only {} visibility-map pages compared",
        t.compared[vm]
    );
    assert!(
        t.different.is_empty(),
        "{} pages differ from PostgreSQL's recovery",
        t.different.len()
    );

    negative_controls(&wal);
    vm_negative_control(&wal);
    pg_walredo_checks_side_effect_targets(&wal);
    assert_no_leftovers();
}

/// pg_walredo's own checks, without the library's validation in front: a
/// heap record is applied to a visibility-map page it clears bits of (and
/// gives the library's answer), refused for any other; a truncation is
/// refused for anything but the visibility-map page it cuts into.
fn pg_walredo_checks_side_effect_targets(wal: &Wal) {
    use std::time::Duration;
    use walredo::process::launch::Launcher;
    use walredo::process::protocol::write_request;
    use walredo::process::Process;

    let side = |pred: &dyn Fn(&record::DecodedRecord<'_>) -> bool| {
        wal.blocks.iter().find_map(|(tag, uses)| {
            uses.iter()
                .filter(|u| u.side_effect)
                .find(|u| {
                    pred(&record::decode_as(&wal.records[u.record].data, record_format()).unwrap())
                })
                .map(|u| (*tag, &wal.records[u.record]))
        })
    };
    // Up to 15, heap records change visibility-map pages without naming
    // them; 17.12 and 18 register the page as a block reference (fork vm)
    // of the record that clears it, and then no side effect is left.
    let vm_ref = || {
        wal.blocks.iter().find_map(|(tag, uses)| {
            uses.iter()
                .filter(|_| tag.forknum == VISIBILITYMAP_FORKNUM)
                .find(|u| {
                    record::decode_as(&wal.records[u.record].data, record_format())
                        .unwrap()
                        .rmid
                        == 10
                })
                .map(|u| (*tag, &wal.records[u.record]))
        })
    };
    let (vm_tag, heap_rec) = side(&|d| d.rmid == 10)
        .or_else(|| {
            println!("no heap record changes a VM page as a side effect: this server names them");
            vm_ref()
        })
        .expect("a heap record routed to a VM page");
    let (cut_tag, trunc_rec) = side(&|d| d.rmid == 2).expect("a truncation routed to a VM page");
    let zero = Box::new([0u8; PAGE_SIZE]);
    let launcher = Launcher::new(&config()).unwrap();
    let send = |tag: &PageTag, rec: &WalRecord| -> Result<Box<[u8; PAGE_SIZE]>, String> {
        let mut process = Process::spawn(&launcher).unwrap();
        process.handshake(Duration::from_secs(30)).unwrap();
        let refs = [RecordRef {
            end_lsn: rec.end_lsn,
            data: &rec.data,
        }];
        let mut req = Vec::new();
        write_request(&mut req, tag, Some(&zero), &refs);
        let mut page = Box::new([0u8; PAGE_SIZE]);
        match process.transact(&req, &mut page[..], Duration::from_secs(30)) {
            Ok(()) => Ok(page),
            Err(_) => Err(process.kill_and_collect_stderr()),
        }
    };
    let via_library = |tag: &PageTag, rec: &WalRecord| {
        let refs = [RecordRef {
            end_lsn: rec.end_lsn,
            data: &rec.data,
        }];
        Redoer::new(&config())
            .unwrap()
            .redo(tag, Some(&zero), &refs)
    };
    // The right targets: the same page as through the library.
    for (tag, rec) in [(vm_tag, heap_rec), (cut_tag, trunc_rec)] {
        let direct = send(&tag, rec).unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(*direct, *via_library(&tag, rec).unwrap());
    }
    // Any other page: FATAL in pg_walredo, and refused by the library too.
    let other_vm = PageTag {
        blkno: vm_tag.blkno + 1,
        ..vm_tag
    };
    let heap_of_cut = PageTag {
        forknum: MAIN_FORKNUM,
        ..cut_tag
    };
    for (tag, rec, want) in [
        (other_vm, heap_rec, "does not change the target block"),
        (heap_of_cut, trunc_rec, "refuses a Storage record"),
        (
            PageTag {
                blkno: cut_tag.blkno + 1,
                ..cut_tag
            },
            trunc_rec,
            "refuses a Storage record",
        ),
    ] {
        let stderr =
            send(&tag, rec).expect_err("pg_walredo applied a record to a page it does not change");
        assert!(
            stderr.contains("FATAL") && stderr.contains(want),
            "{tag}: {stderr}"
        );
        assert!(matches!(
            via_library(&tag, rec),
            Err(Error::InvalidArgument(_))
        ));
    }
    println!(
        "pg_walredo applies a heap record to {vm_tag} and a truncation to {cut_tag}, and refuses \
         both for other pages"
    );
}

/// Without the records that change a visibility-map page as a side effect
/// (heap clears, truncations), the oracle must find visibility-map pages
/// that differ from PostgreSQL's recovery: the routing is what makes them
/// right.
fn vm_negative_control(wal: &Wal) {
    let mut redoer = Redoer::new(&config()).unwrap();
    let (mut compared, mut different) = (0, 0);
    for (tag, uses) in &wal.blocks {
        if tag.forknum != VISIBILITYMAP_FORKNUM || !uses.iter().any(|u| u.side_effect) {
            continue;
        }
        let named: Vec<Use> = uses.iter().filter(|u| !u.side_effect).copied().collect();
        let Some(expected) = read_page(&wal.expected, tag).unwrap() else {
            continue;
        };
        let mut page = read_page(&wal.base, tag)
            .unwrap()
            .unwrap_or_else(|| Box::new([0u8; PAGE_SIZE]));
        for seg in runs(&named) {
            let base = (!seg[0].initializes).then_some(&*page);
            page = redoer
                .redo(tag, base, &record_refs(&wal.records, seg))
                .unwrap();
        }
        compared += 1;
        if *page != *expected {
            different += 1;
        }
    }
    println!(
        "negative control, visibility-map pages without their side-effect records: \
         {different} of {compared} differ from PostgreSQL's recovery"
    );
    assert!(different > 0, "dropping the routed records changed nothing");
}

/// A heap page with a run of at least `min` records after an applied image.
fn heap_run(wal: &Wal, min: usize) -> (PageTag, Vec<usize>) {
    for (tag, refs) in &wal.blocks {
        if tag.forknum != MAIN_FORKNUM {
            continue;
        }
        let rec0 = record::decode_as(&wal.records[refs[0].record].data, record_format()).unwrap();
        if rec0.rmid != 10 {
            continue; // not Heap
        }
        let mut run = Vec::new();
        for u in refs {
            if u.initializes {
                run.clear();
            } else if !u.checked {
                break;
            }
            run.push(u.record);
        }
        let img = record::decode_as(&wal.records[run[0]].data, record_format())
            .unwrap()
            .block_for(tag)
            .unwrap()
            .image
            .is_some_and(|i| i.apply());
        if img && run.len() >= min {
            return (*tag, run);
        }
    }
    panic!("no heap page with {min} checked records after an image");
}

fn refs<'a>(wal: &'a Wal, idx: &[usize]) -> Vec<RecordRef<'a>> {
    idx.iter()
        .map(|&i| RecordRef {
            end_lsn: wal.records[i].end_lsn,
            data: &wal.records[i].data,
        })
        .collect()
}

/// The tuple data of item `item` of a heap page, if it is a normal one.
fn tuple_data(page: &[u8], item: usize) -> Option<(usize, &[u8])> {
    let pd_lower = u16::from_le_bytes(page[12..14].try_into().unwrap()) as usize;
    let at = 24 + 4 * item;
    if at + 4 > pd_lower {
        return None;
    }
    let lp = u32::from_le_bytes(page[at..at + 4].try_into().unwrap());
    let (off, flags, len) = ((lp & 0x7fff) as usize, (lp >> 15) & 3, (lp >> 17) as usize);
    let t_hoff = *page.get(off + 22)? as usize;
    (flags == 1 && len > t_hoff && off + len <= page.len())
        .then(|| (off + t_hoff, &page[off + t_hoff..off + len]))
}

/// The offset in `base` of the first data byte of a tuple that `last` still
/// has, unchanged, at the same item.
fn surviving_tuple_byte(base: &[u8], last: &[u8]) -> usize {
    (0..PAGE_SIZE / 4)
        .find_map(|i| {
            let (at, data) = tuple_data(base, i)?;
            (tuple_data(last, i)?.1 == data).then_some(at)
        })
        .expect("a tuple the run leaves alone")
}

fn negative_controls(wal: &Wal) {
    let verify = Config {
        verify: true,
        ..config()
    };
    let mut redoer = Redoer::new(&verify).unwrap();
    let (tag, run) = heap_run(wal, 4);
    let all = refs(wal, &run);
    let good = redoer.redo(&tag, None, &all).unwrap();

    // The page as of the image, then the rest on top of it: same result.
    let at_image = redoer.redo(&tag, None, &all[..1]).unwrap();
    let again = redoer.redo(&tag, Some(&at_image), &all[1..]).unwrap();
    assert_eq!(*again, *good);

    // 1. One corrupted byte of tuple data in the base page, of a tuple the
    // later records leave alone (one they remove takes the byte with it).
    let mut corrupt = at_image.clone();
    corrupt[surviving_tuple_byte(&at_image[..], &good[..])] ^= 0xff;
    match redoer.redo(&tag, Some(&corrupt), &all[1..]) {
        Err(Error::RedoFailed { message, .. }) => {
            assert!(message.contains("inconsistent page found"), "{message}");
            println!("negative control, corrupted base page: caught: {message}");
        }
        other => panic!("a corrupted base page went unnoticed: {other:?}"),
    }
    // ... and the oracle of PostgreSQL's recovery sees it too (without verify).
    let mut plain = Redoer::new(&config()).unwrap();
    let wrong = plain.redo(&tag, Some(&corrupt), &all[1..]).unwrap();
    assert_ne!(
        *wrong, *good,
        "a corrupted base page produced the right page"
    );

    // 2. One record dropped from the middle of the run.
    let mut dropped = all.clone();
    dropped.remove(2);
    match redoer.redo(&tag, None, &dropped) {
        Err(Error::RedoFailed { message, .. }) => {
            println!("negative control, dropped record: caught: {message}")
        }
        other => panic!("a dropped record went unnoticed: {other:?}"),
    }

    // 3. Malformed records never reach a process.
    redoer.ping().unwrap();
    let pid = redoer.pid();
    assert!(pid.is_some());
    let mut bad = all[1].data.to_vec();
    bad[30] ^= 1;
    let bad_ref = [
        all[0],
        RecordRef {
            end_lsn: all[1].end_lsn,
            data: &bad,
        },
    ];
    match redoer.redo(&tag, None, &bad_ref) {
        Err(Error::MalformedRecord { index: 1, source }) => {
            println!("malformed record refused: {source}")
        }
        other => panic!("a bad CRC was not refused: {other:?}"),
    }
    assert_eq!(
        redoer.pid(),
        pid,
        "a refused request must not cost the process"
    );
    println!(
        "negative controls on {tag} ({} records from {}): all caught",
        run.len(),
        format_lsn(wal.records[run[0]].end_lsn)
    );
}
