//! Full-page images, restored in-process as PostgreSQL's `RestoreBlockImage`
//! does: decompressed (pglz, lz4 or zstd), the hole put back as zeros. A
//! request whose newest applicable image is its last record needs no process
//! at all; one with later records starts from the image.

use std::fmt;

use crate::pg::page::{page_is_new, set_pd_lsn};
use crate::wal::record::{BlockImage, Compression};
use crate::PAGE_SIZE;

/// Why an image cannot be restored: PostgreSQL's redo would refuse it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError(pub String);

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid full-page image: {}", self.0)
    }
}

impl std::error::Error for ImageError {}

/// The page an image holds (its LSN not yet stamped).
pub fn restore(img: &BlockImage<'_>) -> Result<Box<[u8; PAGE_SIZE]>, ImageError> {
    let hole_offset = usize::from(img.hole_offset);
    let hole_length = usize::from(img.hole_length);
    let stored_len = PAGE_SIZE
        .checked_sub(hole_length)
        .filter(|_| hole_offset + hole_length <= PAGE_SIZE)
        .ok_or_else(|| ImageError(format!("hole {hole_offset}+{hole_length} beyond the page")))?;
    let mut stored = [0u8; PAGE_SIZE];
    let stored = &mut stored[..stored_len];
    match img.compression() {
        Compression::None => {
            if img.data.len() != stored_len {
                return Err(ImageError(format!(
                    "{} bytes stored, {stored_len} expected",
                    img.data.len()
                )));
            }
            stored.copy_from_slice(img.data);
        }
        Compression::Pglz => pglz_decompress(img.data, stored)?,
        Compression::Lz4 => {
            let n = lz4_flex::block::decompress_into(img.data, stored)
                .map_err(|e| ImageError(format!("lz4: {e}")))?;
            check_len("lz4", n, stored_len)?;
        }
        Compression::Zstd => {
            let n = zstd::bulk::decompress_to_buffer(img.data, stored)
                .map_err(|e| ImageError(format!("zstd: {e}")))?;
            check_len("zstd", n, stored_len)?;
        }
    }
    let mut page = Box::new([0u8; PAGE_SIZE]);
    page[..hole_offset].copy_from_slice(&stored[..hole_offset]);
    page[hole_offset + hole_length..].copy_from_slice(&stored[hole_offset..]);
    Ok(page)
}

fn check_len(what: &str, got: usize, want: usize) -> Result<(), ImageError> {
    if got == want {
        Ok(())
    } else {
        Err(ImageError(format!(
            "{what} gave {got} bytes, {want} expected"
        )))
    }
}

/// Stamp the page as redo does after restoring an image: the record's end
/// LSN, unless the page is new (all-zero header).
pub fn stamp_lsn(page: &mut [u8; PAGE_SIZE], end_lsn: u64) {
    if page_is_new(page) {
        return;
    }
    set_pd_lsn(page, end_lsn);
}

/// PostgreSQL's pglz format (common/pg_lzcompress.c), decompressed into
/// exactly `out.len()` bytes, all input consumed, or an error.
///
/// A control byte announces eight items, low bit first: 0, one literal byte;
/// 1, a back-reference of two bytes, `LLLL OOOO` `OOOO OOOO` (length
/// `L + 3`, and when that is 18 a third byte adds to it; offset `O`, 1 to
/// 4095, back from the current position; the copy may overlap itself).
pub fn pglz_decompress(src: &[u8], out: &mut [u8]) -> Result<(), ImageError> {
    let corrupt = |why: &str| Err(ImageError(format!("pglz: {why}")));
    let (mut sp, mut dp) = (0, 0);
    while sp < src.len() && dp < out.len() {
        let control = src[sp];
        sp += 1;
        for bit in 0..8 {
            if sp >= src.len() || dp >= out.len() {
                break;
            }
            if control & (1 << bit) == 0 {
                out[dp] = src[sp];
                dp += 1;
                sp += 1;
                continue;
            }
            let (Some(&b0), Some(&b1)) = (src.get(sp), src.get(sp + 1)) else {
                return corrupt("truncated back-reference");
            };
            sp += 2;
            let mut len = usize::from(b0 & 0x0f) + 3;
            let off = (usize::from(b0 & 0xf0) << 4) | usize::from(b1);
            if len == 18 {
                let Some(&extra) = src.get(sp) else {
                    return corrupt("truncated length");
                };
                len += usize::from(extra);
                sp += 1;
            }
            if off == 0 || off > dp {
                return corrupt("back-reference before the start");
            }
            len = len.min(out.len() - dp);
            // Overlapping copies repeat the pattern, byte by byte.
            for i in 0..len {
                out[dp + i] = out[dp + i - off];
            }
            dp += len;
        }
    }
    if dp != out.len() || sp != src.len() {
        return corrupt("length does not match");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::record::{BKPIMAGE_APPLY, BKPIMAGE_COMPRESS_LZ4, BKPIMAGE_COMPRESS_PGLZ};

    #[test]
    fn pglz_literals_and_overlapping_references() {
        // "abc", then 9 bytes copied from 3 back: "abcabcabcabc".
        let src = [0b0000_1000, b'a', b'b', b'c', 0x06, 0x03];
        let mut out = [0u8; 12];
        pglz_decompress(&src, &mut out).unwrap();
        assert_eq!(&out, b"abcabcabcabc");
        // A long match: length 18 + 10 = 28 from 1 back.
        let src = [0b0000_0010, b'x', 0x0f, 0x01, 10];
        let mut out = [0u8; 29];
        pglz_decompress(&src, &mut out).unwrap();
        assert!(out.iter().all(|&b| b == b'x'));
        // Corrupt: a reference before the start, a short result, leftovers.
        assert!(pglz_decompress(&[0b1, 0x00, 0x05], &mut [0u8; 3]).is_err());
        assert!(pglz_decompress(&[0, b'a'], &mut [0u8; 2]).is_err());
        assert!(pglz_decompress(&[0, b'a', b'b'], &mut [0u8; 1]).is_err());
        assert!(pglz_decompress(&[0b1, 0x00], &mut [0u8; 3]).is_err());
    }

    #[test]
    fn images_with_holes_and_compression() {
        let mut page = [0u8; PAGE_SIZE];
        for (i, b) in page.iter_mut().enumerate() {
            *b = if (100..4000).contains(&i) {
                0
            } else {
                (i % 251) as u8
            };
        }
        let stored: Vec<u8> = page[..100].iter().chain(&page[4000..]).copied().collect();
        let img = BlockImage {
            data: &stored,
            hole_offset: 100,
            hole_length: 3900,
            bimg_info: BKPIMAGE_APPLY | 0x01,
        };
        assert_eq!(&restore(&img).unwrap()[..], &page[..]);

        let lz4 = lz4_flex::block::compress(&stored);
        let img = BlockImage {
            data: &lz4,
            bimg_info: BKPIMAGE_APPLY | 0x01 | BKPIMAGE_COMPRESS_LZ4,
            ..img
        };
        assert_eq!(&restore(&img).unwrap()[..], &page[..]);
        let truncated = BlockImage {
            data: &lz4[..lz4.len() - 1],
            ..img
        };
        assert!(restore(&truncated).is_err());
        let garbage = BlockImage {
            data: &[0xff; 40],
            bimg_info: BKPIMAGE_APPLY | BKPIMAGE_COMPRESS_PGLZ,
            hole_offset: 0,
            hole_length: 0,
        };
        assert!(restore(&garbage).is_err());
    }
}
