//! walredo: turn PostgreSQL 15 WAL records back into pages, using PostgreSQL's own
//! redo routines running in `pg_walredo` processes.

pub mod checksum;
pub mod cluster;
pub mod config;
pub mod crc32c;
pub mod datadir;
pub mod error;
pub mod ffi;
pub mod fixtures;
pub mod image;
pub mod launch;
pub mod plan;
pub(crate) mod pool;
pub mod process;
pub mod protocol;
pub mod record;
pub mod redo;
pub mod service;
pub mod stats;
pub mod tag;
pub mod verify;
pub mod wal;
pub(crate) mod watchdog;

pub use config::Config;
pub use error::{Error, Result};
pub use protocol::RecordRef;
pub use redo::{Page, Redoer};
pub use service::Pool;
pub use tag::{PageTag, RelFileNode};

/// Size of a PostgreSQL page (BLCKSZ); the only size this library supports.
pub const PAGE_SIZE: usize = 8192;
