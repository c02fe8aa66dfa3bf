//! The SLRUs (`pg_xact`, `pg_multixact/offsets`, `pg_multixact/members`,
//! `pg_commit_ts`) and the relation map files: their page layouts and the
//! main data of the records that change them, PostgreSQL 14 to 18 (see
//! docs/design-slru.md, sections 1 and 2, for where each was read). File
//! names are PostgreSQL's, shortened (`clog.c` is
//! `src/backend/access/transam/clog.c`).

/// Pages per SLRU segment file (`SLRU_PAGES_PER_SEGMENT`, `slru.h`, 14-18).
pub const SLRU_PAGES_PER_SEGMENT: u64 = 32;

/// Transaction ids per `pg_xact` page: 2 bits each (`CLOG_XACTS_PER_PAGE` =
/// `BLCKSZ * CLOG_XACTS_PER_BYTE`, `clog.c`).
pub const CLOG_XACTS_PER_PAGE: u64 = 8192 * 4;
/// Multixact offsets per `pg_multixact/offsets` page, 4 bytes each
/// (`MULTIXACT_OFFSETS_PER_PAGE` = `BLCKSZ / sizeof(MultiXactOffset)`,
/// `multixact.c`).
pub const MULTIXACT_OFFSETS_PER_PAGE: u64 = 8192 / 4;
/// Member groups per `pg_multixact/members` page: 4 flag bytes and 4 xids,
/// 20 bytes a group (`MULTIXACT_MEMBERGROUPS_PER_PAGE` = `BLCKSZ /
/// MULTIXACT_MEMBERGROUP_SIZE`, `multixact.c`).
pub const MULTIXACT_MEMBERGROUPS_PER_PAGE: u64 = 8192 / 20;
/// Members per `pg_multixact/members` page (`MULTIXACT_MEMBERS_PER_PAGE` =
/// `MULTIXACT_MEMBERGROUPS_PER_PAGE * MULTIXACT_MEMBERS_PER_MEMBERGROUP`,
/// `multixact.c`): 1636.
pub const MULTIXACT_MEMBERS_PER_PAGE: u64 = MULTIXACT_MEMBERGROUPS_PER_PAGE * 4;
/// Commit timestamp entries per `pg_commit_ts` page: a `TimestampTz` and a
/// `RepOriginId`, 10 bytes (`COMMIT_TS_XACTS_PER_PAGE` = `BLCKSZ /
/// SizeOfCommitTimestampEntry`, `commit_ts.c`): 819.
pub const COMMIT_TS_XACTS_PER_PAGE: u64 = 8192 / 10;
/// The first multixact id; 0 is `InvalidMultiXactId` and never used, so the
/// multixact after 0xFFFFFFFF is 1 (`FirstMultiXactId`, `multixact.h`).
pub const FIRST_MULTIXACT_ID: u32 = 1;

/// CLOG record types (`clog.h`). CommitTs uses the same values
/// (`COMMIT_TS_ZEROPAGE`, `COMMIT_TS_TRUNCATE`, `commit_ts.h`).
pub const CLOG_ZEROPAGE: u8 = 0x00;
pub const CLOG_TRUNCATE: u8 = 0x10;
pub const COMMIT_TS_ZEROPAGE: u8 = 0x00;
pub const COMMIT_TS_TRUNCATE: u8 = 0x10;

/// MultiXact record types (`multixact.h`).
pub const XLOG_MULTIXACT_ZERO_OFF_PAGE: u8 = 0x00;
pub const XLOG_MULTIXACT_ZERO_MEM_PAGE: u8 = 0x10;
pub const XLOG_MULTIXACT_CREATE_ID: u8 = 0x20;
pub const XLOG_MULTIXACT_TRUNCATE_ID: u8 = 0x30;

/// `SizeOfMultiXactCreate` (`multixact.h`): `MultiXactId mid;
/// MultiXactOffset moff; int32 nmembers`, then the members.
pub const SIZE_OF_MULTIXACT_CREATE: usize = 12;
/// `sizeof(MultiXactMember)` (`multixact.h`): `TransactionId xid;
/// MultiXactStatus status` (an enum, 4 bytes).
pub const SIZE_OF_MULTIXACT_MEMBER: usize = 8;
/// The largest `MultiXactStatus` (`MultiXactStatusUpdate`, `multixact.h`).
pub const MULTIXACT_STATUS_UPDATE: u32 = 5;
/// `SizeOfMultiXactTruncate` (`multixact.h`): `Oid oldestMultiDB;
/// MultiXactId startTruncOff, endTruncOff; MultiXactOffset
/// startTruncMemb, endTruncMemb`.
pub const SIZE_OF_MULTIXACT_TRUNCATE: usize = 20;

/// RelMap record type (`relmapper.h`).
pub const XLOG_RELMAP_UPDATE: u8 = 0x00;
/// `MinSizeOfRelmapUpdate` (`relmapper.h`): `Oid dbid; Oid tsid; int32
/// nbytes`, then the map.
pub const MIN_SIZE_OF_RELMAP_UPDATE: usize = 12;
/// `RELMAPPER_FILEMAGIC` (`relmapper.c`).
pub const RELMAPPER_FILEMAGIC: u32 = 0x0059_2717;
/// `sizeof(RelMapping)`: `Oid mapoid; RelFileNumber mapfilenumber`.
pub const SIZE_OF_RELMAPPING: usize = 8;
/// `GLOBALTABLESPACE_ID` (`pg_tablespace.dat`): the shared catalogs' map is
/// `global/pg_filenode.map`.
pub const GLOBALTABLESPACE_ID: u32 = 1664;

/// Transaction record types not in [`crate::pg::record_type`]
/// (`xact.h`).
pub const XLOG_XACT_PREPARE: u8 = 0x10;

/// `xl_xact_xinfo.xinfo` bits (`xact.h`): which parts follow
/// `xl_xact_commit`/`xl_xact_abort`, in `ParseCommitRecord`'s order
/// (`rmgrdesc/xactdesc.c`): dbinfo, subxacts, relation files, dropped
/// stats (15+), invalidations, two-phase, origin.
pub const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
pub const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
/// `XACT_XINFO_HAS_RELFILENODES`; `..._HAS_RELFILELOCATORS` from 16, the
/// same bit and 12-byte entries.
pub const XACT_XINFO_HAS_RELFILENODES: u32 = 1 << 2;
pub const XACT_XINFO_HAS_INVALS: u32 = 1 << 3;
pub const XACT_XINFO_HAS_TWOPHASE: u32 = 1 << 4;
pub const XACT_XINFO_HAS_ORIGIN: u32 = 1 << 5;
/// `XACT_XINFO_HAS_GID`: a NUL-terminated GID follows the two-phase xid.
pub const XACT_XINFO_HAS_GID: u32 = 1 << 7;
/// `XACT_XINFO_HAS_DROPPED_STATS`, new in 15 (14 gives the bit no meaning).
pub const XACT_XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;

/// `sizeof(xl_xact_dbinfo)`: `Oid dbId; Oid tsId`.
pub const SIZE_OF_XACT_DBINFO: usize = 8;
/// `sizeof(RelFileNode)` / `sizeof(RelFileLocator)`.
pub const SIZE_OF_RELFILENODE: usize = 12;
/// `sizeof(SharedInvalidationMessage)` (`sinval.h`).
pub const SIZE_OF_SHARED_INVAL_MESSAGE: usize = 16;
/// `sizeof(xl_xact_origin)`: `XLogRecPtr origin_lsn; TimestampTz
/// origin_timestamp`.
pub const SIZE_OF_XACT_ORIGIN: usize = 16;

/// The record formats of these resource managers by major version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlruFormat {
    pub pg_version: u32,
}

impl SlruFormat {
    pub fn of_version(pg_version: u32) -> SlruFormat {
        SlruFormat { pg_version }
    }

    /// The version's record layout.
    pub fn record_format(self) -> crate::pg::record::RecordFormat {
        crate::pg::record::RecordFormat::of_version(self.pg_version)
    }

    /// Bytes of a page number in the ZERO records' main data and at the
    /// start of `xl_clog_truncate`/`xl_commit_ts_truncate`: `int` in 14-16,
    /// `int64` from 17 (`clog.c: WriteZeroPageXlogRec`, `commit_ts.c`,
    /// `multixact.c: WriteMZeroPageXlogRec`).
    pub fn pageno_size(self) -> usize {
        if self.pg_version >= 17 {
            8
        } else {
            4
        }
    }

    /// `sizeof(xl_clog_truncate)` (`clog.h`): `{int pageno; TransactionId
    /// oldestXact; Oid oldestXactDb}`, 12 bytes; 16 from 17 (`int64
    /// pageno`).
    pub fn clog_truncate_size(self) -> usize {
        if self.pg_version >= 17 {
            16
        } else {
            12
        }
    }

    /// `SizeOfCommitTsTruncate` (`commit_ts.h`): `{int pageno;
    /// TransactionId oldestXid}`, 8 bytes; 12 from 17 (`int64 pageno`).
    pub fn commit_ts_truncate_size(self) -> usize {
        self.pageno_size() + 4
    }

    /// `MAX_MAPPINGS` (`relmapper.c`): 62 in 14-15, 64 from 16.
    pub fn relmap_max_mappings(self) -> u32 {
        if self.pg_version >= 16 {
            64
        } else {
            62
        }
    }

    /// `offsetof(RelMapFile, crc)` (`relmapper.c`): magic, count and the
    /// mappings; the CRC-32C covers the bytes before it.
    pub fn relmap_crc_offset(self) -> usize {
        8 + self.relmap_max_mappings() as usize * SIZE_OF_RELMAPPING
    }

    /// `sizeof(RelMapFile)`, the size of a map file and of the map in a
    /// RelMap UPDATE (`relmap_redo` insists on it): 512 in 14-15 (`int32
    /// magic; int32 num_mappings; RelMapping mappings[62]; pg_crc32c crc;
    /// int32 pad`, "62 * 8 + 16 = 512"), 524 from 16 (64 mappings, no pad).
    /// Seen in RELMAP_UPDATE records of 14.23, 15.20 (512) and 16.15, 17.11,
    /// 18.6 (524): tests/slru_route.rs.
    pub fn relmap_file_size(self) -> usize {
        if self.pg_version >= 16 {
            self.relmap_crc_offset() + 4
        } else {
            512
        }
    }

    /// `sizeof(xl_xact_stats_item)` (`xact.h`), or None where
    /// `XACT_XINFO_HAS_DROPPED_STATS` does not exist (14): `{int kind; Oid
    /// dboid; Oid objoid}`, 12 bytes in 15-17; `{int kind; Oid dboid;
    /// uint32 objid_lo; uint32 objid_hi}`, 16 bytes in 18.
    pub fn stats_item_size(self) -> Option<usize> {
        match self.pg_version {
            ..=14 => None,
            15..=17 => Some(12),
            _ => Some(16),
        }
    }
}

/// Transaction status values in `pg_xact`, 2 bits per transaction
/// (`clog.h`: `TRANSACTION_STATUS_COMMITTED`, `TRANSACTION_STATUS_ABORTED`;
/// `TRANSACTION_STATUS_SUB_COMMITTED` is only ever an intermediate state
/// while a record is replayed).
pub const TRANSACTION_STATUS_COMMITTED: u8 = 0x01;
pub const TRANSACTION_STATUS_ABORTED: u8 = 0x02;
/// Bytes per commit timestamp entry: `TimestampTz time` then `RepOriginId
/// nodeid`, copied as is (`SizeOfCommitTimestampEntry`, `commit_ts.c`).
pub const SIZE_OF_COMMIT_TIMESTAMP_ENTRY: usize = 10;
/// Bytes per member group: 4 flag bytes, then 4 member xids
/// (`MULTIXACT_MEMBERGROUP_SIZE`, `multixact.c`).
pub const MULTIXACT_MEMBERGROUP_SIZE: usize = 20;
/// XLOG PARAMETER_CHANGE (`pg_control.h`) and where its
/// `track_commit_timestamp` is in `xl_parameter_change` (`xlog_internal.h`:
/// six `int`s, then `bool wal_log_hints`, `bool track_commit_timestamp`;
/// 14-18).
pub const XLOG_PARAMETER_CHANGE: u8 = 0x60;
pub const PARAMETER_CHANGE_TRACK_COMMIT_TS_AT: usize = 25;
/// `sizeof(xl_parameter_change)`: 26 bytes padded to the `int`s' alignment.
pub const SIZE_OF_PARAMETER_CHANGE: usize = 28;
