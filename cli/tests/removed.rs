//! Blocks that a truncation or a drop removed, through every user of a plan:
//! `walredo page` (page_as_of), `walredo verify`, and a WAL source's plan
//! (the C ABI's walredo_wal_plan, walredo_inspect) give the same answer in
//! the same words: the block did not exist at that LSN.

use std::cell::RefCell;

use walredo::tag::{PageTag, RelFileNode, MAIN_FORKNUM};
use walredo::wal::source::{SourceError, WalSource};
use walredo::Config;
use walredo_cli::verify::{page_as_of, verify, VerifyOptions};
use walredo_testkit::cluster::record_workload;
use walredo_testkit::harness::*;

#[test]
fn truncated_blocks_did_not_exist() {
    let _test = isolated_test();
    let tmp = TempDir::new("removed");
    // (db, tr's node, gone's node, LSN after the truncation, after re-extension)
    let seen = RefCell::new((0u32, 0u32, 0u32, String::new(), String::new()));
    let rec = record_workload(
        tmp.path(),
        &[],
        &["wal_keep_size = 1GB", "fsync = off", "autovacuum = off"],
        &|c| {
            c.psql(
                "CREATE TABLE tr (id int, pad text);
                 INSERT INTO tr SELECT g, repeat('x', 500) FROM generate_series(1, 80) g;
                 CREATE TABLE gone AS SELECT generate_series(1, 100) id;",
            );
            let mut s = seen.borrow_mut();
            s.0 = c
                .psql("SELECT oid FROM pg_database WHERE datname = 'postgres';")
                .parse()
                .unwrap();
            s.1 = c
                .psql("SELECT pg_relation_filenode('tr');")
                .parse()
                .unwrap();
            s.2 = c
                .psql("SELECT pg_relation_filenode('gone');")
                .parse()
                .unwrap();
            c.psql("DELETE FROM tr WHERE (ctid::text::point)[0] >= 2; VACUUM tr; DROP TABLE gone;");
            s.3 = c.psql("SELECT pg_current_wal_insert_lsn();");
            c.psql("INSERT INTO tr SELECT g, repeat('y', 500) FROM generate_series(81, 100) g;");
            s.4 = c.psql("SELECT pg_current_wal_insert_lsn();");
        },
    );
    let (db, tr, gone, truncated, again) = seen.into_inner();
    let truncated = walredo::wal::parse_lsn(&truncated).unwrap();
    let again = walredo::wal::parse_lsn(&again).unwrap();
    let tag = |relnode, blkno| PageTag {
        rel: RelFileNode {
            spcnode: 1663,
            dbnode: db,
            relnode,
        },
        forknum: MAIN_FORKNUM,
        blkno,
    };
    let mut source = WalSource::new(vec![rec.wal_dir.clone()], None);
    for (t, lsn, absent) in [
        (tag(tr, 2), truncated, true),
        (tag(tr, 5), truncated, true),
        (tag(tr, 5), again, true),
        (tag(gone, 0), truncated, true),
        (tag(tr, 2), again, false),
        (tag(tr, 0), truncated, false),
    ] {
        let cli = page_as_of(&rec.base, &rec.wal_dir, &t, Some(lsn), &config());
        let plan = source.plan(&t, lsn, &mut || false);
        println!("removed: {t} at {lsn:#x}: page {:?}", cli.as_ref().err());
        if absent {
            let Err(SourceError::NoSuchBlock(m)) = plan else {
                panic!("{t} at {lsn:#x}: the source's plan: {plan:?}");
            };
            assert!(m.contains("did not exist"), "{m}");
            assert_eq!(
                cli.err(),
                Some(m),
                "{t}: walredo page and the plan disagree"
            );
        } else {
            assert!(cli.is_ok(), "{t}: {:?}", cli.err());
            assert!(plan.is_ok(), "{t}: {:?}", plan.err());
        }
    }

    // verify: the removed blocks are gone in EXPECTED too, nothing fails.
    let opts = VerifyOptions {
        base: rec.base.clone(),
        wal: rec.wal_dir.clone(),
        archives: Vec::new(),
        restore_command: None,
        timeline: None,
        expected: rec.expected.clone(),
        expected_is: Default::default(),
        processes: 1,
        end: Some(rec.target_lsn),
        config: Config { ..config() },
    };
    let report = verify(&opts, &|_, _| {}).unwrap();
    println!("removed: verify: {report}");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.counted().different == 0);
}
