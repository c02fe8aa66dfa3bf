//! `walredo`: rebuild PostgreSQL pages (14 to 18) from WAL with PostgreSQL's own redo.
//!
//!   walredo [--bindir DIR | --pg-config PATH] [--extension SO] verify
//!           --base DIR --wal DIR [--archive DIR ...] [--restore-command CMD]
//!           --expected DIR [--processes N] [--end LSN]
//!   walredo [--bindir DIR | --pg-config PATH] [--extension SO] page
//!           --base DIR --wal DIR [--archive DIR ...] [--restore-command CMD]
//!           --rel SPC/DB/REL [--fork F] --block N
//!           [--lsn X/Y] [--out FILE]
//!   walredo [...] check --data DIR --base DIR [--wal DIR ...] [--archive DIR ...]
//!           [--restore-command CMD] [--timeline N] [--processes N]
//!   walredo [...] repair --data DIR --base DIR [--wal DIR ...] [--archive DIR ...]
//!           [--restore-command CMD] [--timeline N]
//!           (--rel SPC/DB/REL [--fork F] --block N | --all-damaged)
//!
//! The server that replays: `--bindir`, else `--pg-config`, else `PG_CONFIG`
//! in the environment, else Debian's `/usr/lib/postgresql/N/bin` of the data
//! directory's version N, else the `pg_config` on PATH (`cli/src/server.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use walredo::tag::{PageTag, RelFileNode};
use walredo::wal::parse_lsn;
use walredo::Config;
use walredo_cli::check::{check, may_repair, saved_pages_dir, write_page, CheckOptions};
use walredo_cli::server::named_bindir;
use walredo_cli::verify::{page_as_of_in, verify, Expected, VerifyOptions, WalSpec};

#[derive(Parser)]
#[command(
    version,
    about = "Rebuild PostgreSQL pages (14 to 18) from WAL with PostgreSQL's own redo routines"
)]
struct Cli {
    /// The pg_walredo.so to load (default: the library directory of the
    /// base data directory's PostgreSQL version).
    #[arg(long, global = true)]
    extension: Option<PathBuf>,
    /// The server that replays: a directory with its postgres,
    /// pg_controldata and pg_config (default: --pg-config's).
    #[arg(long, global = true, conflicts_with = "pg_config")]
    bindir: Option<PathBuf>,
    /// The server that replays, named by its pg_config (default: $PG_CONFIG,
    /// else /usr/lib/postgresql/N/bin/pg_config for the data directory's
    /// version N, else pg_config on PATH).
    #[arg(long, global = true)]
    pg_config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Rebuild every page the WAL touched after BASE's checkpoint and compare
    /// it with EXPECTED, the cluster PostgreSQL's recovery of that WAL made.
    /// Exits non-zero when a page differs.
    Verify {
        /// Data directory of a cleanly stopped PostgreSQL cluster, or a base
        /// backup (pg_basebackup, plain or tar format: its backup_label says
        /// where replay starts); its PG_VERSION picks the server.
        #[arg(long)]
        base: PathBuf,
        /// Directory of WAL segments written after BASE was taken.
        #[arg(long)]
        wal: PathBuf,
        #[command(flatten)]
        more_wal: MoreWal,
        /// Data directory PostgreSQL produced by replaying that WAL onto a copy of BASE.
        #[arg(long)]
        expected: PathBuf,
        /// wal-redo processes to run (default: one per CPU).
        #[arg(long)]
        processes: Option<usize>,
        /// Replay only records that start before this LSN (e.g. the recovery target).
        #[arg(long, value_parser = lsn)]
        end: Option<u64>,
    },
    /// Show one page as it was at an LSN (default: at the end of the WAL):
    /// e.g. a row as it was before a bad UPDATE.
    Page {
        /// Data directory of a cleanly stopped PostgreSQL cluster (its PG_VERSION picks the server).
        #[arg(long)]
        base: PathBuf,
        /// Directory of WAL segments written after BASE was taken.
        #[arg(long)]
        wal: PathBuf,
        #[command(flatten)]
        more_wal: MoreWal,
        /// The relation file: tablespace/database/relfilenode, e.g. 1663/5/16384.
        #[arg(long, value_parser = rel)]
        rel: RelFileNode,
        #[arg(long, value_enum, default_value = "main")]
        fork: Fork,
        /// Block number.
        #[arg(long)]
        block: u32,
        /// The page after every record that ends at or before this LSN (X/Y).
        #[arg(long, value_parser = lsn)]
        lsn: Option<u64>,
        /// Write the raw 8192 bytes here instead of a hex dump on stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check every page of a stopped cluster against what its WAL since
    /// BASE makes it (and the pages that WAL did not change against BASE):
    /// each one that is behind its WAL (a lost write) or different
    /// (corruption) is listed. Exits 1 when any is.
    Check {
        #[command(flatten)]
        sources: Sources,
        /// wal-redo processes to run (default: one per CPU).
        #[arg(long)]
        processes: Option<usize>,
    },
    /// Rewrite damaged pages of a stopped cluster with what its WAL since
    /// BASE makes them, checksummed when it has data checksums; each old
    /// page is saved first in DATA.walredo-saved beside it.
    Repair {
        #[command(flatten)]
        sources: Sources,
        /// The relation file of the one block to rewrite: SPC/DB/REL.
        #[arg(long, value_parser = rel, required_unless_present = "all_damaged",
              conflicts_with = "all_damaged", requires = "block")]
        rel: Option<RelFileNode>,
        #[arg(long, value_enum, default_value = "main")]
        fork: Fork,
        #[arg(long)]
        block: Option<u32>,
        /// Every page `walredo check` finds damaged.
        #[arg(long)]
        all_damaged: bool,
        /// wal-redo processes to run (default: one per CPU).
        #[arg(long)]
        processes: Option<usize>,
    },
}

/// The sources `check` and `repair` read.
#[derive(clap::Args)]
struct Sources {
    /// Data directory of the cluster, stopped cleanly.
    #[arg(long)]
    data: PathBuf,
    /// A base backup of it (pg_basebackup, plain or tar; or a cleanly
    /// stopped copy) from before the WAL that is read.
    #[arg(long)]
    base: PathBuf,
    /// Directories of its WAL since the base, in order (DATA/pg_wal when
    /// none is given).
    #[arg(long = "wal")]
    wal: Vec<PathBuf>,
    #[command(flatten)]
    more_wal: MoreWal,
}

/// Where every command finds the WAL its --wal directories lack, and which
/// timeline it follows.
#[derive(clap::Args)]
struct MoreWal {
    /// Archive directories looked in after --wal, in order; their segments
    /// may be compressed (NAME.gz, .zst, .lz4).
    #[arg(long = "archive")]
    archives: Vec<PathBuf>,
    /// A restore_command, as PostgreSQL runs it (%f the file name, %p the
    /// path to write), fetching the segments no directory has.
    #[arg(long)]
    restore_command: Option<String>,
    /// The timeline to follow (default: the newest found).
    #[arg(long)]
    timeline: Option<u32>,
}

impl MoreWal {
    /// The WAL: `dirs`, then the archives, the restore command, the timeline.
    fn after(self, mut dirs: Vec<PathBuf>) -> WalSpec {
        dirs.extend(self.archives);
        WalSpec {
            dirs,
            restore_command: self.restore_command,
            timeline: self.timeline,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Fork {
    Main,
    Fsm,
    Vm,
    Init,
}

fn lsn(s: &str) -> Result<u64, String> {
    parse_lsn(s).ok_or_else(|| format!("{s:?} is not an LSN like 0/16B3748"))
}

fn rel(s: &str) -> Result<RelFileNode, String> {
    let parts: Vec<u32> = s.split('/').filter_map(|p| p.parse().ok()).collect();
    match parts[..] {
        [spcnode, dbnode, relnode] if s.split('/').count() == 3 => Ok(RelFileNode {
            spcnode,
            dbnode,
            relnode,
        }),
        _ => Err(format!(
            "{s:?} is not SPC/DB/REL (e.g. 1663/5/16384; see pg_relation_filepath())"
        )),
    }
}

/// verify reads the WAL's segments mapped (walredo::wal::mapped): one
/// truncated meanwhile faults. Say so, instead of dying without a word.
fn explain_sigbus() {
    extern "C" fn on_sigbus(_: libc::c_int) {
        const MSG: &[u8] = b"walredo verify: a WAL segment file shrank while it was being read \
(SIGBUS): was something truncating or rewriting the WAL directory?\n";
        // SAFETY: write and _exit are async-signal-safe; MSG is static.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::_exit(2);
        }
    }
    // SAFETY: a zeroed sigaction is valid; the handler only calls
    // async-signal-safe functions.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
    let pg_bindir = match named_bindir(
        cli.bindir.clone(),
        cli.pg_config.clone(),
        std::env::var_os("PG_CONFIG").map(PathBuf::from),
    ) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("walredo: {e}");
            return ExitCode::from(2);
        }
    };
    let config = Config {
        extension_path: cli.extension.clone(),
        pg_bindir,
        ..Config::default()
    };
    match cli.command {
        Command::Verify {
            base,
            wal,
            more_wal,
            expected,
            processes,
            end,
        } => {
            let opts = VerifyOptions {
                base,
                wal,
                archives: more_wal.archives,
                restore_command: more_wal.restore_command,
                timeline: more_wal.timeline,
                expected,
                expected_is: Expected::Recovered,
                processes: processes.unwrap_or(config.processes).max(1),
                end,
                config,
            };
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40}] {pos}/{len} pages {per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            let progress = |done: usize, total: usize| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            };
            explain_sigbus();
            let result = verify(&opts, &progress);
            bar.finish_and_clear();
            match result {
                Ok(report) => {
                    println!("{report}");
                    if report.counted().different > 0 || !report.failures.is_empty() {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("walredo verify: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Check { sources, processes } => {
            let opts = check_options(sources, processes, config);
            explain_sigbus();
            match check(&opts, &|_, _| {}) {
                Ok(report) => {
                    println!("{report}");
                    if report.clean() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("walredo check: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Repair {
            sources,
            rel,
            fork,
            block,
            all_damaged,
            processes,
        } => {
            let opts = check_options(sources, processes, config);
            explain_sigbus();
            match repair(
                &opts,
                rel.zip(block).map(|(rel, blkno)| PageTag {
                    rel,
                    forknum: fork as u8,
                    blkno,
                }),
                all_damaged,
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("walredo repair: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Page {
            base,
            wal,
            more_wal,
            rel,
            fork,
            block,
            lsn,
            out,
        } => {
            let tag = PageTag {
                rel,
                forknum: fork as u8,
                blkno: block,
            };
            let wal = more_wal.after(vec![wal]);
            match page_as_of_in(&base, &wal, &tag, lsn, &config) {
                Ok(page) => match out {
                    Some(path) => match std::fs::write(&path, &page[..]) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => {
                            eprintln!("walredo page: cannot write {}: {e}", path.display());
                            ExitCode::from(2)
                        }
                    },
                    None => {
                        print!("{}", hex_dump(&page[..]));
                        ExitCode::SUCCESS
                    }
                },
                Err(e) => {
                    eprintln!("walredo page: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn check_options(sources: Sources, processes: Option<usize>, config: Config) -> CheckOptions {
    let mut dirs = sources.wal;
    if dirs.is_empty() {
        dirs.push(sources.data.join("pg_wal"));
    }
    CheckOptions {
        data: sources.data,
        base: sources.base,
        wal: sources.more_wal.after(dirs),
        processes: processes.unwrap_or(config.processes).max(1),
        config,
    }
}

/// `walredo repair`: one block (rebuilt to the end of the WAL), or every
/// page `check` finds damaged. Prints each page written and where its old
/// copy went.
fn repair(opts: &CheckOptions, one: Option<PageTag>, all_damaged: bool) -> Result<(), String> {
    may_repair(&opts.data, &opts.config)?;
    let saved = saved_pages_dir(&opts.data);
    let pages: Vec<(PageTag, Box<walredo::pg::page::Page>)> = match one {
        Some(tag) => {
            let page = page_as_of_in(&opts.base, &opts.wal, &tag, None, &opts.config)?;
            vec![(tag, page)]
        }
        None => {
            debug_assert!(all_damaged);
            let report = check(opts, &|_, _| {})?;
            if !report.verify.failures.is_empty() {
                return Err(format!(
                    "{} pages could not be checked; nothing written:\n{report}",
                    report.verify.failures.len()
                ));
            }
            report
                .verify
                .damaged
                .into_iter()
                .map(|(tag, d)| (tag, d.good))
                .collect()
        }
    };
    for (tag, page) in &pages {
        let kept = write_page(&opts.data, &saved, tag, page)?;
        println!("repaired {tag} (the old page is in {})", kept.display());
    }
    println!("repaired: {} pages", pages.len());
    Ok(())
}

/// `xxd`-style lines; runs of identical lines collapse into "*".
fn hex_dump(data: &[u8]) -> String {
    let mut out = String::new();
    let mut previous: Option<&[u8]> = None;
    let mut skipping = false;
    for (i, line) in data.chunks(16).enumerate() {
        if previous == Some(line) {
            if !skipping {
                out.push_str("*\n");
                skipping = true;
            }
            continue;
        }
        skipping = false;
        previous = Some(line);
        let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        let text: String = line
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!("{:04x}: {:<47}  {text}\n", i * 16, hex.join(" ")));
    }
    out.push_str(&format!("{:04x}\n", data.len()));
    out
}
