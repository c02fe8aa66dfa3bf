//! Which SLRU pages and relation maps a record changes
//! (`walredo::wal::slru::slru_changes`), and what it writes on them
//! (`apply_to_slru_page`): whatever the main data, an error or a list in
//! which each change appears once, commit/abort pages are exactly the pages
//! of the parsed tree (commit timestamps only for commits when asked), a map
//! change comes with a map of the version's size, every page named is
//! written by the record and the page after it is not; the C ABI
//! (`walredo_record_slru_changes`) says the same.
//!
//! Input: byte 0 picks the version (14 + n % 5) and flags (0x08 commit
//! timestamps active, 0x10 reseal a relation map's CRC so the fuzzer
//! reaches past it), byte 1 the resource manager (Transaction, CLOG,
//! MultiXact, RelMap, CommitTs, XLOG), byte 2 `xl_info`, the rest the main
//! data of a record built around it (CRC sealed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use walredo::pg::crc32c::{crc32c_finish, crc32c_update, CRC32C_INIT};
use walredo::pg::record::set_record_crc;
use walredo::ffi::{walredo_record_slru_changes, walredo_slru_change, WALREDO_OK, WALREDO_ROUTE_COMMIT_TS};
use walredo::pg::rmgr::{
    RM_CLOG_ID, RM_COMMIT_TS_ID, RM_MULTIXACT_ID, RM_RELMAP_ID, RM_XACT_ID, RM_XLOG_ID,
};
use walredo::pg::slru::SlruFormat;
use walredo::wal::record;
use walredo::wal::slru::{
    apply_to_slru_page, relmap_update, slru_changes, xact_tree, SlruChange, SlruKind, SlruPage,
};

fuzz_target!(|input: &[u8]| {
    if input.len() < 3 {
        return;
    }
    let format = SlruFormat::of_version(14 + u32::from(input[0] % 5));
    let commit_ts = input[0] & 0x08 != 0;
    let rmid = [
        RM_XACT_ID,
        RM_CLOG_ID,
        RM_MULTIXACT_ID,
        RM_RELMAP_ID,
        RM_COMMIT_TS_ID,
        RM_XLOG_ID,
    ][usize::from(input[1] % 6)];
    let info = input[2];
    let mut main = input[3..].to_vec();
    let size = format.relmap_file_size();
    if input[0] & 0x10 != 0 && rmid == RM_RELMAP_ID && main.len() >= 12 + size {
        let at = 12 + format.relmap_crc_offset();
        let crc = crc32c_finish(crc32c_update(CRC32C_INIT, &main[12..at]));
        main[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }
    // XLogRecord header, then the main data (long form).
    let mut rec = Vec::with_capacity(29 + main.len());
    rec.extend_from_slice(&((29 + main.len()) as u32).to_le_bytes());
    rec.extend_from_slice(&70_000u32.to_le_bytes());
    rec.extend_from_slice(&0u64.to_le_bytes());
    rec.extend_from_slice(&[info, rmid, 0, 0, 0, 0, 0, 0, 254]);
    rec.extend_from_slice(&(main.len() as u32).to_le_bytes());
    rec.extend_from_slice(&main);
    set_record_crc(&mut rec);
    let Ok(decoded) = record::decode(&rec) else {
        return;
    };
    let routed = slru_changes(&decoded, format, commit_ts);
    // The C ABI: the same outcome, the same number of changes.
    let mut out: Vec<walredo_slru_change> = Vec::with_capacity(64);
    let mut count = 0usize;
    // SAFETY: `rec` is readable, `out` has room for 64 entries, `count` is writable.
    let status = unsafe {
        walredo_record_slru_changes(
            rec.as_ptr(),
            rec.len(),
            format.pg_version,
            if commit_ts { WALREDO_ROUTE_COMMIT_TS } else { 0 },
            out.as_mut_ptr(),
            64,
            &mut count,
        )
    };
    match &routed {
        Ok(c) if c.len() <= 64 => assert!(status == WALREDO_OK && count == c.len()),
        Ok(_) => assert_ne!(status, WALREDO_OK),
        Err(_) => assert_ne!(status, WALREDO_OK),
    }
    let Ok(changes) = routed else {
        return;
    };
    // Each page named is written by the record; the next page of its SLRU
    // (unless named too) is left as it was.
    for c in &changes {
        let Some(page) = c.page() else { continue };
        let mut bytes = [0xA5u8; 8192];
        assert_eq!(apply_to_slru_page(page, &mut bytes, &decoded, format), Ok(true), "{c:?}");
        let next = SlruPage {
            kind: page.kind,
            pageno: page.pageno.wrapping_add(1),
        };
        if !changes.iter().any(|o| o.page() == Some(next)) {
            let mut untouched = [0x5Au8; 8192];
            assert_eq!(apply_to_slru_page(next, &mut untouched, &decoded, format), Ok(false));
            assert!(untouched.iter().all(|&b| b == 0x5A));
        }
    }
    for (i, c) in changes.iter().enumerate() {
        assert!(!changes[..i].contains(c), "{c:?} named twice");
    }
    if let Ok(Some(tree)) = xact_tree(&decoded, format) {
        let mut want: Vec<SlruChange> = Vec::new();
        for kind in [SlruKind::Xact, SlruKind::CommitTs] {
            if kind == SlruKind::CommitTs && !(tree.commit && commit_ts) {
                continue;
            }
            for id in tree.ids() {
                let c = SlruChange::Set(kind.page_of(id));
                if !want.contains(&c) {
                    want.push(c);
                }
            }
        }
        assert_eq!(changes, want);
    }
    if changes.iter().any(|c| matches!(c, SlruChange::RelMap(_))) {
        let (_, map) = relmap_update(&decoded, format).unwrap().unwrap();
        assert_eq!(map.len(), size);
    }
});
