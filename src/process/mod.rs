//! One wal-redo child process and what surrounds it: finding and preparing
//! what it needs (`launch`), starting it (`start`, `template`, `harden`),
//! talking to it (`child`, `protocol`; `futex` waits on a word another
//! process changes), ending it (`killer`, `watchdog`,
//! `reaper`, `sysv`, `sweeper`), and the thread that starts a pool's
//! processes (`spawner`). The design is in docs/processes.md.

mod child;
pub mod futex;
mod harden;
mod killer;
pub mod launch;
mod outcome;
pub mod protocol;
pub(crate) mod reaper;
mod spawner;
pub(crate) mod start;
pub(crate) mod sweeper;
mod sysv;
pub(crate) mod template;
pub(crate) mod threads;
pub(crate) mod watchdog;

pub use child::{Failure, Interrupted, Process};
pub(crate) use killer::Killer;
pub use spawner::Spawner;
