//! Every way a record is refused, and what the error says.

use super::*;

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
                header: ImageHeader { bimg_len: 8000, .. },
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
            header: ImageHeader {
                hole_offset: 0,
                hole_length: 100,
                ..
            },
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
            header: ImageHeader {
                hole_length: -10,
                ..
            },
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
