//! Each write checked against the layout formulas of PostgreSQL's SLRU code
//! (`clog.c`, `commit_ts.c`, `multixact.c`), byte by byte; the proof against
//! recovery itself is `walredo verify` on real WAL (tests/slru_route.rs,
//! tests/real_wal.rs, `make demo`).

use super::*;
use crate::pg::record::{
    set_record_crc, SIZE_OF_XLOG_RECORD, XLR_BLOCK_ID_DATA_LONG, XLR_BLOCK_ID_ORIGIN,
};
use crate::pg::record_type::XLOG_XACT_ABORT;
use crate::wal::record::decode;
use crate::wal::slru::tests::{build, u32s, xact_main, COMMIT};

fn page(kind: SlruKind, pageno: u64) -> SlruPage {
    SlruPage { kind, pageno }
}

fn apply(target: SlruPage, p: &mut [u8; PAGE_SIZE], rec: &[u8]) -> bool {
    apply_to_slru_page(target, p, &decode(rec).unwrap(), SlruFormat::of_version(16)).unwrap()
}

fn status(p: &[u8; PAGE_SIZE], xid: u32) -> u8 {
    let e = (xid % 32768) as usize;
    (p[e / 4] >> ((e % 4) * 2)) & 3
}

fn commit_with_subxacts(xid: u32, subs: &[u32]) -> Vec<u8> {
    let mut part = u32s(&[subs.len() as u32]);
    part.extend(u32s(subs));
    build(
        RM_XACT_ID,
        COMMIT,
        xid,
        &xact_main(crate::pg::slru::XACT_XINFO_HAS_SUBXACTS, &[&part]),
    )
}

#[test]
fn commit_and_abort_set_two_bits_of_each_id_on_the_page_only() {
    let target = page(SlruKind::Xact, 1);
    // 0b11 everywhere shows which bits were cleared and set.
    let mut p = [0xFFu8; PAGE_SIZE];
    let rec = commit_with_subxacts(32767, &[32768, 32770, 65536]);
    assert!(apply(target, &mut p, &rec));
    assert_eq!(status(&p, 32768), 1);
    assert_eq!(status(&p, 32770), 1);
    assert_eq!(status(&p, 32769), 3, "a neighbour in the same byte is kept");
    let changed: Vec<usize> = (0..PAGE_SIZE).filter(|&i| p[i] != 0xFF).collect();
    assert_eq!(
        changed,
        vec![0],
        "only byte 0 of page 1 holds 32768 and 32770"
    );
    // No id of the tree is on page 3.
    let mut p0 = [0u8; PAGE_SIZE];
    assert!(!apply(page(SlruKind::Xact, 3), &mut p0, &rec));
    assert_eq!(p0, [0u8; PAGE_SIZE]);
    // An abort (no xinfo) over a committed entry: aborted (2).
    let abort = build(
        RM_XACT_ID,
        XLOG_XACT_ABORT,
        32770,
        &1_000_000i64.to_le_bytes(),
    );
    assert!(apply(target, &mut p, &abort));
    assert_eq!(status(&p, 32770), 2);
    assert_eq!(status(&p, 32768), 1);
}

/// A commit record with a replication origin block (`XLR_BLOCK_ID_ORIGIN`)
/// and, in the main data, `xl_xact_origin` when `origin_ts` is given.
fn commit_with_origin(xid: u32, origin: u16, origin_ts: Option<i64>) -> Vec<u8> {
    let main = match origin_ts {
        Some(ts) => {
            let mut o = 0x1234u64.to_le_bytes().to_vec(); // origin_lsn
            o.extend(ts.to_le_bytes());
            xact_main(crate::pg::slru::XACT_XINFO_HAS_ORIGIN, &[&o])
        }
        None => xact_main(0, &[]),
    };
    let mut headers = vec![XLR_BLOCK_ID_ORIGIN];
    headers.extend(origin.to_le_bytes());
    headers.push(XLR_BLOCK_ID_DATA_LONG);
    headers.extend((main.len() as u32).to_le_bytes());
    let tot = (SIZE_OF_XLOG_RECORD + headers.len() + main.len()) as u32;
    let mut rec = tot.to_le_bytes().to_vec();
    rec.extend(xid.to_le_bytes());
    rec.extend(0x0100_0028u64.to_le_bytes());
    rec.push(COMMIT);
    rec.push(RM_XACT_ID);
    rec.extend([0u8; 6]);
    rec.extend(headers);
    rec.extend(main);
    set_record_crc(&mut rec);
    rec
}

#[test]
fn commit_timestamps_are_time_then_origin_on_commits_only() {
    let xid = 819 * 3 + 5;
    let target = page(SlruKind::CommitTs, 3);
    let mut p = [0u8; PAGE_SIZE];
    // xact_time when the record has no xl_xact_origin.
    assert!(apply(target, &mut p, &commit_with_origin(xid, 7, None)));
    let at = 5 * 10;
    assert_eq!(&p[at..at + 8], &1_000_000i64.to_le_bytes());
    assert_eq!(&p[at + 8..at + 10], &7u16.to_le_bytes());
    assert!(p[..at].iter().chain(&p[at + 10..]).all(|&b| b == 0));
    // The origin's timestamp when it has one.
    assert!(apply(
        target,
        &mut p,
        &commit_with_origin(xid, 2, Some(-42))
    ));
    assert_eq!(&p[at..at + 8], &(-42i64).to_le_bytes());
    assert_eq!(&p[at + 8..at + 10], &2u16.to_le_bytes());
    // An abort writes no timestamp.
    let abort = build(
        RM_XACT_ID,
        XLOG_XACT_ABORT,
        xid,
        &1_000_000i64.to_le_bytes(),
    );
    let before = p;
    assert!(!apply(target, &mut p, &abort));
    assert_eq!(p, before);
}

fn create_with(mid: u32, moff: u32, members: &[(u32, u32)]) -> Vec<u8> {
    let mut m = u32s(&[mid, moff, members.len() as u32]);
    for &(xid, st) in members {
        m.extend(u32s(&[xid, st]));
    }
    build(RM_MULTIXACT_ID, XLOG_MULTIXACT_CREATE_ID, 0, &m)
}

fn u32_at(p: &[u8; PAGE_SIZE], at: usize) -> u32 {
    le_u32(p, at)
}

#[test]
fn create_id_writes_its_offset_and_the_next_multixacts() {
    let off = |n| page(SlruKind::MultiXactOffsets, n);
    let rec = create_with(2047, 500, &[(900, 1), (901, 5)]);
    let mut p0 = [0u8; PAGE_SIZE];
    assert!(apply(off(0), &mut p0, &rec));
    assert_eq!(u32_at(&p0, 2047 * 4), 500);
    let mut p1 = [0u8; PAGE_SIZE];
    assert!(apply(off(1), &mut p1, &rec));
    assert_eq!(u32_at(&p1, 0), 502, "multixact 2048's offset: 500 + 2");
    assert!(p1[4..].iter().all(|&b| b == 0));
    // The last multixact id: the next is 1 (entry 1 of page 0), and an
    // offset that wraps to 0 is stored as 1.
    let rec = create_with(u32::MAX, u32::MAX - 1, &[(5, 0), (6, 0)]);
    let mut p = [0u8; PAGE_SIZE];
    assert!(apply(off(0), &mut p, &rec));
    assert_eq!(u32_at(&p, 4), 1);
    assert!(apply(off(u64::from(u32::MAX) / 2048), &mut p, &rec));
}

#[test]
fn create_id_writes_member_xids_and_only_their_flag_bytes() {
    let mem = |n| page(SlruKind::MultiXactMembers, n);
    // Offsets 1634..1638: 1634 and 1635 end page 0 (group 408), 1636 and
    // 1637 start page 1 (group 0).
    let rec = create_with(3, 1634, &[(700, 2), (701, 3), (702, 4), (703, 5)]);
    let mut p0 = [0xEEu8; PAGE_SIZE];
    assert!(apply(mem(0), &mut p0, &rec));
    let g = 408 * 20;
    assert_eq!(
        &p0[g..g + 4],
        &[0xEE, 0xEE, 2, 3],
        "flag bytes 2 and 3 of the group"
    );
    assert_eq!(u32_at(&p0, g + 4 + 2 * 4), 700);
    assert_eq!(u32_at(&p0, g + 4 + 3 * 4), 701);
    assert_eq!(
        u32_at(&p0, g + 4),
        0xEEEE_EEEE,
        "members 0 and 1 of the group kept"
    );
    let mut p1 = [0u8; PAGE_SIZE];
    assert!(apply(mem(1), &mut p1, &rec));
    assert_eq!(&p1[0..4], &[4, 5, 0, 0]);
    assert_eq!(u32_at(&p1, 4), 702);
    assert_eq!(u32_at(&p1, 8), 703);
    assert!(!apply(mem(2), &mut p1.clone(), &rec));
}

#[test]
fn a_member_status_past_update_is_refused() {
    let rec = create_with(3, 10, &[(700, 6)]);
    let mut p = [0u8; PAGE_SIZE];
    let target = page(SlruKind::MultiXactMembers, 0);
    let e = apply_to_slru_page(
        target,
        &mut p,
        &decode(&rec).unwrap(),
        SlruFormat::of_version(15),
    );
    assert!(matches!(e, Err(RecordError::BadMainData { .. })), "{e:?}");
    assert_eq!(p, [0u8; PAGE_SIZE]);
}

#[test]
fn zero_records_zero_their_page_only() {
    let zero = build(RM_CLOG_ID, CLOG_ZEROPAGE, 0, &7i32.to_le_bytes());
    let mut p = [1u8; PAGE_SIZE];
    assert!(!apply(page(SlruKind::Xact, 6), &mut p, &zero));
    assert!(!apply(page(SlruKind::CommitTs, 7), &mut p, &zero));
    assert_eq!(p, [1u8; PAGE_SIZE]);
    assert!(apply(page(SlruKind::Xact, 7), &mut p, &zero));
    assert_eq!(p, [0u8; PAGE_SIZE]);
}

#[test]
fn rebuild_checks_each_record_and_refuses_one_routed_elsewhere() {
    let target = page(SlruKind::Xact, 0);
    let a = commit_with_subxacts(100, &[101]);
    let b = commit_with_subxacts(40_000, &[]);
    let format = SlruFormat::of_version(16);
    let p = rebuild_slru_page(target, None, &[&a], format).unwrap();
    assert_eq!(
        (status(&p, 100), status(&p, 101), status(&p, 102)),
        (1, 1, 0)
    );
    let e = rebuild_slru_page(target, None, &[&a, &b], format).unwrap_err();
    assert!(matches!(e, (1, RecordError::NotForSlruPage)), "{e:?}");
    let mut bad = a.clone();
    *bad.last_mut().unwrap() ^= 1;
    let e = rebuild_slru_page(target, Some(&p), &[&bad], format).unwrap_err();
    assert!(matches!(e, (0, RecordError::BadCrc { .. })), "{e:?}");
}
