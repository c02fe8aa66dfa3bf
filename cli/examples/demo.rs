//! The body of `make demo` (cli/demo/demo.sh wraps it with clean-up):
//!
//!   demo DIR [--workload FILE.sql] [--conf 'k=v k=v'] [--scale N] [--transactions N]
//!
//! In DIR: a throw-away PostgreSQL cluster (of WALREDO_PG_VERSION, run by the server in
//! WALREDO_PG_BINDIR, default /usr/lib/postgresql/$WALREDO_PG_VERSION/bin: initdb, pg_ctl,
//! the recovery and the pool all use that one server), a clean base copy, the
//! workload (pgbench initialisation and run, share locks by three pgbench
//! clients at once and cli/demo/slru.sql, then the SQL file), the WAL it
//! wrote, PostgreSQL's own archive recovery of that WAL onto a second base
//! copy, and finally `walredo verify`, whose report is printed with how long
//! PostgreSQL's recovery and our reconstruction each took; then `walredo
//! check` of the primary's own data directory against its WAL.
//!
//! `--conf` takes server settings; `data_checksums=on` is special: the
//! cluster is initialized with `initdb --data-checksums`.
//!
//! It ends in SQL: a second cluster, run from a private copy of the
//! installation with walredo_inspect in it, shows a row as it was before a
//! bad UPDATE with `heap_page_item_attrs(page_at_lsn(...))`, the UPDATE's
//! WAL by then only in that cluster's archive (through
//! `walredo_inspect.restore_command`).

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use walredo::wal::format_lsn;
use walredo_testkit::cluster::{
    checkpoint_wal_away, gunzip_restore_command, gzip_archiving_settings, record_workload,
};
use walredo_testkit::install::PrivateInstall;

/// The workload's fixed part for SLRU pages and relation maps, run after
/// pgbench whatever the SQL workload: share locks taken by three clients at
/// once (a pgbench script), then cli/demo/slru.sql.
const SHARE_LOCKS: &str = include_str!("../demo/share-locks.sql");
const SLRU_SQL: &str = include_str!("../demo/slru.sql");

/// The row before a bad UPDATE, in SQL, through walredo_inspect: the
/// UPDATE's WAL is by then only in the cluster's archive (gzip-compressed
/// by its archive_command), reached through walredo_inspect.restore_command.
fn from_sql(dir: &std::path::Path) -> bool {
    let sql_dir = dir.join("sql");
    let archive = sql_dir.join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    if let Some(ids) = walredo_testkit::cluster::user() {
        for d in [&sql_dir, &archive] {
            std::os::unix::fs::chown(d, Some(ids.uid), Some(ids.gid)).unwrap();
        }
    }
    let install = PrivateInstall::new_in(dir);
    let archiving = gzip_archiving_settings(&archive);
    let mut settings = vec!["fsync = off"];
    settings.extend(archiving.iter().map(String::as_str));
    let mut cluster = install.cluster(&sql_dir, &["--wal-segsize=1"], &settings);
    cluster.start();
    let show = |sql: &str| {
        println!(
            "demo=# {}",
            sql.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        for line in cluster.psql(sql).lines() {
            println!("    {line}");
        }
    };
    cluster.psql(
        "CREATE EXTENSION walredo_inspect; CREATE EXTENSION pageinspect;
         CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance int);
         INSERT INTO accounts VALUES (1, 'alice', 100), (2, 'bob', 50);",
    );
    let before = cluster.psql("SELECT pg_current_wal_insert_lsn();");
    println!(
        "demo: walredo_inspect, from SQL (a cluster of its own, archiving its WAL gzip-compressed); \
         the WAL position now is {before}"
    );
    show("UPDATE accounts SET balance = 0;   -- the bad UPDATE: no WHERE");
    show("SELECT * FROM accounts ORDER BY id;");
    // Checkpoints until pg_wal no longer holds the UPDATE's segment.
    let update_segment = cluster.psql(&format!("SELECT pg_walfile_name('{before}');"));
    checkpoint_wal_away(&cluster, 4);
    let oldest =
        cluster.psql("SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$';");
    println!(
        "demo: the UPDATE was in {update_segment}; after checkpoints the oldest segment in \
         pg_wal is {oldest}: the UPDATE's WAL is only in the archive now"
    );
    let restore = format!(
        "SET walredo_inspect.restore_command = '{}';",
        gunzip_restore_command(&archive)
    );
    let query = format!(
        "{restore}
         SELECT lp, convert_from(substring(t_attrs[2] from 2), 'UTF8') AS owner,
                get_byte(t_attrs[3], 0) + (get_byte(t_attrs[3], 1) << 8) AS balance
         FROM heap_page_item_attrs(page_at_lsn('accounts', 0, '{before}'), 'accounts')
         WHERE t_attrs IS NOT NULL ORDER BY lp;"
    );
    println!("demo: the rows of block 0 as they were at {before}:");
    show(&query);
    let rows = cluster.psql(&query);
    cluster.stop();
    oldest.as_str() > update_segment.as_str() && rows == "1|alice|100\n2|bob|50"
}

/// The one server the demo runs: `$WALREDO_PG_BINDIR`, else Debian's
/// `/usr/lib/postgresql/$WALREDO_PG_VERSION/bin`. The clusters come from
/// testkit, which must run that same server: WAL replayed by another minor
/// release can differ (docs/versions.md).
fn demo_bindir() -> Result<PathBuf, String> {
    let bindir = match std::env::var_os("WALREDO_PG_BINDIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(format!(
            "/usr/lib/postgresql/{}/bin",
            walredo_testkit::install::pg_version()
        )),
    };
    let same = |a: &std::path::Path, b: &std::path::Path| {
        a == b
            || a.canonicalize()
                .ok()
                .is_some_and(|a| b.canonicalize().ok() == Some(a))
    };
    let clusters = walredo_testkit::cluster::bindir();
    if !same(&bindir, &clusters) {
        return Err(format!(
            "the server is {} (WALREDO_PG_BINDIR), but testkit's clusters would run {}: \
             one server must write, recover and replay",
            bindir.display(),
            clusters.display()
        ));
    }
    if !bindir.join("postgres").is_file() {
        return Err(format!("no postgres in {}", bindir.display()));
    }
    Ok(bindir)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut workload = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/demo/workload.sql"));
    let mut conf = String::new();
    let mut scale = "1".to_string();
    let mut transactions = "2000".to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--workload" => workload = args.next().expect("--workload FILE").into(),
            "--conf" => conf = args.next().expect("--conf 'k=v ...'"),
            "--scale" => scale = args.next().expect("--scale N"),
            "--transactions" => transactions = args.next().expect("--transactions N"),
            _ => dir = Some(PathBuf::from(a)),
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: demo DIR [--workload FILE.sql] [--conf 'k=v ...'] [--scale N] [--transactions N]");
        return ExitCode::from(2);
    };
    let sql = match std::fs::read_to_string(&workload) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo: cannot read the workload {}: {e}", workload.display());
            return ExitCode::from(2);
        }
    };

    let mut initdb_args = Vec::new();
    let mut settings = vec![
        "max_wal_size = 8GB".to_string(),
        "wal_keep_size = 8GB".to_string(),
        "checkpoint_timeout = 1h".to_string(),
        "max_prepared_transactions = 10".to_string(),
        "fsync = off".to_string(),
    ];
    for kv in conf.split_whitespace() {
        match kv {
            "data_checksums=on" => initdb_args.push("--data-checksums"),
            _ => settings.push(kv.to_string()),
        }
    }
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let bindir = match demo_bindir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(2);
        }
    };
    // The server's own words ("postgres (PostgreSQL) 17.6 (Debian 17.6-0+deb13u1)").
    let server = std::process::Command::new(bindir.join("postgres"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let server = server
        .strip_prefix("postgres (PostgreSQL) ")
        .unwrap_or(&server);
    println!(
        "demo: PostgreSQL {server} cluster in {} (server: {}); settings: {}",
        dir.display(),
        bindir.display(),
        if conf.is_empty() { "defaults" } else { &conf }
    );
    println!(
        "demo: workload: pgbench -i -s {scale}, pgbench -t {transactions}, share locks and \
         cli/demo/slru.sql, then {}",
        workload.display()
    );
    // pgbench reads its script as the server's user: a copy in DIR.
    let share_locks = dir.join("share-locks.sql");
    if let Err(e) = std::fs::write(&share_locks, SHARE_LOCKS) {
        eprintln!("demo: cannot write {}: {e}", share_locks.display());
        return ExitCode::from(2);
    }
    let share_locks = share_locks.to_str().unwrap();
    let started = Instant::now();
    let rec = record_workload(&dir, &initdb_args, &settings, &|c| {
        c.pgbench(&["-q", "-i", "-s", &scale]);
        c.pgbench(&["-n", "-c", "2", "-t", &transactions]);
        c.pgbench(&["-n", "-c", "3", "-t", "100", "-f", share_locks]);
        c.psql(SLRU_SQL);
        c.psql(&sql);
    });
    let wal_bytes = rec.target_lsn - rec.start_lsn;
    println!(
        "demo: workload wrote {:.1} MB of WAL ({} to {}) in {:.1} s",
        wal_bytes as f64 / 1e6,
        format_lsn(rec.start_lsn),
        format_lsn(rec.target_lsn),
        started.elapsed().as_secs_f64()
    );
    println!(
        "demo: PostgreSQL's archive recovery of that WAL took {:.2} s",
        rec.recovery_time.as_secs_f64()
    );

    let walredo = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("walredo")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("target/release/walredo"));
    // The workspace's pg_walredo for the version the demo runs.
    let extension = walredo_testkit::install::built_dir("pg_walredo").join("pg_walredo.so");
    let extension = extension.to_str().unwrap();
    let target = format_lsn(rec.target_lsn);
    let (base, wal) = (rec.base.to_str().unwrap(), rec.wal_dir.to_str().unwrap());
    let expected = rec.expected.to_str().unwrap();
    let cmd_args = [
        "--bindir",
        bindir.to_str().unwrap(),
        "--extension",
        extension,
        "verify",
        "--base",
        base,
        "--wal",
        wal,
        "--expected",
        expected,
        "--end",
        &target,
    ];
    println!("demo: {} {}", walredo.display(), cmd_args.join(" "));
    let verify_started = Instant::now();
    let status = Command::new(&walredo).args(cmd_args).status();
    let took = verify_started.elapsed();
    match status {
        Ok(s) => {
            println!(
                "demo: timings: PostgreSQL's recovery {:.2} s; walredo verify {:.2} s in all \
                 (reading the WAL, rebuilding every page, comparing)",
                rec.recovery_time.as_secs_f64(),
                took.as_secs_f64()
            );
            if !s.success() {
                return ExitCode::FAILURE;
            }
            // The primary's own pages against its WAL: walredo check.
            let data = dir.join("data");
            let check_args = [
                "--bindir",
                bindir.to_str().unwrap(),
                "--extension",
                extension,
                "check",
                "--data",
                data.to_str().unwrap(),
                "--base",
                base,
            ];
            println!("demo: {} {}", walredo.display(), check_args.join(" "));
            if !Command::new(&walredo)
                .args(check_args)
                .status()
                .is_ok_and(|s| s.success())
            {
                return ExitCode::FAILURE;
            }
            if from_sql(&dir) {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "demo: page_at_lsn did not show the rows before the UPDATE from the archive"
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("demo: cannot run {}: {e}", walredo.display());
            ExitCode::FAILURE
        }
    }
}
