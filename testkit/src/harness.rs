//! What every test of walredo starts from: one test at a time with a leak
//! check that judges only the test's own processes (`isolated_test`, a
//! guard built on `serial` and `assert_no_leftovers`), the configuration
//! that loads the extension built in this tree, pools, processes and fake
//! children set up as the tests use them, the errors they expect
//! (`spawn_failure`, `redo_failure`), `wait_until`, and hand-made records;
//! with the clusters of [`crate::cluster`] re-exported.

use std::fs;
use std::path::PathBuf;

pub use crate::cluster::*;
use walredo::Config;

/// Tests that start processes take this, so that one test's children are
/// never counted as another's leftovers. It also gives the test's thread,
/// and so every process the test starts, a System V IPC namespace of its own
/// (see `isolate_ipc`).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    isolate_ipc();
    guard
}

thread_local! {
    /// Segments that existed when this thread's test began, when it could not
    /// have a namespace of its own: they are not the test's.
    static FOREIGN_SEGMENTS: std::cell::RefCell<Vec<i64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Make the leak check judge only segments of this test's processes. As
/// root, the calling thread enters a new IPC namespace (children inherit it
/// from the thread that starts them: the test's own, or a pool's spawner
/// thread that the test's thread creates), so `/proc/sysvipc/shm` read from
/// here lists nothing but what the test's processes made. Where that is not
/// allowed, the segments that exist now are remembered as someone else's.
pub fn isolate_ipc() {
    // SAFETY: unshare has no memory-safety preconditions; it affects only
    // the calling thread.
    if unsafe { libc::unshare(libc::CLONE_NEWIPC) } == 0 {
        FOREIGN_SEGMENTS.with(|f| f.borrow_mut().clear());
        return;
    }
    let existing = sysv_segments().into_iter().map(|s| s.shmid).collect();
    FOREIGN_SEGMENTS.with(|f| *f.borrow_mut() = existing);
}

/// One line of `/proc/sysvipc/shm`.
#[derive(Debug)]
pub struct Segment {
    pub key: i64,
    pub shmid: i64,
    pub size: u64,
    pub cpid: u32,
    pub nattch: u64,
}

/// The System V shared memory segments this thread can see.
pub fn sysv_segments() -> Vec<Segment> {
    let shm = fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    shm.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(Segment {
                key: f.first()?.parse().ok()?,
                shmid: f.get(1)?.parse().ok()?,
                size: f.get(3)?.parse().ok()?,
                cpid: f.get(4)?.parse().ok()?,
                nattch: f.get(6)?.parse().ok()?,
            })
        })
        .collect()
}

/// Segments nobody is attached to that this test's processes made: what a
/// killed wal-redo process or server would leak (PostgreSQL's interlock
/// segment, 56 bytes, is removed only on a clean exit).
pub fn leaked_segments() -> Vec<Segment> {
    let foreign = FOREIGN_SEGMENTS.with(|f| f.borrow().clone());
    sysv_segments()
        .into_iter()
        .filter(|s| s.nattch == 0 && !foreign.contains(&s.shmid))
        .collect()
}

/// The start of a test that starts processes: [`serial`] (one test at a
/// time, System V segments of its own), logging on, and, when the returned
/// guard is dropped at the end of the test, [`assert_no_leftovers`]. Take it
/// first (`let _test = isolated_test();`): locals are dropped in reverse
/// order, so the pools, processes and directories the test made afterwards
/// are gone by then. A test that already fails (panics) is not checked again.
pub fn isolated_test() -> IsolatedTest {
    let serial = serial();
    init_logging();
    IsolatedTest { _serial: serial }
}

/// Returned by [`isolated_test`]: checks for leftovers when dropped.
pub struct IsolatedTest {
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Drop for IsolatedTest {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_no_leftovers();
        }
    }
}

/// As root only: [`isolated_test`], or None for any other user, after a
/// note that the test is skipped and `why` it needs root.
pub fn isolated_root_test(why: &str) -> Option<IsolatedTest> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root ({why})");
        return None;
    }
    Some(isolated_test())
}

pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// This tree's pg_walredo.so for the version the tests run
/// ([`crate::install::pg_version`]).
pub fn extension_path() -> PathBuf {
    let p = crate::install::built_dir("pg_walredo").join("pg_walredo.so");
    assert!(
        p.is_file(),
        "{} is missing: build it with `make PG_VERSION={}` (make check does)",
        p.display(),
        crate::install::pg_version()
    );
    p
}

pub fn config() -> Config {
    Config {
        extension_path: Some(extension_path()),
        pg_version: Some(crate::install::pg_version()),
        pg_bindir: Some(crate::cluster::bindir()),
        ..Config::default()
    }
}

/// A pool of one wal-redo process on this tree's extension ([`config`]),
/// with a spare process or without; nothing is started before it serves.
pub fn one_process_pool(spare_process: bool) -> walredo::Pool {
    walredo::Pool::new(&Config {
        processes: 1,
        spare_process,
        ..config()
    })
    .unwrap()
}

/// Poll `done` every 10 ms until it holds; fail the test, naming `what`,
/// if it does not within `within`.
pub fn wait_until(what: &str, within: std::time::Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Assert fields of a pool's `Stats` (or anything with those fields and
/// `Debug`), each named beside the value it must have:
/// `assert_stats!(s, retries: 1, failures: 0)`. A failure shows them all.
#[macro_export]
macro_rules! assert_stats {
    ($stats:expr, $($field:ident: $want:expr),+ $(,)?) => {{
        let stats = &$stats;
        assert_eq!(
            ($(stats.$field,)+),
            ($($want,)+),
            "{} of {stats:?}",
            stringify!($($field),+)
        );
    }};
}
pub use crate::assert_stats;

/// The message of the `SpawnFailed` error `result` must be.
pub fn spawn_failure<T>(result: walredo::Result<T>) -> String {
    match result {
        Err(walredo::Error::SpawnFailed(m)) => m,
        Err(other) => panic!("expected SpawnFailed, got {other:?}"),
        Ok(_) => panic!("expected SpawnFailed, got a success"),
    }
}

/// The message and the process's stderr of the `RedoFailed` error `result`
/// must be.
pub fn redo_failure<T>(result: walredo::Result<T>) -> (String, String) {
    match result {
        Err(walredo::Error::RedoFailed { message, stderr }) => (message, stderr),
        Err(other) => panic!("expected RedoFailed, got {other:?}"),
        Ok(_) => panic!("expected RedoFailed, got a success"),
    }
}

/// A `Redoer` on `config` whose process has started and answered a ping,
/// and that process's pid.
pub fn started_redoer(config: &Config) -> (walredo::Redoer, u32) {
    let mut redoer = walredo::Redoer::new(config).unwrap();
    redoer.ping().unwrap();
    let pid = redoer.pid().unwrap();
    (redoer, pid)
}

/// A process started by `launcher` that has answered its handshake.
pub fn ready_process(launcher: &walredo::process::launch::Launcher) -> walredo::process::Process {
    let mut process = walredo::process::Process::spawn(launcher).unwrap();
    process
        .handshake(std::time::Duration::from_secs(10))
        .unwrap();
    process
}

/// No wal-redo process of ours is alive (or a zombie), no scratch directory
/// of ours is left in the scratch root, and no System V segment of the
/// test's processes is left (see `serial`).
pub fn assert_no_leftovers() {
    let me = std::process::id();
    let children: Vec<String> = crate::install::children_of(me)
        .into_iter()
        .map(|(pid, state)| format!("{pid} ({state})"))
        .collect();
    assert!(
        children.is_empty(),
        "child processes left behind: {children:?}"
    );

    // SAFETY: geteuid cannot fail.
    let root = walredo::config::default_scratch_root();
    let prefix = format!("proc-{me}-");
    let left: Vec<String> = fs::read_dir(&root)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch directories left behind: {left:?}");

    let orphans = leaked_segments();
    assert!(
        orphans.is_empty(),
        "orphaned shared memory segments of this test: {orphans:?}"
    );
}

/// A minimal valid XLogRecord (Heap INSERT, no block data) with one block
/// reference to `tag`; `will_init` makes it initialize the page. Its main
/// data is the 3-byte `xl_heap_insert` (offnum 1, no flags), which the
/// library requires of a heap insert.
pub fn synthetic_record(tag: &walredo::PageTag, will_init: bool) -> Vec<u8> {
    use walredo::pg::{record::set_record_crc, rmgr::RM_HEAP_ID};
    let mut r = vec![0u8; 24];
    r.push(0); // block id 0
    r.push(tag.forknum | if will_init { 0x40 } else { 0 });
    r.extend_from_slice(&0u16.to_le_bytes()); // no block data
    for v in [tag.rel.spcnode, tag.rel.dbnode, tag.rel.relnode, tag.blkno] {
        r.extend_from_slice(&v.to_le_bytes());
    }
    r.extend_from_slice(&[255, 3]); // XLR_BLOCK_ID_DATA_SHORT, 3 bytes
    r.extend_from_slice(&[1, 0, 0]); // xl_heap_insert: offnum 1, flags 0
    let len = r.len() as u32;
    r[0..4].copy_from_slice(&len.to_le_bytes());
    r[17] = RM_HEAP_ID;
    set_record_crc(&mut r);
    r
}

/// The record format of the PostgreSQL version under test: decode its WAL
/// with it (14's image flags differ from 15's).
pub fn record_format() -> walredo::pg::record::RecordFormat {
    walredo::pg::record::RecordFormat::of_version(crate::install::pg_version())
}

/// Fixtures cut from real WAL of a throw-away cluster made in `dir`.
pub fn load_fixtures(dir: &std::path::Path) -> Vec<crate::fixtures::Fixture> {
    crate::fixtures::make_fixtures(dir, &config())
}

/// The System V shared memory segments (ids) that process `pid` created, from
/// /proc/sysvipc/shm (columns: key shmid perms size cpid ...).
pub fn sysv_segments_created_by(pid: u32) -> Vec<i32> {
    let shm = fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    shm.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(4)?.parse::<u32>().ok()? == pid).then(|| f[1].parse().ok())?
        })
        .collect()
}

/// Whether segment `shmid` still exists.
pub fn sysv_segment_exists(shmid: i32) -> bool {
    // SAFETY: shmid_ds is plain old data that IPC_STAT fills in.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a shmid_ds for IPC_STAT to fill.
    unsafe { libc::shmctl(shmid, libc::IPC_STAT, &mut ds) == 0 }
}

/// Remove segment `shmid` (a test's own, or one it expected to survive).
pub fn remove_sysv_segment(shmid: i32) {
    // SAFETY: IPC_RMID takes no buffer.
    unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) };
}

/// What `walredo-fake-child` does with a request, by the relnode of its page
/// (see testkit/src/bin/walredo-fake-child.rs).
pub mod fake {
    pub const NORMAL: u32 = 1;
    pub const CRASH: u32 = 2;
    pub const HANG: u32 = 3;
    pub const SHORT: u32 = 4;
    pub const GARBAGE: u32 = 5;
    pub const CHATTY: u32 = 6;
    pub const CRASH_ONCE: u32 = 7;
    pub const SLOW: u32 = 8;
    pub const KILLED_THRICE: u32 = 9;
    pub const ABORT: u32 = 10;
}

/// A pool of `processes` fake children (started with `args`), each attempt
/// due within `timeout`, never retired.
pub fn fake_config(processes: usize, args: &[&str], timeout: std::time::Duration) -> Config {
    Config {
        child_program: Some((
            crate::fake_child(),
            args.iter().map(|s| s.to_string()).collect(),
        )),
        processes,
        timeout,
        idle_timeout: None,
        ..Config::default()
    }
}

/// [`fake_config`] for one process whose fake child keeps its counts (of
/// starts, of crashes and kills per request) as marker files in a fresh
/// directory `name` its user may write: started with `--marker-dir DIR`
/// and then `args`. Keep the directory until the pool is dropped.
pub fn marker_fake_config(
    name: &str,
    args: &[&str],
    timeout: std::time::Duration,
) -> (TempDir, Config) {
    let dir = TempDir::for_children(name);
    let mut all = vec!["--marker-dir", dir.path().to_str().unwrap()];
    all.extend_from_slice(args);
    let config = fake_config(1, &all, timeout);
    (dir, config)
}

/// Block `blkno` of relation `relnode` (which tells the fake child what to do).
pub fn fake_tag(relnode: u32, blkno: u32) -> walredo::PageTag {
    walredo::PageTag {
        rel: walredo::RelFileNode {
            spcnode: 1663,
            dbnode: 5,
            relnode,
        },
        forknum: 0,
        blkno,
    }
}

/// `n` records for `tag`, the first initializing the page.
pub fn synthetic_records(tag: &walredo::PageTag, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| synthetic_record(tag, i == 0)).collect()
}

/// `recs` as a request's records, ending at 0x1000, 0x2000, ...
pub fn record_refs(recs: &[Vec<u8>]) -> Vec<walredo::RecordRef<'_>> {
    recs.iter()
        .enumerate()
        .map(|(i, data)| walredo::RecordRef {
            end_lsn: 0x1000 * (i as u64 + 1),
            data,
        })
        .collect()
}
