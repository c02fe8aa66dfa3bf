//! `walredo_call`: a request for a host with its own wait loop (a
//! PostgreSQL backend in `WaitLatchOrSocket`): start it, wait for its
//! descriptor, finish it, or cancel it.

use std::ffi::c_int;
use std::ptr;

use super::pointers::{arg, arg_mut, take_handle, HandleOut, PageOut};
use super::pool::{pool_arg, request_args};
use super::{guard, guard_status, set_last_error, status_of};
use super::{walredo_page_tag, walredo_pool, walredo_record};
use super::{WALREDO_IN_PROGRESS, WALREDO_OK};
use crate::pool::Call;

/// A request started with `walredo_call_start`, to be ended by exactly one
/// of `walredo_call_finish` (once it is done) or `walredo_call_cancel`. Used
/// by one thread at a time. It keeps what it needs alive by itself: it may
/// outlive its pool (then it ends with its page or `WALREDO_SHUTDOWN`).
pub struct walredo_call {
    call: Call,
}

/// Start a request exactly like `walredo_redo` (same arguments, same
/// validation, fast path, retry), without waiting for it. Inputs are copied
/// before this returns. A full queue is `WALREDO_BUSY`; a pool that is shut
/// down, `WALREDO_SHUTDOWN` (a call started before the shutdown ends with
/// `WALREDO_SHUTDOWN` or its page). On `WALREDO_OK` `*out` is a call that
/// must be finished or cancelled; otherwise `*out` is NULL (when `out` is
/// not NULL).
///
/// The call has no callback: no host code ever runs on a library thread
/// for it. Its descriptor (`walredo_call_fd`) is the only signal. Thread-safe
/// (the pool may be used by other threads meanwhile).
#[no_mangle]
pub unsafe extern "C" fn walredo_call_start(
    pool: *mut walredo_pool,
    tag: *const walredo_page_tag,
    base_page: *const u8,
    records: *const walredo_record,
    n_records: usize,
    out: *mut *mut walredo_call,
) -> c_int {
    // SAFETY: the contract above; no key.
    unsafe {
        start(
            pool,
            ptr::null(),
            0,
            tag,
            base_page,
            records,
            n_records,
            out,
        )
    }
}

/// `walredo_call_start` for the tenant `key`, as `walredo_redo_keyed`.
#[no_mangle]
pub unsafe extern "C" fn walredo_call_start_keyed(
    pool: *mut walredo_pool,
    key: *const u8,
    key_len: usize,
    tag: *const walredo_page_tag,
    base_page: *const u8,
    records: *const walredo_record,
    n_records: usize,
    out: *mut *mut walredo_call,
) -> c_int {
    // SAFETY: the contracts of walredo_call_start and walredo_redo_keyed.
    unsafe { start(pool, key, key_len, tag, base_page, records, n_records, out) }
}

/// The body of `walredo_call_start` and `walredo_call_start_keyed`.
///
/// # Safety
/// Their pointer contracts.
#[allow(clippy::too_many_arguments)]
unsafe fn start(
    pool: *mut walredo_pool,
    key: *const u8,
    key_len: usize,
    tag: *const walredo_page_tag,
    base_page: *const u8,
    records: *const walredo_record,
    n_records: usize,
    out: *mut *mut walredo_call,
) -> c_int {
    guard(|| {
        // SAFETY: NULL or storage for a pointer (the caller's contract).
        let out = unsafe { HandleOut::new(out) }?;
        // SAFETY: the pointer contract of walredo_redo.
        let (pool, debug_panic) = unsafe { pool_arg(pool) }?;
        // SAFETY: the pointer contracts of walredo_redo and walredo_redo_keyed.
        let r = unsafe { request_args(key, key_len, tag, base_page, records, n_records) }?;
        if debug_panic {
            panic!("debug_panic is on");
        }
        let call = pool.start_keyed(r.key, &r.tag, r.base, &r.refs)?;
        out.set(walredo_call { call });
        Ok(())
    })
}

/// A descriptor that becomes readable (POLLIN) once the call has its
/// outcome, and stays readable (never read it: it belongs to the call), for
/// poll/epoll/WaitLatchOrSocket. Owned by the call, valid until
/// `walredo_call_finish` succeeds or `walredo_call_cancel`; close-on-exec.
/// Returns -1 (and sets the last error) when `call` is NULL.
#[no_mangle]
pub unsafe extern "C" fn walredo_call_fd(call: *const walredo_call) -> c_int {
    let mut fd = -1;
    guard(|| {
        // SAFETY: NULL or a live call from walredo_call_start.
        let call = unsafe { arg(call, "call") }?;
        fd = call.call.fd();
        Ok(())
    });
    fd
}

/// Not done yet: `WALREDO_IN_PROGRESS`, nothing written, the call stays.
/// Done: writes the page to `out_page` (`WALREDO_PAGE_SIZE` bytes) on
/// success, frees the call, and returns the request's status (`WALREDO_OK`
/// or its error, with `walredo_last_error()` saying why). Never blocks.
/// A NULL `call` or `out_page` is `WALREDO_INVALID_ARGUMENT` (the call, if
/// any, stays).
#[no_mangle]
pub unsafe extern "C" fn walredo_call_finish(call: *mut walredo_call, out_page: *mut u8) -> c_int {
    guard_status(|| {
        // SAFETY: NULL or a live call from walredo_call_start, used by this
        // thread only (the caller's contract).
        let handle = unsafe { arg_mut(call, "call") }?;
        // SAFETY: NULL or room for a page (the caller's contract).
        let out_page = unsafe { PageOut::new(out_page, "out_page") }?;
        let Some(outcome) = handle.call.try_finish() else {
            set_last_error("the call has no outcome yet: wait for its descriptor");
            return Ok(WALREDO_IN_PROGRESS);
        };
        // SAFETY: a pointer from walredo_call_start, freed here once: the
        // caller uses it no more after a finish that did not return
        // WALREDO_IN_PROGRESS or WALREDO_INVALID_ARGUMENT.
        drop(unsafe { take_handle(call) });
        match outcome {
            Ok(page) => {
                out_page.write(&page);
                Ok(WALREDO_OK)
            }
            Err(e) => {
                set_last_error(&e.to_string());
                Ok(status_of(&e))
            }
        }
    })
}

/// Abandon a call (NULL allowed) and free it at once; its descriptor is no
/// longer valid. Its request is stopped: still queued, it is never sent; if
/// a process is working on it, that process is killed (through its pidfd)
/// and replaced, the request is not retried, nobody else's request is
/// charged for it (requests pipelined with it are re-sent), and the pool
/// stays usable right away: a stuck process does not make the next request
/// wait for its deadline. After the call is done, cancel only frees it.
/// Never blocks for long (a lock the pool holds for microseconds, and a
/// signal). Without pidfds (Linux before 5.3) a running request is not
/// stopped: its outcome is dropped when it ends.
#[no_mangle]
pub unsafe extern "C" fn walredo_call_cancel(call: *mut walredo_call) {
    guard(|| {
        // SAFETY: NULL or a pointer from walredo_call_start, freed once; the
        // caller uses it no more (the caller's contract).
        if let Some(handle) = unsafe { take_handle(call) } {
            handle.call.cancel();
        }
        Ok(())
    });
}
