//! Reading PostgreSQL WAL (14 to 18): segment files in one directory or
//! several, the records in them, and which records rebuild which page. The
//! formats themselves (page magic, headers, record types) are in
//! [`crate::pg`].
//!
//! - [`reader`]: [`WalReader`], every record of one timeline, and where the
//!   WAL ends; [`segments`]: segment file names and [`Segments`]; [`lsn`]: LSN
//!   text and record starts; [`error`]: [`WalError`]; [`timeline`]: history
//!   files.
//! - [`record`]: decoding and checking one record; [`image`]: full-page
//!   images; [`checksum`]: data page checksums.
//! - [`pages`]: which pages a record changes ([`slru`]: which SLRU pages and
//!   relation maps); [`lifetime`]: which blocks it
//!   removes; [`uses`]: block uses and their runs over records in memory;
//!   [`source`]: [`source::WalSource`], replay plans and histories read from
//!   directories of WAL.

pub mod checksum;
pub mod error;
pub mod image;
pub mod lifetime;
pub mod lsn;
pub mod mapped;
pub mod pages;
pub mod reader;
pub mod record;
pub mod restore;
pub mod segment_file;
pub mod segments;
pub mod slru;
pub mod source;
pub mod timeline;
pub mod uses;

pub use error::WalError;
pub use lsn::{format_lsn, next_record_start, parse_lsn};
pub use reader::{WalReader, WalRecord};
pub use segments::{parse_segment_file_name, segment_file_name, Segments, Start};
