//! Finding PostgreSQL: a `pg_config` of a supported version, its `postgres`
//! (whose version is checked), the `pg_walredo` extension, and the settings
//! each version's wal-redo processes need.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::account::UserIds;
use super::initdb::ensure_template;
use super::scratch::install_extension_copy;
use super::{io_error, spawn_error, Program};
use crate::config::Config;
use crate::error::{Error, Result};

/// Where Debian (and the PostgreSQL project's apt packages) put each
/// version's `pg_config`; tried before `pg_config` on `PATH`.
fn debian_pg_config(pg_version: u32) -> PathBuf {
    PathBuf::from(format!("/usr/lib/postgresql/{pg_version}/bin/pg_config"))
}
fn install_hint(pg_version: Option<u32>) -> String {
    format!("apt-get install -y postgresql-{}", pg_version.unwrap_or(15))
}
const EXTENSION_FILE: &str = "pg_walredo.so";

/// The PostgreSQL server a configuration names, found as a pool finds it:
/// `pg_bindir`, else the `pg_config` of `pg_version` (Debian's
/// `/usr/lib/postgresql/N/bin/pg_config` first, for 15, 16, 17, 18 and 14 in
/// turn when `pg_version` is not set; else `pg_config` on `PATH`).
#[derive(Clone, Debug)]
pub struct Server {
    /// Directory of its `postgres`, `initdb` and `pg_controldata`.
    pub bindir: PathBuf,
    /// Its `pg_config`, when one was found (the default extension's
    /// directory is its `--pkglibdir`).
    pub pg_config: Option<PathBuf>,
    /// Its major version.
    pub pg_version: u32,
    /// What `postgres --version` says of it after "(PostgreSQL) ", e.g.
    /// "15.20 (Debian 15.20-0+deb12u1)".
    pub version: String,
}

impl Server {
    pub fn postgres(&self) -> PathBuf {
        self.bindir.join("postgres")
    }
}

/// "PostgreSQL 15.20 (Debian 15.20-0+deb12u1), /usr/lib/postgresql/15/bin/postgres".
impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PostgreSQL {}, {}",
            self.version,
            self.postgres().display()
        )
    }
}

/// The server `config` names (see [`Server`]), its `postgres` run once to
/// check that it is a supported version (and `pg_version`, if set).
pub fn find_server(config: &Config) -> Result<Server> {
    let want = config.pg_version;
    if let Some(v) = want {
        if crate::pg::xlog::xlog_page_magic(v).is_none() {
            return Err(Error::InvalidArgument(format!(
                "pg_version {v} is not supported: walredo serves PostgreSQL {}",
                crate::pg::xlog::supported_versions()
            )));
        }
    }
    let pg_config = find_pg_config(want, config.pg_bindir.as_deref());
    let bindir = match &config.pg_bindir {
        Some(dir) => dir.clone(),
        None => {
            let cfg = pg_config.as_ref().ok_or_else(|| {
                let which = want.map_or_else(
                    || format!("PostgreSQL {}", crate::pg::xlog::supported_versions()),
                    |v| format!("PostgreSQL {v}"),
                );
                spawn_error(format!(
                    "{which} not found (no /usr/lib/postgresql/N/bin/pg_config, no such \
                     pg_config on PATH): install it with `{}`, or set pg_bindir",
                    install_hint(want)
                ))
            })?;
            PathBuf::from(pg_config_value(cfg, "--bindir")?)
        }
    };
    let (pg_version, version) = check_postgres_version(&bindir.join("postgres"), want)?;
    Ok(Server {
        bindir,
        pg_config,
        pg_version,
        version,
    })
}

/// PostgreSQL (of `Config::pg_version`, or any supported version), the
/// extension and the scratch template, found and checked; and the version.
pub(super) fn postgres_program(
    config: &Config,
    scratch_root: &Path,
    user: Option<UserIds>,
) -> Result<(Program, u32)> {
    let server = find_server(config)?;
    let (bindir, pg_config, pg_version) = (&server.bindir, &server.pg_config, server.pg_version);
    let postgres = server.postgres();

    let extension_src = match &config.extension_path {
        Some(p) => p.clone(),
        None => match &pg_config {
            Some(cfg) => PathBuf::from(pg_config_value(cfg, "--pkglibdir")?).join(EXTENSION_FILE),
            None => PathBuf::from(EXTENSION_FILE),
        },
    };
    if !extension_src.is_file() {
        return Err(spawn_error(format!(
            "the pg_walredo extension is not at {}: build and install it with \
             `make -C pg_walredo install` (needs `apt-get install -y \
             postgresql-server-dev-{pg_version}`), or set extension_path",
            extension_src.display()
        )));
    }

    // Read once: the bytes checked are the bytes installed.
    let extension_bytes =
        std::fs::read(&extension_src).map_err(|e| io_error("cannot read", &extension_src, e))?;
    check_extension_version(&extension_src, &extension_bytes, &server)?;

    let extension = install_extension_copy(&extension_src, &extension_bytes, scratch_root)?;
    // 14's processes load it through LD_PRELOAD, a list split at spaces and
    // colons, read in the scratch directory.
    let path = extension.to_string_lossy();
    if pg_version < 15 && (!extension.is_absolute() || path.contains([' ', ':'])) {
        return Err(spawn_error(format!(
            "PostgreSQL 14's processes load pg_walredo through LD_PRELOAD, which cannot name \
             {path}: use a scratch_dir whose absolute path has no spaces or colons"
        )));
    }
    let template = ensure_template(
        bindir,
        scratch_root,
        user,
        config.data_checksums,
        pg_version,
    )?;
    let program = Program::Postgres {
        postgres,
        extension,
        template,
        verify: config.verify,
        wal_log_hints: config.wal_log_hints,
        require_landlock: config.require_landlock,
        extra_settings: version_settings(pg_version)
            .into_iter()
            .chain(config.extra_settings.iter().cloned())
            .collect(),
    };
    Ok((program, pg_version))
}

/// Server settings a version's wal-redo processes need beyond the common
/// ones (before `Config::extra_settings`, which can override them).
fn version_settings(pg_version: u32) -> Vec<String> {
    let mut settings = Vec::new();
    if pg_version >= 18 {
        // 18's asynchronous I/O: plain synchronous reads and writes, as in
        // 15 to 17. A single-user backend has no I/O workers and executes
        // "worker" I/O synchronously anyway; io_uring would need system
        // calls the sandbox does not allow.
        settings.push("io_method=sync".to_string());
    }
    settings
}

/// A `pg_config` of version `want` (any supported one if `None`): the one
/// in `bindir` if given, else Debian's (15 first, then 16, 17, 18, 14),
/// else one on `PATH`.
fn find_pg_config(want: Option<u32>, bindir: Option<&Path>) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = match bindir {
        Some(dir) => vec![dir.join("pg_config")],
        None => crate::pg::xlog::preferred_versions()
            .filter(|v| want.is_none_or(|w| w == *v))
            .map(debian_pg_config)
            .collect(),
    };
    if bindir.is_none() {
        candidates.push(PathBuf::from("pg_config"));
    }
    candidates.into_iter().find(|c| {
        pg_config_value(c, "--version")
            .ok()
            .and_then(|v| major_version(v.strip_prefix("PostgreSQL ")?))
            .is_some_and(|v| {
                crate::pg::xlog::xlog_page_magic(v).is_some() && want.is_none_or(|w| w == v)
            })
    })
}

/// The major version in "17.6", "18.1 (Debian 18.1-1)", "18beta1".
fn major_version(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn pg_config_value(pg_config: &Path, flag: &str) -> Result<String> {
    let out = Command::new(pg_config)
        .arg(flag)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| io_error("cannot run", pg_config, e))?;
    if !out.status.success() {
        return Err(spawn_error(format!(
            "{} {flag} failed: {}",
            pg_config.display(),
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What `postgres --version` printed, asked once per binary: it takes 10-20
/// ms (the server's libraries are loaded), and a host asks for every pool
/// it makes (`walredo verify` three times before reading any WAL). Keyed by
/// the file's identity and change time: a binary replaced (an upgrade) is
/// asked again.
fn postgres_says(postgres: &Path) -> std::io::Result<String> {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Mutex;
    type Identity = (PathBuf, u64, u64, i64, i64, u64);
    static SAID: Mutex<Option<HashMap<Identity, String>>> = Mutex::new(None);

    let meta = std::fs::metadata(postgres)?;
    let identity = (
        postgres.to_path_buf(),
        meta.dev(),
        meta.ino(),
        meta.ctime(),
        meta.ctime_nsec(),
        meta.size(),
    );
    let known = SAID
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|said| said.get(&identity).cloned());
    if let Some(text) = known {
        return Ok(text);
    }
    let out = Command::new(postgres)
        .arg("--version")
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        SAID.lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(identity, text.clone());
    }
    Ok(text)
}

/// The major version of `postgres`, which must be a supported one (and
/// `want`, if given), and its version as it says it ("15.20 (Debian ...)").
fn check_postgres_version(postgres: &Path, want: Option<u32>) -> Result<(u32, String)> {
    let version = postgres_says(postgres).map_err(|e| {
        spawn_error(format!(
            "cannot run {}: {e}: install PostgreSQL with `{}`, or set pg_bindir",
            postgres.display(),
            install_hint(want)
        ))
    })?;
    let said = version
        .split_once("(PostgreSQL) ")
        .map(|(_, v)| v.trim().to_string());
    let found = said.as_deref().and_then(major_version);
    match (found, said) {
        (Some(v), Some(said))
            if want.is_none_or(|w| w == v) && crate::pg::xlog::xlog_page_magic(v).is_some() =>
        {
            Ok((v, said))
        }
        _ => Err(spawn_error(format!(
            "{} is not PostgreSQL {} (it says {:?}): install it with `{}`, or set pg_bindir",
            postgres.display(),
            want.map_or_else(crate::pg::xlog::supported_versions, |v| v.to_string()),
            version.trim(),
            install_hint(want)
        ))),
    }
}

/// Refuse an extension built for another major version than the server's:
/// PostgreSQL would load it only to fail (an undefined symbol, or its own
/// magic-block check) in every process, and say it only on their stderr.
fn check_extension_version(extension: &Path, bytes: &[u8], server: &Server) -> Result<()> {
    match extension_built_for(bytes) {
        Some(built) if built != server.pg_version => Err(spawn_error(format!(
            "{} was built for PostgreSQL {built}, the server is {} ({}): use a \
             pg_walredo.so built for {} (`make PG_VERSION={}`), or a PostgreSQL {built} server",
            extension.display(),
            server.pg_version,
            server.postgres().display(),
            server.pg_version,
            server.pg_version,
        ))),
        _ => Ok(()),
    }
}

/// The major version an extension was built for, from the magic block
/// PostgreSQL puts in every module (`PG_MODULE_MAGIC`, see
/// [`magic_block_version_at`]). `None` when there is no such block (a
/// server built with other limits): the first start then says what is wrong.
pub fn extension_built_for(so: &[u8]) -> Option<u32> {
    magic_block_version_at(so).map(|at| (int_at(so, at) / 100) as u32)
}

/// Where the version field (major * 100) of a module's magic block is: in
/// 14 to 18 the block starts with its own length, the version,
/// FUNC_MAX_ARGS (100), INDEX_MAX_KEYS (32), NAMEDATALEN (64) and
/// FLOAT8PASSBYVAL (1), as ints of this machine. The first place where the
/// limits follow a plausible length and version.
pub fn magic_block_version_at(so: &[u8]) -> Option<usize> {
    let limits: Vec<u8> = [100i32, 32, 64, 1]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    so.windows(limits.len())
        .enumerate()
        .skip(8)
        .filter(|(_, w)| *w == limits.as_slice())
        .map(|(i, _)| i - 4)
        .find(|&at| {
            let (len, version) = (int_at(so, at - 4), int_at(so, at));
            (24..=256).contains(&len) && version % 100 == 0 && (10..100).contains(&(version / 100))
        })
}

fn int_at(so: &[u8], i: usize) -> i32 {
    i32::from_ne_bytes(so[i..i + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::extension_built_for;

    /// Bytes around a magic block of `len` bytes for `version` (major * 100).
    fn module_with(len: i32, version: i32) -> Vec<u8> {
        let mut so = vec![0x90u8; 1000];
        for v in [len, version, 100, 32, 64, 1] {
            so.extend_from_slice(&v.to_ne_bytes());
        }
        so.extend_from_slice(b"PostgreSQL\0");
        so.extend_from_slice(&[0xc3; 500]);
        so
    }

    #[test]
    fn the_magic_block_names_the_version_an_extension_was_built_for() {
        // 14 (no abi_extra), 15 to 17, and 18 (with name and version).
        assert_eq!(extension_built_for(&module_with(24, 1400)), Some(14));
        assert_eq!(extension_built_for(&module_with(56, 1600)), Some(16));
        assert_eq!(extension_built_for(&module_with(72, 1800)), Some(18));
        // Not a magic block: no answer, so no refusal.
        assert_eq!(extension_built_for(&module_with(56, 1234)), None);
        assert_eq!(extension_built_for(&module_with(9000, 1500)), None);
        assert_eq!(extension_built_for(&[0u8; 4096]), None);
        assert_eq!(extension_built_for(&[]), None);
    }
}
