//! Write the fixture of c_tests/test_wal.c: the WAL directory of a workload
//! run by a throw-away PostgreSQL 15 cluster (1 MiB segments, so that it
//! spans several), and pages PostgreSQL's archive recovery made of it, with
//! the LSN they are as of.
//!
//!   cargo run --release -p walredo-testkit --bin make-wal-fixture -- OUTDIR
//!
//! Writes OUTDIR/wal/ (segment files) and OUTDIR/expected.bin: a u32 count,
//! then per page: spcnode, dbnode, relnode, forknum, blkno (u32 each), the
//! LSN (u64), the 8192 bytes; little-endian.

use std::collections::BTreeMap;
use std::fs;

use walredo::datadir::read_page;
use walredo::tag::MAIN_FORKNUM;
use walredo::wal::record;
use walredo::wal::source::WalSource;
use walredo::wal::uses::block_uses_as;
use walredo::wal::WalReader;
use walredo_testkit::fixtures::{put_tag, FixtureRun};
use walredo_testkit::harness::record_format;

const WORKLOAD: &str = "
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, repeat('x', 50 + g % 100) FROM generate_series(1, 5000) g;
CHECKPOINT;
UPDATE t SET v = v || 'y' WHERE id % 7 = 0;
DELETE FROM t WHERE id % 11 = 0;
VACUUM t;
";

fn main() {
    let fixture = FixtureRun::record("make-wal-fixture", &["--wal-segsize=1"], WORKLOAD);
    let (out, rec) = (&fixture.out, &fixture.rec);
    let wal = out.join("wal");
    let _ = fs::remove_dir_all(&wal);
    fs::create_dir_all(&wal).unwrap();
    for e in fs::read_dir(&rec.wal_dir).unwrap().flatten() {
        if e.file_name().len() == 24 && e.path().is_file() {
            fs::copy(e.path(), wal.join(e.file_name())).unwrap();
        }
    }
    let records: Vec<_> = WalReader::open(&wal, Some(rec.start_lsn))
        .unwrap()
        .map(Result::unwrap)
        .take_while(|r| r.start_lsn < rec.target_lsn)
        .collect();
    let blocks = block_uses_as(records.iter().map(|r| &r.data[..]), record_format()).unwrap();
    let mut source = WalSource::new(vec![wal.clone()], None);
    let mut bin = Vec::new();
    let mut n = 0u32;
    let mut per_rmgr: BTreeMap<&str, u32> = BTreeMap::new();
    for (tag, uses) in &blocks {
        let rm = record::decode_as(&records[uses[uses.len() - 1].record].data, record_format())
            .unwrap()
            .rmgr_name();
        // At most three pages of each resource manager, several records long.
        if tag.forknum != MAIN_FORKNUM || uses.len() < 2 || per_rmgr.get(rm) >= Some(&3) {
            continue;
        }
        let Ok(plan) = source.plan(tag, rec.target_lsn, &mut || false) else {
            continue;
        };
        let Some(page) = read_page(&rec.expected, tag).unwrap() else {
            continue;
        };
        if plan.records.len() < 2 {
            continue;
        }
        *per_rmgr.entry(rm).or_default() += 1;
        put_tag(&mut bin, tag);
        bin.extend_from_slice(&rec.target_lsn.to_le_bytes());
        bin.extend_from_slice(&page[..]);
        n += 1;
        if n == 6 {
            break;
        }
    }
    assert!(n >= 2, "too few pages for the fixture");
    let mut file = n.to_le_bytes().to_vec();
    file.extend_from_slice(&bin);
    fs::write(out.join("expected.bin"), file).unwrap();
    println!(
        "wrote {} with {n} pages as of {}",
        out.display(),
        walredo::wal::format_lsn(rec.target_lsn)
    );
}
