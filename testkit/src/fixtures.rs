//! Redo requests cut from real WAL, each with the page PostgreSQL's own
//! archive recovery produced (or the error it must give): fixtures for the C
//! tests (written by make-fixtures) and the Rust tests.

use std::fs;
use std::path::{Path, PathBuf};

use crate::cluster::{record_workload, user, RecordedWal};
use walredo::datadir::read_page;
use walredo::tag::MAIN_FORKNUM;
use walredo::wal::uses::{block_uses_as, last_run};
use walredo::{Config, Error, PageTag, RecordRef, Redoer, PAGE_SIZE};

/// The workload the fixtures come from: heap and btree, inserts, HOT and
/// cross-page updates, deletes, vacuum.
const WORKLOAD: &str = r#"
CREATE TABLE items (id int PRIMARY KEY, label text, qty int);
CREATE INDEX items_qty ON items (qty);
INSERT INTO items SELECT g, 'item ' || g, g % 97 FROM generate_series(1, 3000) g;
UPDATE items SET qty = qty + 1 WHERE id % 7 = 0;
UPDATE items SET label = label || repeat('!', 200) WHERE id % 11 = 0;
DELETE FROM items WHERE id % 5 = 0;
VACUUM items;
INSERT INTO items SELECT g, 'late ' || g, g FROM generate_series(3001, 3400) g;
"#;

/// The C status codes the fixtures expect (see include/walredo.h).
pub const EXPECT_OK: u32 = 0;
pub const EXPECT_INVALID_ARGUMENT: u32 = 1;
pub const EXPECT_MALFORMED_RECORD: u32 = 2;
pub const EXPECT_REDO_FAILED: u32 = 3;

/// One redo request and what it must give.
pub struct Fixture {
    pub tag: PageTag,
    pub base: Option<Box<[u8; PAGE_SIZE]>>,
    /// (end LSN, raw XLogRecord)
    pub records: Vec<(u64, Vec<u8>)>,
    pub expect_status: u32,
    /// PostgreSQL's page, when `expect_status` is `EXPECT_OK`.
    pub expected: Option<Box<[u8; PAGE_SIZE]>>,
}

impl Fixture {
    pub fn refs(&self) -> Vec<RecordRef<'_>> {
        self.records
            .iter()
            .map(|(end_lsn, data)| RecordRef {
                end_lsn: *end_lsn,
                data,
            })
            .collect()
    }

    /// The file format of make-fixtures (little-endian):
    /// "WRFIXT01", spcnode, dbnode, relnode, forknum, blkno (u32 each),
    /// has_base (u32) [+ 8192 bytes], n_records (u32) + per record end LSN
    /// (u64), length (u32) and bytes, expect_status (u32) [+ 8192 bytes of
    /// the expected page when it is 0].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"WRFIXT01");
        put_tag(&mut b, &self.tag);
        b.extend_from_slice(&u32::from(self.base.is_some()).to_le_bytes());
        if let Some(base) = &self.base {
            b.extend_from_slice(&base[..]);
        }
        b.extend_from_slice(&(self.records.len() as u32).to_le_bytes());
        for (end_lsn, data) in &self.records {
            b.extend_from_slice(&end_lsn.to_le_bytes());
            b.extend_from_slice(&(data.len() as u32).to_le_bytes());
            b.extend_from_slice(data);
        }
        b.extend_from_slice(&self.expect_status.to_le_bytes());
        if let Some(page) = &self.expected {
            b.extend_from_slice(&page[..]);
        }
        b
    }
}

/// Append `tag` to a fixture file: spcnode, dbnode, relnode, forknum, blkno
/// (u32 each, little-endian).
pub fn put_tag(out: &mut Vec<u8>, tag: &PageTag) {
    for v in [
        tag.rel.spcnode,
        tag.rel.dbnode,
        tag.rel.relnode,
        u32::from(tag.forknum),
        tag.blkno,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// The opening of the programs that write a C test's fixture
/// (make-pages-fixture, make-wal-fixture, make-server-fixture): OUTDIR, their
/// one argument, and the WAL of `workload` run on a throw-away cluster
/// (`initdb_args`) in a fresh work directory, which is removed when this is
/// dropped.
pub struct FixtureRun {
    /// Where the fixture goes (created).
    pub out: PathBuf,
    /// The workload's WAL and what recovery made of it.
    pub rec: RecordedWal,
    work: PathBuf,
}

impl FixtureRun {
    /// `program` names the caller in its usage message and its work
    /// directory.
    pub fn record(program: &str, initdb_args: &[&str], workload: &str) -> FixtureRun {
        FixtureRun::record_with(program, initdb_args, &[], workload)
    }

    /// `record` with `settings` appended to the cluster's usual ones
    /// (autovacuum off, fsync off, WAL kept).
    pub fn record_with(
        program: &str,
        initdb_args: &[&str],
        settings: &[&str],
        workload: &str,
    ) -> FixtureRun {
        let out = PathBuf::from(
            std::env::args()
                .nth(1)
                .unwrap_or_else(|| panic!("usage: {program} OUTDIR")),
        );
        let work = std::env::temp_dir().join(format!("walredo-{program}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).unwrap();
        if let Some(ids) = user() {
            std::os::unix::fs::chown(&work, Some(ids.uid), Some(ids.gid)).unwrap();
        }
        let mut all = vec![
            "autovacuum = off",
            "fsync = off",
            "wal_keep_size = 1GB",
            "max_wal_size = 1GB",
        ];
        all.extend_from_slice(settings);
        let rec = record_workload(&work, initdb_args, &all, &|c| {
            c.psql(workload);
        });
        fs::create_dir_all(&out).unwrap();
        FixtureRun { out, rec, work }
    }
}

impl Drop for FixtureRun {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.work);
    }
}

/// Run the workload on a throw-away cluster in `work` and cut fixtures from
/// its WAL: up to 40 final pages replayed from their last initializing
/// record, 5 of them again from a base page, a run with a record dropped
/// (PostgreSQL PANICs), a record with a bad CRC, and a record that does not
/// reference its target.
pub fn make_fixtures(work: &Path, config: &Config) -> Vec<Fixture> {
    let settings = ["autovacuum = off", "wal_keep_size = 1GB", "fsync = off"];
    let rec = record_workload(work, &[], &settings, &|c| {
        c.psql(WORKLOAD);
    });
    let records: Vec<(u64, u64, Vec<u8>)> = rec
        .records()
        .into_iter()
        .map(|r| (r.start_lsn, r.end_lsn, r.data))
        .collect();
    let blocks = block_uses_as(
        records.iter().map(|r| &r.2[..]),
        crate::harness::record_format(),
    )
    .expect("valid records");
    let mut redoer = Redoer::new(config).expect("a wal-redo process");
    let mut cases: Vec<Fixture> = Vec::new();

    for (tag, uses) in &blocks {
        if tag.forknum != MAIN_FORKNUM || tag.rel.relnode < 16384 || cases.len() >= 40 {
            continue;
        }
        let run = last_run(uses);
        // Removed by a truncation or a drop: no page to expect.
        if run[0].removal.is_some() {
            continue;
        }
        let Some(expected) = read_page(&rec.expected, tag).expect("readable") else {
            continue;
        };
        let base = match (
            run[0].initializes,
            read_page(&rec.base, tag).expect("readable"),
        ) {
            (true, _) => None,
            (false, Some(p)) => Some(p),
            (false, None) => continue,
        };
        cases.push(Fixture {
            tag: *tag,
            base,
            records: run
                .iter()
                .map(|u| (records[u.record].1, records[u.record].2.clone()))
                .collect(),
            expect_status: EXPECT_OK,
            expected: Some(expected),
        });
    }

    // The same with a base page: the page as of the run's first record (made
    // by redo here; the final page is still PostgreSQL's).
    let mut extra = Vec::new();
    for c in cases
        .iter()
        .filter(|c| c.base.is_none() && c.records.len() >= 3)
        .take(5)
    {
        let base = redoer
            .redo(&c.tag, None, &c.refs()[..1])
            .expect("redo of an image");
        extra.push(Fixture {
            tag: c.tag,
            base: Some(base),
            records: c.records[1..].to_vec(),
            expect_status: EXPECT_OK,
            expected: c.expected.clone(),
        });
    }

    // A record dropped from the middle of a run: PostgreSQL's redo fails.
    let dropped = cases
        .iter()
        .filter(|c| c.base.is_none() && c.records.len() >= 4)
        .find_map(|c| {
            let mut records = c.records.clone();
            records.remove(1);
            let failed = Fixture {
                tag: c.tag,
                base: None,
                records,
                expect_status: EXPECT_REDO_FAILED,
                expected: None,
            };
            let outcome = redoer.redo(&failed.tag, None, &failed.refs());
            matches!(outcome, Err(Error::RedoFailed { .. })).then_some(failed)
        })
        .expect("a run whose redo fails without its second record");

    // A corrupted record, refused by its CRC; a valid record of another page.
    let sample = cases
        .iter()
        .find(|c| c.base.is_none() && c.records.len() >= 2)
        .expect("a run of two records");
    let mut corrupt = sample.records[..2].to_vec();
    let last = corrupt[1].1.len() - 1;
    corrupt[1].1[last] ^= 0x40;
    let other = cases
        .iter()
        .find(|c| c.tag != sample.tag)
        .expect("two pages");
    let refused = [
        Fixture {
            tag: sample.tag,
            base: None,
            records: corrupt,
            expect_status: EXPECT_MALFORMED_RECORD,
            expected: None,
        },
        Fixture {
            tag: sample.tag,
            base: None,
            records: vec![sample.records[0].clone(), other.records[0].clone()],
            expect_status: EXPECT_INVALID_ARGUMENT,
            expected: None,
        },
    ];
    redoer.shutdown();
    cases.extend(extra);
    cases.push(dropped);
    cases.extend(refused);
    cases
}
