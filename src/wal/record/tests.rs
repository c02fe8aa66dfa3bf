use super::*;
use crate::tag::{FSM_FORKNUM, INIT_FORKNUM, MAIN_FORKNUM, VISIBILITYMAP_FORKNUM};

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

#[test]
fn header_level_errors() {
    for len in 0..SIZE_OF_XLOG_RECORD {
        assert_eq!(decode(&vec![0; len]), Err(RecordError::TooShort { len }));
    }
    let buf = rich().build();
    let mut longer = buf.clone();
    longer.push(0);
    assert_eq!(
        decode(&longer),
        Err(RecordError::LengthMismatch {
            tot_len: buf.len() as u32,
            buf_len: buf.len() + 1
        })
    );
    let mut small = buf.clone();
    small[0..4].copy_from_slice(&10u32.to_le_bytes());
    assert!(matches!(
        decode(&small),
        Err(RecordError::LengthMismatch { tot_len: 10, .. })
    ));
    // Corrupt a payload byte, then a header byte covered by the CRC.
    for pos in [buf.len() - 1, 30, 16, 4] {
        let mut bad = buf.clone();
        bad[pos] ^= 0x40;
        let err = decode(&bad).unwrap_err();
        match err {
            RecordError::BadCrc { expected, computed } => {
                assert_eq!(
                    expected,
                    u32::from_le_bytes(buf[20..24].try_into().unwrap())
                );
                assert_ne!(expected, computed);
                assert!(err
                    .to_string()
                    .starts_with("record CRC mismatch: header says 0x"));
            }
            e => panic!("expected BadCrc, got {e:?}"),
        }
    }
    // The padding bytes 18..20 are covered by the CRC too.
    let mut pad = buf.clone();
    pad[18] = 1;
    assert!(matches!(decode(&pad), Err(RecordError::BadCrc { .. })));
    let mut crc = buf.clone();
    crc[21] ^= 1;
    assert!(matches!(decode(&crc), Err(RecordError::BadCrc { .. })));
    assert!(decode_unchecked_crc(&crc).is_ok());
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
fn truncated_headers() {
    let buf = one_block_with_image();
    assert!(decode(&buf).is_ok());
    assert_eq!(buf[24], 0);
    for (cut, what, offset) in [
        (25, "block header", 25),
        (26, "block header", 26),
        (27, "block header", 26),
        (28, "block image header", 28),
        (31, "block image header", 30),
        (33, "RelFileNode", 33),
        (40, "RelFileNode", 37),
        (45, "block number", 45),
        (47, "block number", 45),
    ] {
        let r = resealed(&buf[..cut]);
        let err = decode(&r).unwrap_err();
        assert_eq!(
            err,
            RecordError::TruncatedHeader {
                block: Some(0),
                what,
                offset
            },
            "cut at {cut}"
        );
        assert_eq!(
            err.to_string(),
            format!("block 0: truncated {what} at offset {offset}")
        );
    }
    // Truncated special headers.
    let mut b = RecBuilder::new();
    b.main = vec![1; 10];
    b.force_long = true;
    b.origin = Some(1);
    b.toplevel = Some(2);
    let buf = b.build();
    // origin 24..27, toplevel 27..32, main data header 32..37.
    for (cut, what) in [
        (26, "replication origin"),
        (30, "toplevel xid"),
        (35, "main data length"),
    ] {
        let r = resealed(&buf[..cut]);
        assert!(
            matches!(
                decode(&r),
                Err(RecordError::TruncatedHeader { block: None, what: w, .. }) if w == what
            ),
            "cut at {cut}: {:?}",
            decode(&r)
        );
    }
    // Short main data header cut after its id.
    let r = assemble(&RecBuilder::new(), &[XLR_BLOCK_ID_DATA_SHORT], &[]);
    assert_eq!(
        decode(&r),
        Err(RecordError::TruncatedHeader {
            block: None,
            what: "main data length",
            offset: 25
        })
    );
}

#[test]
fn block_id_errors() {
    let mut b = RecBuilder::new();
    b.blocks = vec![blk(2, Some(REL_A), 1, b"a"), blk(2, None, 2, b"b")];
    let err = decode(&b.build()).unwrap_err();
    assert_eq!(
        err,
        RecordError::OutOfOrderBlockId {
            block_id: 2,
            previous: 2
        }
    );
    assert!(err.to_string().contains("out-of-order block_id 2"));
    b.blocks = vec![blk(5, Some(REL_A), 1, b"a"), blk(1, None, 2, b"b")];
    assert!(matches!(
        decode(&b.build()),
        Err(RecordError::OutOfOrderBlockId {
            block_id: 1,
            previous: 5
        })
    ));
    for id in [33u8, 40, 100, 251] {
        b.blocks = vec![blk(id, Some(REL_A), 1, b"a")];
        let err = decode(&b.build()).unwrap_err();
        assert_eq!(
            err,
            RecordError::InvalidBlockId {
                block_id: id,
                offset: 24
            }
        );
        assert_eq!(
            err.to_string(),
            format!("invalid block_id {id} at offset 24")
        );
    }
    // SAME_REL on the first block.
    b.blocks = vec![blk(0, None, 1, b"a")];
    let err = decode(&b.build()).unwrap_err();
    assert_eq!(err, RecordError::SameRelWithoutPrevious { block: 0 });
    assert_eq!(
        err.to_string(),
        "block 0: BKPBLOCK_SAME_REL set but no previous rel"
    );
}

#[test]
fn fork_and_data_flag_errors() {
    let mut b = RecBuilder::new();
    let mut b0 = blk(0, Some(REL_A), 1, b"a");
    b0.fork = 7;
    b.blocks = vec![b0];
    let err = decode(&b.build()).unwrap_err();
    assert_eq!(
        err,
        RecordError::InvalidFork {
            block: 0,
            forknum: 7
        }
    );
    assert!(err.to_string().contains("invalid fork number 7"));

    // InvalidBlockNumber in any block reference, not only the first.
    let mut b = RecBuilder::new();
    b.blocks = vec![blk(0, Some(REL_A), 1, b"a"), blk(1, None, u32::MAX, b"b")];
    let err = decode(&b.build()).unwrap_err();
    assert_eq!(
        err,
        RecordError::InvalidBlockNumber {
            block: 1,
            blkno: u32::MAX
        }
    );
    assert_eq!(
        err.to_string(),
        "block 1: invalid block number 4294967295 (no relation reaches 4294967294)"
    );
    b.blocks[1].blkno = u32::MAX - 1;
    assert_eq!(
        decode(&b.build()).unwrap_err(),
        RecordError::InvalidBlockNumber {
            block: 1,
            blkno: u32::MAX - 1
        }
    );
    // The block below is fine.
    b.blocks[1].blkno = u32::MAX - 2;
    assert!(decode(&b.build()).is_ok());

    // HAS_DATA with data_length 0: [id, flags, len(2), rel(12), blkno(4)].
    let mut h = vec![1u8, BKPBLOCK_HAS_DATA, 0, 0];
    h.extend_from_slice(&[0; 16]);
    let err = decode(&assemble(&b, &h, &[])).unwrap_err();
    assert_eq!(err, RecordError::HasDataWithoutData { block: 1 });
    assert_eq!(
        err.to_string(),
        "block 1: BKPBLOCK_HAS_DATA set, but no data included"
    );
    // data_length 5 without HAS_DATA.
    let mut h = vec![1u8, 0, 5, 0];
    h.extend_from_slice(&[0; 16]);
    let err = decode(&assemble(&b, &h, &[0; 5])).unwrap_err();
    assert_eq!(
        err,
        RecordError::DataWithoutHasData {
            block: 1,
            data_len: 5
        }
    );
    assert!(err.to_string().contains("data length is 5"));
}

fn image_error(img: TImage) -> RecordError {
    let mut b = RecBuilder::new();
    let mut b0 = blk(4, Some(REL_A), 1, b"");
    b0.image = Some(img);
    b.blocks = vec![b0];
    decode(&b.build()).unwrap_err()
}

/// An image of `len` bytes with these header fields.
fn image(len: usize, hole_offset: u16, hole_length: u16, info: u8) -> TImage {
    TImage {
        data: vec![0; len],
        hole_offset,
        hole_length,
        info,
    }
}

/// A record with this image is refused for a reason that says `words`.
fn assert_image_refused(img: TImage, words: &str) {
    let err = image_error(img);
    assert!(err.to_string().contains(words), "{err}");
}

#[test]
fn image_errors() {
    // No hole, uncompressed, but not a full page.
    let err = image_error(TImage {
        data: vec![0; 8000],
        hole_offset: 0,
        hole_length: 0,
        info: BKPIMAGE_APPLY,
    });
    assert!(
        matches!(
            err,
            RecordError::BadImage {
                block: 4,
                bimg_len: 8000,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .starts_with("block 4: neither BKPIMAGE_HAS_HOLE"));
    assert!(err.to_string().contains("block image length 8000"));
    // Hole at offset 0.
    let err = image_error(holed_image(0, 100, true));
    assert!(matches!(
        err,
        RecordError::BadImage {
            block: 4,
            hole_offset: 0,
            hole_length: 100,
            ..
        }
    ));
    assert!(err.to_string().contains("BKPIMAGE_HAS_HOLE set"));
    // HAS_HOLE with a full-page image (hole length 0).
    let mut img = holed_image(10, 0, false);
    assert_eq!(img.data.len(), PAGE_SIZE);
    assert!(matches!(
        image_error(img.clone()),
        RecordError::BadImage { .. }
    ));
    // HAS_HOLE, uncompressed, image longer than a page.
    img.data = vec![0; PAGE_SIZE + 10];
    assert!(matches!(
        image_error(img),
        RecordError::BadImage {
            hole_length: -10,
            ..
        }
    ));
    // No hole flag but a hole offset.
    assert_image_refused(image(PAGE_SIZE, 5, 0, 0), "BKPIMAGE_HAS_HOLE not set");
    // Hole running past the page end.
    assert_image_refused(holed_image(5000, 4000, true), "past the end of the page");
    assert_image_refused(
        image(10, 8000, 500, BKPIMAGE_HAS_HOLE | BKPIMAGE_COMPRESS_PGLZ),
        "past the end of the page",
    );
    // Compressed with hole but hole length 0.
    assert_image_refused(
        image(10, 8, 0, BKPIMAGE_HAS_HOLE | BKPIMAGE_COMPRESS_ZSTD),
        "BKPIMAGE_HAS_HOLE set",
    );
    // Compressed but a whole page long.
    assert_image_refused(
        image(PAGE_SIZE, 0, 0, BKPIMAGE_COMPRESS_LZ4),
        "BKPIMAGE_COMPRESSED set",
    );
    // Two compression methods.
    assert_image_refused(
        image(10, 0, 0, BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_PGLZ),
        "more than one compression",
    );
}

#[test]
fn payload_length_errors() {
    let b = rich();
    let (h, p) = b.parts();
    // Payload one byte short / one byte long, with a block-only record.
    let mut b2 = RecBuilder::new();
    b2.blocks = vec![blk(0, Some(REL_A), 1, b"abcdef")];
    let (h2, p2) = b2.parts();
    let err = decode(&assemble(&b2, &h2, &p2[..5])).unwrap_err();
    assert_eq!(
        err,
        RecordError::TruncatedPayload {
            declared: 6,
            available: 5
        }
    );
    assert!(err.to_string().starts_with("record truncated"));
    // Extra bytes after a block-only record are read as another header.
    let mut long2 = p2.clone();
    long2.push(0);
    assert!(decode(&assemble(&b2, &h2, &long2)).is_err());
    // With main data last: truncated and trailing.
    let err = decode(&assemble(&b, &h, &p[..p.len() - 1])).unwrap_err();
    assert_eq!(
        err,
        RecordError::TruncatedPayload {
            declared: p.len() as u64,
            available: p.len() - 1
        }
    );
    let mut longer = p.clone();
    longer.extend_from_slice(b"xyz");
    let err = decode(&assemble(&b, &h, &longer)).unwrap_err();
    assert_eq!(
        err,
        RecordError::TrailingBytes {
            declared: p.len() as u64,
            available: p.len() + 3
        }
    );
    assert!(err.to_string().contains("trailing bytes"));
    // Huge long main data length.
    let h3 = [XLR_BLOCK_ID_DATA_LONG, 0xFF, 0xFF, 0xFF, 0xFF];
    assert!(matches!(
        decode(&assemble(&b, &h3, b"abc")),
        Err(RecordError::TruncatedPayload {
            declared: 0xFFFF_FFFF,
            available: 3
        })
    ));
    // Image length that the payload cannot hold.
    let err = decode(&assemble(&b, &h, &p[..100])).unwrap_err();
    assert!(
        matches!(err, RecordError::TruncatedPayload { .. }),
        "{err:?}"
    );
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
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
