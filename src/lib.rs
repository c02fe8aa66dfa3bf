//! walredo: turn PostgreSQL 15 WAL records back into pages, using PostgreSQL's own
//! redo routines running in `pg_walredo` processes.

pub mod tag;

pub use tag::{PageTag, RelFileNode};

/// Size of a PostgreSQL page (BLCKSZ); the only size this library supports.
pub const PAGE_SIZE: usize = 8192;
