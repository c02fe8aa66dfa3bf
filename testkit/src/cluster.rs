//! Throw-away PostgreSQL clusters (of [`crate::install::pg_version`]) for
//! tests, fixtures and demos: initdb,
//! start, SQL through psql, stop, and archive recovery of kept WAL onto a base
//! copy (the oracle of docs/verification.md). PostgreSQL refuses to run as
//! root, so when the caller is root every program runs as the unprivileged
//! `postgres` user. These helpers panic on failure, with the program's output:
//! they are for tests and demos, not for library users.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use walredo::process::launch::{unprivileged_user, UserIds};

/// The programs (postgres, initdb, pg_ctl, psql, pg_config) of the
/// PostgreSQL the tests run: `$WALREDO_PG_BINDIR` (the Makefile sets it,
/// from scripts/pg-bindir.sh), else Debian's `/usr/lib/postgresql/N/bin` of
/// [`crate::install::pg_version`].
pub fn bindir() -> PathBuf {
    match std::env::var_os("WALREDO_PG_BINDIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(format!(
            "/usr/lib/postgresql/{}/bin",
            crate::install::pg_version()
        )),
    }
}

/// The user PostgreSQL programs run as, when the caller is root.
pub fn user() -> Option<UserIds> {
    unprivileged_user("postgres").expect("an unprivileged user to run PostgreSQL as")
}

/// Run a PostgreSQL program as the unprivileged user; panics on failure.
pub fn run(program: &str, args: &[&str]) -> Output {
    run_in(&bindir(), program, args)
}

/// `run` for the programs of another installation.
pub fn run_in(bindir: &Path, program: &str, args: &[&str]) -> Output {
    let out = command_in(bindir, program, args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn command(program: &str, args: &[&str]) -> Command {
    command_in(&bindir(), program, args)
}

/// `command` for the programs of another installation (a private copy, see
/// [`crate::install`]).
pub fn command_in(bindir: &Path, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bindir.join(program));
    cmd.args(args).env("LC_ALL", "C").env_remove("PGDATA");
    // A prefix build (scripts/pg-binaries.sh) carries its own libpq, but its
    // modules' run path is the one of the machine it was built on: a
    // standby's WAL receiver would load the system's libpq, older than the
    // connection options its server writes (16's sslcertmode).
    if let Some(lib) = bindir.parent().map(|prefix| prefix.join("lib")) {
        if lib.join("libpq.so.5").exists() {
            cmd.env("LD_LIBRARY_PATH", lib);
        }
    }
    if let Some(ids) = user() {
        cmd.uid(ids.uid).gid(ids.gid);
    }
    cmd
}

/// A directory the unprivileged user owns, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("walredo-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        if let Some(ids) = user() {
            std::os::unix::fs::chown(&dir, Some(ids.uid), Some(ids.gid)).unwrap();
        }
        TempDir(dir)
    }

    /// A directory the library's wal-redo processes (or fake children)
    /// may write in: owned by their account when the caller is root (the
    /// fake child's marker files).
    pub fn for_children(name: &str) -> TempDir {
        let dir = TempDir::new(name);
        let account = walredo::process::launch::CHILD_ACCOUNT;
        if let Some(ids) = unprivileged_user(account).expect("the children's account") {
            std::os::unix::fs::chown(&dir.0, Some(ids.uid), Some(ids.gid)).unwrap();
        }
        dir
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A PostgreSQL cluster listening only on a unix socket in its own dir.
pub struct Cluster {
    /// The installation whose server runs it (Debian's, or a private copy).
    pub bindir: PathBuf,
    pub data: PathBuf,
    pub socket_dir: PathBuf,
    pub log: PathBuf,
    running: bool,
}

impl Cluster {
    /// initdb into `dir/data`, with `settings` appended to postgresql.conf.
    pub fn init(dir: &Path, initdb_args: &[&str], settings: &[&str]) -> Cluster {
        Cluster::init_in(&bindir(), dir, initdb_args, settings)
    }

    /// `init` with the programs of the installation in `bindir`: its server
    /// then finds extensions in that installation's share directory.
    pub fn init_in(bindir: &Path, dir: &Path, initdb_args: &[&str], settings: &[&str]) -> Cluster {
        let data = dir.join("data");
        let mut args = vec![
            "-D",
            data.to_str().unwrap(),
            "--no-sync",
            "-A",
            "trust",
            "-U",
            "postgres",
        ];
        args.extend_from_slice(initdb_args);
        // 18's initdb turns data checksums on by default; the tests (and
        // their redo configs) assume 15's default, off, unless they ask.
        if crate::install::pg_version() >= 18
            && !initdb_args
                .iter()
                .any(|a| matches!(*a, "-k" | "--data-checksums" | "--no-data-checksums"))
        {
            args.push("--no-data-checksums");
        }
        run_in(bindir, "initdb", &args);
        let mut conf = String::from("\n# walredo tests\n");
        for s in settings {
            conf.push_str(s);
            conf.push('\n');
        }
        let path = data.join("postgresql.conf");
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str(&conf);
        fs::write(&path, text).unwrap();
        Cluster {
            bindir: bindir.to_path_buf(),
            data,
            socket_dir: dir.to_path_buf(),
            log: dir.join("server.log"),
            running: false,
        }
    }

    pub fn start(&mut self) {
        let opts = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}'",
            self.socket_dir.display()
        );
        run_in(
            &self.bindir,
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                self.log.to_str().unwrap(),
                "-w",
                "-o",
                &opts,
                "start",
            ],
        );
        self.running = true;
    }

    pub fn stop(&mut self) {
        run_in(
            &self.bindir,
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
        self.running = false;
    }

    /// The oid of database `postgres`, where `psql` runs.
    pub fn postgres_db_oid(&self) -> u32 {
        self.psql("SELECT oid FROM pg_database WHERE datname = 'postgres';")
            .parse()
            .unwrap()
    }

    /// Table `table` of database `postgres` (default tablespace) as the
    /// WAL names it: by its filenode.
    pub fn rel(&self, table: &str) -> walredo::RelFileNode {
        walredo::RelFileNode {
            spcnode: 1663,
            dbnode: self.postgres_db_oid(),
            relnode: self
                .psql(&format!("SELECT pg_relation_filenode('{table}');"))
                .parse()
                .unwrap(),
        }
    }

    /// Block `blkno` of the main fork of `table` (see `rel`).
    pub fn main_tag(&self, table: &str, blkno: u32) -> walredo::PageTag {
        walredo::PageTag {
            rel: self.rel(table),
            forknum: walredo::tag::MAIN_FORKNUM,
            blkno,
        }
    }

    /// A standby of this running cluster, made in `dir` and started: initdb
    /// with the same programs, its data directory then replaced by a base
    /// backup (see `base_backup_to`). Before it starts, that backup is also
    /// copied to `base` as a plain data directory (no `standby.signal`): what
    /// an archive recovery of the WAL to come starts from.
    pub fn start_standby(
        &self,
        dir: &Path,
        initdb_args: &[&str],
        settings: &[&str],
        base: &Path,
    ) -> Cluster {
        let mut standby = Cluster::init_in(&self.bindir, dir, initdb_args, settings);
        fs::remove_dir_all(&standby.data).unwrap();
        self.base_backup_to(&standby.data);
        copy_tree(&standby.data, base);
        fs::remove_file(base.join("standby.signal")).unwrap();
        standby.start();
        standby
    }

    /// Make `data` a standby of this running cluster: pg_basebackup with
    /// its WAL streamed and a fast checkpoint, `-R` writing the standby
    /// settings.
    pub fn base_backup_to(&self, data: &Path) {
        run_in(
            &self.bindir,
            "pg_basebackup",
            &[
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "-h",
                self.socket_dir.to_str().unwrap(),
                "-U",
                "postgres",
            ],
        );
    }

    /// Run SQL through psql; returns its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let script = self.socket_dir.join(format!(
            "script-{}.sql",
            walredo::process::launch::unique_suffix()
        ));
        fs::write(&script, sql).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
        let out = run(
            "psql",
            &[
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.socket_dir.to_str().unwrap(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-f",
                script.to_str().unwrap(),
            ],
        );
        let _ = fs::remove_file(&script);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Run pgbench against the `postgres` database with these arguments.
    pub fn pgbench(&self, args: &[&str]) {
        let mut all = vec!["-h", self.socket_dir.to_str().unwrap(), "-U", "postgres"];
        all.extend_from_slice(args);
        all.push("postgres");
        run("pgbench", &all);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = command_in(
                &self.bindir,
                "pg_ctl",
                &[
                    "-D",
                    self.data.to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            )
            .output();
        }
    }
}

/// pg_waldump's output for the WAL in `wal` from `start` to `end`, with
/// `more` arguments (its exit status is the caller's to judge).
pub fn waldump(wal: &Path, start: u64, end: u64, more: &[&str]) -> Output {
    let (start, end) = (
        walredo::wal::format_lsn(start),
        walredo::wal::format_lsn(end),
    );
    let mut args = vec![
        "--path",
        wal.to_str().unwrap(),
        "--start",
        &start,
        "--end",
        &end,
    ];
    args.extend_from_slice(more);
    command("pg_waldump", &args).output().unwrap()
}

/// `pg_controldata` of a data directory, as a map of its lines.
pub fn controldata(data: &Path) -> HashMap<String, String> {
    let out = run("pg_controldata", &["-D", data.to_str().unwrap()]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Copy a directory tree (as the unprivileged user, keeping modes).
pub fn copy_tree(from: &Path, to: &Path) {
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cp -a failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Replay the WAL in `wal_dir` onto `data` (a copy of a cleanly stopped base)
/// by archive recovery, stopping just before `target_lsn` and shutting down,
/// as docs/verification.md describes. Panics unless the server stopped at
/// the target and shut down in recovery.
pub fn archive_recover(
    data: &Path,
    wal_dir: &Path,
    socket_dir: &Path,
    target_lsn: &str,
) -> Duration {
    let conf = format!(
        "\nrestore_command = 'cp {}/%f %p'\nrecovery_target_lsn = '{target_lsn}'\n\
         recovery_target_inclusive = off\nrecovery_target_action = 'shutdown'\n",
        wal_dir.display()
    );
    let auto = data.join("postgresql.auto.conf");
    let mut text = fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&conf);
    fs::write(&auto, text).unwrap();
    fs::write(data.join("recovery.signal"), b"").unwrap();
    if let Some(ids) = user() {
        for p in [auto, data.join("recovery.signal")] {
            std::os::unix::fs::chown(&p, Some(ids.uid), Some(ids.gid)).unwrap();
        }
    }
    let log = socket_dir.join("recovery.log");
    let started = Instant::now();
    let log_file = fs::File::create(&log).unwrap();
    let status = command(
        "postgres",
        &[
            "-D",
            data.to_str().unwrap(),
            "-c",
            "listen_addresses=",
            "-c",
            &format!("unix_socket_directories={}", socket_dir.display()),
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(log_file)
    .status()
    .unwrap();
    let took = started.elapsed();
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    let state = controldata(data)
        .get("Database cluster state")
        .cloned()
        .unwrap_or_default();
    assert!(
        state == "shut down in recovery" && log_text.contains("recovery stopping before WAL location"),
        "archive recovery did not stop at {target_lsn} (exit {status}, state {state:?}):\n{log_text}"
    );
    took
}

/// WAL a real PostgreSQL wrote for a workload, with what recovery made of
/// it: everything the oracle of docs/verification.md needs.
pub struct RecordedWal {
    /// Copy of the cleanly stopped cluster before the workload.
    pub base: PathBuf,
    /// The WAL written from `base` on (the cluster's `pg_wal`).
    pub wal_dir: PathBuf,
    /// `base` after PostgreSQL's archive recovery of that WAL up to `target_lsn`.
    pub expected: PathBuf,
    /// Where replay starts: the REDO location of `base`'s checkpoint.
    pub start_lsn: u64,
    /// Where replay stops: the first record not replayed starts here.
    pub target_lsn: u64,
    /// How long PostgreSQL's recovery took.
    pub recovery_time: Duration,
}

impl RecordedWal {
    /// Every record recovery replayed: from `start_lsn` up to, not
    /// including, the record at `target_lsn`.
    pub fn records(&self) -> Vec<walredo::wal::WalRecord> {
        walredo::wal::WalReader::open(&self.wal_dir, Some(self.start_lsn))
            .expect("the WAL just written")
            .map(|r| r.expect("readable WAL"))
            .take_while(|r| r.start_lsn < self.target_lsn)
            .collect()
    }
}

/// In `dir`: initdb a cluster with `settings`, take a clean base copy, run
/// `workload`, CHECKPOINT (recovery flushes pages only at a restartpoint),
/// take the target LSN, stop, and let PostgreSQL replay the WAL onto a
/// second copy of the base.
pub fn record_workload(
    dir: &Path,
    initdb_args: &[&str],
    settings: &[&str],
    workload: &dyn Fn(&Cluster),
) -> RecordedWal {
    let mut cluster = Cluster::init(dir, initdb_args, settings);
    // A clean shutdown checkpoint to start from, then the base copy.
    cluster.start();
    cluster.stop();
    let base = dir.join("base");
    copy_tree(&cluster.data, &base);

    cluster.start();
    workload(&cluster);
    cluster.psql("CHECKPOINT;");
    let target = cluster.psql("SELECT pg_current_wal_insert_lsn();");
    cluster.stop();
    let wal_dir = cluster.data.join("pg_wal");

    let expected = dir.join("expected");
    copy_tree(&base, &expected);
    let recovery_time = archive_recover(&expected, &wal_dir, dir, &target);

    let redo = controldata(&base)["Latest checkpoint's REDO location"].clone();
    RecordedWal {
        base,
        wal_dir,
        expected,
        start_lsn: walredo::wal::parse_lsn(&redo).expect("REDO location"),
        target_lsn: walredo::wal::parse_lsn(&target).expect("target LSN"),
        recovery_time,
    }
}

/// Settings of a test cluster whose WAL a test reads back: nothing runs on
/// its own (autovacuum), nothing is recycled or checkpointed away meanwhile.
pub const WAL_KEEPING_SETTINGS: &[&str] = &[
    "autovacuum = off",
    "fsync = off",
    "wal_keep_size = 1GB",
    "max_wal_size = 1GB",
    "checkpoint_timeout = 1h",
];

/// Settings of a test cluster initialized with 1 MB segments
/// (`--wal-segsize=1`) that archives its WAL gzip-compressed into `archive`
/// and keeps little of it in pg_wal: after a few [`checkpoint_wal_away`]s,
/// older segments are only in the archive.
pub fn gzip_archiving_settings(archive: &Path) -> Vec<String> {
    vec![
        "archive_mode = on".to_string(),
        format!(
            "archive_command = 'gzip < %p > {}/%f.gz'",
            archive.display()
        ),
        "wal_keep_size = 0".to_string(),
        "min_wal_size = 2MB".to_string(),
        "max_wal_size = 4MB".to_string(),
    ]
}

/// The restore command that reads [`gzip_archiving_settings`]' archive.
pub fn gunzip_restore_command(archive: &Path) -> String {
    format!("gunzip < {}/%f.gz > %p", archive.display())
}

/// `times` rounds of about 1 MB of rows into table `filler` (made if
/// missing), a segment switch and a checkpoint: with
/// [`gzip_archiving_settings`], the segments before them leave pg_wal.
pub fn checkpoint_wal_away(c: &Cluster, times: usize) {
    c.psql("CREATE TABLE IF NOT EXISTS filler (x text) WITH (autovacuum_enabled = off);");
    for _ in 0..times {
        c.psql(
            "INSERT INTO filler SELECT repeat('f', 500) FROM generate_series(1, 1500);
             SELECT pg_switch_wal(); CHECKPOINT;",
        );
    }
}

/// Wait (up to two minutes) until `c` has archived every segment before
/// its flush position: call it after `pg_switch_wal()`.
pub fn wait_archived(c: &Cluster) {
    let last = c.psql("SELECT pg_walfile_name(pg_current_wal_flush_lsn() - 1);");
    crate::harness::wait_until(
        "the cluster to archive its WAL",
        std::time::Duration::from_secs(120),
        || c.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver;") >= last,
    );
}

/// Overwrite 200 bytes in the middle of block `blkno` of a relation file,
/// as a bad disk would: with data checksums the page then fails its check.
pub fn damage_block(file: &Path, blkno: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(&[0xAB; 200], blkno * 8192 + 4000).unwrap();
}

/// Emit logical messages until `c`'s insert position is `gap` to `gap + 600`
/// bytes before the end of its WAL segment (segments of `seg_size` bytes).
pub fn pad_to_segment_end(c: &Cluster, seg_size: u64, gap: u64) {
    loop {
        let at = c.psql("SELECT pg_current_wal_insert_lsn();");
        let at = walredo::wal::parse_lsn(at.trim()).unwrap_or_else(|| panic!("not an LSN: {at:?}"));
        let left = seg_size - at % seg_size;
        assert!(left >= gap, "padding overshot: {left} bytes left");
        if left <= gap + 600 {
            return;
        }
        // Far from it, leave room for records others write meanwhile (a
        // catalog page's first prune after a checkpoint logs its image);
        // near it, halve the distance.
        let n = if left > gap + 20_000 {
            left - gap - 20_000 - left / 8192 * 24
        } else {
            (left - gap) / 2
        };
        c.psql(&format!(
            "SELECT pg_logical_emit_message(false, 'pad', repeat('p', {n}));"
        ));
    }
}
