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
//! becomes the C header: that is its safety section. Pointers are converted
//! by the helpers of `pointers`, each conversion's reasoning written once
//! there. One module per C object, as in rustls-ffi.
#![allow(non_camel_case_types, clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::Error;
use crate::tag::{PageTag, RelFileNode};
use crate::PAGE_SIZE;

mod call;
mod compare;
mod config;
mod log;
mod pages;
mod pointers;
mod pool;
mod slru;
mod wal;

pub use call::*;
pub use compare::*;
pub use config::*;
pub use log::*;
pub use pages::*;
pub use pool::*;
pub use slru::*;
pub use wal::*;

/// The files cbindgen reads to make include/walredo.h (it follows the `mod`
/// declarations from there): the C ABI, and the structs C reads as Rust
/// defines them, the pool's counters (`walredo_stats`) and a block history's
/// entry (`walredo_history_entry`).
pub const HEADER_SOURCES: &[&str] = &[
    "src/ffi/mod.rs",
    "src/pool/stats.rs",
    "src/wal/source/history.rs",
];

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
/// A record is not a valid PostgreSQL XLogRecord (bad length, CRC, block
/// headers): one given to a redo call (refused before it reached any
/// process), or one of a WAL source's files below the LSN the caller gave as
/// flushed (damaged WAL; the message names its LSN and what failed).
pub const WALREDO_MALFORMED_RECORD: c_int = 2;
/// PostgreSQL's redo failed: the request's process crashed on it twice (it
/// is retried once on a fresh process). The message carries PostgreSQL's
/// own words.
pub const WALREDO_REDO_FAILED: c_int = 3;
/// No answer by the request's deadline (`timeout_ms` from the call, queueing
/// and retries included). Processes that hung on it were killed and will be
/// replaced. Also a deadline too short to start a process (nothing is
/// wrong with the installation then).
pub const WALREDO_TIMEOUT: c_int = 4;
/// A wal-redo process could not be started: PostgreSQL 15, the pg_walredo
/// extension or the unprivileged user is missing. The message says what to
/// install or set.
pub const WALREDO_SPAWN_FAILED: c_int = 5;
/// The pool was shut down with `walredo_pool_shutdown`.
pub const WALREDO_SHUTDOWN: c_int = 6;
/// A bug in the library (a caught panic). The library stays usable.
pub const WALREDO_INTERNAL: c_int = 7;
/// `walredo_submit` only: the request queue is full; try again later.
pub const WALREDO_BUSY: c_int = 8;
/// A caller's buffer is too small; the size needed was reported.
pub const WALREDO_BUFFER_TOO_SMALL: c_int = 9;
/// walredo_call_finish: no outcome yet; the call stays.
pub const WALREDO_IN_PROGRESS: c_int = 10;
/// An interrupt callback asked to stop a long scan.
pub const WALREDO_CANCELLED: c_int = 11;
/// The readable WAL cannot answer (no starting point for the page, or an LSN
/// outside the readable WAL); the message says what would reach further.
pub const WALREDO_NOT_FOUND: c_int = 12;
/// The block did not exist at the LSN asked for: a record at or before it
/// truncated its fork, dropped its relation or its database, and no later
/// record up to the LSN made the block again. The message names the record.
pub const WALREDO_NO_SUCH_BLOCK: c_int = 13;
/// The WAL never held what the page needs, so no archive would help: a fork
/// that is not WAL-logged (the free-space map), or a page changed by records
/// that do not initialize it since its database was made by copying files
/// (CREATE DATABASE ... STRATEGY FILE_COPY). The message says which.
pub const WALREDO_NOT_IN_WAL: c_int = 14;

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

impl From<&walredo_page_tag> for PageTag {
    fn from(t: &walredo_page_tag) -> PageTag {
        PageTag {
            rel: RelFileNode {
                spcnode: t.spcnode,
                dbnode: t.dbnode,
                relnode: t.relnode,
            },
            forknum: t.forknum,
            blkno: t.blkno,
        }
    }
}

impl From<&PageTag> for walredo_page_tag {
    fn from(t: &PageTag) -> walredo_page_tag {
        walredo_page_tag {
            spcnode: t.rel.spcnode,
            dbnode: t.rel.dbnode,
            relnode: t.rel.relnode,
            forknum: t.forknum,
            blkno: t.blkno,
        }
    }
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

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

pub(crate) fn status_of(e: &Error) -> c_int {
    match e {
        Error::InvalidArgument(_) => WALREDO_INVALID_ARGUMENT,
        Error::MalformedRecord { .. } => WALREDO_MALFORMED_RECORD,
        Error::RedoFailed { .. } => WALREDO_REDO_FAILED,
        Error::Timeout { .. } => WALREDO_TIMEOUT,
        Error::SpawnFailed(_) => WALREDO_SPAWN_FAILED,
        Error::Shutdown => WALREDO_SHUTDOWN,
        Error::Internal(_) => WALREDO_INTERNAL,
        Error::Busy(_) => WALREDO_BUSY,
        Error::Cancelled => WALREDO_CANCELLED,
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument(message.into())
}

/// Run the body of an entry point: an error or a panic becomes a status code
/// and this thread's last error message.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Error>) -> c_int {
    guard_status(|| body().map(|()| WALREDO_OK))
}

/// [`guard`] for a body that picks its own status on success.
pub(crate) fn guard_status(body: impl FnOnce() -> Result<c_int, Error>) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(status)) => status,
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
        WALREDO_BUSY => c"WALREDO_BUSY",
        WALREDO_BUFFER_TOO_SMALL => c"WALREDO_BUFFER_TOO_SMALL",
        WALREDO_IN_PROGRESS => c"WALREDO_IN_PROGRESS",
        WALREDO_CANCELLED => c"WALREDO_CANCELLED",
        WALREDO_NOT_FOUND => c"WALREDO_NOT_FOUND",
        WALREDO_NO_SUCH_BLOCK => c"WALREDO_NO_SUCH_BLOCK",
        WALREDO_NOT_IN_WAL => c"WALREDO_NOT_IN_WAL",
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
