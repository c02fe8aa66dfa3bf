//! `bench --inspect`: walredo_inspect's SQL functions in a real backend
//! (issue 25), each row beside PostgreSQL's archive recovery of the same WAL
//! measured in the same run, in turns.
//!
//! One throw-away cluster (a private copy of the installation with this
//! tree's extensions, testkit's `PrivateInstall`) runs pgbench (scale 1,
//! 2,000 transactions after a checkpoint). Then, in turns: PostgreSQL's
//! archive recovery of that WAL onto a fresh copy of the base taken before
//! it, and a new backend that calls
//! - `page_at_lsn` of pgbench_accounts blocks at the flush LSN (short
//!   histories: a full-page image and a record or two after it) and of
//!   pgbench_branches block 0 (a long one: every transaction updates its
//!   row): the new backend's first call (cold: its pool starts, its WAL
//!   index is built) and the calls after it (warm);
//! - the same after more WAL was written (the index extended to it);
//! - `page_history` of every block of pgbench_history, cold and warm.
//!
//! Calls are timed inside the backend (clock_timestamp around each call in
//! PL/pgSQL), so psql's round trip is not in them. With
//! `WALREDO_INSPECT_BEFORE=path` (another build's walredo_inspect.so) every
//! row is measured for that build too, in its own backends, in the same
//! turns: a before-and-after.

use std::path::{Path, PathBuf};
use std::time::Duration;

use walredo_testkit::cluster::{archive_recover, controldata, copy_tree, TempDir};
use walredo_testkit::install::{pg_dirs, PrivateInstall, Session};

use crate::median;

const SETTINGS: &[&str] = &[
    "autovacuum = off",
    "fsync = off",
    "max_wal_size = 8GB",
    "wal_keep_size = 8GB",
    "checkpoint_timeout = 1h",
];

/// The timing function: each call's milliseconds, inside the backend.
const TIMING_SQL: &str = r#"
CREATE FUNCTION SCHEMA.time_pages(rel regclass, blocks bigint[], lsn pg_lsn)
RETURNS SETOF float8 LANGUAGE plpgsql AS $$
DECLARE t timestamptz; p bytea; b bigint;
BEGIN
  FOREACH b IN ARRAY blocks LOOP
    t := clock_timestamp();
    p := SCHEMA.page_at_lsn(rel, b, lsn);
    RETURN NEXT extract(epoch FROM clock_timestamp() - t) * 1000;
  END LOOP;
END $$;
CREATE FUNCTION SCHEMA.time_history(rel regclass) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE t timestamptz; n bigint;
BEGIN
  t := clock_timestamp();
  SELECT count(*) INTO n FROM generate_series(0, pg_relation_size(rel) / 8192 - 1) b,
    SCHEMA.page_history(rel, b);
  RETURN extract(epoch FROM clock_timestamp() - t) * 1000;
END $$;
"#;

/// The before build's functions, in schema `before`, from its own module.
/// (Not loaded when made: a backend must load only one of the two modules.)
const BEFORE_SQL: &str = r#"
SET check_function_bodies = off;
CREATE SCHEMA before;
CREATE FUNCTION before.page_at_lsn(rel regclass, blkno bigint, lsn pg_lsn, fork text DEFAULT 'main')
RETURNS bytea AS '$libdir/walredo_inspect_before', 'page_at_lsn_rel' LANGUAGE C STRICT;
CREATE FUNCTION before.page_history(rel regclass, blkno bigint, fork text DEFAULT 'main',
  OUT start_lsn pg_lsn, OUT end_lsn pg_lsn, OUT rmgr text, OUT record_type text, OUT xid xid,
  OUT has_image boolean, OUT will_init boolean)
RETURNS SETOF record AS '$libdir/walredo_inspect_before', 'page_history' LANGUAGE C STRICT;
"#;

/// What one build's backend measured in one turn (milliseconds).
#[derive(Default)]
struct Turn {
    short_cold: f64,
    short_warm: Vec<f64>,
    long_cold: f64,
    long_warm: Vec<f64>,
    after_more_wal: Vec<f64>,
    history_cold: f64,
    history_warm: f64,
}

fn floats(out: &str) -> Vec<f64> {
    out.lines().map(|l| l.trim().parse().unwrap()).collect()
}

fn med(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn blocks(list: impl Iterator<Item = u32>) -> String {
    let v: Vec<String> = list.map(|b| b.to_string()).collect();
    format!("'{{{}}}'::bigint[]", v.join(","))
}

/// One build's turn: new backends, cold calls first.
fn measure(
    cluster: &walredo_testkit::cluster::Cluster,
    schema: &str,
    lsn: &str,
    accounts: u32,
    quick: bool,
) -> Turn {
    let warm_n = if quick { 20 } else { 100 };
    let mut t = Turn::default();
    let time = |s: &mut Session, rel: &str, list: String, at: &str| {
        floats(&s.ok(&format!(
            "SELECT * FROM {schema}.time_pages('{rel}', {list}, '{at}');"
        )))
    };
    // Short histories: accounts blocks spread over the table.
    let mut s = Session::open(cluster);
    let step = (accounts / warm_n).max(1);
    t.short_cold = time(&mut s, "pgbench_accounts", blocks([1].into_iter()), lsn)[0];
    t.short_warm = time(
        &mut s,
        "pgbench_accounts",
        blocks((0..warm_n).map(|i| (i * step + 2) % accounts)),
        lsn,
    );
    s.close();
    // The long history: branches block 0, the same call again and again.
    let mut s = Session::open(cluster);
    t.long_cold = time(&mut s, "pgbench_branches", blocks([0].into_iter()), lsn)[0];
    t.long_warm = time(
        &mut s,
        "pgbench_branches",
        blocks(std::iter::repeat_n(0, if quick { 5 } else { 20 })),
        lsn,
    );
    // More WAL since: each call at the new flush LSN extends the index.
    for i in 0..if quick { 3 } else { 10 } {
        cluster.psql(&format!(
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 50 = {i};"
        ));
        let now = cluster.psql("SELECT pg_current_wal_flush_lsn();");
        t.after_more_wal.extend(time(
            &mut s,
            "pgbench_accounts",
            blocks([(i * 37 + 5) % accounts].into_iter()),
            &now,
        ));
    }
    s.close();
    let mut s = Session::open(cluster);
    t.history_cold = floats(&s.ok(&format!("SELECT {schema}.time_history('pgbench_history');")))[0];
    t.history_warm = floats(&s.ok(&format!("SELECT {schema}.time_history('pgbench_history');")))[0];
    s.close();
    t
}

/// The rows; `quick`: one turn, fewer calls.
pub fn inspect_rows(quick: bool, row: &dyn Fn(&str, String, String)) {
    let install = PrivateInstall::new("bench-inspect");
    let before_so = std::env::var_os("WALREDO_INSPECT_BEFORE").map(PathBuf::from);
    if let Some(so) = &before_so {
        let pkglib = pg_dirs().pkglib;
        let lib = install
            .root
            .path()
            .join(pkglib.strip_prefix("/").unwrap())
            .join("walredo_inspect_before.so");
        std::fs::copy(so, &lib).unwrap_or_else(|e| panic!("copy {}: {e}", so.display()));
    }
    let dir = TempDir::new("bench-inspect");
    let rec_sockets = TempDir::new("bench-inspect-rec");
    let mut cluster = install.cluster(dir.path(), &[], SETTINGS);
    cluster.start();
    cluster.stop();
    let base = dir.path().join("base");
    copy_tree(&cluster.data, &base);
    cluster.start();
    cluster.pgbench(&["-q", "-i", "-s", "1"]);
    cluster.psql("CHECKPOINT;");
    cluster.pgbench(&["-n", "-c", "2", "-t", if quick { "500" } else { "2000" }]);
    let lsn = cluster.psql("SELECT pg_current_wal_flush_lsn();");
    // The WAL recovery replays: up to the LSN asked for, as it stood then.
    cluster.psql("CHECKPOINT; SELECT pg_switch_wal();");
    let wal = dir.path().join("wal");
    copy_tree(&cluster.data.join("pg_wal"), &wal);
    cluster.psql(&format!(
        "CREATE EXTENSION walredo_inspect;{}",
        TIMING_SQL.replace("SCHEMA", "public"),
    ));
    if before_so.is_some() {
        cluster.psql(&format!(
            "{BEFORE_SQL}{}",
            TIMING_SQL.replace("SCHEMA", "before")
        ));
    }
    let accounts: u32 = cluster
        .psql("SELECT pg_relation_size('pgbench_accounts') / 8192;")
        .parse()
        .unwrap();
    let history_blocks = cluster.psql("SELECT pg_relation_size('pgbench_history') / 8192;");
    let redo = controldata(&base)["Latest checkpoint's REDO location"].clone();
    let start = walredo::wal::parse_lsn(&redo).unwrap();
    let mb = (walredo::wal::parse_lsn(&lsn).unwrap() - start) as f64 / 1e6;

    let turns = if quick { 1 } else { 3 };
    let mut recovery = Vec::new();
    let (mut after, mut before) = (Vec::new(), Vec::new());
    for turn in 0..turns {
        recovery.push(recover(
            &base,
            &wal,
            rec_sockets.path(),
            &lsn,
            dir.path(),
            turn,
        ));
        if before_so.is_some() {
            before.push(measure(&cluster, "before", &lsn, accounts, quick));
        }
        after.push(measure(&cluster, "public", &lsn, accounts, quick));
    }
    let r = median(recovery);
    let r_ms = r.as_secs_f64() * 1e3;
    row(
        "inspect: PostgreSQL's archive recovery of the WAL",
        format!("{:.0} ms", r_ms),
        format!(
            "{mb:.1} MB of WAL (pgbench -s 1, checkpoint, {} transactions) up to {lsn}; \
             medians of {turns} turn(s), in turns with the rows below",
            if quick { 500 } else { 2000 }
        ),
    );
    let builds: Vec<(&str, Vec<Turn>)> = if before_so.is_some() {
        vec![("before", before), ("", after)]
    } else {
        vec![("", after)]
    };
    for (name, turns) in builds {
        let label = |what: &str| {
            if name.is_empty() {
                format!("inspect: {what}")
            } else {
                format!("inspect ({name}): {what}")
            }
        };
        let beside = |ms: f64| {
            let x = r_ms / ms;
            if x < 10.0 {
                format!("recovery's time / this: {x:.2}x")
            } else {
                format!("recovery's time / this: {x:.0}x")
            }
        };
        let cells: [(&str, f64, String); 7] = [
            (
                "page_at_lsn, cold, short history (a new backend's first call: pool start, WAL index)",
                med(turns.iter().map(|t| t.short_cold).collect()),
                String::new(),
            ),
            (
                "page_at_lsn, warm, short history (pgbench_accounts blocks)",
                med(turns.iter().flat_map(|t| t.short_warm.clone()).collect()),
                String::new(),
            ),
            (
                "page_at_lsn, cold, long history (pgbench_branches block 0, a new backend's first call)",
                med(turns.iter().map(|t| t.long_cold).collect()),
                String::new(),
            ),
            (
                "page_at_lsn, warm, long history (pgbench_branches block 0)",
                med(turns.iter().flat_map(|t| t.long_warm.clone()).collect()),
                String::new(),
            ),
            (
                "page_at_lsn, warm, at a newer flush LSN (an UPDATE of 2% of accounts since the last call)",
                med(turns.iter().flat_map(|t| t.after_more_wal.clone()).collect()),
                String::new(),
            ),
            (
                "page_history of every block of pgbench_history, cold (new backend)",
                med(turns.iter().map(|t| t.history_cold).collect()),
                format!("{history_blocks} blocks"),
            ),
            (
                "page_history of every block of pgbench_history, warm",
                med(turns.iter().map(|t| t.history_warm).collect()),
                format!("{history_blocks} blocks"),
            ),
        ];
        for (what, ms, note) in cells {
            let note = if note.is_empty() {
                beside(ms)
            } else {
                format!("{note}; {}", beside(ms))
            };
            row(&label(what), format!("{ms:.2} ms"), note);
        }
    }
    cluster.stop();
}

/// PostgreSQL's archive recovery of the WAL onto a fresh copy of the base.
fn recover(
    base: &Path,
    wal: &Path,
    sockets: &Path,
    lsn: &str,
    work: &Path,
    turn: usize,
) -> Duration {
    let copy = work.join(format!("recovered-{turn}"));
    copy_tree(base, &copy);
    let took = archive_recover(&copy, wal, sockets, lsn);
    let _ = std::fs::remove_dir_all(&copy);
    took
}
