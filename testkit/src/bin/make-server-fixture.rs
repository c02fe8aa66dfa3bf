//! Write the fixture of c_tests/test_server.c, which indexes WAL the way a
//! page server does and rebuilds every page it changed: the records of a
//! workload run by a throw-away PostgreSQL cluster (commit timestamps on)
//! with the data directory before it (BASE) and PostgreSQL's archive
//! recovery of it (EXPECTED). The workload: a table with btree indexes
//! (inserts, HOT and cross-page updates, deletes, VACUUM), one of thousands
//! of pages (three rows a page; visibility-map bits set and cleared), an
//! unlogged table (init forks), then `make demo`'s SLRU part
//! (cli/demo/slru.sql): aborts and a rollback to a savepoint, prepared
//! transactions committed and rolled back, one commit of 40,000
//! subtransactions (two `pg_xact` pages), 3,000 multixacts of two members
//! (an offsets page crossed, several members pages) and VACUUM FULL of a
//! local and a shared mapped catalog (relation map updates).
//!
//!   cargo run --release -p walredo-testkit --bin make-server-fixture -- OUTDIR
//!
//! Writes OUTDIR/records.bin (per record from BASE's REDO location up to
//! the recovery target: start LSN u64, end LSN u64, length u32, the raw
//! XLogRecord; little-endian), OUTDIR/base and OUTDIR/expected (the data
//! directories) and OUTDIR/info.txt (`pg_version N`, `commit_ts on|off`:
//! BASE's track_commit_timestamp).

use std::fs;

use walredo::wal::format_lsn;
use walredo_testkit::cluster::{controldata, copy_tree};
use walredo_testkit::fixtures::FixtureRun;
use walredo_testkit::install::pg_version;

const SETTINGS: &[&str] = &[
    "max_prepared_transactions = 10",
    "track_commit_timestamp = on",
];

const WORKLOAD: &str = r#"
CREATE TABLE items (id int PRIMARY KEY, label text, qty int);
CREATE INDEX items_qty ON items (qty);
INSERT INTO items SELECT g, 'item ' || g, g % 97 FROM generate_series(1, 6000) g;
UPDATE items SET qty = qty + 1 WHERE id % 7 = 0;
UPDATE items SET label = label || repeat('!', 200) WHERE id % 11 = 0;
DELETE FROM items WHERE id % 5 = 0;
VACUUM items;
INSERT INTO items SELECT g, 'late ' || g, g FROM generate_series(6001, 6400) g;
-- Thousands of pages: three rows a page, HOT updates, deletes, VACUUM
-- (visibility-map bits set), then updates that clear bits.
CREATE TABLE spread (id int PRIMARY KEY, pad text) WITH (fillfactor = 10);
INSERT INTO spread SELECT g, repeat('s', 200) FROM generate_series(1, 8000) g;
UPDATE spread SET pad = repeat('u', 200) WHERE id % 3 = 0;
DELETE FROM spread WHERE id % 7 = 0;
VACUUM spread;
UPDATE spread SET pad = 'after vacuum' WHERE id % 50 = 1;
-- Init forks: an unlogged table's index logs its empty metapage.
CREATE UNLOGGED TABLE ul (id int PRIMARY KEY, v text);
INSERT INTO ul VALUES (1, 'not logged');
"#;

/// The SLRU part, `make demo`'s: subtransactions, aborts, prepared
/// transactions, multixacts, mapped catalogs rewritten.
const SLRU_WORKLOAD: &str = include_str!("../../../cli/demo/slru.sql");

fn main() {
    let started = std::time::Instant::now();
    let workload = format!("{WORKLOAD}\n{SLRU_WORKLOAD}");
    let fixture = FixtureRun::record_with("make-server-fixture", &[], SETTINGS, &workload);
    let (out, rec) = (&fixture.out, &fixture.rec);
    let mut bin = Vec::new();
    let mut n = 0;
    let mut last_end = rec.start_lsn;
    for r in rec.records() {
        bin.extend_from_slice(&r.start_lsn.to_le_bytes());
        bin.extend_from_slice(&r.end_lsn.to_le_bytes());
        bin.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
        bin.extend_from_slice(&r.data);
        last_end = r.end_lsn;
        n += 1;
    }
    // What the test reads of each data directory: relation files and maps,
    // and the SLRUs (not pg_wal: a third of a directory's size).
    for (from, name) in [(&rec.base, "base"), (&rec.expected, "expected")] {
        let to = out.join(name);
        let _ = fs::remove_dir_all(&to);
        fs::create_dir_all(&to).unwrap();
        for dir in ["global", "base", "pg_xact", "pg_multixact", "pg_commit_ts"] {
            copy_tree(&from.join(dir), &to.join(dir));
        }
    }
    let commit_ts = &controldata(&rec.base)["track_commit_timestamp setting"];
    fs::write(
        out.join("info.txt"),
        format!("pg_version {}\ncommit_ts {commit_ts}\n", pg_version()),
    )
    .unwrap();
    // Last: run.sh takes a fixture with records.bin for a complete one.
    fs::write(out.join("records.bin"), &bin).unwrap();
    println!(
        "make-server-fixture: {n} records ({} bytes, {} to {}), commit_ts {commit_ts}, in {} ({:.1} s)",
        bin.len(),
        format_lsn(rec.start_lsn),
        format_lsn(last_end),
        out.display(),
        started.elapsed().as_secs_f64()
    );
}
