use super::*;
use crate::tag::{FSM_FORKNUM, INIT_FORKNUM, MAIN_FORKNUM, VISIBILITYMAP_FORKNUM};
use crate::test_rng::Rng;

mod errors;

const REL_A: RelFileNode = RelFileNode {
    spcnode: 1663,
    dbnode: 5,
    relnode: 16384,
};
const REL_B: RelFileNode = RelFileNode {
    spcnode: 1663,
    dbnode: 5,
    relnode: 16390,
};

#[derive(Clone)]
struct TImage {
    data: Vec<u8>,
    hole_offset: u16,
    /// Written only when the image has a hole and is compressed.
    hole_length: u16,
    info: u8,
}

#[derive(Clone)]
struct TBlock {
    id: u8,
    fork: u8,
    will_init: bool,
    /// None: BKPBLOCK_SAME_REL.
    rel: Option<RelFileNode>,
    blkno: u32,
    data: Vec<u8>,
    image: Option<TImage>,
}

fn blk(id: u8, rel: Option<RelFileNode>, blkno: u32, data: &[u8]) -> TBlock {
    TBlock {
        id,
        fork: MAIN_FORKNUM,
        will_init: false,
        rel,
        blkno,
        data: data.to_vec(),
        image: None,
    }
}

/// An uncompressed image of a page with a hole at [off, off+len).
fn holed_image(off: u16, len: u16, apply: bool) -> TImage {
    TImage {
        data: (0..PAGE_SIZE - len as usize).map(|i| i as u8).collect(),
        hole_offset: off,
        hole_length: 0,
        info: BKPIMAGE_HAS_HOLE | if apply { BKPIMAGE_APPLY } else { 0 },
    }
}

#[derive(Clone, Default)]
struct RecBuilder {
    xid: u32,
    prev: u64,
    info: u8,
    rmid: u8,
    blocks: Vec<TBlock>,
    origin: Option<u16>,
    toplevel: Option<u32>,
    main: Vec<u8>,
    force_long: bool,
}

impl RecBuilder {
    fn new() -> Self {
        RecBuilder {
            xid: 742,
            prev: 0x0000_0001_0200_0028,
            info: 0x10,
            rmid: 10,
            ..Default::default()
        }
    }

    /// Header bytes (after the fixed header) and payload bytes.
    fn parts(&self) -> (Vec<u8>, Vec<u8>) {
        let mut h = Vec::new();
        let mut p = Vec::new();
        for b in &self.blocks {
            let mut flags = b.fork;
            if b.image.is_some() {
                flags |= BKPBLOCK_HAS_IMAGE;
            }
            if !b.data.is_empty() {
                flags |= BKPBLOCK_HAS_DATA;
            }
            if b.will_init {
                flags |= BKPBLOCK_WILL_INIT;
            }
            if b.rel.is_none() {
                flags |= BKPBLOCK_SAME_REL;
            }
            h.push(b.id);
            h.push(flags);
            h.extend_from_slice(&(b.data.len() as u16).to_le_bytes());
            if let Some(img) = &b.image {
                h.extend_from_slice(&(img.data.len() as u16).to_le_bytes());
                h.extend_from_slice(&img.hole_offset.to_le_bytes());
                h.push(img.info);
                if img.info & BKPIMAGE_HAS_HOLE != 0 && img.info & BKPIMAGE_COMPRESS_MASK != 0 {
                    h.extend_from_slice(&img.hole_length.to_le_bytes());
                }
                p.extend_from_slice(&img.data);
            }
            if let Some(rel) = b.rel {
                h.extend_from_slice(&rel.spcnode.to_le_bytes());
                h.extend_from_slice(&rel.dbnode.to_le_bytes());
                h.extend_from_slice(&rel.relnode.to_le_bytes());
            }
            h.extend_from_slice(&b.blkno.to_le_bytes());
            p.extend_from_slice(&b.data);
        }
        if let Some(o) = self.origin {
            h.push(XLR_BLOCK_ID_ORIGIN);
            h.extend_from_slice(&o.to_le_bytes());
        }
        if let Some(x) = self.toplevel {
            h.push(XLR_BLOCK_ID_TOPLEVEL_XID);
            h.extend_from_slice(&x.to_le_bytes());
        }
        if !self.main.is_empty() || self.force_long {
            if self.main.len() < 256 && !self.force_long {
                h.push(XLR_BLOCK_ID_DATA_SHORT);
                h.push(self.main.len() as u8);
            } else {
                h.push(XLR_BLOCK_ID_DATA_LONG);
                h.extend_from_slice(&(self.main.len() as u32).to_le_bytes());
            }
            p.extend_from_slice(&self.main);
        }
        (h, p)
    }

    fn build(&self) -> Vec<u8> {
        let (h, p) = self.parts();
        assemble(self, &h, &p)
    }
}

/// Fixed header + `headers` + `payload`, with tot_len and CRC filled in.
fn assemble(b: &RecBuilder, headers: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; SIZE_OF_XLOG_RECORD];
    buf[4..8].copy_from_slice(&b.xid.to_le_bytes());
    buf[8..16].copy_from_slice(&b.prev.to_le_bytes());
    buf[16] = b.info;
    buf[17] = b.rmid;
    buf.extend_from_slice(headers);
    buf.extend_from_slice(payload);
    reseal(&mut buf);
    buf
}

/// Set xl_tot_len to the buffer length and recompute the CRC.
fn reseal(buf: &mut [u8]) {
    let len = buf.len() as u32;
    buf[0..4].copy_from_slice(&len.to_le_bytes());
    set_record_crc(buf);
}

fn resealed(buf: &[u8]) -> Vec<u8> {
    let mut v = buf.to_vec();
    reseal(&mut v);
    v
}

fn check_round_trip(b: &RecBuilder) {
    let buf = b.build();
    let rec = decode(&buf).unwrap_or_else(|e| panic!("decode failed: {e}"));
    assert_eq!(rec.tot_len as usize, buf.len());
    assert_eq!(rec.xid, b.xid);
    assert_eq!(rec.prev, b.prev);
    assert_eq!(rec.info, b.info);
    assert_eq!(rec.rmid, b.rmid);
    assert_eq!(rec.origin, b.origin);
    assert_eq!(rec.toplevel_xid, b.toplevel);
    assert_eq!(rec.main_data, &b.main[..]);
    assert_eq!(rec.blocks.len(), b.blocks.len());
    let mut last_rel = None;
    for (got, want) in rec.blocks.iter().zip(&b.blocks) {
        let rel = want.rel.or(last_rel).unwrap();
        last_rel = Some(rel);
        assert_eq!(got.id, want.id);
        assert_eq!(
            got.tag,
            PageTag {
                rel,
                forknum: want.fork,
                blkno: want.blkno
            }
        );
        assert_eq!(got.will_init, want.will_init);
        assert_eq!(got.has_data, !want.data.is_empty());
        assert_eq!(got.data, &want.data[..]);
        match (&got.image, &want.image) {
            (None, None) => {}
            (Some(g), Some(w)) => {
                assert_eq!(g.data, &w.data[..]);
                assert_eq!(g.hole_offset, w.hole_offset);
                assert_eq!(g.bimg_info, w.info);
                let want_hole = if w.info & BKPIMAGE_HAS_HOLE == 0 {
                    0
                } else if w.info & BKPIMAGE_COMPRESS_MASK != 0 {
                    w.hole_length
                } else {
                    (PAGE_SIZE - w.data.len()) as u16
                };
                assert_eq!(g.hole_length, want_hole);
            }
            _ => panic!("image presence differs for block {}", want.id),
        }
    }
    assert_eq!(decode_unchecked_crc(&buf), Ok(rec));
}

/// A record with several blocks, images, same-rel, origin and main data.
fn rich() -> RecBuilder {
    let mut b = RecBuilder::new();
    let mut b0 = blk(0, Some(REL_A), 7, b"tuple data");
    b0.image = Some(holed_image(200, 3000, true));
    let mut b1 = blk(1, None, 8, b"");
    b1.will_init = true;
    let mut b3 = blk(3, Some(REL_B), 0, &[9; 300]);
    b3.fork = VISIBILITYMAP_FORKNUM;
    b3.image = Some(TImage {
        data: vec![0x5A; 1234],
        hole_offset: 100,
        hole_length: 4000,
        info: BKPIMAGE_HAS_HOLE | BKPIMAGE_COMPRESS_LZ4,
    });
    b.blocks = vec![b0, b1, b3];
    b.origin = Some(3);
    b.toplevel = Some(700);
    b.main = b"main data".to_vec();
    b
}

#[test]
fn round_trips() {
    // Empty record: header only.
    check_round_trip(&RecBuilder::new());
    // Main data only, short and long forms.
    let mut b = RecBuilder::new();
    b.main = vec![1, 2, 3];
    check_round_trip(&b);
    b.force_long = true;
    check_round_trip(&b);
    b.main = (0..1000).map(|i| i as u8).collect();
    b.force_long = false;
    check_round_trip(&b);
    // Zero-length main data in the long form.
    b.main.clear();
    b.force_long = true;
    check_round_trip(&b);
    // One block with data and no main data.
    let mut b = RecBuilder::new();
    b.blocks = vec![blk(0, Some(REL_A), 1, b"abc")];
    check_round_trip(&b);
    // A full page image without hole, every fork, block id 32.
    let mut b = RecBuilder::new();
    let mut b0 = blk(5, Some(REL_A), 1, b"");
    b0.fork = FSM_FORKNUM;
    b0.image = Some(TImage {
        data: vec![7; PAGE_SIZE],
        hole_offset: 0,
        hole_length: 0,
        info: BKPIMAGE_APPLY,
    });
    let mut b1 = blk(32, None, 2, b"x");
    b1.fork = INIT_FORKNUM;
    b.blocks = vec![b0, b1];
    b.toplevel = Some(1);
    check_round_trip(&b);
    // Compressed images without a hole, each method.
    for (m, c) in [
        (BKPIMAGE_COMPRESS_PGLZ, Compression::Pglz),
        (BKPIMAGE_COMPRESS_LZ4, Compression::Lz4),
        (BKPIMAGE_COMPRESS_ZSTD, Compression::Zstd),
    ] {
        let mut b = RecBuilder::new();
        let mut b0 = blk(0, Some(REL_B), 9, b"");
        b0.image = Some(TImage {
            data: vec![3; 100],
            hole_offset: 0,
            hole_length: 0,
            info: m | BKPIMAGE_APPLY,
        });
        b.blocks = vec![b0];
        check_round_trip(&b);
        let buf = b.build();
        let rec = decode(&buf).unwrap();
        let img = rec.blocks[0].image.unwrap();
        assert!(img.is_compressed());
        assert_eq!(img.compression(), c);
    }
    check_round_trip(&rich());
}

#[test]
fn accessors() {
    let mut b = rich();
    b.info = 0x30 | XLR_CHECK_CONSISTENCY;
    let buf = b.build();
    let rec = decode(&buf).unwrap();
    assert!(rec.check_consistency());
    assert!(!rec.special_rel_update());
    assert_eq!(rec.rmgr_info(), 0x30);
    assert_eq!(rec.rmgr_name(), "Heap");
    let t0 = PageTag {
        rel: REL_A,
        forknum: MAIN_FORKNUM,
        blkno: 7,
    };
    let t1 = PageTag { blkno: 8, ..t0 };
    let t3 = PageTag {
        rel: REL_B,
        forknum: VISIBILITYMAP_FORKNUM,
        blkno: 0,
    };
    assert_eq!(rec.block_for(&t0).unwrap().id, 0);
    assert_eq!(rec.block_for(&t1).unwrap().id, 1);
    assert_eq!(rec.block_for(&t3).unwrap().id, 3);
    assert!(rec.block_for(&PageTag { blkno: 99, ..t0 }).is_none());
    assert!(rec.initializes(&t0)); // image with APPLY
    assert!(rec.initializes(&t1)); // WILL_INIT
    assert!(!rec.initializes(&t3)); // image without APPLY
    assert!(!rec.initializes(&PageTag { blkno: 99, ..t0 }));
    let img = rec.blocks[0].image.unwrap();
    assert!(img.apply() && img.has_hole() && !img.is_compressed());
    assert_eq!(img.compression(), Compression::None);
    assert_eq!((img.hole_offset, img.hole_length), (200, 3000));

    assert_eq!(rmgr_name(0), "XLOG");
    assert_eq!(rmgr_name(9), "Heap2");
    assert_eq!(rmgr_name(21), "LogicalMessage");
    assert_eq!(rmgr_name(22), "unknown");
    assert_eq!(rmgr_name(127), "unknown");
    assert_eq!(rmgr_name(128), "custom");
    assert_eq!(rmgr_name(255), "custom");
}

/// One block with an uncompressed holed image, no SAME_REL, 4 data bytes.
/// Header offsets: block_id 24, fork_flags 25, data_length 26..28,
/// image header 28..33, RelFileNode 33..45, blkno 45..49.
fn one_block_with_image() -> Vec<u8> {
    let mut b = RecBuilder::new();
    let mut b0 = blk(0, Some(REL_A), 7, b"data");
    b0.image = Some(holed_image(100, 8000, true));
    b.blocks = vec![b0];
    b.build()
}

#[test]
fn never_panics_on_mangled_input() {
    let samples = [rich().build(), one_block_with_image(), {
        let mut b = RecBuilder::new();
        b.main = vec![1; 300];
        b.origin = Some(9);
        b.build()
    }];
    for buf in &samples {
        for cut in 0..=buf.len() {
            let _ = decode(&buf[..cut]);
            let _ = decode_unchecked_crc(&buf[..cut]);
            if cut >= SIZE_OF_XLOG_RECORD {
                let r = resealed(&buf[..cut]);
                let res = decode(&r);
                if cut == buf.len() {
                    assert!(res.is_ok());
                }
            }
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        // Corrupt one header-area byte (where structure lives) or any byte.
        let hdr_end = buf.len().min(80);
        for i in 0..4000 {
            let mut m = buf.clone();
            let pos = if i % 2 == 0 {
                SIZE_OF_XLOG_RECORD + (rng.next() as usize) % (hdr_end - SIZE_OF_XLOG_RECORD)
            } else {
                (rng.next() as usize) % m.len()
            };
            let v = rng.next() as u8;
            m[pos] = v;
            let _ = decode(&m);
            let _ = decode_unchecked_crc(&m);
            if pos >= 4 {
                reseal(&mut m);
                let _ = decode(&m);
            }
        }
        // Every byte position with every value in the header area, resealed.
        for pos in SIZE_OF_XLOG_RECORD..hdr_end {
            for v in 0..=255u8 {
                let mut m = buf.clone();
                m[pos] = v;
                reseal(&mut m);
                let _ = decode(&m);
            }
        }
    }
    // Random garbage behind a valid header.
    let mut rng = Rng(12345);
    for _ in 0..20000 {
        let len = SIZE_OF_XLOG_RECORD + (rng.next() as usize % 64);
        let mut m: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        reseal(&mut m);
        let _ = decode(&m);
    }
}

/// One block whose image has `info` as written, `len` stored bytes, and a
/// hole of 4000 bytes at 100 when `hole` (its length written after the
/// header, as for a compressed image).
fn image_record(info: u8, len: usize, hole: bool) -> Vec<u8> {
    let mut b = RecBuilder::new();
    let mut b0 = blk(0, Some(REL_A), 3, b"");
    // Built with 15's flags, so that the builder writes the hole length of
    // a compressed image; `info` goes in afterwards.
    b0.image = Some(TImage {
        data: vec![6; len],
        hole_offset: if hole { 100 } else { 0 },
        hole_length: if hole { 4000 } else { 0 },
        info: BKPIMAGE_COMPRESS_PGLZ | if hole { BKPIMAGE_HAS_HOLE } else { 0 },
    });
    b.blocks = vec![b0];
    let mut buf = b.build();
    // Header, block id, fork flags, data length, bimg_len, hole_offset.
    buf[SIZE_OF_XLOG_RECORD + 8] = info;
    set_record_crc(&mut buf);
    buf
}

#[test]
fn pg14_image_flags_are_read_in_15s_layout() {
    let pg14 = RecordFormat::Pg14;
    // 14's BKPIMAGE_APPLY (0x04) on a whole uncompressed page.
    let full = image_record(BKPIMAGE_APPLY_14, PAGE_SIZE, false);
    let img = decode_as(&full, pg14).unwrap().blocks[0].image.unwrap();
    assert!(img.apply());
    assert_eq!(img.compression(), Compression::None);
    assert_eq!(img.bimg_info, BKPIMAGE_APPLY);
    // Read as 15's, 0x04 is pglz: a compressed image cannot fill the page.
    assert!(matches!(decode(&full), Err(RecordError::BadImage { .. })));

    // 14's BKPIMAGE_IS_COMPRESSED (0x02), with and without apply: pglz.
    for (info, apply) in [
        (BKPIMAGE_IS_COMPRESSED_14, false),
        (BKPIMAGE_IS_COMPRESSED_14 | BKPIMAGE_APPLY_14, true),
    ] {
        let rec = image_record(info, 100, false);
        let img = decode_as(&rec, pg14).unwrap().blocks[0].image.unwrap();
        assert_eq!(img.compression(), Compression::Pglz);
        assert_eq!(img.apply(), apply);
        // Read as 15's, 0x02 is an uncompressed image to apply: too short;
        // 0x06 happens to mean the same on both.
        assert_eq!(decode(&rec).is_err(), !apply);
    }

    // Compressed with a hole: the hole length follows the header, as on 15.
    let holed = image_record(BKPIMAGE_HAS_HOLE | BKPIMAGE_IS_COMPRESSED_14, 300, true);
    let img = decode_as(&holed, pg14).unwrap().blocks[0].image.unwrap();
    assert_eq!((img.hole_offset, img.hole_length), (100, 4000));
    assert_eq!(img.compression(), Compression::Pglz);
    assert!(!img.apply() && img.has_hole());

    // Bits 14 does not define (15's lz4 and zstd) mean nothing to 14.
    let odd = image_record(BKPIMAGE_APPLY_14 | 0x18, PAGE_SIZE, false);
    let img = decode_as(&odd, pg14).unwrap().blocks[0].image.unwrap();
    assert_eq!(img.compression(), Compression::None);

    // 15's records read the same either way they are asked for.
    let rec15 = rich().build();
    assert_eq!(decode(&rec15), decode_as(&rec15, RecordFormat::Pg15));
    assert_eq!(RecordFormat::of_version(14), pg14);
    for v in 15..=18 {
        assert_eq!(RecordFormat::of_version(v), RecordFormat::Pg15);
    }
}
