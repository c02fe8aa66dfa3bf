//! A root host and the trees its children's user can write: nothing a
//! process of that user does to them can make root change or read a file
//! that is not theirs. The attacker is real: `walredo-swapper` (a testkit
//! program run as the children's user) swapping a directory for a symbolic
//! link while the library works, or an `initdb` that does the same the
//! moment the real one is done. Root-only tests (as anyone else, the
//! children run as the caller and there is nothing to escalate to).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use walredo::process::launch::Launcher;
use walredo::Config;
use walredo_testkit::harness::*;

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

fn root_only() -> bool {
    if euid() != 0 {
        eprintln!("skipped: needs root (the children run as the caller otherwise)");
        return false;
    }
    true
}

/// A directory under /tmp, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str, mode: u32) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("walredo-races-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn with_root(root: &Path) -> Config {
    Config {
        scratch_dir: Some(root.to_path_buf()),
        ..config()
    }
}

/// `walredo-swapper` as the children's user, killed and reaped on drop.
struct Swapper(Child);

impl Swapper {
    fn start(launcher: &Launcher, root: &Path, prefix: &str, name: &str, target: &Path) -> Self {
        let ids = launcher.user().expect("children run as another user");
        let child = Command::new(walredo_testkit::swapper())
            .arg(root)
            .arg(prefix)
            .arg(name)
            .arg(target)
            .uid(ids.uid)
            .gid(ids.gid)
            .spawn()
            .unwrap();
        Swapper(child)
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Root-owned files a redirected walk would reach: a directory with the
/// names a scratch directory's `global/` holds.
fn canary() -> TempDir {
    let canary = TempDir::new("canary", 0o755);
    for name in ["pg_control", "PG_VERSION"] {
        let f = canary.0.join(name);
        fs::write(&f, b"root's own").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
    }
    canary
}

/// The owners of the canary and of everything in it that are not root.
fn changed_owners(canary: &Path) -> Vec<String> {
    let mut changed = Vec::new();
    let mut check = |p: &Path| {
        let m = fs::symlink_metadata(p).unwrap();
        if m.uid() != 0 || m.gid() != 0 {
            changed.push(format!("{} is now {}:{}", p.display(), m.uid(), m.gid()));
        }
    };
    check(canary);
    for e in fs::read_dir(canary).unwrap().flatten() {
        check(&e.path());
    }
    changed
}

/// Item 1 of issue 22: the scratch directory was handed to the children's
/// user first and then walked by path, so swapping its `global` for a link
/// made root chown whatever the link pointed to.
#[test]
fn the_childrens_user_cannot_make_root_chown_a_file_while_scratch_directories_are_made() {
    let _serial = serial();
    init_logging();
    if !root_only() {
        return;
    }
    const MAKES: usize = 1000;
    let root = TempDir::new("chown", 0o711);
    let launcher = Launcher::new(&with_root(&root.0)).unwrap();
    let canary = canary();
    // The names in the root are guessable (`proc-<host pid>-<n>`); letting
    // the swapper list them only spares it the guessing.
    fs::set_permissions(&root.0, fs::Permissions::from_mode(0o755)).unwrap();
    let swapper = Swapper::start(&launcher, &root.0, "proc-", "global", &canary.0);

    let mut made = 0;
    let mut failed = 0;
    let mut changed = Vec::new();
    for _ in 0..MAKES {
        match launcher.make_scratch_dir() {
            Ok(dir) => {
                made += 1;
                // Taken back from the swapper first, which would otherwise
                // keep adding its link while the directory is removed.
                std::os::unix::fs::lchown(&dir, Some(0), Some(0)).unwrap();
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
                fs::remove_dir_all(&dir).unwrap();
            }
            Err(_) => failed += 1,
        }
        changed = changed_owners(&canary.0);
        if !changed.is_empty() {
            break;
        }
    }
    drop(swapper);
    eprintln!("{made} scratch directories made, {failed} makes failed");
    assert!(
        changed.is_empty(),
        "root chowned files the children's user pointed it to, after {} makes: {changed:?}",
        made + failed
    );
    // Nothing the swapper did makes a make fail: the directory is handed
    // over when it is complete.
    assert_eq!(failed, 0, "makes failed under the swapper");
}
