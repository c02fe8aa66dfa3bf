//! Pages of a PostgreSQL data directory (14 to 18), found by their tags, and
//! the major version of the server that wrote it.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::tag::{PageTag, RelFileNode};
use crate::wal::slru::{RelMapFile, SlruPage};
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

/// The PostgreSQL major version of a data directory: its `PG_VERSION` file,
/// which must name a version this library serves.
pub fn pg_version(datadir: &Path) -> Result<u32, String> {
    let path = datadir.join("PG_VERSION");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {}: {e}: is {} a PostgreSQL data directory?",
            path.display(),
            datadir.display()
        )
    })?;
    let v = text.trim();
    match v.parse::<u32>() {
        Ok(n) if crate::pg::xlog::xlog_page_magic(n).is_some() => Ok(n),
        _ => Err(format!(
            "{} says PostgreSQL {v:?}: walredo serves PostgreSQL {}",
            path.display(),
            crate::pg::xlog::supported_versions()
        )),
    }
}

/// `pg_tblspc/<spc>/PG_<major>_<catversion>`; the version directory is
/// looked up (the data directory's own version's first).
fn tablespace_dir(datadir: &Path, spc: u32) -> PathBuf {
    let link = datadir.join("pg_tblspc").join(spc.to_string());
    let prefix = match pg_version(datadir) {
        Ok(v) => format!("PG_{v}_"),
        Err(_) => "PG_".to_string(),
    };
    let version_dir = std::fs::read_dir(&link).ok().and_then(|entries| {
        entries
            .flatten()
            .map(|e| e.file_name())
            .find(|n| n.to_string_lossy().starts_with(&prefix))
    });
    match version_dir {
        Some(v) => link.join(v),
        None => link.join(format!("{prefix}unknown")),
    }
}

/// The page at `tag`, or `None` when its file or block does not exist.
pub fn read_page(datadir: &Path, tag: &PageTag) -> io::Result<Option<Box<[u8; PAGE_SIZE]>>> {
    let path = relation_path(datadir, &tag.rel, tag.forknum, tag.blkno / RELSEG_SIZE);
    match open_segment(&path)? {
        Some(file) => read_block(&file, &path, tag),
        None => Ok(None),
    }
}

/// SLRU page `page` (`pg_xact` and the others), or `None` when its segment
/// file or the page does not exist (recovery reads a missing file as zeros).
pub fn read_slru_page(datadir: &Path, page: &SlruPage) -> io::Result<Option<Box<[u8; PAGE_SIZE]>>> {
    let path = datadir.join(page.segment_path());
    match open_segment(&path)? {
        Some(file) => read_at(&file, &path, page.offset_in_segment(), page.pageno),
        None => Ok(None),
    }
}

/// The path of a relation map file: `global/pg_filenode.map`, or
/// `pg_filenode.map` in the database's directory.
pub fn relmap_path(datadir: &Path, file: &RelMapFile) -> PathBuf {
    let dir = match *file {
        RelMapFile::Global => datadir.join("global"),
        RelMapFile::Database {
            spcnode: DEFAULTTABLESPACE_OID,
            dbnode,
        } => datadir.join("base").join(dbnode.to_string()),
        RelMapFile::Database { spcnode, dbnode } => {
            tablespace_dir(datadir, spcnode).join(dbnode.to_string())
        }
    };
    dir.join("pg_filenode.map")
}

/// Pages of one data directory, read with its segment files kept open: for
/// a caller that reads thousands of pages (`walredo verify`), one `open` per
/// file instead of one per page. Files are opened as first needed, at most
/// [`PageFiles::MOST_OPEN`] at once (all are closed when that many are
/// open). Shared by threads: a page is read with `pread`, no file position.
pub struct PageFiles {
    datadir: PathBuf,
    /// Each file asked for: open, or `None` when it does not exist.
    open: Mutex<HashMap<SegmentFile, Option<Arc<File>>>>,
}

/// A relation fork's segment file: relation, fork, segment number.
type SegmentFile = (RelFileNode, u8, u32);

impl PageFiles {
    /// Well under the usual limit of 1,024 descriptors a process.
    pub const MOST_OPEN: usize = 256;

    pub fn new(datadir: &Path) -> PageFiles {
        PageFiles {
            datadir: datadir.to_path_buf(),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// [`read_page`], from the files held open.
    pub fn read(&self, tag: &PageTag) -> io::Result<Option<Box<[u8; PAGE_SIZE]>>> {
        let segno = tag.blkno / RELSEG_SIZE;
        let path = || relation_path(&self.datadir, &tag.rel, tag.forknum, segno);
        let key = (tag.rel, tag.forknum, segno);
        let file = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            match open.get(&key) {
                Some(file) => file.clone(),
                None => {
                    if open.len() >= Self::MOST_OPEN {
                        open.clear();
                    }
                    let file = open_segment(&path())?.map(Arc::new);
                    open.insert(key, file.clone());
                    file
                }
            }
        };
        match file {
            Some(file) => read_block(&file, &path(), tag),
            None => Ok(None),
        }
    }
}

/// A relation segment file, `None` when it does not exist.
fn open_segment(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// The block of `tag` in its segment file `file` (at `path`, for errors),
/// `None` past the file's end.
fn read_block(file: &File, path: &Path, tag: &PageTag) -> io::Result<Option<Box<[u8; PAGE_SIZE]>>> {
    let offset = u64::from(tag.blkno % RELSEG_SIZE) * PAGE_SIZE as u64;
    read_at(file, path, offset, tag.blkno.into())
}

/// The page at `offset` of `file` (at `path`; page `number` for errors),
/// `None` past the file's end.
fn read_at(
    file: &File,
    path: &Path,
    offset: u64,
    number: u64,
) -> io::Result<Option<Box<[u8; PAGE_SIZE]>>> {
    let mut page = Box::new([0u8; PAGE_SIZE]);
    let mut done = 0;
    while done < PAGE_SIZE {
        match file.read_at(&mut page[done..], offset + done as u64) {
            Ok(0) if done == 0 => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: partial page {number}", path.display()),
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
    fn versions() {
        let d = std::env::temp_dir().join(format!("walredo-datadir-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        assert!(pg_version(&d).unwrap_err().contains("PG_VERSION"));
        for (text, want) in [
            ("15\n", Some(15)),
            ("17\n", Some(17)),
            ("18", Some(18)),
            ("14\n", Some(14)),
            ("13", None),
            ("x", None),
        ] {
            std::fs::write(d.join("PG_VERSION"), text).unwrap();
            match want {
                Some(v) => assert_eq!(pg_version(&d), Ok(v)),
                None => assert!(pg_version(&d)
                    .unwrap_err()
                    .contains("serves PostgreSQL 14, 15, 16, 17 or 18")),
            }
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

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
