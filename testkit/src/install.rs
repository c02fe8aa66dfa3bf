//! Which PostgreSQL the tests run ([`pg_version`]: `$WALREDO_PG_VERSION`,
//! its programs in [`crate::cluster::bindir`]), where this tree's extensions
//! for it were built, a private copy of its installation with those
//! extensions in it, and interactive psql sessions.
//!
//! PostgreSQL finds extensions only in its own share directory, and finds
//! that directory relative to its binary. So a test that must `CREATE
//! EXTENSION walredo_inspect` without writing into the installation runs the
//! server from a copy of its bin, lib and share directories (where its
//! `pg_config` says they are: Debian's `/usr/lib/postgresql/N/{bin,lib}` and
//! `/usr/share/postgresql/N`, or a prefix's `bin`, `lib` and `share`), each
//! at its own path under the copy's root, so that the relative layout is
//! kept; the extensions built in this tree are copied into it.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::cluster::{command, copy_tree, Cluster, TempDir};

/// The PostgreSQL major version every test, fixture and demo runs against:
/// `$WALREDO_PG_VERSION` (`make` sets it, with `$WALREDO_PG_BINDIR`, for
/// `PG_VERSION`), 15 if unset.
pub fn pg_version() -> u32 {
    match std::env::var("WALREDO_PG_VERSION") {
        Ok(v) => {
            let n: u32 = v
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("WALREDO_PG_VERSION={v:?}: not a number"));
            assert!(
                walredo::pg::xlog::xlog_page_magic(n).is_some(),
                "WALREDO_PG_VERSION={n}: walredo serves PostgreSQL {}",
                walredo::pg::xlog::supported_versions()
            );
            n
        }
        Err(_) => 15,
    }
}

/// The directories of the installation the tests run (its `pg_config`'s
/// answers): programs, libraries and extensions' modules, share files.
pub struct PgDirs {
    pub bin: PathBuf,
    pub pkglib: PathBuf,
    pub share: PathBuf,
}

/// [`PgDirs`] of [`crate::cluster::bindir`]'s installation.
pub fn pg_dirs() -> PgDirs {
    let pg_config = crate::cluster::bindir().join("pg_config");
    let out = std::process::Command::new(&pg_config)
        .args(["--bindir", "--pkglibdir", "--sharedir"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", pg_config.display()));
    assert!(
        out.status.success(),
        "{} failed: {}",
        pg_config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("pg_config's answers in UTF-8");
    let dirs: Vec<PathBuf> = text.lines().map(PathBuf::from).collect();
    assert!(
        dirs.len() == 3 && dirs.iter().all(|d| d.is_absolute()),
        "{}: unexpected answers {text:?}",
        pg_config.display()
    );
    PgDirs {
        bin: dirs[0].clone(),
        pkglib: dirs[1].clone(),
        share: dirs[2].clone(),
    }
}

/// Where `make` built the extension `name` (pg_walredo, walredo_inspect)
/// for that version: in its source directory for 15, in
/// `target/pgN/name/` for the others (`make PG_VERSION=N`).
pub fn built_dir(name: &str) -> PathBuf {
    built_dir_of(pg_version(), name)
}

/// [`built_dir`] for PostgreSQL `version`.
pub fn built_dir_of(version: u32, name: &str) -> PathBuf {
    match version {
        15 => workspace_root().join(name),
        v => workspace_root().join(format!("target/pg{v}/{name}")),
    }
}

/// A pg_walredo.so built here for a version other than the one under test
/// (`make PG_VERSION=N extension` builds one), with that version; `None`
/// when there is none.
pub fn other_versions_extension() -> Option<(u32, PathBuf)> {
    walredo::pg::xlog::PG_VERSIONS
        .iter()
        .map(|(v, _)| *v)
        .filter(|v| *v != pg_version())
        .map(|v| (v, built_dir_of(v, "pg_walredo").join("pg_walredo.so")))
        .find(|(_, so)| so.is_file())
}

/// `so` (a pg_walredo.so's bytes) with its magic block saying it was built
/// for `version`: the library's version check lets it through, and the
/// loader refuses it in every start.
pub fn claiming_version(so: &[u8], version: u32) -> Vec<u8> {
    let at = walredo::process::launch::magic_block_version_at(so).expect("a magic block");
    let mut out = so.to_vec();
    out[at..at + 4].copy_from_slice(&(version as i32 * 100).to_ne_bytes());
    out
}

/// The workspace root (testkit/ is one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A copy of the installation under a temporary directory, removed on drop.
pub struct PrivateInstall {
    pub root: TempDir,
    bindir: PathBuf,
}

impl PrivateInstall {
    /// Copy the installation and put this tree's pg_walredo and
    /// walredo_inspect (built by `make`) into it.
    pub fn new(name: &str) -> PrivateInstall {
        PrivateInstall::copy_into(TempDir::new(&format!("install-{name}")))
    }

    /// The same in `parent/install` (removed on drop too), for callers that
    /// clean up a directory of their own (the demo).
    pub fn new_in(parent: &Path) -> PrivateInstall {
        let dir = parent.join("install");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        PrivateInstall::copy_into(TempDir(dir))
    }

    fn copy_into(root: TempDir) -> PrivateInstall {
        let dirs = pg_dirs();
        let under_root = |dir: &Path| root.path().join(dir.strip_prefix("/").unwrap());
        // Debian's bin and lib are siblings; a prefix's lib may hold more
        // than the modules (its libpq): copying it whole is what keeps both.
        for from in [&dirs.bin, &dirs.pkglib, &dirs.share] {
            let to = under_root(from);
            if to.exists() {
                continue;
            }
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            copy_tree(from, &to);
        }
        let (lib, share) = (under_root(&dirs.pkglib), under_root(&dirs.share));
        let ws = workspace_root();
        let mut built = vec![
            (
                built_dir("pg_walredo").join("pg_walredo.so"),
                lib.join("pg_walredo.so"),
            ),
            (
                built_dir("walredo_inspect").join("walredo_inspect.so"),
                lib.join("walredo_inspect.so"),
            ),
        ];
        // The control file and every script (versions and update paths).
        for entry in fs::read_dir(ws.join("walredo_inspect")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.starts_with("walredo_inspect")
                && (name.ends_with(".control") || name.ends_with(".sql"))
            {
                built.push((
                    ws.join("walredo_inspect").join(&name),
                    share.join("extension").join(&name),
                ));
            }
        }
        for (from, to) in built {
            assert!(
                from.is_file(),
                "{} is missing: build it with `make` (make check does)",
                from.display()
            );
            let _ = fs::remove_file(&to);
            fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
        let bindir = under_root(&dirs.bin);
        PrivateInstall { root, bindir }
    }

    pub fn bindir(&self) -> PathBuf {
        self.bindir.clone()
    }

    /// initdb a cluster in `dir` whose server is this installation's.
    pub fn cluster(&self, dir: &Path, initdb_args: &[&str], settings: &[&str]) -> Cluster {
        Cluster::init_in(&self.bindir(), dir, initdb_args, settings)
    }
}

/// Which stream a line of psql's came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

/// A line psql wrote, with when the test read it.
#[derive(Debug, Clone)]
pub struct Line {
    pub stream: Stream,
    pub text: String,
    pub at: Instant,
}

/// The outcome of one statement in a [`Session`].
#[derive(Debug, Clone)]
pub struct Reply {
    /// Rows, unaligned, one a line.
    pub out: String,
    /// What psql wrote to stderr (errors, notices).
    pub err: String,
    /// When the first stderr line arrived, if any: when an ERROR was seen.
    pub err_at: Option<Instant>,
    /// The connection ended (psql exited) before the statement's end.
    pub ended: bool,
}

impl Reply {
    pub fn ok(&self) -> bool {
        !self.ended && !self.err.contains("ERROR:") && !self.err.contains("FATAL:")
    }
}

const MARK: &str = "__walredo_test_done__";

/// One backend held open through a psql process: statements run one after
/// another in the same backend (its pool, its WAL handle).
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    /// The backend's process id.
    pub pid: u32,
}

impl Session {
    pub fn open(cluster: &Cluster) -> Session {
        Session::open_db(cluster, "postgres", "postgres")
    }

    pub fn open_db(cluster: &Cluster, db: &str, role: &str) -> Session {
        let mut child = command(
            "psql",
            &[
                "-X",
                "-q",
                "-t",
                "-A",
                "-h",
                cluster.socket_dir.to_str().unwrap(),
                "-U",
                role,
                "-d",
                db,
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
        let (tx, rx) = channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for (stream, pipe) in [
            (Stream::Out, Box::new(out) as Box<dyn std::io::Read + Send>),
            (Stream::Err, Box::new(err)),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for text in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let at = Instant::now();
                    if tx.send(Line { stream, text, at }).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        let mut s = Session {
            child,
            stdin,
            lines: rx,
            pid: 0,
        };
        let r = s.query("SELECT pg_backend_pid();");
        assert!(r.ok(), "cannot open a session: {r:?}");
        s.pid = r.out.trim().parse().expect("a backend pid");
        s
    }

    /// Send a statement without waiting for its end; `finish` collects it.
    pub fn send(&mut self, sql: &str) {
        let stdin = self.stdin.as_mut().expect("session open");
        // The mark on both streams tells when everything of the statement was read.
        let _ = write!(stdin, "{sql}\n\\echo {MARK}\n\\warn {MARK}\n");
        let _ = stdin.flush();
    }

    /// Wait (up to `timeout`) for the statement sent last to end.
    pub fn finish(&mut self, timeout: Duration) -> Reply {
        let deadline = Instant::now() + timeout;
        let mut reply = Reply {
            out: String::new(),
            err: String::new(),
            err_at: None,
            ended: false,
        };
        let (mut out_done, mut err_done) = (false, false);
        while !(out_done && err_done) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.text == MARK => match line.stream {
                    Stream::Out => out_done = true,
                    Stream::Err => err_done = true,
                },
                Ok(line) => match line.stream {
                    Stream::Out => {
                        reply.out.push_str(&line.text);
                        reply.out.push('\n');
                    }
                    Stream::Err => {
                        reply.err_at.get_or_insert(line.at);
                        reply.err.push_str(&line.text);
                        reply.err.push('\n');
                    }
                },
                Err(RecvTimeoutError::Disconnected) => {
                    reply.ended = true;
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("statement did not end within {timeout:?}: {reply:?}")
                }
            }
        }
        reply.out = reply.out.trim_end().to_string();
        reply
    }

    /// Run one statement and wait for its end (up to two minutes).
    pub fn query(&mut self, sql: &str) -> Reply {
        self.send(sql);
        self.finish(Duration::from_secs(120))
    }

    /// Run one statement that must succeed; its rows.
    pub fn ok(&mut self, sql: &str) -> String {
        let r = self.query(sql);
        assert!(r.ok(), "{sql}: {}", r.err);
        r.out
    }

    /// Close psql and wait for it.
    pub fn close(mut self) {
        self.stdin = None;
        let _ = self.child.wait();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command name and the fields after it of a /proc stat file
/// (`/proc/PID/stat`, `/proc/PID/task/TID/stat`): `pid (comm) state ppid
/// ...`, where comm may hold spaces and parentheses, so the fields start
/// after the last ')'. Field *n* of proc(5) is `fields[n - 3]`.
pub fn read_stat(path: &std::path::Path) -> Option<(String, Vec<String>)> {
    let stat = fs::read_to_string(path).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    Some((name, rest.split_whitespace().map(str::to_string).collect()))
}

/// The state letter and the parent of process `pid`, from /proc/PID/stat.
fn stat_of(pid: u32) -> Option<(char, u32)> {
    let (_, fields) = read_stat(std::path::Path::new(&format!("/proc/{pid}/stat")))?;
    let state = fields.first()?.chars().next()?;
    Some((state, fields.get(1)?.parse().ok()?))
}

/// The state letter of process `pid` (`R`, `S`, `T`, `Z`...).
pub fn state_of(pid: u32) -> Option<char> {
    stat_of(pid).map(|(state, _)| state)
}

pub fn parent_of(pid: u32) -> Option<u32> {
    stat_of(pid).map(|(_, parent)| parent)
}

/// Whether `pid` exists and is not a zombie: a zombie holds no memory,
/// segment or file, so it is gone for a test's purposes.
pub fn is_alive(pid: u32) -> bool {
    state_of(pid).is_some_and(|state| state != 'Z' && state != 'X')
}

/// Children of process `pid`, from /proc (pid, state letter).
pub fn children_of(pid: u32) -> Vec<(u32, char)> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|child| match stat_of(child) {
            Some((state, parent)) if parent == pid => Some((child, state)),
            _ => None,
        })
        .collect()
}

/// Whether `pid` is a template process (pg_walredo/template.c names itself
/// `walredo-tmpl`; the processes it forks, the host's children too, are
/// `postgres`).
pub fn is_template(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "walredo-tmpl")
}

/// The live (not zombie) wal-redo processes of host `host`: its children
/// but its template process (template spawn mode, the default), whose
/// processes are the host's children too.
pub fn wal_redo_processes_of(host: u32) -> Vec<u32> {
    children_of(host)
        .into_iter()
        .filter(|&(pid, state)| state != 'Z' && !is_template(pid))
        .map(|(pid, _)| pid)
        .collect()
}

/// The wal-redo processes of host `host` that serve its pool (see
/// `has_answered`): not the spare, a process started ahead that nobody has
/// used yet (`spare_process`, on by default).
pub fn serving_processes_of(host: u32) -> Vec<u32> {
    wal_redo_processes_of(host)
        .into_iter()
        .filter(|&pid| has_answered(pid))
        .collect()
}

/// Whether wal-redo process `pid` has answered anything (its first ping is
/// a page, at its start for a slot, at its hand-over for a spare): it has
/// written at least a page (8 KiB), from /proc/PID/io. Its start-up alone
/// writes less (its `postmaster.pid` and the like: 3.5 KiB measured on
/// PostgreSQL 15), so a spare that waits has not.
pub fn has_answered(pid: u32) -> bool {
    const PAGE: u64 = 8192;
    fs::read_to_string(format!("/proc/{pid}/io")).is_ok_and(|io| {
        io.lines()
            .find_map(|l| l.strip_prefix("wchar:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .is_some_and(|written| written >= PAGE)
    })
}

/// Whether `pid` runs PostgreSQL already: a child not yet past its exec is
/// still the library's start-up code, which a fault test should not hit.
pub fn runs_postgres(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "postgres")
}

/// The wal-redo processes of host `host` that run PostgreSQL already (see
/// `runs_postgres`): the ones a fault test may kill.
pub fn postgres_processes_of(host: u32) -> Vec<u32> {
    wal_redo_processes_of(host)
        .into_iter()
        .filter(|&pid| runs_postgres(pid))
        .collect()
}

/// The scratch root walredo_inspect uses in a server's backends by default:
/// `pgsql_tmp_walredo` in the server's data directory.
pub fn server_scratch_root(data: &Path) -> PathBuf {
    data.join("pgsql_tmp_walredo")
}

/// Scratch directories of host `pid` in `root`.
pub fn scratch_dirs_of(root: &Path, pid: u32) -> Vec<String> {
    let prefix = format!("proc-{pid}-");
    fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// A bytea as psql prints it (`\x` and hex digits), as bytes.
pub fn hex_decode(s: &str) -> Vec<u8> {
    let s = s.trim().trim_start_matches("\\x");
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}
