//! A PostgreSQL page (a block of a relation fork).

/// Size of a PostgreSQL page (BLCKSZ); the only size this library supports.
pub const PAGE_SIZE: usize = 8192;

/// A page, as redo returns it.
pub type Page = [u8; PAGE_SIZE];
