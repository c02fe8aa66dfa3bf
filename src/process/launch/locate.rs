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

/// PostgreSQL (of `Config::pg_version`, or any supported version), the
/// extension and the scratch template, found and checked; and the version.
pub(super) fn postgres_program(
    config: &Config,
    scratch_root: &Path,
    user: Option<UserIds>,
) -> Result<(Program, u32)> {
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
    let postgres = bindir.join("postgres");
    let pg_version = check_postgres_version(&postgres, want)?;

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

    let extension = install_extension_copy(&extension_src, scratch_root)?;
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
        &bindir,
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

/// The major version of `postgres`, which must be a supported one (and
/// `want`, if given).
fn check_postgres_version(postgres: &Path, want: Option<u32>) -> Result<u32> {
    let out = Command::new(postgres)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            spawn_error(format!(
                "cannot run {}: {e}: install PostgreSQL with `{}`, or set pg_bindir",
                postgres.display(),
                install_hint(want)
            ))
        })?;
    let version = String::from_utf8_lossy(&out.stdout);
    let found = version
        .split_once("(PostgreSQL) ")
        .and_then(|(_, v)| major_version(v));
    match found {
        Some(v) if want.is_none_or(|w| w == v) && crate::pg::xlog::xlog_page_magic(v).is_some() => {
            Ok(v)
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
