//! Pages of a PostgreSQL 15 data directory, found by their tags.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::tag::{PageTag, RelFileNode};
use crate::PAGE_SIZE;

/// OID of `pg_global`, whose relations live in `global/`.
pub const GLOBALTABLESPACE_OID: u32 = 1664;
/// OID of `pg_default`, whose relations live in `base/<db>/`.
pub const DEFAULTTABLESPACE_OID: u32 = 1663;
/// Blocks per relation segment file (1 GiB of 8 KiB pages).
pub const RELSEG_SIZE: u32 = 131072;

const FORK_SUFFIX: [&str; 4] = ["", "_fsm", "_vm", "_init"];

/// Path of the file holding segment `segno` of a relation fork.
pub fn relation_path(datadir: &Path, rel: &RelFileNode, forknum: u8, segno: u32) -> PathBuf {
    let suffix = FORK_SUFFIX
        .get(forknum as usize)
        .copied()
        .unwrap_or("_badfork");
    let mut name = format!("{}{suffix}", rel.relnode);
    if segno > 0 {
        name.push_str(&format!(".{segno}"));
    }
    let dir = match rel.spcnode {
        GLOBALTABLESPACE_OID => datadir.join("global"),
        DEFAULTTABLESPACE_OID => datadir.join("base").join(rel.dbnode.to_string()),
        spc => tablespace_dir(datadir, spc).join(rel.dbnode.to_string()),
    };
    dir.join(name)
}

/// `pg_tblspc/<spc>/PG_15_<catversion>`; the version directory is looked up.
fn tablespace_dir(datadir: &Path, spc: u32) -> PathBuf {
    let link = datadir.join("pg_tblspc").join(spc.to_string());
    let version_dir = std::fs::read_dir(&link).ok().and_then(|entries| {
        entries
            .flatten()
            .map(|e| e.file_name())
            .find(|n| n.to_string_lossy().starts_with("PG_15_"))
    });
    match version_dir {
        Some(v) => link.join(v),
        None => link.join("PG_15_unknown"),
    }
}

/// The page at `tag`, or `None` when its file or block does not exist.
pub fn read_page(datadir: &Path, tag: &PageTag) -> io::Result<Option<Box<[u8; PAGE_SIZE]>>> {
    let path = relation_path(datadir, &tag.rel, tag.forknum, tag.blkno / RELSEG_SIZE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let offset = u64::from(tag.blkno % RELSEG_SIZE) * PAGE_SIZE as u64;
    let mut page = Box::new([0u8; PAGE_SIZE]);
    let mut done = 0;
    while done < PAGE_SIZE {
        match file.read_at(&mut page[done..], offset + done as u64) {
            Ok(0) if done == 0 => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: partial page at block {}", path.display(), tag.blkno),
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }
    Ok(Some(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let d = Path::new("/d");
        let rel = |spcnode, dbnode, relnode| RelFileNode {
            spcnode,
            dbnode,
            relnode,
        };
        assert_eq!(
            relation_path(d, &rel(1663, 5, 16384), 0, 0),
            Path::new("/d/base/5/16384")
        );
        assert_eq!(
            relation_path(d, &rel(1663, 5, 16384), 2, 3),
            Path::new("/d/base/5/16384_vm.3")
        );
        assert_eq!(
            relation_path(d, &rel(1664, 0, 1262), 1, 0),
            Path::new("/d/global/1262_fsm")
        );
    }
}
