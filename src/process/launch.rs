//! Everything needed before a wal-redo process can start: PostgreSQL 15's
//! binaries, the `pg_walredo` extension, an unprivileged user when the caller
//! is root, and a template for the per-process scratch directories.
//!
//! A [`Launcher`] resolves all of that once (a missing piece is an error that
//! says what to install); [`crate::process::Process::spawn`] then uses it for
//! every process.
//!
//! Trust in the scratch root: what the children load (the extension's copy)
//! and start from (the template) lives there, and runs before their sandbox
//! exists, so whoever can write there could run code as the children's user.
//! The root must therefore be ours alone (owned by us, not a symbolic link,
//! writable by nobody else) or it is refused: an error says what to do. It is
//! refused rather than replaced by a private one because a planted root is a
//! sign of an attack that its owner must see, and because a private root per
//! host would lose the template and stale-directory cleanup that a fixed
//! root shares between hosts. Files reused from it are checked again (ours,
//! regular, the extension byte for byte) and replaced when they are not;
//! new names in it are created exclusively, never taken over.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::{Config, SpawnMode};
use crate::error::{Error, Result};
use crate::process::safe_fs::Dir;
use crate::process::template::{Forked, Pipes, Template as TemplateProcess};
use crate::wal::crc32c::crc32c;

/// Where Debian (and the PostgreSQL project's apt packages) put each
/// version's `pg_config`; tried before `pg_config` on `PATH`.
fn debian_pg_config(pg_version: u32) -> PathBuf {
    PathBuf::from(format!("/usr/lib/postgresql/{pg_version}/bin/pg_config"))
}
fn install_hint(pg_version: Option<u32>) -> String {
    format!("apt-get install -y postgresql-{}", pg_version.unwrap_or(15))
}
const EXTENSION_FILE: &str = "pg_walredo.so";

pub use crate::process::account::{
    ensure_system_account, unprivileged_user, UserIds, CHILD_ACCOUNT,
};

/// The resolved, ready-to-use start-up environment of wal-redo processes.
#[derive(Debug)]
pub struct Launcher {
    program: Program,
    /// The PostgreSQL major version the processes run (0 for `child_program`).
    pg_version: u32,
    memory_limit: u64,
    blocking_wait: bool,
    /// `None` when the caller is not root: children run as the caller.
    user: Option<UserIds>,
    scratch_root: PathBuf,
    /// How processes start; always `Direct` for a custom child program.
    spawn_mode: SpawnMode,
    /// How long a start may take before it counts as failed.
    start_timeout: Duration,
    /// The template process, once started (`SpawnMode::Template`).
    template: Mutex<Option<TemplateProcess>>,
    /// A new scratch directory made ahead of need (`prepare_scratch_dir`),
    /// never used by any process yet.
    spare_scratch: Mutex<Option<PathBuf>>,
    /// `Config::spare_process`: the spawner keeps a process started ahead.
    spare_process: bool,
    /// `Config::idle_timeout`: how long that spare waits for a start.
    idle_timeout: Option<Duration>,
}

impl std::fmt::Debug for TemplateProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TemplateProcess {}", self.pid())
    }
}

#[derive(Debug)]
enum Program {
    Postgres {
        postgres: PathBuf,
        /// The extension, copied where the child's user can read it.
        extension: PathBuf,
        template: Template,
        verify: bool,
        wal_log_hints: bool,
        require_landlock: bool,
        extra_settings: Vec<String>,
    },
    /// `Config::child_program`: a stand-in for failure tests.
    Custom { path: PathBuf, args: Vec<String> },
}

/// The files a scratch directory starts with (PostgreSQL needs no more), read
/// once from the checked template and written into each new directory: no
/// later change of the template on disk can reach a process.
struct Template {
    files: Vec<(&'static str, Vec<u8>)>,
}

const TEMPLATE_FILES: [&str; 2] = ["PG_VERSION", "global/pg_control"];
/// PostgreSQL's PG_CONTROL_FILE_SIZE; PG_VERSION is smaller.
const TEMPLATE_FILE_MAX: u64 = 8192;

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: Vec<_> = self.files.iter().map(|(n, b)| (n, b.len())).collect();
        write!(f, "Template {sizes:?}")
    }
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
            None => std::env::temp_dir().join(format!("walredo-{}", euid())),
        };
        check_scratch_root(&scratch_root)?;
        remove_stale_scratch_dirs(&scratch_root, user.map_or_else(euid, |ids| ids.uid));

        let (program, pg_version) = match &config.child_program {
            Some((path, args)) => (
                Program::Custom {
                    path: path.clone(),
                    args: args.clone(),
                },
                config.pg_version.unwrap_or(0),
            ),
            None => postgres_program(config, &scratch_root, user)?,
        };
        let spawn_mode = match program {
            Program::Custom { .. } => SpawnMode::Direct,
            // The template's processes are tracked through pidfds (Linux 5.3),
            // and it is started with clone(CLONE_VM): neither under valgrind.
            Program::Postgres { .. } if !crate::process::start::template_possible() => {
                SpawnMode::Direct
            }
            Program::Postgres { .. } => config.spawn_mode,
        };
        Ok(Launcher {
            program,
            pg_version,
            memory_limit: config.process_memory_limit,
            blocking_wait: config.blocking_wait,
            user,
            scratch_root,
            spawn_mode,
            start_timeout: config.timeout,
            template: Mutex::new(None),
            spare_scratch: Mutex::new(None),
            spare_process: config.spare_process,
            idle_timeout: config.idle_timeout,
        })
    }

    /// The PostgreSQL major version the processes run: `Config::pg_version`,
    /// or the version of the `postgres` found.
    pub fn pg_version(&self) -> u32 {
        self.pg_version
    }

    /// Whether the spawner keeps a spare process (`Config::spare_process`).
    pub fn spare_process(&self) -> bool {
        self.spare_process
    }

    /// How long a spare may wait for a start (`Config::idle_timeout`).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// How this launcher starts processes.
    pub fn spawn_mode(&self) -> SpawnMode {
        self.spawn_mode
    }

    /// How long a start may take.
    pub fn start_timeout(&self) -> Duration {
        self.start_timeout
    }

    /// The pid of the template process, if one runs now (for tests).
    pub fn template_pid(&self) -> Option<u32> {
        let template = self.template.lock().unwrap_or_else(|e| e.into_inner());
        template.as_ref().filter(|t| t.is_alive()).map(|t| t.pid())
    }

    /// A new wal-redo process on `scratch` forked by the template, which is
    /// started first if there is none or it died. A template that fails a
    /// request is dropped; one that had served before is replaced at once
    /// and asked again (it may have died since), a new one is not.
    pub(crate) fn fork_from_template(&self, scratch: &Path) -> Result<(Forked, Pipes)> {
        let mut template = self.template.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..2 {
            let fresh = match template.as_ref() {
                Some(t) if t.is_ours() && t.is_alive() => false,
                _ => {
                    *template = None;
                    *template = Some(TemplateProcess::start(self)?);
                    true
                }
            };
            let t = template.as_ref().expect("just made");
            match t.fork(scratch, self.start_timeout) {
                Ok(forked) => {
                    t.forward_stderr();
                    return Ok(forked);
                }
                Err(e) => {
                    *template = None;
                    if fresh {
                        return Err(e);
                    }
                    log::warn!("{e}: starting a new template");
                }
            }
        }
        Err(Error::SpawnFailed(
            "the template process failed twice".into(),
        ))
    }

    /// The program and arguments of a wal-redo process started directly on
    /// `scratch`: the custom child program (with `scratch` last) or
    /// `postgres --single`.
    pub(crate) fn direct_argv(&self, scratch: &Path) -> (PathBuf, Vec<OsString>) {
        if let Program::Custom { path, args } = &self.program {
            let mut args: Vec<OsString> = args.iter().map(OsString::from).collect();
            args.push(scratch.into());
            return (path.clone(), args);
        }
        self.postgres_argv(scratch).expect("a postgres program")
    }

    /// The template's program and arguments on `scratch`, or `None` for a
    /// custom child program.
    pub(crate) fn template_argv(&self, scratch: &Path) -> Option<(PathBuf, Vec<OsString>)> {
        let (program, mut args) = self.postgres_argv(scratch)?;
        let dbname = args.pop()?;
        args.push("-c".into());
        args.push("pg_walredo.template=on".into());
        args.push(dbname);
        Some((program, args))
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

    /// The user id children run as.
    pub fn child_uid(&self) -> u32 {
        self.user.map_or_else(euid, |ids| ids.uid)
    }

    /// A new scratch directory for one process: the one made ahead by
    /// `prepare_scratch_dir`, if any, else one made now.
    pub fn take_scratch_dir(&self) -> Result<PathBuf> {
        let spare = self
            .spare_scratch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match spare {
            Some(dir) => Ok(dir),
            None => self.make_scratch_dir(),
        }
    }

    /// Make the next process's scratch directory now, while nobody waits
    /// for that process (a spawner calls it after each start).
    pub fn prepare_scratch_dir(&self) {
        let mut spare = self.spare_scratch.lock().unwrap_or_else(|e| e.into_inner());
        if spare.is_none() {
            *spare = self.make_scratch_dir().ok();
        }
    }

    /// Make a private scratch directory for one process: a copy of the
    /// template, owned by the child's user, mode 0700 (PostgreSQL checks it).
    /// Always a new directory, never one that was there already. Built while
    /// only we can enter it, through descriptors, and handed to the child's
    /// user last (`safe_fs`): that user can change nothing we then follow.
    pub fn make_scratch_dir(&self) -> Result<PathBuf> {
        let dir = new_dir(&self.scratch_root, "proc-", 0o700)?;
        let result = (|| {
            let owner = self.user;
            let top = Dir::open(&dir)?;
            for sub in ["global", "pg_notify", "pg_dynshmem"] {
                top.make_dir(sub, 0o700, owner)?;
            }
            if let Program::Postgres { template, .. } = &self.program {
                for (path, bytes) in &template.files {
                    let (dir, name) = top.parent_of(path)?;
                    dir.write_new(name, bytes, 0o600, owner)?;
                }
                // Present and empty, so the process starts without a log line.
                top.write_new("postgresql.auto.conf", b"", 0o600, owner)?;
            }
            top.set_owner_and_mode(owner, 0o700)
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&dir);
            return Err(io_error("cannot make the scratch directory", &dir, e));
        }
        Ok(dir)
    }

    /// The command that starts a wal-redo process on `scratch`. The caller
    /// sets up stdio, the process group and the pre-exec hardening.
    pub fn command(&self, scratch: &Path) -> Command {
        if let Program::Custom { path, args } = &self.program {
            let mut cmd = Command::new(path);
            cmd.args(args).arg(scratch).env_clear().current_dir(scratch);
            if let Some(ids) = self.user {
                cmd.uid(ids.uid).gid(ids.gid);
            }
            return cmd;
        }
        let (postgres, args) = self.postgres_argv(scratch).expect("a postgres program");
        let mut cmd = Command::new(postgres);
        cmd.args(args);
        cmd.env_clear().current_dir(scratch);
        // std also drops supplementary groups when it changes the uid.
        if let Some(ids) = self.user {
            cmd.uid(ids.uid).gid(ids.gid);
        }
        cmd
    }

    /// `postgres --single` on `scratch` and its arguments (the last is the
    /// database name); `None` for a custom child program.
    fn postgres_argv(&self, scratch: &Path) -> Option<(PathBuf, Vec<OsString>)> {
        let Program::Postgres {
            postgres,
            extension,
            verify,
            wal_log_hints,
            require_landlock,
            extra_settings,
            ..
        } = &self.program
        else {
            return None;
        };
        let mut args: Vec<OsString> = vec!["--single".into(), "-D".into(), scratch.into()];
        let settings = [
            "config_file=/dev/null".to_string(),
            format!("shared_preload_libraries=\"{}\"", extension.display()),
            "shared_buffers=1MB".to_string(),
            "max_connections=2".to_string(),
            // Shared memory sized for one backend that takes no locks and
            // has no helpers: less to create and clear at every start.
            "max_locks_per_transaction=10".to_string(),
            "max_pred_locks_per_transaction=10".to_string(),
            "max_worker_processes=0".to_string(),
            "max_wal_senders=0".to_string(),
            "max_replication_slots=0".to_string(),
            "autovacuum_max_workers=1".to_string(),
            // PostgreSQL probes this many descriptors at start (a dup and a
            // close each); redo keeps few relation files open.
            "max_files_per_process=64".to_string(),
            "fsync=off".to_string(),
            "huge_pages=off".to_string(),
            // Dynamic shared memory as files in the scratch directory, which
            // goes away with the process, instead of /dev/shm entries that a
            // killed process would leave behind.
            "dynamic_shared_memory_type=mmap".to_string(),
            "log_min_messages=warning".to_string(),
            // Our log lines carry the pid already.
            "log_line_prefix=".to_string(),
            format!("pg_walredo.verify={}", on_off(*verify)),
            format!("wal_log_hints={}", on_off(*wal_log_hints)),
            format!("pg_walredo.require_landlock={}", on_off(*require_landlock)),
        ];
        for s in settings.iter().chain(extra_settings) {
            args.push("-c".into());
            args.push(s.into());
        }
        args.push("postgres".into());
        Some((postgres.clone(), args))
    }
}

impl Launcher {
    /// Give up what was made ahead of need (the template process, the next
    /// scratch directory) and wait for the sweeper: a shut-down pool starts
    /// nothing more, and leaves nothing behind, even while someone still
    /// holds it (a callback's clone of the pool, say).
    pub fn release(&self) {
        // The template first: its scratch directory goes with it.
        let template = self
            .template
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(template);
        let spare = self
            .spare_scratch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(dir) = spare {
            let _ = fs::remove_dir_all(dir);
        }
        crate::process::sweeper::flush();
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // Nothing of this launcher's processes left once it is gone.
        self.release();
    }
}

/// PostgreSQL (of `Config::pg_version`, or any supported version), the
/// extension and the scratch template, found and checked; and the version.
fn postgres_program(
    config: &Config,
    scratch_root: &Path,
    user: Option<UserIds>,
) -> Result<(Program, u32)> {
    let want = config.pg_version;
    if let Some(v) = want {
        if crate::wal::xlog_page_magic(v).is_none() {
            return Err(Error::InvalidArgument(format!(
                "pg_version {v} is not supported: walredo serves PostgreSQL {}",
                crate::wal::supported_versions()
            )));
        }
    }
    let pg_config = find_pg_config(want, config.pg_bindir.as_deref());
    let bindir = match &config.pg_bindir {
        Some(dir) => dir.clone(),
        None => {
            let cfg = pg_config.as_ref().ok_or_else(|| {
                let which = want.map_or_else(
                    || format!("PostgreSQL {}", crate::wal::supported_versions()),
                    |v| format!("PostgreSQL {v}"),
                );
                spawn_error(format!(
                    "{which} not found (no /usr/lib/postgresql/N/bin/pg_config, no such \
                     pg_config on PATH): install it with `{}`, or set pg_bindir",
                    install_hint(want)
                ))
            })?;
            PathBuf::from(pg_config_value(cfg, "--bindir")?)
        }
    };
    let postgres = bindir.join("postgres");
    let pg_version = check_postgres_version(&postgres, want)?;

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
             postgresql-server-dev-{pg_version}`), or set extension_path",
            extension_src.display()
        )));
    }

    let extension = install_extension_copy(&extension_src, scratch_root)?;
    let template = ensure_template(
        &bindir,
        scratch_root,
        user,
        config.data_checksums,
        pg_version,
    )?;
    let program = Program::Postgres {
        postgres,
        extension,
        template,
        verify: config.verify,
        wal_log_hints: config.wal_log_hints,
        require_landlock: config.require_landlock,
        extra_settings: version_settings(pg_version)
            .into_iter()
            .chain(config.extra_settings.iter().cloned())
            .collect(),
    };
    Ok((program, pg_version))
}

/// Server settings a version's wal-redo processes need beyond the common
/// ones (before `Config::extra_settings`, which can override them).
fn version_settings(pg_version: u32) -> Vec<String> {
    let mut settings = Vec::new();
    if pg_version >= 18 {
        // 18's asynchronous I/O: plain synchronous reads and writes, as in
        // 15 to 17. A single-user backend has no I/O workers and executes
        // "worker" I/O synchronously anyway; io_uring would need system
        // calls the sandbox does not allow.
        settings.push("io_method=sync".to_string());
    }
    settings
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// A `pg_config` of version `want` (any supported one if `None`): the one
/// in `bindir` if given, else Debian's (15 first, then 16, 17, 18), else one
/// on `PATH`.
fn find_pg_config(want: Option<u32>, bindir: Option<&Path>) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = match bindir {
        Some(dir) => vec![dir.join("pg_config")],
        None => crate::wal::PG_VERSIONS
            .iter()
            .map(|(v, _)| *v)
            .filter(|v| want.is_none_or(|w| w == *v))
            .map(debian_pg_config)
            .collect(),
    };
    if bindir.is_none() {
        candidates.push(PathBuf::from("pg_config"));
    }
    candidates.into_iter().find(|c| {
        pg_config_value(c, "--version")
            .ok()
            .and_then(|v| major_version(v.strip_prefix("PostgreSQL ")?))
            .is_some_and(|v| {
                crate::wal::xlog_page_magic(v).is_some() && want.is_none_or(|w| w == v)
            })
    })
}

/// The major version in "17.6", "18.1 (Debian 18.1-1)", "18beta1".
fn major_version(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
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

/// The major version of `postgres`, which must be a supported one (and
/// `want`, if given).
fn check_postgres_version(postgres: &Path, want: Option<u32>) -> Result<u32> {
    let out = Command::new(postgres)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            spawn_error(format!(
                "cannot run {}: {e}: install PostgreSQL with `{}`, or set pg_bindir",
                postgres.display(),
                install_hint(want)
            ))
        })?;
    let version = String::from_utf8_lossy(&out.stdout);
    let found = version
        .split_once("(PostgreSQL) ")
        .and_then(|(_, v)| major_version(v));
    match found {
        Some(v) if want.is_none_or(|w| w == v) && crate::wal::xlog_page_magic(v).is_some() => Ok(v),
        _ => Err(spawn_error(format!(
            "{} is not PostgreSQL {} (it says {:?}): install it with `{}`, or set pg_bindir",
            postgres.display(),
            want.map_or_else(crate::wal::supported_versions, |v| v.to_string()),
            version.trim(),
            install_hint(want)
        ))),
    }
}

/// The current effective user id.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `uid N (name)`, or `uid N` for an id without a name.
fn describe_uid(uid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: passwd is plain old data; getpwuid_r fills it in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and buf's length is passed.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return format!("uid {uid}");
    }
    // SAFETY: on success pw_name points to a NUL-terminated string in buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    format!("uid {uid} ({})", name.to_string_lossy())
}

/// Why something found in the scratch root may have been written by someone
/// else: not owned by us, or writable by its group or others.
fn foreign_writer(meta: &fs::Metadata) -> Option<String> {
    if meta.uid() != euid() {
        return Some(format!(
            "is owned by {}, not by us ({})",
            describe_uid(meta.uid()),
            describe_uid(euid())
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "is writable by its group or others (mode {:04o})",
            meta.mode() & 0o7777
        ));
    }
    None
}

/// Make the scratch root if it is missing, and accept it only if it is ours
/// alone (see the module notes): a directory, not a symbolic link, owned by
/// us, not writable by group or others. One that is not is left as it is.
fn check_scratch_root(root: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o711).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error("cannot create directory", root, e)),
    }
    // Looked at and changed through one descriptor, never through a link.
    let dir = match Dir::open(root) {
        Ok(dir) => Ok(dir),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            let meta =
                fs::symlink_metadata(root).map_err(|e| io_error("cannot look at", root, e))?;
            Err(if meta.file_type().is_symlink() {
                "is a symbolic link".to_string()
            } else {
                "is not a directory".to_string()
            })
        }
        Err(e) => return Err(io_error("cannot open", root, e)),
    };
    let why = match &dir {
        Ok(dir) => {
            let meta = dir
                .metadata()
                .map_err(|e| io_error("cannot look at", root, e))?;
            foreign_writer(&meta)
        }
        Err(why) => Some(why.clone()),
    };
    if let Some(why) = why {
        return Err(spawn_error(format!(
            "the scratch directory {path} {why}: whoever can write there could make the \
             wal-redo processes run their code. Remove it, after checking what is in it, so \
             that it is made anew (`rm -rf {path}`), or set scratch_dir to a directory owned \
             by {me}, not writable by group or others, and not a symbolic link",
            path = root.display(),
            me = describe_uid(euid()),
        )));
    }
    // Ours: the children's user needs only to pass through it (to its own
    // directory and the extension's copy). The umask may have narrowed it.
    let dir = dir.map_err(spawn_error)?;
    dir.set_owner_and_mode(None, 0o711)
        .map_err(|e| io_error("cannot set permissions of", root, e))
}

/// A new directory `<prefix><pid>-<n>` in `root`. A name already taken (left
/// by an earlier host process that had our pid) is skipped, never reused.
fn new_dir(root: &Path, prefix: &str, mode: u32) -> Result<PathBuf> {
    for _ in 0..100 {
        let dir = root.join(format!("{prefix}{}", unique_suffix()));
        match fs::DirBuilder::new().mode(mode).create(&dir) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error("cannot create directory", &dir, e)),
            Ok(()) => {}
        }
        // The umask may have narrowed the mode.
        return fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .map(|()| dir.clone())
            .map_err(|e| {
                let _ = fs::remove_dir(&dir);
                io_error("cannot set permissions of", &dir, e)
            });
    }
    Err(spawn_error(format!(
        "cannot find a free name for a new directory in {}: remove what is left in it",
        root.display()
    )))
}

/// Write a new file, which must not exist yet, with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let err = |e| io_error("cannot write", path, e);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    io::Write::write_all(&mut file, bytes).map_err(err)?;
    // The umask may have narrowed the mode.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| io_error("cannot set permissions of", path, e))
}

/// The content of `path` if only we can have written it: a regular file, not
/// a symbolic link, owned by us and writable by nobody else, of at most `max`
/// bytes. `Ok(None)` when it does not exist; `Err` says what is wrong.
fn read_ours(path: &Path, max: u64) -> std::result::Result<Option<Vec<u8>>, String> {
    // O_NOFOLLOW: the file itself, never what a link points to; O_NONBLOCK:
    // a FIFO does not block the open (and is refused below); O_NOCTTY: a
    // terminal never becomes ours.
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err("is a symbolic link".into()),
        Err(e) => return Err(format!("cannot be opened ({e})")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot be looked at ({e})"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if let Some(why) = foreign_writer(&meta) {
        return Err(why);
    }
    if meta.len() > max {
        return Err(format!("is larger than expected ({} bytes)", meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read ({e})"))?;
    if bytes.len() as u64 > max {
        return Err("is larger than expected".into());
    }
    Ok(Some(bytes))
}

/// Remove what is at `path`, a directory or not, never following a link.
fn remove_path(path: &Path) {
    let _ = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    };
}

/// Copy the extension into the scratch root, named by its checksum, so the
/// child's user can read it wherever the original lives (e.g. under /root).
/// A file already there under that name is used only if it is ours and the
/// same byte for byte (the name is computable by anyone who can read the
/// original); otherwise a new copy replaces it.
fn install_extension_copy(src: &Path, root: &Path) -> Result<PathBuf> {
    let bytes = fs::read(src).map_err(|e| io_error("cannot read", src, e))?;
    let dest = root.join(format!(
        "pg_walredo-{:08x}-{}.so",
        crc32c(&bytes),
        bytes.len()
    ));
    match read_ours(&dest, bytes.len() as u64) {
        Ok(Some(found)) if found == bytes => return Ok(dest),
        Ok(None) => {}
        Ok(Some(_)) => log::warn!(
            "{} differs from {}: replacing it",
            dest.display(),
            src.display()
        ),
        Err(why) => log::warn!("{} {why}: replacing it", dest.display()),
    }
    let tmp = root.join(format!("pg_walredo.tmp-{}", unique_suffix()));
    write_new(&tmp, &bytes, 0o644)?;
    // Atomic, and replaces a link itself, never its target.
    fs::rename(&tmp, &dest).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error("cannot rename to", &dest, e)
    })?;
    Ok(dest)
}

/// The template's files if all are there and ours; `Ok(None)` if one is
/// missing and the others are ours; `Err` says which one is not ours.
fn read_template(template: &Path) -> std::result::Result<Option<Template>, String> {
    let mut files = Vec::new();
    let mut complete = true;
    for name in TEMPLATE_FILES {
        let path = template.join(name);
        match read_ours(&path, TEMPLATE_FILE_MAX) {
            Ok(Some(bytes)) => files.push((name, bytes)),
            Ok(None) => complete = false,
            Err(why) => return Err(format!("{} {why}", path.display())),
        }
    }
    Ok(complete.then_some(Template { files }))
}

/// The template a scratch directory is copied from: PostgreSQL needs only
/// `PG_VERSION` and `global/pg_control`. Made once per scratch root (and per
/// checksum setting, which pg_control records) with initdb, and made anew
/// when what is there is incomplete or not ours.
fn ensure_template(
    bindir: &Path,
    root: &Path,
    user: Option<UserIds>,
    data_checksums: bool,
    pg_version: u32,
) -> Result<Template> {
    let name = format!(
        "template-pg{pg_version}-checksums-{}",
        on_off(data_checksums)
    );
    let template = root.join(&name);
    match read_template(&template) {
        Ok(Some(t)) => return Ok(t),
        Ok(None) => {}
        Err(why) => {
            log::warn!("{why}: making the template anew");
            remove_path(&template);
        }
    }

    // 0711: initdb, run as the children's user, passes through to its
    // directory in it.
    let work = new_dir(root, "initdb-", 0o711)?;
    let made = run_initdb(bindir, root, &work, &name, user, data_checksums, pg_version);
    let _ = fs::remove_dir_all(&work);
    made?;
    match read_template(&template) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(spawn_error(format!(
            "the template {} is incomplete: remove it",
            template.display()
        ))),
        Err(why) => Err(spawn_error(format!(
            "the new template is not usable: {why}"
        ))),
    }
}

/// initdb in `work` (made for it, ours), then the template's files staged
/// and renamed into place. initdb runs as the children's user in `data`, a
/// directory of theirs in `work`: what it wrote is read through descriptors,
/// never following a link (`safe_fs`), and only if it is that user's own.
fn run_initdb(
    bindir: &Path,
    root: &Path,
    work: &Path,
    name: &str,
    user: Option<UserIds>,
    data_checksums: bool,
    pg_version: u32,
) -> Result<()> {
    let work_dir = Dir::open(work).map_err(|e| io_error("cannot open", work, e))?;
    work_dir
        .make_dir("data", 0o700, user)
        .map_err(|e| io_error("cannot make a directory in", work, e))?;
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
        .current_dir(work)
        .stdin(Stdio::null());
    if data_checksums {
        cmd.arg("--data-checksums");
    } else if pg_version >= 18 {
        // 18's initdb turns checksums on unless told not to.
        cmd.arg("--no-data-checksums");
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
    let initdb_uid = user.map_or_else(euid, |ids| ids.uid);
    let read = |path: &str| -> io::Result<Vec<u8>> {
        let (dir, name) = work_dir.open_dir("data")?.parent_of(path)?;
        dir.read_file_of(name, initdb_uid, TEMPLATE_FILE_MAX)
    };
    let mut files = Vec::new();
    for f in TEMPLATE_FILES {
        let bytes = read(f).map_err(|e| {
            spawn_error(format!(
                "cannot take {f} from initdb's output in {}: {e}",
                data.display()
            ))
        })?;
        files.push((f, bytes));
    }
    let staged = new_dir(root, &format!("{name}.tmp-"), 0o700)?;
    let result = (|| {
        let dir = Dir::open(&staged)?;
        dir.make_dir("global", 0o700, None)?;
        for (path, bytes) in &files {
            let (parent, name) = dir.parent_of(path)?;
            parent.write_new(name, bytes, 0o600, None)?;
        }
        Ok(())
    })()
    .map_err(|e| io_error("cannot write the template in", &staged, e));
    // Another launcher may have won the race; either template is good.
    if result.is_err() || fs::rename(&staged, root.join(name)).is_err() {
        let _ = fs::remove_dir_all(&staged);
    }
    result
}

/// Scratch directories of host processes that died without cleaning up, and
/// the System V segments of their wal-redo processes (run as `child_uid`);
/// also what such a host left half made (a staged template, an extension
/// copy before its rename).
fn remove_stale_scratch_dirs(root: &Path, child_uid: u32) {
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
        if !alive && crate::process::remove_dead_childs_segment(&entry.path(), child_uid) {
            remove_path(&entry.path());
        }
    }
}

/// The host pid in the name of something a host makes in the scratch root
/// for itself (`unique_suffix`: `<pid>-<n>` after the prefix): its
/// processes' directories, their trash, initdb runs, and the `.tmp-` names
/// of a template or extension copy before they are renamed into place.
fn stale_owner_pid(name: &OsStr) -> Option<libc::pid_t> {
    let name = name.to_str()?;
    let rest = name
        .strip_prefix("proc-")
        .or_else(|| name.strip_prefix("trash-"))
        .or_else(|| name.strip_prefix("initdb-"))
        .or_else(|| name.split_once(".tmp-").map(|(_, rest)| rest))?;
    rest.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_read_from_every_name_a_host_makes() {
        let owner = |n: &str| stale_owner_pid(OsStr::new(n));
        assert_eq!(owner("proc-123-4"), Some(123));
        assert_eq!(owner("trash-123-4"), Some(123));
        assert_eq!(owner("initdb-123-4"), Some(123));
        assert_eq!(owner("template-pg15-checksums-off.tmp-123-4"), Some(123));
        assert_eq!(owner("pg_walredo.tmp-123-4"), Some(123));
        // Shared by every host: never anybody's to remove.
        assert_eq!(owner("template-pg15-checksums-off"), None);
        assert_eq!(owner("pg_walredo-0df90bfb-174472.so"), None);
    }

    /// A host killed while it staged a template or copied the extension
    /// leaves both half made: the next pool removes them, and leaves a live
    /// host's alone.
    #[test]
    fn a_dead_hosts_half_made_files_are_removed() {
        let root = std::env::temp_dir().join(format!("walredo-stale-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        // A pid that is dead: a child of ours, reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let live = std::process::id();
        let staged = |pid: u32| root.join(format!("template-pg15-checksums-off.tmp-{pid}-0"));
        let copy = |pid: u32| root.join(format!("pg_walredo.tmp-{pid}-1"));
        for pid in [dead, live] {
            fs::create_dir_all(staged(pid).join("global")).unwrap();
            fs::write(copy(pid), b"half a copy").unwrap();
        }
        remove_stale_scratch_dirs(&root, euid());
        let dead_left = staged(dead).exists() || copy(dead).exists();
        let live_kept = staged(live).exists() && copy(live).exists();
        fs::remove_dir_all(&root).unwrap();
        assert!(!dead_left, "the dead host's half-made files were left");
        assert!(live_kept, "a live host's files were removed");
    }
}
