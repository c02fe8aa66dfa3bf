//! An attacker for the scratch directories' hand-over tests: a program the
//! tests run as the wal-redo children's user, which keeps swapping a
//! directory it can write with a symbolic link, as a hijacked process of that
//! user (or the machine's own PostgreSQL server, through `COPY ... TO
//! PROGRAM`) could.
//!
//!   walredo-swapper ROOT PREFIX NAME TARGET
//!
//! Until killed, for every entry of ROOT whose name starts with PREFIX: make
//! a symbolic link `NAMEx` to TARGET next to `NAME` in that entry (once), and
//! swap the two names atomically (`renameat2(RENAME_EXCHANGE)`), over and
//! over. Entries it cannot enter (not yet handed over) are skipped.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, prefix, name, target] = args.as_slice() else {
        eprintln!("usage: walredo-swapper ROOT PREFIX NAME TARGET");
        std::process::exit(2);
    };
    let root = PathBuf::from(root);
    let target = CString::new(target.as_bytes()).expect("no NUL in TARGET");
    loop {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_name().as_bytes().starts_with(prefix.as_bytes()) {
                continue;
            }
            let dir = entry.path();
            let real = CString::new(dir.join(name).as_os_str().as_bytes()).unwrap();
            let link = CString::new(dir.join(format!("{name}x")).as_os_str().as_bytes()).unwrap();
            for _ in 0..200 {
                // SAFETY: both paths are NUL-terminated strings that outlive
                // the calls.
                unsafe {
                    libc::symlink(target.as_ptr(), link.as_ptr());
                    if libc::renameat2(
                        libc::AT_FDCWD,
                        real.as_ptr(),
                        libc::AT_FDCWD,
                        link.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    ) != 0
                    {
                        break;
                    }
                }
            }
        }
    }
}
