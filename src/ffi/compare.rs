//! `walredo_pages_match`: whether a page is what its WAL makes it, for a
//! caller holding the server's copy and the rebuilt one (built on
//! `crate::pg::mask`).

use std::ffi::c_int;

use super::pointers::{arg, out_arg};
use super::wal::page_tag;
use super::WALREDO_OK;
use super::{guard_status, walredo_page_tag};
use crate::pg::mask::same_page;
use crate::pg::page::Page;

/// Whether `a` and `b`, two copies of the block `tag` names
/// (`WALREDO_PAGE_SIZE` bytes each), hold the same page: equal once what
/// WAL replay does not reproduce is masked as PostgreSQL's
/// `wal_consistency_checking` masks it (the LSN, the checksum, hint bits, a
/// tuple's command id, unused space, ...), with the masks of the access
/// method the pages' layout says (heap, B-tree, hash, GiST, GIN, SP-GiST,
/// BRIN, sequence, generic), and what a server writes without WAL (a
/// sequence's values, an SP-GiST metapage's cache of last-used pages):
/// whether a server's page is what its WAL makes it. Visibility-map pages,
/// pages whose kind cannot be told (a new page, a damaged header) and pages
/// that look like different kinds match only when byte-identical but for
/// `pd_lsn` and `pd_checksum`. A page that fails its checksum may still
/// match: check that apart. `*matches` is set to 1 or 0. Errors:
/// `WALREDO_INVALID_ARGUMENT` for NULL or a fork above 3. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn walredo_pages_match(
    tag: *const walredo_page_tag,
    a: *const u8,
    b: *const u8,
    matches: *mut c_int,
) -> c_int {
    guard_status(|| {
        // SAFETY: NULL or a valid walredo_page_tag (the caller's contract).
        let tag = unsafe { page_tag(tag) }?;
        // SAFETY: NULL or WALREDO_PAGE_SIZE readable bytes (the caller's contract).
        let a = unsafe { arg(a.cast::<Page>(), "a") }?;
        // SAFETY: as `a`.
        let b = unsafe { arg(b.cast::<Page>(), "b") }?;
        // SAFETY: NULL or a writable int (the caller's contract).
        let matches = unsafe { out_arg(matches, "matches") }?;
        matches.write(c_int::from(same_page(a, b, tag.forknum, tag.blkno)));
        Ok(WALREDO_OK)
    })
}
