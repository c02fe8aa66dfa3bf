//! A base backup as BASE (issue 27, item 2): `pg_basebackup` of a running
//! cluster, taken while pgbench writes (its pages may be torn, and changed
//! after the backup's start), then more work; PostgreSQL's recovery of a
//! copy of the backup is EXPECTED, and `walredo verify` from the backup
//! itself (replay from its `backup_label`'s start) finds every page
//! identical, SLRU pages and relation maps included.

use walredo_cli::verify::{control_info, verify, VerifyOptions};
use walredo_testkit::cluster::{archive_recover, copy_tree, run, Cluster, WAL_KEEPING_SETTINGS};
use walredo_testkit::harness::*;

#[test]
fn a_base_backup_taken_under_load_is_a_starting_point() {
    let _test = isolated_test();
    let tmp = TempDir::new("basebackup");
    let mut settings = WAL_KEEPING_SETTINGS.to_vec();
    settings.push("max_prepared_transactions = 10");
    let mut cluster = Cluster::init(tmp.path(), &[], &settings);
    cluster.start();
    cluster.pgbench(&["-q", "-i", "-s", "2"]);
    let backup = tmp.path().join("backup");
    // The same in tar format, gzip-compressed (base.tar.gz), a moment later.
    let tar_backup = tmp.path().join("tar-backup");
    let sock = cluster.socket_dir.to_str().unwrap().to_string();
    let basebackup = |dir: &std::path::Path, format: &[&str]| {
        let mut args = vec![
            "-h",
            &sock,
            "-U",
            "postgres",
            "-D",
            dir.to_str().unwrap(),
            "-X",
            "none",
            "-c",
            "fast",
            "--no-sync",
        ];
        args.extend_from_slice(format);
        run("pg_basebackup", &args);
    };
    std::thread::scope(|s| {
        // pgbench writes while the backups copy the files.
        let writer = s.spawn(|| cluster.pgbench(&["-n", "-c", "2", "-T", "6"]));
        std::thread::sleep(std::time::Duration::from_millis(500));
        basebackup(&backup, &[]);
        basebackup(&tar_backup, &["-F", "t", "-z"]);
        writer.join().unwrap();
    });
    cluster.psql(
        "CREATE TABLE after_backup AS SELECT g AS id FROM generate_series(1, 5000) g;
         UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 50 = 0;
         VACUUM FULL pg_class;
         CHECKPOINT;",
    );
    let target = cluster.psql("SELECT pg_current_wal_insert_lsn();");
    cluster.stop();
    let wal_dir = cluster.data.join("pg_wal");

    let base = control_info(&backup, &config()).unwrap();
    let label = base.backup_label.clone().expect("a backup_label");
    println!(
        "backup: pg_control state {:?}, backup_label start {}",
        base.state,
        walredo::wal::format_lsn(label.start_lsn)
    );
    assert!(!base.cleanly_shut_down);
    assert_eq!(base.redo_lsn, label.start_lsn);

    let expected = tmp.path().join("expected");
    copy_tree(&backup, &expected);
    archive_recover(&expected, &wal_dir, tmp.path(), &target);

    let opts = VerifyOptions {
        base: backup.clone(),
        wal: wal_dir.clone(),
        archives: Vec::new(),
        restore_command: None,
        timeline: None,
        expected: expected.clone(),
        expected_is: Default::default(),
        processes: 2,
        end: walredo::wal::parse_lsn(&target),
        config: config(),
    };
    let report = verify(&opts, &|_, _| {}).unwrap();
    println!("{report}");
    let counted = report.counted();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(counted.different, 0);
    assert!(counted.pages >= 1000, "only {} pages", counted.pages);
    assert!(report.slru.rows[0].pages >= 1, "no pg_xact page compared");

    // The tar backup: verify unpacks it itself; EXPECTED from an unpacked copy.
    assert!(tar_backup.join("base.tar.gz").is_file());
    let tar_expected = tmp.path().join("tar-expected");
    std::fs::create_dir(&tar_expected).unwrap();
    let out = std::process::Command::new("tar")
        .args(["-x", "-z", "-f"])
        .arg(tar_backup.join("base.tar.gz"))
        .arg("-C")
        .arg(&tar_expected)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    if let Some(ids) = walredo_testkit::cluster::user() {
        let _ = std::process::Command::new("chown")
            .args(["-R", &format!("{}:{}", ids.uid, ids.gid)])
            .arg(&tar_expected)
            .status();
    }
    std::fs::set_permissions(
        &tar_expected,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    archive_recover(&tar_expected, &wal_dir, tmp.path(), &target);
    let from_tar = VerifyOptions {
        base: tar_backup.clone(),
        expected: tar_expected.clone(),
        expected_is: Default::default(),
        ..opts.clone()
    };
    let report = verify(&from_tar, &|_, _| {}).unwrap();
    let tar_counted = report.counted();
    println!("from the tar backup: {tar_counted:?}");
    assert_eq!(tar_counted.different, 0);
    assert!(
        tar_counted.pages >= 1000,
        "only {} pages",
        tar_counted.pages
    );

    // A directory that is neither stopped cleanly nor a backup is refused.
    std::fs::remove_file(backup.join("backup_label")).unwrap();
    let e = verify(&opts, &|_, _| {}).unwrap_err();
    assert!(e.contains("is not a base backup"), "{e}");
}
