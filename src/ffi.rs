//! The C ABI, declared in `include/walredo.h` (generated from this file by
//! cbindgen: the doc comments here are the header's documentation).
//!
//! Rules at this boundary, enforced by every function:
//! - a panic never crosses it: every entry point runs inside `catch_unwind`
//!   and turns a panic into `WALREDO_INTERNAL`;
//! - every pointer is checked for NULL before use, every length and integer
//!   from C is range-checked, and nothing from C is transmuted into a Rust
//!   enum;
//! - failures return a status code and leave a message for
//!   `walredo_last_error()` in a thread-local buffer;
//! - nothing starts (no thread, no process) before `walredo_pool_new`.
//!
//! Each function states its pointer contract in its documentation, which
//! becomes the C header: that is its safety section.
#![allow(non_camel_case_types, clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::ptr;
use std::time::Duration;

use crate::config::Config;
use crate::error::Error;
use crate::pool::Pool;
use crate::protocol::RecordRef;
use crate::redo::Page;
use crate::tag::{PageTag, RelFileNode};
use crate::PAGE_SIZE;

/// Size in bytes of a page: every page buffer passed to or from the library.
pub const WALREDO_PAGE_SIZE: usize = 8192;
const _: () = assert!(WALREDO_PAGE_SIZE == PAGE_SIZE);

/// Success.
pub const WALREDO_OK: c_int = 0;
/// A NULL, wrong-sized or out-of-range argument, an unknown config key or a
/// bad config value, or a request that cannot be replayed as given (a record
/// that does not reference the target page, no base page and a first record
/// that does not initialize the page).
pub const WALREDO_INVALID_ARGUMENT: c_int = 1;
/// A record is not a valid PostgreSQL 15 XLogRecord (bad length, CRC, block
/// headers). Refused before it reached any process.
pub const WALREDO_MALFORMED_RECORD: c_int = 2;
/// PostgreSQL's redo failed, twice (the request is retried once on a fresh
/// process). The message carries PostgreSQL's own words.
pub const WALREDO_REDO_FAILED: c_int = 3;
/// No answer by the deadline (`timeout_ms`), twice; the processes were
/// killed and will be replaced.
pub const WALREDO_TIMEOUT: c_int = 4;
/// A wal-redo process could not be started: PostgreSQL 15, the pg_walredo
/// extension or the unprivileged user is missing. The message says what to
/// install or set.
pub const WALREDO_SPAWN_FAILED: c_int = 5;
/// The pool was shut down with `walredo_pool_shutdown`.
pub const WALREDO_SHUTDOWN: c_int = 6;
/// A bug in the library (a caught panic). The library stays usable.
pub const WALREDO_INTERNAL: c_int = 7;

/// Settings for a pool, filled in by `walredo_config_set`.
pub struct walredo_config {
    config: Config,
    log_level: log::LevelFilter,
    /// For tests of the panic boundary only: every redo request panics.
    debug_panic: bool,
}

/// A pool of wal-redo processes. Thread-safe: any number of threads may call
/// `walredo_redo` on one pool at the same time.
pub struct walredo_pool {
    pool: Pool,
    debug_panic: bool,
}

/// Which page: PostgreSQL's RelFileNode, fork number (0 main, 1 free-space
/// map, 2 visibility map, 3 init) and block number.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct walredo_page_tag {
    pub spcnode: u32,
    pub dbnode: u32,
    pub relnode: u32,
    pub forknum: u8,
    pub blkno: u32,
}

/// One WAL record to apply.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct walredo_record {
    /// LSN of the end of the record (where the next record starts, as
    /// PostgreSQL's xlogreader reports it): redo stamps pages with it.
    pub end_lsn: u64,
    /// The raw XLogRecord, header included (`len` = its `xl_tot_len`).
    pub data: *const u8,
    pub len: usize,
}

/// Largest record PostgreSQL 15 can write (and palloc).
const MAX_RECORD_LEN: usize = 1024 * 1024 * 1024 - 1;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn status_of(e: &Error) -> c_int {
    match e {
        Error::InvalidArgument(_) => WALREDO_INVALID_ARGUMENT,
        Error::MalformedRecord { .. } => WALREDO_MALFORMED_RECORD,
        Error::RedoFailed { .. } => WALREDO_REDO_FAILED,
        Error::Timeout { .. } => WALREDO_TIMEOUT,
        Error::SpawnFailed(_) => WALREDO_SPAWN_FAILED,
        Error::Shutdown => WALREDO_SHUTDOWN,
        Error::Internal(_) => WALREDO_INTERNAL,
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument(message.into())
}

/// Run the body of an entry point: an error or a panic becomes a status code
/// and this thread's last error message.
fn guard(body: impl FnOnce() -> Result<(), Error>) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => WALREDO_OK,
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            status_of(&e)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error: panic in walredo: {what}"));
            WALREDO_INTERNAL
        }
    }
}

/// A C string argument as UTF-8.
///
/// # Safety
/// `s` is NULL or points to a NUL-terminated string.
unsafe fn str_arg<'a>(s: *const c_char, what: &str) -> Result<&'a str, Error> {
    if s.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .map_err(|_| invalid(format!("{what} is not UTF-8")))
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
        out = Box::into_raw(Box::new(walredo_config {
            config: Config::default(),
            log_level: log::LevelFilter::Warn,
            debug_panic: false,
        }));
        Ok(())
    });
    out
}

/// Set one configuration key. Returns `WALREDO_OK`, or
/// `WALREDO_INVALID_ARGUMENT` for a NULL argument, an unknown key or a bad
/// value (the configuration is then unchanged).
///
/// Keys and values (strings, copied):
/// - `pg_bindir`: directory of PostgreSQL 15's `postgres` and `initdb`.
///   Default: the `--bindir` of PostgreSQL 15's `pg_config`.
/// - `extension_path`: the `pg_walredo.so` to load. Default:
///   `pg_walredo.so` in PostgreSQL 15's `--pkglibdir`.
/// - `processes`: wal-redo processes in the pool, 1 to 1024. Default: the
///   number of CPUs this process may run on.
/// - `timeout_ms`: deadline of one attempt of a request, 1 to 86400000.
///   Default: 10000.
/// - `run_as_user`: when the host runs as root, processes run as this user
///   (PostgreSQL refuses root). Default: `postgres`.
/// - `scratch_dir`: where per-process scratch directories are made. Default:
///   `$TMPDIR/walredo-<uid>`.
/// - `log_level`: `off`, `error`, `warn`, `info`, `debug` or `trace`: what the
///   library logs to stderr (including each line a process writes to its
///   stderr, prefixed with its pid). Default: `warn`.
/// - `verify`: `on` or `off`: check every record that carries a consistency
///   image (WAL written with `wal_consistency_checking`) against it after
///   redo; a mismatch fails the request. Default: `off`.
/// - `data_checksums`, `wal_log_hints`: `on` if the cluster that wrote the WAL
///   had them on, so that redo behaves as it did there. Default: `off`.
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
        let cfg = unsafe { cfg.as_mut() }.ok_or_else(|| invalid("cfg is NULL"))?;
        // SAFETY: NULL or NUL-terminated strings (the caller's contract).
        let key = unsafe { str_arg(key, "key") }?;
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
            "extension_path" => c.extension_path = Some(path()?),
            "processes" => c.processes = number(1, 1024)? as usize,
            "timeout_ms" => c.timeout = Duration::from_millis(number(1, 86_400_000)?),
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
            "data_checksums" => c.data_checksums = switch()?,
            "wal_log_hints" => c.wal_log_hints = switch()?,
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
    guard(|| {
        if !cfg.is_null() {
            // SAFETY: a pointer from walredo_config_new, freed only once (the
            // caller's contract).
            drop(unsafe { Box::from_raw(cfg) });
        }
        Ok(())
    });
}

/// Create a pool from a configuration (which stays the caller's). On success
/// `*out` is the pool, to be freed with `walredo_pool_free`; on failure
/// `*out` is set to NULL (when `out` is not NULL) and nothing needs freeing.
///
/// This checks that PostgreSQL 15 and the extension are there, and makes the
/// scratch template once per machine with initdb (a second or two); processes
/// start later, on first need. It starts the pool's one spawner thread.
/// Errors: `WALREDO_INVALID_ARGUMENT`, `WALREDO_SPAWN_FAILED`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn walredo_pool_new(
    cfg: *const walredo_config,
    out: *mut *mut walredo_pool,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        // SAFETY: out is non-NULL and points to writable storage for a
        // pointer (the caller's contract).
        unsafe { *out = ptr::null_mut() };
        // SAFETY: NULL or a configuration from walredo_config_new.
        let cfg = unsafe { cfg.as_ref() }.ok_or_else(|| invalid("cfg is NULL"))?;
        init_logging(cfg.log_level);
        let pool = Pool::new(&cfg.config)?;
        let handle = Box::into_raw(Box::new(walredo_pool {
            pool,
            debug_panic: cfg.debug_panic,
        }));
        // SAFETY: as above.
        unsafe { *out = handle };
        Ok(())
    })
}

/// Log to stderr at `level`, unless the host already installed a logger.
fn init_logging(level: log::LevelFilter) {
    let _ = env_logger::Builder::new()
        .filter_level(level)
        .target(env_logger::Target::Stderr)
        .try_init();
    log::set_max_level(level);
}

/// Stop accepting requests: from now on `walredo_redo` returns
/// `WALREDO_SHUTDOWN`, also to callers waiting for a free process. Requests
/// already running finish. NULL is allowed. Thread-safe: may be called while
/// other threads use the pool. The pool must still be freed.
#[no_mangle]
pub unsafe extern "C" fn walredo_pool_shutdown(pool: *const walredo_pool) {
    guard(|| {
        // SAFETY: NULL or a live pool from walredo_pool_new.
        if let Some(p) = unsafe { pool.as_ref() } {
            p.pool.shutdown();
        }
        Ok(())
    });
}

/// Free a pool: its wal-redo processes are killed and reaped, their scratch
/// directories removed, and its thread joined. NULL is allowed. No other
/// thread may be using the pool, or use it afterwards.
#[no_mangle]
pub unsafe extern "C" fn walredo_pool_free(pool: *mut walredo_pool) {
    guard(|| {
        if !pool.is_null() {
            // SAFETY: a pointer from walredo_pool_new, freed once, not in use
            // (the caller's contract).
            drop(unsafe { Box::from_raw(pool) });
        }
        Ok(())
    });
}

/// Reconstruct one page: apply `records` (in LSN order) to `base_page`, or,
/// when `base_page` is NULL, to nothing (the first record must then
/// initialize the page: a will-init block or a full-page image), and write
/// the page for `tag` to `out_page`.
///
/// - `pool`, `tag` and `out_page` must not be NULL; `out_page` has room for
///   `WALREDO_PAGE_SIZE` bytes and is written only on success.
/// - `base_page`: NULL or `WALREDO_PAGE_SIZE` readable bytes.
/// - `records`: `n_records` entries (NULL allowed when `n_records` is 0),
///   each `data` pointing to `len` bytes (at most 1 GiB). Every record must
///   reference the target page.
/// - All inputs are only read, and only during the call; the caller keeps
///   ownership of everything.
///
/// Blocks until the page is there, an error occurs, or the deadline passes;
/// when every process of the pool is busy it first waits for one. Every
/// record is validated (lengths, CRC-32C, block references) before anything
/// reaches a process. A request whose process fails is retried once on a
/// fresh process. Thread-safe; runs on the calling thread (no callback).
///
/// Returns `WALREDO_OK` or a `WALREDO_*` error code; then
/// `walredo_last_error()` says why.
#[no_mangle]
pub unsafe extern "C" fn walredo_redo(
    pool: *mut walredo_pool,
    tag: *const walredo_page_tag,
    base_page: *const u8,
    records: *const walredo_record,
    n_records: usize,
    out_page: *mut u8,
) -> c_int {
    guard(|| {
        // SAFETY: NULL or a live pool from walredo_pool_new; only shared
        // access is needed (the pool is thread-safe).
        let handle = unsafe { pool.as_ref() }.ok_or_else(|| invalid("pool is NULL"))?;
        // SAFETY: NULL or a valid walredo_page_tag.
        let tag = unsafe { tag.as_ref() }.ok_or_else(|| invalid("tag is NULL"))?;
        if out_page.is_null() {
            return Err(invalid("out_page is NULL"));
        }
        let base: Option<&Page> = if base_page.is_null() {
            None
        } else {
            // SAFETY: non-NULL, WALREDO_PAGE_SIZE readable bytes (the caller's
            // contract); [u8; N] has alignment 1.
            Some(unsafe { &*base_page.cast::<Page>() })
        };
        let records: &[walredo_record] = if n_records == 0 {
            &[]
        } else if records.is_null() {
            return Err(invalid(format!(
                "records is NULL but n_records is {n_records}"
            )));
        } else if n_records > isize::MAX as usize / std::mem::size_of::<walredo_record>() {
            return Err(invalid(format!(
                "n_records {n_records} is impossibly large"
            )));
        } else {
            // SAFETY: non-NULL, n_records valid entries (the caller's
            // contract), size checked above.
            unsafe { std::slice::from_raw_parts(records, n_records) }
        };
        let mut refs = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            if r.len > MAX_RECORD_LEN {
                return Err(invalid(format!(
                    "record #{i}: len {} is over the 1 GiB limit",
                    r.len
                )));
            }
            let data: &[u8] = if r.len == 0 {
                &[]
            } else if r.data.is_null() {
                return Err(invalid(format!("record #{i}: data is NULL, len {}", r.len)));
            } else {
                // SAFETY: non-NULL, len readable bytes (the caller's contract).
                unsafe { std::slice::from_raw_parts(r.data, r.len) }
            };
            refs.push(RecordRef {
                end_lsn: r.end_lsn,
                data,
            });
        }
        if handle.debug_panic {
            panic!("debug_panic is on");
        }
        let tag = PageTag {
            rel: RelFileNode {
                spcnode: tag.spcnode,
                dbnode: tag.dbnode,
                relnode: tag.relnode,
            },
            forknum: tag.forknum,
            blkno: tag.blkno,
        };
        let page = handle.pool.redo(&tag, base, &refs)?;
        // SAFETY: out_page has room for WALREDO_PAGE_SIZE bytes (the caller's
        // contract); `page` is ours, so they cannot overlap.
        unsafe { ptr::copy_nonoverlapping(page.as_ptr(), out_page, PAGE_SIZE) };
        Ok(())
    })
}

/// The name of a status code, e.g. "WALREDO_TIMEOUT"; any int is allowed
/// ("WALREDO_UNKNOWN_STATUS" for one that is not a status code). The string
/// is static: never free it.
#[no_mangle]
pub extern "C" fn walredo_status_name(status: c_int) -> *const c_char {
    let name: &'static CStr = match status {
        WALREDO_OK => c"WALREDO_OK",
        WALREDO_INVALID_ARGUMENT => c"WALREDO_INVALID_ARGUMENT",
        WALREDO_MALFORMED_RECORD => c"WALREDO_MALFORMED_RECORD",
        WALREDO_REDO_FAILED => c"WALREDO_REDO_FAILED",
        WALREDO_TIMEOUT => c"WALREDO_TIMEOUT",
        WALREDO_SPAWN_FAILED => c"WALREDO_SPAWN_FAILED",
        WALREDO_SHUTDOWN => c"WALREDO_SHUTDOWN",
        WALREDO_INTERNAL => c"WALREDO_INTERNAL",
        _ => c"WALREDO_UNKNOWN_STATUS",
    };
    name.as_ptr()
}

/// The message of the last call that failed on this thread, or "" if none
/// did. Never NULL. Owned by the library: valid until the next failing call
/// on this thread; copy it to keep it.
#[no_mangle]
pub extern "C" fn walredo_last_error() -> *const c_char {
    // A panic is impossible here (no allocation); catch_unwind is not needed.
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// The library's version, e.g. "walredo 0.1.0". Static: never free it.
#[no_mangle]
pub extern "C" fn walredo_version() -> *const c_char {
    concat!("walredo ", env!("CARGO_PKG_VERSION"), "\0")
        .as_ptr()
        .cast()
}
