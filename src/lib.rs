//! walredo: turn PostgreSQL WAL records (14 to 18) back into pages, using
//! PostgreSQL's own redo routines running in `pg_walredo` processes. The
//! design, and a request's path through these modules: docs/architecture.md.
//!
//! Everything here runs inside the host (a C program, a PostgreSQL backend, a
//! Rust service); tooling around it (the `walredo` command, the demo, test
//! clusters) lives in the workspace's other crates. The modules, from the
//! caller down:
//!
//! - [`ffi`]: the C ABI (`include/walredo.h`), one module per C object.
//! - [`pool`]: [`Pool`], its request queue and workers, the process slots
//!   (spawn, retry, retirement) and their statistics.
//! - [`request`]: a redo request, checked and encoded for the wire once.
//! - [`redo`]: [`Redoer`], one process on one thread.
//! - [`process`]: one wal-redo child: how it is launched, its pipes and the
//!   wire protocol, deadlines (the watchdog), kill and reap.
//! - [`wal`]: reading WAL: segment files, record decoding, full-page
//!   images, page checksums, which records change which page, WAL sources
//!   and their replay plans.
//! - [`pg`]: PostgreSQL's formats, no I/O: pages, record headers and the
//!   record CRC, resource managers and record types, the version table.
//! - [`datadir`]: pages of a data directory by tag; [`tag`], [`config`],
//!   [`error`]: page tags, settings, the one error type.

pub mod config;
pub mod datadir;
pub mod error;
pub mod ffi;
pub mod pg;
pub mod pool;
pub mod process;
pub mod redo;
pub mod request;
pub mod tag;
#[cfg(test)]
mod test_rng;
pub mod wal;

pub use config::{Config, SpawnMode};
pub use error::{Error, Result};
pub use pg::page::{Page, PAGE_SIZE};
pub use pg::record::RecordRef;
pub use pool::Pool;
pub use redo::Redoer;
pub use tag::{PageTag, RelFileNode};
