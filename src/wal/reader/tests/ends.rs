//! Where the WAL ends, and the holes that are errors.

use super::*;

/// Reads all of `d`'s WAL and checks the records read (start, end, length)
/// and, when given, words of the reason the WAL ended.
fn reads_to_end(d: &TempDir, want: &[(u64, u64, usize)], end: Option<&str>) -> WalReader {
    let (recs, r) = ok(read_all(&d.0, None));
    assert_eq!(spans(&recs), want);
    if let Some(words) = end {
        assert_end(&r, words);
    }
    r
}

/// WAL made by `build`, read to its end as [`reads_to_end`] checks it.
fn ends_after(
    tag: &str,
    build: impl FnOnce(&mut Builder),
    want: &[(u64, u64, usize)],
    end: Option<&str>,
) -> WalReader {
    let (d, _) = wal(tag, build);
    reads_to_end(&d, want, end)
}

#[test]
fn end_by_missing_next_segment() {
    // mid-record
    let (d, _) = wal("missing", segment_crossing);
    fs::remove_file(seg_path(&d.0, 1, 2)).unwrap();
    let r = reads_to_end(
        &d,
        &[(0x100028, 0x1FFF00, 1_045_232)],
        Some("000000010000000000000002"),
    );
    assert_eq!(r.next_lsn(), 0x1FFF00);

    // at a record boundary (after a switch)
    let (d, _) = wal("missing2", |b| {
        b.small(34);
        b.record(RM_XLOG_ID, XLOG_SWITCH, 24);
        b.small(60);
    });
    fs::remove_file(seg_path(&d.0, 1, 2)).unwrap();
    let want = [(0x100028, 0x100050, 34), (0x100050, 0x200000, 24)];
    let r = reads_to_end(&d, &want, None);
    assert_eq!(r.next_lsn(), 0x200000);
}

#[test]
fn end_by_recycled_page() {
    /// What a case does to the WAL once its records are written: the page
    /// at an LSN gets an old page address, loses its flags, or is zeroed.
    enum Damage {
        OldAddress(u64, u64),
        NoFlags(u64),
        Zeroed(u64),
    }
    use Damage::*;
    // (name, the records written, the damage, where the first record ends
    // (the only one read back), why the WAL ends)
    type Case = (
        &'static str,
        &'static [usize],
        Damage,
        u64,
        Option<&'static str>,
    );
    let cases: [Case; 4] = [
        // at a record boundary: page 0x102000 carries an old page address
        (
            "recycled",
            &[8152, 40],
            OldAddress(0x102000, 0x2000),
            0x102000,
            Some("pageaddr"),
        ),
        // mid-record (segment_crossing's records): the next segment is an
        // old recycled file
        (
            "recycled2",
            &[1_045_232, 1000, 50],
            OldAddress(0x200000, 0),
            0x1FFF00,
            None,
        ),
        // a continuation page without the contrecord flag
        (
            "nocont",
            &[34, 8200],
            NoFlags(0x102000),
            0x100050,
            Some("contrecord"),
        ),
        // a zeroed (never written) page in the middle of a record
        (
            "zeropage",
            &[34, 20000],
            Zeroed(0x104000),
            0x100050,
            Some("magic"),
        ),
    ];
    for (tag, lengths, damage, first_end, end) in cases {
        let damaged = |b: &mut Builder| {
            for &len in lengths {
                b.small(len);
            }
            match damage {
                OldAddress(page, addr) => b.at(page + 8, 8).copy_from_slice(&addr.to_le_bytes()),
                NoFlags(page) => b.at(page + 2, 2).fill(0),
                Zeroed(page) => b.at(page, XLOG_BLCKSZ as usize).fill(0),
            }
        };
        ends_after(tag, damaged, &[(0x100028, first_end, lengths[0])], end);
    }
}

#[test]
fn end_by_bad_crc() {
    let (d, _) = wal("crc", |b| {
        b.small(34);
        b.small(34);
        b.small(8200);
        b.small(34);
        b.at(0x102030, 1)[0] ^= 0x01; // last byte of the 8200-byte record
    });
    let want = [(0x100028, 0x100050, 34), (0x100050, 0x100078, 34)];
    let r = reads_to_end(&d, &want, Some("checksum"));
    assert!(r.end_is_damage());
    assert_eq!(r.next_lsn(), 0x100078);
}

#[test]
fn overwritten_contrecord_is_skipped() {
    // A record abandoned at a crash past its first page; the next page
    // flagged XLP_FIRST_IS_OVERWRITE_CONTRECORD goes on with new WAL
    // whose prev-link is the record before it (PostgreSQL 15+).
    let d = TempDir::new("overwrite");
    let mut b = Builder::new(1, 1);
    let (a, _) = b.small(34);
    b.small(9000);
    let page = 0x102000;
    b.at(page, XLOG_BLCKSZ as usize).fill(0);
    (b.pos, b.prev) = (page, a);
    let (c, c_end) = b.small(40);
    b.at(page + 2, 2)
        .copy_from_slice(&XLP_FIRST_IS_OVERWRITE_CONTRECORD.to_le_bytes());
    b.write(&d.0);
    let (recs, r) = ok(read_all(&d.0, None));
    assert_eq!(spans(&recs), vec![(a, 0x100050, 34), (c, c_end, 40)]);
    assert!(!r.end_is_damage(), "{:?}", r.end_reason());
}

#[test]
fn gap_is_an_error() {
    let (d, _) = wal("gap", |b| {
        segment_crossing(b);
        b.record(RM_XLOG_ID, XLOG_SWITCH, 24);
        b.small(100); // in segment 3
    });
    fs::remove_file(seg_path(&d.0, 1, 2)).unwrap();
    let (recs, err, _) = read_all(&d.0, None);
    assert_eq!(recs.len(), 1);
    let e = err.expect("gap error");
    assert!(matches!(e, WalError::Gap { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("WAL gap: segment 000000010000000000000002 missing"),
        "{e}"
    );

    // if segment 3 is only a recycled file, the WAL simply ends
    let mut f = fs::read(seg_path(&d.0, 1, 3)).unwrap();
    f[8..16].copy_from_slice(&0x100000u64.to_le_bytes());
    fs::write(seg_path(&d.0, 1, 3), f).unwrap();
    let (recs, _) = ok(read_all(&d.0, None));
    assert_eq!(recs.len(), 1);
}
