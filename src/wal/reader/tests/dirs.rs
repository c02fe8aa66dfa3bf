//! Segments read from several directories, and read up to a limit.

use super::*;

fn read_dirs(
    dirs: &[&Path],
    start: Start,
    limit: Option<u64>,
) -> (Vec<WalRecord>, Option<WalError>, WalReader) {
    let dirs: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    let segs = Segments::list(&dirs, None, None).unwrap();
    let mut r = WalReader::open_segments(Arc::new(segs), start, None).unwrap();
    if let Some(l) = limit {
        r.set_limit(l);
    }
    drain(r)
}

/// Three segments: a record crossing from 1 into 2, a switch in 2, records
/// in 3; written to each of `dirs`.
fn three_segments_in(dirs: &[&TempDir]) -> Builder {
    let mut b = Builder::new(1, 1);
    segment_crossing(&mut b);
    b.record(RM_XLOG_ID, XLOG_SWITCH, 24);
    b.small(100);
    b.small(100);
    for d in dirs {
        b.write(&d.0);
    }
    b
}

#[test]
fn segments_split_between_directories() {
    let all = TempDir::new("split-all");
    let wal = TempDir::new("split-wal");
    let arch = TempDir::new("split-arch");
    let b = three_segments_in(&[&all, &wal]);
    // The archive has 1 and 2; pg_wal only 3.
    for s in [1, 2] {
        fs::rename(seg_path(&wal.0, 1, s), seg_path(&arch.0, 1, s)).unwrap();
    }
    let (recs, _) = ok(read_dirs(&[&wal.0, &arch.0], Start::Oldest, None));
    assert_eq!(recs, b.records);
    // Starting in a segment skips the record that continues into it.
    let (recs, _, _) = read_dirs(&[&wal.0, &arch.0], Start::Segment(2), None);
    assert_eq!(recs, b.records[2..]);
}

#[test]
fn recycled_or_overwritten_file_is_looked_up_in_the_next_directory() {
    let wal = TempDir::new("recyc-wal");
    let arch = TempDir::new("recyc-arch");
    let b = three_segments_in(&[&wal, &arch]);
    // Segment 2 in pg_wal: recycled, overwritten from its start...
    let p2 = seg_path(&wal.0, 1, 2);
    let mut f = fs::read(&p2).unwrap();
    f[8..16].copy_from_slice(&(7 * SEG).to_le_bytes());
    fs::write(&p2, &f).unwrap();
    let (recs, _) = ok(read_dirs(&[&wal.0, &arch.0], Start::Oldest, None));
    assert_eq!(recs, b.records);
    fs::copy(seg_path(&arch.0, 1, 2), &p2).unwrap();
    // Segment 1 only from its third page on (overwritten while it was
    // read): the long record crossing it comes from the archive.
    let p1 = seg_path(&wal.0, 1, 1);
    let mut f = fs::read(&p1).unwrap();
    f[2 * 8192 + 8..2 * 8192 + 16].copy_from_slice(&0u64.to_le_bytes());
    fs::write(&p1, &f).unwrap();
    let (recs, _) = ok(read_dirs(&[&wal.0, &arch.0], Start::Oldest, None));
    assert_eq!(recs, b.records);
    // Without the archive, the WAL ends at the bad page.
    let (recs, r) = ok(read_dirs(&[&wal.0], Start::Oldest, None));
    assert!(recs.len() < b.records.len());
    assert_end(&r, "pageaddr");
    // A truncated file in pg_wal: the archive's copy is read.
    fs::write(&p1, &f[..SEG as usize / 2]).unwrap();
    let (recs, _) = ok(read_dirs(&[&wal.0, &arch.0], Start::Oldest, None));
    assert_eq!(recs, b.records);
}

#[test]
fn removed_after_listing_is_a_clear_error() {
    let wal = TempDir::new("removed");
    three_segments_in(&[&wal]);
    let segs = Segments::list(std::slice::from_ref(&wal.0), None, None).unwrap();
    let mut r = WalReader::open_segments(Arc::new(segs), Start::Oldest, None).unwrap();
    fs::remove_file(seg_path(&wal.0, 1, 2)).unwrap();
    assert!(r.next_record().unwrap().is_some());
    let e = r.next_record().unwrap_err();
    assert!(matches!(e, WalError::Removed { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("000000010000000000000002 was removed"),
        "{e}"
    );
    assert!(e.to_string().contains("wal_keep_size"), "{e}");
}

#[test]
fn limit_stops_before_a_record_ending_after_it() {
    let (d, b) = wal("limit", |b| {
        for _ in 0..3 {
            b.small(34);
        }
    });
    // Limit inside the third record: two are read.
    let (recs, r) = ok(read_dirs(&[&d.0], Start::Oldest, Some(0x100078 + 8)));
    assert_eq!(recs, b.records[..2]);
    assert!(r.reached_limit());
    // Limit exactly at a record end: it is read.
    let (recs, _, r) = read_dirs(&[&d.0], Start::Oldest, Some(0x100078));
    assert_eq!(recs, b.records[..2]);
    assert!(r.reached_limit());
    // Past the end: the WAL ends first.
    let (recs, _, r) = read_dirs(&[&d.0], Start::Oldest, Some(0x200000));
    assert_eq!(recs, b.records);
    assert!(!r.reached_limit());
    // A record crossing pages is not read past the limit.
    let (d, b) = wal("limit2", |b| {
        b.small(34);
        b.small(20000);
    });
    let (recs, _, r) = read_dirs(&[&d.0], Start::Oldest, Some(0x102000));
    assert_eq!(recs, b.records[..1]);
    assert!(r.reached_limit());
}
