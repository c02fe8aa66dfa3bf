//! `walredo_config`: the settings of a pool.

use std::ffi::{c_char, c_int};
use std::path::PathBuf;
use std::ptr;
use std::time::Duration;

use super::pointers::{arg_mut, free_handle, into_handle, str_arg};
use super::{guard, invalid};
use crate::config::Config;
use crate::error::Error;

/// Settings for a pool, filled in by `walredo_config_set`.
pub struct walredo_config {
    pub(crate) config: Config,
    pub(crate) log_level: log::LevelFilter,
    /// For tests of the panic boundary only: every redo request panics.
    pub(crate) debug_panic: bool,
}

/// Create a configuration with every key at its default. Free it with
/// `walredo_config_free`.
///
/// Returns NULL only if the library failed internally (see
/// `walredo_last_error`). Starts no thread and no process. Thread-safe; the
/// configuration itself must not be used from two threads at once.
#[no_mangle]
pub extern "C" fn walredo_config_new() -> *mut walredo_config {
    let mut out = ptr::null_mut();
    guard(|| {
        out = into_handle(walredo_config {
            config: Config::default(),
            log_level: log::LevelFilter::Warn,
            debug_panic: false,
        });
        Ok(())
    });
    out
}

/// Set one configuration key. Returns `WALREDO_OK`, or
/// `WALREDO_INVALID_ARGUMENT` for a NULL argument, an unknown key or a bad
/// value (the configuration is then unchanged).
///
/// Keys and values (strings, copied):
/// - `pg_bindir`: directory of PostgreSQL's `postgres` and `initdb` (and
///   its `pg_config`): the server the pool runs. Default: the `--bindir` of
///   Debian's /usr/lib/postgresql/N/bin/pg_config of `pg_version`, else of
///   the `pg_config` on PATH if it is of that version (an installed Debian
///   server wins). Set it to replay with one particular installation.
/// - `pg_version`: the PostgreSQL major version the pool serves, 14 to 18;
///   WAL of another version is refused. Default: the version of
///   `pg_bindir`'s `postgres` (without `pg_bindir`: the first of
///   /usr/lib/postgresql/15, 16, 17, 18, 14 present, else `pg_config` on
///   PATH). PostgreSQL 14's processes are always started directly.
/// - `extension_path`: the `pg_walredo.so` to load. Default:
///   `pg_walredo.so` in that version's `--pkglibdir`. One built for another
///   major version than the server's is refused (`WALREDO_SPAWN_FAILED`).
/// - `processes`: wal-redo processes in the pool, 1 to 1024. Default: the
///   number of CPUs this process may run on.
/// - `timeout_ms`: a request's deadline, 1 to 86400000, counted from the
///   call: its queueing, its wait for a process, every attempt and retry
///   included; by then it has its page or an error (`WALREDO_TIMEOUT` when
///   time ran out). Default: 10000.
/// - `attempt_timeout_ms`: hang detection, 0 to 86400000: a process that
///   sends no page for this long (in a pipelined batch: each page this long
///   after the previous one) is killed and its request retried while its
///   deadline allows. A request that legitimately needs longer than this per
///   page never gets it: raise it for such requests. 0 (the default): a
///   quarter of `timeout_ms`; never more than `timeout_ms`.
/// - `idle_timeout_ms`: a process unused this long is retired, 0 to
///   86400000 (0: never). Default: 60000.
/// - `queue_depth`: requests that may wait for a process, 1 to 1000000;
///   beyond that `walredo_redo` waits for room and `walredo_submit` returns
///   `WALREDO_BUSY`. Default: 1024.
/// - `processes_per_tenant`: processes one keyed tenant may have at once,
///   1 to 1024 (the default tenant, the unkeyed calls, may have them all).
///   A tenant at its limit waits for one of its own; a tenant that may have
///   another takes a slot without a process, else the least recently used
///   idle process of another tenant is retired for it. Default: 1.
/// - `tenant_queue_depth`: requests of one keyed tenant that may wait for a
///   process, 1 to 1000000 (the default tenant's only count toward
///   `queue_depth`); beyond that its `walredo_redo_keyed` waits for room and
///   its `walredo_submit_keyed` returns `WALREDO_BUSY`. Default: 256.
/// - `process_memory_limit_mb`: address-space limit of each process, 64 to
///   1048576 MiB (it also bounds the largest request). Default: 4096.
/// - `run_as_user`: when the host runs as root, processes run as this user
///   (PostgreSQL refuses root). Default: `walredo`, an account of their own,
///   created on first need when missing (`make install` creates it); never
///   the account of a PostgreSQL server, whose files a hijacked process
///   could reach where the sandbox has no Landlock.
/// - `scratch_dir`: where per-process scratch directories are made. Default:
///   `$TMPDIR/walredo-<uid>` when TMPDIR is set, else `/dev/shm/walredo-<uid>`
///   on a tmpfs, else `/tmp/walredo-<uid>`.
/// - `log_level`: `off`, `error`, `warn`, `info`, `debug` or `trace`: what the
///   library logs to stderr (including each line a process writes to its
///   stderr, prefixed with its pid) when no `walredo_set_logger` callback is
///   set and `RUST_LOG` does not say otherwise; it takes effect with the
///   first pool of the process. Default: `warn`.
/// - `verify`: `on` or `off`: check every record that carries a consistency
///   image (WAL written with `wal_consistency_checking`) against it after
///   redo; a mismatch fails the request. Default: `off`.
/// - `fast_path`: `on` or `off`: answer a request whose last record carries a
///   full-page image of the target in-process (no process involved), and
///   start others from their newest image. Default: `on`.
/// - `follow_caller_cpu`: `on` or `off`: pin each process to the CPU of the
///   thread driving it, so a round trip's wake-ups stay on one CPU, and each
///   of the pool's worker threads to a CPU of its own. Turn it off when the
///   host places its processes and threads itself. Default: `on`.
/// - `blocking_wait`: `on` or `off`: wait for an answer in a blocking read,
///   with one library thread (the watchdog) killing a process that misses its
///   deadline; `off` waits in `poll()`, a system call more per request.
///   Default: `on`.
/// - `spawn_mode`: `template` or `direct`: `template` forks each process
///   from a template process that has done PostgreSQL's start-up once (one
///   per pool, started on first need; the host itself is never forked), so a
///   start costs a fraction of an exec whatever the host's size; `direct`
///   starts every process afresh (clone and exec, never a fork of the
///   host), the fallback.
///   Default: `template`.
/// - `spare_process`: `on` or `off`: keep one fresh process started ahead,
///   so a process that died (or retired) is replaced at once; started after
///   the pool's first start, dropped after `idle_timeout_ms` without a start.
///   It costs one idle process's memory; `walredo_pool_shutdown` drops it.
///   Default: `on`.
/// - `data_checksums`, `wal_log_hints`: `on` if the cluster that wrote the WAL
///   had them on, so that redo behaves as it did there. Default: `off`.
/// - `require_landlock`: `on` or `off`: on a kernel without Landlock a
///   process refuses to serve (its requests fail with `WALREDO_SPAWN_FAILED`
///   saying so), because seccomp alone cannot keep a hijacked process out of
///   its siblings' scratch directories; `off` accepts that weaker sandbox.
///   Default: `on`.
/// - `debug_panic`: `on` makes every `walredo_redo` panic inside the library,
///   to test the panic boundary. Never use it otherwise.
#[no_mangle]
pub unsafe extern "C" fn walredo_config_set(
    cfg: *mut walredo_config,
    key: *const c_char,
    value: *const c_char,
) -> c_int {
    guard(|| {
        // SAFETY: NULL or a configuration from walredo_config_new, not in use
        // by another thread (the caller's contract).
        let cfg = unsafe { arg_mut(cfg, "cfg") }?;
        // SAFETY: NULL or NUL-terminated strings (the caller's contract).
        let key = unsafe { str_arg(key, "key") }?;
        // SAFETY: as above.
        let value = unsafe { str_arg(value, "value") }?;
        let bad = |expected: &str| invalid(format!("bad value {value:?} for {key}: {expected}"));
        let number = |min: u64, max: u64| -> Result<u64, Error> {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| bad(&format!("an integer from {min} to {max}")))
        };
        let switch = || -> Result<bool, Error> {
            match value {
                "on" | "true" | "1" => Ok(true),
                "off" | "false" | "0" => Ok(false),
                _ => Err(bad("on or off")),
            }
        };
        let path = || -> Result<PathBuf, Error> {
            if value.is_empty() {
                Err(bad("a path"))
            } else {
                Ok(PathBuf::from(value))
            }
        };
        let c = &mut cfg.config;
        match key {
            "pg_bindir" => c.pg_bindir = Some(path()?),
            "pg_version" => c.pg_version = Some(number(14, 18)? as u32),
            "extension_path" => c.extension_path = Some(path()?),
            "processes" => c.processes = number(1, 1024)? as usize,
            "timeout_ms" => c.timeout = Duration::from_millis(number(1, 86_400_000)?),
            "attempt_timeout_ms" => {
                c.attempt_timeout = match number(0, 86_400_000)? {
                    0 => None,
                    ms => Some(Duration::from_millis(ms)),
                }
            }
            "idle_timeout_ms" => {
                c.idle_timeout = match number(0, 86_400_000)? {
                    0 => None,
                    ms => Some(Duration::from_millis(ms)),
                }
            }
            "queue_depth" => c.queue_depth = number(1, 1_000_000)? as usize,
            "processes_per_tenant" => c.processes_per_tenant = number(1, 1024)? as usize,
            "tenant_queue_depth" => c.tenant_queue_depth = number(1, 1_000_000)? as usize,
            "process_memory_limit_mb" => c.process_memory_limit = number(64, 1 << 20)? << 20,
            "run_as_user" => {
                if value.is_empty() {
                    return Err(bad("a user name"));
                }
                c.run_as_user = value.to_string();
            }
            "scratch_dir" => c.scratch_dir = Some(path()?),
            "log_level" => {
                cfg.log_level = value
                    .parse()
                    .map_err(|_| bad("off, error, warn, info, debug or trace"))?
            }
            "verify" => c.verify = switch()?,
            "fast_path" => c.fast_path = switch()?,
            "follow_caller_cpu" => c.follow_caller_cpu = switch()?,
            "blocking_wait" => c.blocking_wait = switch()?,
            "spawn_mode" => {
                c.spawn_mode = match value {
                    "template" => crate::config::SpawnMode::Template,
                    "direct" => crate::config::SpawnMode::Direct,
                    _ => return Err(bad("template or direct")),
                }
            }
            "spare_process" => c.spare_process = switch()?,
            "data_checksums" => c.data_checksums = switch()?,
            "wal_log_hints" => c.wal_log_hints = switch()?,
            "require_landlock" => c.require_landlock = switch()?,
            "debug_panic" => cfg.debug_panic = switch()?,
            _ => return Err(invalid(format!("unknown configuration key {key:?}"))),
        }
        Ok(())
    })
}

/// Free a configuration. NULL is allowed (nothing happens). Pools made from
/// it do not need it any more.
#[no_mangle]
pub unsafe extern "C" fn walredo_config_free(cfg: *mut walredo_config) {
    // SAFETY: NULL or a configuration from walredo_config_new, freed only
    // once (the caller's contract).
    unsafe { free_handle(cfg) }
}
