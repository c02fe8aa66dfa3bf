//! A WAL segment file as it lies in a directory: plain, or compressed the
//! ways archives keep them (`archive_command = 'gzip < %p > /archive/%f.gz'`,
//! and zstd and lz4 the same way), told by the name's suffix. Everything
//! that reads a segment opens it here, and gets a plain file back: a
//! compressed one is decompressed once into an anonymous temporary file
//! (`O_TMPFILE`, in the system's temporary directory: never visible, gone
//! when the last descriptor closes), and the last few are kept open, so a
//! segment read again is not decompressed again.
//!
//! A decompressed segment larger than the largest segment PostgreSQL makes
//! (1 GiB) is refused as it is decoded, so a damaged or hostile file cannot
//! fill the disk.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::pg::xlog::WAL_SEG_MAX_SIZE;

/// How a segment file is compressed, by its name's suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    /// `.gz`: gzip (RFC 1952), one or more members.
    Gzip,
    /// `.zst`: Zstandard frames.
    Zstd,
    /// `.lz4`: LZ4 frames (the `lz4` command's format).
    Lz4,
}

impl Compression {
    /// The compression a file name says, and the name without its suffix.
    pub fn of_name(name: &str) -> (&str, Compression) {
        for (suffix, c) in [
            (".gz", Compression::Gzip),
            (".zst", Compression::Zstd),
            (".lz4", Compression::Lz4),
        ] {
            if let Some(base) = name.strip_suffix(suffix) {
                return (base, c);
            }
        }
        (name, Compression::None)
    }

    pub fn of_path(path: &Path) -> Compression {
        path.file_name()
            .and_then(|n| n.to_str())
            .map_or(Compression::None, |n| Compression::of_name(n).1)
    }
}

/// Decompressed segments kept open: a plan or a history reads a segment,
/// then often the one before it, and a later lookup the same ones again.
const KEPT: usize = 8;

/// A decompressed file and what it was made from (path, size, mtime).
struct Kept {
    path: PathBuf,
    size: u64,
    mtime: (i64, i64),
    file: File,
}

static KEPT_FILES: Mutex<VecDeque<Kept>> = Mutex::new(VecDeque::new());

/// Open segment file `path` for reading at offsets (`read_at`): the file
/// itself, or for a compressed one its decompressed bytes in a temporary
/// file (descriptors of one kept file share its position: read it only at
/// offsets).
pub fn open(path: &Path) -> io::Result<File> {
    let file = File::open(path)?;
    let compression = Compression::of_path(path);
    if compression == Compression::None {
        return Ok(file);
    }
    let meta = file.metadata()?;
    let (size, mtime) = (meta.len(), (meta.mtime(), meta.mtime_nsec()));
    {
        let mut kept = KEPT_FILES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = kept
            .iter()
            .position(|k| k.path == path && k.size == size && k.mtime == mtime)
        {
            let k = kept.remove(i).expect("found");
            let clone = k.file.try_clone();
            kept.push_back(k);
            return clone.and_then(rewound);
        }
    }
    let decompressed = decompress(file, compression)?;
    let clone = rewound(decompressed.try_clone()?)?;
    let mut kept = KEPT_FILES.lock().unwrap_or_else(|e| e.into_inner());
    if kept.len() >= KEPT {
        kept.pop_front();
    }
    kept.push_back(Kept {
        path: path.to_path_buf(),
        size,
        mtime,
        file: decompressed,
    });
    Ok(clone)
}

/// `file` at its start, for a caller that reads it front to back.
fn rewound(mut file: File) -> io::Result<File> {
    file.seek(io::SeekFrom::Start(0))?;
    Ok(file)
}

/// The first `n` bytes of segment file `path` (fewer if it is shorter),
/// decompressing only as far as needed.
pub fn head(path: &Path, n: usize) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut reader = decoder(file, Compression::of_path(path))?;
    let mut buf = Vec::with_capacity(n);
    reader.by_ref().take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The bytes of `path`, decompressed as its name says (any file: a base
/// backup's `base.tar.gz` too).
pub fn decompressing_reader(path: &Path) -> io::Result<Box<dyn Read>> {
    decoder(File::open(path)?, Compression::of_path(path))
}

fn decoder(file: File, compression: Compression) -> io::Result<Box<dyn Read>> {
    let file = io::BufReader::new(file);
    Ok(match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(file)),
    })
}

/// A new file in the system's temporary directory that no name leads to:
/// `O_TMPFILE`, or where the file system has none, a file created and
/// unlinked at once.
fn anonymous_file() -> io::Result<File> {
    let dir = std::env::temp_dir();
    let unnamed = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(&dir);
    if let Ok(f) = unnamed {
        return Ok(f);
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".walredo-segment-{}-{n}", std::process::id()));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// Decompress `file` into an anonymous temporary file, at most
/// `WAL_SEG_MAX_SIZE` bytes. Errors do not name the file: the callers do.
fn decompress(file: File, compression: Compression) -> io::Result<File> {
    let damaged = |e: io::Error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot decompress it ({compression:?}): {e}"),
        )
    };
    let mut reader = decoder(file, compression)?;
    let mut out = anonymous_file()?;
    let copied =
        io::copy(&mut reader.by_ref().take(WAL_SEG_MAX_SIZE + 1), &mut out).map_err(damaged)?;
    if copied > WAL_SEG_MAX_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "decompresses to more than {WAL_SEG_MAX_SIZE} bytes, more than any WAL segment"
            ),
        ));
    }
    out.flush()?;
    Ok(out)
}

#[cfg(test)]
mod tests;
