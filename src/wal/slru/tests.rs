use super::*;
use crate::pg::record::{set_record_crc, SIZE_OF_XLOG_RECORD, XLR_BLOCK_ID_DATA_LONG};
use crate::wal::record::decode;

/// A record without block references: header xid `xid`, main data `main`.
pub(crate) fn build(rmid: u8, info: u8, xid: u32, main: &[u8]) -> Vec<u8> {
    let mut headers = vec![XLR_BLOCK_ID_DATA_LONG];
    headers.extend_from_slice(&(main.len() as u32).to_le_bytes());
    let tot = (SIZE_OF_XLOG_RECORD + headers.len() + main.len()) as u32;
    let mut rec = Vec::new();
    rec.extend_from_slice(&tot.to_le_bytes());
    rec.extend_from_slice(&xid.to_le_bytes());
    rec.extend_from_slice(&0x0100_0028u64.to_le_bytes());
    rec.push(info);
    rec.push(rmid);
    rec.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    rec.extend_from_slice(&headers);
    rec.extend_from_slice(main);
    set_record_crc(&mut rec);
    rec
}

fn changes(rec: &[u8], pg_version: u32, commit_ts: bool) -> Result<Vec<SlruChange>, RecordError> {
    slru_changes(
        &decode(rec).unwrap(),
        SlruFormat::of_version(pg_version),
        commit_ts,
    )
}

fn set(kind: SlruKind, pageno: u64) -> SlruChange {
    SlruChange::Set(SlruPage { kind, pageno })
}

pub(crate) fn u32s(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Main data of a commit or abort: xact_time, xinfo, then `parts`.
pub(crate) fn xact_main(xinfo: u32, parts: &[&[u8]]) -> Vec<u8> {
    let mut m = 1_000_000i64.to_le_bytes().to_vec();
    m.extend_from_slice(&xinfo.to_le_bytes());
    for p in parts {
        m.extend_from_slice(p);
    }
    m
}

pub(crate) const COMMIT: u8 = XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO;

#[test]
fn commit_names_the_pages_of_its_tree_each_once() {
    // xid 32760 on page 0, subxacts on pages 0, 1 and 2 (ascending).
    let subs: Vec<u32> = (32761..32775).chain([65536, 65537, 100]).collect();
    let mut sub_part = u32s(&[subs.len() as u32]);
    sub_part.extend(u32s(&subs));
    let rels = u32s(&[1, 1663, 5, 16384]);
    let stats = u32s(&[1, 2, 5, 16384]); // one 12-byte item (15-17)
    let invals = {
        let mut v = u32s(&[1]);
        v.extend([7u8; 16]);
        v
    };
    let main = xact_main(
        XACT_XINFO_HAS_DBINFO
            | XACT_XINFO_HAS_SUBXACTS
            | XACT_XINFO_HAS_RELFILENODES
            | XACT_XINFO_HAS_DROPPED_STATS
            | XACT_XINFO_HAS_INVALS,
        &[&u32s(&[5, 1663]), &sub_part, &rels, &stats, &invals],
    );
    let rec = build(RM_XACT_ID, COMMIT, 32760, &main);
    assert_eq!(
        changes(&rec, 15, false).unwrap(),
        vec![
            set(SlruKind::Xact, 0),
            set(SlruKind::Xact, 1),
            set(SlruKind::Xact, 2)
        ]
    );
    let with_ts = changes(&rec, 16, true).unwrap();
    let ts: Vec<u64> = with_ts
        .iter()
        .filter_map(|c| c.page())
        .filter(|p| p.kind == SlruKind::CommitTs)
        .map(|p| p.pageno)
        .collect();
    // 32760 / 819 = 40; 32774 / 819 = 40; 65536 / 819 = 80; 100 / 819 = 0.
    assert_eq!(ts, vec![40, 80, 0]);
    // Cut anywhere, the record is refused.
    for cut in [4, 10, 13, 20, main.len() - 1] {
        let rec = build(RM_XACT_ID, COMMIT, 32760, &main[..cut]);
        assert!(
            matches!(
                changes(&rec, 15, false),
                Err(RecordError::BadMainData { .. })
            ),
            "cut at {cut}"
        );
    }
}

#[test]
fn commit_without_info_names_its_xid_only() {
    let rec = build(RM_XACT_ID, XLOG_XACT_COMMIT, 70_000, &1i64.to_le_bytes());
    assert_eq!(
        changes(&rec, 17, true).unwrap(),
        vec![set(SlruKind::Xact, 2), set(SlruKind::CommitTs, 85)]
    );
    let rec = build(RM_XACT_ID, XLOG_XACT_COMMIT, 70_000, &[0; 7]);
    assert!(changes(&rec, 17, true).is_err());
}

#[test]
fn aborts_set_status_but_no_commit_timestamp() {
    let mut subs = u32s(&[1]);
    subs.extend(u32s(&[40_000]));
    // The invalidations bit means nothing in an abort: not read.
    let main = xact_main(XACT_XINFO_HAS_SUBXACTS | XACT_XINFO_HAS_INVALS, &[&subs]);
    let rec = build(RM_XACT_ID, XLOG_XACT_ABORT | XLOG_XACT_HAS_INFO, 10, &main);
    assert_eq!(
        changes(&rec, 15, true).unwrap(),
        vec![set(SlruKind::Xact, 0), set(SlruKind::Xact, 1)]
    );
}

#[test]
fn prepared_forms_name_the_twophase_xid() {
    let gid = b"p1\0";
    let origin = {
        let mut o = 0x1234u64.to_le_bytes().to_vec();
        o.extend(77i64.to_le_bytes());
        o
    };
    let main = xact_main(
        XACT_XINFO_HAS_TWOPHASE | XACT_XINFO_HAS_GID | XACT_XINFO_HAS_ORIGIN,
        &[&u32s(&[99_999]), gid, &origin],
    );
    let op = XLOG_XACT_COMMIT_PREPARED | XLOG_XACT_HAS_INFO;
    // The header xid (0: COMMIT PREPARED runs outside the transaction) is
    // not the one committed.
    let rec = build(RM_XACT_ID, op, 0, &main);
    let d = decode(&rec).unwrap();
    let tree = xact_tree(&d, SlruFormat::of_version(15)).unwrap().unwrap();
    assert_eq!((tree.xid, tree.commit), (99_999, true));
    assert_eq!((tree.xact_time, tree.commit_time()), (1_000_000, 77));
    assert_eq!(
        changes(&rec, 15, true).unwrap(),
        vec![set(SlruKind::Xact, 3), set(SlruKind::CommitTs, 122)]
    );
    let abort = build(
        RM_XACT_ID,
        XLOG_XACT_ABORT_PREPARED | XLOG_XACT_HAS_INFO,
        0,
        &main,
    );
    assert_eq!(
        changes(&abort, 15, true).unwrap(),
        vec![set(SlruKind::Xact, 3)]
    );
    // A GID without its NUL, or a prepared form without a two-phase xid.
    let no_nul = xact_main(
        XACT_XINFO_HAS_TWOPHASE | XACT_XINFO_HAS_GID,
        &[&u32s(&[99_999]), b"p1"],
    );
    assert!(changes(&build(RM_XACT_ID, op, 0, &no_nul), 15, false).is_err());
    let no_xid = xact_main(0, &[]);
    assert!(changes(&build(RM_XACT_ID, op, 0, &no_xid), 15, false).is_err());
}

#[test]
fn dropped_stats_items_are_wider_in_18() {
    // COMMIT_PREPARED with one dropped-stats item, then the two-phase xid:
    // the item's size decides where the xid is read.
    let item18 = u32s(&[1, 5, 16384, 0]);
    let main = xact_main(
        XACT_XINFO_HAS_DROPPED_STATS | XACT_XINFO_HAS_TWOPHASE,
        &[&u32s(&[1]), &item18, &u32s(&[70_000])],
    );
    let rec = build(
        RM_XACT_ID,
        XLOG_XACT_COMMIT_PREPARED | XLOG_XACT_HAS_INFO,
        0,
        &main,
    );
    let xid = |v| {
        xact_tree(&decode(&rec).unwrap(), SlruFormat::of_version(v))
            .unwrap()
            .unwrap()
            .xid
    };
    assert_eq!(xid(18), 70_000);
    assert_eq!(xid(17), 0); // objid_hi of the 18 item, read as the xid
    assert_eq!(xid(14), 1); // no stats in 14: the count is read as the xid
}

#[test]
fn zero_and_truncate_records_by_version() {
    let v16 = 7i32.to_le_bytes();
    let v17 = 7i64.to_le_bytes();
    for (rmid, kind) in [
        (RM_CLOG_ID, SlruKind::Xact),
        (RM_COMMIT_TS_ID, SlruKind::CommitTs),
    ] {
        let zero = SlruChange::Zero(SlruPage { kind, pageno: 7 });
        assert_eq!(
            changes(&build(rmid, 0x00, 0, &v16), 16, false).unwrap(),
            vec![zero]
        );
        assert_eq!(
            changes(&build(rmid, 0x00, 0, &v17), 17, false).unwrap(),
            vec![zero]
        );
        assert!(changes(&build(rmid, 0x00, 0, &v17), 16, false).is_err());
        assert!(changes(&build(rmid, 0x00, 0, &v16), 18, false).is_err());
        assert!(changes(&build(rmid, 0x00, 0, &(-1i32).to_le_bytes()), 15, false).is_err());
        let trunc = SlruChange::Truncate {
            kind,
            cutoff_page: 7,
        };
        let (short, long) = if rmid == RM_CLOG_ID {
            (12, 16)
        } else {
            (8, 12)
        };
        let mut t16 = v16.to_vec();
        t16.resize(short, 0);
        let mut t17 = v17.to_vec();
        t17.resize(long, 0);
        assert_eq!(
            changes(&build(rmid, 0x10, 0, &t16), 14, false).unwrap(),
            vec![trunc]
        );
        assert_eq!(
            changes(&build(rmid, 0x10, 0, &t17), 18, false).unwrap(),
            vec![trunc]
        );
        assert!(changes(&build(rmid, 0x10, 0, &t16), 17, false).is_err());
    }
    for (info, kind) in [
        (XLOG_MULTIXACT_ZERO_OFF_PAGE, SlruKind::MultiXactOffsets),
        (XLOG_MULTIXACT_ZERO_MEM_PAGE, SlruKind::MultiXactMembers),
    ] {
        let zero = SlruChange::Zero(SlruPage { kind, pageno: 7 });
        assert_eq!(
            changes(&build(RM_MULTIXACT_ID, info, 0, &v16), 15, false).unwrap(),
            vec![zero]
        );
        assert_eq!(
            changes(&build(RM_MULTIXACT_ID, info, 0, &v17), 17, false).unwrap(),
            vec![zero]
        );
    }
}

fn create(mid: u32, moff: u32, nmembers: u32) -> Vec<u8> {
    let mut m = u32s(&[mid, moff, nmembers]);
    for i in 0..nmembers {
        m.extend(u32s(&[1000 + i, 1]));
    }
    build(RM_MULTIXACT_ID, XLOG_MULTIXACT_CREATE_ID, 0, &m)
}

#[test]
fn create_id_names_both_offsets_pages_and_every_members_page() {
    let off = |p| set(SlruKind::MultiXactOffsets, p);
    let mem = |p| set(SlruKind::MultiXactMembers, p);
    assert_eq!(
        changes(&create(5, 10, 2), 15, false).unwrap(),
        vec![off(0), mem(0)]
    );
    // The last multixact of a page: the next one's offset is on the next page.
    assert_eq!(
        changes(&create(2047, 1635, 2), 15, false).unwrap(),
        vec![off(0), off(1), mem(0), mem(1)]
    );
    // The last multixact id: the next is 1, on page 0.
    assert_eq!(
        changes(&create(u32::MAX, 1, 1), 17, false).unwrap(),
        vec![off(2_097_151), off(0), mem(0)]
    );
    // Members across the wrap of the offsets: 2625285 (1036 used) then 0.
    assert_eq!(
        changes(&create(9, 0xFFFF_FFF0, 32), 15, false).unwrap(),
        vec![off(0), mem(2_625_285), mem(0)]
    );
    assert_eq!(
        member_pages(u32::MAX, 1),
        vec![SlruKind::MultiXactMembers.page_of(u32::MAX)]
    );
    // A range over three pages.
    assert_eq!(member_pages(1000, 3000).len(), 3);
    // Counts that the data does not hold, or that leave bytes over.
    let mut short = create(5, 10, 2);
    short.truncate(short.len() - 8);
    let d = u32s(&[5, 10, 2, 1000, 1, 1001, 1]);
    let over = [d.as_slice(), &[0]].concat();
    for main in [
        &u32s(&[5, 10, 2, 1000, 1])[..],
        &over,
        &u32s(&[5, 10, u32::MAX]),
    ] {
        let rec = build(RM_MULTIXACT_ID, XLOG_MULTIXACT_CREATE_ID, 0, main);
        assert!(changes(&rec, 15, false).is_err(), "{main:?}");
    }
}

#[test]
fn truncate_id_names_members_segments_and_offsets_cutoff() {
    // Members offsets 0 .. 200000 (segments 0 .. 3), offsets before multi 5000.
    let main = u32s(&[5, 1, 5000, 1, 200_000]);
    let rec = build(RM_MULTIXACT_ID, XLOG_MULTIXACT_TRUNCATE_ID, 0, &main);
    assert_eq!(
        changes(&rec, 15, false).unwrap(),
        vec![
            SlruChange::DeleteSegments {
                kind: SlruKind::MultiXactMembers,
                from_segment: 0,
                to_segment: 200_000 / 1636 / 32,
            },
            SlruChange::Truncate {
                kind: SlruKind::MultiXactOffsets,
                cutoff_page: 4999 / 2048,
            }
        ]
    );
    assert_eq!(previous_multixact(1), u32::MAX);
    assert_eq!(next_multixact(u32::MAX), 1);
    let rec = build(RM_MULTIXACT_ID, XLOG_MULTIXACT_TRUNCATE_ID, 0, &main[..16]);
    assert!(changes(&rec, 15, false).is_err());
}

/// A map file of version `v` with the count `n` (its first `MAX_MAPPINGS` filled), CRC set.
fn map_file(v: u32, n: u32) -> Vec<u8> {
    let f = SlruFormat::of_version(v);
    let crc_at = f.relmap_crc_offset();
    let mut m = vec![0u8; f.relmap_file_size()];
    m[0..4].copy_from_slice(&RELMAPPER_FILEMAGIC.to_le_bytes());
    m[4..8].copy_from_slice(&n.to_le_bytes());
    for i in 0..n.min(f.relmap_max_mappings()) as usize {
        m[8 + 8 * i..16 + 8 * i].copy_from_slice(&u32s(&[1259 + i as u32, 16384 + i as u32]));
    }
    let crc = crc32c_finish(crc32c_update(CRC32C_INIT, &m[..crc_at]));
    m[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    m
}

fn relmap_record(dbid: u32, tsid: u32, map: &[u8]) -> Vec<u8> {
    let mut main = u32s(&[dbid, tsid, map.len() as u32]);
    main.extend_from_slice(map);
    build(RM_RELMAP_ID, XLOG_RELMAP_UPDATE, 0, &main)
}

#[test]
fn relmap_update_is_checked_like_a_map_read() {
    let map = map_file(15, 15);
    let rec = relmap_record(5, 1663, &map);
    let d = decode(&rec).unwrap();
    let file = RelMapFile::Database {
        spcnode: 1663,
        dbnode: 5,
    };
    let f15 = SlruFormat::of_version(15);
    assert_eq!(relmap_update(&d, f15).unwrap(), Some((file, &map[..])));
    assert_eq!(
        crate::datadir::relmap_path(std::path::Path::new("D"), &file),
        std::path::Path::new("D/base/5/pg_filenode.map")
    );
    assert_eq!(
        changes(&rec, 15, false).unwrap(),
        vec![SlruChange::RelMap(file)]
    );
    let global = relmap_record(0, 1664, &map_file(14, 62));
    assert_eq!(
        changes(&global, 14, false).unwrap(),
        vec![SlruChange::RelMap(RelMapFile::Global)]
    );
    // 16+: 524-byte maps of up to 64 mappings; a 15 map is refused there
    // and the reverse.
    let map16 = map_file(16, 64);
    assert_eq!(map16.len(), 524);
    for v in [16, 17, 18] {
        assert_eq!(
            changes(&relmap_record(5, 1663, &map16), v, false).unwrap(),
            vec![SlruChange::RelMap(file)]
        );
        assert!(changes(&rec, v, false).is_err());
    }
    let refused = |rec: &[u8], v| match changes(rec, v, false) {
        Err(RecordError::BadRelMap { reason }) => reason,
        other => panic!("not refused: {other:?}"),
    };
    assert!(refused(&relmap_record(5, 1663, &map16), 15).contains("size"));
    let mut flipped = map.clone();
    flipped[20] ^= 1;
    assert!(refused(&relmap_record(5, 1663, &flipped), 15).contains("CRC"));
    let mut magic = map.clone();
    magic[0] ^= 1;
    assert!(refused(&relmap_record(5, 1663, &magic), 15).contains("magic"));
    assert!(refused(&relmap_record(5, 1663, &map_file(15, 63)), 15).contains("MAX_MAPPINGS"));
    assert!(refused(&relmap_record(5, 1663, &map_file(17, 65)), 17).contains("MAX_MAPPINGS"));
    assert!(refused(&relmap_record(5, 1663, &map[..511]), 15).contains("size"));
    assert!(refused(&relmap_record(5, 1664, &map), 15).contains("global"));
    assert!(refused(&relmap_record(0, 1663, &map), 15).contains("database 0"));
    // nbytes says 512 but the data is short: a main-data error.
    let mut main = u32s(&[5, 1663, 512]);
    main.extend_from_slice(&map[..100]);
    let rec = build(RM_RELMAP_ID, XLOG_RELMAP_UPDATE, 0, &main);
    assert!(matches!(
        changes(&rec, 15, false),
        Err(RecordError::BadMainData { .. })
    ));
}

#[test]
fn other_records_change_no_slru_page() {
    // Transaction PREPARE, ASSIGNMENT; a heap insert.
    for (rmid, info) in [(RM_XACT_ID, 0x10), (RM_XACT_ID, 0x50), (10, 0x00)] {
        assert_eq!(
            changes(&build(rmid, info, 5, &[1, 2, 3]), 15, true).unwrap(),
            vec![]
        );
    }
    let p = SlruKind::Xact.page_of(40_000);
    assert_eq!((p.pageno, p.segment(), p.offset_in_segment()), (1, 0, 8192));
    assert_eq!(
        SlruPage {
            kind: SlruKind::CommitTs,
            pageno: 5_244_160
        }
        .segment_path(),
        "pg_commit_ts/28028"
    );
}

#[test]
fn parameter_change_says_whether_commit_timestamps_are_active() {
    use crate::pg::rmgr::RM_XLOG_ID;
    let mut main = u32s(&[100, 8, 10, 10, 64, 1]);
    main.extend([0, 1, 0, 0]); // wal_log_hints off, track_commit_timestamp on
    let rec = build(RM_XLOG_ID, XLOG_PARAMETER_CHANGE, 0, &main);
    for v in 14..=18 {
        assert_eq!(
            changes(&rec, v, false).unwrap(),
            vec![SlruChange::CommitTsActive(true)]
        );
    }
    main[25] = 0;
    let rec = build(RM_XLOG_ID, XLOG_PARAMETER_CHANGE, 0, &main);
    assert_eq!(
        changes(&rec, 15, true).unwrap(),
        vec![SlruChange::CommitTsActive(false)]
    );
    let short = build(RM_XLOG_ID, XLOG_PARAMETER_CHANGE, 0, &main[..26]);
    assert!(matches!(
        changes(&short, 15, true),
        Err(RecordError::BadMainData { .. })
    ));
}
