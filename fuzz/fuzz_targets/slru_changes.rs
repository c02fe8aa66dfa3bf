//! Which SLRU pages and relation maps a record changes
//! (`walredo::wal::slru::slru_changes`): whatever the main data, an error or
//! a list in which each change appears once, commit/abort pages are exactly
//! the pages of the parsed tree (commit timestamps only for commits when
//! asked), and a map change comes with a map of the version's size.
//!
//! Input: byte 0 picks the version (14 + n % 5) and flags (0x08 commit
//! timestamps active, 0x10 reseal a relation map's CRC so the fuzzer
//! reaches past it), byte 1 the resource manager (Transaction, CLOG,
//! MultiXact, RelMap, CommitTs), byte 2 `xl_info`, the rest the main data
//! of a record built around it (CRC sealed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use walredo::pg::crc32c::{crc32c_finish, crc32c_update, CRC32C_INIT};
use walredo::pg::record::set_record_crc;
use walredo::pg::rmgr::{RM_CLOG_ID, RM_COMMIT_TS_ID, RM_MULTIXACT_ID, RM_RELMAP_ID, RM_XACT_ID};
use walredo::pg::slru::SlruFormat;
use walredo::wal::record;
use walredo::wal::slru::{relmap_update, slru_changes, xact_tree, SlruChange, SlruKind};

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
    ][usize::from(input[1] % 5)];
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
    let Ok(changes) = slru_changes(&decoded, format, commit_ts) else {
        return;
    };
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
