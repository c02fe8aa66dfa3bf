//! Which pages a record changes: the set of pages a page server must index
//! the record under, so that replaying each page's records gives the page
//! PostgreSQL's recovery produces.
//!
//! That is the record's block references, plus the visibility-map pages
//! that heap redo changes without a block reference to them (heapam.c, PostgreSQL 15):
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

use crate::tag::{PageTag, RelFileNode, VISIBILITYMAP_FORKNUM};
use crate::wal::record::{self, DecodedRecord, RecordError};
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

const RM_STORAGE_ID: u8 = 2;
const RM_HEAP2_ID: u8 = 9;
const RM_HEAP_ID: u8 = 10;

const XLOG_HEAP_OPMASK: u8 = 0x70;
const XLOG_HEAP_INSERT: u8 = 0x00;
const XLOG_HEAP_DELETE: u8 = 0x10;
const XLOG_HEAP_UPDATE: u8 = 0x20;
const XLOG_HEAP_HOT_UPDATE: u8 = 0x40;
const XLOG_HEAP_LOCK: u8 = 0x60;
const XLOG_HEAP2_MULTI_INSERT: u8 = 0x50;
const XLOG_HEAP2_LOCK_UPDATED: u8 = 0x60;
const XLOG_SMGR_TRUNCATE: u8 = 0x20;

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
    let mut pages: Vec<RecordPage> = decoded
        .blocks
        .iter()
        .map(|b| RecordPage {
            tag: b.tag,
            change: PageChange::Block {
                id: b.id,
                will_init: b.will_init,
                has_image: b.image.is_some(),
                applies_image: b.image.is_some_and(|i| i.apply()),
            },
        })
        .collect();
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
    Ok(pages)
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
    if decoded.rmid != RM_STORAGE_ID
        || decoded.info & record::XLR_RMGR_INFO_MASK != XLOG_SMGR_TRUNCATE
    {
        return Ok(None);
    }
    let d = decoded.main_data;
    if d.len() != SIZE_OF_SMGR_TRUNCATE {
        return Err(bad(decoded, "truncate"));
    }
    let u32_at = |i: usize| u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    let rel = RelFileNode {
        spcnode: u32_at(4),
        dbnode: u32_at(8),
        relnode: u32_at(12),
    };
    Ok(Some((rel, u32_at(0), u32_at(16))))
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
mod tests {
    use super::*;
    use crate::tag::{MAIN_FORKNUM, VISIBILITYMAP_FORKNUM};
    use crate::wal::crc32c::{crc32c_finish, crc32c_update, CRC32C_INIT};

    const REL: RelFileNode = RelFileNode {
        spcnode: 1663,
        dbnode: 5,
        relnode: 16384,
    };

    /// A record with block references (id, fork, blkno; no data, no image)
    /// and main data, CRC sealed.
    fn build(rmid: u8, info: u8, blocks: &[(u8, u8, u32)], main: &[u8]) -> Vec<u8> {
        let mut headers = Vec::new();
        for (i, &(id, fork, blkno)) in blocks.iter().enumerate() {
            headers.push(id);
            headers.push(fork | if i > 0 { record::BKPBLOCK_SAME_REL } else { 0 });
            headers.extend_from_slice(&0u16.to_le_bytes());
            if i == 0 {
                for v in [REL.spcnode, REL.dbnode, REL.relnode] {
                    headers.extend_from_slice(&v.to_le_bytes());
                }
            }
            headers.extend_from_slice(&blkno.to_le_bytes());
        }
        if !main.is_empty() {
            headers.push(record::XLR_BLOCK_ID_DATA_SHORT);
            headers.push(main.len() as u8);
        }
        let tot = (record::SIZE_OF_XLOG_RECORD + headers.len() + main.len()) as u32;
        let mut rec = Vec::new();
        rec.extend_from_slice(&tot.to_le_bytes());
        rec.extend_from_slice(&700u32.to_le_bytes());
        rec.extend_from_slice(&0x0100_0028u64.to_le_bytes());
        rec.push(info);
        rec.push(rmid);
        rec.extend_from_slice(&[0, 0]);
        rec.extend_from_slice(&[0; 4]);
        rec.extend_from_slice(&headers);
        rec.extend_from_slice(main);
        let crc = crc32c_finish(crc32c_update(
            crc32c_update(CRC32C_INIT, &rec[record::SIZE_OF_XLOG_RECORD..]),
            &rec[..20],
        ));
        rec[20..24].copy_from_slice(&crc.to_le_bytes());
        rec
    }

    fn vm(heap_blkno: u32) -> PageTag {
        vm_tag(REL, heap_blkno)
    }

    fn main_blk(blkno: u32) -> PageTag {
        PageTag {
            rel: REL,
            forknum: MAIN_FORKNUM,
            blkno,
        }
    }

    /// The tags and whether each is a side effect.
    fn pages_of(rec: &[u8]) -> Vec<(PageTag, bool)> {
        record_pages_of(rec)
            .unwrap()
            .iter()
            .map(|p| (p.tag, p.is_side_effect()))
            .collect()
    }

    /// Main data with `flags` at `offset`, `len` bytes.
    fn main_with(len: usize, offset: usize, flags: u8) -> Vec<u8> {
        let mut m = vec![0u8; len];
        m[offset] = flags;
        m
    }

    #[test]
    fn single_block_heap_changes() {
        // (rmid, info, flags offset, struct size, flag)
        let cases = [
            (
                RM_HEAP_ID,
                XLOG_HEAP_INSERT,
                2,
                3,
                XLH_INSERT_ALL_VISIBLE_CLEARED,
            ),
            (
                RM_HEAP_ID,
                XLOG_HEAP_INSERT | 0x80,
                2,
                3,
                XLH_INSERT_ALL_VISIBLE_CLEARED,
            ),
            (
                RM_HEAP_ID,
                XLOG_HEAP_DELETE,
                7,
                8,
                XLH_DELETE_ALL_VISIBLE_CLEARED,
            ),
            (
                RM_HEAP_ID,
                XLOG_HEAP_LOCK,
                7,
                8,
                XLH_LOCK_ALL_FROZEN_CLEARED,
            ),
            (
                RM_HEAP2_ID,
                XLOG_HEAP2_MULTI_INSERT,
                0,
                4,
                XLH_INSERT_ALL_VISIBLE_CLEARED,
            ),
            (
                RM_HEAP2_ID,
                XLOG_HEAP2_MULTI_INSERT | 0x80,
                0,
                4,
                XLH_INSERT_ALL_VISIBLE_CLEARED,
            ),
            (
                RM_HEAP2_ID,
                XLOG_HEAP2_LOCK_UPDATED,
                7,
                8,
                XLH_LOCK_ALL_FROZEN_CLEARED,
            ),
        ];
        for (rmid, info, off, size, flag) in cases {
            let blk = 70_000; // in visibility-map page 2
            let clear = build(
                rmid,
                info,
                &[(0, MAIN_FORKNUM, blk)],
                &main_with(size + 4, off, flag),
            );
            assert_eq!(
                pages_of(&clear),
                vec![(main_blk(blk), false), (vm(blk), true)],
                "rmid {rmid} info {info:#x}"
            );
            assert_eq!(vm(blk).blkno, 2);
            let p = record_pages_of(&clear).unwrap();
            assert_eq!(p[1].change, PageChange::VmClear);
            assert!(!p[1].initializes());
            // Other flag bits: no visibility-map page.
            let keep = build(
                rmid,
                info,
                &[(0, MAIN_FORKNUM, blk)],
                &main_with(size, off, !flag),
            );
            assert_eq!(pages_of(&keep), vec![(main_blk(blk), false)]);
            // Main data one byte short of the struct: refused, flags or not.
            for f in [flag, 0] {
                let short = build(
                    rmid,
                    info,
                    &[(0, MAIN_FORKNUM, blk)],
                    &main_with(size - 1, off.min(size - 2), f),
                );
                assert!(
                    matches!(
                        record_pages_of(&short),
                        Err(RecordError::BadMainData { .. })
                    ),
                    "rmid {rmid} info {info:#x}"
                );
            }
            // The flag without block 0: refused.
            let orphan = build(
                rmid,
                info,
                &[(1, MAIN_FORKNUM, blk)],
                &main_with(size, off, flag),
            );
            assert!(matches!(
                record_pages_of(&orphan),
                Err(RecordError::MissingBlock { block: 0, .. })
            ));
        }
    }

    #[test]
    fn updates_clear_old_and_new_blocks() {
        let both = XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED | XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED;
        for info in [
            XLOG_HEAP_UPDATE,
            XLOG_HEAP_HOT_UPDATE,
            XLOG_HEAP_UPDATE | 0x80,
        ] {
            // New block 0 in map page 0, old block 1 in map page 1.
            let blocks = [(0, MAIN_FORKNUM, 5), (1, MAIN_FORKNUM, 40_000)];
            let r = build(RM_HEAP_ID, info, &blocks, &main_with(14, 7, both));
            assert_eq!(
                pages_of(&r),
                vec![
                    (main_blk(5), false),
                    (main_blk(40_000), false),
                    (vm(40_000), true),
                    (vm(5), true)
                ]
            );
            let old = build(
                RM_HEAP_ID,
                info,
                &blocks,
                &main_with(14, 7, XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED),
            );
            assert_eq!(pages_of(&old)[2..], [(vm(40_000), true)]);
            let new = build(
                RM_HEAP_ID,
                info,
                &blocks,
                &main_with(14, 7, XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED),
            );
            assert_eq!(pages_of(&new)[2..], [(vm(5), true)]);
            // Both blocks in one map page: named once.
            let near = build(
                RM_HEAP_ID,
                info,
                &[(0, MAIN_FORKNUM, 5), (1, MAIN_FORKNUM, 9)],
                &main_with(14, 7, both),
            );
            assert_eq!(pages_of(&near)[2..], [(vm(5), true)]);
            // Same-page update (no block 1): the old block is block 0.
            let same = build(
                RM_HEAP_ID,
                info,
                &[(0, MAIN_FORKNUM, 40_000)],
                &main_with(14, 7, XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED),
            );
            assert_eq!(
                pages_of(&same),
                vec![(main_blk(40_000), false), (vm(40_000), true)]
            );
            let short = build(RM_HEAP_ID, info, &blocks, &main_with(13, 7, both));
            assert!(matches!(
                record_pages_of(&short),
                Err(RecordError::BadMainData { .. })
            ));
        }
    }

    #[test]
    fn visible_records_name_their_map_page_once() {
        // Heap2 VISIBLE: block 0 is the map page, block 1 the heap page.
        let r = build(
            RM_HEAP2_ID,
            0x40,
            &[(0, VISIBILITYMAP_FORKNUM, 0), (1, MAIN_FORKNUM, 7)],
            &[0; 5],
        );
        assert_eq!(pages_of(&r), vec![(vm(7), false), (main_blk(7), false)]);
    }

    #[test]
    fn other_records_name_only_their_blocks() {
        // Prune, vacuum, freeze, btree insert: a set bit 0 means nothing.
        for (rmid, info) in [
            (RM_HEAP2_ID, 0x10),
            (RM_HEAP2_ID, 0x20),
            (RM_HEAP2_ID, 0x30),
            (11, 0x00),
            (RM_HEAP_ID, 0x70),
        ] {
            let r = build(rmid, info, &[(0, MAIN_FORKNUM, 3)], &[0xFF; 16]);
            assert_eq!(pages_of(&r), vec![(main_blk(3), false)]);
        }
        // No main data at all, not a heap change: fine.
        let r = build(11, 0x00, &[(0, MAIN_FORKNUM, 3)], &[]);
        assert_eq!(pages_of(&r), vec![(main_blk(3), false)]);
    }

    fn truncate(blkno: u32, flags: u32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&blkno.to_le_bytes());
        for v in [REL.spcnode, REL.dbnode, REL.relnode] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        m.extend_from_slice(&flags.to_le_bytes());
        build(RM_STORAGE_ID, XLOG_SMGR_TRUNCATE, &[], &m)
    }

    #[test]
    fn truncations_name_the_map_page_they_cut_into() {
        let p = record_pages_of(&truncate(53, 7)).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].tag, p[0].change), (vm(53), PageChange::VmTruncate));
        let p = record_pages_of(&truncate(VM_HEAPBLOCKS_PER_PAGE + 1, 2)).unwrap();
        assert_eq!(p[0].tag.blkno, 1);
        // On a page boundary, or without the visibility map: no page.
        assert!(record_pages_of(&truncate(VM_HEAPBLOCKS_PER_PAGE, 7))
            .unwrap()
            .is_empty());
        assert!(record_pages_of(&truncate(0, 7)).unwrap().is_empty());
        assert!(record_pages_of(&truncate(53, 5)).unwrap().is_empty());
        // Main data not of the struct's size: refused.
        let mut m = truncate(53, 7);
        let short = {
            let d = record::decode(&m).unwrap().main_data.to_vec();
            build(RM_STORAGE_ID, XLOG_SMGR_TRUNCATE, &[], &d[..19])
        };
        assert!(matches!(
            record_pages_of(&short),
            Err(RecordError::BadMainData { .. })
        ));
        // Storage CREATE is not a truncation.
        m = build(RM_STORAGE_ID, 0x10, &[], &[0; 16]);
        assert!(record_pages_of(&m).unwrap().is_empty());
    }

    #[test]
    fn requests_accept_records_for_the_pages_they_change() {
        use crate::pg::record::RecordRef;
        use crate::request::validate_request;
        let zero = [0u8; PAGE_SIZE];
        let insert = build(
            RM_HEAP_ID,
            XLOG_HEAP_INSERT,
            &[(0, MAIN_FORKNUM, 9)],
            &main_with(3, 2, 1),
        );
        let plain = build(
            RM_HEAP_ID,
            XLOG_HEAP_INSERT,
            &[(0, MAIN_FORKNUM, 9)],
            &main_with(3, 2, 0),
        );
        let trunc = truncate(53, 7);
        let one = |data| {
            [RecordRef {
                end_lsn: 0x2000,
                data,
            }]
        };
        assert!(validate_request(&vm(9), Some(&zero), &one(&insert)).is_ok());
        assert!(validate_request(&vm(9), Some(&zero), &one(&plain)).is_err());
        // A side effect never initializes: a base page is needed.
        assert!(validate_request(&vm(9), None, &one(&insert)).is_err());
        assert!(validate_request(&vm(53), Some(&zero), &one(&trunc)).is_ok());
        // A truncation is applied to that page only.
        assert!(validate_request(&main_blk(53), Some(&zero), &one(&trunc)).is_err());
        assert!(validate_request(&vm(VM_HEAPBLOCKS_PER_PAGE), Some(&zero), &one(&trunc)).is_err());
        // Short main data is malformed, for any target.
        let short = build(
            RM_HEAP_ID,
            XLOG_HEAP_INSERT,
            &[(0, MAIN_FORKNUM, 9)],
            &[0, 0],
        );
        assert!(matches!(
            validate_request(&main_blk(9), Some(&zero), &one(&short)),
            Err(crate::Error::MalformedRecord { .. })
        ));
    }
}
