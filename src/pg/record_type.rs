//! Record types (the resource-manager bits of `xl_info`): the ones this
//! library acts on, and the names pg_waldump gives every one.

use crate::pg::record::{XLR_INFO_MASK, XLR_RMGR_INFO_MASK};
use crate::pg::rmgr::*;

/// XLOG: switch to the next segment.
pub const XLOG_SWITCH: u8 = 0x40;
/// XLOG: a full-page image written for a hint-bit change.
pub const XLOG_FPI_FOR_HINT: u8 = 0xA0;
/// XLOG: a full-page image.
pub const XLOG_FPI: u8 = 0xB0;

/// Transaction: the bits of `xl_info` that name the record type.
pub const XLOG_XACT_OPMASK: u8 = 0x70;
/// Transaction: the record carries an `xl_xact_xinfo`.
pub const XLOG_XACT_HAS_INFO: u8 = 0x80;
pub const XLOG_XACT_COMMIT: u8 = 0x00;
pub const XLOG_XACT_ABORT: u8 = 0x20;
pub const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
pub const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;

/// Storage: a relation fork truncated.
pub const XLOG_SMGR_TRUNCATE: u8 = 0x20;

/// Database: created by copying another database's files.
pub const XLOG_DBASE_CREATE_FILE_COPY: u8 = 0x00;
pub const XLOG_DBASE_DROP: u8 = 0x20;

/// Heap and Heap2: the bits of `xl_info` that name the record type.
pub const XLOG_HEAP_OPMASK: u8 = 0x70;
pub const XLOG_HEAP_INSERT: u8 = 0x00;
pub const XLOG_HEAP_DELETE: u8 = 0x10;
pub const XLOG_HEAP_UPDATE: u8 = 0x20;
pub const XLOG_HEAP_HOT_UPDATE: u8 = 0x40;
pub const XLOG_HEAP_LOCK: u8 = 0x60;
/// Heap2: logical rewrite mappings (writes files, not pages).
pub const XLOG_HEAP2_REWRITE: u8 = 0x00;
pub const XLOG_HEAP2_MULTI_INSERT: u8 = 0x50;
pub const XLOG_HEAP2_LOCK_UPDATED: u8 = 0x60;

/// `record_type_name` for WAL of PostgreSQL `pg_version`: the names 17
/// gave to Heap2's prune records (0x10 to 0x30 were PRUNE, VACUUM and
/// FREEZE_PAGE up to 16) and XLOG's CHECKPOINT_REDO (new in 17). Nothing else
/// differs from 15 to 18 (the ids and the other names are the same).
pub fn record_type_name_for(pg_version: u32, rmid: u8, info: u8) -> Option<&'static str> {
    let op = info & XLR_RMGR_INFO_MASK;
    if pg_version >= 17 {
        match (rmid, op) {
            (RM_XLOG_ID, 0xE0) => return Some("CHECKPOINT_REDO"),
            (RM_HEAP2_ID, 0x10) => return Some("PRUNE_ON_ACCESS"),
            (RM_HEAP2_ID, 0x20) => return Some("PRUNE_VACUUM_SCAN"),
            (RM_HEAP2_ID, 0x30) => return Some("PRUNE_VACUUM_CLEANUP"),
            _ => {}
        }
    }
    record_type_name(rmid, info)
}

/// The record type as pg_waldump names it (the first word of its `desc:`,
/// from each resource manager's `rm_identify` in PostgreSQL 15), or None
/// where pg_waldump prints `UNKNOWN`.
pub fn record_type_name(rmid: u8, info: u8) -> Option<&'static str> {
    let op = info & XLR_RMGR_INFO_MASK;
    // Names by the value of `op` (index op >> 4), "" where none.
    const HEAP: [&str; 16] = [
        "INSERT",
        "DELETE",
        "UPDATE",
        "TRUNCATE",
        "HOT_UPDATE",
        "HEAP_CONFIRM",
        "LOCK",
        "INPLACE",
        "INSERT+INIT",
        "",
        "UPDATE+INIT",
        "",
        "HOT_UPDATE+INIT",
        "",
        "",
        "",
    ];
    const HEAP2: [&str; 16] = [
        "REWRITE",
        "PRUNE",
        "VACUUM",
        "FREEZE_PAGE",
        "VISIBLE",
        "MULTI_INSERT",
        "LOCK_UPDATED",
        "NEW_CID",
        "",
        "",
        "",
        "",
        "",
        "MULTI_INSERT+INIT",
        "",
        "",
    ];
    const BTREE: [&str; 16] = [
        "INSERT_LEAF",
        "INSERT_UPPER",
        "INSERT_META",
        "SPLIT_L",
        "SPLIT_R",
        "INSERT_POST",
        "DEDUP",
        "DELETE",
        "UNLINK_PAGE",
        "UNLINK_PAGE_META",
        "NEWROOT",
        "MARK_PAGE_HALFDEAD",
        "VACUUM",
        "REUSE_PAGE",
        "META_CLEANUP",
        "",
    ];
    const HASH: [&str; 16] = [
        "INIT_META_PAGE",
        "INIT_BITMAP_PAGE",
        "INSERT",
        "ADD_OVFL_PAGE",
        "SPLIT_ALLOCATE_PAGE",
        "SPLIT_PAGE",
        "SPLIT_COMPLETE",
        "MOVE_PAGE_CONTENTS",
        "SQUEEZE_PAGE",
        "DELETE",
        "SPLIT_CLEANUP",
        "UPDATE_META_PAGE",
        "VACUUM_ONE_PAGE",
        "",
        "",
        "",
    ];
    const GIN: [&str; 16] = [
        "",
        "CREATE_PTREE",
        "INSERT",
        "SPLIT",
        "VACUUM_PAGE",
        "DELETE_PAGE",
        "UPDATE_META_PAGE",
        "INSERT_LISTPAGE",
        "DELETE_LISTPAGE",
        "VACUUM_DATA_LEAF_PAGE",
        "",
        "",
        "",
        "",
        "",
        "",
    ];
    const GIST: [&str; 16] = [
        "PAGE_UPDATE",
        "DELETE",
        "PAGE_REUSE",
        "PAGE_SPLIT",
        "",
        "",
        "PAGE_DELETE",
        "ASSIGN_LSN",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ];
    const SPGIST: [&str; 16] = [
        "",
        "ADD_LEAF",
        "MOVE_LEAFS",
        "ADD_NODE",
        "SPLIT_TUPLE",
        "PICKSPLIT",
        "VACUUM_LEAF",
        "VACUUM_ROOT",
        "VACUUM_REDIRECT",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ];
    const BRIN: [&str; 16] = [
        "CREATE_INDEX",
        "INSERT",
        "UPDATE",
        "SAMEPAGE_UPDATE",
        "REVMAP_EXTEND",
        "DESUMMARIZE",
        "",
        "",
        "",
        "INSERT+INIT",
        "UPDATE+INIT",
        "",
        "",
        "",
        "",
        "",
    ];
    const XLOG: [&str; 16] = [
        "CHECKPOINT_SHUTDOWN",
        "CHECKPOINT_ONLINE",
        "NOOP",
        "NEXTOID",
        "SWITCH",
        "BACKUP_END",
        "PARAMETER_CHANGE",
        "RESTORE_POINT",
        "FPW_CHANGE",
        "END_OF_RECOVERY",
        "FPI_FOR_HINT",
        "FPI",
        "",
        "OVERWRITE_CONTRECORD",
        "",
        "",
    ];
    const XACT: [&str; 8] = [
        "COMMIT",
        "PREPARE",
        "ABORT",
        "COMMIT_PREPARED",
        "ABORT_PREPARED",
        "ASSIGNMENT",
        "INVALIDATION",
        "",
    ];
    const STORAGE: [&str; 3] = ["", "CREATE", "TRUNCATE"];
    const CLOG: [&str; 2] = ["ZEROPAGE", "TRUNCATE"];
    const DATABASE: [&str; 3] = ["CREATE_FILE_COPY", "CREATE_WAL_LOG", "DROP"];
    const TABLESPACE: [&str; 2] = ["CREATE", "DROP"];
    const MULTIXACT: [&str; 4] = ["ZERO_OFF_PAGE", "ZERO_MEM_PAGE", "CREATE_ID", "TRUNCATE_ID"];
    const RELMAP: [&str; 1] = ["UPDATE"];
    const STANDBY: [&str; 3] = ["LOCK", "RUNNING_XACTS", "INVALIDATIONS"];
    const SEQUENCE: [&str; 1] = ["LOG"];
    const ORIGIN: [&str; 2] = ["SET", "DROP"];
    const MESSAGE: [&str; 1] = ["MESSAGE"];
    let i = usize::from(op >> 4);
    let name = match rmid {
        RM_XLOG_ID => XLOG[i],
        // Transaction records keep a flag (XLOG_XACT_HAS_INFO) in the top bit.
        RM_XACT_ID => XACT[i & 7],
        RM_SMGR_ID => STORAGE.get(i).copied().unwrap_or(""),
        RM_CLOG_ID => CLOG.get(i).copied().unwrap_or(""),
        RM_DBASE_ID => DATABASE.get(i).copied().unwrap_or(""),
        RM_TBLSPC_ID => TABLESPACE.get(i).copied().unwrap_or(""),
        RM_MULTIXACT_ID => MULTIXACT.get(i).copied().unwrap_or(""),
        RM_RELMAP_ID => RELMAP.get(i).copied().unwrap_or(""),
        RM_STANDBY_ID => STANDBY.get(i).copied().unwrap_or(""),
        RM_HEAP2_ID => HEAP2[i],
        RM_HEAP_ID => HEAP[i],
        RM_BTREE_ID => BTREE[i],
        RM_HASH_ID => HASH[i],
        RM_GIN_ID => GIN[i],
        RM_GIST_ID => GIST[i],
        RM_SEQ_ID => SEQUENCE.get(i).copied().unwrap_or(""),
        RM_SPGIST_ID => SPGIST[i],
        RM_BRIN_ID => BRIN[i],
        // CommitTs (whose names are CLOG's) and ReplicationOrigin look at
        // all of xl_info, the WAL machinery's bits included.
        RM_COMMIT_TS_ID if info & XLR_INFO_MASK == 0 => CLOG.get(i).copied().unwrap_or(""),
        RM_REPLORIGIN_ID if info & XLR_INFO_MASK == 0 => ORIGIN.get(i).copied().unwrap_or(""),
        RM_GENERIC_ID => "Generic",
        RM_LOGICALMSG_ID => MESSAGE.get(i).copied().unwrap_or(""),
        _ => "",
    };
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_type_names_follow_the_version() {
        assert_eq!(record_type_name_for(15, 9, 0x10), Some("PRUNE"));
        assert_eq!(record_type_name_for(16, 9, 0x30), Some("FREEZE_PAGE"));
        assert_eq!(record_type_name_for(17, 9, 0x10), Some("PRUNE_ON_ACCESS"));
        assert_eq!(
            record_type_name_for(18, 9, 0x30 | 0x02),
            Some("PRUNE_VACUUM_CLEANUP")
        );
        assert_eq!(record_type_name_for(17, 0, 0xE0), Some("CHECKPOINT_REDO"));
        assert_eq!(
            record_type_name_for(18, 10, 0x00),
            record_type_name(10, 0x00)
        );
    }
}
