//! Full-page image restoration (pglz, lz4, zstd, holes) on arbitrary bytes:
//! an error or a whole page, never a panic. pglz is this project's own code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walredo::wal::image::{pglz_decompress, restore};
use walredo::wal::record::BlockImage;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let img = BlockImage {
        data: &data[5..],
        hole_offset: u16::from_le_bytes([data[0], data[1]]) % 8193,
        hole_length: u16::from_le_bytes([data[2], data[3]]) % 8193,
        bimg_info: data[4],
    };
    if let Ok(page) = restore(&img) {
        assert_eq!(page.len(), 8192);
    }
    let mut out = vec![0u8; usize::from(data[0]) * 32];
    let _ = pglz_decompress(&data[5..], &mut out);
});
