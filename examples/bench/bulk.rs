//! `bench --bulk`: a whole WAL range, PostgreSQL's archive recovery of it
//! against `walredo verify` of it end to end, in turns, on the demo's
//! workload, on a larger pgbench one and on PostgreSQL's own regression
//! suite (issue 25). Each workload is recorded once by testkit (initdb, a
//! base copy, the workload, the WAL); then each turn recovers a fresh copy
//! of the base (the copy not timed) and runs the `walredo` command on the
//! same range, as a user would (`target/release/walredo`, or the one
//! `WALREDO_BULK_VERIFY` names: an older build, for a before-and-after).
//! `--workload demo|pgbench|regress` (or a comma-separated list) runs only
//! those; `--quick`, one turn (and the demo's workload only, unless
//! `--workload` says).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use walredo::wal::format_lsn;
use walredo_testkit::cluster::{archive_recover, copy_tree, record_workload, Cluster, RecordedWal};

use crate::median;

/// What a workload runs against the recording cluster.
enum Run {
    /// pgbench's scale and transactions, then SQL.
    Pgbench {
        scale: u32,
        transactions: u32,
        sql: &'static str,
    },
    /// PostgreSQL's regression suite through pg_regress
    /// (scripts/pg-regress-suite.sh).
    Regress,
}

/// One workload: its `--workload` key, its name in the table, what it runs.
struct Workload {
    key: &'static str,
    name: &'static str,
    run: Run,
}

const DEMO_SQL: &str = include_str!("../../cli/demo/workload.sql");

const WORKLOADS: [Workload; 3] = [
    Workload {
        key: "demo",
        name: "demo (pgbench -s 1, 2,000 transactions, cli/demo/workload.sql)",
        run: Run::Pgbench {
            scale: 1,
            transactions: 2000,
            sql: DEMO_SQL,
        },
    },
    Workload {
        key: "pgbench",
        name: "pgbench -s 16, 30,000 transactions",
        run: Run::Pgbench {
            scale: 16,
            transactions: 30000,
            sql: "",
        },
    },
    Workload {
        key: "regress",
        name: "PostgreSQL's regression suite (pg_regress, parallel_schedule)",
        run: Run::Regress,
    },
];

/// The demo's server settings: nothing checkpointed or recycled away.
const SETTINGS: &[&str] = &[
    "max_wal_size = 8GB",
    "wal_keep_size = 8GB",
    "checkpoint_timeout = 1h",
    "fsync = off",
];

/// The workloads `--workload` names (all by default; the demo's alone with
/// `--quick`).
fn chosen(quick: bool) -> Vec<&'static Workload> {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == "--workload") else {
        return WORKLOADS
            .iter()
            .take(if quick { 1 } else { WORKLOADS.len() })
            .collect();
    };
    let keys: Vec<&str> = WORKLOADS.iter().map(|w| w.key).collect();
    let list = args.get(i + 1).map_or("", String::as_str);
    list.split(',')
        .map(|key| {
            WORKLOADS.iter().find(|w| w.key == key).unwrap_or_else(|| {
                panic!("--workload {list:?}: one or more of {keys:?}, with commas")
            })
        })
        .collect()
}

/// The rows; `quick`: one turn.
pub fn bulk_rows(quick: bool, row: &dyn Fn(&str, String, String)) {
    // Where `walredo verify`'s processes keep their scratch files by
    // default: TMPDIR, else /dev/shm when it is a tmpfs. The clusters, the
    // copy recovery writes and the WAL live there too, so that both sides
    // work on the same file system: recovery creates and removes a file per
    // relation as the suite did, and on this machine's ext4 (after the
    // turns' copies were removed) that alone took 5 to 14 s for the
    // regression suite's WAL, against 1.6 to 5 s on tmpfs (BENCHMARKS.md).
    let root = walredo::config::default_scratch_root();
    let root = root.parent().unwrap_or(Path::new("/tmp"));
    let work = root.join(format!("walredo-bulk-{}", std::process::id()));
    let turns = if quick { 1 } else { 3 };
    for w in chosen(quick) {
        let _ = std::fs::remove_dir_all(&work);
        make_dir(&work);
        // What the workload said of itself, for the first row's note.
        let said = RefCell::new(String::new());
        let rec = match w.run {
            Run::Pgbench {
                scale,
                transactions,
                sql,
            } => record_workload(&work, &[], SETTINGS, &|c| {
                c.pgbench(&["-q", "-i", "-s", &scale.to_string()]);
                c.pgbench(&["-n", "-c", "2", "-t", &transactions.to_string()]);
                if !sql.is_empty() {
                    c.psql(sql);
                }
            }),
            Run::Regress => match regress_suite(&work) {
                Ok(suite) => record_workload(&work, &[], SETTINGS, &|c| {
                    *said.borrow_mut() = run_regress_suite(c, &suite, &work);
                }),
                Err(why) => {
                    row(
                        &format!("bulk, {}", w.name),
                        "skipped".into(),
                        why.replace('\n', " "),
                    );
                    continue;
                }
            },
        };
        let mb = (rec.target_lsn - rec.start_lsn) as f64 / 1e6;
        let (mut recovery, mut verify) = (Vec::new(), Vec::new());
        let (mut recovery_cpu, mut verify_cpu) = (Vec::new(), Vec::new());
        let mut breakdowns = Vec::new();
        for turn in 0..turns {
            let cpu = children_cpu();
            recovery.push(recover(&rec, &work, turn));
            recovery_cpu.push(children_cpu() - cpu);
            let cpu = children_cpu();
            let (took, breakdown) = run_verify(&rec);
            verify_cpu.push(children_cpu() - cpu);
            eprintln!(
                "{}, turn {turn}: recovery {:.2} s ({:.2} CPU-s), verify {:.2} s ({:.2} CPU-s)",
                w.key,
                recovery[turn].as_secs_f64(),
                recovery_cpu[turn].as_secs_f64(),
                took.as_secs_f64(),
                verify_cpu[turn].as_secs_f64()
            );
            verify.push(took);
            breakdowns.push((took, breakdown));
        }
        let (r, v) = (median(recovery), median(verify));
        let (r_cpu, v_cpu) = (median(recovery_cpu), median(verify_cpu));
        let said = said.into_inner();
        row(
            &format!("bulk, {w}: PostgreSQL's archive recovery", w = w.name),
            format!("{:.2} s", r.as_secs_f64()),
            format!(
                "{mb:.1} MB of WAL{said}, in {root}; {:.2} CPU-s (its processes' user and \
                 system time); medians of {turns} turn(s), in turns with the next row",
                r_cpu.as_secs_f64(),
                root = root.display(),
                said = if said.is_empty() {
                    said
                } else {
                    format!(" ({said})")
                }
            ),
        );
        row(
            &format!("bulk, {}: walredo verify end to end", w.name),
            format!("{:.2} s", v.as_secs_f64()),
            format!(
                "recovery's time / this: {:.2}x; {:.0} MB/s of WAL; {:.2} CPU-s (the command's \
                 and its wal-redo processes')",
                r.as_secs_f64() / v.as_secs_f64(),
                mb / v.as_secs_f64(),
                v_cpu.as_secs_f64()
            ),
        );
        // The breakdown of the median verify run.
        breakdowns.sort_by_key(|(took, _)| *took);
        println!("\n```\n{}\n```\n", breakdowns[breakdowns.len() / 2].1);
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// The regression suite of the version the bench runs, its regress.so
/// built against this server, in `work/regress` (owned by the server's
/// user, who runs pg_regress): scripts/pg-regress-suite.sh. `Err`: why it
/// is not available here (the script's exit status 3), for a skipped row.
fn regress_suite(work: &Path) -> Result<PathBuf, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-regress-suite.sh");
    let version = walredo_testkit::install::pg_version().to_string();
    let out = Command::new(script)
        .arg(&version)
        .arg(work)
        .env(
            "PG_CONFIG",
            walredo_testkit::cluster::bindir().join("pg_config"),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(3) => return Err(stderr.trim().to_string()),
        _ => panic!("{script} {version} failed ({}):\n{stderr}", out.status),
    }
    let suite = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    chown_tree(&suite);
    Ok(suite)
}

/// pg_regress of the suite in `suite` (its parallel_schedule) against the
/// recording cluster; its output in `work/regress-out`. A few tests may
/// fail (the suite's release is not always the server's, and its
/// environment is not a build tree's): only the WAL matters, so this asserts
/// that the suite ran to its summary, and returns it with its time.
fn run_regress_suite(c: &Cluster, suite: &Path, work: &Path) -> String {
    let out_dir = work.join("regress-out");
    make_dir(&out_dir);
    let pkglib = walredo_testkit::cluster::run("pg_config", &["--pkglibdir"]);
    let pkglib = String::from_utf8_lossy(&pkglib.stdout).trim().to_string();
    let pg_regress = format!("{pkglib}/pgxs/src/test/regress/pg_regress");
    let arg = |name: &str, path: &Path| format!("--{name}={}", path.display());
    let args = [
        arg("inputdir", suite),
        arg("outputdir", &out_dir),
        arg("bindir", &c.bindir),
        arg("dlpath", suite),
        arg("schedule", &suite.join("parallel_schedule")),
        arg("host", &c.socket_dir),
        "--user=postgres".into(),
        "--max-concurrent-tests=20".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    // An absolute program: command_in runs it as the server's user, with
    // the environment of the installation in c.bindir.
    let out = walredo_testkit::cluster::command_in(&c.bindir, &pg_regress, &args)
        .current_dir(&out_dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {pg_regress}: {e}"));
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // 15's "  3 of 214 tests failed. ", 16's and later "# 3 of 214 tests
    // failed."; "All 214 tests passed." when none did.
    let summary = stdout
        .lines()
        .map(|l| l.trim_matches(|ch: char| ch == '#' || ch.is_whitespace()))
        .find(|l| l.ends_with("tests passed.") || l.contains(" tests failed"))
        .unwrap_or_else(|| {
            panic!(
                "pg_regress did not run the suite to its summary ({}):\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    // Which ones, on the terminal (15's "test x ... FAILED", 17's "not ok").
    for line in stdout.lines() {
        if line.contains("FAILED") || line.starts_with("not ok") {
            eprintln!("pg_regress: {}", line.trim());
        }
    }
    format!(
        "{}, in {:.0} s",
        summary.trim_end_matches('.'),
        took.as_secs_f64()
    )
}

fn make_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    if let Some(ids) = walredo_testkit::cluster::user() {
        std::os::unix::fs::chown(dir, Some(ids.uid), Some(ids.gid)).unwrap();
    }
}

/// Give a tree to the server's user (when the caller is root).
fn chown_tree(dir: &Path) {
    let Some(ids) = walredo_testkit::cluster::user() else {
        return;
    };
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", ids.uid, ids.gid))
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chown -R {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// User and system time of this process's children that ended so far (and
/// of their descendants they waited for): around one run, what the run
/// cost the machine's CPUs.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid
    // rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
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
