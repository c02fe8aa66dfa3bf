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

/// Swapping a scratch directory's `global` for a link while it is made
/// does not make root chown what the link points to (it did when the
/// directory was handed to the children's user first and walked by path
/// after).
#[test]
fn the_childrens_user_cannot_make_root_chown_a_file_while_scratch_directories_are_made() {
    let Some(_test) = isolated_root_test("the children run as the caller otherwise") else {
        return;
    };
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

/// A copy of PostgreSQL's bindir whose `initdb` runs the real one and then,
/// still as the children's user, replaces `NAME` in the new data directory
/// by a symbolic link to `secret`, or to the file of that name in it: what a process of that user could do
/// the moment initdb is done, here without a race.
fn bindir_with_swapping_initdb(name: &str, secret: &Path) -> TempDir {
    let bin = TempDir::new(&format!("bin-{}", name.replace('/', "-")), 0o755);
    let real = walredo_testkit::cluster::bindir();
    for program in ["postgres", "pg_config"] {
        std::os::unix::fs::symlink(real.join(program), bin.0.join(program)).unwrap();
    }
    // `global` becomes a link to the directory, `PG_VERSION` to the file.
    let target = if secret.join(name).exists() {
        secret.join(name)
    } else {
        secret.to_path_buf()
    };
    let script = format!(
        "#!/bin/sh\n\
         {initdb} \"$@\" || exit $?\n\
         data=\"$2\"\n\
         mv \"$data/{name}\" \"$data/{name}.real\" && ln -s {target} \"$data/{name}\"\n",
        initdb = real.join("initdb").display(),
        target = target.display(),
    );
    let initdb = bin.0.join("initdb");
    fs::write(&initdb, script).unwrap();
    fs::set_permissions(&initdb, fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Regular files under `dir` whose content holds `marker`.
fn files_containing(dir: &Path, marker: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(m) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        if m.is_dir() {
            found.extend(files_containing(&e.path(), marker));
        } else if m.is_file() {
            let bytes = fs::read(e.path()).unwrap_or_default();
            if bytes.windows(marker.len()).any(|w| w == marker) {
                found.push(e.path());
            }
        }
    }
    found
}

/// A link the children's user puts at `name` after initdb (which runs as
/// that user) does not copy a root-only file into the template and from
/// there into every scratch directory, where that user could read it (it
/// did when the host read `PG_VERSION` and `global/pg_control` following
/// links).
fn root_only_files_never_reach_the_template(name: &str) {
    let Some(_test) = isolated_root_test("the children run as the caller otherwise") else {
        return;
    };
    let marker = format!("walredo-races-secret-{}", std::process::id());
    // Root's alone: a directory nobody else can enter, files named as the
    // ones taken from initdb's output.
    let secret = TempDir::new("secret", 0o700);
    for file in ["pg_control", "PG_VERSION"] {
        let mut bytes = marker.clone().into_bytes();
        bytes.resize(if file == "pg_control" { 8192 } else { 64 }, b'.');
        fs::write(secret.0.join(file), bytes).unwrap();
        fs::set_permissions(secret.0.join(file), fs::Permissions::from_mode(0o600)).unwrap();
    }
    let bin = bindir_with_swapping_initdb(name, &secret.0);
    let root = TempDir::new("initdb", 0o711);
    let config = Config {
        pg_bindir: Some(bin.0.clone()),
        ..with_root(&root.0)
    };
    let outcome = Launcher::new(&config);
    if let Ok(launcher) = &outcome {
        let _ = launcher.make_scratch_dir();
    }
    let leaked = files_containing(&root.0, marker.as_bytes());
    assert!(
        leaked.is_empty(),
        "a root-only file was copied to {leaked:?} through a link to {name} in initdb's output"
    );
    match outcome {
        Err(walredo::Error::SpawnFailed(m)) => {
            eprintln!("refused as it should be: {m}");
            assert!(m.contains("is a symbolic link"), "{m}");
        }
        other => panic!("initdb's output with a link was accepted: {other:?}"),
    }
}

#[test]
fn a_link_for_global_in_initdbs_output_is_refused() {
    root_only_files_never_reach_the_template("global");
}

#[test]
fn a_link_for_pg_version_in_initdbs_output_is_refused() {
    root_only_files_never_reach_the_template("PG_VERSION");
}
