//! `walredo_pool`: the pool, and the requests made of it.

use std::ffi::{c_char, c_int, c_void};
use std::ptr;
use std::sync::Arc;

use parking_lot::Mutex;

use super::pointers::{
    arg, fill_array, opt_out_arg, out_arg, out_slice_arg, page_arg, slice_arg, HandleOut, PageOut,
};
use super::{guard, guard_status, invalid, set_last_error, status_of};
use super::{walredo_config, walredo_page_tag, walredo_record};
use super::{WALREDO_BUFFER_TOO_SMALL, WALREDO_OK};
use crate::error::Error;
use crate::pg::page::Page;
use crate::pg::record::RecordRef;
use crate::pool::stats::{Counters, TenantCounters};
use crate::pool::tenant::MAX_KEY_LEN;
use crate::pool::Pool;
use crate::tag::PageTag;

/// Largest record PostgreSQL 15 can write (and palloc).
const MAX_RECORD_LEN: usize = 1024 * 1024 * 1024 - 1;

/// A pool of wal-redo processes. Thread-safe: any number of threads may call
/// `walredo_redo` and `walredo_submit` on one pool at the same time.
///
/// The handle's own memory (a few dozen bytes) is never given back: a call
/// stopped at its entry while `walredo_pool_free` runs reads it afterwards,
/// and no count a call could take at its entry can close that window (the
/// thread may stop before its first instruction). `free` takes the pool out,
/// and every call that comes later finds it gone (`WALREDO_SHUTDOWN`).
pub struct walredo_pool {
    /// The pool, until `walredo_pool_free` takes it out.
    pool: Mutex<Option<Arc<Pool>>>,
    debug_panic: bool,
}

/// Handles of freed pools: kept reachable (never deallocated, see
/// `walredo_pool`), so that leak checkers see memory still in use, not lost.
static FREED_HANDLES: Mutex<Vec<&'static walredo_pool>> = Mutex::new(Vec::new());

/// Create a pool from a configuration (which stays the caller's). On success
/// `*out` is the pool, to be freed with `walredo_pool_free`; on failure
/// `*out` is set to NULL (when `out` is not NULL) and nothing needs freeing.
///
/// This checks that PostgreSQL 15 and the extension are there, and makes the
/// scratch template once per machine with initdb (a second or two); processes
/// start later, on first need. It starts the pool's threads: one spawner and
/// one worker per process (and the first process, if it is the first of the
/// host, the library-wide watchdog thread).
/// Errors: `WALREDO_INVALID_ARGUMENT`, `WALREDO_SPAWN_FAILED`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn walredo_pool_new(
    cfg: *const walredo_config,
    out: *mut *mut walredo_pool,
) -> c_int {
    guard(|| {
        // SAFETY: NULL or storage for a pointer (the caller's contract).
        let out = unsafe { HandleOut::new(out) }?;
        // SAFETY: NULL or a configuration from walredo_config_new.
        let cfg = unsafe { arg(cfg, "cfg") }?;
        super::log::init_default(cfg.log_level);
        let pool = Arc::new(Pool::new(&cfg.config)?);
        out.set(walredo_pool {
            pool: Mutex::new(Some(pool)),
            debug_panic: cfg.debug_panic,
        });
        Ok(())
    })
}

/// Shut the pool down: from now on `walredo_redo` and `walredo_submit` return
/// `WALREDO_SHUTDOWN`; queued requests are answered with it (callbacks
/// included); requests already running finish (by their deadline at the
/// latest); then the workers are joined and every process killed and reaped.
/// Blocks until that is done, also when another thread's shutdown or free is
/// already doing it. NULL is allowed. Thread-safe: may be called while other
/// threads use the pool or free it (see `walredo_pool_free`). The pool must
/// still be freed.
#[no_mangle]
pub unsafe extern "C" fn walredo_pool_shutdown(pool: *const walredo_pool) {
    guard(|| {
        // SAFETY: NULL or a handle from walredo_pool_new, whose memory is
        // never deallocated (see walredo_pool).
        if let Some(handle) = unsafe { pool.as_ref() } {
            // Our own reference: a concurrent walredo_pool_free may take the
            // handle's while this runs (it waits for us, then lets go). A
            // freed pool was shut down before it was taken out.
            let pool = handle.pool.lock().clone();
            if let Some(pool) = pool {
                pool.shutdown();
            }
        }
        Ok(())
    });
}

/// Free a pool: shut it down as `walredo_pool_shutdown` does (threads
/// blocked in `walredo_redo` on it return `WALREDO_SHUTDOWN`), then release
/// it. NULL is allowed.
///
/// Calls on the pool may race with this: a call that began before it (even
/// one that has not yet done anything, stopped at its entry) or that begins
/// while it runs either works as usual or returns `WALREDO_SHUTDOWN`, and
/// never reads freed memory. To make that true, the handle itself (a few
/// dozen bytes per pool ever made) stays allocated until the process exits;
/// the pool's threads, processes, buffers and descriptors go here, its last
/// bytes when the last call still running on it returns. A call on a freed
/// pool, and a second free of it, therefore return `WALREDO_SHUTDOWN` and do
/// nothing; do not count on that, a freed pool is a bug of its caller.
#[no_mangle]
pub unsafe extern "C" fn walredo_pool_free(pool: *mut walredo_pool) {
    guard(|| {
        // SAFETY: NULL or a handle from walredo_pool_new, whose memory is
        // never deallocated (see walredo_pool): `'static` is true.
        let Some(handle): Option<&'static walredo_pool> = (unsafe { pool.as_ref() }) else {
            return Ok(());
        };
        // Shut down before the pool is taken out: a concurrent shutdown
        // either shares this one (and waits for it) or finds it done. Now,
        // not when the last caller still blocked in walredo_redo lets go of
        // its reference: they get WALREDO_SHUTDOWN.
        let pool = handle.pool.lock().clone();
        if let Some(pool) = pool {
            pool.shutdown();
        }
        if handle.pool.lock().take().is_some() {
            FREED_HANDLES.lock().push(handle);
        }
        Ok(())
    });
}

/// A request's arguments, checked and converted: those of `walredo_redo`,
/// `walredo_submit` and `walredo_call_start`, and of their keyed forms.
pub(super) struct RequestArgs<'a> {
    /// The tenant's key (empty: the default tenant).
    pub key: &'a [u8],
    pub tag: PageTag,
    pub base: Option<&'a Page>,
    pub refs: Vec<RecordRef<'a>>,
}

/// Check and convert the arguments of a request (see [`RequestArgs`]).
///
/// # Safety
/// The pointer contracts of `walredo_redo` and of `walredo_redo_keyed`'s
/// key.
pub(super) unsafe fn request_args<'a>(
    key: *const u8,
    key_len: usize,
    tag: *const walredo_page_tag,
    base_page: *const u8,
    records: *const walredo_record,
    n_records: usize,
) -> Result<RequestArgs<'a>, Error> {
    // SAFETY: NULL or a valid walredo_page_tag.
    let tag = unsafe { arg(tag, "tag") }?;
    // SAFETY: NULL or WALREDO_PAGE_SIZE readable bytes.
    let base = unsafe { page_arg(base_page) };
    // SAFETY: as records_arg says.
    let refs = unsafe { records_arg(records, n_records) }?;
    // SAFETY: as key_arg says.
    let key = unsafe { key_arg(key, key_len) }?;
    Ok(RequestArgs {
        key,
        tag: PageTag::from(tag),
        base,
        refs,
    })
}

/// A caller's array of records, each at most 1 GiB.
///
/// # Safety
/// `records` is NULL or points to `n_records` valid entries (when not 0),
/// each `data` pointing to `len` readable bytes, during `'a`.
pub(super) unsafe fn records_arg<'a>(
    records: *const walredo_record,
    n_records: usize,
) -> Result<Vec<RecordRef<'a>>, Error> {
    // SAFETY: n_records valid entries (when not 0).
    let records = unsafe { slice_arg(records, n_records, "records", "n_records") }?;
    let mut refs = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        if r.len > MAX_RECORD_LEN {
            return Err(invalid(format!(
                "record #{i}: len {} is over the 1 GiB limit",
                r.len
            )));
        }
        refs.push(RecordRef {
            end_lsn: r.end_lsn,
            // SAFETY: `len` readable bytes (when not 0).
            data: unsafe { slice_arg(r.data, r.len, format_args!("record #{i}: data"), "len") }?,
        });
    }
    Ok(refs)
}

/// The pool behind a handle, shared so that it outlives a concurrent free;
/// `Shutdown` once the pool was freed.
///
/// # Safety
/// `pool` is NULL or a handle from `walredo_pool_new` (never deallocated).
pub(super) unsafe fn pool_arg(pool: *const walredo_pool) -> Result<(Arc<Pool>, bool), Error> {
    // SAFETY: NULL or a handle whose memory is never deallocated (see
    // walredo_pool).
    let handle = unsafe { arg(pool, "pool") }?;
    let pool = handle.pool.lock().clone().ok_or(Error::Shutdown)?;
    Ok((pool, handle.debug_panic))
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
/// Blocks until the page is there or an error occurs. When a process of its
/// tenant's is free and none of its tenant's requests is queued (and no
/// more of its tenant's callers are in than its processes), the calling
/// thread drives it itself; otherwise the request waits in the pool's queue
/// (and, when the queue is full, for room in it). Every record is validated (lengths, CRC-32C, block references)
/// before anything reaches a process. The request has its page or an error
/// by its deadline (`timeout_ms` from this call: queueing and retries
/// included). A request whose process crashed on it is retried once on a
/// fresh process; one whose process hung (`attempt_timeout_ms`) or was
/// killed from outside (SIGKILL, the OOM killer) is retried while its
/// deadline allows. Thread-safe; no callback.
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
    // SAFETY: the contract above; no key.
    unsafe {
        redo(
            pool,
            ptr::null(),
            0,
            tag,
            base_page,
            records,
            n_records,
            out_page,
        )
    }
}

/// The longest tenant key, in bytes.
pub const WALREDO_MAX_KEY_LEN: usize = 64;
const _: () = assert!(WALREDO_MAX_KEY_LEN == MAX_KEY_LEN);

/// `walredo_redo` for the tenant `key` (`key_len` bytes, at most
/// `WALREDO_MAX_KEY_LEN`; NULL allowed when `key_len` is 0): a wal-redo
/// process is started for one key and only ever gets that key's requests,
/// for its whole life, retries and spares included. The key is only read
/// during the call. `walredo_redo` is this with the empty key, the default
/// tenant. docs/c-api.md ("Tenants") has the limits and the scheduling.
#[no_mangle]
pub unsafe extern "C" fn walredo_redo_keyed(
    pool: *mut walredo_pool,
    key: *const u8,
    key_len: usize,
    tag: *const walredo_page_tag,
    base_page: *const u8,
    records: *const walredo_record,
    n_records: usize,
    out_page: *mut u8,
) -> c_int {
    // SAFETY: the contracts of walredo_redo and of the key above.
    unsafe {
        redo(
            pool, key, key_len, tag, base_page, records, n_records, out_page,
        )
    }
}

/// The body of `walredo_redo` and `walredo_redo_keyed`.
///
/// # Safety
/// Their pointer contracts.
#[allow(clippy::too_many_arguments)]
unsafe fn redo(
    pool: *mut walredo_pool,
    key: *const u8,
    key_len: usize,
    tag: *const walredo_page_tag,
    base_page: *const u8,
    records: *const walredo_record,
    n_records: usize,
    out_page: *mut u8,
) -> c_int {
    guard(|| {
        // SAFETY: the pointer contract of walredo_redo.
        let (pool, debug_panic) = unsafe { pool_arg(pool) }?;
        // SAFETY: the pointer contract of walredo_redo.
        let out_page = unsafe { PageOut::new(out_page, "out_page") }?;
        // SAFETY: the pointer contracts of walredo_redo and walredo_redo_keyed.
        let r = unsafe { request_args(key, key_len, tag, base_page, records, n_records) }?;
        if debug_panic {
            panic!("debug_panic is on");
        }
        let page = pool.redo_keyed(r.key, &r.tag, r.base, &r.refs)?;
        out_page.write(&page);
        Ok(())
    })
}

/// A tenant key argument.
///
/// # Safety
/// `key` is NULL or points to `key_len` readable bytes during `'a`.
pub(super) unsafe fn key_arg<'a>(key: *const u8, key_len: usize) -> Result<&'a [u8], Error> {
    if key_len > MAX_KEY_LEN {
        return Err(invalid(format!(
            "key_len {key_len} is over WALREDO_MAX_KEY_LEN ({MAX_KEY_LEN})"
        )));
    }
    // SAFETY: the contract above.
    unsafe { slice_arg(key, key_len, "key", "key_len") }
}

/// Called once per submitted request with its outcome: `status` is
/// `WALREDO_OK` and `page` the `WALREDO_PAGE_SIZE`-byte page (valid only
/// during the call: copy it), or `status` is an error code, `page` is NULL
/// and `message` says why (valid only during the call). `message` is "" on
/// success.
pub type walredo_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        status: c_int,
        page: *const u8,
        message: *const c_char,
    ),
>;

/// A C callback and its userdata, moved to a worker thread.
struct CallbackTarget {
    cb: unsafe extern "C" fn(*mut c_void, c_int, *const u8, *const c_char),
    userdata: *mut c_void,
}

// SAFETY: walredo_submit's contract makes the caller responsible for
// `userdata` being usable from the worker thread that runs the callback.
unsafe impl Send for CallbackTarget {}

impl CallbackTarget {
    fn call(self, outcome: Result<&Page, &Error>) {
        match outcome {
            // SAFETY: a C function pointer from the caller, called with the
            // arguments its typedef documents; the page outlives the call.
            Ok(page) => unsafe {
                (self.cb)(self.userdata, WALREDO_OK, page.as_ptr(), c"".as_ptr())
            },
            Err(e) => {
                let message =
                    std::ffi::CString::new(e.to_string().replace('\0', "\\0")).unwrap_or_default();
                // SAFETY: as above; the message outlives the call.
                unsafe { (self.cb)(self.userdata, status_of(e), ptr::null(), message.as_ptr()) }
            }
        }
    }
}

/// Queue a request without blocking; the same arguments as `walredo_redo`,
/// but the page goes to `cb` instead of an output buffer.
///
/// The inputs are copied before this returns. On `WALREDO_OK`, `cb` will be
/// called exactly once, on one of the library's worker threads, with no lock
/// of the library held, and `userdata` passed through untouched: it must be
/// usable from that thread. The callback may call any function of this
/// library except `walredo_pool_free` and `walredo_pool_shutdown` on the
/// same pool; a `walredo_redo` it makes drives a process on that worker
/// thread itself (waiting for a free one), never queued behind other
/// requests, so callbacks cannot starve the queue. Worker threads run as
/// `SCHED_BATCH` (never preempting on wake-up), pinned to a CPU when
/// `follow_caller_cpu` is on. A PostgreSQL extension
/// must not `ereport` from it. On any other
/// status (`WALREDO_BUSY` when the queue is full, invalid input, shut down),
/// `cb` is never called.
#[no_mangle]
pub unsafe extern "C" fn walredo_submit(
    pool: *mut walredo_pool,
    tag: *const walredo_page_tag,
    base_page: *const u8,
    records: *const walredo_record,
    n_records: usize,
    cb: walredo_callback,
    userdata: *mut c_void,
) -> c_int {
    // SAFETY: the contract above; no key.
    unsafe {
        submit(
            pool,
            ptr::null(),
            0,
            tag,
            base_page,
            records,
            n_records,
            cb,
            userdata,
        )
    }
}

/// `walredo_submit` for the tenant `key`, as `walredo_redo_keyed`. Besides
/// the pool's `queue_depth`, a keyed tenant's requests waiting in the queue
/// are limited by `tenant_queue_depth`: `WALREDO_BUSY` says which limit was
/// hit.
#[no_mangle]
pub unsafe extern "C" fn walredo_submit_keyed(
    pool: *mut walredo_pool,
    key: *const u8,
    key_len: usize,
    tag: *const walredo_page_tag,
    base_page: *const u8,
    records: *const walredo_record,
    n_records: usize,
    cb: walredo_callback,
    userdata: *mut c_void,
) -> c_int {
    // SAFETY: the contracts of walredo_submit and walredo_redo_keyed.
    unsafe {
        submit(
            pool, key, key_len, tag, base_page, records, n_records, cb, userdata,
        )
    }
}

/// The body of `walredo_submit` and `walredo_submit_keyed`.
///
/// # Safety
/// Their pointer contracts.
#[allow(clippy::too_many_arguments)]
unsafe fn submit(
    pool: *mut walredo_pool,
    key: *const u8,
    key_len: usize,
    tag: *const walredo_page_tag,
    base_page: *const u8,
    records: *const walredo_record,
    n_records: usize,
    cb: walredo_callback,
    userdata: *mut c_void,
) -> c_int {
    guard(|| {
        // SAFETY: the pointer contract of walredo_redo.
        let (pool, debug_panic) = unsafe { pool_arg(pool) }?;
        let cb = cb.ok_or_else(|| invalid("cb is NULL"))?;
        // SAFETY: the pointer contracts of walredo_redo and walredo_redo_keyed.
        let r = unsafe { request_args(key, key_len, tag, base_page, records, n_records) }?;
        if debug_panic {
            panic!("debug_panic is on");
        }
        let target = CallbackTarget { cb, userdata };
        pool.submit_keyed(
            r.key,
            &r.tag,
            r.base,
            &r.refs,
            Box::new(move |outcome| target.call(outcome)),
        )
    })
}

/// Fill `*out` with the pool's counters. Thread-safe, cheap, lock-free.
// `walredo_stats` is the pool's own `Counters` (src/pool/stats.rs), by its C
// name (cbindgen.toml).
#[no_mangle]
pub unsafe extern "C" fn walredo_pool_stats(
    pool: *const walredo_pool,
    out: *mut Counters,
) -> c_int {
    guard(|| {
        // SAFETY: NULL or a live pool.
        let (pool, _) = unsafe { pool_arg(pool) }?;
        // SAFETY: NULL or a writable walredo_stats (`Counters` in Rust).
        let out = unsafe { out_arg(out, "out") }?;
        out.write(pool.stats().counters);
        Ok(())
    })
}

/// Write the pool's counters as Prometheus text exposition, NUL-terminated,
/// into `buf` (`len` bytes). `*needed` (when `needed` is not NULL) is set to
/// the bytes required, NUL included. When `len` is too small (`buf` may then
/// be NULL), nothing is written and `WALREDO_BUFFER_TOO_SMALL` is returned:
/// call again with a buffer of `*needed` bytes. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn walredo_pool_metrics_text(
    pool: *const walredo_pool,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> c_int {
    guard_status(|| {
        // SAFETY: NULL or a live pool.
        let (pool, _) = unsafe { pool_arg(pool) }?;
        let text = pool.prometheus_text();
        let required = text.len() + 1;
        // SAFETY: NULL or a writable size_t.
        if let Some(needed) = unsafe { opt_out_arg(needed) } {
            needed.write(required);
        }
        if len < required || buf.is_null() {
            set_last_error(&format!(
                "the metrics need {required} bytes, the buffer has {len}"
            ));
            return Ok(WALREDO_BUFFER_TOO_SMALL);
        }
        // SAFETY: buf has len >= required writable bytes.
        unsafe {
            ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
            buf.add(text.len()).write(0);
        }
        Ok(WALREDO_OK)
    })
}

/// A live wal-redo process of a pool, and the tenant it serves.
#[repr(C)]
pub struct walredo_process_info {
    pub pid: i32,
    /// The tenant's key: its first `key_len` bytes (0 for the default
    /// tenant, the unkeyed calls); the rest are zero.
    pub key: [u8; WALREDO_MAX_KEY_LEN],
    pub key_len: usize,
}

/// List the pool's live wal-redo processes (the template and the spare,
/// which serve nobody yet, aside) into `out`, room for `capacity` entries
/// (NULL allowed when `capacity` is 0); `*count` is set to how many there
/// are. When that exceeds `capacity`, nothing is written and
/// `WALREDO_BUFFER_TOO_SMALL` is returned: call again with `*count` entries
/// (more may have started meanwhile). A snapshot: a process may end right
/// after. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn walredo_pool_processes(
    pool: *const walredo_pool,
    out: *mut walredo_process_info,
    capacity: usize,
    count: *mut usize,
) -> c_int {
    guard_status(|| {
        // SAFETY: NULL or a live pool.
        let (pool, _) = unsafe { pool_arg(pool) }?;
        // SAFETY: NULL or a writable size_t.
        let count = unsafe { out_arg(count, "count") }?;
        // SAFETY: NULL or storage for `capacity` entries.
        let out = unsafe { out_slice_arg(out, capacity, "out", "capacity") }?;
        let too_many = |n| format!("the pool has {n} processes, the buffer room for {capacity}");
        Ok(fill_array(count, out, &pool.processes(), too_many, |p| {
            let mut key = [0; MAX_KEY_LEN];
            let bytes = p.key.as_bytes();
            key[..bytes.len()].copy_from_slice(bytes);
            walredo_process_info {
                pid: p.pid as i32,
                key,
                key_len: bytes.len(),
            }
        }))
    })
}

/// Fill `*out` with what the pool counted of the tenant `key` (as
/// `walredo_redo_keyed` takes it): requests answered, failures, processes
/// started for it, and the time its requests waited for a process. A
/// tenant never seen has zeros (the pool counts the 4,096 busiest one by
/// one, the rest together in its metrics' `tenant="other"`). Thread-safe.
// `walredo_tenant_stats` is the pool's own `TenantCounters`
// (src/pool/stats.rs), by its C name (cbindgen.toml).
#[no_mangle]
pub unsafe extern "C" fn walredo_pool_tenant_stats(
    pool: *const walredo_pool,
    key: *const u8,
    key_len: usize,
    out: *mut TenantCounters,
) -> c_int {
    guard(|| {
        // SAFETY: NULL or a live pool.
        let (pool, _) = unsafe { pool_arg(pool) }?;
        // SAFETY: the key's contract of walredo_redo_keyed.
        let key = unsafe { key_arg(key, key_len) }?;
        // SAFETY: NULL or a writable walredo_tenant_stats.
        let out = unsafe { out_arg(out, "out") }?;
        out.write(pool.tenant_stats(key)?);
        Ok(())
    })
}
