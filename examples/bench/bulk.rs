//! `bench --bulk`: a whole WAL range, PostgreSQL's archive recovery of it
//! against `walredo verify` of it end to end, in turns, on the demo's
//! workload and on a larger pgbench one (issue 25). Each workload is
//! recorded once by testkit (initdb, a base copy, the workload, the WAL);
//! then each turn recovers a fresh copy of the base (the copy not timed)
//! and runs the `walredo` command on the same range, as a user would
//! (`target/release/walredo`, or the one `WALREDO_BULK_VERIFY` names: an
//! older build, for a before-and-after).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use walredo::wal::format_lsn;
use walredo_testkit::cluster::{archive_recover, copy_tree, record_workload, RecordedWal};

use crate::median;

/// One workload: its name, pgbench's scale and transactions, and SQL after.
struct Workload {
    name: &'static str,
    scale: u32,
    transactions: u32,
    sql: &'static str,
}

const DEMO_SQL: &str = include_str!("../../cli/demo/workload.sql");

const WORKLOADS: [Workload; 2] = [
    Workload {
        name: "demo (pgbench -s 1, 2,000 transactions, cli/demo/workload.sql)",
        scale: 1,
        transactions: 2000,
        sql: DEMO_SQL,
    },
    Workload {
        name: "pgbench -s 16, 30,000 transactions",
        scale: 16,
        transactions: 30000,
        sql: "",
    },
];

/// The demo's server settings: nothing checkpointed or recycled away.
const SETTINGS: &[&str] = &[
    "max_wal_size = 8GB",
    "wal_keep_size = 8GB",
    "checkpoint_timeout = 1h",
    "fsync = off",
];

/// The rows; `quick`: the demo's workload only, one turn.
pub fn bulk_rows(quick: bool, row: &dyn Fn(&str, String, String)) {
    let work = std::env::temp_dir().join(format!("walredo-bulk-{}", std::process::id()));
    let turns = if quick { 1 } else { 3 };
    for w in WORKLOADS.iter().take(if quick { 1 } else { 2 }) {
        let _ = std::fs::remove_dir_all(&work);
        make_dir(&work);
        let rec = record_workload(&work, &[], SETTINGS, &|c| {
            c.pgbench(&["-q", "-i", "-s", &w.scale.to_string()]);
            c.pgbench(&["-n", "-c", "2", "-t", &w.transactions.to_string()]);
            if !w.sql.is_empty() {
                c.psql(w.sql);
            }
        });
        let mb = (rec.target_lsn - rec.start_lsn) as f64 / 1e6;
        let (mut recovery, mut verify) = (Vec::new(), Vec::new());
        let mut breakdowns = Vec::new();
        for turn in 0..turns {
            recovery.push(recover(&rec, &work, turn));
            let (took, breakdown) = run_verify(&rec);
            verify.push(took);
            breakdowns.push((took, breakdown));
        }
        let (r, v) = (median(recovery), median(verify));
        row(
            &format!("bulk, {w}: PostgreSQL's archive recovery", w = w.name),
            format!("{:.2} s", r.as_secs_f64()),
            format!("{mb:.1} MB of WAL; medians of {turns} turn(s), in turns with the next row"),
        );
        row(
            &format!("bulk, {}: walredo verify end to end", w.name),
            format!("{:.2} s", v.as_secs_f64()),
            format!(
                "recovery's time / this: {:.2}x; {:.0} MB/s of WAL",
                r.as_secs_f64() / v.as_secs_f64(),
                mb / v.as_secs_f64()
            ),
        );
        // The breakdown of the median verify run.
        breakdowns.sort_by_key(|(took, _)| *took);
        println!("\n```\n{}\n```\n", breakdowns[breakdowns.len() / 2].1);
    }
    let _ = std::fs::remove_dir_all(&work);
}

fn make_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    if let Some(ids) = walredo_testkit::cluster::user() {
        std::os::unix::fs::chown(dir, Some(ids.uid), Some(ids.gid)).unwrap();
    }
}

/// PostgreSQL's archive recovery of the range onto a fresh copy of the base.
fn recover(rec: &RecordedWal, work: &Path, turn: usize) -> Duration {
    let copy = work.join(format!("recovered-{turn}"));
    copy_tree(&rec.base, &copy);
    let took = archive_recover(&copy, &rec.wal_dir, work, &format_lsn(rec.target_lsn));
    let _ = std::fs::remove_dir_all(&copy);
    took
}

/// `walredo verify` of the range, as a user runs it: its time and the
/// breakdown it printed.
fn run_verify(rec: &RecordedWal) -> (Duration, String) {
    let built = || {
        std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.parent()?.parent()?.join("walredo")))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("target/release/walredo"))
    };
    let walredo = std::env::var_os("WALREDO_BULK_VERIFY").map_or_else(built, PathBuf::from);
    let extension = walredo_testkit::install::built_dir("pg_walredo").join("pg_walredo.so");
    let bindir = walredo_testkit::cluster::bindir();
    let started = Instant::now();
    let out = Command::new(&walredo)
        .arg("--bindir")
        .arg(&bindir)
        .arg("--extension")
        .arg(&extension)
        .arg("verify")
        .arg("--base")
        .arg(&rec.base)
        .arg("--wal")
        .arg(&rec.wal_dir)
        .arg("--expected")
        .arg(&rec.expected)
        .arg("--end")
        .arg(format_lsn(rec.target_lsn))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", walredo.display()));
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "walredo verify failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    let breakdown: Vec<&str> = lines
        .by_ref()
        .skip_while(|l| !l.starts_with("time:"))
        .take_while(|l| l.starts_with("time:") || l.starts_with("  "))
        .collect();
    let verdict = text.lines().last().unwrap_or_default();
    assert!(
        verdict.ends_with(" 0 different"),
        "walredo verify found differences: {verdict}"
    );
    (took, format!("{}\n{verdict}", breakdown.join("\n")))
}
