/*
 * test_lifecycle.c: the pool's lifecycle promises through the C ABI, with
 * real wal-redo processes, in races a review found:
 *
 *  1. A submit callback calls walredo_redo on its own pool while another
 *     request waits in the queue, with one process (one worker thread): the
 *     nested call must not wait for the queue its own worker serves.
 *  2. walredo_pool_shutdown and walredo_pool_free at once: free must wait for
 *     the shutdown in progress (no use after free: run under ASan and
 *     valgrind), and when it returns no process of the pool may be alive.
 *  3. Calls racing walredo_pool_free: threads call walredo_pool_stats and
 *     walredo_pool_metrics_text on a pool while it is freed. A call that has
 *     begun (one stopped at its entry while free runs) must never read freed
 *     memory: it returns WALREDO_OK or WALREDO_SHUTDOWN (ASan and valgrind
 *     see any read of the freed handle).
 *
 * A stopped (SIGSTOP) wal-redo process makes a request last until its
 * deadline, so each race happens in a known order. A deadlock is caught by
 * alarm().
 *
 *   test_lifecycle EXTENSION_PATH FIXTURE_DIR
 */
#define _GNU_SOURCE
#include <errno.h>
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
#include "clock.h"
#include "fixture.h"
#include "pools.h"

#define MAX_CASES 256
/* Generous: only a deadlock takes this long. */
#define HANG_DETECTOR_SECONDS 120

static fixture cases[MAX_CASES];
static const fixture *ok; /* a case that needs a process and succeeds */
static const char *extension;

static walredo_pool *
make_pool(const char *processes, const char *timeout_ms)
{
    /* fast_path off: every request goes to a process, none is answered
     * from an image. */
    return make_test_pool(extension, "processes", processes, "timeout_ms", timeout_ms,
                          "fast_path", "off", "idle_timeout_ms", "0", "log_level", "off",
                          NULL);
}

static int
redo_ok_case(walredo_pool *pool)
{
    uint8_t page[WALREDO_PAGE_SIZE];
    int rc = walredo_redo(pool, &ok->tag, ok->base_page, ok->records,
                          ok->n_records, page);

    if (rc == WALREDO_OK && memcmp(page, ok->expected, WALREDO_PAGE_SIZE) != 0)
        FAIL("walredo_redo returned a wrong page");
    return rc;
}

/* SIGSTOP every wal-redo process of ours; returns how many. */
static int
stop_processes(void)
{
    pid_t pids[64];
    int n = children_list(pids, 64, 0, NULL), stopped = 0;

    for (int i = 0; i < n && i < 64; i++)
        if (child_is_postgres(pids[i]) && kill(pids[i], SIGSTOP) == 0)
            stopped++;
    return stopped;
}

/* ---- 1. walredo_redo from a submit callback ------------------------------ */

static walredo_pool *nested_pool;
static atomic_int nested_status = -1, queued_status = -1, callbacks_done;

static void
on_done_then_redo(void *userdata, int status, const uint8_t *page,
                  const char *message)
{
    (void) userdata;
    (void) page;
    if (status != WALREDO_OK)
        FAIL("the stopped request failed: %s", message);
    atomic_store(&nested_status, redo_ok_case(nested_pool));
    atomic_fetch_add(&callbacks_done, 1);
}

static void
on_done(void *userdata, int status, const uint8_t *page, const char *message)
{
    (void) userdata;
    (void) message;
    if (status == WALREDO_OK && memcmp(page, ok->expected, WALREDO_PAGE_SIZE) != 0)
        FAIL("a submitted request got a wrong page");
    atomic_store(&queued_status, status);
    atomic_fetch_add(&callbacks_done, 1);
}

static void
test_redo_from_a_callback(void)
{
    nested_pool = make_pool("1", "1000");
    if (redo_ok_case(nested_pool) != WALREDO_OK)
        FAIL("warm-up: %s", walredo_last_error());
    /* Its process and its spare (spare_process is on by default, started a
     * few ms after the first start): the retry below meets the stopped
     * spare first, which is replaced. */
    if (children_wait_running(2, 10.0) != 2 || stop_processes() != 2)
        FAIL("expected two wal-redo processes to stop (the pool's and its spare)");
    /* The worker takes this one and waits for the stopped process until its
     * deadline; then it is retried on a fresh process, and its callback
     * calls walredo_redo while the second request is queued. */
    if (walredo_submit(nested_pool, &ok->tag, ok->base_page, ok->records,
                       ok->n_records, on_done_then_redo, NULL) != WALREDO_OK)
        FAIL("submit: %s", walredo_last_error());
    sleep_ms(100);
    if (walredo_submit(nested_pool, &ok->tag, ok->base_page, ok->records,
                       ok->n_records, on_done, NULL) != WALREDO_OK)
        FAIL("submit: %s", walredo_last_error());
    while (atomic_load(&callbacks_done) < 2)
        sleep_ms(5);
    if (atomic_load(&nested_status) != WALREDO_OK ||
        atomic_load(&queued_status) != WALREDO_OK)
        FAIL("nested redo: %s, queued request: %s",
             walredo_status_name(atomic_load(&nested_status)),
             walredo_status_name(atomic_load(&queued_status)));
    walredo_pool_free(nested_pool);
    printf("test_lifecycle: walredo_redo from a callback, with a request queued: OK\n");
}

/* ---- 2. shutdown and free at once ---------------------------------------- */

static atomic_int blocked_status = -1;

static void *
blocked_redo(void *arg)
{
    atomic_store(&blocked_status, redo_ok_case(arg));
    return NULL;
}

static void *
shut_down(void *arg)
{
    walredo_pool_shutdown(arg);
    return NULL;
}

static void
test_shutdown_and_free_at_once(void)
{
    walredo_pool *pool = make_pool("2", "1500");
    pthread_t redo_thread, shutdown_thread;
    pid_t pids[16];
    int alive, zombies;

    if (redo_ok_case(pool) != WALREDO_OK)
        FAIL("warm-up: %s", walredo_last_error());
    /* The slot used and the spare (the other slot has no process yet). */
    if (children_wait_running(2, 10.0) != 2 || stop_processes() != 2)
        FAIL("expected two wal-redo processes to stop (a slot's and the spare)");
    /* This request waits for the stopped process (the slot last used is
     * taken first) until its deadline: shutdown waits for it. */
    if (pthread_create(&redo_thread, NULL, blocked_redo, pool) != 0)
        FAIL("pthread_create");
    sleep_ms(200);
    if (pthread_create(&shutdown_thread, NULL, shut_down, pool) != 0)
        FAIL("pthread_create");
    sleep_ms(200);
    walredo_pool_free(pool);
    alive = children_list(pids, 16, 1, &zombies);
    if (alive != 0)
        FAIL("walredo_pool_free returned with %d child processes left "
             "(%d zombies), first pid %d", alive, zombies, alive > 0 ? (int) pids[0] : 0);
    pthread_join(shutdown_thread, NULL);
    pthread_join(redo_thread, NULL);
    if (atomic_load(&blocked_status) != WALREDO_SHUTDOWN &&
        atomic_load(&blocked_status) != WALREDO_TIMEOUT)
        FAIL("the blocked request ended with %s",
             walredo_status_name(atomic_load(&blocked_status)));
    printf("test_lifecycle: shutdown and free at once: free waited, nothing left, "
           "the blocked request got %s: OK\n",
           walredo_status_name(atomic_load(&blocked_status)));
}

/* ---- 3. calls racing walredo_pool_free ---------------------------------- */

#define RACERS 4

static atomic_int racers_ready;

/* Calls stats and metrics until it has seen WALREDO_SHUTDOWN many times:
 * some of its calls began before the free, some during, some after. */
static void *
race_free(void *arg)
{
    walredo_pool *pool = arg;
    int after_shutdown = 0;
    size_t needed;

    atomic_fetch_add(&racers_ready, 1);
    for (long i = 0; after_shutdown < 200; i++)
    {
        walredo_stats stats;
        int rc = (i % 2 == 0)
            ? walredo_pool_stats(pool, &stats)
            : walredo_pool_metrics_text(pool, NULL, 0, &needed);

        if (rc == WALREDO_SHUTDOWN)
            after_shutdown++;
        else if (i % 2 == 0 && rc != WALREDO_OK)
            FAIL("walredo_pool_stats during free: %s", walredo_status_name(rc));
        else if (i % 2 == 1 && rc != WALREDO_BUFFER_TOO_SMALL)
            FAIL("walredo_pool_metrics_text during free: %s", walredo_status_name(rc));
        else if (i % 2 == 0 && (stats.requests > 1000000 || stats.live_processes > 1000))
            FAIL("stats read during free are garbage: requests %llu, live processes %llu",
                 (unsigned long long) stats.requests,
                 (unsigned long long) stats.live_processes);
    }
    return NULL;
}

static void
test_calls_racing_free(void)
{
    int rounds = getenv("WALREDO_TEST_UNDER_VALGRIND") != NULL ? 5 : 40;

    for (int round = 0; round < rounds; round++)
    {
        walredo_pool *pool = make_pool("1", "1000");
        pthread_t racers[RACERS];

        atomic_store(&racers_ready, 0);
        for (int i = 0; i < RACERS; i++)
            if (pthread_create(&racers[i], NULL, race_free, pool) != 0)
                FAIL("pthread_create");
        while (atomic_load(&racers_ready) < RACERS)
            sched_yield();
        /* Let them get going: calls are in flight when free runs. */
        sleep_ms(round % 3);
        walredo_pool_free(pool);
        for (int i = 0; i < RACERS; i++)
            pthread_join(racers[i], NULL);
    }
    printf("test_lifecycle: calls racing walredo_pool_free (%d rounds, %d threads): "
           "each got OK or WALREDO_SHUTDOWN, nothing read freed memory: OK\n",
           rounds, RACERS);
}

int
main(int argc, char **argv)
{
    int n = fixture_load_args(argc, argv, cases, MAX_CASES);

    extension = argv[1];
    ok = fixture_first_ok(cases, n, 2);
    fail_if_hung_after(HANG_DETECTOR_SECONDS);

    test_redo_from_a_callback();
    test_shutdown_and_free_at_once();
    test_calls_racing_free();

    for (int i = 0; i < n; i++)
        fixture_free(&cases[i]);
    printf("test_lifecycle: all passed\n");
    return 0;
}
