//! PostgreSQL's on-disk formats, the numbers and layouts every other module
//! shares: pages, WAL records and their headers. Nothing here does I/O or
//! talks to a process; every module may use it.

pub mod page;
pub mod record;
