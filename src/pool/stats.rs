//! Counters and histograms of a pool, read without stopping it, and their
//! Prometheus text exposition. The histograms follow Neon's wal-redo metrics:
//! redo time, process launch time, records and bytes per request.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::pool::tenant::TenantStats;

/// Buckets of a `walredo_histogram`.
// Of every `Histogram`: this many upper bounds, plus +Inf (the C ABI's
// `WALREDO_HISTOGRAM_BUCKETS`).
pub const HISTOGRAM_BUCKETS: usize = 16;

/// A histogram with fixed upper bounds, updated with relaxed atomics.
pub struct Histogram {
    bounds: [u64; HISTOGRAM_BUCKETS],
    /// `counts[i]` counts values `<= bounds[i]` and `> bounds[i - 1]`; the
    /// last extra bucket counts values above every bound.
    counts: [AtomicU64; HISTOGRAM_BUCKETS + 1],
    sum: AtomicU64,
}

/// A histogram: `cumulative[i]` counts observations `<= bounds[i]`; `count`
/// counts all of them (also those above the last bound) and `sum` adds them
/// up. Times are in microseconds.
// A copy of a `Histogram` at one moment, cumulative as Prometheus counts;
// also the C ABI's `walredo_histogram` (cbindgen.toml renames it): its
// layout is part of the ABI.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub count: u64,
    pub sum: u64,
    pub bounds: [u64; HISTOGRAM_BUCKETS],
    pub cumulative: [u64; HISTOGRAM_BUCKETS],
}

impl Histogram {
    pub const fn new(bounds: [u64; HISTOGRAM_BUCKETS]) -> Histogram {
        Histogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; HISTOGRAM_BUCKETS + 1],
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_micros().min(u64::MAX as u128) as u64);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut s = HistogramSnapshot {
            bounds: self.bounds,
            ..Default::default()
        };
        let mut running = 0;
        for i in 0..HISTOGRAM_BUCKETS {
            running += self.counts[i].load(Ordering::Relaxed);
            s.cumulative[i] = running;
        }
        s.count = running + self.counts[HISTOGRAM_BUCKETS].load(Ordering::Relaxed);
        s.sum = self.sum.load(Ordering::Relaxed);
        s
    }
}

/// Microsecond bounds from 10 us to 10 s.
const TIME_BOUNDS_US: [u64; HISTOGRAM_BUCKETS] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 500_000,
    1_000_000, 10_000_000,
];
const RECORD_BOUNDS: [u64; HISTOGRAM_BUCKETS] = [
    0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384,
];
const BYTE_BOUNDS: [u64; HISTOGRAM_BUCKETS] = [
    128,
    256,
    512,
    1024,
    4096,
    8192,
    16384,
    32768,
    65536,
    131072,
    262144,
    524288,
    1 << 20,
    4 << 20,
    16 << 20,
    64 << 20,
];

/// What the pool counts of the requests it admits and answers.
pub struct Stats {
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    pub busy_rejections: AtomicU64,
    pub fast_path_pages: AtomicU64,
    pub image_starts: AtomicU64,
    /// Requests dropped or stopped because their call was cancelled.
    pub cancellations: AtomicU64,
    pub redo_time_us: Histogram,
    pub records_per_request: Histogram,
    pub bytes_per_request: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            busy_rejections: AtomicU64::new(0),
            fast_path_pages: AtomicU64::new(0),
            image_starts: AtomicU64::new(0),
            cancellations: AtomicU64::new(0),
            redo_time_us: Histogram::new(TIME_BOUNDS_US),
            records_per_request: Histogram::new(RECORD_BOUNDS),
            bytes_per_request: Histogram::new(BYTE_BOUNDS),
        }
    }
}

/// What the process slots count of their processes and of the attempts
/// made on them: the slots own one, and the pool reads it for its
/// snapshot ([`Stats::snapshot`]).
pub struct ProcessStats {
    pub retries: AtomicU64,
    pub timeouts: AtomicU64,
    pub spawns: AtomicU64,
    pub spawn_failures: AtomicU64,
    /// Starts killed by a signal and started again at once (also counted
    /// in `spawn_failures`).
    pub killed_starts: AtomicU64,
    pub process_deaths: AtomicU64,
    pub retirements: AtomicU64,
    pub live_processes: AtomicU64,
    /// Processes killed because the request they worked on was cancelled.
    pub cancel_kills: AtomicU64,
    pub spawn_time_us: Histogram,
    /// Per tenant: requests, failures, starts, time waiting for a process.
    pub tenants: TenantStats,
}

impl Default for ProcessStats {
    fn default() -> Self {
        ProcessStats {
            retries: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            spawns: AtomicU64::new(0),
            spawn_failures: AtomicU64::new(0),
            killed_starts: AtomicU64::new(0),
            process_deaths: AtomicU64::new(0),
            retirements: AtomicU64::new(0),
            live_processes: AtomicU64::new(0),
            cancel_kills: AtomicU64::new(0),
            spawn_time_us: Histogram::new(TIME_BOUNDS_US),
            tenants: TenantStats::default(),
        }
    }
}

/// Counters of a pool since it was made (gauges: now).
// What `StatsSnapshot` holds besides `killed_starts`; also the C ABI's
// `walredo_stats` (cbindgen.toml renames it): its layout is part of the ABI.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests received by walredo_redo and walredo_submit.
    pub requests: u64,
    /// Requests answered with an error (including refused ones).
    pub failures: u64,
    /// Requests retried on a fresh process after their process failed.
    pub retries: u64,
    /// Attempts that hit their deadline.
    pub timeouts: u64,
    /// Processes started.
    pub spawns: u64,
    /// Process starts that failed.
    pub spawn_failures: u64,
    /// Processes that died or were killed after a failure.
    pub process_deaths: u64,
    /// Idle processes retired.
    pub retirements: u64,
    /// Gauge: processes running now.
    pub live_processes: u64,
    /// Gauge: requests waiting in the queue now.
    pub queue_depth: u64,
    /// walredo_submit calls refused with WALREDO_BUSY.
    pub busy_rejections: u64,
    /// Time from a request's arrival to its answer, successful ones.
    pub redo_time_us: HistogramSnapshot,
    /// Time to start a process and get its first answer.
    pub spawn_time_us: HistogramSnapshot,
    pub records_per_request: HistogramSnapshot,
    pub bytes_per_request: HistogramSnapshot,
    /// Requests answered from a full-page image, without a process.
    pub fast_path_pages: u64,
    /// Requests sent to a process starting from their newest full-page image.
    pub image_starts: u64,
    /// Requests dropped or stopped because their call was cancelled
    /// (walredo_call_cancel) before they had their answer.
    pub cancellations: u64,
    /// Processes killed because the request they worked on was cancelled
    /// (not counted in process_deaths: nobody's request failed).
    pub cancel_kills: u64,
}

/// What the pool counted of one tenant since it was made; also the C
/// ABI's `walredo_tenant_stats` (cbindgen.toml renames it): its layout is
/// part of the ABI.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TenantCounters {
    /// Requests answered (with a page or an error).
    pub requests: u64,
    /// Requests answered with an error.
    pub failures: u64,
    /// Processes started for the tenant.
    pub spawns: u64,
    /// Time its requests waited for a process (from arrival until a
    /// process of the tenant's took them), summed, in microseconds.
    pub wait_us: u64,
}

/// A copy of all counters at one moment: the [`Counters`] C sees too (read
/// through this, `snapshot.requests`), and one more.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub counters: Counters,
    /// Starts killed by a signal and started again at once (also counted
    /// in `spawn_failures`).
    pub killed_starts: u64,
}

impl std::ops::Deref for StatsSnapshot {
    type Target = Counters;

    fn deref(&self) -> &Counters {
        &self.counters
    }
}

/// Increment a counter by one.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// All counters now: these and the slots' `processes`.
    pub fn snapshot(&self, processes: &ProcessStats) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counters = Counters {
            requests: get(&self.requests),
            failures: get(&self.failures),
            retries: get(&processes.retries),
            timeouts: get(&processes.timeouts),
            spawns: get(&processes.spawns),
            spawn_failures: get(&processes.spawn_failures),
            process_deaths: get(&processes.process_deaths),
            retirements: get(&processes.retirements),
            live_processes: get(&processes.live_processes),
            // The queue counts itself: `Pool::stats` fills it in.
            queue_depth: 0,
            busy_rejections: get(&self.busy_rejections),
            redo_time_us: self.redo_time_us.snapshot(),
            spawn_time_us: processes.spawn_time_us.snapshot(),
            records_per_request: self.records_per_request.snapshot(),
            bytes_per_request: self.bytes_per_request.snapshot(),
            fast_path_pages: get(&self.fast_path_pages),
            image_starts: get(&self.image_starts),
            cancellations: get(&self.cancellations),
            cancel_kills: get(&processes.cancel_kills),
        };
        StatsSnapshot {
            counters,
            killed_starts: get(&processes.killed_starts),
        }
    }
}

impl StatsSnapshot {
    /// Prometheus text exposition format, version 0.0.4.
    pub fn prometheus_text(&self) -> String {
        let mut out = String::new();
        let counters = [
            (
                "walredo_requests_total",
                "Redo requests received.",
                self.requests,
            ),
            (
                "walredo_failures_total",
                "Requests answered with an error.",
                self.failures,
            ),
            (
                "walredo_retries_total",
                "Requests retried on a fresh process.",
                self.retries,
            ),
            (
                "walredo_timeouts_total",
                "Attempts that hit their deadline.",
                self.timeouts,
            ),
            ("walredo_spawns_total", "Processes started.", self.spawns),
            (
                "walredo_spawn_failures_total",
                "Process starts that failed.",
                self.spawn_failures,
            ),
            (
                "walredo_killed_starts_total",
                "Starts killed by a signal and started again at once.",
                self.killed_starts,
            ),
            (
                "walredo_process_deaths_total",
                "Processes that died or were killed.",
                self.process_deaths,
            ),
            (
                "walredo_retirements_total",
                "Idle processes retired.",
                self.retirements,
            ),
            (
                "walredo_busy_rejections_total",
                "Submissions refused because the queue was full.",
                self.busy_rejections,
            ),
            (
                "walredo_cancellations_total",
                "Requests dropped or stopped because their call was cancelled.",
                self.cancellations,
            ),
            (
                "walredo_cancel_kills_total",
                "Processes killed because the request they worked on was cancelled.",
                self.cancel_kills,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let gauges = [
            (
                "walredo_live_processes",
                "Processes running now.",
                self.live_processes,
            ),
            (
                "walredo_queue_depth",
                "Requests waiting in the queue now.",
                self.queue_depth,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let histograms = [
            (
                "walredo_redo_seconds",
                "Time to answer one request.",
                &self.redo_time_us,
                1e6,
            ),
            (
                "walredo_process_launch_seconds",
                "Time to start a process.",
                &self.spawn_time_us,
                1e6,
            ),
            (
                "walredo_records_per_request",
                "Records in one request.",
                &self.records_per_request,
                1.0,
            ),
            (
                "walredo_bytes_per_request",
                "Record bytes in one request.",
                &self.bytes_per_request,
                1.0,
            ),
        ];
        // Times are kept in microseconds and exposed in seconds.
        for (name, help, h, divisor) in histograms {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for i in 0..HISTOGRAM_BUCKETS {
                let le = h.bounds[i] as f64 / divisor;
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", h.cumulative[i]);
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum {}", h.sum as f64 / divisor);
            let _ = writeln!(out, "{name}_count {}", h.count);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(RECORD_BOUNDS);
        for v in [0, 1, 1, 3, 5000, 100_000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.sum, 105_005);
        assert_eq!(s.cumulative[0], 1); // <= 0
        assert_eq!(s.cumulative[1], 3); // <= 1
        assert_eq!(s.cumulative[3], 4); // <= 4
        assert_eq!(s.cumulative[13], 4); // <= 4096
        assert_eq!(s.cumulative[14], 5); // <= 8192
        assert_eq!(s.cumulative[15], 5); // <= 16384; 100000 is only in +Inf
    }

    #[test]
    fn prometheus_text_has_every_family() {
        let stats = Stats::default();
        bump(&stats.requests);
        stats.redo_time_us.observe(30);
        let text = stats.snapshot(&ProcessStats::default()).prometheus_text();
        assert!(text.contains("walredo_requests_total 1\n"));
        assert!(text.contains("# TYPE walredo_redo_seconds histogram"));
        assert!(
            text.contains("walredo_redo_seconds_bucket{le=\"0.00005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("walredo_redo_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("walredo_redo_seconds_count 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
