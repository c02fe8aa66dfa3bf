//! The template a scratch directory is copied from: `PG_VERSION` and
//! `global/pg_control`, made once per scratch root with initdb (run as the
//! children's user) and read back only if it is ours.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::account::UserIds;
use super::safe_fs::Dir;
use super::scratch::{new_dir, read_ours, remove_path};
use super::{euid, io_error, on_off, spawn_error};
use crate::error::Result;

/// The files a scratch directory starts with (PostgreSQL needs no more), read
/// once from the checked template and written into each new directory: no
/// later change of the template on disk can reach a process.
pub(super) struct Template {
    pub(super) files: Vec<(&'static str, Vec<u8>)>,
}

const TEMPLATE_FILES: [&str; 2] = ["PG_VERSION", "global/pg_control"];
/// PostgreSQL's PG_CONTROL_FILE_SIZE; PG_VERSION is smaller.
const TEMPLATE_FILE_MAX: u64 = 8192;

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: Vec<_> = self.files.iter().map(|(n, b)| (n, b.len())).collect();
        write!(f, "Template {sizes:?}")
    }
}

/// The template's files if all are there and ours; `Ok(None)` if one is
/// missing and the others are ours; `Err` says which one is not ours.
fn read_template(template: &Path) -> std::result::Result<Option<Template>, String> {
    let mut files = Vec::new();
    let mut complete = true;
    for name in TEMPLATE_FILES {
        let path = template.join(name);
        match read_ours(&path, TEMPLATE_FILE_MAX) {
            Ok(Some(bytes)) => files.push((name, bytes)),
            Ok(None) => complete = false,
            Err(why) => return Err(format!("{} {why}", path.display())),
        }
    }
    Ok(complete.then_some(Template { files }))
}

/// The template a scratch directory is copied from: PostgreSQL needs only
/// `PG_VERSION` and `global/pg_control`. Made once per scratch root (and per
/// checksum setting, which pg_control records) with initdb, and made anew
/// when what is there is incomplete or not ours.
pub(super) fn ensure_template(
    bindir: &Path,
    root: &Path,
    user: Option<UserIds>,
    data_checksums: bool,
    pg_version: u32,
) -> Result<Template> {
    let name = format!(
        "template-pg{pg_version}-checksums-{}",
        on_off(data_checksums)
    );
    let template = root.join(&name);
    match read_template(&template) {
        Ok(Some(t)) => return Ok(t),
        Ok(None) => {}
        Err(why) => {
            log::warn!("{why}: making the template anew");
            remove_path(&template);
        }
    }

    // 0711: initdb, run as the children's user, passes through to its
    // directory in it.
    let work = new_dir(root, "initdb-", 0o711)?;
    let made = run_initdb(bindir, root, &work, &name, user, data_checksums, pg_version);
    let _ = fs::remove_dir_all(&work);
    made?;
    match read_template(&template) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(spawn_error(format!(
            "the template {} is incomplete: remove it",
            template.display()
        ))),
        Err(why) => Err(spawn_error(format!(
            "the new template is not usable: {why}"
        ))),
    }
}

/// initdb in `work` (made for it, ours), then the template's files staged
/// and renamed into place. initdb runs as the children's user in `data`, a
/// directory of theirs in `work`: what it wrote is read through descriptors,
/// never following a link (`safe_fs`), and only if it is that user's own.
fn run_initdb(
    bindir: &Path,
    root: &Path,
    work: &Path,
    name: &str,
    user: Option<UserIds>,
    data_checksums: bool,
    pg_version: u32,
) -> Result<()> {
    let work_dir = Dir::open(work).map_err(|e| io_error("cannot open", work, e))?;
    work_dir
        .make_dir("data", 0o700, user)
        .map_err(|e| io_error("cannot make a directory in", work, e))?;
    let data = work.join("data");
    let mut cmd = Command::new(bindir.join("initdb"));
    cmd.arg("-D")
        .arg(&data)
        .args([
            "--no-sync",
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
        ])
        .args(["--locale=C"])
        .env_clear()
        .current_dir(work)
        .stdin(Stdio::null());
    if data_checksums {
        cmd.arg("--data-checksums");
    } else if pg_version >= 18 {
        // 18's initdb turns checksums on unless told not to.
        cmd.arg("--no-data-checksums");
    }
    if let Some(ids) = user {
        cmd.uid(ids.uid).gid(ids.gid);
    }
    let out = cmd
        .output()
        .map_err(|e| spawn_error(format!("cannot run initdb in {}: {e}", bindir.display())))?;
    if !out.status.success() {
        return Err(spawn_error(format!(
            "initdb failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let initdb_uid = user.map_or_else(euid, |ids| ids.uid);
    let read = |path: &str| -> io::Result<Vec<u8>> {
        let (dir, name) = work_dir.open_dir("data")?.parent_of(path)?;
        dir.read_file_of(name, initdb_uid, TEMPLATE_FILE_MAX)
    };
    let mut files = Vec::new();
    for f in TEMPLATE_FILES {
        let bytes = read(f).map_err(|e| {
            spawn_error(format!(
                "cannot take {f} from initdb's output in {}: {e}",
                data.display()
            ))
        })?;
        files.push((f, bytes));
    }
    let staged = new_dir(root, &format!("{name}.tmp-"), 0o700)?;
    let result = (|| {
        let dir = Dir::open(&staged)?;
        dir.make_dir("global", 0o700, None)?;
        for (path, bytes) in &files {
            let (parent, name) = dir.parent_of(path)?;
            parent.write_new(name, bytes, 0o600, None)?;
        }
        Ok(())
    })()
    .map_err(|e| io_error("cannot write the template in", &staged, e));
    // Another launcher may have won the race; either template is good.
    if result.is_err() || fs::rename(&staged, root.join(name)).is_err() {
        let _ = fs::remove_dir_all(&staged);
    }
    result
}
