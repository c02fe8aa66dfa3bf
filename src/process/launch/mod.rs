//! Everything needed before a wal-redo process can start: PostgreSQL's
//! binaries (`locate`), the `pg_walredo` extension, an unprivileged user when
//! the caller is root (`account`), a scratch root we alone can write
//! (`scratch`) and the template of the per-process scratch directories
//! (`initdb`).
//!
//! A [`Launcher`] resolves all of that once (a missing piece is an error that
//! says what to install); [`crate::process::Process::spawn`] then uses it for
//! every process.

mod account;
mod initdb;
mod locate;
pub(crate) mod safe_fs;
mod scratch;

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::{Config, SpawnMode};
use crate::error::{Error, Result};
use crate::process::template::{Forked, Pipes, Template as TemplateProcess};
use initdb::Template;
use locate::postgres_program;
use safe_fs::Dir;
use scratch::{check_scratch_root, new_dir, remove_stale_scratch_dirs};

pub use account::{ensure_system_account, unprivileged_user, UserIds, CHILD_ACCOUNT};
pub use locate::{extension_built_for, find_server, magic_block_version_at, Server};

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
            None => crate::config::default_scratch_root(),
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
            // 14 has no fork point before shared memory (pg_walredo's
            // template.c).
            Program::Postgres { .. } if pg_version < 15 => SpawnMode::Direct,
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

    /// The environment of a process started directly (`NAME=value` each):
    /// none, but for PostgreSQL 14's `LD_PRELOAD` ([`Launcher::preload`]).
    pub(crate) fn direct_env(&self) -> Vec<OsString> {
        let mut env = Vec::new();
        if let Some(extension) = self.preload() {
            let mut e = OsString::from("LD_PRELOAD=");
            e.push(extension);
            env.push(e);
        }
        env
    }

    /// The extension a process must be started with in `LD_PRELOAD`: on
    /// PostgreSQL 14, whose single-user backend loads no
    /// shared_preload_libraries (pg_walredo.c says how it is loaded then).
    fn preload(&self) -> Option<&Path> {
        match &self.program {
            Program::Postgres { extension, .. } if self.pg_version < 15 => Some(extension),
            _ => None,
        }
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
        if let Some(extension) = self.preload() {
            cmd.env("LD_PRELOAD", extension);
        }
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

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// The current effective user id.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
