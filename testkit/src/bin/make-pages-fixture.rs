//! Write the fixture of c_tests/test_pages.c: the records of a workload run
//! by a throw-away PostgreSQL 15 cluster that sets visibility-map bits and
//! clears them with every kind of heap change (insert, COPY, HOT and
//! cross-page updates, deletes, row locks) and truncates a table's tail,
//! with pg_waldump's own description of the same WAL.
//!
//!   cargo run --release -p walredo-testkit --bin make-pages-fixture -- OUTDIR
//!
//! Writes OUTDIR/records.bin (per record: start LSN u64, length u32, the raw
//! XLogRecord; little-endian) and OUTDIR/waldump.txt (pg_waldump's output
//! for the same range: one line per record, its block references inline).

use std::fs;

use walredo::wal::format_lsn;
use walredo_testkit::cluster::run;
use walredo_testkit::fixtures::FixtureRun;

const WORKLOAD: &str = "
CREATE TABLE v (id int PRIMARY KEY, n int, pad text) WITH (fillfactor = 70);
INSERT INTO v SELECT g, g, repeat('v', 60) FROM generate_series(1, 4000) g;
DELETE FROM v WHERE id % 30 = 0;
VACUUM FREEZE v;
INSERT INTO v SELECT g, 0, 'in' FROM generate_series(30, 4000, 300) g;
UPDATE v SET pad = pad || 'h' WHERE id % 211 = 1;
UPDATE v SET id = id + 100000 WHERE id % 307 = 2;
UPDATE v SET pad = repeat('w', 400) WHERE id % 401 = 3;
DELETE FROM v WHERE id % 199 = 4;
SELECT count(*) FROM (SELECT id FROM v WHERE id % 173 = 5 FOR KEY SHARE) l;
COPY v FROM STDIN;
60	1	copied
90	1	copied
120	1	copied
\\.
DELETE FROM v WHERE id > 3000;
VACUUM v;
";

fn main() {
    let fixture = FixtureRun::record("make-pages-fixture", &[], WORKLOAD);
    let (out, rec) = (&fixture.out, &fixture.rec);
    let mut bin = Vec::new();
    let mut n = 0;
    let mut last_end = rec.start_lsn;
    for r in rec.records() {
        bin.extend_from_slice(&r.start_lsn.to_le_bytes());
        bin.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
        bin.extend_from_slice(&r.data);
        last_end = r.end_lsn;
        n += 1;
    }
    fs::write(out.join("records.bin"), bin).unwrap();
    let wal_dir = rec.wal_dir.to_str().unwrap().to_string();
    let dump = run(
        "pg_waldump",
        &[
            "-p",
            &wal_dir,
            "-s",
            &format_lsn(rec.start_lsn),
            "-e",
            &format_lsn(last_end),
        ],
    );
    fs::write(out.join("waldump.txt"), &dump.stdout).unwrap();
    println!(
        "make-pages-fixture: {n} records ({} to {}) in {}",
        format_lsn(rec.start_lsn),
        format_lsn(last_end),
        out.display()
    );
}
