/*
 * test_redo.c: reconstruct real pages from real WAL (fixtures written by
 * testkit's make-fixtures) and compare them with PostgreSQL's own archive
 * recovery; then threads, timeouts, killed processes and clean-up.
 *
 * Usage: test_redo EXTENSION_PATH FIXTURE_DIR
 * Environment: TEST_REDO_QUICK=1 runs one thread round instead of three;
 * TEST_REDO_LOG_LEVEL sets the pools' log_level (default "off").
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <walredo.h>

#include "children.h"
#include "clock.h"
#include "fixture.h"
#include "pools.h"

#define MIN_CASES 10
#define THREADS 4

static void kill_children_quietly(void);

/* On failure, leave no (possibly stopped) child behind. */
#define CHECK_CLEANUP() kill_children_quietly()
#include "check.h"

static fixture *cases;
static size_t n_cases;
static size_t *ok_cases; /* indexes of the cases that expect WALREDO_OK */
static size_t n_ok;
static const char *log_level = "off";

/* ---- child processes, from /proc ---------------------------------------- */

/* children_list, failing the test if /proc cannot be read. */
static int list_children(pid_t *out, int max, int with_zombies)
{
    int n = children_list(out, max, with_zombies, NULL);

    if (n < 0)
        FAIL("opendir /proc: %s", strerror(errno));
    return n;
}

static void kill_children_quietly(void)
{
    pid_t pids[256];
    int n = children_list(pids, 256, 1, NULL);

    for (int i = 0; i < n && i < 256; i++)
        kill(pids[i], SIGKILL);
}

/* ---- fixtures ------------------------------------------------------------ */

static void load_cases(const char *dir)
{
    enum { MAX_FIXTURES = 4096 };
    char err[512];
    int n;

    cases = calloc(MAX_FIXTURES, sizeof *cases);
    ok_cases = calloc(MAX_FIXTURES, sizeof *ok_cases);
    if (cases == NULL || ok_cases == NULL)
        FAIL("out of memory");
    n = fixture_load_dir(dir, cases, MAX_FIXTURES, err, sizeof err);
    if (n < 0)
        FAIL("cannot load fixture: %s", err);
    n_cases = (size_t)n;
    for (size_t i = 0; i < n_cases; i++)
        if (cases[i].expect_status == WALREDO_OK)
            ok_cases[n_ok++] = i;
    CHECK(n_cases >= MIN_CASES,
          "%zu fixture cases in %s (case-000.bin, case-001.bin, ...), "
          "at least %d needed",
          n_cases, dir, MIN_CASES);
    CHECK(n_ok > 0, "no fixture case expects WALREDO_OK");
}

static int expect_parse_error(const uint8_t *img, size_t len, const char *why)
{
    fixture f;
    char err[256] = "";

    if (fixture_parse(why, img, len, &f, err, sizeof err) == 0) {
        fixture_free(&f);
        FAIL("fixture parser accepted a %s image (%zu bytes)", why, len);
    }
    CHECK(err[0] != '\0', "fixture parser gave no message for a %s image",
          why);
    return 0;
}

/* The loader must refuse every damaged copy of a real fixture. */
static void check_parser(const fixture *good)
{
    size_t len = good->buf_len, cut, step, off;
    uint8_t *img = malloc(len + 1);
    fixture f;
    char err[256];
    int tried = 0;

    if (img == NULL)
        FAIL("out of memory");
    memcpy(img, good->buf, len);
    CHECK(fixture_parse("copy", img, len, &f, err, sizeof err) == 0,
          "fixture parser refused a copy of %s: %s", good->path, err);
    CHECK(f.n_records == good->n_records &&
              f.expect_status == good->expect_status &&
              f.tag.relnode == good->tag.relnode,
          "fixture parser read a copy of %s differently", good->path);
    fixture_free(&f);

    step = len / 3000 + 1;
    for (cut = 0; cut < len; cut += (cut < 64 ? 1 : step)) {
        expect_parse_error(img, cut, "truncated");
        tried++;
    }
    expect_parse_error(img, len - 1, "truncated");

    img[len] = 0;
    expect_parse_error(img, len + 1, "trailing-byte");

    img[7] = '2';
    expect_parse_error(img, len, "bad-magic");
    img[7] = '1';

    /* forknum 0x100 */
    img[8 + 12 + 1] = 1;
    expect_parse_error(img, len, "forknum-too-big");
    img[8 + 12 + 1] = good->buf[8 + 12 + 1];

    /* n_records 0xFFFFFFFF */
    off = 8 + 20 + 4 + (good->base_page != NULL ? WALREDO_PAGE_SIZE : 0);
    memset(img + off, 0xFF, 4);
    expect_parse_error(img, len, "huge-n_records");
    memcpy(img + off, good->buf + off, 4);

    /* a record length past the end of the file */
    if (good->n_records > 0) {
        memset(img + off + 4 + 8, 0xFF, 4);
        expect_parse_error(img, len, "huge-record-length");
        memcpy(img + off + 4 + 8, good->buf + off + 4 + 8, 4);
    }

    /* expect_status 99 */
    off = len - 4 - (good->expected != NULL ? WALREDO_PAGE_SIZE : 0);
    img[off] = 99;
    expect_parse_error(img, len, "bad-expect_status");
    img[off] = good->buf[off];

    CHECK(fixture_load("/nonexistent/case-000.bin", &f, err, sizeof err) != 0,
          "fixture_load of a missing file succeeded");
    fixture_free(&f); /* empty: must be harmless */
    fixture_free(NULL);
    free(img);
    printf("test_redo: fixture parser refused %d damaged copies of %s\n",
           tried + 8, good->path);
}

/* ---- running cases ------------------------------------------------------- */

static walredo_pool *make_pool(const char *extension, const char *processes,
                               const char *timeout_ms,
                               const char *attempt_timeout_ms)
{
    walredo_config *cfg = walredo_config_new();
    walredo_pool *pool = NULL;
    int rc;

    CHECK(cfg != NULL, "walredo_config_new returned NULL");
    if (walredo_config_set(cfg, "extension_path", extension) != WALREDO_OK ||
        walredo_config_set(cfg, "processes", processes) != WALREDO_OK ||
        walredo_config_set(cfg, "log_level", log_level) != WALREDO_OK ||
        (timeout_ms != NULL &&
         walredo_config_set(cfg, "timeout_ms", timeout_ms) != WALREDO_OK) ||
        (attempt_timeout_ms != NULL &&
         walredo_config_set(cfg, "attempt_timeout_ms", attempt_timeout_ms) !=
             WALREDO_OK))
        FAIL("walredo_config_set: %s", walredo_last_error());
    set_test_server(cfg);
    rc = walredo_pool_new(cfg, &pool);
    CHECK(rc == WALREDO_OK && pool != NULL, "walredo_pool_new: %s: %s",
          walredo_status_name(rc), walredo_last_error());
    walredo_config_free(cfg);
    return pool;
}

static int redo_case(walredo_pool *pool, const fixture *c, uint8_t *out)
{
    return walredo_redo(pool, &c->tag, c->base_page, c->records,
                        c->n_records, out);
}

static long first_difference(const uint8_t *a, const uint8_t *b)
{
    long i;

    for (i = 0; i < WALREDO_PAGE_SIZE; i++)
        if (a[i] != b[i])
            return i;
    return -1;
}

/* Run an OK case and require PostgreSQL's page. */
static void check_ok_case(walredo_pool *pool, size_t idx, const char *when)
{
    static uint8_t out[WALREDO_PAGE_SIZE];
    const fixture *c = &cases[idx];
    int rc = redo_case(pool, c, out);
    long diff;

    CHECK(rc == WALREDO_OK, "%s: %s returned %s: %s", when, c->path,
          walredo_status_name(rc), walredo_last_error());
    diff = first_difference(out, c->expected);
    CHECK(diff < 0,
          "%s: %s: page differs from PostgreSQL's recovery at offset %ld "
          "(got 0x%02x, expected 0x%02x)",
          when, c->path, diff, out[diff < 0 ? 0 : diff],
          c->expected[diff < 0 ? 0 : diff]);
}

static void test_all_cases(walredo_pool *pool)
{
    static uint8_t out[WALREDO_PAGE_SIZE];
    size_t i, identical = 0, failures = 0, redo_failed = 0, bad = 0;

    for (i = 0; i < n_cases; i++) {
        const fixture *c = &cases[i];
        int rc;

        memset(out, 0x5A, sizeof out);
        rc = redo_case(pool, c, out);
        if (rc != c->expect_status) {
            fprintf(stderr,
                    "test_redo: %s (rel %u/%u/%u fork %u blk %u, %zu "
                    "records): returned %s, expected %s: %s\n",
                    c->path, c->tag.spcnode, c->tag.dbnode, c->tag.relnode,
                    c->tag.forknum, c->tag.blkno, c->n_records,
                    walredo_status_name(rc),
                    walredo_status_name(c->expect_status),
                    walredo_last_error());
            bad++;
            continue;
        }
        checks++;
        if (rc == WALREDO_OK) {
            long diff = first_difference(out, c->expected);
            if (diff >= 0) {
                fprintf(stderr,
                        "test_redo: %s: page differs from PostgreSQL's "
                        "recovery at offset %ld (got 0x%02x, expected "
                        "0x%02x)\n",
                        c->path, diff, out[diff], c->expected[diff]);
                bad++;
                continue;
            }
            identical++;
        } else {
            size_t j;

            failures++;
            for (j = 0; j < sizeof out; j++)
                if (out[j] != 0x5A)
                    break;
            CHECK(j == sizeof out, "%s: out_page written although %s",
                  c->path, walredo_status_name(rc));
            CHECK(walredo_last_error()[0] != '\0', "%s: %s without message",
                  c->path, walredo_status_name(rc));
            if (rc == WALREDO_REDO_FAILED) {
                const char *m = walredo_last_error();
                redo_failed++;
                CHECK(strstr(m, "FATAL") != NULL || strstr(m, "PANIC") != NULL,
                      "%s: WALREDO_REDO_FAILED without PostgreSQL's FATAL or "
                      "PANIC: %s",
                      c->path, m);
            }
        }
    }
    CHECK(bad == 0, "%zu of %zu cases did not give the expected result", bad,
          n_cases);
    CHECK(redo_failed > 0,
          "no fixture case expects WALREDO_REDO_FAILED (the generator "
          "should include one)");
    printf("test_redo: %zu pages reconstructed, %zu identical to "
           "PostgreSQL's recovery; %zu expected failures returned their "
           "codes\n",
           n_ok, identical, failures);
}

/* ---- threads ------------------------------------------------------------- */

typedef struct worker {
    walredo_pool *pool;
    int id, rounds;
    size_t done, wrong;
    char first_error[1024];
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    uint8_t *out = malloc(WALREDO_PAGE_SIZE);
    int r;
    size_t j;

    if (out == NULL) {
        snprintf(w->first_error, sizeof w->first_error, "out of memory");
        w->wrong++;
        return NULL;
    }
    for (r = 0; r < w->rounds; r++) {
        for (j = 0; j < n_ok; j++) {
            /* Each thread its own order: odd threads backwards, each one
             * rotated by a different quarter, shifted every round. */
            size_t k = (w->id % 2) ? n_ok - 1 - j : j;
            size_t idx = ok_cases[(k + (size_t)w->id * n_ok / THREADS +
                                   (size_t)r) % n_ok];
            const fixture *c = &cases[idx];
            int rc = redo_case(w->pool, c, out);

            w->done++;
            if (rc != WALREDO_OK || memcmp(out, c->expected,
                                           WALREDO_PAGE_SIZE) != 0) {
                if (w->wrong++ == 0)
                    snprintf(w->first_error, sizeof w->first_error,
                             "thread %d round %d %s: %s%s%s", w->id, r,
                             c->path, walredo_status_name(rc),
                             rc == WALREDO_OK ? " but the page differs" : ": ",
                             rc == WALREDO_OK ? "" : walredo_last_error());
            }
        }
    }
    free(out);
    return NULL;
}

static void test_threads(walredo_pool *pool, int rounds)
{
    pthread_t th[THREADS];
    worker w[THREADS];
    size_t total = 0;
    int i, rc;
    double t0 = now_s();

    for (i = 0; i < THREADS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].pool = pool;
        w[i].id = i;
        w[i].rounds = rounds;
        rc = pthread_create(&th[i], NULL, worker_main, &w[i]);
        CHECK(rc == 0, "pthread_create: %s", strerror(rc));
    }
    for (i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    for (i = 0; i < THREADS; i++) {
        CHECK(w[i].wrong == 0, "%zu wrong results in thread %d; first: %s",
              w[i].wrong, i, w[i].first_error);
        total += w[i].done;
    }
    CHECK(total == (size_t)THREADS * (size_t)rounds * n_ok,
          "threads made %zu requests", total);
    printf("test_redo: %d threads x %d rounds on one pool (processes=2): "
           "%zu pages, all identical (%.1f s)\n",
           THREADS, rounds, total, now_s() - t0);
}

/* ---- timeout ------------------------------------------------------------- */

typedef struct stopper {
    pthread_mutex_t lock;
    int stop;
    /* Every process it stopped (the pool's, the retry's, spares). */
    pid_t stopped[256];
    int n_stopped;
} stopper;

/* Stop every child of ours that runs PostgreSQL, and remember it. */
static void stop_children(stopper *s)
{
    pid_t pids[256];
    int i, j, n = list_children(pids, 256, 0);

    for (i = 0; i < n && i < 256; i++) {
        if (!child_is_postgres(pids[i]) || kill(pids[i], SIGSTOP) != 0)
            continue;
        pthread_mutex_lock(&s->lock);
        for (j = 0; j < s->n_stopped && s->stopped[j] != pids[i]; j++)
            ;
        if (j == s->n_stopped && s->n_stopped < 256)
            s->stopped[s->n_stopped++] = pids[i];
        pthread_mutex_unlock(&s->lock);
    }
}

/* How many processes the stopper stopped are still there (zombies too). */
static int stopped_left(stopper *s, pid_t *first)
{
    int i, n = 0;

    for (i = 0; i < s->n_stopped; i++)
        if (child_state(s->stopped[i]) != 0 && n++ == 0)
            *first = s->stopped[i];
    return n;
}

/*
 * Keep every child of ours stopped for about 3 s. A fresh wal-redo process
 * answers its first request a few milliseconds after it is forked (15 ms when
 * the scratch root was on ext4; less on /dev/shm, the default since), so the
 * retry's process must be caught faster than that: /proc is scanned again as
 * soon as the scan ends, the CPU yielded in between (a scan every
 * millisecond lost the race 6 times in a row under ASan once the scratch
 * root moved to memory).
 */
static void *stopper_main(void *arg)
{
    stopper *s = arg;
    double end = now_s() + 3.0;

    while (now_s() < end) {
        int quit;

        pthread_mutex_lock(&s->lock);
        quit = s->stop;
        pthread_mutex_unlock(&s->lock);
        if (quit)
            break;
        stop_children(s);
        sched_yield();
    }
    return NULL;
}

/* One timeout attempt: stop the pool's process (and its spare, if started
 * yet: spare_process is on by default) and every new one. Returns the
 * status of walredo_redo; *elapsed is how long it took. */
static int stopped_redo(walredo_pool *pool, stopper *s, uint8_t *out,
                        double *elapsed)
{
    pthread_t th;
    int n, rc;
    double t0;

    check_ok_case(pool, ok_cases[0], "before the timeout");
    n = children_wait_running(2, 10.0);
    CHECK(n == 2,
          "a pool of 1 process after one request has %d processes, not its "
          "own and the spare",
          n);
    stop_children(s);

    s->stop = 0;
    rc = pthread_create(&th, NULL, stopper_main, s);
    CHECK(rc == 0, "pthread_create: %s", strerror(rc));

    t0 = now_s();
    memset(out, 0x5A, WALREDO_PAGE_SIZE);
    rc = redo_case(pool, &cases[ok_cases[0]], out);
    *elapsed = now_s() - t0;

    pthread_mutex_lock(&s->lock);
    s->stop = 1;
    pthread_mutex_unlock(&s->lock);
    pthread_join(th, NULL);
    return rc;
}

static void test_timeout(const char *extension)
{
    /* Two attempts of 150 ms in a deadline of 300 ms: each further attempt
     * is one more fresh process for the stopper to catch in time. */
    walredo_pool *pool = make_pool(extension, "1", "300", "150");
    static uint8_t out[WALREDO_PAGE_SIZE];
    static stopper s;
    walredo_stats stats;
    pid_t pids[64], first = 0;
    int n, rc, attempt;
    double elapsed;
    uint64_t timeouts, retries;

    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.lock, NULL);
    /* WALREDO_OK means the stopper lost the race against the retry's fresh
     * process (a race of this test, not a library fault; a forked process
     * answers within 1-2 ms: lost in about 1 of 5 attempts here, with the
     * spare or without, more on a loaded machine, where 3 attempts were
     * seen to lose in a row): try again, at most 6 times. Any other status
     * is a failure. */
    for (attempt = 1;; attempt++) {
        rc = stopped_redo(pool, &s, out, &elapsed);
        if (rc != WALREDO_OK || attempt == 6)
            break;
        fprintf(stderr,
                "test_redo: the retry's process answered before it could "
                "be stopped (attempt %d); again\n",
                attempt);
    }
    CHECK(rc == WALREDO_TIMEOUT,
          "with every process stopped, walredo_redo returned %s after "
          "%.2f s: %s",
          walredo_status_name(rc), elapsed, walredo_last_error());
    CHECK(elapsed < 5.0, "WALREDO_TIMEOUT took %.2f s with timeout_ms=300",
          elapsed);
    CHECK(out[0] == 0x5A && out[WALREDO_PAGE_SIZE - 1] == 0x5A,
          "out_page written on WALREDO_TIMEOUT");
    CHECK(strstr(walredo_last_error(), "timed out") != NULL,
          "WALREDO_TIMEOUT message: %s", walredo_last_error());
    /* The timed-out processes were killed and reaped: the pool has none,
     * and of the processes stopped only a spare may be left (the one
     * started after the retry's process, which nobody has used). */
    CHECK(walredo_pool_stats(pool, &stats) == WALREDO_OK,
          "walredo_pool_stats: %s", walredo_last_error());
    CHECK(stats.live_processes == 0,
          "%llu live process(es) after WALREDO_TIMEOUT",
          (unsigned long long)stats.live_processes);
    n = stopped_left(&s, &first);
    CHECK(n <= 1, "%d stopped process(es) left after WALREDO_TIMEOUT "
                  "(first pid %d, state %c)",
          n, (int)first, n > 0 ? child_state(first) : '-');
    printf("test_redo: WALREDO_TIMEOUT after %.2f s (both attempts "
           "stopped; %d processes stopped in all)\n",
           elapsed, s.n_stopped);

    check_ok_case(pool, ok_cases[0], "after the timeout");
    if (n_ok > 1)
        check_ok_case(pool, ok_cases[n_ok - 1], "after the timeout");
    /* A stopped spare is not handed over: it is replaced (killed, reaped),
     * so the requests after the timeout meet no stopped process. */
    timeouts = stats.timeouts;
    retries = stats.retries;
    CHECK(walredo_pool_stats(pool, &stats) == WALREDO_OK,
          "walredo_pool_stats: %s", walredo_last_error());
    CHECK(stats.timeouts == timeouts && stats.retries == retries,
          "the requests after the timeout met a stopped process: %llu "
          "more timeouts, %llu more retries",
          (unsigned long long)(stats.timeouts - timeouts),
          (unsigned long long)(stats.retries - retries));
    n = stopped_left(&s, &first);
    CHECK(n == 0, "%d stopped process(es) left after the timeout and two "
                  "answers (first pid %d, state %c)",
          n, (int)first, n > 0 ? child_state(first) : '-');
    printf("test_redo: after the timeout a fresh process answers "
           "correctly; no stopped process is left\n");
    walredo_pool_free(pool);
    pthread_mutex_destroy(&s.lock);
    n = list_children(pids, 64, 1);
    CHECK(n == 0, "%d child process(es) left after walredo_pool_free", n);
}

/* ---- killed processes (SIGPIPE) ------------------------------------------ */

static void test_killed_process(const char *extension)
{
    walredo_pool *pool = make_pool(extension, "1", NULL, NULL);
    struct sigaction sa;
    int round, n;

    /* SIGPIPE must be at its default disposition (terminate): the library
     * must never raise it. */
    sigaction(SIGPIPE, NULL, &sa);
    CHECK(sa.sa_handler == SIG_DFL, "SIGPIPE is not at SIG_DFL");

    for (round = 0; round < 3; round++) {
        size_t idx = ok_cases[(size_t)round % n_ok];
        pid_t pids[8];
        double t0;
        int i;

        check_ok_case(pool, idx, "before SIGKILL");
        /* The pool's process and the spare (spare_process is on by
         * default): both are killed, so the request after it writes to a
         * dead process and then needs a fresh one. */
        CHECK(children_wait_running(2, 10.0) == 2,
              "round %d: no spare beside the pool's process", round);
        n = list_children(pids, 8, 0);
        CHECK(n == 2, "round %d: %d children to kill, expected 2 (the "
                      "pool's and the spare)",
              round, n);
        for (i = 0; i < n; i++)
            kill(pids[i], SIGKILL);
        for (i = 0; round > 0 && i < n; i++) {
            /* Wait until it is a zombie (not reaped: the library reaps),
             * or gone (its template reaped it): its end of the socket is
             * then closed for sure, so the library's next write gets EPIPE,
             * the SIGPIPE case. */
            t0 = now_s();
            while (child_state(pids[i]) != 'Z' && child_state(pids[i]) != 0 &&
                   now_s() - t0 < 5.0)
                sleep_ms(1);
            CHECK(child_state(pids[i]) == 'Z' || child_state(pids[i]) == 0,
                  "killed process %d is not dead (state %c)",
                  (int)pids[i], child_state(pids[i]));
        }
        /* Round 0 right away; then on a process known to be dead. */
        check_ok_case(pool, idx, "right after SIGKILL");
    }
    printf("test_redo: 3 requests right after SIGKILL of the process "
           "succeeded (2 of them on a known-dead process); no SIGPIPE\n");
    walredo_pool_free(pool);
}

/* ---- main ---------------------------------------------------------------- */

/* ---- tenants ------------------------------------------------------------- */

#define TENANT_KEYS 5

typedef struct tenant_answer {
    pthread_mutex_t lock;
    pthread_cond_t done;
    int status;
    int answered;
    uint8_t page[WALREDO_PAGE_SIZE];
} tenant_answer;

static void tenant_callback(void *userdata, int status, const uint8_t *page,
                            const char *message)
{
    tenant_answer *a = userdata;

    (void) message;
    pthread_mutex_lock(&a->lock);
    a->status = status;
    if (page != NULL)
        memcpy(a->page, page, WALREDO_PAGE_SIZE);
    a->answered = 1;
    pthread_cond_signal(&a->done);
    pthread_mutex_unlock(&a->lock);
}

/* Every process listed serves one of the keys used, and at most 2 live. */
static void check_processes(walredo_pool *pool)
{
    walredo_process_info info[8];
    size_t count = 99;

    CHECK_STATUS(walredo_pool_processes(pool, NULL, 0, &count),
                 WALREDO_BUFFER_TOO_SMALL);
    CHECK(count >= 1 && count <= 2, "%zu processes listed", count);
    CHECK_STATUS(walredo_pool_processes(pool, info, 8, &count), WALREDO_OK);
    for (size_t i = 0; i < count; i++) {
        CHECK(info[i].pid > 0, "pid %d", (int) info[i].pid);
        CHECK(info[i].key_len == 2 && info[i].key[0] == 't' &&
                  info[i].key[1] >= '0' && info[i].key[1] < '0' + TENANT_KEYS,
              "process %d serves a key of %zu bytes", (int) info[i].pid,
              info[i].key_len);
    }
}

/*
 * The keyed calls on real pages: each of redo, submit and call start for
 * TENANT_KEYS tenants on a pool of 2, every page PostgreSQL's; the list of
 * processes; each tenant's counters; bad keys refused.
 */
static void test_tenants(const char *extension)
{
    walredo_pool *pool = make_test_pool(extension, "processes", "2",
                                        "processes_per_tenant", "1",
                                        "fast_path", "off", "log_level",
                                        log_level, NULL);
    static uint8_t out[WALREDO_PAGE_SIZE];
    uint64_t sent[TENANT_KEYS] = {0};
    walredo_tenant_stats ts;
    uint8_t long_key[WALREDO_MAX_KEY_LEN + 1];

    for (size_t k = 0; k < n_ok; k++) {
        const fixture *c = &cases[ok_cases[k]];
        char key[3] = {'t', (char) ('0' + k % TENANT_KEYS), 0};
        tenant_answer a = {.lock = PTHREAD_MUTEX_INITIALIZER,
                           .done = PTHREAD_COND_INITIALIZER};
        walredo_call *call = NULL;
        int rc;

        CHECK_STATUS(walredo_redo_keyed(pool, (const uint8_t *) key, 2, &c->tag,
                                        c->base_page, c->records,
                                        c->n_records, out),
                     WALREDO_OK);
        CHECK(first_difference(out, c->expected) < 0,
              "%s: keyed page differs from PostgreSQL's recovery", c->path);
        CHECK_STATUS(walredo_submit_keyed(pool, (const uint8_t *) key, 2,
                                          &c->tag, c->base_page, c->records,
                                          c->n_records, tenant_callback, &a),
                     WALREDO_OK);
        pthread_mutex_lock(&a.lock);
        while (!a.answered)
            pthread_cond_wait(&a.done, &a.lock);
        pthread_mutex_unlock(&a.lock);
        CHECK(a.status == WALREDO_OK &&
                  first_difference(a.page, c->expected) < 0,
              "%s: submitted keyed page: %s", c->path,
              walredo_status_name(a.status));
        CHECK_STATUS(walredo_call_start_keyed(pool, (const uint8_t *) key, 2,
                                              &c->tag, c->base_page,
                                              c->records, c->n_records, &call),
                     WALREDO_OK);
        while ((rc = walredo_call_finish(call, out)) == WALREDO_IN_PROGRESS)
            usleep(100);
        CHECK(rc == WALREDO_OK && first_difference(out, c->expected) < 0,
              "%s: keyed call: %s", c->path, walredo_status_name(rc));
        sent[k % TENANT_KEYS] += 3;
        check_processes(pool);
    }
    for (int t = 0; t < TENANT_KEYS; t++) {
        char key[3] = {'t', (char) ('0' + t), 0};

        CHECK_STATUS(walredo_pool_tenant_stats(pool, (const uint8_t *) key, 2,
                                               &ts),
                     WALREDO_OK);
        CHECK(ts.requests == sent[t] && ts.failures == 0,
              "tenant %s: %llu requests, %llu failures; %llu sent", key,
              (unsigned long long) ts.requests,
              (unsigned long long) ts.failures, (unsigned long long) sent[t]);
        CHECK(sent[t] == 0 || ts.spawns >= 1, "tenant %s: no process started",
              key);
    }
    /* Nothing went to the default tenant. */
    CHECK_STATUS(walredo_pool_tenant_stats(pool, NULL, 0, &ts), WALREDO_OK);
    CHECK(ts.requests == 0, "%llu default-tenant requests",
          (unsigned long long) ts.requests);

    /* Bad keys and arguments. */
    memset(long_key, 'k', sizeof long_key);
    CHECK_STATUS(walredo_redo_keyed(pool, long_key, sizeof long_key,
                                    &cases[ok_cases[0]].tag, NULL, NULL, 0, out),
                 WALREDO_INVALID_ARGUMENT);
    CHECK(strstr(walredo_last_error(), "WALREDO_MAX_KEY_LEN") != NULL, "%s",
          walredo_last_error());
    CHECK_STATUS(walredo_submit_keyed(pool, NULL, 3, &cases[ok_cases[0]].tag,
                                      NULL, NULL, 0, tenant_callback, NULL),
                 WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_pool_processes(pool, NULL, 0, NULL),
                 WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_pool_tenant_stats(pool, long_key, sizeof long_key,
                                           &ts),
                 WALREDO_INVALID_ARGUMENT);
    walredo_pool_free(pool);
    printf("test_redo: tenants: %zu pages, 3 ways each, for %d tenants\n",
           n_ok, TENANT_KEYS);
}

int main(int argc, char **argv)
{
    walredo_pool *pool;
    const char *quick = getenv("TEST_REDO_QUICK");
    const char *level = getenv("TEST_REDO_LOG_LEVEL");
    int rounds = (quick != NULL && strcmp(quick, "1") == 0) ? 1 : 3;
    pid_t pids[64];
    size_t i;
    int n;

    if (argc != 3) {
        fprintf(stderr, "usage: %s EXTENSION_PATH FIXTURE_DIR\n", argv[0]);
        return 2;
    }
    if (level != NULL && level[0] != '\0')
        log_level = level;

    n = list_children(pids, 64, 1);
    CHECK(n == 0, "%d child processes before any pool", n);

    load_cases(argv[2]);
    printf("test_redo: %zu cases loaded from %s (%zu expect WALREDO_OK)\n",
           n_cases, argv[2], n_ok);
    check_parser(&cases[0]);

    pool = make_pool(argv[1], "2", NULL, NULL);
    test_all_cases(pool);
    test_threads(pool, rounds);
    walredo_pool_free(pool);
    n = list_children(pids, 64, 1);
    CHECK(n == 0, "%d child process(es) left after walredo_pool_free", n);

    test_tenants(argv[1]);
    test_timeout(argv[1]);
    test_killed_process(argv[1]);

    n = list_children(pids, 64, 1);
    CHECK(n == 0, "%d child process(es) of ours remain (first pid %d)", n,
          n > 0 ? (int)pids[0] : 0);
    printf("test_redo: no child left\n");

    for (i = 0; i < n_cases; i++)
        fixture_free(&cases[i]);
    free(cases);
    free(ok_cases);
    printf("test_redo: %d checks passed\n", checks);
    return 0;
}
