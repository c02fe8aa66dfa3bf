//! Write test fixtures for the C tests: real WAL from a throw-away PostgreSQL 15
//! cluster, cut into redo requests, each with the page PostgreSQL's own archive
//! recovery produced.
//!
//!   cargo run --release --example make_fixtures -- OUTDIR
//!
//! Writes OUTDIR/case-000.bin, case-001.bin, ... in this format (little-endian):
//!
//! ```text
//! char magic[8] = "WRFIXT01"
//! u32 spcnode, dbnode, relnode, forknum, blkno
//! u32 has_base; [8192-byte base page]
//! u32 n_records; n x { u64 end_lsn; u32 len; len bytes of XLogRecord }
//! u32 expect_status   (0 = WALREDO_OK, else the WALREDO_* code expected)
//! [8192-byte expected page, when expect_status is 0]
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use walredo::cluster::record_workload;
use walredo::datadir::read_page;
use walredo::plan::{block_uses, last_run, record_refs};
use walredo::tag::MAIN_FORKNUM;
use walredo::wal::{WalReader, WalRecord};
use walredo::{Config, PageTag, RecordRef, Redoer, PAGE_SIZE};

const WORKLOAD: &str = r#"
CREATE TABLE items (id int PRIMARY KEY, label text, qty int);
CREATE INDEX items_qty ON items (qty);
INSERT INTO items SELECT g, 'item ' || g, g % 97 FROM generate_series(1, 3000) g;
UPDATE items SET qty = qty + 1 WHERE id % 7 = 0;
UPDATE items SET label = label || repeat('!', 200) WHERE id % 11 = 0;
DELETE FROM items WHERE id % 5 = 0;
VACUUM items;
INSERT INTO items SELECT g, 'late ' || g, g FROM generate_series(3001, 3400) g;
CHECKPOINT;
"#;

const WALREDO_OK: u32 = 0;
const WALREDO_INVALID_ARGUMENT: u32 = 1;
const WALREDO_MALFORMED_RECORD: u32 = 2;
const WALREDO_REDO_FAILED: u32 = 3;

struct Case<'a> {
    tag: PageTag,
    base: Option<Box<[u8; PAGE_SIZE]>>,
    records: Vec<RecordRef<'a>>,
    expect_status: u32,
    expected: Option<Box<[u8; PAGE_SIZE]>>,
}

fn write_case(path: &Path, case: &Case) {
    let mut b = Vec::new();
    b.extend_from_slice(b"WRFIXT01");
    for v in [
        case.tag.rel.spcnode,
        case.tag.rel.dbnode,
        case.tag.rel.relnode,
        u32::from(case.tag.forknum),
        case.tag.blkno,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&u32::from(case.base.is_some()).to_le_bytes());
    if let Some(base) = &case.base {
        b.extend_from_slice(&base[..]);
    }
    b.extend_from_slice(&(case.records.len() as u32).to_le_bytes());
    for r in &case.records {
        b.extend_from_slice(&r.end_lsn.to_le_bytes());
        b.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
        b.extend_from_slice(r.data);
    }
    b.extend_from_slice(&case.expect_status.to_le_bytes());
    if let Some(page) = &case.expected {
        b.extend_from_slice(&page[..]);
    }
    fs::write(path, b).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: make_fixtures OUTDIR"),
    );
    fs::create_dir_all(&out).unwrap();
    let work = std::env::temp_dir().join(format!("walredo-fixtures-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap();
    if let Some(ids) = walredo::cluster::user() {
        std::os::unix::fs::chown(&work, Some(ids.uid), Some(ids.gid)).unwrap();
    }

    let settings = ["autovacuum = off", "wal_keep_size = 1GB", "fsync = off"];
    let rec = record_workload(&work, &[], &settings, &|c| {
        c.psql(WORKLOAD);
    });
    let records: Vec<WalRecord> = WalReader::open(&rec.wal_dir, Some(rec.start_lsn))
        .unwrap()
        .map(Result::unwrap)
        .take_while(|r| r.start_lsn < rec.target_lsn)
        .collect();
    let blocks = block_uses(records.iter().map(|r| &r.data[..])).unwrap();

    let extension = concat!(env!("CARGO_MANIFEST_DIR"), "/pg_walredo/pg_walredo.so");
    let config = Config {
        extension_path: Some(extension.into()),
        ..Config::default()
    };
    let mut redoer = Redoer::new(&config).unwrap();
    let mut cases: Vec<Case> = Vec::new();

    // Final pages of main-fork blocks of the workload's relations, replayed
    // from their last initializing record, as PostgreSQL's recovery left them.
    for (tag, uses) in &blocks {
        if tag.forknum != MAIN_FORKNUM || tag.rel.relnode < 16384 || cases.len() >= 40 {
            continue;
        }
        let run = last_run(uses);
        let Some(expected) = read_page(&rec.expected, tag).unwrap() else {
            continue;
        };
        let base = if run[0].initializes {
            None
        } else {
            match read_page(&rec.base, tag).unwrap() {
                Some(p) => Some(p),
                None => continue,
            }
        };
        cases.push(Case {
            tag: *tag,
            base,
            records: record_refs(&records, run),
            expect_status: WALREDO_OK,
            expected: Some(expected),
        });
    }

    // The same with a base page: the page as of the run's first record (made
    // by redo here; the final page is still PostgreSQL's).
    let with_base: Vec<(PageTag, Vec<RecordRef>, Box<[u8; PAGE_SIZE]>)> = cases
        .iter()
        .filter(|c| c.base.is_none() && c.records.len() >= 3)
        .take(5)
        .map(|c| (c.tag, c.records.clone(), c.expected.clone().unwrap()))
        .collect();
    for (tag, recs, expected) in with_base {
        let base = redoer.redo(&tag, None, &recs[..1]).unwrap();
        cases.push(Case {
            tag,
            base: Some(base),
            records: recs[1..].to_vec(),
            expect_status: WALREDO_OK,
            expected: Some(expected),
        });
    }

    // A record dropped from the middle of a run: PostgreSQL's redo fails.
    let dropped = cases
        .iter()
        .filter(|c| c.base.is_none() && c.records.len() >= 4)
        .find_map(|c| {
            let mut recs = c.records.clone();
            recs.remove(1);
            match redoer.redo(&c.tag, None, &recs) {
                Err(walredo::Error::RedoFailed { .. }) => Some((c.tag, recs)),
                _ => None,
            }
        })
        .expect("a run whose redo fails without its second record");
    cases.push(Case {
        tag: dropped.0,
        base: None,
        records: dropped.1,
        expect_status: WALREDO_REDO_FAILED,
        expected: None,
    });

    // A corrupted record: refused by its CRC before it reaches a process.
    let mut corrupt_data: Vec<Vec<u8>> = Vec::new();
    let sample = cases
        .iter()
        .find(|c| c.base.is_none() && c.records.len() >= 2)
        .expect("a run of two records");
    let mut bad = sample.records[1].data.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    corrupt_data.push(bad);
    let (tag0, first0, end1) = (sample.tag, sample.records[0], sample.records[1].end_lsn);
    cases.push(Case {
        tag: tag0,
        base: None,
        records: vec![
            first0,
            RecordRef {
                end_lsn: end1,
                data: &corrupt_data[0],
            },
        ],
        expect_status: WALREDO_MALFORMED_RECORD,
        expected: None,
    });

    // A valid record that does not touch the target page.
    let other = cases
        .iter()
        .find(|c| c.tag != tag0)
        .map(|c| c.records[0])
        .unwrap();
    cases.push(Case {
        tag: tag0,
        base: None,
        records: vec![first0, other],
        expect_status: WALREDO_INVALID_ARGUMENT,
        expected: None,
    });

    for (i, case) in cases.iter().enumerate() {
        write_case(&out.join(format!("case-{i:03}.bin")), case);
    }
    redoer.shutdown();
    let _ = fs::remove_dir_all(&work);
    println!(
        "wrote {} fixtures to {} ({} records of real WAL)",
        cases.len(),
        out.display(),
        records.len()
    );
}
