/*
 * test_pool.c: the pool's C entry points beyond walredo_redo, with real pages:
 * a log callback, walredo_submit with callbacks, walredo_pool_stats and
 * walredo_pool_metrics_text.
 *
 *   test_pool EXTENSION_PATH FIXTURE_DIR
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <walredo.h>

#include "check.h"
#include "fixture.h"
#include "pools.h"

#define MAX_CASES 256

static fixture cases[MAX_CASES];
static int n_cases;
static atomic_int calls[MAX_CASES];
static atomic_int right[MAX_CASES];

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_errors, log_warnings, log_fatal;

static void
on_log(void *userdata, int level, const char *message)
{
    if (userdata != (void *) &log_lock)
        abort();
    pthread_mutex_lock(&log_lock);
    if (level == WALREDO_LOG_ERROR)
        log_errors++;
    if (level == WALREDO_LOG_WARN)
        log_warnings++;
    if (strstr(message, "FATAL") || strstr(message, "PANIC"))
        log_fatal++;
    pthread_mutex_unlock(&log_lock);
}

static void
on_done(void *userdata, int status, const uint8_t *page, const char *message)
{
    int i = (int) (intptr_t) userdata;

    if (status == cases[i].expect_status &&
        (status != WALREDO_OK ||
         (page != NULL && memcmp(page, cases[i].expected, WALREDO_PAGE_SIZE) == 0)) &&
        message != NULL && (status == WALREDO_OK) == (message[0] == '\0'))
        atomic_fetch_add(&right[i], 1);
    atomic_fetch_add(&calls[i], 1);
}

/* The first case expected to succeed. */
static int
ok_case(void)
{
    for (int i = 0; i < n_cases; i++)
        if (cases[i].expect_status == WALREDO_OK)
            return i;
    FAIL("no successful case");
}

int
main(int argc, char **argv)
{
    walredo_config *cfg;
    walredo_pool *pool;
    walredo_stats stats;
    char err[256];
    int n_failing = 0, submitted = 0, waited = 0;
    size_t needed = 0;
    char *text;

    if (argc != 3)
    {
        fprintf(stderr, "usage: test_pool EXTENSION_PATH FIXTURE_DIR\n");
        return 2;
    }
    if ((n_cases = fixture_load_dir(argv[2], cases, MAX_CASES, err, sizeof(err))) < 0)
        FAIL("%s", err);
    if (n_cases < 10)
        FAIL("only %d fixtures", n_cases);

    if (walredo_set_logger(on_log, (void *) &log_lock, 9) != WALREDO_INVALID_ARGUMENT)
        FAIL("log level 9 accepted");
    if (walredo_set_logger(on_log, (void *) &log_lock, WALREDO_LOG_WARN) != WALREDO_OK)
        FAIL("set_logger: %s", walredo_last_error());

    cfg = walredo_config_new();
    if (walredo_config_set(cfg, "extension_path", argv[1]) != WALREDO_OK ||
        walredo_config_set(cfg, "processes", "1") != WALREDO_OK ||
        walredo_config_set(cfg, "queue_depth", "1000") != WALREDO_OK ||
        walredo_config_set(cfg, "idle_timeout_ms", "0") != WALREDO_OK)
        FAIL("config: %s", walredo_last_error());
    set_test_server(cfg);
    if (walredo_pool_new(cfg, &pool) != WALREDO_OK)
        FAIL("pool_new: %s", walredo_last_error());
    walredo_config_free(cfg);

    /* Every case through walredo_submit: each callback once, each answer right. */
    for (int i = 0; i < n_cases; i++)
    {
        int rc = walredo_submit(pool, &cases[i].tag, cases[i].base_page, cases[i].records,
                                cases[i].n_records, on_done, (void *) (intptr_t) i);

        if (cases[i].expect_status == WALREDO_MALFORMED_RECORD ||
            cases[i].expect_status == WALREDO_INVALID_ARGUMENT)
        {
            /* Refused up front: no callback, ever. */
            if (rc != cases[i].expect_status)
                FAIL("case %d: submit returned %s", i, walredo_status_name(rc));
            atomic_store(&calls[i], 1);
            atomic_store(&right[i], 1);
            continue;
        }
        if (rc != WALREDO_OK)
            FAIL("case %d: submit: %s %s", i, walredo_status_name(rc), walredo_last_error());
        submitted++;
        if (cases[i].expect_status != WALREDO_OK)
            n_failing++;
    }
    for (;;)
    {
        int done = 0;

        for (int i = 0; i < n_cases; i++)
            done += atomic_load(&calls[i]) > 0;
        if (done == n_cases || waited++ > 3000)
            break;
        usleep(10000);
    }
    usleep(100000);             /* a second callback would show up by now */
    for (int i = 0; i < n_cases; i++)
    {
        if (atomic_load(&calls[i]) != 1)
            FAIL("case %d: %d callbacks", i, atomic_load(&calls[i]));
        if (atomic_load(&right[i]) != 1)
            FAIL("case %d: wrong answer in its callback", i);
    }
    printf("test_pool: %d requests submitted, every callback ran once with the right answer "
           "(%d expected failures)\n", submitted, n_failing);

    /* The failing case's process wrote FATAL or PANIC on stderr: forwarded. */
    pthread_mutex_lock(&log_lock);
    printf("test_pool: log callback got %d error and %d warning lines, %d with FATAL/PANIC\n",
           log_errors, log_warnings, log_fatal);
    if (n_failing > 0 && (log_fatal == 0 || log_errors == 0))
        FAIL("the process's error never reached the log callback");
    pthread_mutex_unlock(&log_lock);

    if (walredo_pool_stats(pool, &stats) != WALREDO_OK)
        FAIL("stats: %s", walredo_last_error());
    if (walredo_pool_stats(pool, NULL) != WALREDO_INVALID_ARGUMENT ||
        walredo_pool_stats(NULL, &stats) != WALREDO_INVALID_ARGUMENT)
        FAIL("stats accepted NULL");
    printf("test_pool: stats: requests %llu, failures %llu, retries %llu, spawns %llu, "
           "live %llu, redo time count %llu\n",
           (unsigned long long) stats.requests, (unsigned long long) stats.failures,
           (unsigned long long) stats.retries, (unsigned long long) stats.spawns,
           (unsigned long long) stats.live_processes,
           (unsigned long long) stats.redo_time_us.count);
    if (stats.requests != (uint64_t) n_cases ||
        stats.failures != (uint64_t) (n_cases - submitted + n_failing) ||
        stats.retries < (uint64_t) n_failing ||
        stats.live_processes != stats.spawns - stats.process_deaths - stats.retirements ||
        stats.redo_time_us.count != (uint64_t) (submitted - n_failing) ||
        stats.records_per_request.count != (uint64_t) submitted)
        FAIL("unexpected stats");

    if (walredo_pool_metrics_text(pool, NULL, 0, &needed) != WALREDO_BUFFER_TOO_SMALL || needed < 100)
        FAIL("metrics size query: needed %zu", needed);
    text = malloc(needed);
    if (walredo_pool_metrics_text(pool, text, needed - 1, NULL) != WALREDO_BUFFER_TOO_SMALL)
        FAIL("a buffer one byte short was accepted");
    if (walredo_pool_metrics_text(pool, text, needed, &needed) != WALREDO_OK)
        FAIL("metrics: %s", walredo_last_error());
    {
        char expect[64];

        snprintf(expect, sizeof(expect), "walredo_requests_total %d\n", n_cases);
        if (strlen(text) != needed - 1 || strstr(text, expect) == NULL ||
            strstr(text, "walredo_redo_seconds_bucket{le=\"+Inf\"}") == NULL)
            FAIL("metrics text:\n%s", text);
    }
    free(text);
    printf("test_pool: metrics text is %zu bytes of Prometheus exposition\n", needed);

    walredo_pool_free(pool);

    /* Back-pressure: with room for one queued request, submissions outrun
     * the process and are refused as busy; every accepted one is answered. */
    {
        int accepted = 0, busy = 0, ok = ok_case();

        cfg = walredo_config_new();
        if (walredo_config_set(cfg, "extension_path", argv[1]) != WALREDO_OK)
            FAIL("busy pool: %s", walredo_last_error());
        set_test_server(cfg);
        if (walredo_config_set(cfg, "processes", "1") != WALREDO_OK ||
            walredo_config_set(cfg, "queue_depth", "1") != WALREDO_OK ||
            walredo_pool_new(cfg, &pool) != WALREDO_OK)
            FAIL("busy pool: %s", walredo_last_error());
        walredo_config_free(cfg);
        atomic_store(&calls[ok], 0);
        atomic_store(&right[ok], 0);
        for (int i = 0; i < 1000 && busy == 0; i++)
        {
            int rc = walredo_submit(pool, &cases[ok].tag, cases[ok].base_page,
                                    cases[ok].records, cases[ok].n_records, on_done,
                                    (void *) (intptr_t) ok);

            if (rc == WALREDO_OK)
                accepted++;
            else if (rc == WALREDO_BUSY)
                busy++;
            else
                FAIL("submit: %s", walredo_status_name(rc));
        }
        if (busy == 0)
            FAIL("a queue of 1 never filled up");
        for (int i = 0; i < 3000 && atomic_load(&calls[ok]) < accepted; i++)
            usleep(1000);
        if (atomic_load(&calls[ok]) != accepted || atomic_load(&right[ok]) != accepted)
            FAIL("%d accepted, %d answered, %d right", accepted,
                 atomic_load(&calls[ok]), atomic_load(&right[ok]));
        printf("test_pool: a queue of 1: WALREDO_BUSY after %d accepted submissions, "
               "all of which were answered right\n", accepted);
        walredo_pool_free(pool);
    }

    if (walredo_set_logger(NULL, NULL, WALREDO_LOG_WARN) != WALREDO_OK)
        FAIL("set_logger(NULL): %s", walredo_last_error());
    for (int i = 0; i < n_cases; i++)
        fixture_free(&cases[i]);
    printf("test_pool: all passed\n");
    return 0;
}
