//! `verify`'s rebuild: every page's request submitted to the pool without
//! waiting for it, and each answer compared with EXPECTED as it comes back.
//!
//! - This thread reads each page's start from BASE, its records from the
//!   mapped segments, and submits its request (`Pool::submit` copies it). The pool's workers write up to a batch of
//!   queued requests to a process at once, so a process always has the next
//!   request waiting in its pipe and no caller thread is woken per page.
//! - Each answer goes through a channel to one comparing thread, which
//!   reads the page from EXPECTED and keeps the whole tally: the report has
//!   one writer, no lock.
//! - At most `depth` requests are out at a time (tokens the comparer gives
//!   back): the queue never refuses one, and memory stays bounded.
//! - Pages with the most records go first: a page with tens of thousands
//!   of records (a busy table's visibility-map page, a small hot table's
//!   page) cannot be split between processes, so it is replayed while the
//!   other process works through the rest, not after everything else.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::time::{Duration, Instant};

use walredo::datadir::PageFiles;
use walredo::pg::page::Page;
use walredo::pg::record::RecordRef;
use walredo::pg::rmgr::rmgr_name;
use walredo::pool::Pool;
use walredo::tag::PageTag;
use walredo::wal::checksum::stamp_checksum;
use walredo::wal::mapped::{MappedWal, RecordAt};
use walredo::wal::uses::{last_run, Use};
use walredo::{Error, PAGE_SIZE};

use super::{zero_start, ControlInfo, Expected, Placed, Report, VerifyOptions};

/// Requests submitted and not yet answered, per process (the pool's queue
/// holds as many): two of the pool's batches (32), so that a process finds
/// the next batch queued when it ends one.
pub const REQUESTS_OUT_PER_PROCESS: usize = 64;

/// What became of one block, for the comparer.
enum Outcome {
    /// Rebuilt (or not: the pool's error), its last record of `rmgr`.
    Rebuilt {
        tag: PageTag,
        rmgr: &'static str,
        page: Result<Box<Page>, Error>,
    },
    /// The WAL removed the block last: EXPECTED must not have it.
    Removed(PageTag),
    /// No starting point: no initializing record, not in BASE.
    Unstartable(PageTag),
    /// Its start could not be read, or the pool refused the request.
    Failed(PageTag, String),
}

/// Where the rebuild's time went, besides its wall clock: this thread's
/// time reading BASE and submitting, and the comparer's time.
#[derive(Default)]
pub struct Spent {
    pub submitting: Duration,
    pub comparing: Duration,
}

/// Rebuild every block of `blocks` and tally it into `report`. Err only when
/// no process can be started (the run's failure: nothing could be rebuilt).
pub fn rebuild(
    opts: &VerifyOptions,
    base: &ControlInfo,
    pool: &Pool,
    wal: &Wal<'_>,
    blocks: &[(&PageTag, &Vec<Use>)],
    report: &mut Report,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Spent, Error> {
    let depth = REQUESTS_OUT_PER_PROCESS * opts.processes;
    let mut order: Vec<(&PageTag, &[Use])> =
        blocks.iter().map(|(t, u)| (*t, last_run(u))).collect();
    order.sort_by_key(|(_, run)| std::cmp::Reverse(run.len()));

    let base_files = PageFiles::new(&opts.base);
    let expected_files = PageFiles::new(&opts.expected);
    let (outcomes, arrived) = channel::<Outcome>();
    let (give_back, tokens) = sync_channel::<()>(depth);
    for _ in 0..depth {
        give_back.send(()).expect("room for every token");
    }
    // Set when no process can be started: the rest is not submitted.
    let stop = AtomicBool::new(false);
    let submitting_ns = AtomicU64::new(0);
    let total = order.len();

    let stop = &stop;
    let expected_files = &expected_files;
    let (spent_comparing, stopped_by) = std::thread::scope(|s| {
        // The comparer owns the tokens' sender: should it end early, this
        // thread's wait for a token ends too.
        let comparer = s.spawn(move || {
            compare_all(
                arrived,
                give_back,
                expected_files,
                opts.expected_is,
                base.data_checksums,
                total,
                report,
                stop,
                progress,
            )
        });
        let mut busy = Duration::ZERO;
        let mut scratch = Vec::new();
        for (tag, run) in &order {
            if stop.load(Ordering::Relaxed) || tokens.recv().is_err() {
                break;
            }
            let started = Instant::now();
            let outcome = submit(pool, &base_files, wal, &mut scratch, tag, run, &outcomes);
            if let Some(outcome) = outcome {
                // Answered here: its token is given back by the comparer.
                let _ = outcomes.send(outcome);
            }
            busy += started.elapsed();
        }
        submitting_ns.store(busy.as_nanos() as u64, Ordering::Relaxed);
        drop(outcomes);
        comparer.join().expect("the comparer panicked")
    });
    if let Some(e) = stopped_by {
        return Err(e);
    }
    Ok(Spent {
        submitting: Duration::from_nanos(submitting_ns.load(Ordering::Relaxed)),
        comparing: spent_comparing,
    })
}

/// The WAL as the rebuild reads it: where each record is, and the segments
/// to read it back from.
pub struct Wal<'a> {
    pub map: &'a MappedWal,
    pub records: &'a [Placed],
}

/// Submit one block's request (its records that cross WAL pages gathered
/// into `scratch`); an outcome known without the pool instead.
fn submit(
    pool: &Pool,
    base_files: &PageFiles,
    wal: &Wal<'_>,
    scratch: &mut Vec<u8>,
    tag: &PageTag,
    run: &[Use],
    outcomes: &Sender<Outcome>,
) -> Option<Outcome> {
    if run[0].removal.is_some() {
        // Removed by the WAL and not made again by an initializing record.
        return Some(if run.len() == 1 {
            Outcome::Removed(*tag)
        } else {
            Outcome::Unstartable(*tag)
        });
    }
    let start = if run[0].initializes {
        None
    } else {
        match base_files.read(tag) {
            Ok(page) => match page.or_else(|| zero_start(tag)) {
                Some(page) => Some(page),
                None => return Some(Outcome::Unstartable(*tag)),
            },
            Err(e) => return Some(Outcome::Failed(*tag, e.to_string())),
        }
    };
    let rmgr = rmgr_name(wal.records[run[run.len() - 1].record].rmid);
    // Removals are never sent (see record_refs).
    let sent: Vec<&Placed> = run
        .iter()
        .filter(|u| u.removal.is_none())
        .map(|u| &wal.records[u.record])
        .collect();
    let at: Vec<RecordAt> = sent.iter().map(|p| p.at).collect();
    let bytes = match wal.map.gather(&at, scratch) {
        Ok(bytes) => bytes,
        Err(e) => return Some(Outcome::Failed(*tag, e.to_string())),
    };
    let refs: Vec<RecordRef<'_>> = sent
        .iter()
        .zip(bytes)
        .map(|(p, data)| RecordRef {
            end_lsn: p.end_lsn,
            data,
        })
        .collect();
    let (tag_copy, sender) = (*tag, outcomes.clone());
    let answered = Box::new(move |page: Result<&Page, &Error>| {
        let page = page.map(|p| Box::new(*p)).map_err(Error::clone);
        let _ = sender.send(Outcome::Rebuilt {
            tag: tag_copy,
            rmgr,
            page,
        });
    });
    match pool.submit(tag, start.as_deref(), &refs, answered) {
        Ok(()) => None,
        Err(e @ Error::SpawnFailed(_)) => Some(Outcome::Rebuilt {
            tag: *tag,
            rmgr,
            page: Err(e),
        }),
        Err(e) => Some(Outcome::Failed(*tag, e.to_string())),
    }
}

/// The comparer: tally each outcome into `report` as it arrives, give its
/// token back. Returns its busy time, and the error that stopped the run.
#[allow(clippy::too_many_arguments)]
fn compare_all(
    arrived: Receiver<Outcome>,
    give_back: SyncSender<()>,
    expected_files: &PageFiles,
    expected_is: Expected,
    data_checksums: bool,
    total: usize,
    report: &mut Report,
    stop: &AtomicBool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> (Duration, Option<Error>) {
    let mut busy = Duration::ZERO;
    let mut stopped_by = None;
    let mut done = 0;
    for outcome in arrived {
        let started = Instant::now();
        match outcome {
            Outcome::Removed(tag) => match expected_files.read(&tag) {
                Ok(None) => report.gone += 1,
                Ok(Some(_)) => report.failures.push((
                    tag,
                    "the WAL removed this block, but EXPECTED has it".to_string(),
                )),
                Err(e) => report.failures.push((tag, e.to_string())),
            },
            Outcome::Unstartable(tag) => report.unstartable.push(tag),
            Outcome::Failed(tag, e) => report.failures.push((tag, e)),
            Outcome::Rebuilt {
                page: Err(e @ Error::SpawnFailed(_)),
                ..
            } => {
                // No process can be started any more: nothing left can be
                // rebuilt, so the rest is not submitted.
                stop.store(true, Ordering::Relaxed);
                stopped_by.get_or_insert(e);
            }
            Outcome::Rebuilt {
                tag, page: Err(e), ..
            } => report.failures.push((tag, e.to_string())),
            Outcome::Rebuilt {
                tag,
                rmgr,
                page: Ok(mut page),
            } => {
                if data_checksums {
                    stamp_checksum(&mut page, tag.blkno);
                }
                let expected = expected_files.read(&tag);
                match expected_is {
                    Expected::Recovered => compare(report, &tag, rmgr, &page, expected),
                    Expected::Written => {
                        crate::check::compare(report, &tag, rmgr, page, expected, data_checksums)
                    }
                }
            }
        }
        let _ = give_back.try_send(());
        done += 1;
        progress(done, total);
        busy += started.elapsed();
    }
    // The report's lists in the blocks' order, whatever order answers came.
    report.unstartable.sort();
    report.failures.sort_by_key(|(tag, _)| *tag);
    for g in report.groups.values_mut() {
        g.differences.sort();
    }
    (busy, stopped_by)
}

/// Compare a rebuilt page with EXPECTED's and count it.
fn compare(
    report: &mut Report,
    tag: &PageTag,
    rmgr: &'static str,
    page: &Page,
    expected: std::io::Result<Option<Box<Page>>>,
) {
    match expected {
        Err(e) => report.failures.push((*tag, e.to_string())),
        Ok(None) => report.gone += 1,
        Ok(Some(expected)) => {
            let g = report.groups.entry((tag.forknum, rmgr)).or_default();
            g.pages += 1;
            // Whole-page equality first (memcmp); the offset only for a
            // page that differs.
            let first_difference = (expected[..] != page[..])
                .then(|| (0..PAGE_SIZE).find(|&i| expected[i] != page[i]))
                .flatten();
            match first_difference {
                None => g.identical += 1,
                Some(off) => {
                    g.different += 1;
                    g.differences.push((*tag, off));
                }
            }
        }
    }
}
