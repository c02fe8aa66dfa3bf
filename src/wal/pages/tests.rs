use super::*;
use crate::pg::record::{
    set_record_crc, BKPBLOCK_SAME_REL, SIZE_OF_XLOG_RECORD, XLR_BLOCK_ID_DATA_SHORT,
};
use crate::tag::{MAIN_FORKNUM, VISIBILITYMAP_FORKNUM};

const REL: RelFileNode = RelFileNode {
    spcnode: 1663,
    dbnode: 5,
    relnode: 16384,
};

/// A record with block references (id, fork, blkno; no data, no image)
/// and main data, CRC sealed.
pub(crate) fn build(rmid: u8, info: u8, blocks: &[(u8, u8, u32)], main: &[u8]) -> Vec<u8> {
    let mut headers = Vec::new();
    for (i, &(id, fork, blkno)) in blocks.iter().enumerate() {
        headers.push(id);
        headers.push(fork | if i > 0 { BKPBLOCK_SAME_REL } else { 0 });
        headers.extend_from_slice(&0u16.to_le_bytes());
        if i == 0 {
            for v in [REL.spcnode, REL.dbnode, REL.relnode] {
                headers.extend_from_slice(&v.to_le_bytes());
            }
        }
        headers.extend_from_slice(&blkno.to_le_bytes());
    }
    if !main.is_empty() {
        headers.push(XLR_BLOCK_ID_DATA_SHORT);
        headers.push(main.len() as u8);
    }
    let tot = (SIZE_OF_XLOG_RECORD + headers.len() + main.len()) as u32;
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
    set_record_crc(&mut rec);
    rec
}

pub(crate) fn vm(heap_blkno: u32) -> PageTag {
    vm_tag(REL, heap_blkno)
}

pub(crate) fn main_blk(blkno: u32) -> PageTag {
    PageTag {
        rel: REL,
        forknum: MAIN_FORKNUM,
        blkno,
    }
}

/// `super::record_pages_of`, every test's records checked against
/// `record_page` on the way: for each tag listed, and for tags not listed,
/// it finds what the list has first, and fails as the list does.
fn record_pages_of(rec: &[u8]) -> Result<Vec<RecordPage>, RecordError> {
    let listed = super::record_pages_of(rec);
    let Ok(decoded) = record::decode(rec) else {
        return listed;
    };
    let mut tags: Vec<PageTag> = listed.iter().flatten().map(|p| p.tag).collect();
    tags.extend([main_blk(0), main_blk(1_000_000), vm(0), vm(70_000)]);
    for tag in tags {
        let found = record_page(&decoded, &tag);
        match &listed {
            Ok(pages) => assert_eq!(
                found,
                Ok(pages.iter().find(|p| p.tag == tag).copied()),
                "{tag}"
            ),
            Err(e) => assert_eq!(found.as_ref().err(), Some(e), "{tag}"),
        }
    }
    listed
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
pub(crate) fn main_with(len: usize, offset: usize, flags: u8) -> Vec<u8> {
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
        // An update of these blocks with main data of 14 bytes, flags at 7.
        let update = |blocks: &[(u8, u8, u32)], flags| {
            build(RM_HEAP_ID, info, blocks, &main_with(14, 7, flags))
        };
        // New block 0 in map page 0, old block 1 in map page 1.
        let blocks = [(0, MAIN_FORKNUM, 5), (1, MAIN_FORKNUM, 40_000)];
        let r = update(&blocks, both);
        assert_eq!(
            pages_of(&r),
            vec![
                (main_blk(5), false),
                (main_blk(40_000), false),
                (vm(40_000), true),
                (vm(5), true)
            ]
        );
        let old = update(&blocks, XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED);
        assert_eq!(pages_of(&old)[2..], [(vm(40_000), true)]);
        let new = update(&blocks, XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED);
        assert_eq!(pages_of(&new)[2..], [(vm(5), true)]);
        // Both blocks in one map page: named once.
        let near = update(&[(0, MAIN_FORKNUM, 5), (1, MAIN_FORKNUM, 9)], both);
        assert_eq!(pages_of(&near)[2..], [(vm(5), true)]);
        // Same-page update (no block 1): the old block is block 0.
        let same = update(
            &[(0, MAIN_FORKNUM, 40_000)],
            XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED,
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

pub(crate) fn truncate(blkno: u32, flags: u32) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&blkno.to_le_bytes());
    for v in [REL.spcnode, REL.dbnode, REL.relnode] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m.extend_from_slice(&flags.to_le_bytes());
    build(RM_SMGR_ID, XLOG_SMGR_TRUNCATE, &[], &m)
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
        build(RM_SMGR_ID, XLOG_SMGR_TRUNCATE, &[], &d[..19])
    };
    assert!(matches!(
        record_pages_of(&short),
        Err(RecordError::BadMainData { .. })
    ));
    // Storage CREATE is not a truncation.
    m = build(RM_SMGR_ID, 0x10, &[], &[0; 16]);
    assert!(record_pages_of(&m).unwrap().is_empty());
}
