//! Which pages a record changes (`walredo_record_pages` and its Rust twin):
//! whatever the bytes, an error or a list in which the block references are
//! the decoder's, in order, and every other page is a visibility-map page
//! named once; the C entry point agrees and reports the count it needs.
//! The input's CRC is resealed, so the fuzzer reaches past the CRC check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walredo::ffi::*;
use walredo::tag::VISIBILITYMAP_FORKNUM;
use walredo::pg::record::set_record_crc;
use walredo::wal::pages::{record_pages_of, PageChange};
use walredo::wal::record;

fuzz_target!(|input: &[u8]| {
    let mut data = input.to_vec();
    if data.len() >= 24 {
        // xl_tot_len as the length, so the decoder looks further.
        let len = data.len() as u32;
        data[..4].copy_from_slice(&len.to_le_bytes());
        set_record_crc(&mut data);
    }
    let rust = record_pages_of(&data);
    let mut out = [walredo_record_page {
        tag: walredo_page_tag {
            spcnode: 0,
            dbnode: 0,
            relnode: 0,
            forknum: 0,
            blkno: 0,
        },
        change: 0,
        block_id: 0,
        will_init: false,
        has_image: false,
        applies_image: false,
        initializes: false,
    }; 40];
    let mut count = usize::MAX;
    // SAFETY: `data` is readable, `out` has room for 40 entries.
    let rc = unsafe {
        walredo_record_pages(
            data.as_ptr(),
            data.len(),
            out.as_mut_ptr(),
            out.len(),
            &mut count,
        )
    };
    match rust {
        Err(_) => assert_eq!(rc, WALREDO_MALFORMED_RECORD),
        Ok(pages) => {
            assert_eq!(rc, WALREDO_OK);
            assert_eq!(count, pages.len());
            assert!(pages.len() <= 35);
            let decoded = record::decode(&data).expect("record_pages decoded it");
            let n_blocks = decoded.blocks.len();
            for (i, p) in pages.iter().enumerate() {
                if i < n_blocks {
                    assert_eq!(p.tag, decoded.blocks[i].tag);
                    assert!(
                        matches!(p.change, PageChange::Block { id, .. } if id == decoded.blocks[i].id)
                    );
                } else {
                    assert!(p.is_side_effect() && !p.initializes());
                    assert_eq!(p.tag.forknum, VISIBILITYMAP_FORKNUM);
                    assert!(pages[..i].iter().all(|q| q.tag != p.tag));
                }
                let c = &out[i];
                assert_eq!(
                    (c.tag.relnode, c.tag.forknum, c.tag.blkno, c.initializes),
                    (
                        p.tag.rel.relnode,
                        p.tag.forknum,
                        p.tag.blkno,
                        p.initializes()
                    )
                );
            }
            if !pages.is_empty() {
                let mut need = 0;
                // SAFETY: capacity 0 with a NULL array is allowed.
                let rc = unsafe {
                    walredo_record_pages(
                        data.as_ptr(),
                        data.len(),
                        std::ptr::null_mut(),
                        0,
                        &mut need,
                    )
                };
                assert_eq!((rc, need), (WALREDO_BUFFER_TOO_SMALL, pages.len()));
            }
        }
    }
});
