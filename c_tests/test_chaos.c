/*
 * test_chaos.c: the pool under fire, with the real pg_walredo.
 *
 *   test_chaos EXTENSION_PATH FIXTURE_DIR [CHAOS_SECONDS [SOAK_REQUESTS [BUSY_SECONDS]]]
 *
 * 1. Coalescing: 64 threads make their first request at once on a fresh pool
 *    of 4 processes: at most one spawn per slot.
 * 2. Chaos: 8 threads call walredo_redo and 2 call walredo_submit with real
 *    pages for CHAOS_SECONDS (default 20) while another thread SIGKILLs or
 *    SIGSTOPs a random wal-redo process every 30-130 ms. Every request must be
 *    answered: with the right page, or with a deadline or failed-redo error
 *    (only when both attempts were hit); zero lost, zero wrong pages, no
 *    child left (nor a zombie), as many fds and threads after as before.
 * 2b. Chaos on a busy machine: the same clients for BUSY_SECONDS (default
 *    CHAOS_SECONDS) with two CPU-bound processes beside them (bounded: killed
 *    at the end, and with us), while a SIGKILL hits a random wal-redo
 *    process every 30-130 ms, and often also the one or two processes
 *    started next, as soon as they run PostgreSQL (in their start-up). At
 *    most 1% of the requests may fail (both attempts killed), none may be
 *    wrong or lost, and nothing may be left behind.
 * 3. Soak: SOAK_REQUESTS (default 100000) requests from 2 threads; the
 *    resident set after the last must be within 16 MiB of the one after the
 *    first 10%.
 *
 * As root the test runs in a System V IPC namespace of its own, so that the
 * segment count is of its own processes only, never of some other crashed
 * PostgreSQL on the machine (elsewhere it compares counts before and after).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <walredo.h>

#include "check.h"
#include "children.h"
#include "fixture.h"
#include "pools.h"
#include "workload.h"

#define MAX_CASES 256

static fixture cases[MAX_CASES];
static int n_cases;        /* every fixture */
static int ok_cases[MAX_CASES];
static int n_ok;           /* indexes of the ones expected to succeed */
static const char *extension;

/*
 * Under valgrind (run.sh sets WALREDO_TEST_UNDER_VALGRIND) every thread runs
 * in turn under one lock, and the monkey gets few turns: with the pool's
 * workers pinned to CPUs (follow_caller_cpu) it made 1 kill in 4 s, 6 kills
 * and 2 stops without.  There the pools do not place their threads, and one
 * kill or stop per phase is enough: the run is about memory errors and
 * leaks under chaos, the counts are for the native runs.
 */
static int
under_valgrind(void)
{
    return getenv("WALREDO_TEST_UNDER_VALGRIND") != NULL;
}


/* Under valgrind the host runs many times slower, and a request's deadline
 * counts its time in the queue: there every pool gets the default 10 s. */
static walredo_pool *
make_pool(const char *processes, const char *timeout_ms)
{
    return make_test_pool(extension, "processes", processes, "timeout_ms",
                          under_valgrind() ? "10000" : timeout_ms,
                          "log_level", "off", "follow_caller_cpu",
                          under_valgrind() ? "off" : "on", NULL);
}

/* Pids of our children, zombies included; *zombies counts those. */
static int
children(pid_t *out, int max, int *zombies)
{
    int n = children_list(out, max, 1, zombies);

    if (n < 0)
        FAIL("opendir /proc: %s", strerror(errno));
    return n;
}

static int
count_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        FAIL("opendir %s: %s", path, strerror(errno));
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* This process's threads, once their number holds still: a thread that was
 * just joined (pthread_join, or a pool's workers when it is freed) may still
 * be listed for a moment while the kernel finishes its exit, and a count
 * taken then is one too high (CI: "threads 4 -> 3"). Three equal readings
 * 10 ms apart, within 2 s; the comparison itself stays exact. */
static int
settled_threads(void)
{
    int n = count_dir("/proc/self/task"), same = 0;

    for (int i = 0; i < 200 && same < 2; i++)
    {
        int again;

        usleep(10000);
        again = count_dir("/proc/self/task");
        same = again == n ? same + 1 : 0;
        n = again;
    }
    return n;
}

/* PostgreSQL's 56-byte System V interlock segments nobody is attached to:
 * what killed wal-redo processes would leak. */
static int
orphaned_shm_segments(void)
{
    FILE *f = fopen("/proc/sysvipc/shm", "r");
    char line[512];
    int n = 0;

    while (f && fgets(line, sizeof(line), f))
    {
        long key, id, perms, size, cpid, lpid, nattch;

        if (sscanf(line, "%ld %ld %lo %ld %ld %ld %ld", &key, &id, &perms, &size, &cpid,
                   &lpid, &nattch) == 7 && size == 56 && nattch == 0)
            n++;
    }
    if (f)
        fclose(f);
    return n;
}

static long
rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;

    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

/* ---- 1. coalescing -------------------------------------------------- */

static pthread_barrier_t barrier;
static walredo_pool *shared_pool;

static void *
first_request(void *arg)
{
    const fixture *c = &cases[ok_cases[(intptr_t) arg % n_ok]];
    uint8_t page[WALREDO_PAGE_SIZE];
    int rc;

    pthread_barrier_wait(&barrier);
    rc = walredo_redo(shared_pool, &c->tag, c->base_page, c->records, c->n_records, page);
    if (rc != WALREDO_OK || memcmp(page, c->expected, WALREDO_PAGE_SIZE) != 0)
        FAIL("first request: %s %s", walredo_status_name(rc), walredo_last_error());
    return NULL;
}

static void
coalescing(void)
{
    pthread_t t[64];
    walredo_stats s;

    shared_pool = make_pool("4", "10000");
    pthread_barrier_init(&barrier, NULL, 64);
    for (intptr_t i = 0; i < 64; i++)
        pthread_create(&t[i], NULL, first_request, (void *) i);
    for (int i = 0; i < 64; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
    if (walredo_pool_stats(shared_pool, &s) != WALREDO_OK)
        FAIL("stats: %s", walredo_last_error());
    printf("test_chaos: 64 concurrent first requests on a fresh pool of 4: %" PRIu64
           " spawns, %" PRIu64 " live\n", s.spawns, s.live_processes);
    if (s.spawns < 1 || s.spawns > 4 || s.live_processes != s.spawns || s.failures != 0)
        FAIL("expected at most one spawn per slot");
    walredo_pool_free(shared_pool);
}

/* ---- 2. chaos ------------------------------------------------------- */

static atomic_int stop;
static atomic_long answered_ok, answered_timeout, answered_failed, wrong, kills, stops;
static atomic_long answered_spawn_failed, start_kills;
static atomic_long submitted, callbacks_run;
/* The monkey also sends SIGSTOP (the first chaos run) or only SIGKILL. */
static int monkey_stops = 1;

/* Too few kills and stops for the run to mean anything. */
static int
did_too_little(int seconds)
{
    long actions = atomic_load(&kills) + atomic_load(&stops);

    return atomic_load(&answered_ok) < 100 ||
        (under_valgrind() ? actions < 1 : atomic_load(&kills) < seconds);
}

static void
check_answer(const fixture *c, int rc, const uint8_t *page, const char *message, double started)
{
    (void) message;
    (void) started;
    if (rc == WALREDO_OK)
    {
        if (memcmp(page, c->expected, WALREDO_PAGE_SIZE) != 0)
            atomic_fetch_add(&wrong, 1);
        else
            atomic_fetch_add(&answered_ok, 1);
    }
    else if (rc == WALREDO_TIMEOUT)
        atomic_fetch_add(&answered_timeout, 1);
    else if (rc == WALREDO_REDO_FAILED)
        atomic_fetch_add(&answered_failed, 1);
    else if (rc == WALREDO_SPAWN_FAILED)
        atomic_fetch_add(&answered_spawn_failed, 1);
    else
        atomic_fetch_add(&wrong, 1);
}

/* SIGKILL the next wal-redo process to appear (not among the n in seen),
 * as soon as it runs PostgreSQL: a kill in its start-up. Returns its pid,
 * or 0 if none came within 100 ms. Bounded in time, not in looks: a killed
 * spare process is replaced only when a slot next needs one, so often no
 * start comes, and on a busy machine 500 looks of 1 ms took the whole run. */
static pid_t
kill_next_start(const pid_t *seen, int n)
{
    double until = now_s() + 0.1;

    while (now_s() < until && !atomic_load(&stop))
    {
        pid_t now[64];
        int m = children(now, 64, NULL);

        for (int i = 0; i < m && i < 64; i++)
        {
            int old = 0;

            for (int j = 0; j < n; j++)
                old |= now[i] == seen[j];
            if (!old && child_is_postgres(now[i]) && kill(now[i], SIGKILL) == 0)
            {
                atomic_fetch_add(&kills, 1);
                atomic_fetch_add(&start_kills, 1);
                return now[i];
            }
        }
        usleep(1000);
    }
    return 0;
}

static void *
chaos_monkey(void *arg)
{
    unsigned seed = (unsigned) (uintptr_t) arg;

    while (!atomic_load(&stop))
    {
        pid_t pids[64], victim;
        int n = children(pids, 64, NULL);

        usleep(30000 + rand_r(&seed) % 100000);
        if (n <= 0)
            continue;
        if (n > 64)
            n = 64;
        victim = pids[rand_r(&seed) % n];
        if (!child_is_postgres(victim))
            continue;
        if (monkey_stops && rand_r(&seed) % 5 == 0)
        {
            if (kill(victim, SIGSTOP) == 0)
                atomic_fetch_add(&stops, 1);
        }
        else if (kill(victim, SIGKILL) == 0)
        {
            atomic_fetch_add(&kills, 1);
            /* On a busy machine starts are slow, and kills land in them:
             * up to two starts in a row after this kill are killed too. */
            for (int k = 0; !monkey_stops && k < 2 && n < 64 && rand_r(&seed) % 2 == 0; k++)
            {
                pid_t hit = kill_next_start(pids, n);

                if (hit == 0)
                    break;
                pids[n++] = hit;
            }
        }
    }
    return NULL;
}

/* The clients and the monkey on a pool of 2 processes with a 1 s deadline
 * for `seconds` (seeds: see workload.h); the pool's counters at the end. */
static walredo_stats
chaos_phase(int seconds, unsigned redo_seed, unsigned submit_seed, unsigned monkey_seed)
{
    walredo_stats s;

    shared_pool = make_pool("2", "1000");
    workload_run(&(workload) {shared_pool, cases, ok_cases, n_ok, check_answer, chaos_monkey,
                              redo_seed, submit_seed, monkey_seed, &stop, &submitted,
                              &callbacks_run}, seconds);
    if (walredo_pool_stats(shared_pool, &s) != WALREDO_OK)
        FAIL("stats: %s", walredo_last_error());
    walredo_pool_free(shared_pool);
    return s;
}

static void
chaos(int seconds)
{
    int fds_before = count_dir("/proc/self/fd");
    int shm_before = orphaned_shm_segments(), shm_after;
    int threads_before = settled_threads();
    int fds_after, threads_after, zombies, left;
    long rss_before = rss_kib();
    pid_t pids[8];
    walredo_stats s;

    s = chaos_phase(seconds, 1, 100, 7);

    left = children(pids, 8, &zombies);
    shm_after = orphaned_shm_segments();
    fds_after = count_dir("/proc/self/fd");
    threads_after = settled_threads();
    printf("test_chaos: %d s of chaos: %ld answered right, %ld deadline errors, %ld failed twice, "
           "%ld wrong; %ld submitted, %ld callbacks; %ld kill -9, %ld SIGSTOP; "
           "retries %" PRIu64 ", timeouts %" PRIu64 ", deaths %" PRIu64 ", spawns %" PRIu64 "\n",
           seconds, atomic_load(&answered_ok), atomic_load(&answered_timeout),
           atomic_load(&answered_failed), atomic_load(&wrong), atomic_load(&submitted),
           atomic_load(&callbacks_run), atomic_load(&kills), atomic_load(&stops),
           s.retries, s.timeouts, s.process_deaths, s.spawns);
    printf("test_chaos: lost 0, children left %d (zombies %d), fds %d -> %d, threads %d -> %d, "
           "orphaned shared memory segments %d -> %d, RSS %ld -> %ld KiB\n", left, zombies,
           fds_before, fds_after, threads_before, threads_after, shm_before, shm_after,
           rss_before, rss_kib());
    if (atomic_load(&wrong) != 0 || atomic_load(&answered_spawn_failed) != 0)
        FAIL("%ld wrong answers, %ld spawn failures", atomic_load(&wrong),
             atomic_load(&answered_spawn_failed));
    if (atomic_load(&callbacks_run) != atomic_load(&submitted))
        FAIL("lost callbacks: %ld submitted, %ld called back",
             atomic_load(&submitted), atomic_load(&callbacks_run));
    if (did_too_little(seconds))
        FAIL("the chaos test did too little to mean anything");
    /* A request fails only when both its attempts were hit. */
    if (atomic_load(&answered_timeout) + atomic_load(&answered_failed) >
        atomic_load(&kills) + atomic_load(&stops))
        FAIL("more failed requests than injected faults");
    if (left != 0 || fds_after != fds_before || threads_after != threads_before ||
        shm_after > shm_before)
        FAIL("leak: %d children, fds %d -> %d, threads %d -> %d, shm segments %d -> %d",
             left, fds_before, fds_after, threads_before, threads_after, shm_before, shm_after);
}

/* ---- 2b. chaos on a busy machine ------------------------------------ */

static void
busy_chaos(int seconds)
{
    pid_t hogs[2], pids[8];
    int fds_before = count_dir("/proc/self/fd");
    int shm_before = orphaned_shm_segments(), shm_after;
    int threads_before = settled_threads();
    int fds_after, threads_after, zombies, left;
    long requests, failed;
    walredo_stats s;

    atomic_store(&stop, 0);
    atomic_store(&answered_ok, 0);
    atomic_store(&answered_timeout, 0);
    atomic_store(&answered_failed, 0);
    atomic_store(&answered_spawn_failed, 0);
    atomic_store(&wrong, 0);
    atomic_store(&kills, 0);
    atomic_store(&stops, 0);
    atomic_store(&start_kills, 0);
    atomic_store(&submitted, 0);
    atomic_store(&callbacks_run, 0);
    monkey_stops = 0;

    for (int i = 0; i < 2; i++)
        hogs[i] = start_cpu_hog();
    s = chaos_phase(seconds, 11, 200, 17);
    for (int i = 0; i < 2; i++)
        stop_cpu_hog(hogs[i]);

    left = children(pids, 8, &zombies);
    shm_after = orphaned_shm_segments();
    fds_after = count_dir("/proc/self/fd");
    threads_after = settled_threads();
    failed = atomic_load(&answered_timeout) + atomic_load(&answered_failed) +
             atomic_load(&answered_spawn_failed);
    requests = atomic_load(&answered_ok) + failed + atomic_load(&wrong);
    printf("test_chaos: busy machine (2 CPU-bound processes beside), %d s: %ld requests answered, "
           "%ld failed (%.2f%%: %ld spawn failures, %ld deadline errors, %ld failed twice), "
           "%ld wrong; %ld submitted, %ld callbacks; %ld kill -9 (%ld of new processes); spawns %" PRIu64
           ", spawn failures %" PRIu64 ", retries %" PRIu64 "\n",
           seconds, requests, failed, 100.0 * failed / (requests ? requests : 1),
           atomic_load(&answered_spawn_failed), atomic_load(&answered_timeout),
           atomic_load(&answered_failed), atomic_load(&wrong), atomic_load(&submitted),
           atomic_load(&callbacks_run), atomic_load(&kills), atomic_load(&start_kills), s.spawns,
           s.spawn_failures,
           s.retries);
    printf("test_chaos: busy machine: children left %d (zombies %d), fds %d -> %d, threads %d -> %d, "
           "orphaned shared memory segments %d -> %d\n", left, zombies, fds_before, fds_after,
           threads_before, threads_after, shm_before, shm_after);
    if (atomic_load(&wrong) != 0)
        FAIL("busy machine: %ld wrong answers", atomic_load(&wrong));
    if (atomic_load(&callbacks_run) != atomic_load(&submitted))
        FAIL("busy machine: lost callbacks: %ld submitted, %ld called back",
             atomic_load(&submitted), atomic_load(&callbacks_run));
    if (did_too_little(seconds))
        FAIL("the busy-machine chaos test did too little to mean anything");
    if (failed * 100 > requests)
        FAIL("busy machine: %ld of %ld requests failed, more than 1%%", failed, requests);
    if (left != 0 || fds_after != fds_before || threads_after != threads_before ||
        shm_after > shm_before)
        FAIL("busy machine: leak: %d children, fds %d -> %d, threads %d -> %d, shm segments %d -> %d",
             left, fds_before, fds_after, threads_before, threads_after, shm_before, shm_after);
}

/* ---- 3. soak -------------------------------------------------------- */

static atomic_long soak_done;
static long soak_total;
static long rss_at_warmup;

static void *
soak_loop(void *arg)
{
    unsigned seed = (unsigned) (uintptr_t) arg;
    uint8_t page[WALREDO_PAGE_SIZE];

    for (;;)
    {
        long i = atomic_fetch_add(&soak_done, 1);
        const fixture *c = &cases[ok_cases[rand_r(&seed) % n_ok]];
        int rc;

        if (i >= soak_total)
            return NULL;
        if (i == soak_total / 10)
            rss_at_warmup = rss_kib();
        rc = walredo_redo(shared_pool, &c->tag, c->base_page, c->records, c->n_records, page);
        if (rc != WALREDO_OK || memcmp(page, c->expected, WALREDO_PAGE_SIZE) != 0)
            FAIL("soak request %ld: %s %s", i, walredo_status_name(rc), walredo_last_error());
    }
}

static void
soak(long requests)
{
    pthread_t t[2];
    double started = now_s();
    long rss_end;
    walredo_stats s;

    soak_total = requests;
    shared_pool = make_pool("2", "10000");
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, soak_loop, (void *) (uintptr_t) (i + 50));
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    rss_end = rss_kib();
    walredo_pool_stats(shared_pool, &s);
    walredo_pool_free(shared_pool);
    printf("test_chaos: soak: %ld requests in %.1f s, %" PRIu64 " spawns, %" PRIu64
           " failures; RSS %ld KiB after 10%%, %ld KiB at the end\n",
           requests, now_s() - started, s.spawns, s.failures, rss_at_warmup, rss_end);
    if (s.failures != 0 || s.requests != (uint64_t) requests)
        FAIL("soak: %" PRIu64 " failures of %" PRIu64, s.failures, s.requests);
#ifdef __SANITIZE_ADDRESS__
    /* ASan's quarantine keeps freed memory resident on purpose: RSS says
     * nothing here; LeakSanitizer checks for leaks at exit instead. */
    printf("test_chaos: soak: resident set not checked under AddressSanitizer\n");
#else
    if (rss_end - rss_at_warmup > 16 * 1024)
        FAIL("soak: the resident set grew by %ld KiB", rss_end - rss_at_warmup);
#endif
}

int
main(int argc, char **argv)
{
    int seconds = argc > 3 ? atoi(argv[3]) : 20;
    long soak_requests = argc > 4 ? atol(argv[4]) : 100000;
    int busy_seconds = argc > 5 ? atoi(argv[5]) : seconds;

    if (argc < 3)
    {
        fprintf(stderr, "usage: test_chaos EXTENSION_PATH FIXTURE_DIR [SECONDS [SOAK_REQUESTS "
                "[BUSY_SECONDS]]]\n");
        return 2;
    }
    extension = argv[1];
    /* Still single-threaded: children made from now on are in it too. */
    (void) unshare(CLONE_NEWIPC);
    n_cases = fixture_load_or_fail(argv[2], cases, MAX_CASES);
    n_ok = fixture_ok_indexes(cases, n_cases, ok_cases, 10);

    coalescing();
    if (seconds > 0)
        chaos(seconds);
    if (busy_seconds > 0)
        busy_chaos(busy_seconds);
    if (soak_requests > 0)
        soak(soak_requests);
    for (int i = 0; i < n_cases; i++)
        fixture_free(&cases[i]);
    printf("test_chaos: all passed\n");
    return 0;
}
