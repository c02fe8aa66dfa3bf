//! The scratch root is trusted only when it is ours: a directory another
//! local user made first (or can write into, or a symbolic link) is refused,
//! and nothing found in a good one is used unchecked: a planted copy of the
//! extension or a planted template is replaced, never loaded, and a planted
//! per-process directory is never taken over. Each test proves the real
//! extension still runs by a ping through PostgreSQL.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use walredo::process::launch::{unique_suffix, Launcher};
use walredo::{Config, Error, Redoer};
use walredo_testkit::harness::*;

const NOBODY: u32 = 65534;

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// A directory under /tmp removed on drop; `make` says how it is made.
struct Planted(PathBuf);

impl Planted {
    fn new(name: &str) -> Planted {
        let path =
            std::env::temp_dir().join(format!("walredo-trust-{name}-{}", std::process::id()));
        let _ = fs::remove_file(&path);
        let _ = fs::remove_dir_all(&path);
        Planted(path)
    }

    /// A good scratch root: ours, mode 0711.
    fn ours(name: &str) -> Planted {
        let p = Planted::new(name);
        fs::create_dir(&p.0).unwrap();
        fs::set_permissions(&p.0, fs::Permissions::from_mode(0o711)).unwrap();
        p
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn with_root(root: &Path) -> Config {
    Config {
        scratch_dir: Some(root.to_path_buf()),
        ..config()
    }
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
}

fn expect_refused(config: &Config, root: &Path, why: &str) {
    match Launcher::new(config) {
        Err(Error::SpawnFailed(m)) => {
            eprintln!("refused as it should be: {m}");
            assert!(m.contains(&root.display().to_string()), "{m}");
            assert!(m.contains(why), "{m}");
            assert!(m.contains("scratch_dir"), "says what to do: {m}");
        }
        other => panic!("{} was accepted: {other:?}", root.display()),
    }
}

#[test]
fn a_scratch_root_owned_by_another_user_is_refused() {
    // Only as root: then another user's directory is writable to us anyway.
    let Some(_test) = isolated_root_test("planting as another user") else {
        return;
    };
    // A directory named by the caller.
    let planted = Planted::new("foreign");
    fs::create_dir(&planted.0).unwrap();
    fs::set_permissions(&planted.0, fs::Permissions::from_mode(0o755)).unwrap();
    chown(&planted.0, NOBODY);
    expect_refused(
        &with_root(&planted.0),
        &planted.0,
        "owned by uid 65534 (nobody)",
    );

    // The default root, $TMPDIR/walredo-<uid>, made first by someone else in
    // a world-writable directory like /tmp.
    let tmpdir = Planted::new("tmpdir");
    fs::create_dir(&tmpdir.0).unwrap();
    fs::set_permissions(&tmpdir.0, fs::Permissions::from_mode(0o1777)).unwrap();
    let default_root = tmpdir.0.join(format!("walredo-{}", euid()));
    fs::create_dir(&default_root).unwrap();
    chown(&default_root, NOBODY);
    let saved = std::env::var_os("TMPDIR");
    std::env::set_var("TMPDIR", &tmpdir.0);
    let outcome = Launcher::new(&config());
    match saved {
        Some(v) => std::env::set_var("TMPDIR", v),
        None => std::env::remove_var("TMPDIR"),
    }
    match outcome {
        Err(Error::SpawnFailed(m)) => {
            assert!(m.contains(&default_root.display().to_string()), "{m}");
            assert!(m.contains("owned by uid 65534"), "{m}");
        }
        other => panic!("the planted default root was accepted: {other:?}"),
    }
    // Nothing was written into it.
    assert_eq!(fs::read_dir(&default_root).unwrap().count(), 0);
}

#[test]
fn a_scratch_root_others_can_write_is_refused() {
    let _test = isolated_test();
    for mode in [0o777, 0o770, 0o1733] {
        let planted = Planted::new("writable");
        fs::create_dir(&planted.0).unwrap();
        fs::set_permissions(&planted.0, fs::Permissions::from_mode(mode)).unwrap();
        expect_refused(&with_root(&planted.0), &planted.0, "writable by");
        // Left as it was: not made private behind the owner's back.
        let found = fs::metadata(&planted.0).unwrap().mode() & 0o7777;
        assert_eq!(found, mode, "{:o}", found);
    }
}

#[test]
fn a_symlinked_scratch_root_is_refused() {
    let _test = isolated_test();
    // Even to a directory of ours: the link decides where files go.
    let target = Planted::ours("link-target");
    let link = Planted::new("link");
    std::os::unix::fs::symlink(&target.0, &link.0).unwrap();
    expect_refused(&with_root(&link.0), &link.0, "symbolic link");
    assert_eq!(fs::read_dir(&target.0).unwrap().count(), 0);
}

/// One way of planting something at a path, and what it is.
type Plant<'a> = Box<dyn Fn(&Path) + 'a>;

/// The name the extension's copy gets in the scratch root.
fn extension_copy_name(bytes: &[u8]) -> String {
    format!(
        "pg_walredo-{:08x}-{}.so",
        walredo::pg::crc32c::crc32c(bytes),
        bytes.len()
    )
}

/// Another shared object PostgreSQL can load: what a stranger would plant.
fn foreign_library() -> PathBuf {
    let p = PathBuf::from("/usr/lib/postgresql/15/lib/plpgsql.so");
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

#[test]
fn a_planted_extension_copy_is_replaced_and_the_real_extension_runs() {
    let _test = isolated_test();
    let real = fs::read(extension_path()).unwrap();
    let foreign = fs::read(foreign_library()).unwrap();
    let name = extension_copy_name(&real);
    // Each way a file under the copy's name can be wrong.
    let plants: Vec<(&str, Plant)> = vec![
        (
            "another library, owned by us",
            Box::new(|p: &Path| fs::write(p, &foreign).unwrap()),
        ),
        (
            "the right bytes but one, owned by us",
            Box::new(|p: &Path| {
                let mut b = real.clone();
                let mid = b.len() / 2;
                b[mid] ^= 1;
                fs::write(p, b).unwrap();
            }),
        ),
        (
            "a symbolic link to another library",
            Box::new(|p: &Path| std::os::unix::fs::symlink(foreign_library(), p).unwrap()),
        ),
        (
            "the right bytes, writable by everyone",
            Box::new(|p: &Path| {
                fs::write(p, &real).unwrap();
                fs::set_permissions(p, fs::Permissions::from_mode(0o666)).unwrap();
            }),
        ),
        (
            "another library, owned by nobody",
            Box::new(|p: &Path| {
                fs::write(p, &foreign).unwrap();
                if euid() == 0 {
                    chown(p, NOBODY);
                }
            }),
        ),
    ];
    for (what, plant) in plants {
        let root = Planted::ours("so");
        let copy = root.0.join(&name);
        plant(&copy);
        let mut r = Redoer::new(&with_root(&root.0)).unwrap();
        if let Err(e) = r.ping() {
            panic!("with {what} planted, the process did not work: {e}");
        }
        let m = fs::symlink_metadata(&copy).unwrap();
        assert!(m.file_type().is_file(), "{what}: not a regular file now");
        assert_eq!(m.uid(), euid(), "{what}: not ours now");
        assert_eq!(m.mode() & 0o022, 0, "{what}: writable by others now");
        assert!(
            fs::read(&copy).unwrap() == real,
            "{what}: not the real extension now"
        );
        drop(r);
    }
}

const TEMPLATE: &str = "template-pg15-checksums-off";

#[test]
fn a_planted_template_is_regenerated() {
    let _test = isolated_test();
    // A control file PostgreSQL refuses (bad CRC): a process started from it
    // would fail, so a working ping shows the template was made anew.
    let garbage = vec![0x5a; 8192];
    let plants: Vec<(&str, Plant)> = vec![
        (
            "a template owned by nobody",
            Box::new(|t: &Path| {
                fs::create_dir_all(t.join("global")).unwrap();
                fs::write(t.join("PG_VERSION"), b"15\n").unwrap();
                fs::write(t.join("global/pg_control"), &garbage).unwrap();
                if euid() == 0 {
                    for p in [
                        t,
                        &t.join("global"),
                        &t.join("PG_VERSION"),
                        &t.join("global/pg_control"),
                    ] {
                        chown(p, NOBODY);
                    }
                }
            }),
        ),
        (
            "a control file writable by everyone",
            Box::new(|t: &Path| {
                fs::create_dir_all(t.join("global")).unwrap();
                fs::write(t.join("PG_VERSION"), b"15\n").unwrap();
                fs::write(t.join("global/pg_control"), &garbage).unwrap();
                fs::set_permissions(
                    t.join("global/pg_control"),
                    fs::Permissions::from_mode(0o666),
                )
                .unwrap();
            }),
        ),
        (
            "a control file that is a symbolic link",
            Box::new(|t: &Path| {
                fs::create_dir_all(t.join("global")).unwrap();
                fs::write(t.join("PG_VERSION"), b"15\n").unwrap();
                fs::write(t.join("elsewhere"), &garbage).unwrap();
                std::os::unix::fs::symlink(t.join("elsewhere"), t.join("global/pg_control"))
                    .unwrap();
            }),
        ),
    ];
    for (what, plant) in plants {
        let root = Planted::ours("template");
        let template = root.0.join(TEMPLATE);
        plant(&template);
        let mut r = Redoer::new(&with_root(&root.0)).unwrap();
        if let Err(e) = r.ping() {
            panic!("with {what} planted, the process did not work: {e}");
        }
        for f in ["PG_VERSION", "global/pg_control"] {
            let m = fs::symlink_metadata(template.join(f)).unwrap();
            assert!(
                m.file_type().is_file(),
                "{what}: {f} not a regular file now"
            );
            assert_eq!(m.uid(), euid(), "{what}: {f} not ours now");
            assert_eq!(m.mode() & 0o022, 0, "{what}: {f} writable by others now");
        }
        drop(r);
    }
}

#[test]
fn a_planted_process_directory_is_never_taken_over() {
    let _test = isolated_test();
    let root = Planted::ours("proc");
    let launcher = Launcher::new(&with_root(&root.0)).unwrap();
    // The name the next scratch directory would get: `proc-<pid>-<n>`.
    let (pid, n) = {
        let s = unique_suffix();
        let (pid, n) = s.split_once('-').unwrap();
        (pid.to_string(), n.parse::<u64>().unwrap())
    };
    let planted = root.0.join(format!("proc-{pid}-{}", n + 1));
    fs::create_dir(&planted).unwrap();
    fs::write(planted.join("marker"), b"planted").unwrap();
    let dir = launcher.make_scratch_dir().unwrap();
    assert_ne!(dir, planted, "the planted directory was taken over");
    assert!(!dir.join("marker").exists());
    assert!(dir.join("global/pg_control").is_file());
    let left: Vec<_> = fs::read_dir(&planted)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["marker"], "the planted directory was written to");
    fs::remove_dir_all(&dir).unwrap();
}
