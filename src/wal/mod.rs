//! Reading PostgreSQL WAL (15 to 18) segment files, in one directory or several.
//!
//! [`WalReader`] walks the segments of one timeline in a directory (normally a
//! cluster's `pg_wal`) and yields every record as its raw bytes: the complete
//! `XLogRecord`, header included, reassembled across page and segment
//! boundaries, with the record's start LSN and its end LSN exactly as
//! PostgreSQL's xlogreader computes `EndRecPtr`.
//!
//! The reader tells "the WAL ended" (iteration stops, see
//! [`WalReader::end_reason`]) apart from real problems ([`WalError`]): the end of
//! WAL is whatever PostgreSQL's own recovery would take as its end (a zeroed
//! tail, a recycled page, a torn last record, a missing next segment), while a
//! hole between present segments, unreadable files or inconsistent headers are
//! errors.
//!
//! The PostgreSQL formats themselves (page magic, headers, record types) are
//! in [`crate::pg`].

pub mod checksum;
pub mod error;
pub mod image;
pub mod lifetime;
pub mod lsn;
pub mod pages;
pub mod reader;
pub mod record;
pub mod segments;
pub mod source;
pub mod timeline;
pub mod uses;

pub use error::WalError;
pub use lsn::{format_lsn, next_record_start, parse_lsn};
pub use reader::{WalReader, WalRecord};
pub use segments::{parse_segment_file_name, segment_file_name, Segments, Start};

// Kept for src/process/launch.rs and src/datadir.rs, which import them from here.
pub use crate::pg::crc32c;
pub use crate::pg::xlog::{supported_versions, xlog_page_magic, PG_VERSIONS};
