//! WAL in an archive whose segments are compressed as `archive_command`
//! leaves them (gzip, zstd, lz4, or plain, by the file name's suffix): read
//! record for record as from `pg_wal`, and every page `walredo verify`
//! rebuilds from it identical to PostgreSQL's recovery; the same through a
//! `restore_command` when `pg_wal` holds only the newest segment; a
//! command that finds nothing or dies, and a damaged compressed segment,
//! are errors that say so.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use walredo::wal::restore::RestoreCommand;
use walredo::wal::source::WalSource;
use walredo::wal::{WalReader, WalRecord};
use walredo_cli::verify::{page_as_of, page_as_of_in, verify, VerifyOptions, WalSpec};
use walredo_testkit::cluster::{record_workload, WAL_KEEPING_SETTINGS};
use walredo_testkit::harness::*;

fn compress(data: &[u8], suffix: &str) -> Vec<u8> {
    match suffix {
        ".gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        ".zst" => zstd::encode_all(data, 3).unwrap(),
        ".lz4" => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        _ => data.to_vec(),
    }
}

/// Every segment file of `wal` into `archive`, compressed in turn gzip,
/// zstd, lz4, plain; the names written.
fn archive_compressed(wal: &Path, archive: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(archive).unwrap();
    let mut names: Vec<String> = fs::read_dir(wal)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    names.sort();
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let suffix = [".gz", ".zst", ".lz4", ""][i % 4];
            let path = archive.join(format!("{name}{suffix}"));
            fs::write(&path, compress(&fs::read(wal.join(name)).unwrap(), suffix)).unwrap();
            path
        })
        .collect()
}

fn records(dir: &Path, start: u64, end: u64) -> Vec<WalRecord> {
    WalReader::open(dir, Some(start))
        .unwrap()
        .map(|r| r.unwrap())
        .take_while(|r| r.start_lsn < end)
        .collect()
}

#[test]
fn a_compressed_archive_reads_and_verifies_as_pg_wal() {
    let _test = isolated_test();
    let tmp = TempDir::new("archive");
    let rec = record_workload(tmp.path(), &[], WAL_KEEPING_SETTINGS, &|c| {
        c.pgbench(&["-q", "-i", "-s", "2"]);
        c.pgbench(&["-n", "-t", "300"]);
        c.psql("CREATE INDEX ON pgbench_history (mtime); VACUUM pgbench_accounts;");
    });
    let archive = tmp.path().join("archive");
    let written = archive_compressed(&rec.wal_dir, &archive);
    let compressed = written.iter().filter(|p| p.extension().is_some()).count();
    for suffix in ["gz", "zst", "lz4"] {
        assert!(
            written
                .iter()
                .any(|p| p.extension().is_some_and(|e| e == suffix)),
            "no .{suffix} segment among {written:?}: the workload must fill several"
        );
    }

    let plain = records(&rec.wal_dir, rec.start_lsn, rec.target_lsn);
    let from_archive = records(&archive, rec.start_lsn, rec.target_lsn);
    assert_eq!(plain.len(), from_archive.len());
    assert!(
        plain
            .iter()
            .zip(&from_archive)
            .all(|(a, b)| a.start_lsn == b.start_lsn && a.end_lsn == b.end_lsn && a.data == b.data),
        "a record read from the archive differs"
    );
    println!(
        "{} records from {} segments ({compressed} compressed)",
        plain.len(),
        written.len()
    );

    let opts = |wal: PathBuf| VerifyOptions {
        base: rec.base.clone(),
        wal,
        archives: Vec::new(),
        restore_command: None,
        timeline: None,
        expected: rec.expected.clone(),
        expected_is: Default::default(),
        processes: 2,
        end: Some(rec.target_lsn),
        config: config(),
    };
    let report = verify(&opts(archive.clone()), &|_, _| {}).unwrap();
    let counted = report.counted();
    println!("verified from the archive: {counted:?}");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(counted.different, 0);
    assert!(counted.pages >= 500, "only {} pages", counted.pages);

    // pg_wal with its newest segment only (a checkpoint recycled the
    // others), the rest behind a restore_command reading a gzip archive.
    let gz_archive = tmp.path().join("gz-archive");
    fs::create_dir_all(&gz_archive).unwrap();
    let partial_wal = tmp.path().join("pg_wal-newest");
    fs::create_dir_all(&partial_wal).unwrap();
    let mut names = Vec::new();
    for e in fs::read_dir(&rec.wal_dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let data = fs::read(rec.wal_dir.join(&name)).unwrap();
            fs::write(
                gz_archive.join(format!("{name}.gz")),
                compress(&data, ".gz"),
            )
            .unwrap();
            names.push((name, data));
        }
    }
    names.sort();
    let (last, data) = names.last().unwrap();
    fs::write(partial_wal.join(last), data).unwrap();
    let restore = format!(
        "test -f {0}/%f.gz && gzip -dc {0}/%f.gz > %p",
        gz_archive.display()
    );
    let restored = VerifyOptions {
        restore_command: Some(restore),
        timeline: None,
        ..opts(partial_wal.clone())
    };
    let report = verify(&restored, &|_, _| {}).unwrap();
    println!(
        "verified through restore_command ({} of {} segments restored): {:?}",
        names.len() - 1,
        names.len(),
        report.counted()
    );
    assert_eq!(report.counted().pages, counted.pages);
    assert_eq!(report.counted().different, 0);
    // A WAL source (walredo_wal, page_at_lsn's) reaches back through the
    // restore command too: a block's plan from pg_wal-newest alone is not
    // found, with the command it is the plan made from the whole pg_wal.
    let blocks = walredo::wal::uses::block_uses_as(
        plain.iter().map(|r| &r.data[..]),
        walredo::pg::record::RecordFormat::of_version(walredo_testkit::install::pg_version()),
    )
    .unwrap();
    let seg_size = 16 << 20;
    let newest_segno = plain.last().unwrap().start_lsn / seg_size;
    let mut whole = WalSource::new(vec![rec.wal_dir.clone()], None);
    let mut checked = 0;
    for tag in blocks.keys().filter(|t| t.forknum == 0) {
        let Ok(full) = whole.plan(tag, rec.target_lsn, &mut || false) else {
            continue;
        };
        if full.records[0].start_lsn / seg_size == newest_segno {
            continue;
        }
        let mut alone = WalSource::new(vec![partial_wal.clone()], None);
        assert!(alone.plan(tag, rec.target_lsn, &mut || false).is_err());
        let mut restoring = WalSource::new(vec![partial_wal.clone()], None);
        let cache = tmp.path().join(format!("restore-cache-{checked}"));
        restoring.set_restore(Some(std::sync::Arc::new(
            RestoreCommand::new(
                &format!(
                    "test -f {0}/%f.gz && gzip -dc {0}/%f.gz > %p",
                    gz_archive.display()
                ),
                &cache,
                std::time::Duration::from_secs(60),
                16,
            )
            .unwrap(),
        )));
        let got = restoring.plan(tag, rec.target_lsn, &mut || false).unwrap();
        assert_eq!(got.records.len(), full.records.len(), "{tag}");
        assert!(got
            .records
            .iter()
            .zip(&full.records)
            .all(|(a, b)| a.start_lsn == b.start_lsn && a.data == b.data));
        if checked == 0 {
            // `walredo page` the same way: from pg_wal-newest and the
            // command, the page as from the whole pg_wal.
            let restore = format!(
                "test -f {0}/%f.gz && gzip -dc {0}/%f.gz > %p",
                gz_archive.display()
            );
            let whole_page = page_as_of(
                &rec.base,
                &rec.wal_dir,
                tag,
                Some(rec.target_lsn),
                &config(),
            )
            .unwrap();
            let restored_page = page_as_of_in(
                &rec.base,
                &WalSpec {
                    dirs: vec![partial_wal.clone()],
                    restore_command: Some(restore),
                    timeline: None,
                },
                tag,
                Some(rec.target_lsn),
                &config(),
            )
            .unwrap();
            assert!(whole_page[..] == restored_page[..], "{tag}");
        }
        checked += 1;
        if checked == 3 {
            break;
        }
    }
    println!("{checked} blocks planned through the restore command as from the whole pg_wal");
    assert!(checked >= 1, "no block starts before the newest segment");

    // A command that never finds anything: the start is not there.
    let nothing = VerifyOptions {
        restore_command: Some("exit 1".into()),
        timeline: None,
        ..opts(partial_wal.clone())
    };
    let e = verify(&nothing, &|_, _| {}).unwrap_err();
    println!("restore_command finding nothing: {e}");
    assert!(e.contains("not in any WAL segment present"), "{e}");
    // One killed by a signal is an error that says so.
    let killed = VerifyOptions {
        restore_command: Some("kill -9 $$".into()),
        timeline: None,
        ..opts(partial_wal.clone())
    };
    let e = verify(&killed, &|_, _| {}).unwrap_err();
    assert!(e.contains("terminated by signal 9"), "{e}");

    // A damaged compressed segment in the range: an error naming it.
    let damaged = written
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "zst"))
        .unwrap();
    let mut bytes = fs::read(damaged).unwrap();
    bytes.truncate(bytes.len() / 2);
    fs::write(damaged, &bytes).unwrap();
    let e = verify(&opts(archive.clone()), &|_, _| {}).unwrap_err();
    println!("damaged: {e}");
    assert!(e.contains(&damaged.display().to_string()), "{e}");
}
