//! Which PostgreSQL server replays for `walredo verify` and `walredo page`:
//! the one named (`--bindir`, else `--pg-config`, else `PG_CONFIG` in the
//! environment, as PGXS users expect), else the library's search
//! (`/usr/lib/postgresql/N/bin/pg_config` of the data directory's major
//! version, else `pg_config` on PATH); always of the data directory's major
//! version (its `PG_VERSION`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use walredo::config::Config;
use walredo::process::launch::{find_server, Server};

/// The directory of the server named on the command line or in the
/// environment (`pg_config` is asked for its `--bindir`), or `None` for the
/// library's search. `pg_config_env` is `$PG_CONFIG`.
pub fn named_bindir(
    bindir: Option<PathBuf>,
    pg_config: Option<PathBuf>,
    pg_config_env: Option<PathBuf>,
) -> Result<Option<PathBuf>, String> {
    if let Some(dir) = bindir {
        return Ok(Some(dir));
    }
    let (pg_config, named_by) = match (pg_config, pg_config_env) {
        (Some(p), _) => (p, "--pg-config"),
        (None, Some(p)) if !p.as_os_str().is_empty() => (p, "PG_CONFIG"),
        _ => return Ok(None),
    };
    bindir_of(&pg_config)
        .map(Some)
        .map_err(|e| format!("{named_by} {}: {e}", pg_config.display()))
}

/// `pg_config --bindir`.
fn bindir_of(pg_config: &Path) -> Result<PathBuf, String> {
    let out = Command::new(pg_config)
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || dir.is_empty() {
        return Err(format!(
            "`--bindir` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(PathBuf::from(dir))
}

/// The server that replays WAL of a PostgreSQL `pg_version` data directory:
/// `config.pg_bindir`'s (which must be of that major version), else the
/// library's search for that version.
pub fn server_for(pg_version: u32, config: &Config) -> Result<Server, String> {
    let Some(dir) = &config.pg_bindir else {
        return find_server(&Config {
            pg_version: Some(pg_version),
            ..Config::default()
        })
        .map_err(|e| {
            format!(
                "{e} (the data directory is PostgreSQL {pg_version}: name its server with \
                 --pg-config, --bindir or PG_CONFIG)"
            )
        });
    };
    let server = find_server(&Config {
        pg_bindir: Some(dir.clone()),
        pg_version: None,
        ..Config::default()
    })
    .map_err(|e| e.to_string())?;
    if server.pg_version != pg_version {
        return Err(format!(
            "{} is PostgreSQL {}, but the data directory is PostgreSQL {pg_version} (its \
             PG_VERSION): name a PostgreSQL {pg_version} server with --pg-config, --bindir \
             or PG_CONFIG",
            server.postgres().display(),
            server.version
        ));
    }
    Ok(server)
}
