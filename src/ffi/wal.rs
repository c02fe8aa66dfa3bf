//! `walredo_wal` and `walredo_plan`: WAL sources, the plans they make, block
//! histories (built on `crate::wal::source`).

use std::ffi::{c_char, c_int, c_void, CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::pointers::{arg, free_handle, out_arg, slice_arg, HandleOut};
use super::walredo_slru_page;
use super::{guard, guard_status, invalid, set_last_error, walredo_page_tag, walredo_record};
use super::{WALREDO_CANCELLED, WALREDO_INVALID_ARGUMENT, WALREDO_MALFORMED_RECORD};
use super::{WALREDO_NOT_FOUND, WALREDO_NOT_IN_WAL, WALREDO_NO_SUCH_BLOCK, WALREDO_OK};
use crate::error::Error;
use crate::tag::{PageTag, MAX_FORKNUM};
use crate::wal::restore::RestoreCommand;
use crate::wal::source::{HistoryEntry, SourceError, WalSource};
use crate::wal::WalError;
use crate::wal::WalRecord;

/// The WAL of one cluster, found in a list of directories. Thread-safe:
/// calls on one source from several threads run one after another.
pub struct walredo_wal {
    source: Mutex<WalSource>,
}

/// The records that rebuild a page as of an LSN (from `walredo_wal_plan`
/// or `walredo_wal_plan_slru`).
pub struct walredo_plan {
    /// Owns the record bytes that `records` point into.
    _owner: Vec<WalRecord>,
    records: Vec<walredo_record>,
    /// The records apply to the caller's base page (walredo_wal_plan_on_base).
    on_base: bool,
}

impl walredo_plan {
    /// A plan of `records`: the bytes live on the heap, so moving the
    /// vector into the plan keeps the pointers valid.
    fn of(owner: Vec<WalRecord>, on_base: bool) -> walredo_plan {
        let records = owner
            .iter()
            .map(|r| walredo_record {
                end_lsn: r.end_lsn,
                data: r.data.as_ptr(),
                len: r.data.len(),
            })
            .collect();
        walredo_plan {
            _owner: owner,
            records,
            on_base,
        }
    }
}

/// Called every few thousand records during long scans, on the calling
/// thread; nonzero stops the scan, which then returns `WALREDO_CANCELLED`.
/// Must not longjmp (no ereport, no CHECK_FOR_INTERRUPTS): return nonzero and
/// handle the interrupt after the call returned.
pub type walredo_interrupt_fn = Option<unsafe extern "C" fn(userdata: *mut c_void) -> c_int>;

/// Called for each record of a history, oldest first, on the calling thread;
/// nonzero stops the walk (`walredo_wal_history` then returns `WALREDO_OK`).
/// Must not longjmp.
pub type walredo_history_fn = Option<
    unsafe extern "C" fn(userdata: *mut c_void, entry: *const HistoryEntry<*const c_char>) -> c_int,
>;

/// The status of a source error, with its message left for
/// `walredo_last_error`.
fn source_status(e: SourceError) -> Result<c_int, Error> {
    let status = match &e {
        SourceError::NotFound(_) => WALREDO_NOT_FOUND,
        SourceError::NoSuchBlock(_) => WALREDO_NO_SUCH_BLOCK,
        SourceError::NotInWal(_) => WALREDO_NOT_IN_WAL,
        SourceError::Cancelled => WALREDO_CANCELLED,
        SourceError::Malformed { .. } | SourceError::Corrupt { .. } => WALREDO_MALFORMED_RECORD,
        // A file gone between two looks: WAL no longer there, not a bad
        // argument.
        SourceError::Wal(WalError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            WALREDO_NOT_FOUND
        }
        // The directories or the restore command given cannot be used.
        SourceError::Wal(
            WalError::ReadDir { .. }
            | WalError::Io { .. }
            | WalError::SystemIdMismatch { .. }
            | WalError::Restore(_),
        ) => WALREDO_INVALID_ARGUMENT,
        // What the WAL holds cannot answer.
        SourceError::Wal(_) => WALREDO_NOT_FOUND,
    };
    set_last_error(&e.to_string());
    Ok(status)
}

/// # Safety
/// `tag` is NULL or points to a valid `walredo_page_tag`.
pub(super) unsafe fn page_tag(tag: *const walredo_page_tag) -> Result<PageTag, Error> {
    // SAFETY: NULL or a valid walredo_page_tag (the caller's contract).
    let t = unsafe { arg(tag, "tag") }?;
    if t.forknum > MAX_FORKNUM {
        return Err(invalid(format!(
            "tag forknum {} is not 0 to {MAX_FORKNUM}",
            t.forknum
        )));
    }
    Ok(PageTag::from(t))
}

fn interrupter(interrupt: walredo_interrupt_fn, userdata: *mut c_void) -> impl FnMut() -> bool {
    move || match interrupt {
        // SAFETY: the caller's function, called with its own userdata, on
        // the calling thread, as walredo_interrupt_fn documents.
        Some(f) => (unsafe { f(userdata) }) != 0,
        None => false,
    }
}

/// The source behind a handle.
///
/// # Safety
/// `wal` is NULL or a live source from `walredo_wal_open`.
unsafe fn source<'a>(wal: *mut walredo_wal) -> Result<&'a walredo_wal, Error> {
    // SAFETY: the caller's contract.
    unsafe { arg(wal, "wal") }
}

/// Open a WAL source: segment files looked up in `dirs[0..n_dirs]`, in
/// order (the server's pg_wal, then an archive directory), read in place,
/// never written or copied. For each segment the first directory whose file
/// starts with that segment's page header is read; a segment removed or
/// recycled while it is read is noticed (its page headers no longer match)
/// and looked for in the next directory, else the lookup fails with a
/// message naming it. `timeline` 0: the highest timeline found (then kept).
/// The timeline's history file (`NNNNNNNN.history`, in any of the
/// directories) is followed as PostgreSQL's recovery follows it: WAL before
/// a switch is read from the segments of the timeline current then, and an
/// older timeline's segments past its switch point are never read.
/// Cheap: checks that the directories exist, reads no WAL yet. On success
/// `*out` is the source, freed with `walredo_wal_free`; on failure `*out` is
/// NULL. Errors: `WALREDO_INVALID_ARGUMENT` (NULL, no directory, not a
/// directory). The strings are copied.
#[no_mangle]
pub unsafe extern "C" fn walredo_wal_open(
    dirs: *const *const c_char,
    n_dirs: usize,
    timeline: u32,
    out: *mut *mut walredo_wal,
) -> c_int {
    guard(|| {
        // SAFETY: NULL or storage for a pointer (the caller's contract).
        let out = unsafe { HandleOut::new(out) }?;
        if n_dirs == 0 {
            return Err(invalid(
                "n_dirs is 0: give at least the server's pg_wal directory",
            ));
        }
        if n_dirs > 1024 {
            return Err(invalid(format!("n_dirs {n_dirs} is more than 1024")));
        }
        // SAFETY: n_dirs entries (the caller's contract).
        let dirs = unsafe { slice_arg(dirs, n_dirs, "dirs", "n_dirs") }?;
        let mut paths = Vec::with_capacity(n_dirs);
        for (i, &d) in dirs.iter().enumerate() {
            if d.is_null() {
                return Err(invalid(format!("dirs[{i}] is NULL")));
            }
            // SAFETY: non-NULL and NUL-terminated (the caller's contract).
            let bytes = unsafe { CStr::from_ptr(d) }.to_bytes();
            let path = PathBuf::from(OsStr::from_bytes(bytes));
            if !path.is_dir() {
                return Err(invalid(format!(
                    "dirs[{i}] {} is not a directory that can be read",
                    path.display()
                )));
            }
            paths.push(path);
        }
        let timeline = (timeline != 0).then_some(timeline);
        out.set(walredo_wal {
            source: Mutex::new(WalSource::new(paths, timeline)),
        });
        Ok(())
    })
}

/// Let `wal`'s plans fetch, with `command`, the segments none of its
/// directories has (NULL or "": stop). The command is run as PostgreSQL
/// runs `restore_command`: `/bin/sh -c`, `%f` the file name, `%p` the path
/// to write, `%r` the file name, `%%` a percent sign; exit status 0 with
/// the file written is success, another status means the archive lacks
/// the file (a plan then fails with `WALREDO_NOT_FOUND`, saying which
/// file), and death by a signal, a hang or a command that cannot run is an
/// error (`WALREDO_INVALID_ARGUMENT`). Each run is killed with everything it started after
/// `timeout_ms` (0: 300,000), or when the plan's interrupt callback asks
/// to stop (`WALREDO_CANCELLED`). Fetched files go to `cache_dir`
/// (created, mode 0700; it should be this source's alone, and is looked in
/// after the other directories), which keeps at most `most_cached` of them
/// (0: 64), the oldest removed first. The strings are copied. A plan the
/// directories cannot answer fetches the segment holding its LSN, or the
/// one before the oldest present, and tries again, at most `most_cached`
/// times. The target timeline's history file, when no directory has it, is
/// fetched too (once; it is kept), so that WAL before a timeline switch is
/// looked for under its own timeline's names.
#[no_mangle]
pub unsafe extern "C" fn walredo_wal_set_restore_command(
    wal: *mut walredo_wal,
    command: *const c_char,
    cache_dir: *const c_char,
    timeout_ms: u64,
    most_cached: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let wal = unsafe { source(wal) }?;
        let command = if command.is_null() {
            String::new()
        } else {
            // SAFETY: non-NULL and NUL-terminated (the caller's contract).
            unsafe { CStr::from_ptr(command) }
                .to_str()
                .map_err(|_| invalid("command is not UTF-8"))?
                .to_string()
        };
        if command.trim().is_empty() {
            wal.source.lock().set_restore(None);
            return Ok(());
        }
        if cache_dir.is_null() {
            return Err(invalid("cache_dir is NULL"));
        }
        // SAFETY: non-NULL and NUL-terminated (the caller's contract).
        let cache = PathBuf::from(OsStr::from_bytes(
            unsafe { CStr::from_ptr(cache_dir) }.to_bytes(),
        ));
        let timeout = match timeout_ms {
            0 => Duration::from_secs(300),
            ms => Duration::from_millis(ms),
        };
        let most = if most_cached == 0 { 64 } else { most_cached };
        let restore = RestoreCommand::new(&command, &cache, timeout, most)
            .map_err(|e| invalid(e.to_string()))?;
        wal.source.lock().set_restore(Some(Arc::new(restore)));
        Ok(())
    })
}

/// Read only the WAL of the cluster whose system identifier is
/// `system_id` (pg_control's, `GetSystemIdentifier()` in a backend): a
/// segment of another cluster, in a directory or fetched by the restore
/// command (an archive of another cluster with the same segment names), is
/// never read: lookups that need it fail with a message naming its file
/// and both identifiers. Without this call the first segment read decides.
/// Errors: `WALREDO_INVALID_ARGUMENT` for NULL or 0.
#[no_mangle]
pub unsafe extern "C" fn walredo_wal_expect_system(wal: *mut walredo_wal, system_id: u64) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let wal = unsafe { source(wal) }?;
        if system_id == 0 {
            return Err(invalid("system_id is 0"));
        }
        wal.source.lock().expect_system(system_id);
        Ok(())
    })
}

/// Free a WAL source (NULL allowed). Plans made from it stay valid.
#[no_mangle]
pub unsafe extern "C" fn walredo_wal_free(wal: *mut walredo_wal) {
    // SAFETY: NULL or a pointer from walredo_wal_open, freed once, no call
    // on it running (the caller's contract).
    unsafe { free_handle(wal) }
}

/// The records that rebuild `tag` as of `lsn`: the newest record at or
/// before `lsn` that carries an applicable full-page image of the block or
/// initializes it, then every later record referencing the block that ends
/// at or before `lsn`. `lsn` must be a position the caller knows to be
/// flushed: records ending after it are never read (by this lookup; a later
/// one may read up to the highest LSN a plan was made for). A lookup reads
/// the segments holding what it needs, newest first, and keeps in the source
/// an index of what it read (every record by the blocks it changes; the
/// newest segment up to `lsn`, read on from there by later lookups), so
/// later lookups read only their block's records.
///
/// On success `*out` is the plan (free it with `walredo_plan_free`); on
/// failure NULL. `WALREDO_NOT_FOUND`: no starting point for the page in the
/// readable WAL (the message says from which LSN on it can be rebuilt, if
/// known, and that an archive directory or a larger wal_keep_size would reach
/// further), a block no record references, or an lsn before the oldest or
/// after the newest readable record (the message gives the readable range).
/// `WALREDO_NO_SUCH_BLOCK`: the block did not exist at `lsn` (truncated or
/// dropped by a record at or before it, and not made again since); the
/// message names that record. `WALREDO_NOT_IN_WAL`: the page's content at
/// `lsn` is not in any WAL (a free-space-map page, or one that records change
/// without initializing it since CREATE DATABASE ... STRATEGY FILE_COPY copied
/// its database).
/// `WALREDO_CANCELLED`: `interrupt` (may be NULL) returned nonzero.
/// `WALREDO_INVALID_ARGUMENT`: NULL arguments, a fork above 3, directories
/// that cannot be read. `WALREDO_MALFORMED_RECORD`: a record with a valid
/// CRC that does not decode, or WAL that cannot be read below `lsn` for
/// another reason than never having been written (a bad CRC, length,
/// prev-link or page header: damage, since `lsn` is flushed). An `lsn` at the
/// start of a segment (the flush LSN after `pg_switch_wal()`) needs nothing
/// of that segment, which may be absent, recycled or zero-filled.
#[no_mangle]
pub unsafe extern "C" fn walredo_wal_plan(
    wal: *mut walredo_wal,
    tag: *const walredo_page_tag,
    lsn: u64,
    interrupt: walredo_interrupt_fn,
    userdata: *mut c_void,
    out: *mut *mut walredo_plan,
) -> c_int {
    // SAFETY: the caller's contract is this function's.
    unsafe { plan_block(wal, tag, lsn, None, interrupt, userdata, out) }
}

/// `walredo_wal_plan` for a caller that holds the block as a base backup
/// holds it, the backup starting at `base_lsn` (its backup_label's `START
/// WAL LOCATION`): WAL before `base_lsn` is never needed, read or fetched.
/// When a record in `base_lsn..lsn` initializes the page, the plan is
/// `walredo_wal_plan`'s; otherwise it is every record of the block that
/// starts at or after `base_lsn` and ends at or before `lsn` (maybe none),
/// to apply to the backup's copy of the block, and
/// `walredo_plan_on_base` says so. The backup's copy may hold any version
/// of the page from `base_lsn` on: PostgreSQL's redo routines skip a record
/// their page is already past, as in recovery of a base backup. Errors as
/// `walredo_wal_plan`'s; `WALREDO_NOT_FOUND` also when `base_lsn` is 0 or
/// after `lsn`, or before the oldest WAL the sources reach.
#[no_mangle]
pub unsafe extern "C" fn walredo_wal_plan_on_base(
    wal: *mut walredo_wal,
    tag: *const walredo_page_tag,
    lsn: u64,
    base_lsn: u64,
    interrupt: walredo_interrupt_fn,
    userdata: *mut c_void,
    out: *mut *mut walredo_plan,
) -> c_int {
    // SAFETY: the caller's contract is this function's.
    unsafe { plan_block(wal, tag, lsn, Some(base_lsn), interrupt, userdata, out) }
}

/// The body of `walredo_wal_plan` (`base_lsn` None) and
/// `walredo_wal_plan_on_base`.
///
/// # Safety
/// As `walredo_wal_plan`'s.
unsafe fn plan_block(
    wal: *mut walredo_wal,
    tag: *const walredo_page_tag,
    lsn: u64,
    base_lsn: Option<u64>,
    interrupt: walredo_interrupt_fn,
    userdata: *mut c_void,
    out: *mut *mut walredo_plan,
) -> c_int {
    guard_status(|| {
        // SAFETY: NULL or storage for a pointer (the caller's contract).
        let out = unsafe { HandleOut::new(out) }?;
        // SAFETY: the caller's contract.
        let wal = unsafe { source(wal) }?;
        // SAFETY: the caller's contract.
        let tag = unsafe { page_tag(tag) }?;
        let mut source = wal.source.lock();
        let interrupt = &mut interrupter(interrupt, userdata);
        let result = match base_lsn {
            None => source.plan(&tag, lsn, interrupt),
            Some(base_lsn) => source.plan_on_base(&tag, lsn, base_lsn, interrupt),
        };
        plan_out(out, result.map(|plan| (plan.records, plan.on_base)))
    })
}

/// A plan's outcome for the caller: the plan in `*out`, or the status of
/// why there is none.
fn plan_out(
    out: HandleOut<walredo_plan>,
    records: Result<(Vec<WalRecord>, bool), SourceError>,
) -> Result<c_int, Error> {
    match records {
        Ok((records, on_base)) => {
            out.set(walredo_plan::of(records, on_base));
            Ok(WALREDO_OK)
        }
        Err(e) => source_status(e),
    }
}

/// The records that rebuild SLRU page `page` as of `lsn`, for
/// `walredo_redo_slru` with no base page: the newest record at or before
/// `lsn` that zeroes the page, then every later one that writes on it
/// (docs/slru.md). The same LSN rules, errors and restore command as
/// `walredo_wal_plan`; `WALREDO_NOT_FOUND` when the readable WAL holds no
/// record that zeroed the page (it was made earlier: an archive reaches
/// further), `WALREDO_NO_SUCH_BLOCK` when a record after that removed it (a
/// truncation of its segment; commit timestamps turned off). Not indexed: a
/// plan reads every record of the segments it walks back through.
#[no_mangle]
pub unsafe extern "C" fn walredo_wal_plan_slru(
    wal: *mut walredo_wal,
    page: *const walredo_slru_page,
    lsn: u64,
    interrupt: walredo_interrupt_fn,
    userdata: *mut c_void,
    out: *mut *mut walredo_plan,
) -> c_int {
    guard_status(|| {
        // SAFETY: NULL or storage for a pointer (the caller's contract).
        let out = unsafe { HandleOut::new(out) }?;
        // SAFETY: the caller's contract.
        let wal = unsafe { source(wal) }?;
        // SAFETY: NULL or a valid walredo_slru_page (the caller's contract).
        let page = super::slru::slru_page_of(unsafe { arg(page, "page") }?)?;
        let result = wal
            .source
            .lock()
            .plan_slru(&page, lsn, &mut interrupter(interrupt, userdata));
        plan_out(out, result.map(|plan| (plan.records, false)))
    })
}

/// Whether a plan's records apply to the caller's base page (1: made by
/// `walredo_wal_plan_on_base` without a starting point since the base), or
/// start from nothing (0: the first record initializes the page; also for
/// NULL).
#[no_mangle]
pub unsafe extern "C" fn walredo_plan_on_base(plan: *const walredo_plan) -> c_int {
    // No guard: nothing here can panic.
    // SAFETY: NULL or a live plan (the caller's contract).
    unsafe { plan.as_ref() }.map_or(0, |p| c_int::from(p.on_base))
}

/// The number of records of a plan (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn walredo_plan_n_records(plan: *const walredo_plan) -> usize {
    // No guard: nothing here can panic.
    // SAFETY: NULL or a live plan (the caller's contract).
    unsafe { plan.as_ref() }.map_or(0, |p| p.records.len())
}

/// The records of a plan, `walredo_plan_n_records` entries, oldest first,
/// owned by the plan (valid until `walredo_plan_free`): ready for
/// `walredo_redo` (or `walredo_call_start`) with `base_page` NULL, or the
/// base backup's page when `walredo_plan_on_base` says 1. NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn walredo_plan_records(plan: *const walredo_plan) -> *const walredo_record {
    // No guard: nothing here can panic.
    // SAFETY: NULL or a live plan (the caller's contract).
    unsafe { plan.as_ref() }.map_or(ptr::null(), |p| p.records.as_ptr())
}

/// Free a plan (NULL allowed).
#[no_mangle]
pub unsafe extern "C" fn walredo_plan_free(plan: *mut walredo_plan) {
    // SAFETY: NULL or a pointer from walredo_wal_plan, freed once (the
    // caller's contract).
    unsafe { free_handle(plan) }
}

/// Every record of the readable WAL ending at or before `end_lsn` that
/// references the block, oldest first: `each` is called for each (on the
/// calling thread; the entry and its strings are valid during the call).
/// `each` returning nonzero stops the walk, and the call returns
/// `WALREDO_OK`. The first history of a source reads all of the readable
/// WAL; later ones to a flushed `end_lsn` only their block's records and
/// the WAL written since (to UINT64_MAX: the segments that reference it). `end_lsn`
/// must be flushed (UINT64_MAX: to the end of the WAL, wherever it is): WAL
/// below it that cannot be read is damage (`WALREDO_MALFORMED_RECORD`,
/// naming its LSN), WAL never written there (zeros, a recycled segment)
/// `WALREDO_NOT_FOUND`; neither ends the walk silently. Errors as
/// `walredo_wal_plan`'s (a readable WAL that no record of the block is in
/// is not an error: `each` is never called).
#[no_mangle]
pub unsafe extern "C" fn walredo_wal_history(
    wal: *mut walredo_wal,
    tag: *const walredo_page_tag,
    end_lsn: u64,
    each: walredo_history_fn,
    each_userdata: *mut c_void,
    interrupt: walredo_interrupt_fn,
    interrupt_userdata: *mut c_void,
) -> c_int {
    // SAFETY: the caller's contract is this function's.
    unsafe {
        history(
            wal,
            tag,
            0,
            end_lsn,
            each,
            each_userdata,
            interrupt,
            interrupt_userdata,
        )
    }
}

/// `walredo_wal_history` of the records that start at or after `since_lsn`
/// (a base backup's start: what came before is in the backup). With a
/// restore command (`walredo_wal_set_restore_command`), the segments from
/// `since_lsn`'s on that no directory has are fetched first, newest first,
/// at most as many as its cache holds; a segment the archive lacks gives
/// `WALREDO_NOT_FOUND`, naming it. `since_lsn` 0 is `walredo_wal_history`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn walredo_wal_history_since(
    wal: *mut walredo_wal,
    tag: *const walredo_page_tag,
    since_lsn: u64,
    end_lsn: u64,
    each: walredo_history_fn,
    each_userdata: *mut c_void,
    interrupt: walredo_interrupt_fn,
    interrupt_userdata: *mut c_void,
) -> c_int {
    // SAFETY: the caller's contract is this function's.
    unsafe {
        history(
            wal,
            tag,
            since_lsn,
            end_lsn,
            each,
            each_userdata,
            interrupt,
            interrupt_userdata,
        )
    }
}

/// The body of `walredo_wal_history` and `walredo_wal_history_since`.
///
/// # Safety
/// As `walredo_wal_history`'s.
#[allow(clippy::too_many_arguments)]
unsafe fn history(
    wal: *mut walredo_wal,
    tag: *const walredo_page_tag,
    since_lsn: u64,
    end_lsn: u64,
    each: walredo_history_fn,
    each_userdata: *mut c_void,
    interrupt: walredo_interrupt_fn,
    interrupt_userdata: *mut c_void,
) -> c_int {
    guard_status(|| {
        // SAFETY: the caller's contract.
        let wal = unsafe { source(wal) }?;
        // SAFETY: the caller's contract.
        let tag = unsafe { page_tag(tag) }?;
        let each = each.ok_or_else(|| invalid("each is NULL"))?;
        let mut names: Vec<(&'static str, CString)> = Vec::new();
        let mut c_name = |s: &'static str| -> *const c_char {
            if let Some((_, c)) = names.iter().find(|(n, _)| *n == s) {
                return c.as_ptr();
            }
            names.push((s, CString::new(s).unwrap_or_default()));
            names.last().map_or(ptr::null(), |(_, c)| c.as_ptr())
        };
        let result = wal.source.lock().history_since(
            &tag,
            since_lsn,
            end_lsn,
            &mut interrupter(interrupt, interrupt_userdata),
            &mut |e| {
                let entry = e.with_names(&mut c_name);
                // SAFETY: the caller's function, with its userdata and an
                // entry valid during the call, as walredo_history_fn says.
                unsafe { each(each_userdata, &entry) == 0 }
            },
        );
        match result {
            Ok(()) => Ok(WALREDO_OK),
            Err(e) => source_status(e),
        }
    })
}

/// The oldest record start and the newest record end that can be read now,
/// with nothing read past `end_lsn` (for messages; pass the flush LSN).
/// `WALREDO_NOT_FOUND` when no record ending at or before `end_lsn` can be
/// read; other errors as `walredo_wal_plan`'s. The results are written only
/// on success.
#[no_mangle]
pub unsafe extern "C" fn walredo_wal_bounds(
    wal: *mut walredo_wal,
    end_lsn: u64,
    oldest_start: *mut u64,
    newest_end: *mut u64,
) -> c_int {
    guard_status(|| {
        // SAFETY: the caller's contract.
        let wal = unsafe { source(wal) }?;
        // SAFETY: NULL or a writable uint64_t (the caller's contract).
        let oldest_start = unsafe { out_arg(oldest_start, "oldest_start") }?;
        // SAFETY: as above.
        let newest_end = unsafe { out_arg(newest_end, "newest_end") }?;
        let result = wal.source.lock().bounds(end_lsn);
        match result {
            Ok((a, b)) => {
                oldest_start.write(a);
                newest_end.write(b);
                Ok(WALREDO_OK)
            }
            Err(e) => source_status(e),
        }
    })
}
