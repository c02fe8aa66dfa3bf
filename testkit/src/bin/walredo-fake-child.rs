//! A fault-injecting stand-in for a wal-redo process, for the pool's failure
//! tests (`Config::child_program`). It speaks the protocol (B, P, A, G, H) and
//! misbehaves on command: the relnode of the requested page says how.
//!
//!   walredo-fake-child [--exit-at-start] [--hang-at-start] [--marker-dir DIR]
//!                      [--killed-at-start N] [--exit-at-start-times N]
//!                      [--pidfile-names KEY:SHMID] [--own-segment HOW] SCRATCH_DIR
//!
//! `--hang-at-start` never answers anything (a start-up that hangs).
//! `--killed-at-start N`: the first N starts (counted with marker files in
//! DIR) die of SIGKILL before answering, as if killed from outside while
//! starting; `--exit-at-start-times N`: the first N exit 1 with a FATAL.
//! `--pidfile-names` writes a `postmaster.pid` whose line 7 names that System
//! V segment, as a hijacked wal-redo process could; `--own-segment` creates a
//! segment (4 KiB, IPC_PRIVATE) and names it in `postmaster.pid` HOW: `plain`
//! (as PostgreSQL does), `symlink` (the pid file is a link to the real one)
//! or `padded` (line 7 starts beyond the first 4 KiB). Both before serving.
//!
//! relnode 1 normal; 2 crash (FATAL on stderr, exit 1); 3 hang forever;
//! 4 short answer then exit; 5 garbage page; 6 chatter on stderr, then
//! normal; 7 crash once per block (a marker file in DIR remembers), then
//! normal; 8 sleep `blkno` ms, then normal; 9 killed by SIGKILL (as by an
//! operator or the OOM killer) the first three times per block (marker files
//! in DIR), then normal; 10 abort() (a crash by SIGABRT) every time.
//!
//! A normal answer is an empty but valid page whose LSN is the last record's
//! end LSN and which holds, at byte 100, the block number and the number of
//! records applied (u32 little-endian each), so tests can check routing.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

const PAGE: usize = 8192;

const CRASH: u32 = 2;
const HANG: u32 = 3;
const SHORT: u32 = 4;
const GARBAGE: u32 = 5;
const CHATTY: u32 = 6;
const CRASH_ONCE: u32 = 7;
const SLOW: u32 = 8;
const KILLED_THRICE: u32 = 9;
const ABORT: u32 = 10;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut marker_dir = None;
    let mut scratch = None;
    let mut pidfile = None;
    let mut own_segment = None;
    let mut killed_starts = 0;
    let mut exit_starts = 0;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--exit-at-start" => {
                eprintln!("FATAL:  fake child refuses to start");
                std::process::exit(1);
            }
            "--hang-at-start" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            "--marker-dir" => marker_dir = args.next().map(PathBuf::from),
            "--pidfile-names" => pidfile = Some(args.next().expect("KEY:SHMID").replace(':', " ")),
            "--own-segment" => own_segment = args.next(),
            "--killed-at-start" => killed_starts = args.next().unwrap().parse().unwrap(),
            "--exit-at-start-times" => exit_starts = args.next().unwrap().parse().unwrap(),
            _ => scratch = Some(PathBuf::from(a)),
        }
    }
    let scratch = scratch.expect("the scratch directory");
    // The first starts fail, each remembered by a marker file.
    let first_starts = |what: &str, n: u32| {
        let dir = marker_dir.as_ref().expect("--marker-dir");
        (0..n).any(|i| std::fs::File::create_new(dir.join(format!("{what}-{i}"))).is_ok())
    };
    if killed_starts > 0 && first_starts("killed-start", killed_starts) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    if exit_starts > 0 && first_starts("exit-start", exit_starts) {
        eprintln!("FATAL:  fake child refuses to start this time");
        std::process::exit(1);
    }
    let pid_path = scratch.join("postmaster.pid");
    let pid_lines = |line7: &str, pad: usize| {
        // Lines 1-6 as PostgreSQL writes them (pid, data directory, ...).
        format!(
            "{}\n{}{}\n0\n0\n\n\n{line7}\nready\n",
            std::process::id(),
            scratch.display(),
            " ".repeat(pad)
        )
    };
    if let Some(line7) = pidfile {
        std::fs::write(&pid_path, pid_lines(&line7, 0)).unwrap();
    }
    if let Some(how) = own_segment {
        // SAFETY: shmget has no memory-safety preconditions.
        let shmid = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
        assert!(shmid >= 0, "shmget: {}", std::io::Error::last_os_error());
        let line7 = format!("0 {shmid}");
        match how.as_str() {
            "plain" => std::fs::write(&pid_path, pid_lines(&line7, 0)).unwrap(),
            "padded" => std::fs::write(&pid_path, pid_lines(&line7, 5000)).unwrap(),
            "symlink" => {
                let real = scratch.join("postmaster.real");
                std::fs::write(&real, pid_lines(&line7, 0)).unwrap();
                std::os::unix::fs::symlink(&real, &pid_path).unwrap();
            }
            other => panic!("--own-segment {other}?"),
        }
    }

    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut records = 0u32;
    let mut last_lsn = 0u64;
    loop {
        let mut header = [0u8; 5];
        if input.read_exact(&mut header).is_err() {
            return; // EOF: the pool is gone or retiring us
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut payload = vec![0u8; len.saturating_sub(4)];
        if input.read_exact(&mut payload).is_err() {
            eprintln!("FATAL:  unexpected EOF in a message");
            std::process::exit(1);
        }
        match header[0] {
            b'B' | b'P' => {
                records = 0;
                last_lsn = 0;
            }
            b'A' => {
                records += 1;
                last_lsn = u64::from_be_bytes(payload[..8].try_into().unwrap());
            }
            b'H' => write_page(&mut output, &[0u8; PAGE]),
            b'G' => {
                let be = |i: usize| u32::from_be_bytes(payload[i..i + 4].try_into().unwrap());
                let (relnode, blkno) = (be(9), be(13));
                answer(&mut output, relnode, blkno, records, last_lsn, &marker_dir);
            }
            other => {
                eprintln!("FATAL:  unknown message tag {other}");
                std::process::exit(1);
            }
        }
    }
}

fn answer(
    out: &mut impl Write,
    relnode: u32,
    blkno: u32,
    records: u32,
    lsn: u64,
    marker_dir: &Option<PathBuf>,
) {
    let crash = || -> ! {
        eprintln!("FATAL:  fake crash on block {blkno}");
        std::process::exit(1);
    };
    match relnode {
        CRASH => crash(),
        HANG => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        SHORT => {
            let _ = out.write_all(&[0u8; 100]);
            let _ = out.flush();
            std::process::exit(0);
        }
        GARBAGE => write_page(out, &[0xAB; PAGE]),
        CHATTY => {
            for i in 0..20 {
                eprintln!("WARNING:  chatter line {i} about block {blkno}");
            }
            write_page(out, &valid_page(blkno, records, lsn));
        }
        CRASH_ONCE => {
            let dir = marker_dir.as_ref().expect("--marker-dir for crash-once");
            let marker = dir.join(format!("crashed-{blkno}"));
            if std::fs::File::create_new(&marker).is_ok() {
                crash();
            }
            write_page(out, &valid_page(blkno, records, lsn));
        }
        KILLED_THRICE => {
            let dir = marker_dir.as_ref().expect("--marker-dir for killed-thrice");
            let first = (0..3).any(|i| {
                std::fs::File::create_new(dir.join(format!("killed-{blkno}-{i}"))).is_ok()
            });
            if first {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
            write_page(out, &valid_page(blkno, records, lsn));
        }
        ABORT => std::process::abort(),
        SLOW => {
            std::thread::sleep(Duration::from_millis(u64::from(blkno)));
            write_page(out, &valid_page(blkno, records, lsn));
        }
        _ => write_page(out, &valid_page(blkno, records, lsn)),
    }
}

/// An empty page with a valid header (as PageInit makes), plus the markers.
fn valid_page(blkno: u32, records: u32, lsn: u64) -> [u8; PAGE] {
    let mut p = [0u8; PAGE];
    p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
    p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
    p[12..14].copy_from_slice(&24u16.to_le_bytes()); // pd_lower
    p[14..16].copy_from_slice(&(PAGE as u16).to_le_bytes()); // pd_upper
    p[16..18].copy_from_slice(&(PAGE as u16).to_le_bytes()); // pd_special
    p[18..20].copy_from_slice(&(PAGE as u16 | 4).to_le_bytes()); // size, layout 4
    p[100..104].copy_from_slice(&blkno.to_le_bytes());
    p[104..108].copy_from_slice(&records.to_le_bytes());
    p
}

fn write_page(out: &mut impl Write, page: &[u8; PAGE]) {
    if out.write_all(page).and_then(|()| out.flush()).is_err() {
        std::process::exit(1);
    }
}
