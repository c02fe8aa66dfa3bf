//! Which pages a record changes: the set of pages a page server must index
//! the record under, so that replaying each page's records gives the page
//! PostgreSQL's recovery produces.
//!
//! That is the record's block references, plus the visibility-map pages
//! that heap redo changes without a block reference to them (heapam.c, PostgreSQL 15 to 18):
//! - Heap INSERT, DELETE, UPDATE, HOT_UPDATE and Heap2 MULTI_INSERT clear
//!   both bits of their heap block(s) when their `*_ALL_VISIBLE_CLEARED`
//!   flag is set (an update has one flag for its old block, block
//!   reference 1 or the new block when there is none, and one for its new
//!   block, reference 0);
//! - Heap LOCK and Heap2 LOCK_UPDATED clear the all-frozen bit of block 0
//!   with `XLH_LOCK_ALL_FROZEN_CLEARED`;
//! - Storage TRUNCATE with `SMGR_TRUNCATE_VM` clears, in the
//!   visibility-map page holding the new last heap block, the bits of every
//!   heap block past it (`visibilitymap_prepare_truncate`), unless the cut
//!   falls on a page boundary.
//!
//! Heap2 VISIBLE names its visibility-map page as block 0 already. Free-space
//! map pages, which heap redo updates too, are left out: the free-space map
//! is not WAL-logged and is only a hint (PostgreSQL's recovery may leave
//! it different from the primary's).
//!
//! A heap record whose main data is too short for the fields read here, or
//! that lacks the block reference a flag is about, is refused: PostgreSQL's
//! redo would read past the record.

use crate::pg::bytes::le_u32;
use crate::pg::record::XLR_RMGR_INFO_MASK;
use crate::pg::record_type::{
    XLOG_HEAP2_LOCK_UPDATED, XLOG_HEAP2_MULTI_INSERT, XLOG_HEAP_DELETE, XLOG_HEAP_HOT_UPDATE,
    XLOG_HEAP_INSERT, XLOG_HEAP_LOCK, XLOG_HEAP_OPMASK, XLOG_HEAP_UPDATE, XLOG_SMGR_TRUNCATE,
};
use crate::pg::rmgr::{RM_HEAP2_ID, RM_HEAP_ID, RM_SMGR_ID};
use crate::tag::{PageTag, RelFileNode, VISIBILITYMAP_FORKNUM};
use crate::wal::record::{self, BlockRef, DecodedRecord, RecordError};
use crate::PAGE_SIZE;

/// Heap blocks per visibility-map page: two bits each, after the page
/// header (`HEAPBLOCKS_PER_PAGE` of visibilitymap.c).
pub const VM_HEAPBLOCKS_PER_PAGE: u32 = ((PAGE_SIZE - 24) * 4) as u32;

/// Whether a page that does not exist yet (its fork is shorter, or absent)
/// starts as a zero page for redo: a visibility-map page. PostgreSQL's
/// recovery extends the visibility map with zero pages when a record needs
/// one (`vm_extend`, `XLogReadBufferExtended`) and initializes them on
/// first use; a base page of zeros gives the same page. Any other page
/// must come from a base page or a record that initializes it.
pub fn starts_as_zero_page(tag: &PageTag) -> bool {
    tag.forknum == VISIBILITYMAP_FORKNUM
}

/// The visibility-map block holding `heap_blkno`'s bits.
pub fn vm_block(heap_blkno: u32) -> u32 {
    heap_blkno / VM_HEAPBLOCKS_PER_PAGE
}

const XLH_INSERT_ALL_VISIBLE_CLEARED: u8 = 1 << 0;
const XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED: u8 = 1 << 0;
const XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED: u8 = 1 << 1;
const XLH_DELETE_ALL_VISIBLE_CLEARED: u8 = 1 << 0;
const XLH_LOCK_ALL_FROZEN_CLEARED: u8 = 0x01;
/// `xl_smgr_truncate.flags`: the visibility map is truncated too.
pub(crate) const SMGR_TRUNCATE_VM: u32 = 0x0002;
/// `sizeof(xl_smgr_truncate)`: blkno, RelFileNode, int flags.
const SIZE_OF_SMGR_TRUNCATE: usize = 20;

/// How a record changes one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageChange {
    /// Block reference `id` of the record.
    Block {
        id: u8,
        /// `BKPBLOCK_WILL_INIT`.
        will_init: bool,
        /// The record carries an image of the page (applicable or not).
        has_image: bool,
        /// The image is restored by redo (`BKPIMAGE_APPLY`).
        applies_image: bool,
    },
    /// A visibility-map page whose bits heap redo clears for a heap block
    /// of the record.
    VmClear,
    /// The visibility-map page a relation truncation cuts into.
    VmTruncate,
}

/// One page a record changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPage {
    pub tag: PageTag,
    pub change: PageChange,
}

impl RecordPage {
    /// Replaying the record needs no earlier version of the page.
    pub fn initializes(&self) -> bool {
        match self.change {
            PageChange::Block {
                will_init,
                applies_image,
                ..
            } => will_init || applies_image,
            PageChange::VmClear | PageChange::VmTruncate => false,
        }
    }

    /// A block reference that carries an image (applicable or not).
    pub fn has_image(&self) -> bool {
        matches!(
            self.change,
            PageChange::Block {
                has_image: true,
                ..
            }
        )
    }

    /// A block reference whose image redo restores (`BKPIMAGE_APPLY`).
    pub fn applies_image(&self) -> bool {
        matches!(
            self.change,
            PageChange::Block {
                applies_image: true,
                ..
            }
        )
    }

    /// `BKPBLOCK_WILL_INIT`.
    pub fn will_init(&self) -> bool {
        matches!(
            self.change,
            PageChange::Block {
                will_init: true,
                ..
            }
        )
    }

    /// Changed as a side effect, without a block reference.
    pub fn is_side_effect(&self) -> bool {
        !matches!(self.change, PageChange::Block { .. })
    }
}

/// Decode `buf` (one XLogRecord, CRC checked) and return the pages it changes.
pub fn record_pages_of(buf: &[u8]) -> Result<Vec<RecordPage>, RecordError> {
    record_pages(&record::decode(buf)?)
}

/// The pages a decoded record changes: its block references in block-id
/// order, then the visibility-map pages its heap changes clear that are not
/// among them, each page once.
pub fn record_pages(decoded: &DecodedRecord<'_>) -> Result<Vec<RecordPage>, RecordError> {
    let mut pages = Vec::new();
    record_pages_into(decoded, &mut pages)?;
    Ok(pages)
}

/// [`record_pages`] into `pages` (cleared first): a caller that routes
/// millions of records keeps one list for all of them.
pub fn record_pages_into(
    decoded: &DecodedRecord<'_>,
    pages: &mut Vec<RecordPage>,
) -> Result<(), RecordError> {
    pages.clear();
    pages.extend(decoded.blocks.iter().map(block_page));
    let mut add = |tag: PageTag, change: PageChange| {
        if !pages.iter().any(|p| p.tag == tag) {
            pages.push(RecordPage { tag, change });
        }
    };
    for (rel, heap_blkno) in vm_cleared_heap_blocks(decoded)? {
        add(vm_tag(rel, heap_blkno), PageChange::VmClear);
    }
    if let Some(tag) = vm_truncated_page(decoded)? {
        add(tag, PageChange::VmTruncate);
    }
    Ok(())
}

/// What [`record_pages`] says of page `tag` (the first of its pages with
/// that tag, or `None`), and its errors, without listing the others (no
/// allocation for the list: the request path asks only of its target).
pub fn record_page(
    decoded: &DecodedRecord<'_>,
    tag: &PageTag,
) -> Result<Option<RecordPage>, RecordError> {
    // Checked as record_pages checks them, whichever page is asked for.
    let cleared = vm_cleared_heap_blocks(decoded)?;
    let truncated = vm_truncated_page(decoded)?;
    if let Some(b) = decoded.blocks.iter().find(|b| b.tag == *tag) {
        return Ok(Some(block_page(b)));
    }
    let change = if cleared.iter().any(|&(rel, blk)| vm_tag(rel, blk) == *tag) {
        PageChange::VmClear
    } else if truncated == Some(*tag) {
        PageChange::VmTruncate
    } else {
        return Ok(None);
    };
    Ok(Some(RecordPage { tag: *tag, change }))
}

/// The page a block reference changes.
fn block_page(b: &BlockRef<'_>) -> RecordPage {
    RecordPage {
        tag: b.tag,
        change: PageChange::Block {
            id: b.id,
            will_init: b.will_init,
            has_image: b.image.is_some(),
            applies_image: b.image.is_some_and(|i| i.apply()),
        },
    }
}

fn vm_tag(rel: RelFileNode, heap_blkno: u32) -> PageTag {
    PageTag {
        rel,
        forknum: VISIBILITYMAP_FORKNUM,
        blkno: vm_block(heap_blkno),
    }
}

fn bad(decoded: &DecodedRecord<'_>, what: &'static str) -> RecordError {
    RecordError::BadMainData {
        rmgr: decoded.rmgr_name(),
        info: decoded.info,
        what,
        len: decoded.main_data.len(),
    }
}

/// The `flags` byte at `offset` of the main data, the struct being `size` long.
fn flags_at(
    decoded: &DecodedRecord<'_>,
    offset: usize,
    size: usize,
    what: &'static str,
) -> Result<u8, RecordError> {
    if decoded.main_data.len() < size {
        return Err(bad(decoded, what));
    }
    Ok(decoded.main_data[offset])
}

/// The relation and block number of block reference `id`.
fn heap_block(decoded: &DecodedRecord<'_>, id: u8) -> Option<(RelFileNode, u32)> {
    decoded
        .blocks
        .iter()
        .find(|b| b.id == id)
        .map(|b| (b.tag.rel, b.tag.blkno))
}

/// The (relation, heap block) pairs whose visibility-map bits heap redo
/// clears, as heapam.c's redo routines pick them.
fn vm_cleared_heap_blocks(
    decoded: &DecodedRecord<'_>,
) -> Result<Vec<(RelFileNode, u32)>, RecordError> {
    let op = decoded.info & XLOG_HEAP_OPMASK;
    // (offset of flags, size of the struct, flag bit) for records with one
    // heap block (reference 0).
    let single = match (decoded.rmid, op) {
        // xl_heap_insert: offnum u16, flags u8.
        (RM_HEAP_ID, XLOG_HEAP_INSERT) => Some((2, 3, XLH_INSERT_ALL_VISIBLE_CLEARED, "insert")),
        // xl_heap_delete: xmax u32, offnum u16, infobits u8, flags u8.
        (RM_HEAP_ID, XLOG_HEAP_DELETE) => Some((7, 8, XLH_DELETE_ALL_VISIBLE_CLEARED, "delete")),
        // xl_heap_lock: locking_xid u32, offnum u16, infobits i8, flags u8.
        (RM_HEAP_ID, XLOG_HEAP_LOCK) => Some((7, 8, XLH_LOCK_ALL_FROZEN_CLEARED, "lock")),
        // xl_heap_multi_insert: flags u8, pad, ntuples u16, offsets[].
        (RM_HEAP2_ID, XLOG_HEAP2_MULTI_INSERT) => {
            Some((0, 4, XLH_INSERT_ALL_VISIBLE_CLEARED, "multi-insert"))
        }
        // xl_heap_lock_updated: xmax u32, offnum u16, infobits u8, flags u8.
        (RM_HEAP2_ID, XLOG_HEAP2_LOCK_UPDATED) => {
            Some((7, 8, XLH_LOCK_ALL_FROZEN_CLEARED, "lock-updated"))
        }
        _ => None,
    };
    if let Some((offset, size, bit, what)) = single {
        let flags = flags_at(decoded, offset, size, what)?;
        if flags & bit == 0 {
            return Ok(Vec::new());
        }
        let block0 = heap_block(decoded, 0).ok_or_else(|| missing_block(decoded, 0, what))?;
        return Ok(vec![block0]);
    }
    if decoded.rmid == RM_HEAP_ID && matches!(op, XLOG_HEAP_UPDATE | XLOG_HEAP_HOT_UPDATE) {
        // xl_heap_update: old_xmax u32, old_offnum u16, old_infobits u8,
        // flags u8, new_xmax u32, new_offnum u16.
        let flags = flags_at(decoded, 7, 14, "update")?;
        let clears = XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED | XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED;
        if flags & clears == 0 {
            return Ok(Vec::new());
        }
        let (rel, new_blk) =
            heap_block(decoded, 0).ok_or_else(|| missing_block(decoded, 0, "update"))?;
        // heap_xlog_update takes the relation of block 0 for both.
        let old_blk = heap_block(decoded, 1).map_or(new_blk, |(_, b)| b);
        let mut out = Vec::new();
        if flags & XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED != 0 {
            out.push((rel, old_blk));
        }
        if flags & XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED != 0 {
            out.push((rel, new_blk));
        }
        return Ok(out);
    }
    Ok(Vec::new())
}

fn missing_block(decoded: &DecodedRecord<'_>, id: u8, what: &'static str) -> RecordError {
    RecordError::MissingBlock {
        rmgr: decoded.rmgr_name(),
        info: decoded.info,
        what,
        block: id,
    }
}

/// The truncation parameters of a Storage TRUNCATE record: the relation,
/// its new length in heap blocks, and `xl_smgr_truncate.flags`.
pub fn smgr_truncate(
    decoded: &DecodedRecord<'_>,
) -> Result<Option<(RelFileNode, u32, u32)>, RecordError> {
    if decoded.rmid != RM_SMGR_ID || decoded.info & XLR_RMGR_INFO_MASK != XLOG_SMGR_TRUNCATE {
        return Ok(None);
    }
    let d = decoded.main_data;
    if d.len() != SIZE_OF_SMGR_TRUNCATE {
        return Err(bad(decoded, "truncate"));
    }
    let rel = RelFileNode {
        spcnode: le_u32(d, 4),
        dbnode: le_u32(d, 8),
        relnode: le_u32(d, 12),
    };
    Ok(Some((rel, le_u32(d, 0), le_u32(d, 16))))
}

/// The visibility-map page a Storage TRUNCATE cuts into, if any.
fn vm_truncated_page(decoded: &DecodedRecord<'_>) -> Result<Option<PageTag>, RecordError> {
    let Some((rel, nblocks, flags)) = smgr_truncate(decoded)? else {
        return Ok(None);
    };
    // A cut on a page boundary removes whole pages and changes none.
    if flags & SMGR_TRUNCATE_VM == 0 || nblocks % VM_HEAPBLOCKS_PER_PAGE == 0 {
        return Ok(None);
    }
    Ok(Some(vm_tag(rel, nblocks)))
}

#[cfg(test)]
pub(crate) mod tests;
