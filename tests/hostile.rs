//! pg_walredo driven directly over its pipes by a hostile peer: crafted
//! messages and records that never went through the library's validation.
//! Each refused input must end the process with a clear FATAL (never a crash,
//! never a silently wrong page), and legitimate-looking WAL must not make the
//! scratch directory grow without bound.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use walredo::pg::record::set_record_crc;
use walredo::process::launch::Launcher;
use walredo::process::Process;
use walredo::tag::{PageTag, RelFileNode, MAIN_FORKNUM};
use walredo::{Config, Error, RecordRef, Redoer, PAGE_SIZE};
use walredo_testkit::harness::*;

type Page = [u8; PAGE_SIZE];

const TIMEOUT: Duration = Duration::from_secs(60);

const REL: RelFileNode = RelFileNode {
    spcnode: 1663,
    dbnode: 5,
    relnode: 16384,
};

fn main_tag(rel: RelFileNode, blkno: u32) -> PageTag {
    PageTag {
        rel,
        forknum: MAIN_FORKNUM,
        blkno,
    }
}

// ---------------------------------------------------------------------------
// The wire: messages and records made by hand.

fn tag_bytes(t: &PageTag) -> Vec<u8> {
    let mut b = vec![t.forknum];
    for v in [t.rel.spcnode, t.rel.dbnode, t.rel.relnode, t.blkno] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b
}

fn msg(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(payload.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

fn begin(t: &PageTag) -> Vec<u8> {
    msg(b'B', &tag_bytes(t))
}

fn push(t: &PageTag, page: &Page) -> Vec<u8> {
    let mut p = tag_bytes(t);
    p.extend_from_slice(page);
    msg(b'P', &p)
}

fn apply(end_lsn: u64, record: &[u8]) -> Vec<u8> {
    let mut p = end_lsn.to_be_bytes().to_vec();
    p.extend_from_slice(record);
    msg(b'A', &p)
}

fn get(t: &PageTag) -> Vec<u8> {
    msg(b'G', &tag_bytes(t))
}

fn ping() -> Vec<u8> {
    msg(b'H', &[])
}

/// One block reference of a hand-made record.
struct Blk {
    id: u8,
    tag: PageTag,
    will_init: bool,
    data: Vec<u8>,
    /// An uncompressed full-page image to apply.
    image: Option<Box<Page>>,
}

impl Blk {
    fn new(id: u8, tag: PageTag) -> Blk {
        Blk {
            id,
            tag,
            will_init: false,
            data: Vec::new(),
            image: None,
        }
    }
    fn image(mut self, page: Box<Page>) -> Blk {
        self.image = Some(page);
        self
    }
}

const RM_XLOG: u8 = 0;
const RM_XACT: u8 = 1;
const RM_SMGR: u8 = 2;
const RM_DBASE: u8 = 4;
const RM_TBLSPC: u8 = 5;
const RM_HEAP2: u8 = 9;
const RM_HEAP: u8 = 10;
const XLOG_FPI: u8 = 0xB0;
const XLH_INSERT_ALL_VISIBLE_CLEARED: u8 = 1;

/// A raw XLogRecord (PostgreSQL 15 layout, little-endian) with a correct CRC.
fn record(rmid: u8, info: u8, xid: u32, blocks: &[Blk], main: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 24];
    let mut payload = Vec::new();
    for b in blocks {
        let mut flags = b.tag.forknum & 0x0F;
        if b.image.is_some() {
            flags |= 0x10;
        }
        if !b.data.is_empty() {
            flags |= 0x20;
        }
        if b.will_init {
            flags |= 0x40;
        }
        r.push(b.id);
        r.push(flags);
        r.extend_from_slice(&(b.data.len() as u16).to_le_bytes());
        if let Some(img) = &b.image {
            r.extend_from_slice(&(PAGE_SIZE as u16).to_le_bytes()); // bimg_len
            r.extend_from_slice(&0u16.to_le_bytes()); // hole_offset
            r.push(0x02); // BKPIMAGE_APPLY, no hole, uncompressed
            payload.extend_from_slice(&img[..]);
        }
        for v in [
            b.tag.rel.spcnode,
            b.tag.rel.dbnode,
            b.tag.rel.relnode,
            b.tag.blkno,
        ] {
            r.extend_from_slice(&v.to_le_bytes());
        }
        payload.extend_from_slice(&b.data);
    }
    if !main.is_empty() {
        if main.len() <= 255 {
            r.push(255);
            r.push(main.len() as u8);
        } else {
            r.push(254);
            r.extend_from_slice(&(main.len() as u32).to_le_bytes());
        }
        payload.extend_from_slice(main);
    }
    r.extend_from_slice(&payload);
    let len = r.len() as u32;
    r[0..4].copy_from_slice(&len.to_le_bytes());
    r[4..8].copy_from_slice(&xid.to_le_bytes());
    r[16] = info;
    r[17] = rmid;
    set_record_crc(&mut r);
    r
}

/// An empty heap page (PageInit) with `free` bytes between pd_lower and
/// pd_upper: the rest of the page counts as used.
fn heap_page(free: u16) -> Box<Page> {
    let mut p = Box::new([0u8; PAGE_SIZE]);
    p[12..14].copy_from_slice(&24u16.to_le_bytes()); // pd_lower
    p[14..16].copy_from_slice(&(24 + free).to_le_bytes()); // pd_upper
    p[16..18].copy_from_slice(&(PAGE_SIZE as u16).to_le_bytes()); // pd_special
    p[18..20].copy_from_slice(&(PAGE_SIZE as u16 | 4).to_le_bytes()); // size, version 4
    p
}

/// A page with recognizable contents, for images.
fn marked_page(mark: u8) -> Box<Page> {
    let mut p = heap_page(1000);
    p[4000..4100].fill(mark);
    p
}

fn page_lsn(p: &Page) -> u64 {
    let hi = u32::from_le_bytes(p[0..4].try_into().unwrap());
    let lo = u32::from_le_bytes(p[4..8].try_into().unwrap());
    (u64::from(hi) << 32) | u64::from(lo)
}

fn with_lsn(p: &Page, lsn: u64) -> Box<Page> {
    let mut p = Box::new(*p);
    p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
    p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
    p
}

fn line_pointers(p: &Page) -> usize {
    usize::from(u16::from_le_bytes([p[12], p[13]])).saturating_sub(24) / 4
}

/// A heap insert of one small tuple at `offnum` (XLOG_HEAP_INSERT, with
/// XLOG_HEAP_INIT_PAGE when `init`).
fn heap_insert(target: &PageTag, offnum: u16, flags: u8, init: bool) -> Vec<u8> {
    let mut data = Vec::new();
    data.extend_from_slice(&1u16.to_le_bytes()); // t_infomask2: one attribute
    data.extend_from_slice(&0x0800u16.to_le_bytes()); // t_infomask: HEAP_XMAX_INVALID
    data.push(24); // t_hoff
    data.push(0); // padding up to t_hoff
    data.extend_from_slice(&42u32.to_le_bytes()); // an int4
    let mut b = Blk::new(0, *target);
    b.will_init = init;
    b.data = data;
    let mut main = offnum.to_le_bytes().to_vec();
    main.push(flags);
    record(RM_HEAP, if init { 0x80 } else { 0x00 }, 1000, &[b], &main)
}

/// An XLOG_FPI record carrying these images.
fn fpi(blocks: &[(PageTag, Box<Page>)]) -> Vec<u8> {
    let blks: Vec<Blk> = blocks
        .iter()
        .enumerate()
        .map(|(i, (t, p))| Blk::new(i as u8, *t).image(p.clone()))
        .collect();
    record(RM_XLOG, XLOG_FPI, 0, &blks, &[])
}

const LSN: u64 = 0x0000_0001_0000_0000;

// ---------------------------------------------------------------------------
// A wal-redo process driven directly.

struct Peer {
    _launcher: Launcher,
    process: Process,
    timeout: Duration,
}

fn config_with(extra: &[String]) -> Config {
    Config {
        extra_settings: extra.to_vec(),
        ..config()
    }
}

impl Peer {
    fn start() -> Peer {
        Peer::start_with(&[])
    }

    fn start_with(extra: &[String]) -> Peer {
        let launcher = Launcher::new(&config_with(extra)).unwrap();
        let mut process = Process::spawn(&launcher).unwrap();
        process.handshake(TIMEOUT).unwrap();
        Peer {
            _launcher: launcher,
            process,
            timeout: TIMEOUT,
        }
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The process's scratch directory: its working directory.
    fn scratch(&self) -> PathBuf {
        std::fs::read_link(format!("/proc/{}/cwd", self.pid())).unwrap()
    }

    /// Write `bytes`, read one page back; on failure, what went wrong and
    /// the process's last words.
    fn page(&mut self, bytes: &[u8]) -> Result<Box<Page>, String> {
        let mut page = Box::new([0u8; PAGE_SIZE]);
        match self.process.transact(bytes, &mut page[..], self.timeout) {
            Ok(()) => Ok(page),
            Err(i) => Err(self.last_words(&i.failure.to_string())),
        }
    }

    fn last_words(&mut self, failure: &str) -> String {
        let stderr = self.process.kill_and_collect_stderr();
        let how = self.process.death_signal().unwrap_or_default();
        format!("{failure} [{how}]\n{stderr}")
    }

    /// Write `bytes` (ending with a request for a page), which must make the
    /// process exit with a FATAL error saying `expected`; returns its stderr.
    fn refuses(&mut self, what: &str, bytes: &[u8], expected: &str) -> String {
        self.try_refuses(what, bytes, expected)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_refuses(&mut self, what: &str, bytes: &[u8], expected: &str) -> Result<String, String> {
        match self.page(bytes) {
            Ok(page) => Err(format!(
                "{what}: answered with a page (lsn {:X}, {} line pointers) instead of a FATAL",
                page_lsn(&page),
                line_pointers(&page)
            )),
            Err(e) => {
                println!("{what}: {e}");
                if e.contains("FATAL:") && e.contains(expected) && !e.contains("killed by") {
                    Ok(e)
                } else {
                    Err(format!(
                        "{what}: expected a clean FATAL exit saying {expected:?}, got: {e}"
                    ))
                }
            }
        }
    }

    /// /proc/PID/status field, e.g. "RssAnon" in kB.
    fn status_kb(&self, name: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

/// Files in a scratch directory, their apparent size and what they use on
/// disk, and how many are relation segments beyond the first (`NNN.1` ...).
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    files: u64,
    dirs: u64,
    apparent: u64,
    disk: u64,
    segments: u64,
}

fn usage(dir: &Path) -> Usage {
    use std::os::unix::fs::MetadataExt;
    let mut u = Usage::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                u.dirs += 1;
                stack.push(e.path());
                continue;
            }
            u.files += 1;
            u.apparent += md.len();
            u.disk += md.blocks() * 512;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some((_, seg)) = name.rsplit_once('.') {
                if !seg.is_empty() && seg.bytes().all(|c| c.is_ascii_digit()) && name.len() > 4 {
                    u.segments += u64::from(!name.starts_with("mmap"));
                }
            }
        }
    }
    u
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn show(what: &str, u: Usage) {
    println!(
        "{what}: {} files, {} directories, {:.1} MiB apparent, {:.1} MiB on disk, {} segment files",
        u.files,
        u.dirs,
        mib(u.apparent),
        mib(u.disk),
        u.segments
    );
}

/// What the scratch directory holds beyond a fresh process's.
fn growth(peer: &Peer, baseline: Usage, what: &str) -> Usage {
    let now = usage(&peer.scratch());
    let g = Usage {
        files: now.files.saturating_sub(baseline.files),
        dirs: now.dirs.saturating_sub(baseline.dirs),
        apparent: now.apparent.saturating_sub(baseline.apparent),
        disk: now.disk.saturating_sub(baseline.disk),
        segments: now.segments,
    };
    show(what, g);
    g
}

/// A fresh wal-redo process and what its scratch directory holds at first.
fn measured_peer() -> (Peer, Usage) {
    let peer = Peer::start();
    let baseline = usage(&peer.scratch());
    (peer, baseline)
}

/// Since `baseline`, the scratch directory grew by no relation segment
/// beyond the first and by less than 1 MiB.
fn assert_scratch_small(peer: &Peer, baseline: Usage, what: &str) {
    let g = growth(peer, baseline, what);
    assert_eq!(g.segments, 0, "no relation segment beyond the first");
    assert!(g.apparent < 1 << 20, "{g:?}");
}

/// Push `target` as a heap page with `free` bytes free, apply one heap
/// insert (offset 1, `flags`) at LSN, get the page.
fn one_insert_request(target: &PageTag, free: u16, flags: u8) -> Vec<u8> {
    let mut req = push(target, &heap_page(free));
    req.extend(apply(LSN, &heap_insert(target, 1, flags, false)));
    req.extend(get(target));
    req
}

// ---------------------------------------------------------------------------
// Every block reference is checked, not only the target's.

#[test]
fn a_block_reference_with_an_invalid_fork_is_refused() {
    let _test = isolated_test();
    let target = main_tag(REL, 0);
    let bad = PageTag {
        forknum: 4,
        ..main_tag(REL, 1)
    };
    let rec = fpi(&[(target, marked_page(1)), (bad, marked_page(2))]);
    let mut peer = Peer::start();
    let mut req = push(&target, &heap_page(4000));
    req.extend(apply(LSN, &rec));
    req.extend(get(&target));
    peer.refuses("fork 4 in block 1", &req, "invalid fork number 4");
}

#[test]
fn a_block_reference_to_invalid_block_number_is_refused() {
    let _test = isolated_test();
    let target = main_tag(REL, 0);
    let bad = main_tag(REL, u32::MAX);
    let rec = fpi(&[(target, marked_page(1)), (bad, marked_page(2))]);
    let mut peer = Peer::start();
    let mut req = push(&target, &heap_page(4000));
    req.extend(apply(LSN, &rec));
    req.extend(get(&target));
    peer.refuses(
        "block 4294967295 in block 1",
        &req,
        "invalid block number 4294967295",
    );
    drop(peer);

    // The library refuses the same record before it reaches a process.
    let mut redoer = Redoer::new(&config()).unwrap();
    let refs = [RecordRef {
        end_lsn: LSN,
        data: &rec,
    }];
    match redoer.redo(&target, Some(&heap_page(4000)), &refs) {
        Err(Error::MalformedRecord { source, .. }) => {
            assert!(
                source.to_string().contains("invalid block number"),
                "{source}"
            )
        }
        Ok(_) => panic!("the library let the record through: it answered with a page"),
        Err(e) => panic!("the library let the record through: {e:?}"),
    }
    assert_eq!(redoer.pid(), None, "no process was needed to refuse it");
}

// ---------------------------------------------------------------------------
// The scratch directory stays small, also for legitimate WAL.

#[test]
fn an_insert_far_into_a_heap_leaves_the_scratch_directory_small() {
    let _test = isolated_test();
    // A nearly full page: after the insert, redo records its free space in
    // the free-space map, whose page for block 50,000,000 is far into it.
    let target = main_tag(REL, 50_000_000);
    let (mut peer, baseline) = measured_peer();
    let req = one_insert_request(&target, 1000, 0);
    let page = peer.page(&req).unwrap();
    assert_eq!(line_pointers(&page), 1, "the tuple was inserted");
    assert_eq!(page_lsn(&page), LSN);
    assert_scratch_small(&peer, baseline, "insert at heap block 50,000,000");
}

#[test]
fn clearing_all_visible_far_into_a_heap_writes_no_visibility_map() {
    let _test = isolated_test();
    let target = main_tag(REL, 100_000_000);
    let (mut peer, baseline) = measured_peer();
    let req = one_insert_request(&target, 4000, XLH_INSERT_ALL_VISIBLE_CLEARED);
    let page = peer.page(&req).unwrap();
    assert_eq!(line_pointers(&page), 1);
    assert_scratch_small(
        &peer,
        baseline,
        "all-visible cleared at heap block 100,000,000",
    );
}

#[test]
fn many_non_target_blocks_leave_no_segments_behind() {
    let _test = isolated_test();
    // 400 records, each with an image of the target and of another block of
    // the same relation, spread over ten 1 GB segments: more sentinels than
    // the 128-buffer pool holds.
    let target = main_tag(REL, 0);
    let (mut peer, baseline) = measured_peer();
    let mut req = push(&target, &heap_page(4000));
    let mut last = 0;
    for i in 0..400u32 {
        let other = main_tag(REL, 10 + i * 3271);
        last = LSN + u64::from(i) * 0x2000 + 0x2000;
        req.extend(apply(
            last,
            &fpi(&[(target, marked_page(i as u8)), (other, marked_page(0xEE))]),
        ));
    }
    req.extend(get(&target));
    let page = peer.page(&req).unwrap();
    assert_eq!(page[..], with_lsn(&marked_page(399u32 as u8), last)[..]);
    assert_scratch_small(&peer, baseline, "400 records, 400 other blocks");
}

#[test]
fn many_relations_leave_a_bounded_number_of_files() {
    let _test = isolated_test();
    // Requests on ever new relations, each touching the heap, its
    // free-space map and its visibility map.
    let (mut peer, baseline) = measured_peer();
    let rss_start = peer.status_kb("RssAnon");
    let mut rss_at_1000 = 0;
    let mut most = 0;
    for i in 0..2000u32 {
        let rel = RelFileNode {
            relnode: 100_000 + i,
            ..REL
        };
        let target = main_tag(rel, 7);
        let req = one_insert_request(&target, 1000, XLH_INSERT_ALL_VISIBLE_CLEARED);
        let page = peer.page(&req).unwrap();
        assert_eq!(line_pointers(&page), 1);
        if i == 999 {
            rss_at_1000 = peer.status_kb("RssAnon");
        }
        if i % 100 == 99 {
            let u = usage(&peer.scratch());
            most = most.max(u.files - baseline.files);
        }
    }
    let g = growth(&peer, baseline, "after 2000 relations");
    let rss_end = peer.status_kb("RssAnon");
    println!(
        "most relation files seen: {most}; RssAnon {rss_start} kB at the start, \
         {rss_at_1000} kB after 1000 relations, {rss_end} kB after 2000"
    );
    assert!(most <= 600, "files accumulate: {most} after 2000 relations");
    // Per-relation state (fsync requests, smgr entries) must not pile up.
    assert!(
        rss_end < rss_at_1000 + 48,
        "memory grows with relations: {rss_at_1000} kB -> {rss_end} kB"
    );
    assert_eq!(g.segments, 0);
}

#[test]
fn many_databases_and_tablespaces_leave_a_bounded_number_of_directories() {
    let _test = isolated_test();
    // Every request in another database, every other one in another
    // tablespace too: redo makes the directories those need.
    let (mut peer, baseline) = measured_peer();
    let mut most = 0;
    for i in 0..1000u32 {
        let rel = RelFileNode {
            spcnode: if i % 2 == 0 { 1663 } else { 50_000 + i },
            dbnode: 100_000 + i,
            relnode: 16384,
        };
        let target = main_tag(rel, 0);
        let req = one_insert_request(&target, 1000, 0);
        assert_eq!(line_pointers(&peer.page(&req).unwrap()), 1);
        if i % 100 == 99 {
            most = most.max(usage(&peer.scratch()).dirs - baseline.dirs);
        }
    }
    growth(&peer, baseline, "after 1000 databases");
    println!("most directories seen: {most}");
    assert!(
        most <= 600,
        "directories accumulate: {most} after 1000 databases"
    );
}

#[test]
fn what_redo_writes_is_removed_and_too_much_is_refused() {
    let _test = isolated_test();
    // An image of an init fork (an unlogged relation's): PostgreSQL writes
    // it to storage at once, so this request does write a scratch file.
    let init = PageTag {
        forknum: 3,
        ..main_tag(REL, 0)
    };
    let (mut peer, baseline) = measured_peer();
    let mut req = begin(&init);
    req.extend(apply(LSN, &fpi(&[(init, marked_page(7))])));
    req.extend(get(&init));
    let page = peer.page(&req).unwrap();
    assert_eq!(page[..], with_lsn(&marked_page(7), LSN)[..]);
    let g = growth(&peer, baseline, "an init-fork image");
    assert_eq!(
        (g.files, g.apparent),
        (0, 0),
        "the files of a request that wrote are removed"
    );
    // The process goes on serving.
    peer.page(&ping()).unwrap();

    // More than the write budget in one request: refused.
    let mut req = begin(&init);
    for i in 0..2100u64 {
        req.extend(apply(LSN + i * 0x4000, &fpi(&[(init, marked_page(7))])));
    }
    req.extend(get(&init));
    peer.refuses("2100 init-fork images", &req, "wrote more than 16 MB");
}

#[test]
fn files_cannot_grow_beyond_the_size_limit() {
    let _test = isolated_test();
    // The probe writes one byte at the limit in a file of the scratch
    // directory: that must fail with EFBIG (not kill the process with
    // SIGXFSZ, not succeed).
    let mut r = Redoer::new(&config_with(&["pg_walredo.test_on_ping=fsize".into()])).unwrap();
    r.ping().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", r.pid().unwrap())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max file size"))
        .unwrap()
        .to_string();
    println!("{line}");
    assert!(!line.contains("unlimited"), "{line}");
}

// ---------------------------------------------------------------------------
// An empty target that the record does not initialize fails the request.

#[test]
fn an_empty_page_that_no_record_initializes_fails_the_request() {
    let _test = isolated_test();
    let target = main_tag(REL, 3);
    let insert = heap_insert(&target, 1, 0, false);

    // B: no base page, and the first record does not initialize it.
    let mut peer = Peer::start();
    let mut req = begin(&target);
    req.extend(apply(LSN, &insert));
    req.extend(get(&target));
    peer.refuses("B then a heap insert", &req, "initialize");
    drop(peer);

    // P with an all-zero page: PostgreSQL's redo finds no page to change.
    let mut peer = Peer::start();
    let mut req = push(&target, &[0u8; PAGE_SIZE]);
    req.extend(apply(LSN, &insert));
    req.extend(get(&target));
    peer.refuses("a zero base page then a heap insert", &req, "empty");
    drop(peer);

    // Control: the same insert on an initialized page works, and a record
    // that initializes the page works after B.
    let mut peer = Peer::start();
    let mut req = push(&target, &heap_page(4000));
    req.extend(apply(LSN, &insert));
    req.extend(get(&target));
    assert_eq!(line_pointers(&peer.page(&req).unwrap()), 1);
    let mut req = begin(&target);
    req.extend(apply(LSN, &heap_insert(&target, 1, 0, true)));
    req.extend(get(&target));
    assert_eq!(line_pointers(&peer.page(&req).unwrap()), 1);
}

// ---------------------------------------------------------------------------
// No Landlock, no service (unless the weaker sandbox is accepted).

/// A wrapper that makes landlock_create_ruleset fail with ENOSYS, as on a
/// kernel without Landlock, then runs its arguments.
const NO_LANDLOCK_C: &str = r#"
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#endif

int
main(int argc, char **argv)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_landlock_create_ruleset, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {sizeof(filter) / sizeof(filter[0]), filter};

	if (argc < 2)
		return 2;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
		syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
	{
		perror("seccomp");
		return 2;
	}
	execv(argv[1], argv + 1);
	perror("execv");
	return 2;
}
"#;

fn no_landlock_wrapper() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/hostile"));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("no_landlock.c");
    let bin = dir.join("no_landlock");
    std::fs::write(&src, NO_LANDLOCK_C).unwrap();
    let out = Command::new("gcc")
        .args(["-O1", "-Wall", "-Werror", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("gcc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Start postgres exactly as the library would, but through `wrapper`;
/// send a ping, close stdin; returns (exit code, pages received, stderr).
fn run_wrapped(wrapper: &Path, config: &Config) -> (Option<i32>, usize, String) {
    let launcher = Launcher::new(config).unwrap();
    let scratch = launcher.make_scratch_dir().unwrap();
    let cmd = launcher.command(&scratch);
    let mut c = Command::new(wrapper);
    c.arg(cmd.get_program())
        .args(cmd.get_args())
        .current_dir(&scratch)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ids) = launcher.user() {
        c.uid(ids.uid).gid(ids.gid);
    }
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(&ping()); // fails if it is gone already
    drop(stdin);
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&scratch);
    (status.code(), out.len() / PAGE_SIZE, err)
}

#[test]
fn without_landlock_the_process_refuses_to_serve_unless_told_to() {
    let _test = isolated_test();
    let wrapper = no_landlock_wrapper();
    let (code, pages, stderr) = run_wrapped(&wrapper, &config_with(&[]));
    println!("no Landlock, defaults: exit {code:?}, {pages} pages, stderr: {stderr}");
    assert_eq!(pages, 0, "it served without Landlock: {stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("FATAL:") && stderr.contains("pg_walredo.require_landlock"),
        "{stderr}"
    );

    // Accepting the weaker sandbox explicitly (the library's setting): it
    // serves, and says so.
    let weaker = Config {
        require_landlock: false,
        ..config_with(&[])
    };
    let (code, pages, stderr) = run_wrapped(&wrapper, &weaker);
    println!("no Landlock, require_landlock=off: exit {code:?}, {pages} pages, stderr: {stderr}");
    assert_eq!((code, pages), (Some(0), 1), "{stderr}");
    assert!(
        stderr.contains("WARNING:") && stderr.contains("Landlock"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// System calls restricted by their arguments (seccomp) kill the process.

fn ping_is_killed_by_sigsys(setting: String) {
    let mut r = Redoer::new(&config_with(std::slice::from_ref(&setting))).unwrap();
    match r.ping() {
        Err(Error::RedoFailed { message, .. }) => {
            println!("{setting}: {message}");
            assert!(message.contains("SIGSYS"), "{setting}: {message}")
        }
        other => panic!("{setting}: the call was not stopped by the filter: {other:?}"),
    }
}

#[test]
fn signalling_another_process_is_killed_by_sigsys() {
    let _test = isolated_test();
    // A sibling of the same user: the most tempting target.
    let (mut sibling, pid) = started_redoer(&config());
    ping_is_killed_by_sigsys(format!("pg_walredo.test_on_ping=tgkill:{pid}"));
    sibling.ping().unwrap();
    assert_eq!(sibling.pid(), Some(pid), "the sibling lives on");
}

#[test]
fn removing_another_shared_memory_segment_is_killed_by_sigsys() {
    let _test = isolated_test();
    // A segment owned by the processes' user, as a sibling's would be.
    // SAFETY: plain System V calls on a segment made here.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
    assert!(id >= 0);
    if let Some(ids) = walredo::process::launch::unprivileged_user(&config().run_as_user).unwrap() {
        // SAFETY: shmid_ds is plain old data that IPC_STAT fills in.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) }, 0);
        ds.shm_perm.uid = ids.uid;
        ds.shm_perm.gid = ids.gid;
        assert_eq!(unsafe { libc::shmctl(id, libc::IPC_SET, &mut ds) }, 0);
    }
    ping_is_killed_by_sigsys(format!("pg_walredo.test_on_ping=shmctl:{id}"));
    // SAFETY: as above.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    let still_there = unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } == 0;
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    assert!(still_there, "the segment was removed");
}

#[test]
fn executable_memory_is_killed_by_sigsys() {
    let _test = isolated_test();
    ping_is_killed_by_sigsys("pg_walredo.test_on_ping=mmap-exec".into());
}

/// The System V segment id in a running process's postmaster.pid.
fn shmid_of(scratch: &Path) -> i32 {
    let pidfile = std::fs::read_to_string(scratch.join("postmaster.pid")).unwrap();
    let line = pidfile.lines().nth(6).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn fatal_and_panic_exits_still_work_under_the_filter() {
    let _test = isolated_test();
    // FATAL: proc_exit runs, detaches and removes its own segment.
    let mut peer = Peer::start();
    let shmid = shmid_of(&peer.scratch());
    let stderr = peer.refuses(
        "unknown tag",
        &msg(b'Z', &[]),
        "invalid wal-redo message tag",
    );
    assert!(!stderr.contains("SIGSYS"), "{stderr}");
    // SAFETY: shmid_ds is plain old data that IPC_STAT fills in.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    assert_ne!(
        unsafe { libc::shmctl(shmid, libc::IPC_STAT, &mut ds) },
        0,
        "the process removed its own segment on the way out"
    );
    drop(peer);

    // PANIC: abort() signals the process itself.
    let target = main_tag(REL, 0);
    let mut peer = Peer::start();
    let mut req = push(&target, &heap_page(4000));
    req.extend(apply(LSN, &heap_insert(&target, 5, 0, false)));
    req.extend(get(&target));
    let e = peer.page(&req).unwrap_err();
    println!("PANIC: {e}");
    assert!(e.contains("PANIC:") && e.contains("SIGABRT"), "{e}");
}

// ---------------------------------------------------------------------------
// Only records of page resource managers run.

#[test]
fn records_of_other_resource_managers_are_refused() {
    let _test = isolated_test();
    let target = main_tag(REL, 0);
    // Each with a block reference to the target, as a forger would add.
    let drop_db = {
        let mut m = 5u32.to_le_bytes().to_vec(); // db_id
        m.extend_from_slice(&1i32.to_le_bytes()); // ntablespaces
        m.extend_from_slice(&1663u32.to_le_bytes());
        m
    };
    let cases: Vec<(&str, u8, u8, Vec<u8>)> = vec![
        ("Transaction", RM_XACT, 0x00, vec![0u8; 8]),  // COMMIT
        ("Database", RM_DBASE, 0x20, drop_db),         // DROP
        ("Storage", RM_SMGR, 0x20, vec![0u8; 24]),     // TRUNCATE
        ("Tablespace", RM_TBLSPC, 0x10, vec![0u8; 4]), // DROP
        ("XLOG", RM_XLOG, 0x00, vec![0u8; 120]),       // CHECKPOINT_SHUTDOWN
        ("Heap2", RM_HEAP2, 0x00, vec![0u8; 40]),      // REWRITE
    ];
    let mut failures = Vec::new();
    for (name, rmid, info, main) in &cases {
        let rec = record(*rmid, *info, 1000, &[Blk::new(0, target)], main);
        let mut peer = Peer::start();
        let mut req = push(&target, &heap_page(4000));
        req.extend(apply(LSN, &rec));
        req.extend(get(&target));
        if let Err(e) = peer.try_refuses(name, &req, &format!("{name} record")) {
            failures.push(e);
        }
        drop(peer);

        // The library refuses them too, naming the resource manager.
        let mut redoer = Redoer::new(&config()).unwrap();
        let refs = [RecordRef {
            end_lsn: LSN,
            data: rec.as_slice(),
        }];
        match redoer.redo(&target, Some(&heap_page(4000)), &refs) {
            Err(Error::InvalidArgument(m)) => {
                assert!(m.contains(name), "{m}");
                assert_eq!(redoer.pid(), None);
            }
            Ok(_) => failures.push(format!("{name}: the library let it through: a page")),
            Err(e) => failures.push(format!("{name}: the library let it through: {e:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// Message lengths and the input buffer: impossible ones are refused.

#[test]
fn impossible_message_lengths_are_refused_before_their_payload() {
    let _test = isolated_test();
    // Lengths that no valid message has, sent without a payload: the
    // process must refuse them at once, not wait for (or allocate) it.
    let mut too_long = vec![b'A'];
    too_long.extend_from_slice(&0x3FFF_FF00u32.to_be_bytes());
    let mut b_long = vec![b'B'];
    b_long.extend_from_slice(&1004u32.to_be_bytes());
    let mut h_long = vec![b'H'];
    h_long.extend_from_slice(&(4u32 + 8192).to_be_bytes());
    for (what, bytes, expected) in [
        ("an A longer than any record", too_long, "longer than"),
        ("a B of 1004 bytes", b_long, "invalid length 1004"),
        ("an H with a payload", h_long, "invalid length 8196"),
    ] {
        let mut peer = Peer::start();
        // A process that waits for the payload fails by this deadline.
        peer.timeout = Duration::from_secs(5);
        peer.refuses(what, &bytes, expected);
        drop(peer);
    }
}

#[test]
fn the_input_buffer_shrinks_after_a_large_message() {
    let _test = isolated_test();
    let target = main_tag(REL, 0);
    let mut peer = Peer::start();
    let mut req = push(&target, &heap_page(4000));
    req.extend(apply(LSN, &fpi(&[(target, marked_page(1))])));
    req.extend(get(&target));
    peer.page(&req).unwrap();
    let rss_before = peer.status_kb("RssAnon");
    // An image record carrying 96 MiB of main data, which its redo ignores.
    let big = {
        let blk = Blk::new(0, target).image(marked_page(2));
        record(RM_XLOG, XLOG_FPI, 0, &[blk], &vec![0x5A; 96 << 20])
    };
    let mut req = push(&target, &heap_page(4000));
    req.extend(apply(LSN + 0x1000, &big));
    req.extend(get(&target));
    let page = peer.page(&req).unwrap();
    assert_eq!(page[..], with_lsn(&marked_page(2), LSN + 0x1000)[..]);
    peer.page(&ping()).unwrap();
    let after = peer.status_kb("RssAnon");
    println!("RssAnon: {rss_before} kB before the 96 MiB record, {after} kB after it");
    assert!(
        after < rss_before + 16 * 1024,
        "the process keeps {} MiB after one large message",
        (after - rss_before) / 1024
    );
}
