//! Test support: throw-away PostgreSQL 15 clusters, run as an unprivileged
//! user when the tests run as root.
#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;

#[allow(unused_imports)]
pub use walredo::cluster::*;
use walredo::Config;

/// Tests that start processes take this, so that one test's children are
/// never counted as another's leftovers.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

pub fn extension_path() -> PathBuf {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pg_walredo/pg_walredo.so"
    ));
    assert!(
        p.is_file(),
        "{} is missing: build it with `make -C pg_walredo` (make check does)",
        p.display()
    );
    p
}

pub fn config() -> Config {
    Config {
        extension_path: Some(extension_path()),
        ..Config::default()
    }
}

/// No wal-redo process of ours is alive (or a zombie), and no scratch
/// directory of ours is left in the scratch root.
pub fn assert_no_leftovers() {
    let me = std::process::id();
    let mut children = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may contain spaces, so split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(me) {
            children.push(format!(
                "{} ({})",
                entry.file_name().to_string_lossy(),
                fields[0]
            ));
        }
    }
    assert!(
        children.is_empty(),
        "child processes left behind: {children:?}"
    );

    // SAFETY: geteuid cannot fail.
    let root = std::env::temp_dir().join(format!("walredo-{}", unsafe { libc::geteuid() }));
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

    // PostgreSQL's System V interlock segments (56 bytes) that nobody is
    // attached to: what a killed wal-redo process would leak.
    let shm = fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    let orphans: Vec<&str> = shm
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(3) == Some(&"56") && f.get(6) == Some(&"0")
        })
        .collect();
    assert!(
        orphans.is_empty(),
        "orphaned shared memory segments: {orphans:?}"
    );
}

/// A minimal valid XLogRecord (Heap rmgr, no data) with one block reference
/// to `tag`; `will_init` makes it initialize the page.
pub fn synthetic_record(tag: &walredo::PageTag, will_init: bool) -> Vec<u8> {
    use walredo::crc32c::{crc32c_finish, crc32c_update, CRC32C_INIT};
    let mut r = vec![0u8; 24];
    r.push(0); // block id 0
    r.push(tag.forknum | if will_init { 0x40 } else { 0 });
    r.extend_from_slice(&0u16.to_le_bytes()); // no block data
    for v in [tag.rel.spcnode, tag.rel.dbnode, tag.rel.relnode, tag.blkno] {
        r.extend_from_slice(&v.to_le_bytes());
    }
    let len = r.len() as u32;
    r[0..4].copy_from_slice(&len.to_le_bytes());
    r[17] = 10; // RM_HEAP_ID
    let crc = crc32c_finish(crc32c_update(
        crc32c_update(CRC32C_INIT, &r[24..]),
        &r[..20],
    ));
    r[20..24].copy_from_slice(&crc.to_le_bytes());
    r
}

/// Fixtures cut from real WAL of a throw-away cluster made in `dir`.
pub fn load_fixtures(dir: &std::path::Path) -> Vec<walredo::fixtures::Fixture> {
    walredo::fixtures::make_fixtures(dir, &config())
}

/// PostgreSQL's System V interlock segments that nobody is attached to (the
/// lines of /proc/sysvipc/shm that `assert_no_leftovers` complains about).
pub fn orphaned_segments() -> Vec<String> {
    fs::read_to_string("/proc/sysvipc/shm")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(3) == Some(&"56") && f.get(6) == Some(&"0")
        })
        .map(str::to_string)
        .collect()
}

/// `assert_no_leftovers`, except for orphaned segments that were there
/// before the test started (`orphaned_segments()` then): the machine is
/// shared, and other runs' leftovers are not this test's.
pub fn assert_no_leftovers_besides(preexisting: &[String]) {
    let me = std::process::id();
    let children: Vec<String> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            (fields.get(1)?.parse::<u32>().ok()? == me)
                .then(|| format!("{} ({})", entry.file_name().to_string_lossy(), fields[0]))
        })
        .collect();
    assert!(
        children.is_empty(),
        "child processes left behind: {children:?}"
    );
    // SAFETY: geteuid cannot fail.
    let root = std::env::temp_dir().join(format!("walredo-{}", unsafe { libc::geteuid() }));
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
    let orphans: Vec<String> = orphaned_segments()
        .into_iter()
        .filter(|s| !preexisting.contains(s))
        .collect();
    assert!(
        orphans.is_empty(),
        "orphaned shared memory segments: {orphans:?}"
    );
}
