//! Masking what WAL replay does not reproduce, so that a page read from a
//! data directory (written by the primary) can be compared with the same
//! page rebuilt from WAL. These are the facts of PostgreSQL's `rm_mask`
//! functions, the ones `wal_consistency_checking` applies to both images:
//! the shared steps of access/common/bufmask.c and each resource manager's
//! own `*_mask`, written anew in one place.
//!
//! The masks are the same in PostgreSQL 14 to 18 (compared in the 14.13 and
//! 18.3 sources: only macro spellings changed, e.g. `BTPageGetOpaque`, and
//! heap_mask moved to heapam_xlog.c in 17), so nothing here takes a version.
//! The last change before 14 is gone with it: up to 13 btree_mask blanked a
//! deleted page's content; from 14 redo rebuilds deleted pages exactly and
//! the mask no longer does.
//!
//! PostgreSQL trusts the page it masks (mask_unused_space elogs on a header
//! whose offsets are out of order; line pointers and tuples are not checked).
//! Here nothing panics: a step whose bytes would lie outside the page, or
//! inside its header, is skipped, and everything else is masked as
//! PostgreSQL would. A new page (all-zero header) is left as it is, but for
//! its LSN and checksum, already zero.
//!
//! `MAXALIGN` is 8, as on every 64-bit platform PostgreSQL runs on.

use crate::pg::bytes::{le_u16, le_u32, put_u16, put_u32};
use crate::pg::page::{
    pd_flags, pd_lower, pd_special, pd_upper, Page, PAGE_SIZE, PD_ALL_VISIBLE, PD_CHECKSUM,
    PD_FLAGS, PD_HAS_FREE_LINES, PD_LOWER, PD_PAGE_FULL, PD_PRUNE_XID, PD_UPPER,
    SIZE_OF_PAGE_HEADER,
};
use crate::pg::rmgr::{
    RM_BRIN_ID, RM_BTREE_ID, RM_GENERIC_ID, RM_GIN_ID, RM_GIST_ID, RM_HASH_ID, RM_HEAP2_ID,
    RM_HEAP_ID, RM_SEQ_ID, RM_SPGIST_ID,
};
use crate::tag::VISIBILITYMAP_FORKNUM;

/// `MASK_MARKER` (access/bufmask.h): what masked bytes are set to.
const MASK_MARKER: u8 = 0;

/// Which of PostgreSQL's masks a page gets: the one of the resource manager
/// whose records change it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    /// `heap_mask`: HEAP and HEAP2 records.
    Heap,
    /// `btree_mask`.
    Btree,
    /// `hash_mask`.
    Hash,
    /// `gist_mask`.
    Gist,
    /// `gin_mask`.
    Gin,
    /// `spg_mask`.
    SpGist,
    /// `brin_mask`.
    Brin,
    /// `seq_mask`.
    Sequence,
    /// `generic_mask`: generic WAL records (contrib/bloom, extensions).
    Generic,
}

/// The kind whose mask PostgreSQL uses for a record of resource manager
/// `rmid` (`rm_mask` in access/rmgrlist.h); `None` for those without one
/// (XLOG, XACT, SMGR, CLOG, ...) and for ids it does not know.
pub fn kind_of_rmgr(rmid: u8) -> Option<PageKind> {
    Some(match rmid {
        RM_HEAP_ID | RM_HEAP2_ID => PageKind::Heap,
        RM_BTREE_ID => PageKind::Btree,
        RM_HASH_ID => PageKind::Hash,
        RM_GIN_ID => PageKind::Gin,
        RM_GIST_ID => PageKind::Gist,
        RM_SEQ_ID => PageKind::Sequence,
        RM_SPGIST_ID => PageKind::SpGist,
        RM_BRIN_ID => PageKind::Brin,
        RM_GENERIC_ID => PageKind::Generic,
        _ => return None,
    })
}

/// Mask `page` (block `blkno` of its relation) as PostgreSQL's mask for
/// `kind` does. Never panics, whatever the bytes.
pub fn mask_page(page: &mut Page, kind: PageKind, blkno: u32) {
    match kind {
        PageKind::Heap => heap_mask(page, blkno),
        PageKind::Btree => btree_mask(page),
        PageKind::Hash => hash_mask(page),
        PageKind::Gist => gist_mask(page),
        PageKind::Gin => gin_mask(page),
        PageKind::SpGist => spg_mask(page),
        PageKind::Brin => brin_mask(page),
        // seq_mask and generic_mask: LSN, checksum and the hole, nothing more
        // (not even the header's hint bits).
        PageKind::Sequence | PageKind::Generic => {
            mask_page_lsn_and_checksum(page);
            mask_unused_space(page);
        }
    }
}

/// Whether `a` and `b` are the same once both are masked (copies of them).
pub fn masked_equal(a: &Page, b: &Page, kind: PageKind, blkno: u32) -> bool {
    let (mut a, mut b) = (*a, *b);
    mask_page(&mut a, kind, blkno);
    mask_page(&mut b, kind, blkno);
    a == b
}

/// Where `a` and `b`, two copies of block `blkno` of fork `forknum`, differ
/// once masked with the mask their layout says ([`guess_kind`]): the first
/// differing byte, None when they hold the same page. The LSN is masked too,
/// as PostgreSQL masks it: pages written by bulk index builds keep a
/// placeholder LSN on disk that their full-page images in WAL do not have.
/// Visibility-map pages (whose layout looks like an empty heap page's),
/// pages whose kind cannot be told, or that look like different kinds, are
/// compared whole but for `pd_lsn` and `pd_checksum`.
pub fn masked_difference(a: &Page, b: &Page, forknum: u8, blkno: u32) -> Option<usize> {
    let (mut a, mut b) = (*a, *b);
    match (guess_kind(&a), guess_kind(&b)) {
        (Some(ka), Some(kb)) if ka == kb && forknum != VISIBILITYMAP_FORKNUM => {
            for page in [&mut a, &mut b] {
                mask_page(page, ka, blkno);
                mask_unlogged(page, ka);
            }
        }
        _ => {
            mask_page_lsn_and_checksum(&mut a);
            mask_page_lsn_and_checksum(&mut b);
        }
    }
    (0..PAGE_SIZE).find(|&i| a[i] != b[i])
}

/// What a server writes on a page without WAL, and which no
/// `wal_consistency_checking` comparison sees (it compares a page only right
/// after a record that changes it): a sequence's values, which on disk trail
/// the ones its WAL logs (32 ahead: `SEQ_LOG_VALS` in sequence.c), and the
/// cache of last-used pages on an SP-GiST metapage (a hint, spgutils.c).
/// Masked for comparing a server's page with the page its WAL makes.
fn mask_unlogged(page: &mut Page, kind: PageKind) {
    match kind {
        PageKind::Sequence if max_offset(page) >= 1 => {
            // FormData_pg_sequence_data: last_value, log_cnt, is_called.
            let item = item_id(page, 1);
            if item.flags == LP_NORMAL && item.off >= SIZE_OF_PAGE_HEADER {
                let t_hoff = item.off + T_HOFF;
                if t_hoff < PAGE_SIZE {
                    fill(page, item.off + page[t_hoff] as usize, 8 + 8 + 1);
                }
            }
        }
        PageKind::SpGist => {
            if let Some(at) = special(page, SPGIST_OPAQUE_SIZE) {
                if le_u16(page, at) & SPGIST_META != 0 {
                    // SpGistMetaPageData: magicNumber, then 8 cached pages.
                    fill(page, SIZE_OF_PAGE_HEADER + 4, 8 * 8);
                }
            }
        }
        _ => {}
    }
}

/// [`masked_difference`] is None: the same page.
pub fn same_page(a: &Page, b: &Page, forknum: u8, blkno: u32) -> bool {
    masked_difference(a, b, forknum, blkno).is_none()
}

/// Guess, from the page alone, which mask fits it: by the size of its special
/// space and the ids PostgreSQL (and pageinspect) tell index pages apart by.
/// `None` for a new page, a header whose offsets are out of order, or a
/// special space that fits nothing below.
///
/// - no special space: `Heap`. So do visibility-map and free-space-map pages,
///   and any page of a table AM or extension without one; only the fork and
///   the relation's access method can tell.
/// - 16 bytes: `Hash` (id 0xFF80 at its end) or `Gist` (0xFF81); otherwise
///   `Btree`, whose `btpo_cycleid` there never exceeds 0xFF7F
///   (`MAX_BT_CYCLE_ID`, kept below the ids for this very purpose). Another
///   extension's 16-byte special space would be taken for btree.
/// - 8 bytes: `SpGist` (id 0xFF82 at its end), `Generic` for bloom (0xFF83),
///   `Brin` (page type 0xF091..=0xF093 there), `Sequence` (magic 0x1717 in
///   its first word, then zeros, and exactly one line pointer), else `Gin`
///   when the last two bytes (GIN's `flags`) are a plausible flag set
///   (< 0x100). GIN has no id: an inner entry-tree page whose right sibling
///   is block 5911 (0x1717), with `maxoff` 0 and one item, would be taken
///   for a sequence, and any other extension's 8-byte special space whose
///   last two bytes are below 0x100 for GIN.
pub fn guess_kind(page: &Page) -> Option<PageKind> {
    let (lower, upper, special) = (
        pd_lower(page) as usize,
        pd_upper(page) as usize,
        pd_special(page) as usize,
    );
    // PageIsVerified's checks, and line pointers that start after the header.
    let sane = pd_flags(page) & !(PD_HAS_FREE_LINES | PD_PAGE_FULL | PD_ALL_VISIBLE) == 0
        && SIZE_OF_PAGE_HEADER <= lower
        && lower <= upper
        && upper <= special
        && special <= PAGE_SIZE
        && special % 8 == 0;
    if !sane {
        return None;
    }
    match PAGE_SIZE - special {
        0 => Some(PageKind::Heap),
        16 => match le_u16(page, special + 14) {
            HASHO_PAGE_ID => Some(PageKind::Hash),
            GIST_PAGE_ID => Some(PageKind::Gist),
            0..=MAX_BT_CYCLE_ID => Some(PageKind::Btree),
            _ => None,
        },
        8 => match le_u16(page, special + 6) {
            SPGIST_PAGE_ID => Some(PageKind::SpGist),
            BLOOM_PAGE_ID => Some(PageKind::Generic),
            BRIN_PAGETYPE_META..=BRIN_PAGETYPE_REGULAR => Some(PageKind::Brin),
            _ if le_u32(page, special) == SEQ_MAGIC
                && le_u32(page, special + 4) == 0
                && lower == SIZE_OF_PAGE_HEADER + ITEM_ID_SIZE =>
            {
                Some(PageKind::Sequence)
            }
            0..=0xFF => Some(PageKind::Gin),
            _ => None,
        },
        _ => None,
    }
}

// Line pointers (`ItemIdData`, storage/itemid.h): a 32-bit word, lp_off in
// bits 0-14, lp_flags in 15-16, lp_len in 17-31.
const ITEM_ID_SIZE: usize = 4;
const LP_UNUSED: u32 = 0;
const LP_NORMAL: u32 = 1;
const LP_FLAGS_MASK: u32 = 0b11 << 15;

struct ItemId {
    /// Where the item's word is in the page.
    at: usize,
    off: usize,
    flags: u32,
    len: usize,
}

fn item_id(page: &Page, offnum: usize) -> ItemId {
    let at = SIZE_OF_PAGE_HEADER + (offnum - 1) * ITEM_ID_SIZE;
    let word = le_u32(page, at);
    ItemId {
        at,
        off: (word & 0x7FFF) as usize,
        flags: (word >> 15) & 0b11,
        len: (word >> 17) as usize,
    }
}

/// `PageGetMaxOffsetNumber`, limited to the line pointers inside the page.
fn max_offset(page: &Page) -> usize {
    let lower = pd_lower(page) as usize;
    let count = lower.saturating_sub(SIZE_OF_PAGE_HEADER) / ITEM_ID_SIZE;
    count.min((PAGE_SIZE - SIZE_OF_PAGE_HEADER) / ITEM_ID_SIZE)
}

/// Set `len` bytes from `at` to MASK_MARKER, as far as the page goes.
fn fill(page: &mut Page, at: usize, len: usize) {
    let end = at.saturating_add(len).min(PAGE_SIZE);
    if at < end {
        page[at..end].fill(MASK_MARKER);
    }
}

/// Where the special space begins, when a `size`-byte structure there lies
/// between the header and the page's end (`PageGetSpecialPointer`).
fn special(page: &Page, size: usize) -> Option<usize> {
    let at = pd_special(page) as usize;
    (at >= SIZE_OF_PAGE_HEADER && at + size <= PAGE_SIZE).then_some(at)
}

// --- bufmask.c: the steps the masks share ---

/// mask_page_lsn_and_checksum: the LSN depends on when the page was last
/// written, and the checksum covers masked bytes.
fn mask_page_lsn_and_checksum(page: &mut Page) {
    fill(page, 0, 8);
    fill(page, PD_CHECKSUM, 2);
}

/// mask_page_hint_bits: pd_prune_xid and PD_PAGE_FULL / PD_HAS_FREE_LINES are
/// hints set without WAL; PD_ALL_VISIBLE is not set by redo when the page's
/// LSN is already past the record (heap_xlog_visible).
fn mask_page_hint_bits(page: &mut Page) {
    fill(page, PD_PRUNE_XID, 4);
    let flags = pd_flags(page) & !(PD_PAGE_FULL | PD_HAS_FREE_LINES | PD_ALL_VISIBLE);
    put_u16(page, PD_FLAGS, flags);
}

/// mask_unused_space: the hole between pd_lower and pd_upper is not
/// WAL-logged. Skipped (where PostgreSQL elogs) when the offsets are not in
/// order, which also covers a new page.
fn mask_unused_space(page: &mut Page) {
    let (lower, upper, special) = (
        pd_lower(page) as usize,
        pd_upper(page) as usize,
        pd_special(page) as usize,
    );
    if SIZE_OF_PAGE_HEADER <= lower && lower <= upper && upper <= special && special <= PAGE_SIZE {
        fill(page, lower, upper - lower);
    }
}

/// mask_lp_flags: index AMs set LP_DEAD on items without WAL; every used
/// line pointer becomes LP_UNUSED (offset and length stay).
fn mask_lp_flags(page: &mut Page) {
    for offnum in 1..=max_offset(page) {
        let item = item_id(page, offnum);
        if item.flags != LP_UNUSED {
            let word = le_u32(page, item.at) & !LP_FLAGS_MASK;
            put_u32(page, item.at, word);
        }
    }
}

/// mask_page_content: everything after the header, and pd_lower and
/// pd_upper, for pages whose content redo does not rebuild.
fn mask_page_content(page: &mut Page) {
    fill(page, SIZE_OF_PAGE_HEADER, PAGE_SIZE - SIZE_OF_PAGE_HEADER);
    fill(page, PD_LOWER, 2);
    fill(page, PD_UPPER, 2);
}

// --- heap_mask (heapam.c; heapam_xlog.c from PostgreSQL 17) ---

// HeapTupleHeaderData (access/htup_details.h): field offsets and bits.
const T_CID: usize = 8;
const T_CTID: usize = 12;
const T_INFOMASK: usize = 20;
const T_HOFF: usize = 22;
/// `SizeofHeapTupleHeader`: the fixed part, up to t_bits.
const SIZEOF_HEAP_TUPLE_HEADER: usize = 23;
const HEAP_XMIN_FROZEN: u16 = 0x0100 | 0x0200;
const HEAP_XMAX_COMMITTED: u16 = 0x0400;
const HEAP_XMAX_INVALID: u16 = 0x0800;
/// `HEAP_XACT_MASK`: the visibility bits of t_infomask.
const HEAP_XACT_MASK: u16 = 0xFFF0;
/// `SpecTokenOffsetNumber`: t_ctid's offset while it holds a speculative
/// insertion token.
const SPEC_TOKEN_OFFSET_NUMBER: u16 = 0xFFFE;

fn heap_mask(page: &mut Page, blkno: u32) {
    mask_page_lsn_and_checksum(page);
    mask_page_hint_bits(page);
    mask_unused_space(page);
    for offnum in 1..=max_offset(page) {
        let item = item_id(page, offnum);
        if item.off < SIZE_OF_PAGE_HEADER {
            continue; // not a tuple: masking it would write into the header
        }
        let t = item.off;
        if item.flags == LP_NORMAL && t + SIZEOF_HEAP_TUPLE_HEADER <= PAGE_SIZE {
            // heap_mask: infomask hint bits are set without WAL; of a frozen
            // xmin's tuple only the xmax hints are hints.
            let infomask = le_u16(page, t + T_INFOMASK);
            let infomask = if infomask & HEAP_XMIN_FROZEN != HEAP_XMIN_FROZEN {
                infomask & !HEAP_XACT_MASK
            } else {
                infomask & !(HEAP_XMAX_INVALID | HEAP_XMAX_COMMITTED)
            };
            put_u16(page, t + T_INFOMASK, infomask);
            // heap_mask: redo stores FirstCommandId as cmin/cmax (t_field3).
            fill(page, t + T_CID, 4);
            // heap_mask: a speculative insertion's token is not WAL-logged;
            // redo puts the tuple's own TID in t_ctid.
            if le_u16(page, t + T_CTID + 4) == SPEC_TOKEN_OFFSET_NUMBER {
                put_u16(page, t + T_CTID, (blkno >> 16) as u16);
                put_u16(page, t + T_CTID + 2, blkno as u16);
                put_u16(page, t + T_CTID + 4, offnum as u16);
            }
        }
        // heap_mask: the padding after an item whose length is not MAXALIGNed.
        if item.len != 0 {
            fill(page, t + item.len, item.len.next_multiple_of(8) - item.len);
        }
    }
}

// --- btree_mask (nbtxlog.c) ---

// BTPageOpaqueData (access/nbtree.h): btpo_prev, btpo_next, btpo_level,
// btpo_flags at 12, btpo_cycleid at 14.
const BT_OPAQUE_SIZE: usize = 16;
const BTP_LEAF: u16 = 1 << 0;
const BTP_SPLIT_END: u16 = 1 << 5;
const BTP_HAS_GARBAGE: u16 = 1 << 6;
const MAX_BT_CYCLE_ID: u16 = 0xFF7F;

fn btree_mask(page: &mut Page) {
    mask_page_lsn_and_checksum(page);
    mask_page_hint_bits(page);
    mask_unused_space(page);
    let Some(sp) = special(page, BT_OPAQUE_SIZE) else {
        return;
    };
    // btree_mask: leaf items get LP_DEAD without WAL (_bt_killitems).
    if le_u16(page, sp + 12) & BTP_LEAF != 0 {
        mask_lp_flags(page);
    }
    // btree_mask: BTP_HAS_GARBAGE is an unlogged hint; redo of a split sets
    // neither BTP_SPLIT_END nor the cycle id of the right page.
    let flags = le_u16(page, sp + 12) & !(BTP_HAS_GARBAGE | BTP_SPLIT_END);
    put_u16(page, sp + 12, flags);
    put_u16(page, sp + 14, 0);
}

// --- hash_mask (hash_xlog.c) ---

// HashPageOpaqueData (access/hash.h): hasho_flag at 12, hasho_page_id at 14.
const HASH_OPAQUE_SIZE: usize = 16;
const HASHO_PAGE_ID: u16 = 0xFF80;
const LH_UNUSED_PAGE: u16 = 0;
const LH_OVERFLOW_PAGE: u16 = 1 << 0;
const LH_BUCKET_PAGE: u16 = 1 << 1;
const LH_PAGE_TYPE: u16 = 0b1111;
const LH_PAGE_HAS_DEAD_TUPLES: u16 = 1 << 7;

fn hash_mask(page: &mut Page) {
    mask_page_lsn_and_checksum(page);
    mask_page_hint_bits(page);
    mask_unused_space(page);
    let Some(sp) = special(page, HASH_OPAQUE_SIZE) else {
        return;
    };
    match le_u16(page, sp + 12) & LH_PAGE_TYPE {
        // hash_mask: an unused page's content is not rebuilt by redo.
        LH_UNUSED_PAGE => mask_page_content(page),
        // hash_mask: bucket and overflow items get LP_DEAD without WAL.
        LH_BUCKET_PAGE | LH_OVERFLOW_PAGE => mask_lp_flags(page),
        _ => {}
    }
    // hash_mask: LH_PAGE_HAS_DEAD_TUPLES may stay unlogged.
    let flag = le_u16(page, sp + 12) & !LH_PAGE_HAS_DEAD_TUPLES;
    put_u16(page, sp + 12, flag);
}

// --- gist_mask (gistxlog.c) ---

// GISTPageOpaqueData (access/gist.h): nsn at 0 (8 bytes), rightlink, flags
// at 12, gist_page_id at 14.
const GIST_OPAQUE_SIZE: usize = 16;
const GIST_PAGE_ID: u16 = 0xFF81;
const F_LEAF: u16 = 1 << 0;
const F_FOLLOW_RIGHT: u16 = 1 << 3;
const F_HAS_GARBAGE: u16 = 1 << 4;

fn gist_mask(page: &mut Page) {
    mask_page_lsn_and_checksum(page);
    mask_page_hint_bits(page);
    mask_unused_space(page);
    let Some(sp) = special(page, GIST_OPAQUE_SIZE) else {
        return;
    };
    // gist_mask: the NSN is an LSN, masked like pd_lsn.
    fill(page, sp, 8);
    // gist_mask: F_FOLLOW_RIGHT is updated after the WAL record is written;
    // masked by setting it.
    let flags = le_u16(page, sp + 12) | F_FOLLOW_RIGHT;
    put_u16(page, sp + 12, flags);
    // gist_mask: leaf items get LP_DEAD without WAL (gistkillitems).
    if flags & F_LEAF != 0 {
        mask_lp_flags(page);
    }
    // gist_mask: redo never marks a page F_HAS_GARBAGE.
    let flags = le_u16(page, sp + 12) & !F_HAS_GARBAGE;
    put_u16(page, sp + 12, flags);
}

// --- gin_mask (ginxlog.c) ---

// GinPageOpaqueData (access/ginblock.h): rightlink, maxoff, flags at 6.
const GIN_OPAQUE_SIZE: usize = 8;
const GIN_DELETED: u16 = 1 << 2;

fn gin_mask(page: &mut Page) {
    mask_page_lsn_and_checksum(page);
    let deleted = special(page, GIN_OPAQUE_SIZE).map(|sp| le_u16(page, sp + 6) & GIN_DELETED != 0);
    mask_page_hint_bits(page);
    if deleted == Some(true) {
        // gin_mask: a deleted page is reinitialized empty by redo.
        mask_page_content(page);
    } else if pd_lower(page) as usize > SIZE_OF_PAGE_HEADER {
        // gin_mask: the hole, only if pd_lower looks set (pages written by
        // older versions, e.g. metapages, may leave it at the header's end).
        mask_unused_space(page);
    }
}

// --- spg_mask (spgxlog.c) ---

// SpGistPageOpaqueData (access/spgist_private.h): flags at 0,
// spgist_page_id at 6.
const SPGIST_OPAQUE_SIZE: usize = 8;
const SPGIST_META: u16 = 1 << 0;
const SPGIST_PAGE_ID: u16 = 0xFF82;

fn spg_mask(page: &mut Page) {
    mask_page_lsn_and_checksum(page);
    mask_page_hint_bits(page);
    // spg_mask: the hole, only if pd_lower looks set (>= the header's size,
    // which mask_unused_space checks anyway).
    mask_unused_space(page);
}

// --- brin_mask (brin_xlog.c) ---

// BrinSpecialSpace (access/brin_page.h): flags at 4, page type at 6.
const BRIN_SPECIAL_SIZE: usize = 8;
const BRIN_PAGETYPE_META: u16 = 0xF091;
const BRIN_PAGETYPE_REGULAR: u16 = 0xF093;
const BRIN_EVACUATE_PAGE: u16 = 1 << 0;

fn brin_mask(page: &mut Page) {
    mask_page_lsn_and_checksum(page);
    mask_page_hint_bits(page);
    let Some(sp) = special(page, BRIN_SPECIAL_SIZE) else {
        return;
    };
    // brin_mask: the hole of regular pages, and of the metapage if pd_lower
    // looks set; not of revmap pages.
    let page_type = le_u16(page, sp + 6);
    if page_type == BRIN_PAGETYPE_REGULAR
        || (page_type == BRIN_PAGETYPE_META && pd_lower(page) as usize > SIZE_OF_PAGE_HEADER)
    {
        mask_unused_space(page);
    }
    // brin_mask: BRIN_EVACUATE_PAGE is not WAL-logged.
    let flags = le_u16(page, sp + 4) & !BRIN_EVACUATE_PAGE;
    put_u16(page, sp + 4, flags);
}

// --- guess_kind only ---

/// `SEQ_MAGIC` (commands/sequence.c), the first word of a sequence page's
/// special space.
const SEQ_MAGIC: u32 = 0x1717;
/// `BLOOM_PAGE_ID` (contrib/bloom/bloom.h), whose pages are generic WAL's.
const BLOOM_PAGE_ID: u16 = 0xFF83;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::page::{set_pd_lsn, PD_SPECIAL};
    use crate::pg::rmgr::{
        RM_CLOG_ID, RM_COMMIT_TS_ID, RM_LOGICALMSG_ID, RM_SMGR_ID, RM_XACT_ID, RM_XLOG_ID,
    };
    use crate::tag::MAIN_FORKNUM;
    use crate::test_rng::Rng;

    const LP_REDIRECT: u32 = 2;
    const LP_DEAD: u32 = 3;
    const HEAP_XMIN_COMMITTED: u16 = 0x0100;
    const BLKNO: u32 = 7;

    /// A page as PageInit leaves it, with `special_size` bytes of special
    /// space.
    fn init_page(special_size: usize) -> Page {
        let mut p = [0u8; PAGE_SIZE];
        let special = (PAGE_SIZE - special_size) as u16;
        put_u16(&mut p, PD_LOWER, SIZE_OF_PAGE_HEADER as u16);
        put_u16(&mut p, PD_UPPER, special);
        put_u16(&mut p, PD_SPECIAL, special);
        put_u16(&mut p, 18, PAGE_SIZE as u16 | 4);
        p
    }

    /// Add `item` with line pointer flags `flags`, as PageAddItem does.
    fn add_item(p: &mut Page, flags: u32, item: &[u8]) {
        let lower = pd_lower(p) as usize;
        let upper = pd_upper(p) as usize - item.len().next_multiple_of(8);
        p[upper..upper + item.len()].copy_from_slice(item);
        put_u32(
            p,
            lower,
            upper as u32 | flags << 15 | (item.len() as u32) << 17,
        );
        put_u16(p, PD_LOWER, (lower + ITEM_ID_SIZE) as u16);
        put_u16(p, PD_UPPER, upper as u16);
    }

    /// Where item `offnum` is.
    fn item(p: &Page, offnum: usize) -> usize {
        item_id(p, offnum).off
    }

    fn set_lp_flags(p: &mut Page, offnum: usize, flags: u32) {
        let at = item_id(p, offnum).at;
        let word = le_u32(p, at) & !LP_FLAGS_MASK | flags << 15;
        put_u32(p, at, word);
    }

    fn or_u16(p: &mut Page, at: usize, bits: u16) {
        let v = le_u16(p, at) | bits;
        put_u16(p, at, v);
    }

    /// A heap tuple: xmin, t_ctid, t_infomask, one attribute, t_hoff 24.
    fn heap_tuple(xmin: u32, ctid: (u32, u16), infomask: u16, data: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; 24];
        put_u32(&mut t, 0, xmin);
        put_u16(&mut t, T_CTID, (ctid.0 >> 16) as u16);
        put_u16(&mut t, T_CTID + 2, ctid.0 as u16);
        put_u16(&mut t, T_CTID + 4, ctid.1);
        put_u16(&mut t, 18, 1); // t_infomask2: one attribute
        put_u16(&mut t, T_INFOMASK, infomask);
        t[22] = 24; // t_hoff
        t.extend_from_slice(data);
        t
    }

    /// Block 7 of a table: three tuples, the first two of unaligned length,
    /// the third frozen.
    fn heap_page() -> Page {
        let mut p = init_page(0);
        add_item(&mut p, LP_NORMAL, &heap_tuple(100, (BLKNO, 1), 0, b"alpha"));
        add_item(
            &mut p,
            LP_NORMAL,
            &heap_tuple(101, (BLKNO, 2), 0, b"bravo!"),
        );
        let frozen = heap_tuple(2, (BLKNO, 3), HEAP_XMIN_FROZEN, b"charlie!");
        add_item(&mut p, LP_NORMAL, &frozen);
        p
    }

    /// A page with `special_size` bytes of special space (`special` written
    /// at its start) and three 16-byte index tuples.
    fn index_page(special: &[u8], special_size: usize) -> Page {
        let mut p = init_page(special_size);
        let at = PAGE_SIZE - special_size;
        p[at..at + special.len()].copy_from_slice(special);
        for key in 1..=3u8 {
            let mut tuple = [key; 16];
            put_u16(&mut tuple, 6, 16); // t_info: the size
            add_item(&mut p, LP_NORMAL, &tuple);
        }
        p
    }

    /// BTPageOpaqueData: siblings 3 and 9, `level`, `flags`, cycle id 0.
    fn btree_page(level: u32, flags: u16) -> Page {
        let mut s = [0u8; 16];
        put_u32(&mut s, 0, 3);
        put_u32(&mut s, 4, 9);
        put_u32(&mut s, 8, level);
        put_u16(&mut s, 12, flags);
        index_page(&s, 16)
    }

    fn hash_page(flag: u16) -> Page {
        let mut s = [0u8; 16];
        put_u32(&mut s, 8, 5); // hasho_bucket
        put_u16(&mut s, 12, flag);
        put_u16(&mut s, 14, HASHO_PAGE_ID);
        index_page(&s, 16)
    }

    fn gist_page(flags: u16) -> Page {
        let mut s = [0u8; 16];
        put_u32(&mut s, 8, u32::MAX); // rightlink: none
        put_u16(&mut s, 12, flags);
        put_u16(&mut s, 14, GIST_PAGE_ID);
        index_page(&s, 16)
    }

    fn gin_page(flags: u16) -> Page {
        let mut s = [0u8; 8];
        put_u32(&mut s, 0, u32::MAX);
        put_u16(&mut s, 6, flags);
        index_page(&s, 8)
    }

    fn spgist_page() -> Page {
        let mut s = [0u8; 8];
        put_u16(&mut s, 0, 1 << 2); // SPGIST_LEAF
        put_u16(&mut s, 6, SPGIST_PAGE_ID);
        index_page(&s, 8)
    }

    fn brin_page(page_type: u16) -> Page {
        let mut s = [0u8; 8];
        put_u16(&mut s, 6, page_type);
        index_page(&s, 8)
    }

    fn bloom_page() -> Page {
        let mut s = [0u8; 8];
        put_u16(&mut s, 0, 3); // maxoff
        put_u16(&mut s, 6, BLOOM_PAGE_ID);
        index_page(&s, 8)
    }

    /// A sequence's only page: the magic, one tuple.
    fn sequence_page() -> Page {
        let mut p = init_page(8);
        put_u32(&mut p, PAGE_SIZE - 8, SEQ_MAGIC);
        let tuple = heap_tuple(2, (0, 1), HEAP_XMIN_FROZEN, &[1; 17]);
        add_item(&mut p, LP_NORMAL, &tuple);
        p
    }

    /// Every synthetic page, with its kind.
    fn all_pages() -> Vec<(PageKind, Page)> {
        vec![
            (PageKind::Heap, heap_page()),
            (PageKind::Btree, btree_page(0, BTP_LEAF)),
            (PageKind::Btree, btree_page(1, 0)),
            (PageKind::Hash, hash_page(LH_BUCKET_PAGE)),
            (PageKind::Gist, gist_page(F_LEAF)),
            (PageKind::Gin, gin_page(2)),
            (PageKind::SpGist, spgist_page()),
            (PageKind::Brin, brin_page(BRIN_PAGETYPE_REGULAR)),
            (PageKind::Sequence, sequence_page()),
            (PageKind::Generic, bloom_page()),
        ]
    }

    /// What every mask ignores: the LSN, the checksum, the hole.
    fn touch_lsn_checksum_hole(p: &mut Page) {
        set_pd_lsn(p, 0x0000_0001_2345_6789);
        put_u16(p, PD_CHECKSUM, 0xBEEF);
        let (lower, upper) = (pd_lower(p) as usize, pd_upper(p) as usize);
        p[lower..upper].fill(0xAA);
    }

    /// What mask_page_hint_bits ignores.
    fn touch_header_hints(p: &mut Page) {
        put_u32(p, PD_PRUNE_XID, 555);
        or_u16(
            p,
            PD_FLAGS,
            PD_ALL_VISIBLE | PD_PAGE_FULL | PD_HAS_FREE_LINES,
        );
    }

    /// A change made to a page.
    type Change = fn(&mut Page);

    /// `change` must survive masking: `page` and the changed copy differ.
    fn assert_differs(page: &Page, kind: PageKind, what: &str, change: Change) {
        let mut other = *page;
        change(&mut other);
        assert_ne!(page, &other, "{what}: the change changed nothing");
        assert!(
            !masked_equal(page, &other, kind, BLKNO),
            "{what} was masked"
        );
    }

    #[test]
    fn a_servers_unlogged_writes_are_not_differences() {
        // A sequence's values trail its WAL's: not compared; its magic is.
        let a = sequence_page();
        let mut b = a;
        let data = pd_upper(&a) as usize + 24;
        b[data] = 33; // last_value
        b[data + 8] = 32; // log_cnt
        assert!(same_page(&a, &b, MAIN_FORKNUM, 0));
        assert!(
            !masked_equal(&a, &b, PageKind::Sequence, 0),
            "seq_mask keeps them"
        );
        b[PAGE_SIZE - 8] ^= 1;
        assert!(!same_page(&a, &b, MAIN_FORKNUM, 0));
        // An SP-GiST metapage's cache of last-used pages is a hint.
        let mut s = [0u8; 8];
        put_u16(&mut s, 0, SPGIST_META);
        put_u16(&mut s, 6, SPGIST_PAGE_ID);
        let meta = index_page(&s, 8);
        let mut cached = meta;
        cached[SIZE_OF_PAGE_HEADER + 4 + 8] = 7;
        assert!(same_page(&meta, &cached, MAIN_FORKNUM, 0));
        cached[SIZE_OF_PAGE_HEADER] ^= 1; // the magic number
        assert!(!same_page(&meta, &cached, MAIN_FORKNUM, 0));
        // On another SP-GiST page the same bytes (line pointers) count.
        put_u16(&mut s, 0, 1 << 2); // SPGIST_LEAF
        let mut leaf = index_page(&s, 8);
        put_u16(&mut leaf, PD_LOWER, 128);
        let mut other = leaf;
        other[SIZE_OF_PAGE_HEADER + 4 + 8] ^= 1;
        assert!(masked_difference(&leaf, &other, MAIN_FORKNUM, 0).is_some());
    }

    #[test]
    fn same_page_masks_the_lsn_and_reads_visibility_maps_whole() {
        let a = heap_page();
        let mut b = a;
        touch_header_hints(&mut b);
        assert!(same_page(&a, &b, MAIN_FORKNUM, 3));
        // Only the LSN differs: the same page (a bulk-built index page on
        // disk keeps a placeholder LSN).
        let mut older = a;
        older[7] ^= 1;
        assert!(same_page(&a, &older, MAIN_FORKNUM, 3));
        // A tuple's first data byte (after its 24-byte header) is compared.
        let data = pd_upper(&a) as usize + 24;
        older[data] ^= 1;
        assert_eq!(masked_difference(&a, &older, MAIN_FORKNUM, 3), Some(data));
        // A visibility-map page is all "unused space" to a heap mask: its
        // bits are compared as they are, but for the checksum.
        let vm = init_page(0);
        let mut bits = vm;
        bits[100] = 0x03;
        assert!(same_page(&vm, &bits, MAIN_FORKNUM, 0));
        assert!(!same_page(&vm, &bits, VISIBILITYMAP_FORKNUM, 0));
        bits[100] = 0;
        bits[PD_CHECKSUM] = 0x55;
        assert!(same_page(&vm, &bits, VISIBILITYMAP_FORKNUM, 0));
    }

    #[test]
    fn heap_masks_hints_cid_and_padding() {
        let a = heap_page();
        let mut b = a;
        touch_lsn_checksum_hole(&mut b);
        touch_header_hints(&mut b);
        let (t1, t3) = (item(&b, 1), item(&b, 3));
        or_u16(
            &mut b,
            t1 + T_INFOMASK,
            HEAP_XMIN_COMMITTED | HEAP_XMAX_INVALID,
        );
        put_u32(&mut b, t1 + T_CID, 3);
        // A frozen tuple's xmax hints are still hints.
        or_u16(
            &mut b,
            t3 + T_INFOMASK,
            HEAP_XMAX_INVALID | HEAP_XMAX_COMMITTED,
        );
        // The padding after the first tuple (29 bytes, aligned to 32).
        b[t1 + 29..t1 + 32].fill(0xCC);
        assert_ne!(a, b);
        assert!(masked_equal(&a, &b, PageKind::Heap, BLKNO));
    }

    #[test]
    fn heap_keeps_data_xids_and_line_pointers() {
        let a = heap_page();
        let cases: [(&str, Change); 7] = [
            ("a data byte", |p| p[item(p, 2) + 24] ^= 1),
            ("xmin", |p| {
                let t = item(p, 1);
                put_u32(p, t, 999)
            }),
            ("xmax", |p| {
                let t = item(p, 1);
                put_u32(p, t + 4, 999)
            }),
            ("LP_NORMAL to LP_UNUSED", |p| set_lp_flags(p, 2, LP_UNUSED)),
            ("LP_NORMAL to LP_DEAD", |p| set_lp_flags(p, 2, LP_DEAD)),
            ("frozen xmin to committed", |p| {
                let t = item(p, 3);
                put_u16(p, t + T_INFOMASK, HEAP_XMIN_COMMITTED)
            }),
            ("t_ctid", |p| {
                let t = item(p, 1);
                put_u16(p, t + T_CTID + 4, 2)
            }),
        ];
        for (what, change) in cases {
            assert_differs(&a, PageKind::Heap, what, change);
        }
    }

    #[test]
    fn heap_masks_speculative_token() {
        // The primary's tuple holds a token in t_ctid; redo puts its own TID.
        let mut primary = init_page(0);
        let token = heap_tuple(100, (0x0012_3456, SPEC_TOKEN_OFFSET_NUMBER), 0, b"x");
        add_item(
            &mut primary,
            LP_NORMAL,
            &heap_tuple(99, (BLKNO, 1), 0, b"w"),
        );
        add_item(&mut primary, LP_NORMAL, &token);
        let mut replayed = init_page(0);
        add_item(
            &mut replayed,
            LP_NORMAL,
            &heap_tuple(99, (BLKNO, 1), 0, b"w"),
        );
        add_item(
            &mut replayed,
            LP_NORMAL,
            &heap_tuple(100, (BLKNO, 2), 0, b"x"),
        );
        assert!(masked_equal(&primary, &replayed, PageKind::Heap, BLKNO));
        assert!(!masked_equal(
            &primary,
            &replayed,
            PageKind::Heap,
            BLKNO + 1
        ));
    }

    #[test]
    fn btree_masks_leaf_hints() {
        let a = btree_page(0, BTP_LEAF);
        let mut b = a;
        touch_lsn_checksum_hole(&mut b);
        touch_header_hints(&mut b);
        set_lp_flags(&mut b, 2, LP_DEAD);
        or_u16(&mut b, PAGE_SIZE - 4, BTP_HAS_GARBAGE | BTP_SPLIT_END);
        put_u16(&mut b, PAGE_SIZE - 2, 0x42);
        assert!(masked_equal(&a, &b, PageKind::Btree, BLKNO));
        assert_differs(&a, PageKind::Btree, "a key byte", |p| {
            p[item(p, 3) + 8] ^= 1
        });
        assert_differs(&a, PageKind::Btree, "btpo_next", |p| p[PAGE_SIZE - 12] ^= 1);
        assert_differs(&a, PageKind::Btree, "BTP_HALF_DEAD", |p| {
            p[PAGE_SIZE - 4] |= 16
        });
        // On an internal page the line pointer flags count.
        let internal = btree_page(1, 0);
        assert_differs(&internal, PageKind::Btree, "LP_DEAD", |p| {
            set_lp_flags(p, 2, LP_DEAD)
        });
    }

    #[test]
    fn hash_masks_hints_and_unused_pages() {
        let a = hash_page(LH_BUCKET_PAGE);
        let mut b = a;
        touch_lsn_checksum_hole(&mut b);
        touch_header_hints(&mut b);
        set_lp_flags(&mut b, 1, LP_DEAD);
        or_u16(&mut b, PAGE_SIZE - 4, LH_PAGE_HAS_DEAD_TUPLES);
        assert!(masked_equal(&a, &b, PageKind::Hash, BLKNO));
        assert_differs(&a, PageKind::Hash, "a key byte", |p| p[item(p, 1) + 8] ^= 1);
        // An unused page's content is ignored; a bitmap page's is not.
        let unused = hash_page(LH_UNUSED_PAGE);
        let mut other = unused;
        other[100..200].fill(7);
        set_lp_flags(&mut other, 3, LP_REDIRECT);
        assert!(masked_equal(&unused, &other, PageKind::Hash, BLKNO));
        let bitmap = hash_page(1 << 2);
        assert_differs(&bitmap, PageKind::Hash, "content", |p| {
            p[item(p, 1) + 8] ^= 1
        });
        assert_differs(&bitmap, PageKind::Hash, "LP_DEAD", |p| {
            set_lp_flags(p, 1, LP_DEAD)
        });
    }

    #[test]
    fn gist_masks_nsn_follow_right_garbage() {
        let a = gist_page(F_LEAF);
        let mut b = a;
        touch_lsn_checksum_hole(&mut b);
        touch_header_hints(&mut b);
        put_u32(&mut b, PAGE_SIZE - 16, 1);
        put_u32(&mut b, PAGE_SIZE - 12, 0x1234);
        or_u16(&mut b, PAGE_SIZE - 4, F_FOLLOW_RIGHT | F_HAS_GARBAGE);
        set_lp_flags(&mut b, 3, LP_DEAD);
        assert!(masked_equal(&a, &b, PageKind::Gist, BLKNO));
        assert_differs(&a, PageKind::Gist, "F_DELETED", |p| p[PAGE_SIZE - 4] |= 2);
        assert_differs(&a, PageKind::Gist, "rightlink", |p| p[PAGE_SIZE - 8] ^= 1);
    }

    #[test]
    fn gin_masks_deleted_pages_and_the_hole() {
        let a = gin_page(2);
        let mut b = a;
        touch_lsn_checksum_hole(&mut b);
        touch_header_hints(&mut b);
        assert!(masked_equal(&a, &b, PageKind::Gin, BLKNO));
        assert_differs(&a, PageKind::Gin, "a key byte", |p| p[item(p, 2) + 8] ^= 1);
        assert_differs(&a, PageKind::Gin, "LP_DEAD", |p| {
            set_lp_flags(p, 2, LP_DEAD)
        });
        // A deleted page: only the header counts.
        let deleted = gin_page(GIN_DELETED | 2);
        let mut other = deleted;
        other[SIZE_OF_PAGE_HEADER..PAGE_SIZE - 8].fill(9);
        assert!(masked_equal(&deleted, &other, PageKind::Gin, BLKNO));
        // pd_lower at the header's end: the hole is not masked.
        let mut meta = init_page(8);
        put_u16(&mut meta, PAGE_SIZE - 2, 8); // GIN_META
        assert_differs(&meta, PageKind::Gin, "the hole", |p| p[100] = 1);
    }

    #[test]
    fn spgist_brin_sequence_generic() {
        for (kind, page) in [
            (PageKind::SpGist, spgist_page()),
            (PageKind::Brin, brin_page(BRIN_PAGETYPE_REGULAR)),
        ] {
            let mut b = page;
            touch_lsn_checksum_hole(&mut b);
            touch_header_hints(&mut b);
            assert!(masked_equal(&page, &b, kind, BLKNO), "{kind:?}");
            assert_differs(&page, kind, "a byte", |p| p[item(p, 2) + 8] ^= 1);
        }
        let brin = brin_page(BRIN_PAGETYPE_REGULAR);
        let mut evacuating = brin;
        or_u16(&mut evacuating, PAGE_SIZE - 4, BRIN_EVACUATE_PAGE);
        assert!(masked_equal(&brin, &evacuating, PageKind::Brin, BLKNO));
        // A revmap page's hole is not masked.
        let revmap = brin_page(0xF092);
        assert_differs(&revmap, PageKind::Brin, "the hole", |p| p[200] = 1);
        // seq_mask and generic_mask: LSN, checksum, hole; not the hints.
        for (kind, page) in [
            (PageKind::Sequence, sequence_page()),
            (PageKind::Generic, bloom_page()),
        ] {
            let mut b = page;
            touch_lsn_checksum_hole(&mut b);
            assert!(masked_equal(&page, &b, kind, BLKNO), "{kind:?}");
            assert_differs(&page, kind, "pd_prune_xid", |p| put_u32(p, PD_PRUNE_XID, 5));
            assert_differs(&page, kind, "PD_ALL_VISIBLE", |p| or_u16(p, PD_FLAGS, 4));
        }
    }

    #[test]
    fn masks_are_idempotent() {
        for (kind, page) in all_pages() {
            let mut once = page;
            mask_page(&mut once, kind, BLKNO);
            let mut twice = once;
            mask_page(&mut twice, kind, BLKNO);
            assert_eq!(once, twice, "{kind:?}");
        }
    }

    #[test]
    fn guesses_kinds() {
        for (kind, page) in all_pages() {
            assert_eq!(guess_kind(&page), Some(kind), "{kind:?}");
        }
        let (unused, meta, revmap) = (hash_page(0), init_page(8), brin_page(0xF092));
        assert_eq!(guess_kind(&unused), Some(PageKind::Hash));
        assert_eq!(guess_kind(&meta), Some(PageKind::Gin));
        assert_eq!(guess_kind(&revmap), Some(PageKind::Brin));
        let mut odd = btree_page(0, BTP_LEAF);
        put_u16(&mut odd, PAGE_SIZE - 2, 0xFF90);
        assert_eq!(guess_kind(&odd), None, "no such 16-byte special id");
        assert_eq!(guess_kind(&init_page(24)), None, "no such special size");
        assert_eq!(guess_kind(&[0; PAGE_SIZE]), None, "a new page");
        assert_eq!(guess_kind(&[0xAB; PAGE_SIZE]), None, "garbage");
    }

    #[test]
    fn kinds_of_rmgrs() {
        assert_eq!(kind_of_rmgr(RM_HEAP_ID), Some(PageKind::Heap));
        assert_eq!(kind_of_rmgr(RM_HEAP2_ID), Some(PageKind::Heap));
        assert_eq!(kind_of_rmgr(RM_BTREE_ID), Some(PageKind::Btree));
        assert_eq!(kind_of_rmgr(RM_HASH_ID), Some(PageKind::Hash));
        assert_eq!(kind_of_rmgr(RM_GIN_ID), Some(PageKind::Gin));
        assert_eq!(kind_of_rmgr(RM_GIST_ID), Some(PageKind::Gist));
        assert_eq!(kind_of_rmgr(RM_SEQ_ID), Some(PageKind::Sequence));
        assert_eq!(kind_of_rmgr(RM_SPGIST_ID), Some(PageKind::SpGist));
        assert_eq!(kind_of_rmgr(RM_BRIN_ID), Some(PageKind::Brin));
        assert_eq!(kind_of_rmgr(RM_GENERIC_ID), Some(PageKind::Generic));
        for rmid in [
            RM_XLOG_ID,
            RM_XACT_ID,
            RM_SMGR_ID,
            RM_CLOG_ID,
            RM_COMMIT_TS_ID,
            RM_LOGICALMSG_ID,
            200,
        ] {
            assert_eq!(kind_of_rmgr(rmid), None, "{rmid}");
        }
    }

    const ALL_KINDS: [PageKind; 9] = [
        PageKind::Heap,
        PageKind::Btree,
        PageKind::Hash,
        PageKind::Gist,
        PageKind::Gin,
        PageKind::SpGist,
        PageKind::Brin,
        PageKind::Sequence,
        PageKind::Generic,
    ];

    #[test]
    fn new_page_stays_zero() {
        for kind in ALL_KINDS {
            let mut p = [0u8; PAGE_SIZE];
            mask_page(&mut p, kind, BLKNO);
            assert!(p.iter().all(|&b| b == 0), "{kind:?}");
        }
    }

    #[test]
    fn damaged_pages_do_not_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..3000 {
            let mut page = [0u8; PAGE_SIZE];
            for chunk in page.chunks_exact_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
            // Mostly headers near the edges, so that the later steps run.
            if round % 3 != 0 {
                let special = [PAGE_SIZE, PAGE_SIZE - 8, PAGE_SIZE - 16, 8190, 20, 9000]
                    [rng.below(6) as usize] as u16;
                let lower = rng.below(PAGE_SIZE as u64 + 200) as u16;
                let upper = lower.saturating_add(rng.below(9000) as u16);
                put_u16(&mut page, PD_LOWER, lower);
                put_u16(&mut page, PD_UPPER, upper);
                put_u16(&mut page, PD_SPECIAL, special);
            }
            // Some line pointers at the page's end, with long lengths.
            if round % 2 == 0 {
                for offnum in 1..=max_offset(&page).min(64) {
                    let off = PAGE_SIZE as u32 - rng.below(40) as u32;
                    let word = off & 0x7FFF | (rng.below(4) as u32) << 15 | 0x7FFF << 17;
                    let at = item_id(&page, offnum).at;
                    put_u32(&mut page, at, word);
                }
            }
            let _ = guess_kind(&page);
            for kind in ALL_KINDS {
                let mut masked = page;
                mask_page(&mut masked, kind, rng.next() as u32);
                assert!(masked_equal(&page, &page, kind, BLKNO));
            }
        }
    }
}
