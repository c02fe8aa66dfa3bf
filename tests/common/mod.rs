//! Test support: throw-away PostgreSQL 15 clusters, run as an unprivileged
//! user when the tests run as root.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use walredo::launch::{unprivileged_user, UserIds};
use walredo::Config;

pub const BINDIR: &str = "/usr/lib/postgresql/15/bin";

/// Tests that start processes take this, so that one test's children are
/// never counted as another's leftovers.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

pub fn extension_path() -> PathBuf {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pg_walredo/pg_walredo.so"
    ));
    assert!(
        p.is_file(),
        "{} is missing: build it with `make -C pg_walredo` (make check does)",
        p.display()
    );
    p
}

pub fn config() -> Config {
    Config {
        extension_path: Some(extension_path()),
        ..Config::default()
    }
}

pub fn user() -> Option<UserIds> {
    unprivileged_user("postgres").expect("an unprivileged user to run PostgreSQL as")
}

/// Run a PostgreSQL program as the unprivileged user; panics on failure.
pub fn run(program: &str, args: &[&str]) -> Output {
    let out = command(program, args)
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
    let mut cmd = Command::new(Path::new(BINDIR).join(program));
    cmd.args(args).env("LC_ALL", "C").env_remove("PGDATA");
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

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A PostgreSQL 15 cluster listening only on a unix socket in its own dir.
pub struct Cluster {
    pub data: PathBuf,
    pub socket_dir: PathBuf,
    pub log: PathBuf,
    running: bool,
}

impl Cluster {
    /// initdb into `dir/data`, with `settings` appended to postgresql.conf.
    pub fn init(dir: &Path, initdb_args: &[&str], settings: &[&str]) -> Cluster {
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
        run("initdb", &args);
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
        run(
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
        run(
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

    /// Run SQL through psql; returns its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let script = self
            .socket_dir
            .join(format!("script-{}.sql", rand_suffix()));
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
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = command(
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

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
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

/// No wal-redo process of ours is alive (or a zombie), and no scratch
/// directory of ours is left in the scratch root.
pub fn assert_no_leftovers() {
    let me = std::process::id();
    let mut children = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may contain spaces, so split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(me) {
            children.push(format!(
                "{} ({})",
                entry.file_name().to_string_lossy(),
                fields[0]
            ));
        }
    }
    assert!(
        children.is_empty(),
        "child processes left behind: {children:?}"
    );

    // SAFETY: geteuid cannot fail.
    let root = std::env::temp_dir().join(format!("walredo-{}", unsafe { libc::geteuid() }));
    let prefix = format!("proc-{me}-");
    let left: Vec<String> = fs::read_dir(&root)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch directories left behind: {left:?}");
}
