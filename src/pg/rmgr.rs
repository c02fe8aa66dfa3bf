//! PostgreSQL's built-in resource managers (access/rmgrlist.h): their ids,
//! the names pg_waldump prints, and which of them only change pages. The ids
//! are the same from PostgreSQL 14 to 18.

use crate::pg::record::XLR_INFO_MASK;
use crate::pg::record_type::{XLOG_FPI, XLOG_FPI_FOR_HINT, XLOG_HEAP2_REWRITE, XLOG_HEAP_OPMASK};

pub const RM_XLOG_ID: u8 = 0;
pub const RM_XACT_ID: u8 = 1;
pub const RM_SMGR_ID: u8 = 2;
pub const RM_CLOG_ID: u8 = 3;
pub const RM_DBASE_ID: u8 = 4;
pub const RM_TBLSPC_ID: u8 = 5;
pub const RM_MULTIXACT_ID: u8 = 6;
pub const RM_RELMAP_ID: u8 = 7;
pub const RM_STANDBY_ID: u8 = 8;
pub const RM_HEAP2_ID: u8 = 9;
pub const RM_HEAP_ID: u8 = 10;
pub const RM_BTREE_ID: u8 = 11;
pub const RM_HASH_ID: u8 = 12;
pub const RM_GIN_ID: u8 = 13;
pub const RM_GIST_ID: u8 = 14;
pub const RM_SEQ_ID: u8 = 15;
pub const RM_SPGIST_ID: u8 = 16;
pub const RM_BRIN_ID: u8 = 17;
pub const RM_COMMIT_TS_ID: u8 = 18;
pub const RM_REPLORIGIN_ID: u8 = 19;
pub const RM_GENERIC_ID: u8 = 20;
pub const RM_LOGICALMSG_ID: u8 = 21;

/// Name of one of PostgreSQL's built-in resource managers.
pub fn rmgr_name(rmid: u8) -> &'static str {
    match rmid {
        RM_XLOG_ID => "XLOG",
        RM_XACT_ID => "Transaction",
        RM_SMGR_ID => "Storage",
        RM_CLOG_ID => "CLOG",
        RM_DBASE_ID => "Database",
        RM_TBLSPC_ID => "Tablespace",
        RM_MULTIXACT_ID => "MultiXact",
        RM_RELMAP_ID => "RelMap",
        RM_STANDBY_ID => "Standby",
        RM_HEAP2_ID => "Heap2",
        RM_HEAP_ID => "Heap",
        RM_BTREE_ID => "Btree",
        RM_HASH_ID => "Hash",
        RM_GIN_ID => "Gin",
        RM_GIST_ID => "Gist",
        RM_SEQ_ID => "Sequence",
        RM_SPGIST_ID => "SPGist",
        RM_BRIN_ID => "BRIN",
        RM_COMMIT_TS_ID => "CommitTs",
        RM_REPLORIGIN_ID => "ReplicationOrigin",
        RM_GENERIC_ID => "Generic",
        RM_LOGICALMSG_ID => "LogicalMessage",
        128..=255 => "custom",
        _ => "unknown",
    }
}

/// Whether a record of this resource manager (`rmid`, `xl_info`) only
/// changes pages, so that replaying it for one page touches nothing else:
/// heap (but Heap2's REWRITE, which writes logical rewrite mapping files),
/// btree, hash, GIN, GiST, sequence, SP-GiST, BRIN, generic WAL, and the
/// XLOG full-page image records (FPI, FPI_FOR_HINT). Records of the others
/// (commits, database and tablespace changes, checkpoints, ...) never carry
/// block references in real WAL; with a forged one, their redo would act on
/// the whole wal-redo process.
pub fn is_page_record(rmid: u8, info: u8) -> bool {
    match rmid {
        RM_HEAP_ID..=RM_BRIN_ID | RM_GENERIC_ID => true,
        RM_HEAP2_ID => info & XLOG_HEAP_OPMASK != XLOG_HEAP2_REWRITE,
        RM_XLOG_ID => matches!(info & !XLR_INFO_MASK, XLOG_FPI | XLOG_FPI_FOR_HINT),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::record::XLR_CHECK_CONSISTENCY;

    #[test]
    fn page_records() {
        // Heap insert, Heap2 prune, Btree, Hash, Gin, Gist, Sequence,
        // SPGist, BRIN, Generic.
        for rmid in [10, 11, 12, 13, 14, 15, 16, 17, 20] {
            assert!(is_page_record(rmid, 0x00), "{}", rmgr_name(rmid));
        }
        assert!(is_page_record(9, 0x10)); // Heap2 PRUNE
        assert!(!is_page_record(9, 0x00)); // Heap2 REWRITE
        assert!(!is_page_record(9, 0x80)); // REWRITE with the INIT bit
        assert!(is_page_record(0, 0xB0)); // XLOG FPI
        assert!(is_page_record(0, 0xA0 | XLR_CHECK_CONSISTENCY)); // FPI_FOR_HINT
        assert!(!is_page_record(0, 0x00)); // CHECKPOINT_SHUTDOWN
        assert!(!is_page_record(0, 0xD0)); // XLOG_OVERWRITE_CONTRECORD
                                           // Transaction, Storage, CLOG, Database, Tablespace, MultiXact,
                                           // RelMap, Standby, CommitTs, ReplicationOrigin, LogicalMessage,
                                           // custom.
        for rmid in [1, 2, 3, 4, 5, 6, 7, 8, 18, 19, 21, 128, 255] {
            assert!(!is_page_record(rmid, 0x00), "{}", rmgr_name(rmid));
        }
    }
}
