//! What a user can configure. Everything has a default that works on a Debian
//! machine with a PostgreSQL package (14 to 18) installed and `pg_walredo`
//! installed into it (`make install`).

use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Config {
    /// Directory holding PostgreSQL's `postgres` and `initdb` (and its
    /// `pg_config`, for the default extension): the server the pool runs.
    /// Default: the `--bindir` of Debian's
    /// `/usr/lib/postgresql/N/bin/pg_config` of `pg_version`, else of the
    /// `pg_config` on PATH if it is of that version; so an installed Debian
    /// server wins over a `pg_config` on PATH. Set it to replay with one
    /// particular installation (minor releases differ in redo output).
    pub pg_bindir: Option<PathBuf>,
    /// The PostgreSQL major version the pool serves: 14, 15, 16, 17 or 18.
    /// Its processes run that version's `postgres` and `pg_walredo.so`, and
    /// WAL of another version is refused. Default: the version of
    /// `pg_bindir`'s `postgres` (without `pg_bindir`: the first of Debian's
    /// `/usr/lib/postgresql/{15,16,17,18,14}` present, else `pg_config` on
    /// PATH). PostgreSQL 14's processes are always started directly
    /// ([`SpawnMode::Direct`]).
    pub pg_version: Option<u32>,
    /// The `pg_walredo.so` to load. Default: `pg_walredo.so` in the
    /// `--pkglibdir` of that `pg_config` (where `make install` puts it). One
    /// built for another major version than the server's is refused when
    /// the pool is made (its `PG_MODULE_MAGIC` block says which).
    pub extension_path: Option<PathBuf>,
    /// When the caller runs as root, processes run as this user (PostgreSQL
    /// refuses to run as root). Ignored otherwise. Default: `walredo`, an
    /// account of their own (created on first need when missing), never the
    /// machine's PostgreSQL server's.
    pub run_as_user: String,
    /// Where the template and per-process scratch directories live. Default:
    /// [`default_scratch_root`].
    pub scratch_dir: Option<PathBuf>,
    /// Processes in a pool (slots); each starts on first need.
    pub processes: usize,
    /// Processes one tenant (a key of `Pool::redo_keyed`) may have at once;
    /// the default tenant, the unkeyed calls, may have all `processes`.
    /// A tenant at its limit waits for its own; one that may have another
    /// gets a slot without a process, or the least recently used idle
    /// slot of another tenant, whose process is then retired.
    pub processes_per_tenant: usize,
    /// A process unused this long is retired; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Requests that may wait in a pool's queue; beyond that `redo` blocks
    /// and `submit` is refused as busy.
    pub queue_depth: usize,
    /// Requests of one keyed tenant that may wait in the queue (the default
    /// tenant's only count toward `queue_depth`): a tenant that floods the
    /// pool is refused as busy (or its `redo` waits) before it fills the
    /// queue for the others.
    pub tenant_queue_depth: usize,
    /// A request's deadline, counted from its arrival: queueing, waiting for
    /// a process and every attempt and retry included. A pool request gets
    /// its page or an error by then (a `Redoer`, which does not retry, uses
    /// it per request).
    pub timeout: Duration,
    /// Hang detection: a process that sends no page for this long (in a
    /// pipelined batch, each page is due this long after the previous one)
    /// is killed, and its request retried while its deadline allows.
    /// `None`: a quarter of `timeout` (see [`Config::attempt_timeout`]).
    pub attempt_timeout: Option<Duration>,
    /// Run processes with `pg_walredo.verify`: every record that carries a
    /// consistency image (WAL written with `wal_consistency_checking`) is
    /// checked after redo; a mismatch fails the request.
    pub verify: bool,
    /// The source cluster had data checksums on. Redo then behaves as on that
    /// cluster (hint-bit records bump page LSNs).
    pub data_checksums: bool,
    /// The source cluster had `wal_log_hints` on; same reason.
    pub wal_log_hints: bool,
    /// Refuse to serve on a kernel without Landlock (the default): there the
    /// seccomp filter alone cannot keep a hijacked process out of its
    /// siblings' scratch directories. Off accepts that weaker sandbox.
    pub require_landlock: bool,
    /// Answer requests whose last record carries an image of the page
    /// in-process, and start others from their newest image. Off only to
    /// compare against the plain path.
    pub fast_path: bool,
    /// Pin each process to the CPU of the thread driving it (the caller's,
    /// or a worker's), so a round trip's wake-ups stay on one CPU, and each
    /// worker thread to a CPU of its own, where the callers that queue on
    /// that CPU are answered (`pool::lanes`). Off when the host places its
    /// processes and threads itself.
    pub follow_caller_cpu: bool,
    /// Wait for a process's answer in a blocking read, its deadline kept by
    /// a watchdog thread that kills a late process, instead of in `poll`:
    /// one system call less per request. Off: every wait uses `poll`.
    pub blocking_wait: bool,
    /// Address-space limit of each process (RLIMIT_AS), in bytes: a runaway
    /// redo routine fails instead of eating the host's memory. It bounds the
    /// largest request too (records are copied a few times).
    pub process_memory_limit: u64,
    /// More `name=value` server settings for the processes (e.g.
    /// `pg_walredo.sandbox=off` while debugging).
    pub extra_settings: Vec<String>,
    /// For failure tests only: run this program (with these arguments, then
    /// the scratch directory) instead of PostgreSQL. It must speak the
    /// protocol; see `testkit/src/bin/walredo-fake-child.rs`.
    pub child_program: Option<(PathBuf, Vec<String>)>,
    /// How wal-redo processes are started (see [`SpawnMode`]).
    pub spawn_mode: SpawnMode,
    /// Keep one fresh process started ahead (a spare, never used by anyone),
    /// so that a slot that lost its process gets a ready one at once. Started
    /// only after the pool's first start, dropped after `idle_timeout`
    /// without a start, and with the pool's shutdown. Costs one idle
    /// process's memory. Default: on.
    pub spare_process: bool,
}

/// How a wal-redo process is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnMode {
    /// Forked by a template process that has done PostgreSQL's start-up up
    /// to shared memory once (one per pool, started on first need): a start
    /// costs a fraction of an exec, whatever the host's size.
    Template,
    /// `postgres --single` started afresh for every process (fork and exec
    /// of the host): the fallback.
    Direct,
}

impl Config {
    /// How long one attempt may go without a page: `attempt_timeout`, by
    /// default a quarter of the deadline (a hung process then costs a
    /// request a quarter of its time, and a SIGSTOPped one holds its slot
    /// that long), never more than the deadline.
    pub fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout
            .unwrap_or(self.timeout / 4)
            .min(self.timeout)
            .max(Duration::from_millis(1))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pg_bindir: None,
            pg_version: None,
            extension_path: None,
            run_as_user: crate::process::launch::CHILD_ACCOUNT.to_string(),
            scratch_dir: None,
            processes: std::thread::available_parallelism().map_or(1, |n| n.get()),
            idle_timeout: Some(Duration::from_secs(60)),
            processes_per_tenant: 1,
            queue_depth: 1024,
            tenant_queue_depth: 256,
            timeout: Duration::from_secs(10),
            attempt_timeout: None,
            verify: false,
            data_checksums: false,
            wal_log_hints: false,
            require_landlock: true,
            fast_path: true,
            follow_caller_cpu: true,
            blocking_wait: true,
            process_memory_limit: 4 << 30,
            extra_settings: Vec::new(),
            child_program: None,
            spawn_mode: SpawnMode::Template,
            // A respawn after a kill at a fraction of a start (issue 15).
            spare_process: true,
        }
    }
}

/// The scratch root when `scratch_dir` is not set: `$TMPDIR/walredo-<uid>`
/// when TMPDIR is set, else `/dev/shm/walredo-<uid>` when `/dev/shm` is a
/// memory file system, else `/tmp/walredo-<uid>`. Memory, because a wal-redo
/// process creates and removes empty relation files all the time (each
/// relation a request touches): on ext4 that churn cost the processes more
/// than the redo itself (the regression suite's WAL rebuilt in 0.9-1.5 s
/// with the root on ext4, 0.4-0.5 s on /dev/shm; BENCHMARKS.md, issue 25).
pub fn default_scratch_root() -> PathBuf {
    let dir = match std::env::var_os("TMPDIR") {
        Some(tmp) if !tmp.is_empty() => PathBuf::from(tmp),
        _ if is_memory_fs(Path::new("/dev/shm")) => PathBuf::from("/dev/shm"),
        _ => PathBuf::from("/tmp"),
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    dir.join(format!("walredo-{}", unsafe { libc::geteuid() }))
}

/// Whether `dir` is a tmpfs.
fn is_memory_fs(dir: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data, valid when zeroed; `path` is a
    // NUL-terminated string that outlives the call.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::statfs(path.as_ptr(), &mut fs) } == 0;
    ok && fs.f_type as i64 == TMPFS_MAGIC
}
