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
/// Database, PostgreSQL 14 (which has no CREATE_WAL_LOG): DROP, and
/// CREATE, the file copy 15 renamed.
pub const XLOG_DBASE_DROP_14: u8 = 0x10;

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
/// FREEZE_PAGE up to 16) and XLOG's CHECKPOINT_REDO (new in 17), and 14's
/// Database records (CREATE and DROP at 0x00 and 0x10). Nothing else
/// differs from 14 to 18 (the ids and the other names are the same).
pub fn record_type_name_for(pg_version: u32, rmid: u8, info: u8) -> Option<&'static str> {
    let op = info & XLR_RMGR_INFO_MASK;
    if pg_version == 14 && rmid == RM_DBASE_ID {
        return match op {
            XLOG_DBASE_CREATE_FILE_COPY => Some("CREATE"),
            XLOG_DBASE_DROP_14 => Some("DROP"),
            _ => None,
        };
    }
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
    // Names by the value of `op` (index op >> 4), "" or past the end where none.
    const HEAP: &[&str] = &[
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
    ];
    const HEAP2: &[&str] = &[
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
    ];
    const BTREE: &[&str] = &[
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
    ];
    const HASH: &[&str] = &[
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
    ];
    const GIN: &[&str] = &[
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
    ];
    const GIST: &[&str] = &[
        "PAGE_UPDATE",
        "DELETE",
        "PAGE_REUSE",
        "PAGE_SPLIT",
        "",
        "",
        "PAGE_DELETE",
        "ASSIGN_LSN",
    ];
    const SPGIST: &[&str] = &[
        "",
        "ADD_LEAF",
        "MOVE_LEAFS",
        "ADD_NODE",
        "SPLIT_TUPLE",
        "PICKSPLIT",
        "VACUUM_LEAF",
        "VACUUM_ROOT",
        "VACUUM_REDIRECT",
    ];
    const BRIN: &[&str] = &[
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
    ];
    const XLOG: &[&str] = &[
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
    ];
    const XACT: &[&str] = &[
        "COMMIT",
        "PREPARE",
        "ABORT",
        "COMMIT_PREPARED",
        "ABORT_PREPARED",
        "ASSIGNMENT",
        "INVALIDATION",
    ];
    const STORAGE: &[&str] = &["", "CREATE", "TRUNCATE"];
    const CLOG: &[&str] = &["ZEROPAGE", "TRUNCATE"];
    const DATABASE: &[&str] = &["CREATE_FILE_COPY", "CREATE_WAL_LOG", "DROP"];
    const TABLESPACE: &[&str] = &["CREATE", "DROP"];
    const MULTIXACT: &[&str] = &["ZERO_OFF_PAGE", "ZERO_MEM_PAGE", "CREATE_ID", "TRUNCATE_ID"];
    const RELMAP: &[&str] = &["UPDATE"];
    const STANDBY: &[&str] = &["LOCK", "RUNNING_XACTS", "INVALIDATIONS"];
    const SEQUENCE: &[&str] = &["LOG"];
    const ORIGIN: &[&str] = &["SET", "DROP"];
    const MESSAGE: &[&str] = &["MESSAGE"];
    let i = usize::from(op >> 4);
    let name = match rmid {
        RM_XLOG_ID => name_at(XLOG, i),
        // Transaction records keep a flag (XLOG_XACT_HAS_INFO) in the top bit.
        RM_XACT_ID => name_at(XACT, i & 7),
        RM_SMGR_ID => name_at(STORAGE, i),
        RM_CLOG_ID => name_at(CLOG, i),
        RM_DBASE_ID => name_at(DATABASE, i),
        RM_TBLSPC_ID => name_at(TABLESPACE, i),
        RM_MULTIXACT_ID => name_at(MULTIXACT, i),
        RM_RELMAP_ID => name_at(RELMAP, i),
        RM_STANDBY_ID => name_at(STANDBY, i),
        RM_HEAP2_ID => name_at(HEAP2, i),
        RM_HEAP_ID => name_at(HEAP, i),
        RM_BTREE_ID => name_at(BTREE, i),
        RM_HASH_ID => name_at(HASH, i),
        RM_GIN_ID => name_at(GIN, i),
        RM_GIST_ID => name_at(GIST, i),
        RM_SEQ_ID => name_at(SEQUENCE, i),
        RM_SPGIST_ID => name_at(SPGIST, i),
        RM_BRIN_ID => name_at(BRIN, i),
        // CommitTs (whose names are CLOG's) and ReplicationOrigin look at
        // all of xl_info, the WAL machinery's bits included.
        RM_COMMIT_TS_ID if info & XLR_INFO_MASK == 0 => name_at(CLOG, i),
        RM_REPLORIGIN_ID if info & XLR_INFO_MASK == 0 => name_at(ORIGIN, i),
        RM_GENERIC_ID => "Generic",
        RM_LOGICALMSG_ID => name_at(MESSAGE, i),
        _ => "",
    };
    (!name.is_empty()).then_some(name)
}

/// Entry `i` of a table of names, "" where it has none.
fn name_at(table: &[&'static str], i: usize) -> &'static str {
    table.get(i).copied().unwrap_or("")
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
        // 14's Database records: CREATE (the copy) and DROP at 0x10.
        assert_eq!(record_type_name_for(14, RM_DBASE_ID, 0x00), Some("CREATE"));
        assert_eq!(record_type_name_for(14, RM_DBASE_ID, 0x10), Some("DROP"));
        assert_eq!(
            record_type_name_for(15, RM_DBASE_ID, 0x10),
            Some("CREATE_WAL_LOG")
        );
        assert_eq!(record_type_name_for(14, 9, 0x10), Some("PRUNE"));
    }
}
