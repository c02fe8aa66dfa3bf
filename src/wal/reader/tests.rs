use super::*;
use crate::pg::record::set_record_crc;
use crate::wal::segments::segment_file_name;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

mod dirs;

mod ends;

const SEG: u64 = 1024 * 1024; // 1 MiB test segments
const SYSID: u64 = 7_300_000_000_000_000_001;

/// A scratch directory removed on drop.
struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "walredo-wal-{}-{}-{}",
            std::process::id(),
            tag,
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Lays out WAL the way PostgreSQL's CopyXLogRecordToWAL does.
struct Builder {
    tli: u32,
    first_segno: u64,
    buf: Vec<u8>, // starts at first_segno * SEG
    pos: u64,     // insert position (LSN)
    prev: u64,
    records: Vec<WalRecord>,
}

impl Builder {
    fn new(tli: u32, first_segno: u64) -> Builder {
        Builder {
            tli,
            first_segno,
            buf: Vec::new(),
            pos: first_segno * SEG,
            prev: 0,
            records: Vec::new(),
        }
    }
    fn base(&self) -> u64 {
        self.first_segno * SEG
    }
    fn at(&mut self, lsn: u64, len: usize) -> &mut [u8] {
        let o = (lsn - self.base()) as usize;
        if self.buf.len() < o + len {
            let segs = (o + len).div_ceil(SEG as usize);
            self.buf.resize(segs * SEG as usize, 0);
        }
        &mut self.buf[o..o + len]
    }
    fn page_header(&mut self, page: u64, flags: u16, rem_len: u32) -> u64 {
        let long = page % SEG == 0;
        let tli = self.tli;
        let h = self.at(page, 40);
        let info = flags | if long { XLP_LONG_HEADER } else { 0 };
        h[0..2].copy_from_slice(&XLOG_PAGE_MAGIC.to_le_bytes());
        h[2..4].copy_from_slice(&info.to_le_bytes());
        h[4..8].copy_from_slice(&tli.to_le_bytes());
        h[8..16].copy_from_slice(&page.to_le_bytes());
        h[16..20].copy_from_slice(&rem_len.to_le_bytes());
        if long {
            h[24..32].copy_from_slice(&SYSID.to_le_bytes());
            h[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
            h[36..40].copy_from_slice(&(XLOG_BLCKSZ as u32).to_le_bytes());
            40
        } else {
            24
        }
    }
    /// Insert a record of `tot_len` bytes; returns (start, end) as the
    /// builder computed them (tests check against hand-computed values).
    fn record(&mut self, rmid: u8, info: u8, tot_len: usize) -> (u64, u64) {
        assert!(tot_len >= 24);
        if self.pos % XLOG_BLCKSZ == 0 {
            let p = self.pos;
            self.pos += self.page_header(p, 0, 0);
        }
        let start = self.pos;
        let mut rec = vec![0u8; tot_len];
        rec[0..4].copy_from_slice(&(tot_len as u32).to_le_bytes());
        rec[4..8].copy_from_slice(&(start as u32 ^ 0x5555).to_le_bytes());
        rec[8..16].copy_from_slice(&self.prev.to_le_bytes());
        rec[16] = info;
        rec[17] = rmid;
        for (i, b) in rec[24..].iter_mut().enumerate() {
            *b = (i as u64).wrapping_mul(31).wrapping_add(start) as u8;
        }
        set_record_crc(&mut rec);
        let mut written = 0;
        while written < tot_len {
            if self.pos % XLOG_BLCKSZ == 0 {
                let p = self.pos;
                self.pos +=
                    self.page_header(p, XLP_FIRST_IS_CONTRECORD, (tot_len - written) as u32);
            }
            let n = (tot_len - written).min((XLOG_BLCKSZ - self.pos % XLOG_BLCKSZ) as usize);
            let p = self.pos;
            self.at(p, n).copy_from_slice(&rec[written..written + n]);
            written += n;
            self.pos += n as u64;
        }
        self.pos = maxalign(self.pos);
        if rmid == RM_XLOG_ID && info & 0xF0 == XLOG_SWITCH && self.pos % SEG != 0 {
            // Rest of the segment: initialized pages with headers only.
            let next = self.pos.div_ceil(SEG) * SEG;
            let mut p = self.pos.div_ceil(XLOG_BLCKSZ) * XLOG_BLCKSZ;
            while p < next {
                self.page_header(p, 0, 0);
                p += XLOG_BLCKSZ;
            }
            self.pos = next;
        }
        self.prev = start;
        self.records.push(WalRecord {
            start_lsn: start,
            end_lsn: self.pos,
            data: rec,
        });
        (start, self.pos)
    }
    fn small(&mut self, tot_len: usize) -> (u64, u64) {
        self.record(10, 0, tot_len)
    }
    /// Write all segments touched so far.
    fn write(&mut self, dir: &Path) {
        // Make sure the segment holding `pos` exists (zero tail).
        let p = self.pos;
        self.at(p, 8);
        for (i, seg) in self.buf.chunks(SEG as usize).enumerate() {
            let segno = self.first_segno + i as u64;
            fs::write(dir.join(segment_file_name(self.tli, segno, SEG)), seg).unwrap();
        }
    }
}

fn seg_path(dir: &Path, tli: u32, segno: u64) -> PathBuf {
    dir.join(segment_file_name(tli, segno, SEG))
}

/// Read everything: (records, final error if any).
fn read_all(dir: &Path, start: Option<u64>) -> (Vec<WalRecord>, Option<WalError>, WalReader) {
    drain(WalReader::open(dir, start).unwrap())
}

/// Every record until the end or an error: (records, the error, the reader).
fn drain(mut r: WalReader) -> (Vec<WalRecord>, Option<WalError>, WalReader) {
    let mut out = Vec::new();
    loop {
        match r.next_record() {
            Ok(Some(rec)) => out.push(rec),
            Ok(None) => return (out, None, r),
            Err(e) => return (out, Some(e), r),
        }
    }
}

fn spans(recs: &[WalRecord]) -> Vec<(u64, u64, usize)> {
    recs.iter()
        .map(|r| (r.start_lsn, r.end_lsn, r.data.len()))
        .collect()
}

/// A read that must end without an error: its records and the reader.
fn ok(read: (Vec<WalRecord>, Option<WalError>, WalReader)) -> (Vec<WalRecord>, WalReader) {
    let (recs, err, r) = read;
    assert!(err.is_none(), "{err:?}");
    (recs, r)
}

/// Records that `build` adds from segment 1 of timeline 1, written to a new
/// scratch directory.
fn wal(tag: &str, build: impl FnOnce(&mut Builder)) -> (TempDir, Builder) {
    let d = TempDir::new(tag);
    let mut b = Builder::new(1, 1);
    build(&mut b);
    b.write(&d.0);
    (d, b)
}

/// Read all of `d` without an error: `b`'s records, which start and end
/// where `want` says (start, end, length).
fn read_back(d: &TempDir, b: &Builder, want: &[(u64, u64, usize)]) -> (Vec<WalRecord>, WalReader) {
    let (recs, r) = ok(read_all(&d.0, None));
    assert_eq!(spans(&recs), want);
    assert_eq!(recs, b.records);
    (recs, r)
}

/// The reader ended the WAL for a reason that says `words`.
fn assert_end(r: &WalReader, words: &str) {
    let reason = r.end_reason();
    assert!(reason.is_some_and(|e| e.contains(words)), "{reason:?}");
}

#[test]
fn many_small_records_on_one_page() {
    let (d, b) = wal("small", |b| {
        for _ in 0..10 {
            b.small(34);
        }
    });
    let (recs, r) = ok(read_all(&d.0, None));
    assert_eq!(r.timeline(), 1);
    assert_eq!(r.segment_size(), SEG);
    assert_eq!(r.system_id(), SYSID);
    assert_eq!(recs.len(), 10);
    // first record after the 40-byte long header; each takes MAXALIGN(34) = 40
    assert_eq!((recs[0].start_lsn, recs[0].end_lsn), (0x100028, 0x100050));
    assert_eq!((recs[9].start_lsn, recs[9].end_lsn), (0x100190, 0x1001B8));
    for (i, rec) in recs.iter().enumerate() {
        assert_eq!(rec.start_lsn, 0x100028 + 40 * i as u64);
        assert_eq!(rec.end_lsn, rec.start_lsn + 40);
        assert_eq!(rec.total_len(), 34);
        assert_eq!(rec.rmid(), 10);
    }
    assert_eq!(recs, b.records);
    assert_end(&r, "zero record length");
    assert_eq!(r.next_lsn(), 0x1001B8);
}

#[test]
fn record_spanning_two_pages() {
    let (d, b) = wal("two", |b| {
        b.small(8200);
        b.small(30);
    });
    // 8152 bytes on page 0, 48 after page 0x102000's 24-byte header
    read_back(
        &d,
        &b,
        &[(0x100028, 0x102048, 8200), (0x102048, 0x102068, 30)],
    );
}

#[test]
fn record_header_split_across_pages() {
    for (first, split_start, next_end) in [
        // 8 bytes of the next record on page 0: 40 + 8144 = 8184
        (8144usize, 0x101FF8u64, 0x102000 + 24 + 96),
        // 16 bytes on page 0: 40 + 8136 = 8176
        (8136, 0x101FF0, 0x102000 + 24 + 88),
    ] {
        let (d, b) = wal("hsplit", |b| {
            b.small(first);
            b.small(100);
            b.small(24);
        });
        let want = [
            (0x100028, split_start, first),
            (split_start, next_end, 100),
            (next_end, next_end + 24, 24),
        ];
        read_back(&d, &b, &want);
    }
}

#[test]
fn record_over_three_pages() {
    let (d, b) = wal("three", |b| {
        b.small(20000);
        b.small(24);
    });
    // 8152 + 8168 on pages 0 and 1, 3680 after page 0x104000's header
    read_back(
        &d,
        &b,
        &[(0x100028, 0x104E78, 20000), (0x104E78, 0x104E90, 24)],
    );
}

/// Record A fills segment 1 up to 0x1FFF00; B (1000 bytes) starts with 256
/// bytes there and ends 744 bytes after segment 2's long header.
fn segment_crossing(b: &mut Builder) {
    assert_eq!(b.small(8152 + 126 * 8168 + 7912), (0x100028, 0x1FFF00));
    b.small(1000);
    b.small(50);
}

#[test]
fn record_spanning_segments() {
    let (d, b) = wal("segcross", segment_crossing);
    let (_, r) = read_back(
        &d,
        &b,
        &[
            (0x100028, 0x1FFF00, 1_045_232),
            (0x1FFF00, 0x200310, 1000),
            (0x200310, 0x200348, 50),
        ],
    );
    assert_eq!(r.next_lsn(), 0x200348);
}

#[test]
fn record_ending_at_page_boundary() {
    let (d, b) = wal("pgend", |b| {
        b.small(8152); // fills page 0 exactly
        b.small(40);
        b.small(8168 - 40 + 8168); // rest of page 1 plus all of page 2
        b.small(24);
    });
    read_back(
        &d,
        &b,
        &[
            (0x100028, 0x102000, 8152),
            (0x102018, 0x102040, 40),
            (0x102040, 0x106000, 16296),
            (0x106018, 0x106030, 24),
        ],
    );
}

#[test]
fn xlog_switch() {
    let (d, b) = wal("switch", |b| {
        b.small(34);
        b.record(RM_XLOG_ID, XLOG_SWITCH, 24);
        b.small(60);
    });
    let (recs, _) = ok(read_all(&d.0, None));
    assert_eq!(
        spans(&recs),
        vec![
            (0x100028, 0x100050, 34),
            (0x100050, 0x200000, 24),
            (0x200028, 0x200068, 60)
        ]
    );
    assert!(recs[1].is_switch());
    assert_eq!(recs[2].prev_lsn(), 0x100050);
    assert_eq!(recs, b.records);
}

#[test]
fn start_from_lsn() {
    let (d, b) = wal("start", |b| {
        for _ in 0..3 {
            b.small(34);
        }
        // A from 0x1000A0 to 0x1FFF00: 8032 bytes on page 0, then as in segment_crossing
        assert_eq!(b.small(8032 + 126 * 8168 + 7912), (0x1000A0, 0x1FFF00));
        assert_eq!(b.small(1000), (0x1FFF00, 0x200310));
        b.small(50);
    });
    let (recs, _) = ok(read_all(&d.0, Some(0x100050)));
    assert_eq!(recs[0].start_lsn, 0x100050);
    assert_eq!(recs[1].start_lsn, 0x100078);
    assert_eq!(recs, b.records[1..]);
    // starting in the second segment
    let (recs, _) = ok(read_all(&d.0, Some(0x200310)));
    assert_eq!(recs, b.records[5..]);

    // page-start LSN: the header is skipped
    let d2 = TempDir::new("start2");
    let mut b2 = Builder::new(1, 1);
    b2.small(8152);
    b2.small(40);
    b2.write(&d2.0);
    let (recs, _, _) = read_all(&d2.0, Some(0x102000));
    assert_eq!(spans(&recs), vec![(0x102018, 0x102040, 40)]);

    let err = |lsn| WalReader::open(&d.0, Some(lsn)).unwrap_err();
    assert!(matches!(err(0x100054), WalError::InvalidStart { .. }));
    assert!(matches!(err(0x100010), WalError::InvalidStart { .. }));
    assert!(matches!(err(0x102008), WalError::InvalidStart { .. }));
    assert!(matches!(err(0x500000), WalError::StartNotFound { .. }));
    assert!(matches!(err(0x80000), WalError::StartNotFound { .. }));
}

#[test]
fn skips_leading_continuation() {
    // continuation shorter than a page
    let (d, _) = wal("lead", segment_crossing);
    fs::remove_file(seg_path(&d.0, 1, 1)).unwrap();
    let (recs, _) = ok(read_all(&d.0, None));
    assert_eq!(spans(&recs), vec![(0x200310, 0x200348, 50)]);

    // continuation covering the whole first page of the segment
    let (d, _) = wal("lead2", |b| {
        b.small(8152 + 126 * 8168 + 7912);
        assert_eq!(b.small(256 + 8152 + 100), (0x1FFF00, 0x202080));
        b.small(24);
    });
    fs::remove_file(seg_path(&d.0, 1, 1)).unwrap();
    let (recs, _) = ok(read_all(&d.0, None));
    assert_eq!(spans(&recs), vec![(0x202080, 0x202098, 24)]);
}

#[test]
fn picks_highest_timeline_and_ignores_other_files() {
    let d = TempDir::new("tli");
    let mut b1 = Builder::new(1, 1);
    b1.small(34);
    b1.write(&d.0);
    let mut b2 = Builder::new(2, 2);
    b2.small(48);
    b2.small(48);
    b2.write(&d.0);
    // Timeline 2 left timeline 1 at the start of segment 1: timeline 1's
    // file of it is not on timeline 2's history (tests/wal_paths.rs
    // follows a real switch).
    fs::write(d.0.join("00000002.history"), "1\t0/100000\tno reason\n").unwrap();
    fs::write(d.0.join("000000010000000000000003.partial"), b"x").unwrap();
    fs::create_dir(d.0.join("archive_status")).unwrap();
    let (recs, r) = ok(read_all(&d.0, None));
    assert_eq!(r.timeline(), 2);
    assert_eq!(
        spans(&recs),
        vec![(0x200028, 0x200058, 48), (0x200058, 0x200088, 48)]
    );
    // a start LSN only timeline 1 has
    let (recs, _, r) = read_all(&d.0, Some(0x100028));
    assert_eq!(r.timeline(), 1);
    assert_eq!(spans(&recs), vec![(0x100028, 0x100050, 34)]);
}

#[test]
fn open_errors() {
    let d = TempDir::new("errs");
    assert!(matches!(
        WalReader::open(&d.0.join("nope"), None),
        Err(WalError::ReadDir { .. })
    ));
    assert!(matches!(
        WalReader::open(&d.0, None),
        Err(WalError::NoSegments { .. })
    ));

    // wrong size of a later segment: reported when it is reached
    let mut b = Builder::new(1, 1);
    segment_crossing(&mut b);
    b.write(&d.0);
    let p2 = seg_path(&d.0, 1, 2);
    let mut f = fs::read(&p2).unwrap();
    f.truncate(SEG as usize / 2);
    fs::write(&p2, &f).unwrap();
    let (recs, err, _) = read_all(&d.0, None);
    assert_eq!(recs.len(), 1);
    assert!(matches!(err, Some(WalError::WrongSegmentSize { .. })));

    // not a valid segment size at all
    let d = TempDir::new("errs2");
    fs::write(seg_path(&d.0, 1, 1), vec![0u8; 12345]).unwrap();
    let e = WalReader::open(&d.0, None).unwrap_err();
    assert!(
        matches!(e, WalError::WrongSegmentSize { expected: None, .. }),
        "{e}"
    );

    // long header disagreeing with the file size
    let (d, _) = wal("errs3", |b| {
        b.small(34);
        b.at(0x100020, 4)
            .copy_from_slice(&(2 * SEG as u32).to_le_bytes());
    });
    let e = WalReader::open(&d.0, None).unwrap_err();
    assert!(matches!(e, WalError::BadHeader { .. }), "{e}");
    assert!(e.to_string().contains("segment size"), "{e}");

    // wrong block size
    let (d, _) = wal("errs4", |b| {
        b.small(34);
        b.at(0x100024, 4).copy_from_slice(&16384u32.to_le_bytes());
    });
    assert!(matches!(
        WalReader::open(&d.0, None),
        Err(WalError::BadHeader { .. })
    ));

    // a PostgreSQL version not served (13's magic)
    let (d, _) = wal("errs5", |b| {
        b.small(34);
        b.at(0x100000, 2).copy_from_slice(&0xD106u16.to_le_bytes());
    });
    let e = WalReader::open(&d.0, None).unwrap_err();
    assert!(e.to_string().contains("magic 0xD106"), "{e}");

    // PostgreSQL 17 WAL: read as such (every page has 17's magic), and
    // refused where 15 is asked for; a page of 15 in it is invalid.
    let d = TempDir::new("errs6");
    let mut b = Builder::new(1, 1);
    let (start, _) = b.small(34);
    b.small(9000);
    for page in (0..b.buf.len() as u64).step_by(XLOG_BLCKSZ as usize) {
        b.at(0x100000 + page, 2)
            .copy_from_slice(&xlog_page_magic(17).unwrap().to_le_bytes());
    }
    b.write(&d.0);
    let r = WalReader::open(&d.0, None).unwrap();
    assert_eq!(r.pg_version(), 17);
    r.expect_version(17).unwrap();
    let e = r.expect_version(15).unwrap_err();
    assert!(
        matches!(
            e,
            WalError::WrongVersion {
                found: 17,
                expected: 15,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("PostgreSQL 17 WAL"), "{e}");
    assert_eq!(r.map(|r| r.unwrap().start_lsn).next(), Some(start));
    b.at(0x102000, 2)
        .copy_from_slice(&XLOG_PAGE_MAGIC.to_le_bytes());
    b.write(&d.0);
    let mut r = WalReader::open(&d.0, None).unwrap();
    assert!(r.next().unwrap().is_ok());
    assert!(r.next().is_none());
    assert_end(&r, "magic");
}

#[test]
fn iterator_stops_after_end() {
    let (d, _) = wal("iter", |b| {
        b.small(34);
        b.small(34);
    });
    let mut r = WalReader::open(&d.0, None).unwrap();
    let recs: Vec<WalRecord> = r.by_ref().map(Result::unwrap).collect();
    assert_eq!(recs.len(), 2);
    assert!(r.next().is_none());
    assert!(r.next_record().unwrap().is_none());
}
