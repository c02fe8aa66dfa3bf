//! The WAL file format above the records: which PostgreSQL versions write
//! which page magic, the WAL page headers (short and long) and their flags,
//! and the segment sizes PostgreSQL allows.

use crate::pg::bytes::{le_u16, le_u32, le_u64};

/// WAL page size (XLOG_BLCKSZ).
pub const XLOG_BLCKSZ: u64 = 8192;
/// `xlp_magic` of PostgreSQL 15 WAL pages.
pub const XLOG_PAGE_MAGIC: u16 = 0xD110;

/// The PostgreSQL major versions whose WAL this library reads and redoes,
/// with each one's `XLOG_PAGE_MAGIC` (access/xlog_internal.h). Every major
/// release changes the magic; the record format itself (record and block
/// headers, resource manager ids) is the same from 14 to 18, but for the
/// image flags of 14 ([`crate::pg::record::RecordFormat`]).
pub const PG_VERSIONS: [(u32, u16); 5] = [
    (14, 0xD10D),
    (15, 0xD110),
    (16, 0xD113),
    (17, 0xD116),
    (18, 0xD118),
];

/// The supported versions in the order a pool without `pg_version` looks
/// for an installed server: 15 (Debian 12's) to 18, then 14.
pub fn preferred_versions() -> impl Iterator<Item = u32> {
    let (older, newer): (Vec<u32>, Vec<u32>) =
        PG_VERSIONS.iter().map(|(v, _)| *v).partition(|v| *v < 15);
    newer.into_iter().chain(older)
}

/// `xlp_magic` of WAL pages written by PostgreSQL `pg_version`.
pub fn xlog_page_magic(pg_version: u32) -> Option<u16> {
    PG_VERSIONS
        .iter()
        .find(|(v, _)| *v == pg_version)
        .map(|(_, m)| *m)
}

/// The PostgreSQL major version that writes WAL pages with this magic.
pub fn pg_version_of_magic(magic: u16) -> Option<u32> {
    PG_VERSIONS
        .iter()
        .find(|(_, m)| *m == magic)
        .map(|(v, _)| *v)
}

/// "14, 15, 16, 17 or 18", for messages.
pub fn supported_versions() -> String {
    let v: Vec<String> = PG_VERSIONS.iter().map(|(v, _)| v.to_string()).collect();
    format!("{} or {}", v[..v.len() - 1].join(", "), v[v.len() - 1])
}
/// Size of a short page header (MAXALIGN(sizeof(XLogPageHeaderData))).
pub const SIZE_OF_XLOG_SHORT_PHD: u64 = 24;
/// Size of a long page header (MAXALIGN(sizeof(XLogLongPageHeaderData))).
pub const SIZE_OF_XLOG_LONG_PHD: u64 = 40;

/// xlp_info: the first data on the page continues a record.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// xlp_info: the page has a long header.
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// xlp_info: backup blocks starting on this page are optional.
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// xlp_info: replaces a missing contrecord.
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// All defined xlp_info bits.
pub const XLP_ALL_FLAGS: u16 = 0x000F;

/// Smallest and largest WAL segment size PostgreSQL allows.
pub const WAL_SEG_MIN_SIZE: u64 = 1024 * 1024;
pub const WAL_SEG_MAX_SIZE: u64 = 1024 * 1024 * 1024;

/// `xlp_magic` of the WAL page header at the start of `b`.
pub fn xlp_magic(b: &[u8]) -> u16 {
    le_u16(b, 0)
}

/// `xlp_info` (the XLP_ flags).
pub fn xlp_info(b: &[u8]) -> u16 {
    le_u16(b, 2)
}

/// `xlp_pageaddr`: the LSN of the page's first byte.
pub fn xlp_pageaddr(b: &[u8]) -> u64 {
    le_u64(b, 8)
}

/// `xlp_rem_len`: bytes of a record continued from the previous page.
pub fn xlp_rem_len(b: &[u8]) -> u32 {
    le_u32(b, 16)
}

/// `xlp_sysid` of a long page header.
pub fn xlp_sysid(b: &[u8]) -> u64 {
    le_u64(b, 24)
}

/// `xlp_seg_size` of a long page header.
pub fn xlp_seg_size(b: &[u8]) -> u32 {
    le_u32(b, 32)
}

/// `xlp_xlog_blcksz` of a long page header.
pub fn xlp_xlog_blcksz(b: &[u8]) -> u32 {
    le_u32(b, 36)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourteen_is_served_but_fifteen_stays_the_first_choice() {
        assert_eq!(xlog_page_magic(14), Some(0xD10D));
        assert_eq!(pg_version_of_magic(0xD10D), Some(14));
        assert_eq!(xlog_page_magic(13), None);
        assert_eq!(supported_versions(), "14, 15, 16, 17 or 18");
        assert_eq!(
            preferred_versions().collect::<Vec<_>>(),
            [15, 16, 17, 18, 14]
        );
    }
}
