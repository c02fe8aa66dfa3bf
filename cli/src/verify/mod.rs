//! Rebuild every page a stretch of WAL touched and compare it with the page
//! PostgreSQL's own recovery produced (docs/verification.md, oracle 1); and
//! rebuild one page as of an LSN. The engine behind `walredo verify` and
//! `walredo page`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use walredo::config::Config;
use walredo::datadir::read_page;
use walredo::pg::record::{xl_info, xl_rmid, RecordFormat};
use walredo::pg::record_type::record_type_name;
use walredo::pg::rmgr::rmgr_name;
use walredo::pg::slru::SlruFormat;
use walredo::pool::Pool;
use walredo::process::launch::Server;
use walredo::tag::{PageTag, FSM_FORKNUM};
use walredo::wal::checksum::stamp_checksum;
use walredo::wal::mapped::{MappedWal, RecordAt};
use walredo::wal::pages;
use walredo::wal::record;
use walredo::wal::restore::RestoreCommand;
use walredo::wal::slru::SlruReplay;
use walredo::wal::uses::{block_uses_as, last_run, record_refs, removed_by, BlockUses, Use};
use walredo::wal::{format_lsn, next_record_start, WalReader, WalRecord};
use walredo::PAGE_SIZE;

use crate::server::server_for;

mod rebuild;
mod slru;

pub use slru::{SlruReport, SlruTally, SLRU_ROW_NAMES};

/// What a data directory's `pg_control` says that matters here.
#[derive(Clone, Debug)]
pub struct ControlInfo {
    pub system_id: u64,
    pub cleanly_shut_down: bool,
    /// A base backup (`pg_basebackup`, plain format): its `backup_label`
    /// gives where replay starts, whatever `pg_control` says.
    pub backup_label: Option<BackupLabel>,
    pub state: String,
    pub redo_lsn: u64,
    pub data_checksums: bool,
    pub wal_log_hints: bool,
    /// `track_commit_timestamp`: commit timestamps are active from the
    /// checkpoint on, until a PARAMETER_CHANGE record says otherwise.
    pub commit_ts: bool,
    /// The major version (PG_VERSION) of the server that wrote it.
    pub pg_version: u32,
    /// The server of that version that reads and replays it
    /// ([`server_for`]).
    pub server: Server,
}

impl ControlInfo {
    /// `config` for this data directory's version and server: its own
    /// `pg_version` must agree, if set.
    pub fn config_for(&self, config: &Config) -> Result<Config, String> {
        match config.pg_version {
            Some(v) if v != self.pg_version => Err(format!(
                "the data directory is PostgreSQL {}, but pg_version {v} was asked for",
                self.pg_version
            )),
            _ => Ok(Config {
                pg_version: Some(self.pg_version),
                pg_bindir: Some(self.server.bindir.clone()),
                ..config.clone()
            }),
        }
    }
}

/// What a base backup's `backup_label` says (`xlog.c: do_pg_backup_start`
/// writes it; `read_backup_label` reads it for recovery).
#[derive(Clone, Debug)]
pub struct BackupLabel {
    /// `START WAL LOCATION`: the backup's checkpoint's redo pointer, where
    /// recovery of the backup starts.
    pub start_lsn: u64,
    /// `START TIMELINE`.
    pub timeline: u32,
}

impl BackupLabel {
    /// `dir/backup_label`, if there is one; one that does not say where the
    /// backup starts is an error.
    pub fn read(dir: &Path) -> Result<Option<BackupLabel>, String> {
        let path = dir.join("backup_label");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
        };
        let bad = |what: &str| {
            format!(
                "{} has no valid {what}: is it a base backup's backup_label?",
                path.display()
            )
        };
        // "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)"
        let start_lsn = value("START WAL LOCATION:")
            .and_then(|v| {
                v.split_whitespace()
                    .next()
                    .and_then(walredo::wal::parse_lsn)
            })
            .ok_or_else(|| bad("START WAL LOCATION"))?;
        let timeline = value("START TIMELINE:")
            .map(|v| v.parse().map_err(|_| bad("START TIMELINE")))
            .transpose()?
            .unwrap_or(1);
        Ok(Some(BackupLabel {
            start_lsn,
            timeline,
        }))
    }
}

/// Read `dir`'s control file, with the `pg_controldata` of the server of
/// its version that `config` names ([`server_for`]).
pub fn control_info(dir: &Path, config: &Config) -> Result<ControlInfo, String> {
    if !dir.join("global/pg_control").is_file() {
        return Err(format!(
            "{} is not a PostgreSQL data directory (no global/pg_control): give the data \
             directory of a cleanly stopped PostgreSQL cluster",
            dir.display()
        ));
    }
    let pg_version = walredo::datadir::pg_version(dir)?;
    let server = server_for(pg_version, config)?;
    // Reading pg_control needs no privileges beyond reading the file.
    let out = std::process::Command::new(server.bindir.join("pg_controldata"))
        .arg("-D")
        .arg(dir)
        .env("LC_ALL", "C")
        .env_remove("PGDATA")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}/pg_controldata: {e}", server.bindir.display()))?;
    if !out.status.success() {
        return Err(format!(
            "pg_controldata {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Result<String, String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| format!("pg_controldata of {} has no {name:?}", dir.display()))
    };
    let state = field("Database cluster state")?;
    let backup_label = BackupLabel::read(dir)?;
    let redo_lsn = match &backup_label {
        Some(label) => label.start_lsn,
        None => walredo::wal::parse_lsn(&field("Latest checkpoint's REDO location")?)
            .ok_or("bad REDO location")?,
    };
    Ok(ControlInfo {
        system_id: field("Database system identifier")?
            .parse()
            .map_err(|e| format!("bad system identifier: {e}"))?,
        cleanly_shut_down: state == "shut down",
        state,
        backup_label,
        redo_lsn,
        data_checksums: field("Data page checksum version")? != "0",
        wal_log_hints: field("wal_log_hints setting")? == "on",
        commit_ts: field("track_commit_timestamp setting")? == "on",
        pg_version,
        server,
    })
}

/// The WAL of `base`, from its checkpoint's REDO location to `end` (or the
/// end of the WAL): every record, in order.
pub fn read_wal(
    base: &ControlInfo,
    wal_dir: &Path,
    end: Option<u64>,
) -> Result<Vec<WalRecord>, String> {
    read_wal_records(base, &WalDirs::one(wal_dir), end)
}

/// [`read_wal`] from several directories and a restore command.
fn read_wal_records(
    base: &ControlInfo,
    wal: &WalDirs,
    end: Option<u64>,
) -> Result<Vec<WalRecord>, String> {
    let mut records = Vec::new();
    read_wal_from(base, wal, end, |start_lsn, end_lsn, data| {
        records.push(WalRecord {
            start_lsn,
            end_lsn,
            data: data.to_vec(),
        });
        Ok(())
    })?;
    Ok(records)
}

/// [`read_wal`], handing each record to `each` as it is read (and checked:
/// its CRC, its links) instead of collecting them: its start and end LSNs
/// and its bytes (valid during the call: one buffer serves every record).
/// Returns the file each segment was read from, and the segment size.
pub fn read_wal_with(
    base: &ControlInfo,
    wal_dir: &Path,
    end: Option<u64>,
    each: impl FnMut(u64, u64, &[u8]) -> Result<(), String>,
) -> Result<(Vec<(u64, PathBuf)>, u64), String> {
    read_wal_from(base, &WalDirs::one(wal_dir), end, each)
}

/// Where a command's WAL is, as given: directories in order (the first,
/// `pg_wal` or the WAL written after BASE; then archives, plain or
/// compressed), a restore command for what none has, and the timeline to
/// follow (None: the newest).
#[derive(Clone, Debug, Default)]
pub struct WalSpec {
    pub dirs: Vec<PathBuf>,
    pub restore_command: Option<String>,
    pub timeline: Option<u32>,
}

impl WalSpec {
    /// One directory, the newest timeline, no restore command.
    pub fn dir(dir: &Path) -> WalSpec {
        WalSpec {
            dirs: vec![dir.to_path_buf()],
            ..WalSpec::default()
        }
    }
}

/// Where the WAL is: directories, then a restore command, and the timeline.
pub struct WalDirs {
    pub dirs: Vec<PathBuf>,
    pub restore: Option<Arc<RestoreCommand>>,
    pub timeline: Option<u32>,
}

impl WalDirs {
    pub fn one(dir: &Path) -> WalDirs {
        WalDirs {
            dirs: vec![dir.to_path_buf()],
            restore: None,
            timeline: None,
        }
    }

    /// `opts`'s WAL, its archives, restore command and timeline; the
    /// command's files go to a private directory under `cache_root`, kept
    /// as long as the run (the rebuild maps them).
    pub fn of(opts: &VerifyOptions, cache_root: &Path) -> Result<WalDirs, String> {
        let mut dirs = vec![opts.wal.clone()];
        dirs.extend(opts.archives.iter().cloned());
        WalDirs::new(
            &WalSpec {
                dirs,
                restore_command: opts.restore_command.clone(),
                timeline: opts.timeline,
            },
            cache_root,
        )
    }

    /// `spec`'s directories, then what its restore command fetches into a
    /// private directory under `cache_root`.
    pub fn new(spec: &WalSpec, cache_root: &Path) -> Result<WalDirs, String> {
        if spec.dirs.is_empty() {
            return Err("no WAL directory given".to_string());
        }
        let dirs = spec.dirs.clone();
        let restore = match spec.restore_command.as_deref() {
            Some(command) => Some(Arc::new(
                RestoreCommand::new(
                    command,
                    &cache_root.join("restored"),
                    RESTORE_TIMEOUT,
                    usize::MAX,
                )
                .map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        Ok(WalDirs {
            dirs,
            restore,
            timeline: spec.timeline,
        })
    }
}

/// How long one run of the restore command may take.
pub const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);

/// [`read_wal_with`] from several directories and a restore command.
pub fn read_wal_from(
    base: &ControlInfo,
    wal: &WalDirs,
    end: Option<u64>,
    mut each: impl FnMut(u64, u64, &[u8]) -> Result<(), String>,
) -> Result<(Vec<(u64, PathBuf)>, u64), String> {
    let wal_dir = &wal.dirs[0];
    let mut reader = WalReader::open_dirs(
        &wal.dirs,
        wal.timeline,
        Some(base.redo_lsn),
        wal.restore.clone(),
    )
    .map_err(|e| {
        let restore = if wal.restore.is_some() {
            "; the restore command did not find it either"
        } else {
            ""
        };
        format!(
            "{e}{restore} (BASE's checkpoint starts replay at {}: is the WAL directory the one \
             written after BASE was taken, and BASE not newer than it?)",
            format_lsn(base.redo_lsn)
        )
    })?;
    reader
        .expect_version(base.pg_version)
        .map_err(|e| format!("{e} (BASE is PostgreSQL {})", base.pg_version))?;
    if reader.system_id() != base.system_id {
        return Err(format!(
            "the WAL in {} belongs to database system {}, BASE to {}: they are from different \
             clusters",
            wal_dir.display(),
            reader.system_id(),
            base.system_id
        ));
    }
    let seg_size = reader.segment_size();
    let mut last_end = None;
    let mut reached_end = false;
    let mut data = Vec::new();
    loop {
        data.clear();
        let Some((start_lsn, end_lsn)) = reader
            .next_record_into(&mut data)
            .map_err(|e| e.to_string())?
        else {
            break;
        };
        if end.is_some_and(|end| start_lsn >= end) {
            reached_end = true;
            break;
        }
        last_end = Some(end_lsn);
        each(start_lsn, end_lsn, &data)?;
    }
    if let (Some(end), false) = (end, reached_end) {
        let last = last_end.map_or(base.redo_lsn, |e| next_record_start(e, seg_size));
        if last < end {
            return Err(format!(
                "the WAL ends at {}, before the requested end {}: a segment is missing",
                format_lsn(last),
                format_lsn(end)
            ));
        }
    }
    Ok((reader.files_read(), seg_size))
}

/// How one group of pages (a fork and a resource manager) compared.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub pages: u64,
    pub identical: u64,
    pub different: u64,
    /// `Expected::Written`: valid pages with an older LSN than their WAL's.
    pub behind: u64,
    /// Each differing page and the offset of its first differing byte.
    pub differences: Vec<(PageTag, usize)>,
}

/// The outcome of [`verify`].
#[derive(Debug, Default)]
pub struct Report {
    /// The server that replayed ("PostgreSQL 15.20 (Debian ...), /usr/lib/.../postgres").
    pub server: String,
    pub records: usize,
    pub blocks: usize,
    /// Per (fork, resource manager of the block's last record).
    pub groups: BTreeMap<(u8, &'static str), Tally>,
    /// Blocks with no starting point: no initializing record, none in BASE.
    pub unstartable: Vec<PageTag>,
    /// Blocks absent from EXPECTED: their relation was dropped or truncated.
    pub gone: u64,
    /// Requests the pool failed.
    pub failures: Vec<(PageTag, String)>,
    /// Pages answered from a full-page image without a process, and
    /// requests started from one.
    pub fast_path_pages: u64,
    pub image_starts: u64,
    pub elapsed: Duration,
    /// Where the time went ([`Breakdown`]).
    pub breakdown: Breakdown,
    /// Records routed to visibility-map pages without a block reference to
    /// them, per record type ("Heap/UPDATE"): uses, and distinct pages.
    pub vm_side_effects: BTreeMap<String, (u64, u64)>,
    /// SLRU pages and relation maps, rebuilt and compared.
    pub slru: SlruReport,
    /// `Expected::Written`: every block compared, and each page that is
    /// not what its WAL makes it.
    pub compared: HashSet<PageTag>,
    pub damaged: BTreeMap<PageTag, crate::check::Damage>,
}

impl Report {
    /// Main, visibility-map and init forks, SLRU pages and relation maps:
    /// the pages the final line counts. Free-space-map pages are not
    /// WAL-logged (docs/cli.md, "Pages that legitimately differ").
    pub fn counted(&self) -> Tally {
        let (pages, identical, different) = self.slru.totals();
        let mut t = Tally {
            pages,
            identical,
            different,
            ..Tally::default()
        };
        for ((fork, _), g) in &self.groups {
            if *fork != FSM_FORKNUM {
                t.pages += g.pages;
                t.identical += g.identical;
                t.different += g.different;
            }
        }
        t
    }
}

/// Where `verify`'s time went, phase by phase (wall clock), and what the
/// rebuild's workers spent waiting on the pool against comparing.
#[derive(Clone, Debug, Default)]
pub struct Breakdown {
    /// Bytes of WAL read (from the first record's start to the last's end).
    pub wal_bytes: u64,
    /// Records read.
    pub records: usize,
    /// Blocks rebuilt (or found removed).
    pub pages: usize,
    /// Reading the segments, checking CRCs and links, reassembling records
    /// (the reader thread's busy time).
    pub reading: Duration,
    /// Decoding each record, routing it to its pages and planning each
    /// page's request (the planner's busy time).
    pub planning: Duration,
    /// From the start of reading until every page's plan was ready (wall
    /// clock: the reading and planning above overlap, on two threads).
    pub wal_wall: Duration,
    /// The rebuild through the pool, comparing included (wall clock).
    pub rebuilding: Duration,
    /// The whole run (control files and starting the pool included).
    pub total: Duration,
    /// Beside the rebuild: reading BASE pages, checking and submitting the
    /// requests (one thread's busy time), and reading EXPECTED pages and
    /// comparing (another's).
    pub submitting: Duration,
    pub comparing: Duration,
}

impl fmt::Display for Breakdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: Duration| d.as_secs_f64();
        let total = secs(self.total).max(1e-9);
        let share = |d: Duration| 100.0 * secs(d) / total;
        let per_byte = |d: Duration| secs(d) * 1e9 / self.wal_bytes.max(1) as f64;
        let other = self.total.saturating_sub(self.wal_wall + self.rebuilding);
        writeln!(
            f,
            "time: {:.3} s for {:.1} MB of WAL, {} records ({:.0} records/s, {:.0} MB/s)",
            total,
            self.wal_bytes as f64 / 1e6,
            self.records,
            self.records as f64 / total,
            self.wal_bytes as f64 / 1e6 / total
        )?;
        let row = |f: &mut fmt::Formatter<'_>, what: &str, d: Duration, note: String| {
            writeln!(
                f,
                "  {what:<34} {:>7.3} s {:>4.0}%  {note}",
                secs(d),
                share(d)
            )
        };
        row(
            f,
            "reading (segments, CRCs, records)",
            self.reading,
            format!("{:.2} ns/byte, reader thread", per_byte(self.reading)),
        )?;
        row(
            f,
            "planning (decode, route, plan)",
            self.planning,
            format!("{:.2} ns/byte, beside the reading", per_byte(self.planning)),
        )?;
        row(
            f,
            "WAL path, until every plan was ready",
            self.wal_wall,
            format!("{:.2} ns/byte of wall time", per_byte(self.wal_wall)),
        )?;
        row(
            f,
            "rebuilding (every page, compared)",
            self.rebuilding,
            format!(
                "{:.0} pages/s; the processes and, beside them:",
                self.pages as f64 / secs(self.rebuilding).max(1e-9)
            ),
        )?;
        row(
            f,
            "  submitting (BASE pages, checks)",
            self.submitting,
            "one thread: each page's start read, its request checked and queued".to_string(),
        )?;
        row(
            f,
            "  comparing (EXPECTED pages)",
            self.comparing,
            "one thread: each answer read back from EXPECTED and compared".to_string(),
        )?;
        write!(
            f,
            "  {:<34} {:>7.3} s {:>4.0}%  control files; the pool's start when longer than reading",
            "other",
            secs(other),
            share(other)
        )
    }
}

const FORK_NAMES: [&str; 4] = ["main", "fsm", "vm", "init"];

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "replayed by {}", self.server)?;
        writeln!(
            f,
            "{} WAL records touched {} blocks; rebuilt in {:.2} s ({} from a full-page image \
             without a process, {} started from one)",
            self.records,
            self.blocks,
            self.elapsed.as_secs_f64(),
            self.fast_path_pages,
            self.image_starts
        )?;
        writeln!(
            f,
            "{:<6} {:<13} {:>8} {:>10} {:>10}",
            "fork", "rmgr", "pages", "identical", "different"
        )?;
        for side_effect_forks in [false, true] {
            for ((fork, rmgr), g) in &self.groups {
                let side = *fork == FSM_FORKNUM;
                if side != side_effect_forks {
                    continue;
                }
                writeln!(
                    f,
                    "{:<6} {:<13} {:>8} {:>10} {:>10}{}",
                    FORK_NAMES[*fork as usize],
                    rmgr,
                    g.pages,
                    g.identical,
                    g.different,
                    if side {
                        "   (not counted below: not WAL-logged, docs/cli.md)"
                    } else {
                        ""
                    }
                )?;
                for (tag, off) in g.differences.iter().take(10) {
                    writeln!(f, "       different: {tag}, first at byte {off}")?;
                }
            }
        }
        write!(f, "{}", self.slru)?;
        if self.gone > 0 {
            writeln!(
                f,
                "not in EXPECTED (relation dropped or truncated later): {} pages",
                self.gone
            )?;
        }
        if !self.vm_side_effects.is_empty() {
            let list: Vec<String> = self
                .vm_side_effects
                .iter()
                .map(|(name, (uses, pages))| format!("{name} {uses} ({pages} pages)"))
                .collect();
            writeln!(
                f,
                "routed to visibility-map pages without a block reference: {}",
                list.join(", ")
            )?;
        }
        for tag in self.unstartable.iter().take(10) {
            writeln!(
                f,
                "no starting point (no initializing record, not in BASE): {tag}"
            )?;
        }
        for (tag, e) in self.failures.iter().take(10) {
            writeln!(f, "FAILED {tag}: {e}")?;
        }
        writeln!(f, "{}", self.breakdown)?;
        let c = self.counted();
        write!(
            f,
            "verified: {} pages, {} identical, {} different",
            c.pages, c.identical, c.different
        )
    }
}

/// What EXPECTED is, and so how a rebuilt page is compared with its page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Expected {
    /// PostgreSQL's recovery of the same WAL onto BASE (`walredo verify`):
    /// byte for byte.
    #[default]
    Recovered,
    /// A cluster's own data directory, as its server wrote it (`walredo
    /// check`): the same LSN and the same page once what redo does not
    /// reproduce is masked (`walredo::pg::mask`); a page that is not is
    /// behind its WAL or different ([`crate::check`]). Free-space-map pages
    /// (not WAL-logged) are not compared.
    Written,
}

#[derive(Clone)]
pub struct VerifyOptions {
    pub base: PathBuf,
    pub wal: PathBuf,
    /// Directories looked in after `wal` for the segments it lacks (plain
    /// or compressed: `walredo::wal::segment_file`).
    pub archives: Vec<PathBuf>,
    /// A restore_command fetching the segments no directory has
    /// (`walredo::wal::restore`), as PostgreSQL runs it.
    pub restore_command: Option<String>,
    /// The timeline to follow (None: the newest found).
    pub timeline: Option<u32>,
    pub expected: PathBuf,
    /// What EXPECTED is.
    pub expected_is: Expected,
    pub processes: usize,
    /// Replay records that start before this LSN (default: all).
    pub end: Option<u64>,
    /// The pool's configuration, apart from what BASE dictates.
    pub config: Config,
}

/// Rebuild the final version of every block referenced after BASE's
/// checkpoint and compare it with EXPECTED. `progress(done, total)` is called
/// as blocks finish.
pub fn verify(
    opts: &VerifyOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Report, String> {
    let begun = Instant::now();
    // A base backup in tar format is unpacked first, and read from there.
    let unpacked = unpack_tar_backup(&opts.base)?;
    let with_unpacked;
    let opts = match &unpacked {
        Some(dir) => {
            with_unpacked = VerifyOptions {
                base: dir.0.clone(),
                ..opts.clone()
            };
            &with_unpacked
        }
        None => opts,
    };
    let base = control_info(&opts.base, &opts.config)?;
    if !base.cleanly_shut_down && base.backup_label.is_none() {
        return Err(format!(
            "BASE {} was not cleanly shut down (state {:?}) and is not a base backup (no \
             backup_label): stop its server cleanly first, or give a pg_basebackup directory",
            opts.base.display(),
            base.state
        ));
    }
    let expected = control_info(&opts.expected, &opts.config)?;
    if expected.pg_version != base.pg_version {
        return Err(format!(
            "BASE is PostgreSQL {}, EXPECTED PostgreSQL {}: they must be of one version",
            base.pg_version, expected.pg_version
        ));
    }
    let config = Config {
        processes: opts.processes,
        data_checksums: base.data_checksums,
        wal_log_hints: base.wal_log_hints,
        queue_depth: rebuild::REQUESTS_OUT_PER_PROCESS * opts.processes,
        ..base.config_for(&opts.config)?
    };
    // Three things at once: a thread reads the WAL (CRCs, reassembly) and
    // hands records over in batches through a bounded channel; this thread
    // decodes each once, routes it to its pages and keeps only where it is
    // (the batch is then dropped: memory holds no record); another starts
    // the pool. The rebuild needs every page's last record, so it starts
    // when the reading ends, and reads each record back from the segments,
    // mapped.
    // Segments the restore command fetches stay until the rebuild has
    // read its records back from them.
    let cache = ScratchDir::new("walredo-verify")?;
    let wal_dirs = &WalDirs::of(opts, &cache.0)?;
    let wal_started = Instant::now();
    let mut slru = SlruReplay::new(
        opts.base.clone(),
        SlruFormat::of_version(base.pg_version),
        base.commit_ts,
    );
    let (wal, pool) = std::thread::scope(|s| {
        let pool = s.spawn(|| start_pool(&config, &base));
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(BATCHES_IN_FLIGHT);
        // Batches come back to the reader once planned, to be filled again.
        let (give_back, given_back) = std::sync::mpsc::sync_channel::<Batch>(BATCHES_IN_FLIGHT + 1);
        let base = &base;
        let reader = s.spawn(move || {
            let started = Instant::now();
            let mut waited = Duration::ZERO;
            let mut batch = Batch::default();
            let mut result = read_wal_from(base, wal_dirs, opts.end, |start, end, data| {
                batch.push(start, end, data);
                if batch.records.len() == BATCH {
                    let sent = Instant::now();
                    let next = given_back.try_recv().unwrap_or_default();
                    tx.send(std::mem::replace(&mut batch, next))
                        .map_err(|_| "the planner stopped".to_string())?;
                    waited += sent.elapsed();
                }
                Ok(())
            });
            if result.is_ok() && !batch.records.is_empty() && tx.send(batch).is_err() {
                result = Err("the planner stopped".to_string());
            }
            (result, started.elapsed().saturating_sub(waited))
        });
        let planned = plan(
            rx,
            &give_back,
            RecordFormat::of_version(base.pg_version),
            &mut slru,
        );
        let (read, reading) = reader.join().expect("the WAL reader panicked");
        let pool = pool.join().expect("starting the pool panicked");
        // A reading error (the WAL itself) before a decoding one, as when
        // the whole range was read first.
        (
            read.and_then(|files| planned.map(|p| (p, files, reading))),
            pool,
        )
    });
    let ((records, blocks, planning), (files, seg_size), reading) = wal?;
    let wal_wall = wal_started.elapsed();
    let pool = pool?;
    let wal = MappedWal::map(files, seg_size).map_err(|e| format!("cannot map the WAL: {e}"))?;
    let started = Instant::now();
    let work: Vec<(&PageTag, &Vec<Use>)> = blocks.iter().collect();
    let mut report = Report {
        server: base.server.to_string(),
        records: records.len(),
        blocks: blocks.len(),
        ..Report::default()
    };
    let wal = rebuild::Wal {
        map: &wal,
        records: &records,
    };
    let spent = rebuild::rebuild(opts, &base, &pool, &wal, &work, &mut report, progress)
        .map_err(|e| format!("{e} (the server: {})", base.server))?;
    report.elapsed = started.elapsed();
    report.breakdown = Breakdown {
        wal_bytes: match (records.first(), records.last()) {
            (Some(first), Some(last)) => last.end_lsn - first.at.start_lsn,
            _ => 0,
        },
        records: records.len(),
        pages: work.len(),
        reading,
        planning,
        wal_wall,
        rebuilding: report.elapsed,
        total: begun.elapsed(),
        submitting: spent.submitting,
        comparing: spent.comparing,
    };
    report.vm_side_effects = side_effect_counts(&records, &blocks);
    report.slru = slru::compare(&slru, &opts.expected, &expected.state);
    let stats = pool.stats();
    report.fast_path_pages = stats.fast_path_pages;
    report.image_starts = stats.image_starts;
    Ok(report)
}

/// A base backup in `pg_basebackup`'s tar format (`base.tar`, or
/// compressed: `base.tar.gz`, `.zst`, `.lz4`), unpacked with `tar` into a
/// scratch directory; None for a data directory (it has a `PG_VERSION`).
/// Tablespaces' own tar files are not read.
fn unpack_tar_backup(dir: &Path) -> Result<Option<ScratchDir>, String> {
    if dir.join("PG_VERSION").exists() {
        return Ok(None);
    }
    let Some(tar) = ["base.tar", "base.tar.gz", "base.tar.zst", "base.tar.lz4"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
    else {
        return Ok(None);
    };
    let scratch = ScratchDir::new("walredo-base")?;
    let mut input = walredo::wal::segment_file::decompressing_reader(&tar)
        .map_err(|e| format!("cannot read {}: {e}", tar.display()))?;
    let mut child = std::process::Command::new("tar")
        .arg("-x")
        .arg("-f")
        .arg("-")
        .arg("-C")
        .arg(&scratch.0)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run tar to unpack {}: {e}", tar.display()))?;
    let copied = std::io::copy(&mut input, child.stdin.as_mut().expect("piped"));
    drop(child.stdin.take());
    let out = child
        .wait_with_output()
        .map_err(|e| format!("tar unpacking {}: {e}", tar.display()))?;
    if let Err(e) = copied {
        return Err(format!("cannot unpack {}: {e}", tar.display()));
    }
    if !out.status.success() {
        return Err(format!(
            "tar could not unpack {}: {}",
            tar.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Some(scratch))
}

/// A private directory under the system's temporary directory, removed
/// with everything in it when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(prefix: &str) -> Result<ScratchDir, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot make a scratch directory {}: {e}", dir.display()))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Records per batch from the WAL reader to the planner, and batches in
/// flight: at most 8 x 2048 records (a few MB) wait between the two; large
/// batches, so that the two threads seldom wake each other.
const BATCH: usize = 2048;
const BATCHES_IN_FLIGHT: usize = 8;

/// What the planner made of the WAL: where every record is (its bytes are
/// read back from the segments), every page with its uses, and the time it
/// was busy.
type Planned = (Vec<Placed>, BTreeMap<PageTag, Vec<Use>>, Duration);

/// A record as the rebuild needs it once read: where it is, where it ends,
/// and what it is (for the report). 24 bytes, whatever the record's size.
#[derive(Clone, Copy, Debug)]
pub struct Placed {
    pub at: RecordAt,
    pub end_lsn: u64,
    pub rmid: u8,
    pub info: u8,
}

/// Records as the reader hands them to the planner: their bytes one after
/// the other in one buffer, and each one's start, end and offset there.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    records: Vec<(u64, u64, usize)>,
}

impl Batch {
    fn push(&mut self, start: u64, end: u64, data: &[u8]) {
        self.records.push((start, end, self.bytes.len()));
        self.bytes.extend_from_slice(data);
    }

    /// Each record: start, end, bytes.
    fn iter(&self) -> impl Iterator<Item = (u64, u64, &[u8])> {
        let ends = self
            .records
            .iter()
            .skip(1)
            .map(|r| r.2)
            .chain([self.bytes.len()]);
        self.records
            .iter()
            .zip(ends)
            .map(|(&(start, end, from), to)| (start, end, &self.bytes[from..to]))
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
    }
}

/// Decode each record of `batches` once (its CRC was checked by the reader)
/// and route it to its pages; give each batch back, emptied. After an error
/// the rest is only drained, so that the reader's own error, earlier in the
/// WAL's order or not, is seen.
fn plan(
    batches: Receiver<Batch>,
    give_back: &std::sync::mpsc::SyncSender<Batch>,
    format: RecordFormat,
    slru: &mut SlruReplay,
) -> Result<Planned, String> {
    let mut busy = Duration::ZERO;
    let mut records = Vec::new();
    let mut uses = BlockUses::default();
    let mut failed = None;
    for batch in batches {
        if failed.is_some() {
            continue;
        }
        let started = Instant::now();
        for (start_lsn, end_lsn, data) in batch.iter() {
            let i = records.len();
            let routed = record::decode_unchecked_crc_as(data, format)
                .map_err(|e| e.to_string())
                .and_then(|decoded| {
                    uses.add(i, &decoded).map_err(|e| e.to_string())?;
                    slru.add(&decoded, end_lsn)
                })
                .map(|()| (xl_rmid(data), xl_info(data)));
            let (rmid, info) = match routed {
                Ok(what) => what,
                Err(e) => {
                    failed = Some(format!("WAL record at {}: {e}", format_lsn(start_lsn)));
                    break;
                }
            };
            records.push(Placed {
                at: RecordAt {
                    start_lsn,
                    len: data.len() as u32,
                },
                end_lsn,
                rmid,
                info,
            });
        }
        busy += started.elapsed();
        let mut batch = batch;
        batch.clear();
        let _ = give_back.try_send(batch);
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let started = Instant::now();
    let blocks = uses.finish();
    Ok((records, blocks, busy + started.elapsed()))
}

/// Start the pool, and one process in it before the work is shared out: a
/// pool that cannot start any (an extension the loader refuses) ends the
/// run now, with the reason, instead of failing every page by its deadline.
fn start_pool(config: &Config, base: &ControlInfo) -> Result<Pool, String> {
    let pool = Pool::new(config).map_err(|e| e.to_string())?;
    pool.ping()
        .map_err(|e| format!("{e} (the server: {})", base.server))?;
    Ok(pool)
}

/// Side-effect uses of visibility-map pages, per record type: (uses, pages).
fn side_effect_counts(
    records: &[Placed],
    blocks: &BTreeMap<PageTag, Vec<Use>>,
) -> BTreeMap<String, (u64, u64)> {
    let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for uses in blocks.values() {
        let mut seen = std::collections::BTreeSet::new();
        for u in uses.iter().filter(|u| u.side_effect) {
            let r = &records[u.record];
            let name = format!(
                "{}/{}",
                rmgr_name(r.rmid),
                record_type_name(r.rmid, r.info).unwrap_or("UNKNOWN")
            );
            let c = counts.entry(name.clone()).or_default();
            c.0 += 1;
            if seen.insert(name) {
                c.1 += 1;
            }
        }
    }
    counts
}

/// The page to start from for a block BASE lacks and no record initializes:
/// a zero page for a visibility-map page, which PostgreSQL's recovery extends
/// with zero pages too ([`pages::starts_as_zero_page`]); None otherwise.
pub(crate) fn zero_start(tag: &PageTag) -> Option<Box<[u8; PAGE_SIZE]>> {
    pages::starts_as_zero_page(tag).then(|| Box::new([0u8; PAGE_SIZE]))
}

/// Rebuild one page as of `lsn` (after every record that ends at or before
/// it; default: the end of the WAL), starting from BASE.
pub fn page_as_of(
    base_dir: &Path,
    wal: &Path,
    tag: &PageTag,
    lsn: Option<u64>,
    config: &Config,
) -> Result<Box<[u8; PAGE_SIZE]>, String> {
    page_as_of_in(base_dir, &WalSpec::dir(wal), tag, lsn, config)
}

/// [`page_as_of`] with the WAL where `wal` says (archives of plain or
/// compressed segments, a restore command, a timeline); BASE may be a base
/// backup, plain or tar (unpacked first).
pub fn page_as_of_in(
    base_dir: &Path,
    wal: &WalSpec,
    tag: &PageTag,
    lsn: Option<u64>,
    config: &Config,
) -> Result<Box<[u8; PAGE_SIZE]>, String> {
    let unpacked = unpack_tar_backup(base_dir)?;
    let base_dir = unpacked.as_ref().map_or(base_dir, |d| d.0.as_path());
    let cache = ScratchDir::new("walredo-page")?;
    let wal_dirs = WalDirs::new(wal, &cache.0)?;
    let base = control_info(base_dir, config)?;
    // BASE's pages may be from any time after its start: none is the page
    // as of an earlier LSN.
    let base_start = base
        .backup_label
        .as_ref()
        .map_or(base.redo_lsn, |l| l.start_lsn);
    if let Some(lsn) = lsn.filter(|&lsn| lsn < base_start) {
        return Err(format!(
            "BASE starts at {} (its {}), after {}: give a base taken before that LSN",
            format_lsn(base_start),
            if base.backup_label.is_some() {
                "backup_label's START WAL LOCATION"
            } else {
                "checkpoint's redo point"
            },
            format_lsn(lsn)
        ));
    }
    let records = read_wal_records(&base, &wal_dirs, None)?;
    let format = RecordFormat::of_version(base.pg_version);
    let touching: Vec<Use> = block_uses_as(records.iter().map(|r| &r.data[..]), format)
        .map_err(|(i, e)| format!("WAL record at {}: {e}", format_lsn(records[i].start_lsn)))?
        .remove(tag)
        .unwrap_or_default()
        .into_iter()
        .filter(|u| lsn.is_none_or(|lsn| records[u.record].end_lsn <= lsn))
        .collect();
    let base_page = read_page(base_dir, tag).map_err(|e| e.to_string())?;
    if touching.is_empty() {
        return base_page.ok_or_else(|| {
            format!("{tag} is neither in BASE nor touched by the WAL up to that LSN")
        });
    }
    let run = last_run(&touching);
    let as_of = lsn.unwrap_or_else(|| records.last().map_or(0, |r| r.end_lsn));
    if let Some(e) = removed_by(tag, as_of, &records, run, base.pg_version) {
        return Err(e.to_string());
    }
    let start = if run[0].initializes {
        None
    } else {
        base_page.or_else(|| zero_start(tag))
    };
    if start.is_none() && !run[0].initializes {
        return Err(format!("{tag} is not in BASE and no record initializes it"));
    }
    let config = Config {
        processes: 1,
        data_checksums: base.data_checksums,
        wal_log_hints: base.wal_log_hints,
        ..base.config_for(config)?
    };
    let pool = Pool::new(&config).map_err(|e| e.to_string())?;
    let mut page = pool
        .redo(tag, start.as_deref(), &record_refs(&records, run))
        .map_err(|e| e.to_string())?;
    if base.data_checksums {
        stamp_checksum(&mut page, tag.blkno);
    }
    Ok(page)
}
