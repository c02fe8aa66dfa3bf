//! Everything needed before a wal-redo process can start: PostgreSQL 15's
//! binaries, the `pg_walredo` extension, an unprivileged user when the caller
//! is root, and a template for the per-process scratch directories.
//!
//! A [`Launcher`] resolves all of that once (a missing piece is an error that
//! says what to install); [`crate::process::Process::spawn`] then uses it for
//! every process.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Config;
use crate::crc32c::crc32c;
use crate::error::{Error, Result};

/// Where Debian puts PostgreSQL 15; tried before `pg_config` on `PATH`.
const DEBIAN_PG15_CONFIG: &str = "/usr/lib/postgresql/15/bin/pg_config";
const INSTALL_PG15: &str = "apt-get install -y postgresql-15";
const EXTENSION_FILE: &str = "pg_walredo.so";

/// A user id and group id to run children as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
}

/// The resolved, ready-to-use start-up environment of wal-redo processes.
#[derive(Debug)]
pub struct Launcher {
    program: Program,
    memory_limit: u64,
    blocking_wait: bool,
    /// `None` when the caller is not root: children run as the caller.
    user: Option<UserIds>,
    scratch_root: PathBuf,
}

#[derive(Debug)]
enum Program {
    Postgres {
        postgres: PathBuf,
        /// The extension, copied where the child's user can read it.
        extension: PathBuf,
        template: PathBuf,
        verify: bool,
        wal_log_hints: bool,
        extra_settings: Vec<String>,
    },
    /// `Config::child_program`: a stand-in for failure tests.
    Custom { path: PathBuf, args: Vec<String> },
}

/// Numbers that make names unique within this host process.
static UNIQUE: AtomicU64 = AtomicU64::new(0);

pub fn unique_suffix() -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    format!("{}-{}", std::process::id(), n)
}

fn spawn_error(msg: impl Into<String>) -> Error {
    Error::SpawnFailed(msg.into())
}

fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    spawn_error(format!("{what} {}: {e}", path.display()))
}

impl Launcher {
    pub fn new(config: &Config) -> Result<Launcher> {
        let user = unprivileged_user(&config.run_as_user)?;
        let scratch_root = match &config.scratch_dir {
            Some(d) => d.clone(),
            // SAFETY: geteuid has no preconditions and cannot fail.
            None => std::env::temp_dir().join(format!("walredo-{}", unsafe { libc::geteuid() })),
        };
        make_dir(&scratch_root, 0o711)?;
        remove_stale_scratch_dirs(&scratch_root);

        let program = match &config.child_program {
            Some((path, args)) => Program::Custom {
                path: path.clone(),
                args: args.clone(),
            },
            None => postgres_program(config, &scratch_root, user)?,
        };
        Ok(Launcher {
            program,
            memory_limit: config.process_memory_limit,
            blocking_wait: config.blocking_wait,
            user,
            scratch_root,
        })
    }

    /// RLIMIT_AS of every child.
    pub fn memory_limit(&self) -> u64 {
        self.memory_limit
    }

    /// `Config::blocking_wait`.
    pub fn blocking_wait(&self) -> bool {
        self.blocking_wait
    }

    /// The ids children run as, or `None` when they run as the caller.
    pub fn user(&self) -> Option<UserIds> {
        self.user
    }

    /// Make a private scratch directory for one process: a copy of the
    /// template, owned by the child's user, mode 0700 (PostgreSQL checks it).
    pub fn make_scratch_dir(&self) -> Result<PathBuf> {
        let dir = self.scratch_root.join(format!("proc-{}", unique_suffix()));
        let result = (|| {
            make_dir(&dir, 0o700)?;
            make_dir(&dir.join("global"), 0o700)?;
            make_dir(&dir.join("pg_notify"), 0o700)?;
            make_dir(&dir.join("pg_dynshmem"), 0o700)?;
            if let Program::Postgres { template, .. } = &self.program {
                for f in ["PG_VERSION", "global/pg_control"] {
                    fs::copy(template.join(f), dir.join(f))
                        .map_err(|e| io_error("cannot copy the template into", &dir, e))?;
                }
                // Present and empty, so the process starts without a log line.
                fs::write(dir.join("postgresql.auto.conf"), b"")
                    .map_err(|e| io_error("cannot write", &dir, e))?;
            }
            if let Some(ids) = self.user {
                chown_tree(&dir, ids)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(dir)
    }

    /// The command that starts a wal-redo process on `scratch`. The caller
    /// sets up stdio, the process group and the pre-exec hardening.
    pub fn command(&self, scratch: &Path) -> Command {
        let (postgres, extension, verify, wal_log_hints, extra) = match &self.program {
            Program::Postgres {
                postgres,
                extension,
                verify,
                wal_log_hints,
                extra_settings,
                ..
            } => (postgres, extension, *verify, *wal_log_hints, extra_settings),
            Program::Custom { path, args } => {
                let mut cmd = Command::new(path);
                cmd.args(args).arg(scratch).env_clear().current_dir(scratch);
                if let Some(ids) = self.user {
                    cmd.uid(ids.uid).gid(ids.gid);
                }
                return cmd;
            }
        };
        let mut cmd = Command::new(postgres);
        cmd.arg("--single").arg("-D").arg(scratch);
        let settings = [
            "config_file=/dev/null".to_string(),
            format!("shared_preload_libraries=\"{}\"", extension.display()),
            "shared_buffers=1MB".to_string(),
            "max_connections=2".to_string(),
            "fsync=off".to_string(),
            "huge_pages=off".to_string(),
            // Dynamic shared memory as files in the scratch directory, which
            // goes away with the process, instead of /dev/shm entries that a
            // killed process would leave behind.
            "dynamic_shared_memory_type=mmap".to_string(),
            "log_min_messages=warning".to_string(),
            // Our log lines carry the pid already.
            "log_line_prefix=".to_string(),
            format!("pg_walredo.verify={}", on_off(verify)),
            format!("wal_log_hints={}", on_off(wal_log_hints)),
        ];
        for s in settings.iter().chain(extra) {
            cmd.arg("-c").arg(s);
        }
        cmd.arg("postgres");
        cmd.env_clear().current_dir(scratch);
        // std also drops supplementary groups when it changes the uid.
        if let Some(ids) = self.user {
            cmd.uid(ids.uid).gid(ids.gid);
        }
        cmd
    }
}

/// PostgreSQL 15, the extension and the scratch template, found and checked.
fn postgres_program(
    config: &Config,
    scratch_root: &Path,
    user: Option<UserIds>,
) -> Result<Program> {
    let pg_config = find_pg_config();
    let bindir = match &config.pg_bindir {
        Some(dir) => dir.clone(),
        None => {
            let cfg = pg_config.as_ref().ok_or_else(|| {
                spawn_error(format!(
                    "PostgreSQL 15 not found (no {DEBIAN_PG15_CONFIG}, no PostgreSQL 15 \
                     pg_config on PATH): install it with `{INSTALL_PG15}`, or set pg_bindir"
                ))
            })?;
            PathBuf::from(pg_config_value(cfg, "--bindir")?)
        }
    };
    let postgres = bindir.join("postgres");
    check_postgres_15(&postgres)?;

    let extension_src = match &config.extension_path {
        Some(p) => p.clone(),
        None => match &pg_config {
            Some(cfg) => PathBuf::from(pg_config_value(cfg, "--pkglibdir")?).join(EXTENSION_FILE),
            None => PathBuf::from(EXTENSION_FILE),
        },
    };
    if !extension_src.is_file() {
        return Err(spawn_error(format!(
            "the pg_walredo extension is not at {}: build and install it with \
             `make -C pg_walredo install` (needs `apt-get install -y \
             postgresql-server-dev-15`), or set extension_path",
            extension_src.display()
        )));
    }

    let extension = install_extension_copy(&extension_src, scratch_root)?;
    let template = ensure_template(&bindir, scratch_root, user, config.data_checksums)?;
    Ok(Program::Postgres {
        postgres,
        extension,
        template,
        verify: config.verify,
        wal_log_hints: config.wal_log_hints,
        extra_settings: config.extra_settings.clone(),
    })
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// A PostgreSQL 15 `pg_config`: Debian's, else one on `PATH` that says 15.
fn find_pg_config() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from(DEBIAN_PG15_CONFIG),
        PathBuf::from("pg_config"),
    ];
    candidates.into_iter().find(|c| {
        pg_config_value(c, "--version")
            .map(|v| v.starts_with("PostgreSQL 15."))
            .unwrap_or(false)
    })
}

fn pg_config_value(pg_config: &Path, flag: &str) -> Result<String> {
    let out = Command::new(pg_config)
        .arg(flag)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| io_error("cannot run", pg_config, e))?;
    if !out.status.success() {
        return Err(spawn_error(format!(
            "{} {flag} failed: {}",
            pg_config.display(),
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn check_postgres_15(postgres: &Path) -> Result<()> {
    let out = Command::new(postgres)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            spawn_error(format!(
                "cannot run {}: {e}: install PostgreSQL 15 with `{INSTALL_PG15}`, or set pg_bindir",
                postgres.display()
            ))
        })?;
    let version = String::from_utf8_lossy(&out.stdout);
    if !version.contains("(PostgreSQL) 15.") {
        return Err(spawn_error(format!(
            "{} is not PostgreSQL 15 (it says {:?}): install it with `{INSTALL_PG15}`, or set \
             pg_bindir",
            postgres.display(),
            version.trim()
        )));
    }
    Ok(())
}

/// The ids of `user` when the caller is root (children must not run as root),
/// `None` otherwise.
pub fn unprivileged_user(user: &str) -> Result<Option<UserIds>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let ids = lookup_user(user)?;
    if ids.uid == 0 {
        return Err(Error::InvalidArgument(format!(
            "run_as_user {user:?} is root; PostgreSQL refuses to run as root"
        )));
    }
    Ok(Some(ids))
}

fn lookup_user(user: &str) -> Result<UserIds> {
    let name = CString::new(user)
        .map_err(|_| Error::InvalidArgument(format!("run_as_user {user:?} contains a NUL byte")))?;
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: passwd is plain old data; getpwnam_r fills it in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and buf's length is passed.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(spawn_error(format!(
            "user {user:?} does not exist; wal-redo processes cannot run as root: create it \
             (`apt-get install -y postgresql-15` does, or `useradd --system {user}`), or set \
             run_as_user"
        )));
    }
    Ok(UserIds {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

fn make_dir(dir: &Path, mode: u32) -> Result<()> {
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error("cannot create directory", dir, e)),
    }
    // The umask may have narrowed the mode.
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| io_error("cannot set permissions of", dir, e))
}

fn chown_tree(path: &Path, ids: UserIds) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(ids.uid), Some(ids.gid))
        .map_err(|e| io_error("cannot chown", path, e))?;
    if path.is_dir() {
        let entries = fs::read_dir(path).map_err(|e| io_error("cannot read", path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("cannot read", path, e))?;
            chown_tree(&entry.path(), ids)?;
        }
    }
    Ok(())
}

/// Copy the extension into the scratch root, named by its checksum, so the
/// child's user can read it wherever the original lives (e.g. under /root).
fn install_extension_copy(src: &Path, root: &Path) -> Result<PathBuf> {
    let bytes = fs::read(src).map_err(|e| io_error("cannot read", src, e))?;
    let dest = root.join(format!(
        "pg_walredo-{:08x}-{}.so",
        crc32c(&bytes),
        bytes.len()
    ));
    if dest.is_file() {
        return Ok(dest);
    }
    let tmp = root.join(format!("pg_walredo.tmp-{}", unique_suffix()));
    fs::write(&tmp, &bytes).map_err(|e| io_error("cannot write", &tmp, e))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))
        .map_err(|e| io_error("cannot set permissions of", &tmp, e))?;
    fs::rename(&tmp, &dest).map_err(|e| io_error("cannot rename to", &dest, e))?;
    Ok(dest)
}

/// The template a scratch directory is copied from: PostgreSQL needs only
/// `PG_VERSION` and `global/pg_control`. Made once per scratch root (and per
/// checksum setting, which pg_control records) with initdb.
fn ensure_template(
    bindir: &Path,
    root: &Path,
    user: Option<UserIds>,
    data_checksums: bool,
) -> Result<PathBuf> {
    let name = format!("template-pg15-checksums-{}", on_off(data_checksums));
    let template = root.join(&name);
    if template.join("global/pg_control").is_file() && template.join("PG_VERSION").is_file() {
        return Ok(template);
    }

    let work = root.join(format!("initdb-{}", unique_suffix()));
    let result = (|| {
        make_dir(&work, 0o700)?;
        if let Some(ids) = user {
            chown_tree(&work, ids)?;
        }
        let data = work.join("data");
        let mut cmd = Command::new(bindir.join("initdb"));
        cmd.arg("-D")
            .arg(&data)
            .args([
                "--no-sync",
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
            ])
            .args(["--locale=C"])
            .env_clear()
            .current_dir(&work)
            .stdin(Stdio::null());
        if data_checksums {
            cmd.arg("--data-checksums");
        }
        if let Some(ids) = user {
            cmd.uid(ids.uid).gid(ids.gid);
        }
        let out = cmd
            .output()
            .map_err(|e| spawn_error(format!("cannot run initdb in {}: {e}", bindir.display())))?;
        if !out.status.success() {
            return Err(spawn_error(format!(
                "initdb failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let staged = root.join(format!("{name}.tmp-{}", unique_suffix()));
        make_dir(&staged, 0o755)?;
        make_dir(&staged.join("global"), 0o755)?;
        for f in ["PG_VERSION", "global/pg_control"] {
            fs::copy(data.join(f), staged.join(f))
                .map_err(|e| io_error("cannot copy", &data, e))?;
            fs::set_permissions(staged.join(f), fs::Permissions::from_mode(0o644))
                .map_err(|e| io_error("cannot set permissions of", &staged, e))?;
        }
        // Another launcher may have won the race; either template is good.
        if fs::rename(&staged, &template).is_err() {
            let _ = fs::remove_dir_all(&staged);
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&work);
    result?;
    if !template.join("global/pg_control").is_file() {
        return Err(spawn_error(format!(
            "template {} is incomplete",
            template.display()
        )));
    }
    Ok(template)
}

/// Scratch directories of host processes that died without cleaning up.
fn remove_stale_scratch_dirs(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = stale_owner_pid(&name) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn stale_owner_pid(name: &OsStr) -> Option<libc::pid_t> {
    let name = name.to_str()?;
    let rest = name
        .strip_prefix("proc-")
        .or_else(|| name.strip_prefix("initdb-"))?;
    rest.split('-').next()?.parse().ok()
}
