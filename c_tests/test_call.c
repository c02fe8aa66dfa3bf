/*
 * test_call.c: calls for hosts with their own wait loop (walredo_call_*),
 * with real wal-redo processes and the fixtures:
 *
 *  1. start, poll() the descriptor, finish: the page is the fixture's,
 *     byte for byte; the descriptor is close-on-exec and stays readable.
 *  2. many calls at once over every fixture (fast path on), waited for
 *     with one poll() over all descriptors; prints calls per second.
 *  3. a call whose process is stopped (SIGSTOP; processes=1, the default
 *     10 s deadline): finish says WALREDO_IN_PROGRESS and writes nothing;
 *     cancel returns at once, and a walredo_redo on the same pool right
 *     after gets its page far sooner than the deadline (printed; the 3 s
 *     bound is a hang detector); no process is left stopped or alive
 *     beyond the pool's one.
 *  4. cancel of a queued call, and cancel after completion.
 *  5. calls outliving walredo_pool_free: finish gets the page or
 *     WALREDO_SHUTDOWN, never a crash; a cancel after the free is harmless;
 *     a call on a shut-down pool is refused.
 *  6. bad arguments.
 *
 * Run under ASan and valgrind by run.sh (a call leaked or freed twice shows
 * there). A deadlock is caught by alarm().
 *
 *   test_call EXTENSION_PATH FIXTURE_DIR
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
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
#define HANG_DETECTOR_SECONDS 120
/* Far below the 10 s deadline: only a slot kept busy by the stopped process
 * takes this long. */
#define CANCEL_TO_PAGE_LIMIT_MS 3000

static fixture cases[MAX_CASES];
static int n_cases;
static const fixture *ok; /* needs a process, succeeds */
static const char *extension;

static walredo_pool *
make_pool(const char *processes, const char *fast_path)
{
    /* timeout_ms stays at its default, 10 s. */
    return make_test_pool(extension, "processes", processes, "fast_path", fast_path,
                          "idle_timeout_ms", "0", "log_level", "off", NULL);
}

static walredo_call *
start(walredo_pool *pool, const fixture *f)
{
    walredo_call *call = (walredo_call *) 1;
    int rc = walredo_call_start(pool, &f->tag, f->base_page, f->records,
                                f->n_records, &call);

    if (rc != WALREDO_OK)
        FAIL("walredo_call_start: %s: %s", walredo_status_name(rc),
             walredo_last_error());
    if (call == NULL)
        FAIL("walredo_call_start returned OK and no call");
    return call;
}

/* Whether the call's descriptor is readable within ms milliseconds. */
static int
readable(const walredo_call *call, int ms)
{
    struct pollfd pfd = {walredo_call_fd(call), POLLIN, 0};
    int n;

    while ((n = poll(&pfd, 1, ms)) < 0 && errno == EINTR)
        ;
    if (n < 0)
        FAIL("poll: %s", strerror(errno));
    return n == 1 && (pfd.revents & POLLIN);
}

/* Wait for the call, finish it, and check the outcome against f. */
static void
wait_and_check(walredo_call *call, const fixture *f)
{
    uint8_t page[WALREDO_PAGE_SIZE];
    int rc;

    if (!readable(call, 30000))
        FAIL("%s: the descriptor never became readable", f->path);
    if (!readable(call, 0))
        FAIL("%s: the descriptor did not stay readable", f->path);
    rc = walredo_call_finish(call, page);
    if (rc != f->expect_status)
        FAIL("%s: finish returned %s (%s), expected %s", f->path,
             walredo_status_name(rc), walredo_last_error(),
             walredo_status_name(f->expect_status));
    if (rc == WALREDO_OK && memcmp(page, f->expected, WALREDO_PAGE_SIZE) != 0)
        FAIL("%s: the page differs from the fixture's", f->path);
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

/* Our live children, and how many of them are stopped. */
static int
live_children(int *stopped)
{
    pid_t pids[64];
    int n = children_list(pids, 64, 0, NULL);

    *stopped = 0;
    for (int i = 0; i < n && i < 64; i++)
        if (child_state(pids[i]) == 'T' || child_state(pids[i]) == 't')
            (*stopped)++;
    return n;
}

/* ---- 1 ------------------------------------------------------------------- */

static void
test_start_poll_finish(void)
{
    walredo_pool *pool = make_pool("1", "off");
    walredo_call *call = start(pool, ok);
    int flags = fcntl(walredo_call_fd(call), F_GETFD);

    if (flags < 0 || !(flags & FD_CLOEXEC))
        FAIL("the call's descriptor is not close-on-exec");
    wait_and_check(call, ok);
    walredo_pool_free(pool);
    printf("test_call: start, poll, finish: the fixture's page: OK\n");
}

/* ---- 2 ------------------------------------------------------------------- */

#define IN_FLIGHT 64

static void
test_many_calls(void)
{
    walredo_pool *pool = make_pool("2", "on");
    walredo_call *calls[IN_FLIGHT];
    const fixture *of[IN_FLIGHT];
    struct pollfd pfds[IN_FLIGHT];
    int total = n_cases * 20, started = 0, finished = 0;
    double t0;

    /* Warm up: processes started, not timed. */
    wait_and_check(start(pool, ok), ok);
    t0 = now_ms();
    for (int i = 0; i < IN_FLIGHT; i++)
        calls[i] = NULL;
    while (finished < total)
    {
        int n;

        for (int i = 0; i < IN_FLIGHT && started < total; i++)
            if (calls[i] == NULL)
            {
                int rc;

                of[i] = &cases[started++ % n_cases];
                rc = walredo_call_start(pool, &of[i]->tag, of[i]->base_page,
                                        of[i]->records, of[i]->n_records, &calls[i]);
                if (rc == WALREDO_OK)
                    continue;
                /* Refused before it was queued, as walredo_redo refuses it. */
                if (rc != of[i]->expect_status || calls[i] != NULL)
                    FAIL("%s: start returned %s (%s), expected %s", of[i]->path,
                         walredo_status_name(rc), walredo_last_error(),
                         walredo_status_name(of[i]->expect_status));
                finished++;
            }
        if (finished == total)
            break;
        for (int i = 0; i < IN_FLIGHT; i++)
        {
            pfds[i].fd = calls[i] != NULL ? walredo_call_fd(calls[i]) : -1;
            pfds[i].events = POLLIN;
            pfds[i].revents = 0;
        }
        while ((n = poll(pfds, IN_FLIGHT, 30000)) < 0 && errno == EINTR)
            ;
        if (n <= 0)
            FAIL("no call finished within 30 s (%d of %d done)", finished, total);
        for (int i = 0; i < IN_FLIGHT; i++)
            if (calls[i] != NULL && (pfds[i].revents & POLLIN))
            {
                wait_and_check(calls[i], of[i]);
                calls[i] = NULL;
                finished++;
            }
    }
    printf("test_call: %d calls over %d fixtures, %d in flight: %.0f calls/s: OK\n",
           total, n_cases, IN_FLIGHT, total / ((now_ms() - t0) / 1e3));
    walredo_pool_free(pool);
}

/* ---- 3 ------------------------------------------------------------------- */

static void
test_cancel_with_a_stopped_process(void)
{
    walredo_pool *pool = make_pool("1", "off");
    uint8_t page[WALREDO_PAGE_SIZE], sentinel[WALREDO_PAGE_SIZE];
    walredo_call *call;
    walredo_stats stats;
    double cancelled, cancel_took, to_page;
    int rc, alive, stopped;

    wait_and_check(start(pool, ok), ok);
    /* Its process and its spare (spare_process is on by default): the redo
     * after the cancel meets the stopped spare, which is replaced. */
    if (children_wait_running(2, 10.0) != 2 || stop_processes() != 2)
        FAIL("expected two wal-redo processes to stop (the pool's and its spare)");
    call = start(pool, ok);
    sleep_ms(200); /* the worker has sent it to the stopped process */
    memset(page, 0xA5, sizeof page);
    memcpy(sentinel, page, sizeof page);
    rc = walredo_call_finish(call, page);
    if (rc != WALREDO_IN_PROGRESS)
        FAIL("finish of a call not done returned %s", walredo_status_name(rc));
    if (memcmp(page, sentinel, sizeof page) != 0)
        FAIL("finish wrote to the page of a call not done");
    if (readable(call, 0))
        FAIL("the descriptor of a call not done is readable");

    cancelled = now_ms();
    walredo_call_cancel(call);
    cancel_took = now_ms() - cancelled;
    rc = walredo_redo(pool, &ok->tag, ok->base_page, ok->records, ok->n_records, page);
    to_page = now_ms() - cancelled;
    if (rc != WALREDO_OK)
        FAIL("the redo after the cancel: %s: %s", walredo_status_name(rc),
             walredo_last_error());
    if (memcmp(page, ok->expected, WALREDO_PAGE_SIZE) != 0)
        FAIL("the redo after the cancel returned a wrong page");
    printf("test_call: cancel with a stopped process: cancel took %.3f ms, "
           "cancel to the next page %.1f ms (deadline 10000 ms)\n",
           cancel_took, to_page);
    if (to_page > CANCEL_TO_PAGE_LIMIT_MS)
        FAIL("the pool stayed busy after the cancel: %.0f ms", to_page);
    /* The pool's new process, and perhaps the next spare already; the
     * stopped ones are gone. */
    alive = live_children(&stopped);
    if (alive < 1 || alive > 2 || stopped != 0)
        FAIL("after the cancel: %d processes alive (1, and perhaps a spare, "
             "expected), %d stopped",
             alive, stopped);
    if (walredo_pool_stats(pool, &stats) != WALREDO_OK)
        FAIL("stats: %s", walredo_last_error());
    if (stats.retries != 0 || stats.failures != 0 || stats.timeouts != 0 ||
        stats.process_deaths != 0 || stats.cancel_kills != 1 || stats.cancellations != 1)
        FAIL("stats after the cancel: retries %llu, failures %llu, timeouts %llu, "
             "deaths %llu, cancel kills %llu, cancellations %llu",
             (unsigned long long) stats.retries, (unsigned long long) stats.failures,
             (unsigned long long) stats.timeouts,
             (unsigned long long) stats.process_deaths,
             (unsigned long long) stats.cancel_kills,
             (unsigned long long) stats.cancellations);
    walredo_pool_free(pool);
    alive = live_children(&stopped);
    if (alive != 0)
        FAIL("%d processes left after walredo_pool_free", alive);
    printf("test_call: cancel with a stopped process: nothing charged, nothing "
           "left: OK\n");
}

/* ---- 4 ------------------------------------------------------------------- */

static void
test_cancel_queued_and_done(void)
{
    walredo_pool *pool = make_pool("1", "off");
    walredo_call *stuck, *queued, *done;
    uint8_t page[WALREDO_PAGE_SIZE];
    walredo_stats stats;
    int rc, stopped, n;

    wait_and_check(start(pool, ok), ok);
    /* Its process and its spare, as above. */
    if (children_wait_running(2, 10.0) != 2 || stop_processes() != 2)
        FAIL("expected two wal-redo processes to stop (the pool's and its spare)");
    stuck = start(pool, ok);
    sleep_ms(200); /* the worker is stuck on it */
    queued = start(pool, ok);
    walredo_call_cancel(queued);
    walredo_call_cancel(stuck);
    rc = walredo_redo(pool, &ok->tag, ok->base_page, ok->records, ok->n_records, page);
    if (rc != WALREDO_OK || memcmp(page, ok->expected, WALREDO_PAGE_SIZE) != 0)
        FAIL("the redo after two cancels: %s: %s", walredo_status_name(rc),
             walredo_last_error());
    done = start(pool, ok);
    if (!readable(done, 30000))
        FAIL("a call never finished");
    walredo_call_cancel(done); /* done: only frees it */
    walredo_call_cancel(NULL);
    if (walredo_pool_stats(pool, &stats) != WALREDO_OK)
        FAIL("stats: %s", walredo_last_error());
    if (stats.retries != 0 || stats.failures != 0 || stats.cancel_kills != 1 ||
        stats.cancellations != 2)
        FAIL("stats: retries %llu, failures %llu, cancel kills %llu, cancellations %llu",
             (unsigned long long) stats.retries, (unsigned long long) stats.failures,
             (unsigned long long) stats.cancel_kills,
             (unsigned long long) stats.cancellations);
    n = live_children(&stopped);
    if (n < 1 || n > 2 || stopped != 0)
        FAIL("processes left stopped or leaked: %d alive (1, and perhaps a "
             "spare, expected), %d stopped", n, stopped);
    walredo_pool_free(pool);
    printf("test_call: cancel of a queued call and of a finished one: OK\n");
}

/* ---- 5 ------------------------------------------------------------------- */

static void
test_calls_outlive_the_pool(void)
{
    walredo_pool *pool = make_pool("1", "off");
    walredo_call *calls[8], *refused = (walredo_call *) 1;
    uint8_t page[WALREDO_PAGE_SIZE];
    int outcomes[2] = {0, 0}, rc, stopped;

    wait_and_check(start(pool, ok), ok);
    for (int i = 0; i < 8; i++)
        calls[i] = start(pool, ok);
    walredo_pool_free(pool);
    for (int i = 0; i < 7; i++)
    {
        if (!readable(calls[i], 0))
            FAIL("call %d is not done after walredo_pool_free", i);
        rc = walredo_call_finish(calls[i], page);
        if (rc == WALREDO_OK && memcmp(page, ok->expected, WALREDO_PAGE_SIZE) != 0)
            FAIL("call %d: a wrong page", i);
        if (rc != WALREDO_OK && rc != WALREDO_SHUTDOWN)
            FAIL("call %d: %s: %s", i, walredo_status_name(rc), walredo_last_error());
        outcomes[rc == WALREDO_OK ? 0 : 1]++;
    }
    walredo_call_cancel(calls[7]);
    if (live_children(&stopped) != 0)
        FAIL("processes left after walredo_pool_free");

    pool = make_pool("1", "off");
    walredo_pool_shutdown(pool);
    rc = walredo_call_start(pool, &ok->tag, ok->base_page, ok->records,
                            ok->n_records, &refused);
    if (rc != WALREDO_SHUTDOWN || refused != NULL)
        FAIL("a call on a shut-down pool: %s, call %p", walredo_status_name(rc),
             (void *) refused);
    walredo_pool_free(pool);
    printf("test_call: calls outliving walredo_pool_free: %d pages, %d "
           "WALREDO_SHUTDOWN, a cancel after the free: OK\n", outcomes[0], outcomes[1]);
}

/* ---- 6 ------------------------------------------------------------------- */

static void
test_bad_arguments(void)
{
    walredo_pool *pool = make_pool("1", "off");
    walredo_call *call = (walredo_call *) 1;
    uint8_t page[WALREDO_PAGE_SIZE];
    int rc;

    if (walredo_call_fd(NULL) != -1)
        FAIL("walredo_call_fd(NULL) is not -1");
    if (walredo_call_finish(NULL, page) != WALREDO_INVALID_ARGUMENT)
        FAIL("walredo_call_finish(NULL) is not WALREDO_INVALID_ARGUMENT");
    if (walredo_call_start(pool, &ok->tag, NULL, ok->records, ok->n_records, NULL) !=
        WALREDO_INVALID_ARGUMENT)
        FAIL("walredo_call_start with out NULL");
    if (walredo_call_start(NULL, &ok->tag, NULL, ok->records, ok->n_records, &call) !=
        WALREDO_INVALID_ARGUMENT || call != NULL)
        FAIL("walredo_call_start with pool NULL");
    rc = walredo_call_start(pool, NULL, NULL, ok->records, ok->n_records, &call);
    if (rc != WALREDO_INVALID_ARGUMENT || call != NULL)
        FAIL("walredo_call_start with tag NULL: %s", walredo_status_name(rc));
    call = start(pool, ok);
    if (walredo_call_finish(call, NULL) != WALREDO_INVALID_ARGUMENT)
        FAIL("walredo_call_finish with out_page NULL");
    wait_and_check(call, ok); /* the call stayed */
    walredo_pool_free(pool);
    printf("test_call: bad arguments: OK\n");
}

int
main(int argc, char **argv)
{
    n_cases = fixture_load_args(argc, argv, cases, MAX_CASES);
    extension = argv[1];
    ok = fixture_first_ok(cases, n_cases, 2);
    fail_if_hung_after(HANG_DETECTOR_SECONDS);

    test_start_poll_finish();
    test_many_calls();
    test_cancel_with_a_stopped_process();
    test_cancel_queued_and_done();
    test_calls_outlive_the_pool();
    test_bad_arguments();

    for (int i = 0; i < n_cases; i++)
        fixture_free(&cases[i]);
    printf("test_call: all passed\n");
    return 0;
}
