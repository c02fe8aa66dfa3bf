//! `walredo_record_pages`: the pages one WAL record changes (built on
//! `crate::wal::pages`), for a page server to index the record under.

use std::ffi::c_int;

use super::pointers::{fill_array, out_arg, out_slice_arg, slice_arg};
use super::{guard_status, invalid, walredo_page_tag};
use crate::error::Error;
use crate::pg::record::RecordFormat;
use crate::pg::xlog::{supported_versions, xlog_page_magic};
use crate::wal::pages::{self, PageChange};
use crate::wal::record;

/// One page a record changes (from `walredo_record_pages`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct walredo_record_page {
    pub tag: walredo_page_tag,
    /// `WALREDO_CHANGE_BLOCK`, `WALREDO_CHANGE_VM_CLEAR` or
    /// `WALREDO_CHANGE_VM_TRUNCATE`.
    pub change: u8,
    /// The block reference's id (0 to 32), or `WALREDO_NO_BLOCK_ID`.
    pub block_id: u8,
    /// `BKPBLOCK_WILL_INIT` of the block reference.
    pub will_init: bool,
    /// The block reference carries an image (applicable or only for
    /// consistency checking).
    pub has_image: bool,
    /// The image is restored by redo (`BKPIMAGE_APPLY`).
    pub applies_image: bool,
    /// `will_init || applies_image`: replaying from this record needs no
    /// earlier version of the page.
    pub initializes: bool,
}

/// `walredo_record_page.change`: one of the record's block references.
pub const WALREDO_CHANGE_BLOCK: u8 = 0;
/// `walredo_record_page.change`: a visibility-map page whose bits heap redo
/// clears (the `*_ALL_VISIBLE_CLEARED` flags of insert, multi-insert,
/// update and delete; `XLH_LOCK_ALL_FROZEN_CLEARED` of lock and
/// lock-updated), without a block reference to it.
pub const WALREDO_CHANGE_VM_CLEAR: u8 = 1;
/// `walredo_record_page.change`: the visibility-map page a Storage TRUNCATE
/// cuts into (bits of the removed heap blocks cleared).
pub const WALREDO_CHANGE_VM_TRUNCATE: u8 = 2;

/// `walredo_record_page.block_id` of a page without a block reference.
pub const WALREDO_NO_BLOCK_ID: u8 = 255;

/// The pages the XLogRecord `record` (`len` bytes, exactly its
/// `xl_tot_len`) changes, which are the pages a page server must index it
/// under: its block references, in block-id order, then each
/// visibility-map page its heap changes clear or its truncation cuts into
/// that is not among them, each page once. Free-space-map pages are never
/// named (they are not WAL-logged). The SLRU pages (`pg_xact`, multixacts,
/// commit timestamps) and relation maps a record changes are named by
/// `walredo_record_slru_changes`.
///
/// `pages` has room for `capacity` entries (it may be NULL when `capacity`
/// is 0). `*count` is set to the number of pages the record changes (at
/// most 35). When that exceeds `capacity`, nothing is written and
/// `WALREDO_BUFFER_TOO_SMALL` is returned: call again with `*count`
/// entries. A record that fails the CRC or the checks of PostgreSQL's
/// decoder, or a heap or truncation record whose main data is too short for
/// the flags read, or that lacks the block reference they are about, gives
/// `WALREDO_MALFORMED_RECORD`. Reads only its arguments; thread-safe.
///
/// For records of PostgreSQL 15 to 18; `walredo_record_pages_for` names the
/// version (14's image flags differ).
#[no_mangle]
pub unsafe extern "C" fn walredo_record_pages(
    record: *const u8,
    len: usize,
    pages: *mut walredo_record_page,
    capacity: usize,
    count: *mut usize,
) -> c_int {
    // SAFETY: the caller's contract is this function's.
    unsafe { walredo_record_pages_for(record, len, pages, capacity, count, 15) }
}

/// `walredo_record_pages` for a record of PostgreSQL `pg_version` (14 to
/// 18; another is `WALREDO_INVALID_ARGUMENT`), given last.
#[no_mangle]
pub unsafe extern "C" fn walredo_record_pages_for(
    record: *const u8,
    len: usize,
    pages: *mut walredo_record_page,
    capacity: usize,
    count: *mut usize,
    pg_version: u32,
) -> c_int {
    guard_status(|| {
        if xlog_page_magic(pg_version).is_none() {
            return Err(invalid(format!(
                "pg_version {pg_version} is not one of {}",
                supported_versions()
            )));
        }
        let format = RecordFormat::of_version(pg_version);
        if record.is_null() {
            return Err(invalid("record is NULL"));
        }
        // SAFETY: NULL or a writable size_t (the caller's contract).
        let count = unsafe { out_arg(count, "count") }?;
        // SAFETY: room for `capacity` entries (the caller's contract).
        let entries = unsafe { out_slice_arg(pages, capacity, "pages", "capacity") }?;
        // SAFETY: `len` readable bytes (the caller's contract).
        let data = unsafe { slice_arg(record, len, "record", "len") }?;
        let found = record::decode_as(data, format)
            .and_then(|decoded| pages::record_pages(&decoded))
            .map_err(|source| Error::MalformedRecord { index: 0, source })?;
        let too_many =
            |n| format!("the record changes {n} pages, the array has room for {capacity}");
        Ok(fill_array(count, entries, &found, too_many, |p| {
            let (change, block_id) = match p.change {
                PageChange::Block { id, .. } => (WALREDO_CHANGE_BLOCK, id),
                PageChange::VmClear => (WALREDO_CHANGE_VM_CLEAR, WALREDO_NO_BLOCK_ID),
                PageChange::VmTruncate => (WALREDO_CHANGE_VM_TRUNCATE, WALREDO_NO_BLOCK_ID),
            };
            walredo_record_page {
                tag: walredo_page_tag::from(&p.tag),
                change,
                block_id,
                will_init: p.will_init(),
                has_image: p.has_image(),
                applies_image: p.applies_image(),
                initializes: p.initializes(),
            }
        }))
    })
}
