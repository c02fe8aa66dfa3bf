//! The record decoder is the gate that keeps malformed input away from
//! PostgreSQL: whatever the bytes, it returns an error or a record whose
//! parts lie inside the input, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walredo::wal::record;

fuzz_target!(|data: &[u8]| {
    let range = data.as_ptr_range();
    let inside = |s: &[u8]| s.is_empty() || (range.contains(&s.as_ptr()) && s.len() <= data.len());
    for decoded in [record::decode(data), record::decode_unchecked_crc(data)]
        .into_iter()
        .flatten()
    {
        assert_eq!(decoded.tot_len as usize, data.len());
        assert!(inside(decoded.main_data));
        for b in &decoded.blocks {
            assert!(inside(b.data));
            if let Some(img) = b.image {
                assert!(inside(img.data));
                assert!(usize::from(img.hole_offset) + usize::from(img.hole_length) <= 8192);
            }
        }
    }
});
