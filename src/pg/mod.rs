//! PostgreSQL's on-disk formats, the numbers and layouts every other module
//! shares: pages, WAL pages, WAL records and their headers, resource managers
//! and record types, CRC-32C, the masks that hide what redo does not
//! reproduce. Nothing here does I/O or talks to a process; every module may
//! use it.

pub(crate) mod bytes;
pub mod crc32c;
pub mod mask;
pub mod page;
pub mod record;
pub mod record_type;
pub mod rmgr;
pub mod slru;
pub mod xlog;
