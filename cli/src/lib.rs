//! The `walredo` command's library: `verify` (rebuild every page a stretch of
//! WAL touched and compare with PostgreSQL's recovery) and `page` (a page as
//! it was at an LSN), for the command, the demo, the benchmark and the tests.

pub mod check;
pub mod server;
pub mod verify;
