//! SLRU pages and relation maps in C (docs/slru.md): which ones a record
//! changes (`walredo_record_slru_changes`), a page rebuilt from its base and
//! records (`walredo_redo_slru`), and the map a RelMap UPDATE writes
//! (`walredo_relmap_from_record`). Built on `crate::wal::slru`.
//!
//! An SLRU page is a `walredo_slru_page` and a map a `walredo_relmap`, types
//! of their own: C cannot pass one where a relation page (`walredo_page_tag`)
//! is expected. No pool is involved: the pages are rebuilt in the library
//! (src/wal/slru/apply.rs says why).

use std::ffi::c_int;

use super::pointers::{arg, fill_array, out_arg, out_slice_arg, page_arg, slice_arg, PageOut};
use super::pool::records_arg;
use super::{guard, guard_status, invalid, set_last_error, walredo_record};
use super::{WALREDO_BUFFER_TOO_SMALL, WALREDO_OK};
use crate::error::Error;
use crate::pg::slru::SlruFormat;
use crate::pg::xlog::{supported_versions, xlog_page_magic};
use crate::wal::record;
use crate::wal::slru::{
    rebuild_slru_page, relmap_update, slru_changes, RelMapFile, SlruChange, SlruKind, SlruPage,
};

/// `walredo_slru_page.slru`: `pg_xact`, 2 status bits per transaction
/// (PostgreSQL's `src/backend/access/transam/clog.c`: 32768 transactions a
/// page, `xid / 32768`).
pub const WALREDO_SLRU_XACT: u8 = 1;
/// `walredo_slru_page.slru`: `pg_multixact/offsets`, a 4-byte member
/// offset per multixact (`multixact.c`: 2048 a page, `multi / 2048`).
pub const WALREDO_SLRU_MULTIXACT_OFFSETS: u8 = 2;
/// `walredo_slru_page.slru`: `pg_multixact/members`, groups of 4 flag bytes
/// and 4 member xids (`multixact.c`: 409 groups, 1636 members a page,
/// `offset / 1636`).
pub const WALREDO_SLRU_MULTIXACT_MEMBERS: u8 = 3;
/// `walredo_slru_page.slru`: `pg_commit_ts`, a timestamp and an origin
/// (10 bytes) per transaction (`commit_ts.c`: 819 a page, `xid / 819`).
pub const WALREDO_SLRU_COMMIT_TS: u8 = 4;

/// A page of an SLRU. Its bytes live in the segment file `%04X` of
/// `pageno / 32` in the SLRU's directory, at `(pageno % 32) * 8192`
/// (`slru.c`); pages have no header. 0 is not a valid `slru`, so zeroed
/// memory is refused.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct walredo_slru_page {
    /// `WALREDO_SLRU_XACT`, `..._MULTIXACT_OFFSETS`, `..._MULTIXACT_MEMBERS`
    /// or `..._COMMIT_TS`.
    pub slru: u8,
    pub pageno: u64,
}

/// A relation map file (`pg_filenode.map`, `relmapper.c`): the global one
/// is tablespace 1664 with database 0, a database's is its tablespace and
/// database. The file is 512 bytes in PostgreSQL 14 and 15, 524 from 16.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct walredo_relmap {
    pub spcnode: u32,
    pub dbnode: u32,
}

/// `walredo_slru_change.change`: entries of `page` are written (status
/// bits, commit timestamps, multixact offsets or members); replaying needs
/// the page as it was.
pub const WALREDO_SLRU_SET: u8 = 1;
/// `walredo_slru_change.change`: `page` is zeroed (a ZERO record): replaying
/// needs no earlier version of it.
pub const WALREDO_SLRU_ZERO: u8 = 2;
/// `walredo_slru_change.change`: `SimpleLruTruncate` at `page` (its `slru`
/// and the cut-off page): segments before the cut-off's are removed unless
/// the SLRU's latest page shows an apparent wraparound.
pub const WALREDO_SLRU_TRUNCATE: u8 = 3;
/// `walredo_slru_change.change`: segments `from_segment` up to, not
/// including, `to_segment` of `page.slru` are removed (wrapping after the
/// last segment; multixact members).
pub const WALREDO_SLRU_DELETE_SEGMENTS: u8 = 4;
/// `walredo_slru_change.change`: the map file `relmap` is written whole
/// from the record (`walredo_relmap_from_record` gives its bytes).
pub const WALREDO_RELMAP_WRITE: u8 = 5;
/// `walredo_slru_change.change`: XLOG PARAMETER_CHANGE: commit timestamps
/// are active (`commit_ts_active`) or not for the records after it; turning
/// them off deletes every `pg_commit_ts` file.
pub const WALREDO_COMMIT_TS_SETTING: u8 = 6;

/// `walredo_record_slru_changes` flag: commit timestamps are active at this
/// record (the cluster's `track_commit_timestamp` as of its last
/// checkpoint, then each `WALREDO_COMMIT_TS_SETTING`): commits then also
/// change `pg_commit_ts` pages. A commit record does not say it.
pub const WALREDO_ROUTE_COMMIT_TS: u32 = 1;

/// One SLRU page or relation map a record changes, and how. Fields that do
/// not apply to `change` are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct walredo_slru_change {
    /// `WALREDO_SLRU_SET` and the other `walredo_slru_change.change` values.
    pub change: u8,
    /// SET, ZERO: the page. TRUNCATE: the SLRU and the cut-off page.
    /// DELETE_SEGMENTS: the SLRU (`pageno` 0).
    pub page: walredo_slru_page,
    /// DELETE_SEGMENTS: the segments removed.
    pub from_segment: u64,
    pub to_segment: u64,
    /// RELMAP_WRITE: the map file.
    pub relmap: walredo_relmap,
    /// COMMIT_TS_SETTING: the new setting.
    pub commit_ts_active: bool,
}

fn slru_code(kind: SlruKind) -> u8 {
    match kind {
        SlruKind::Xact => WALREDO_SLRU_XACT,
        SlruKind::MultiXactOffsets => WALREDO_SLRU_MULTIXACT_OFFSETS,
        SlruKind::MultiXactMembers => WALREDO_SLRU_MULTIXACT_MEMBERS,
        SlruKind::CommitTs => WALREDO_SLRU_COMMIT_TS,
    }
}

pub(super) fn slru_page_of(p: &walredo_slru_page) -> Result<SlruPage, Error> {
    let kind = match p.slru {
        WALREDO_SLRU_XACT => SlruKind::Xact,
        WALREDO_SLRU_MULTIXACT_OFFSETS => SlruKind::MultiXactOffsets,
        WALREDO_SLRU_MULTIXACT_MEMBERS => SlruKind::MultiXactMembers,
        WALREDO_SLRU_COMMIT_TS => SlruKind::CommitTs,
        other => {
            return Err(invalid(format!(
                "slru {other} is not a WALREDO_SLRU_* value"
            )))
        }
    };
    Ok(SlruPage {
        kind,
        pageno: p.pageno,
    })
}

fn relmap_of(file: RelMapFile) -> walredo_relmap {
    match file {
        RelMapFile::Global => walredo_relmap {
            spcnode: crate::pg::slru::GLOBALTABLESPACE_ID,
            dbnode: 0,
        },
        RelMapFile::Database { spcnode, dbnode } => walredo_relmap { spcnode, dbnode },
    }
}

fn format_of(pg_version: u32) -> Result<SlruFormat, Error> {
    if xlog_page_magic(pg_version).is_none() {
        return Err(invalid(format!(
            "pg_version {pg_version} is not one of {}",
            supported_versions()
        )));
    }
    Ok(SlruFormat::of_version(pg_version))
}

fn entry(change: &SlruChange) -> walredo_slru_change {
    let mut e = walredo_slru_change {
        change: 0,
        page: walredo_slru_page { slru: 0, pageno: 0 },
        from_segment: 0,
        to_segment: 0,
        relmap: walredo_relmap {
            spcnode: 0,
            dbnode: 0,
        },
        commit_ts_active: false,
    };
    let page = |p: &SlruPage| walredo_slru_page {
        slru: slru_code(p.kind),
        pageno: p.pageno,
    };
    match change {
        SlruChange::Set(p) => (e.change, e.page) = (WALREDO_SLRU_SET, page(p)),
        SlruChange::Zero(p) => (e.change, e.page) = (WALREDO_SLRU_ZERO, page(p)),
        SlruChange::Truncate { kind, cutoff_page } => {
            e.change = WALREDO_SLRU_TRUNCATE;
            e.page = walredo_slru_page {
                slru: slru_code(*kind),
                pageno: *cutoff_page,
            };
        }
        SlruChange::DeleteSegments {
            kind,
            from_segment,
            to_segment,
        } => {
            e.change = WALREDO_SLRU_DELETE_SEGMENTS;
            e.page.slru = slru_code(*kind);
            (e.from_segment, e.to_segment) = (*from_segment, *to_segment);
        }
        SlruChange::RelMap(file) => (e.change, e.relmap) = (WALREDO_RELMAP_WRITE, relmap_of(*file)),
        SlruChange::CommitTsActive(on) => {
            (e.change, e.commit_ts_active) = (WALREDO_COMMIT_TS_SETTING, *on)
        }
    }
    e
}

/// The SLRU pages and relation maps the XLogRecord `record` (`len` bytes,
/// exactly its `xl_tot_len`) of PostgreSQL `pg_version` (14 to 18) changes,
/// each once, for a page server to index it under besides the relation
/// pages of `walredo_record_pages` (docs/slru.md has the table): a commit or
/// abort (prepared too) sets the `pg_xact` page of its transaction and of
/// each subtransaction, a commit also their `pg_commit_ts` pages when
/// `flags` has `WALREDO_ROUTE_COMMIT_TS`; a multixact's creation sets its
/// offsets page, the next multixact's, and each members page of its range;
/// the ZERO records zero a page; truncations, RelMap UPDATE and XLOG
/// PARAMETER_CHANGE are named as such. Any other record changes none.
///
/// `changes` has room for `capacity` entries (NULL allowed when `capacity`
/// is 0); `*count` is set to the number of changes. When that exceeds
/// `capacity` nothing is written and `WALREDO_BUFFER_TOO_SMALL` is returned
/// (a commit names one `pg_xact` page per 32768 subtransaction ids): call
/// again with `*count` entries. A record that fails the CRC or the
/// decoder's checks, or whose main data does not hold what it announces,
/// gives `WALREDO_MALFORMED_RECORD`. Reads only its arguments; thread-safe.
#[no_mangle]
pub unsafe extern "C" fn walredo_record_slru_changes(
    record: *const u8,
    len: usize,
    pg_version: u32,
    flags: u32,
    changes: *mut walredo_slru_change,
    capacity: usize,
    count: *mut usize,
) -> c_int {
    guard_status(|| {
        let format = format_of(pg_version)?;
        if flags & !WALREDO_ROUTE_COMMIT_TS != 0 {
            return Err(invalid(format!("unknown flags {flags:#x}")));
        }
        if record.is_null() {
            return Err(invalid("record is NULL"));
        }
        // SAFETY: NULL or a writable size_t (the caller's contract).
        let count = unsafe { out_arg(count, "count") }?;
        // SAFETY: room for `capacity` entries (the caller's contract).
        let entries = unsafe { out_slice_arg(changes, capacity, "changes", "capacity") }?;
        // SAFETY: `len` readable bytes (the caller's contract).
        let data = unsafe { slice_arg(record, len, "record", "len") }?;
        let found = record::decode_as(data, format.record_format())
            .and_then(|d| slru_changes(&d, format, flags & WALREDO_ROUTE_COMMIT_TS != 0))
            .map_err(|source| Error::MalformedRecord { index: 0, source })?;
        let too_many = |n| {
            format!("the record changes {n} SLRU pages or maps, the array has room for {capacity}")
        };
        Ok(fill_array(count, entries, &found, too_many, entry))
    })
}

/// Rebuild SLRU page `page` of PostgreSQL `pg_version`: apply `records` (in
/// LSN order, each one that `walredo_record_slru_changes` names as setting
/// or zeroing this page) to `base_page`, or to a page of zeros when it is
/// NULL (recovery reads a page whose segment file does not exist as
/// zeros), and write the page to `out_page`. The bytes are the ones
/// PostgreSQL's recovery leaves (`walredo verify` compares them). A commit
/// applied to a `pg_commit_ts` page writes its timestamp: pass commits for
/// such a page only where commit timestamps were active (as
/// `walredo_record_slru_changes` names the page only then).
///
/// - `page` and `out_page` must not be NULL; `out_page` has room for
///   `WALREDO_PAGE_SIZE` bytes and is written only on success.
/// - `base_page`: NULL or `WALREDO_PAGE_SIZE` readable bytes.
/// - `records`: `n_records` entries (NULL allowed when `n_records` is 0),
///   each `data` pointing to `len` bytes (at most 1 GiB); `end_lsn` is not
///   used (SLRU pages have no LSN).
///
/// A record that fails its checks gives `WALREDO_MALFORMED_RECORD`; one
/// that does not change this page, `WALREDO_INVALID_ARGUMENT` (its page
/// would be silently wrong). Reads only its arguments; thread-safe; no
/// process, no pool.
#[no_mangle]
pub unsafe extern "C" fn walredo_redo_slru(
    page: *const walredo_slru_page,
    pg_version: u32,
    base_page: *const u8,
    records: *const walredo_record,
    n_records: usize,
    out_page: *mut u8,
) -> c_int {
    guard(|| {
        let format = format_of(pg_version)?;
        // SAFETY: NULL or a valid walredo_slru_page (the caller's contract).
        let target = slru_page_of(unsafe { arg(page, "page") }?)?;
        // SAFETY: room for WALREDO_PAGE_SIZE bytes (the caller's contract).
        let out_page = unsafe { PageOut::new(out_page, "out_page") }?;
        // SAFETY: NULL or WALREDO_PAGE_SIZE readable bytes.
        let base = unsafe { page_arg(base_page) };
        // SAFETY: as records_arg says (the caller's contract).
        let refs = unsafe { records_arg(records, n_records) }?;
        let data: Vec<&[u8]> = refs.iter().map(|r| r.data).collect();
        let rebuilt = rebuild_slru_page(target, base, &data, format).map_err(
            |(index, source)| match source {
                record::RecordError::NotForSlruPage => {
                    invalid(format!("record #{index} does not change {target}"))
                }
                source => Error::MalformedRecord { index, source },
            },
        )?;
        out_page.write(&rebuilt);
        Ok(())
    })
}

/// The relation map file a RelMap UPDATE record of PostgreSQL `pg_version`
/// writes: which one (`*which`) and its bytes (`*size`: 512 in 14 and 15,
/// 524 from 16) into `out`, which has room for `capacity` bytes. The map is
/// checked as PostgreSQL checks a map file it reads (size, magic, number of
/// mappings, CRC-32C): a record that fails that or its own checks gives
/// `WALREDO_MALFORMED_RECORD`; a record of another kind,
/// `WALREDO_INVALID_ARGUMENT`. When `capacity` is too small, `*size` is
/// set and `WALREDO_BUFFER_TOO_SMALL` returned. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn walredo_relmap_from_record(
    record: *const u8,
    len: usize,
    pg_version: u32,
    which: *mut walredo_relmap,
    out: *mut u8,
    capacity: usize,
    size: *mut usize,
) -> c_int {
    guard_status(|| {
        let format = format_of(pg_version)?;
        if record.is_null() {
            return Err(invalid("record is NULL"));
        }
        // SAFETY: `len` readable bytes (the caller's contract).
        let data = unsafe { slice_arg(record, len, "record", "len") }?;
        // SAFETY: NULL or a writable walredo_relmap (the caller's contract).
        let which = unsafe { out_arg(which, "which") }?;
        // SAFETY: NULL or a writable size_t (the caller's contract).
        let size = unsafe { out_arg(size, "size") }?;
        // SAFETY: room for `capacity` bytes (the caller's contract).
        let bytes = unsafe { out_slice_arg(out, capacity, "out", "capacity") }?;
        let decoded = record::decode_as(data, format.record_format())
            .map_err(|source| Error::MalformedRecord { index: 0, source })?;
        let (file, map) = relmap_update(&decoded, format)
            .map_err(|source| Error::MalformedRecord { index: 0, source })?
            .ok_or_else(|| invalid("the record is not a RelMap UPDATE"))?;
        size.write(map.len());
        which.write(relmap_of(file));
        if map.len() > capacity {
            set_last_error(&format!(
                "the map is {} bytes, the buffer has room for {capacity}",
                map.len()
            ));
            return Ok(WALREDO_BUFFER_TOO_SMALL);
        }
        for (o, b) in bytes.iter_mut().zip(map) {
            o.write(*b);
        }
        Ok(WALREDO_OK)
    })
}
