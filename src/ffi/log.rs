//! Where the library's log lines go: a host's callback, or stderr.
//!
//! The `log` crate allows one logger per process. Ours is installed at most
//! once (by the first `walredo_pool_new` or `walredo_set_logger`), and only if
//! the host has not installed one itself; it then sends each line to the
//! callback set with `walredo_set_logger`, or else to stderr (env_logger,
//! which honours `RUST_LOG`).

use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::OnceLock;

use parking_lot::RwLock;

use super::{guard, invalid};

/// Log levels of `walredo_set_logger` and of the callback.
pub const WALREDO_LOG_OFF: c_int = 0;
pub const WALREDO_LOG_ERROR: c_int = 1;
pub const WALREDO_LOG_WARN: c_int = 2;
pub const WALREDO_LOG_INFO: c_int = 3;
pub const WALREDO_LOG_DEBUG: c_int = 4;
pub const WALREDO_LOG_TRACE: c_int = 5;

/// Receives one log line: its level (`WALREDO_LOG_ERROR` ...) and the text,
/// valid only during the call. Called on any thread of the library or of a
/// caller, possibly on several at once; it must not call back into the
/// library, and a PostgreSQL extension must not `ereport` from it.
pub type walredo_log_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, level: c_int, message: *const c_char)>;

struct Sink {
    cb: unsafe extern "C" fn(*mut c_void, c_int, *const c_char),
    userdata: *mut c_void,
}

// SAFETY: walredo_set_logger's contract makes the caller responsible for the
// callback and its userdata being usable from any thread.
unsafe impl Send for Sink {}
// SAFETY: as above.
unsafe impl Sync for Sink {}

struct Dispatch {
    sink: RwLock<Option<Sink>>,
    stderr: env_logger::Logger,
}

static DISPATCH: OnceLock<Dispatch> = OnceLock::new();
static INSTALLED: OnceLock<bool> = OnceLock::new();

impl log::Log for Dispatch {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match &*self.sink.read() {
            Some(sink) => {
                let level = match record.level() {
                    log::Level::Error => WALREDO_LOG_ERROR,
                    log::Level::Warn => WALREDO_LOG_WARN,
                    log::Level::Info => WALREDO_LOG_INFO,
                    log::Level::Debug => WALREDO_LOG_DEBUG,
                    log::Level::Trace => WALREDO_LOG_TRACE,
                };
                let text = format!("{}", record.args()).replace('\0', "\\0");
                let text = CString::new(text).unwrap_or_default();
                // SAFETY: the host's callback, called as its typedef says;
                // the text outlives the call.
                unsafe { (sink.cb)(sink.userdata, level, text.as_ptr()) };
            }
            None => {
                if self.stderr.matches(record) {
                    self.stderr.log(record)
                }
            }
        }
    }

    fn flush(&self) {}
}

/// Install our logger unless someone (we, or the host) already did. Returns
/// whether ours is the process's logger.
fn install(default_level: log::LevelFilter) -> bool {
    *INSTALLED.get_or_init(|| {
        let dispatch = DISPATCH.get_or_init(|| Dispatch {
            sink: RwLock::new(None),
            stderr: env_logger::Builder::new()
                .filter_level(default_level)
                .parse_env(env_logger::Env::default())
                .target(env_logger::Target::Stderr)
                .build(),
        });
        let ours = log::set_logger(dispatch).is_ok();
        if ours {
            log::set_max_level(dispatch.stderr.filter().max(default_level));
        }
        ours
    })
}

/// Called by walredo_pool_new: log to stderr at `level` (or as `RUST_LOG`
/// says) unless a logger is already in place.
pub(crate) fn init_default(level: log::LevelFilter) {
    install(level);
}

/// Send the library's log lines at `level` and above to `cb` (NULL: back to
/// stderr). `level` is one of `WALREDO_LOG_OFF` .. `WALREDO_LOG_TRACE`.
/// Affects every pool in the process; may be called at any time, from any
/// thread, also before any pool exists. `userdata` is passed to `cb`
/// untouched and must be usable from any thread.
///
/// Returns `WALREDO_INVALID_ARGUMENT` for a bad level, or when the host
/// process already installed its own Rust `log` logger (then that logger
/// receives the lines).
#[no_mangle]
pub unsafe extern "C" fn walredo_set_logger(
    cb: walredo_log_callback,
    userdata: *mut c_void,
    level: c_int,
) -> c_int {
    guard(|| {
        let filter = match level {
            WALREDO_LOG_OFF => log::LevelFilter::Off,
            WALREDO_LOG_ERROR => log::LevelFilter::Error,
            WALREDO_LOG_WARN => log::LevelFilter::Warn,
            WALREDO_LOG_INFO => log::LevelFilter::Info,
            WALREDO_LOG_DEBUG => log::LevelFilter::Debug,
            WALREDO_LOG_TRACE => log::LevelFilter::Trace,
            other => return Err(invalid(format!("log level {other} is not 0..5"))),
        };
        if !install(filter) {
            return Err(invalid(
                "the host process installed its own logger; it receives walredo's lines",
            ));
        }
        let dispatch = DISPATCH.get().expect("installed above");
        *dispatch.sink.write() = cb.map(|cb| Sink { cb, userdata });
        log::set_max_level(filter);
        Ok(())
    })
}
