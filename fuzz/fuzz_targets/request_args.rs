//! What the C entry points do with their arguments before any process is
//! involved: configuration keys and values, status codes, and a redo
//! request's tag, base page and records (decoded and validated). Nothing
//! may panic; every outcome is a status code.
#![no_main]

use std::ffi::CString;

use libfuzzer_sys::fuzz_target;
use walredo::ffi::*;

fuzz_target!(|data: &[u8]| {
    if data.len() < 24 {
        return;
    }
    let (head, rest) = data.split_at(24);
    // Configuration: a key and a value taken from the input.
    let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let key = CString::new(
        rest[..split]
            .iter()
            .copied()
            .filter(|&b| b != 0)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let value = CString::new(head.iter().copied().filter(|&b| b != 0).collect::<Vec<_>>()).unwrap();
    let cfg = walredo_config_new();
    // SAFETY: a live configuration and NUL-terminated strings.
    let rc = unsafe { walredo_config_set(cfg, key.as_ptr(), value.as_ptr()) };
    assert!(rc == WALREDO_OK || rc == WALREDO_INVALID_ARGUMENT);
    // SAFETY: freed once.
    unsafe { walredo_config_free(cfg) };
    let status = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    assert!(!walredo_status_name(status).is_null());

    // A request: the tag from the header, the records from the rest, cut
    // where each record's own xl_tot_len says.
    let tag = walredo::PageTag {
        rel: walredo::RelFileNode {
            spcnode: u32::from_le_bytes([head[4], head[5], head[6], head[7]]),
            dbnode: u32::from_le_bytes([head[8], head[9], head[10], head[11]]),
            relnode: u32::from_le_bytes([head[12], head[13], head[14], head[15]]),
        },
        forknum: head[16],
        blkno: u32::from_le_bytes([head[17], head[18], head[19], head[20]]),
    };
    let mut records = Vec::new();
    let mut pos = split.min(rest.len());
    while pos + 4 <= rest.len() && records.len() < 64 {
        let len =
            u32::from_le_bytes([rest[pos], rest[pos + 1], rest[pos + 2], rest[pos + 3]]) as usize;
        let len = len.clamp(1, rest.len() - pos);
        records.push(walredo::RecordRef {
            end_lsn: 0x1000 * (records.len() as u64 + 1),
            data: &rest[pos..pos + len],
        });
        pos += len;
    }
    let base = (head[21] & 1 == 1).then(|| Box::new([head[22]; walredo::PAGE_SIZE]));
    let _ = walredo::request::validate_request(&tag, base.as_deref(), &records);
});
