//! `walredo check` and `walredo repair`: a stopped cluster's pages against
//! what its WAL says they must be, and the damaged ones rewritten.
//!
//! - Pages the WAL since the base changed are rebuilt by `verify`'s
//!   pipeline with the cluster as EXPECTED ([`Expected::Written`]): a page
//!   is as its WAL makes it when it equals the rebuilt page once what redo does not reproduce (hint bits, a tuple's command id,
//!   unused space, ...) is masked as PostgreSQL's `wal_consistency_checking`
//!   masks it. One that is not is *behind* its WAL (a valid page with an
//!   older LSN: a write that never reached the disk, or an old copy put
//!   back) or *different* (it fails its checksum or header check, or holds
//!   other bytes: corruption).
//! - Pages the WAL did not change since the base are compared with the
//!   base's copy, masked the same way.
//! - Free-space-map forks (not WAL-logged, rebuilt by PostgreSQL), unlogged
//!   and temporary relations are not checked.
//!
//! Repair writes the page the WAL makes (or the base's copy) over the
//! damaged one, with its checksum when the cluster has data checksums,
//! after saving the old page in a directory beside the data directory (not
//! in it, where PostgreSQL's tools would take it for a relation file).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use walredo::datadir::{relation_path, PageFiles, RELSEG_SIZE};
use walredo::pg::mask::masked_difference;
use walredo::pg::page::{page_is_new, pd_lsn, Page};
use walredo::tag::{PageTag, RelFileNode, FSM_FORKNUM, INIT_FORKNUM};
use walredo::wal::checksum::{page_verifies, stamp_checksum};
use walredo::wal::format_lsn;
use walredo::PAGE_SIZE;

use crate::verify::{control_info, verify, Expected, Report, VerifyOptions, WalSpec};

/// How a page differs from what its WAL says it must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DamageKind {
    /// A valid page with an older LSN than its WAL's: a lost write.
    Behind,
    /// A page that fails its checksum or header check, or holds other bytes.
    Different,
    /// A page no WAL since the base changed that differs from the base's copy.
    DifferentFromBase,
}

/// A damaged page and the page it must be.
#[derive(Clone, Debug)]
pub struct Damage {
    pub kind: DamageKind,
    /// The page's LSN, and the LSN of the page it must be.
    pub page_lsn: u64,
    pub wal_lsn: u64,
    /// The page passes PostgreSQL's checks (checksum, header).
    pub verifies: bool,
    /// The first byte that differs once masked (None: only the checks fail).
    pub difference: Option<usize>,
    pub good: Box<Page>,
}

/// `verify`'s comparison of a rebuilt page with the cluster's own
/// ([`Expected::Written`]); the rebuilt page carries its checksum already.
pub fn compare(
    report: &mut Report,
    tag: &PageTag,
    rmgr: &'static str,
    rebuilt: Box<Page>,
    found: io::Result<Option<Box<Page>>>,
    data_checksums: bool,
) {
    report.compared.insert(*tag);
    if tag.forknum == FSM_FORKNUM {
        return;
    }
    let page = match found {
        Err(e) => return report.failures.push((*tag, e.to_string())),
        Ok(None) => {
            report.gone += 1;
            return;
        }
        Ok(Some(page)) => page,
    };
    let g = report.groups.entry((tag.forknum, rmgr)).or_default();
    g.pages += 1;
    // A page PostgreSQL refuses to read is damaged, even where the masks
    // would not look (a bad byte in its free space fails the checksum).
    let verifies = page_verifies(&page, tag.blkno, data_checksums);
    let difference = masked_difference(&page, &rebuilt, tag.forknum, tag.blkno);
    if verifies && difference.is_none() {
        g.identical += 1;
        return;
    }
    let kind = if verifies && pd_lsn(&page[..]) < pd_lsn(&rebuilt[..]) {
        g.behind += 1;
        DamageKind::Behind
    } else {
        g.different += 1;
        g.differences.push((*tag, difference.unwrap_or(0)));
        DamageKind::Different
    };
    report.damaged.insert(
        *tag,
        Damage {
            kind,
            page_lsn: pd_lsn(&page[..]),
            wal_lsn: pd_lsn(&rebuilt[..]),
            verifies,
            difference,
            good: rebuilt,
        },
    );
}

/// The sources of `check` and `repair`: the cluster, its base, its WAL.
#[derive(Clone)]
pub struct CheckOptions {
    /// The cluster's data directory, stopped cleanly.
    pub data: PathBuf,
    /// A base backup of it (or a cleanly stopped copy) older than its WAL.
    pub base: PathBuf,
    /// Its WAL since BASE (the command's default, DATA/pg_wal, is filled in
    /// where its options are read).
    pub wal: WalSpec,
    pub processes: usize,
    pub config: walredo::Config,
}

/// What `check` found.
pub struct CheckReport {
    pub verify: Report,
    /// Pages no WAL since the base changed: compared with the base's copy,
    /// equal to it, and not in the base (files made without WAL).
    pub untouched: u64,
    pub untouched_same: u64,
    pub not_in_base: u64,
}

impl CheckReport {
    /// Pages that are not what their WAL (or the base) says, or that could
    /// not be checked for an error.
    pub fn clean(&self) -> bool {
        self.verify.damaged.is_empty() && self.verify.failures.is_empty()
    }
}

/// Refuse a cluster whose server runs, or that was not stopped cleanly (its
/// pages may then be behind the WAL until recovery replays it).
fn stopped_cleanly(data: &Path, config: &walredo::Config) -> Result<(), String> {
    if data.join("postmaster.pid").exists() {
        return Err(format!(
            "{} has a postmaster.pid: its server is running (or crashed); stop it cleanly first",
            data.display()
        ));
    }
    let info = control_info(data, config)?;
    if !info.cleanly_shut_down {
        return Err(format!(
            "{} was not shut down cleanly (state {:?}): start and stop its server once, so \
             that recovery brings its pages up to its WAL",
            data.display(),
            info.state
        ));
    }
    Ok(())
}

/// Check every page of DATA against its WAL and base.
pub fn check(
    opts: &CheckOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<CheckReport, String> {
    stopped_cleanly(&opts.data, &opts.config)?;
    let wal = &opts.wal;
    let Some((first, archives)) = wal.dirs.split_first() else {
        return Err("no WAL directory to check against".into());
    };
    let verify_opts = VerifyOptions {
        base: opts.base.clone(),
        wal: first.clone(),
        archives: archives.to_vec(),
        restore_command: wal.restore_command.clone(),
        timeline: wal.timeline,
        expected: opts.data.clone(),
        expected_is: Expected::Written,
        processes: opts.processes,
        end: None,
        config: opts.config.clone(),
    };
    let mut report = verify(&verify_opts, progress)?;
    let data_checksums = control_info(&opts.data, &opts.config)?.data_checksums;
    let mut skip: HashSet<PageTag> = std::mem::take(&mut report.compared);
    skip.extend(report.failures.iter().map(|(t, _)| *t));
    skip.extend(report.unstartable.iter().copied());
    let mut out = CheckReport {
        verify: report,
        untouched: 0,
        untouched_same: 0,
        not_in_base: 0,
    };
    compare_untouched(opts, &skip, data_checksums, &mut out)?;
    Ok(out)
}

/// Compare every page of DATA's relation files that the WAL did not change
/// with the base's copy.
fn compare_untouched(
    opts: &CheckOptions,
    skip: &HashSet<PageTag>,
    data_checksums: bool,
    out: &mut CheckReport,
) -> Result<(), String> {
    let base = PageFiles::new(&opts.base);
    for (rel, forknum, segno, path) in relation_files(&opts.data)? {
        let len = fs::metadata(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        let file = fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut page: Box<Page> = Box::new([0; PAGE_SIZE]);
        for i in 0..(len / PAGE_SIZE as u64) as u32 {
            let tag = PageTag {
                rel,
                forknum,
                blkno: segno * RELSEG_SIZE + i,
            };
            if skip.contains(&tag) {
                continue;
            }
            file.read_exact_at(&mut page[..], u64::from(i) * PAGE_SIZE as u64)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if page_is_new(&page[..]) && page.iter().all(|&b| b == 0) {
                continue; // extended without WAL, never used: as PostgreSQL reads it
            }
            out.untouched += 1;
            let Some(good) = base.read(&tag).map_err(|e| e.to_string())? else {
                out.not_in_base += 1;
                continue;
            };
            let verifies = page_verifies(&page, tag.blkno, data_checksums);
            let difference = masked_difference(&page, &good, forknum, tag.blkno);
            if verifies && difference.is_none() {
                out.untouched_same += 1;
                continue;
            }
            let mut good = good;
            if data_checksums {
                stamp_checksum(&mut good, tag.blkno);
            }
            out.verify.damaged.insert(
                tag,
                Damage {
                    kind: DamageKind::DifferentFromBase,
                    page_lsn: pd_lsn(&page[..]),
                    wal_lsn: pd_lsn(&good[..]),
                    verifies,
                    difference,
                    good,
                },
            );
        }
    }
    Ok(())
}

/// DATA's relation files that WAL covers: main and visibility-map forks
/// (and init forks) of permanent relations, in base/, global/ and the
/// tablespaces; not free-space maps, unlogged relations' other forks (an
/// init fork marks them) or temporary relations' files.
fn relation_files(data: &Path) -> Result<Vec<(RelFileNode, u8, u32, PathBuf)>, String> {
    // (directory, tablespace, database)
    let mut dirs = vec![(
        data.join("global"),
        walredo::datadir::GLOBALTABLESPACE_OID,
        0,
    )];
    let mut add_databases = |root: PathBuf, spcnode: u32| -> Result<(), String> {
        let Ok(entries) = fs::read_dir(&root) else {
            return Ok(());
        };
        for e in entries {
            let e = e.map_err(|e| format!("{}: {e}", root.display()))?;
            if let Some(db) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                dirs.push((e.path(), spcnode, db));
            }
        }
        Ok(())
    };
    add_databases(data.join("base"), walredo::datadir::DEFAULTTABLESPACE_OID)?;
    if let Ok(spcs) = fs::read_dir(data.join("pg_tblspc")) {
        for spc in spcs.flatten() {
            let Some(spcnode) = spc.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            // One version directory (PG_15_202209061, ...) per tablespace.
            for version in fs::read_dir(spc.path()).into_iter().flatten().flatten() {
                if version.file_name().to_string_lossy().starts_with("PG_") {
                    add_databases(version.path(), spcnode)?;
                }
            }
        }
    }
    let mut files = Vec::new();
    for (dir, spcnode, dbnode) in dirs {
        let entries = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut found = Vec::new();
        let mut unlogged = HashSet::new();
        for e in entries {
            let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
            let name = e.file_name();
            let Some((relnode, forknum, segno)) = name.to_str().and_then(parse_relation_file)
            else {
                continue;
            };
            if forknum == INIT_FORKNUM {
                unlogged.insert(relnode);
            }
            found.push((relnode, forknum, segno, e.path()));
        }
        for (relnode, forknum, segno, path) in found {
            if forknum == FSM_FORKNUM || (unlogged.contains(&relnode) && forknum != INIT_FORKNUM) {
                continue;
            }
            let rel = RelFileNode {
                spcnode,
                dbnode,
                relnode,
            };
            files.push((rel, forknum, segno, path));
        }
    }
    files.sort();
    Ok(files)
}

/// `16384`, `16384_vm`, `16384.2`, `16384_init`: (relnode, fork, segment).
/// Temporary relations (`t3_16384`) and other files give None.
fn parse_relation_file(name: &str) -> Option<(u32, u8, u32)> {
    let (stem, segno) = match name.split_once('.') {
        Some((stem, seg)) => (stem, seg.parse().ok().filter(|&s| s > 0)?),
        None => (name, 0),
    };
    let (rel, forknum) = match stem.split_once('_') {
        Some((rel, "fsm")) => (rel, FSM_FORKNUM),
        Some((rel, "vm")) => (rel, walredo::tag::VISIBILITYMAP_FORKNUM),
        Some((rel, "init")) => (rel, INIT_FORKNUM),
        Some(_) => return None,
        None => (stem, walredo::tag::MAIN_FORKNUM),
    };
    if !rel.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((rel.parse().ok()?, forknum, segno))
}

const FORK_NAMES: [&str; 4] = ["main", "fsm", "vm", "init"];

fn describe(tag: &PageTag, d: &Damage) -> String {
    let what = match d.kind {
        DamageKind::Behind => format!(
            "behind its WAL: the page's LSN is {}, the WAL's {}",
            format_lsn(d.page_lsn),
            format_lsn(d.wal_lsn)
        ),
        DamageKind::Different if !d.verifies => {
            "different: it fails PostgreSQL's checks (checksum or header)".to_string()
        }
        DamageKind::Different => format!(
            "different from what its WAL makes it from byte {} on (page LSN {}, the WAL's {})",
            d.difference.unwrap_or(0),
            format_lsn(d.page_lsn),
            format_lsn(d.wal_lsn)
        ),
        DamageKind::DifferentFromBase => format!(
            "different from the base's copy, and no WAL since the base changed it{}",
            if d.verifies {
                ""
            } else {
                " (it fails PostgreSQL's checks)"
            }
        ),
    };
    format!(
        "{}/{}/{} {} block {}: {what}",
        tag.rel.spcnode,
        tag.rel.dbnode,
        tag.rel.relnode,
        FORK_NAMES[tag.forknum as usize],
        tag.blkno
    )
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.verify;
        let (mut pages, mut same, mut behind, mut different) = (0, 0, 0, 0);
        for ((fork, _), g) in &r.groups {
            if *fork != FSM_FORKNUM {
                pages += g.pages;
                same += g.identical;
                behind += g.behind;
                different += g.different;
            }
        }
        writeln!(f, "replayed by {}", r.server)?;
        writeln!(
            f,
            "WAL since the base: {} records changed {} blocks",
            r.records, r.blocks
        )?;
        writeln!(
            f,
            "changed by that WAL: {pages} pages, {same} as their WAL makes them, {behind} behind \
             it, {different} different"
        )?;
        writeln!(
            f,
            "not changed by it: {} pages, {} as in the base, {} different, {} not in the base",
            self.untouched,
            self.untouched_same,
            self.untouched - self.untouched_same - self.not_in_base,
            self.not_in_base
        )?;
        if r.gone > 0 {
            writeln!(
                f,
                "gone from the cluster (dropped or truncated): {} pages",
                r.gone
            )?;
        }
        for tag in r.unstartable.iter().take(10) {
            writeln!(
                f,
                "not checked (no initializing record, not in the base): {tag}"
            )?;
        }
        for (tag, e) in &r.failures {
            writeln!(f, "FAILED {tag}: {e}")?;
        }
        // Per relation and fork, in order.
        let mut by_rel: BTreeMap<(RelFileNode, u8), Vec<String>> = BTreeMap::new();
        for (tag, d) in &r.damaged {
            by_rel
                .entry((tag.rel, tag.forknum))
                .or_default()
                .push(describe(tag, d));
        }
        for lines in by_rel.values() {
            for line in lines {
                writeln!(f, "damaged: {line}")?;
            }
        }
        write!(
            f,
            "checked: {} pages, {} damaged",
            pages + self.untouched,
            r.damaged.len()
        )
    }
}

/// Where the old copies of repaired pages go: beside the data directory.
pub fn saved_pages_dir(data: &Path) -> PathBuf {
    let name = data
        .file_name()
        .map_or("data".into(), |n| n.to_string_lossy().into_owned());
    data.with_file_name(format!("{name}.walredo-saved"))
}

/// Write `good` over block `tag` of DATA, after saving the page there to
/// `saved/SPC_DB_REL_FORK_BLOCK.page`; returns the saved file.
pub fn write_page(
    data: &Path,
    saved: &Path,
    tag: &PageTag,
    good: &Page,
) -> Result<PathBuf, String> {
    let path = relation_path(data, &tag.rel, tag.forknum, tag.blkno / RELSEG_SIZE);
    let offset = u64::from(tag.blkno % RELSEG_SIZE) * PAGE_SIZE as u64;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut old = vec![0u8; PAGE_SIZE];
    file.read_exact_at(&mut old, offset)
        .map_err(|e| format!("cannot read block {} of {}: {e}", tag.blkno, path.display()))?;
    // The cluster's rows: readable by the owner only, as the data directory.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(saved)
        .map_err(|e| format!("cannot make {}: {e}", saved.display()))?;
    let keep = saved.join(format!(
        "{}_{}_{}_{}_{}.page",
        tag.rel.spcnode,
        tag.rel.dbnode,
        tag.rel.relnode,
        FORK_NAMES[tag.forknum as usize],
        tag.blkno
    ));
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&keep)
        .and_then(|mut f| f.write_all(&old))
        .map_err(|e| format!("cannot save {}: {e}", keep.display()))?;
    file.write_all_at(&good[..], offset)
        .and_then(|()| file.sync_data())
        .map_err(|e| {
            format!(
                "cannot write block {} of {}: {e}",
                tag.blkno,
                path.display()
            )
        })?;
    Ok(keep)
}

/// Refuse to write into a running or uncleanly stopped cluster.
pub fn may_repair(data: &Path, config: &walredo::Config) -> Result<(), String> {
    stopped_cleanly(data, config)
}
