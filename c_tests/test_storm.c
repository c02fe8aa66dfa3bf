/*
 * test_storm.c: deadlines under a storm of outside faults (issue 22, item 12).
 *
 *   test_storm EXTENSION_PATH FIXTURE_DIR [SECONDS [MAX_FAILED_PERMILLE [TIMEOUT_MS]]]
 *
 * A pool at the default settings (timeout_ms 10000 unless TIMEOUT_MS is
 * given, attempt_timeout_ms a quarter of it, one process per CPU), 8 threads calling walredo_redo and 2
 * calling walredo_submit with real pages, two CPU-bound processes beside
 * them, and a monkey that every 15-25 ms sends a random wal-redo process
 * SIGKILL (two times in three) or SIGSTOP (one in three) for SECONDS
 * (default 20). Nothing here crashes by itself: every fault is an outside
 * kill or a hang, which are not a request's fault. So:
 *
 *  - no request may fail before its deadline (a failure that came sooner
 *    than 95% of timeout_ms after the call is counted as early);
 *  - none may be wrong or lost, and nothing may be left behind;
 *  - the share of failed requests is reported, and must stay at or under
 *    MAX_FAILED_PERMILLE per mille when that is given (run.sh gives it only
 *    where it is robust: see there).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
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
/* The requests' deadline: the default timeout_ms unless given. */
static double deadline_s = 10.0;

static fixture cases[MAX_CASES];
static int ok_cases[MAX_CASES];
static int n_ok;
static walredo_pool *pool;

static atomic_int stop;
static atomic_long answered_ok, failed, early, wrong, kills, stops;
static atomic_long submitted, callbacks_run;
static atomic_long failed_by_status[16];
/* The longest a failed request took, in ms (for the report). */
static atomic_long longest_failure_ms;

static void
check_answer(const fixture *c, int rc, const uint8_t *page, const char *message, double started)
{
    double took = now_s() - started;

    if (rc != WALREDO_OK && rc != WALREDO_TIMEOUT)
        fprintf(stderr, "test_storm: %s: %s\n", walredo_status_name(rc), message);
    if (rc == WALREDO_OK)
    {
        if (memcmp(page, c->expected, WALREDO_PAGE_SIZE) != 0)
            atomic_fetch_add(&wrong, 1);
        else
            atomic_fetch_add(&answered_ok, 1);
        return;
    }
    if (rc == WALREDO_SHUTDOWN || rc < 0 || rc >= 16)
    {
        atomic_fetch_add(&wrong, 1);
        return;
    }
    atomic_fetch_add(&failed, 1);
    atomic_fetch_add(&failed_by_status[rc], 1);
    if (took < 0.95 * deadline_s)
    {
        atomic_fetch_add(&early, 1);
        fprintf(stderr, "test_storm: a request failed after %.3f s, before its deadline: %s\n",
                took, walredo_status_name(rc));
    }
    long ms = (long) (took * 1000);
    long seen = atomic_load(&longest_failure_ms);

    while (ms > seen && !atomic_compare_exchange_weak(&longest_failure_ms, &seen, ms))
        ;
}

static void *
monkey(void *arg)
{
    unsigned seed = (unsigned) (uintptr_t) arg;

    while (!atomic_load(&stop))
    {
        pid_t pids[64], victim;
        int n;

        usleep(15000 + rand_r(&seed) % 10000);
        n = children_list(pids, 64, 0, NULL);
        if (n <= 0)
            continue;
        victim = pids[rand_r(&seed) % (n > 64 ? 64 : n)];
        if (!child_is_postgres(victim))
            continue;
        if (rand_r(&seed) % 3 == 0)
        {
            if (kill(victim, SIGSTOP) == 0)
                atomic_fetch_add(&stops, 1);
        }
        else if (kill(victim, SIGKILL) == 0)
            atomic_fetch_add(&kills, 1);
    }
    return NULL;
}

int
main(int argc, char **argv)
{
    int seconds = argc > 3 ? atoi(argv[3]) : 20;
    int max_permille = argc > 4 ? atoi(argv[4]) : -1;
    const char *timeout_ms = argc > 5 ? argv[5] : NULL;
    int under_valgrind = getenv("WALREDO_TEST_UNDER_VALGRIND") != NULL;
    pid_t hogs[2], left_pids[8];
    int n, left, zombies;
    long requests;
    walredo_stats s;

    if (argc < 3)
    {
        fprintf(stderr, "usage: test_storm EXTENSION_PATH FIXTURE_DIR [SECONDS "
                "[MAX_FAILED_PERMILLE [TIMEOUT_MS]]]\n");
        return 2;
    }
    n = fixture_load_or_fail(argv[2], cases, MAX_CASES);
    n_ok = fixture_ok_indexes(cases, n, ok_cases, 10);

    for (int i = 0; i < 2; i++)
        hogs[i] = start_cpu_hog();
    /* The default settings: only the extension and quiet logs (and, under
     * valgrind, threads the pool does not place, as test_chaos.c explains:
     * there the monkey gets few turns, and the run is about memory errors). */
    if (timeout_ms != NULL)
        deadline_s = atoi(timeout_ms) / 1000.0;
    else
        timeout_ms = "10000";
    pool = make_test_pool(argv[1], "log_level", "off", "timeout_ms", timeout_ms,
                          "follow_caller_cpu", under_valgrind ? "off" : "on", NULL);
    workload_run(&(workload) {pool, cases, ok_cases, n_ok, check_answer, monkey, 1, 100, 7,
                              &stop, &submitted, &callbacks_run}, seconds);
    if (walredo_pool_stats(pool, &s) != WALREDO_OK)
        FAIL("stats: %s", walredo_last_error());
    walredo_pool_free(pool);
    for (int i = 0; i < 2; i++)
        stop_cpu_hog(hogs[i]);
    left = children_list(left_pids, 8, 1, &zombies);

    requests = atomic_load(&answered_ok) + atomic_load(&failed) + atomic_load(&wrong);
    printf("test_storm: %d s, timeout_ms %.0f, 2 CPU-bound processes beside, a fault every "
           "~20 ms (%ld kill -9, %ld SIGSTOP): %ld requests, %ld failed (%.3f%%: %ld "
           "deadline, %ld redo failed, %ld spawn failed; longest %ld ms), %ld before their "
           "deadline, %ld wrong; retries %llu, timeouts %llu, deaths %llu, spawns %llu\n",
           seconds, deadline_s * 1000, atomic_load(&kills), atomic_load(&stops), requests, atomic_load(&failed),
           100.0 * atomic_load(&failed) / (requests ? requests : 1),
           atomic_load(&failed_by_status[WALREDO_TIMEOUT]),
           atomic_load(&failed_by_status[WALREDO_REDO_FAILED]),
           atomic_load(&failed_by_status[WALREDO_SPAWN_FAILED]),
           atomic_load(&longest_failure_ms), atomic_load(&early), atomic_load(&wrong),
           (unsigned long long) s.retries, (unsigned long long) s.timeouts,
           (unsigned long long) s.process_deaths, (unsigned long long) s.spawns);
    if (atomic_load(&wrong) != 0)
        FAIL("%ld wrong answers", atomic_load(&wrong));
    if (atomic_load(&callbacks_run) != atomic_load(&submitted))
        FAIL("lost callbacks: %ld submitted, %ld called back", atomic_load(&submitted),
             atomic_load(&callbacks_run));
    if (atomic_load(&answered_ok) < (under_valgrind ? 10 : 100) ||
        (under_valgrind ? atomic_load(&kills) + atomic_load(&stops) < 1
                        : atomic_load(&kills) < seconds))
        FAIL("the storm did too little to mean anything");
    if (atomic_load(&early) != 0)
        FAIL("%ld requests failed before their deadline", atomic_load(&early));
    if (max_permille >= 0 && atomic_load(&failed) * 1000 > max_permille * requests)
        FAIL("%ld of %ld requests failed, more than %d per mille", atomic_load(&failed),
             requests, max_permille);
    if (left != 0)
        FAIL("%d children left (%d zombies)", left, zombies);
    for (int i = 0; i < n; i++)
        fixture_free(&cases[i]);
    printf("test_storm: all passed\n");
    return 0;
}
