/*
 * test_api.c: the C ABI of libwalredo without any WAL fixture: status names,
 * version, last error, configuration keys and values, pool creation errors,
 * every argument check of walredo_redo, malformed records, shutdown, and the
 * panic boundary.
 *
 * Usage: test_api EXTENSION_PATH
 */
#define _GNU_SOURCE
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <walredo.h>

#include "check.h"
#include "pools.h"

/* Every status code the header defines, in order (0..7, plus the codes a
 * newer header adds after them). */
static const char *const status_names[] = {
    "WALREDO_OK",          "WALREDO_INVALID_ARGUMENT",
    "WALREDO_MALFORMED_RECORD", "WALREDO_REDO_FAILED",
    "WALREDO_TIMEOUT",     "WALREDO_SPAWN_FAILED",
    "WALREDO_SHUTDOWN",    "WALREDO_INTERNAL",
#ifdef WALREDO_BUSY
    "WALREDO_BUSY",
#endif
#ifdef WALREDO_BUFFER_TOO_SMALL
    "WALREDO_BUFFER_TOO_SMALL",
#endif
#ifdef WALREDO_NOT_FOUND
    "WALREDO_IN_PROGRESS", "WALREDO_CANCELLED", "WALREDO_NOT_FOUND",
#endif
#ifdef WALREDO_NO_SUCH_BLOCK
    "WALREDO_NO_SUCH_BLOCK", "WALREDO_NOT_IN_WAL",
#endif
};
#define N_STATUS ((int)(sizeof status_names / sizeof status_names[0]))

static walredo_config *new_config(void)
{
    walredo_config *cfg = walredo_config_new();

    CHECK(cfg != NULL, "walredo_config_new returned NULL");
    CHECK_STATUS(walredo_config_set(cfg, "log_level", "off"), WALREDO_OK);
    set_test_server(cfg);
    return cfg;
}

static void test_names_and_version(void)
{
    /* N_STATUS is 8 with the header of 0..7. */
    const int unknown[] = { -1, N_STATUS, 1000, INT_MIN, INT_MAX };
    const char *v;
    int i;

    CHECK(WALREDO_OK == 0 && WALREDO_INTERNAL == 7,
          "status codes are not 0..7");
#ifdef WALREDO_BUSY
    CHECK(WALREDO_BUSY == 8, "WALREDO_BUSY is %d", WALREDO_BUSY);
#endif
#ifdef WALREDO_BUFFER_TOO_SMALL
    CHECK(WALREDO_BUFFER_TOO_SMALL == 9, "WALREDO_BUFFER_TOO_SMALL is %d",
          WALREDO_BUFFER_TOO_SMALL);
#endif
#ifdef WALREDO_NOT_FOUND
    CHECK(WALREDO_IN_PROGRESS == 10 && WALREDO_CANCELLED == 11 &&
          WALREDO_NOT_FOUND == 12, "IN_PROGRESS, CANCELLED, NOT_FOUND are %d, %d, %d",
          WALREDO_IN_PROGRESS, WALREDO_CANCELLED, WALREDO_NOT_FOUND);
#endif
#ifdef WALREDO_NO_SUCH_BLOCK
    CHECK(WALREDO_NO_SUCH_BLOCK == 13 && WALREDO_NOT_IN_WAL == 14,
          "NO_SUCH_BLOCK, NOT_IN_WAL are %d, %d", WALREDO_NO_SUCH_BLOCK,
          WALREDO_NOT_IN_WAL);
#endif
    for (i = 0; i < N_STATUS; i++) {
        const char *name = walredo_status_name(i);
        CHECK(name != NULL && strcmp(name, status_names[i]) == 0,
              "walredo_status_name(%d) = \"%s\", expected \"%s\"", i,
              name ? name : "(null)", status_names[i]);
    }
    for (i = 0; i < (int)(sizeof unknown / sizeof unknown[0]); i++) {
        const char *name = walredo_status_name(unknown[i]);
        CHECK(name != NULL && strcmp(name, "WALREDO_UNKNOWN_STATUS") == 0,
              "walredo_status_name(%d) = \"%s\"", unknown[i],
              name ? name : "(null)");
    }
    v = walredo_version();
    CHECK(v != NULL && strncmp(v, "walredo ", 8) == 0 && strlen(v) > 8,
          "walredo_version() = \"%s\"", v ? v : "(null)");
    /* Static: the same pointer every time. */
    CHECK(walredo_version() == v, "walredo_version() is not static");
}

static void test_config(void)
{
    walredo_config *cfg, *cfg2;
    const char *err;
    size_t i;
    static const struct {
        const char *key, *value;
    } bad[] = {
        { "processes", "0" },
        { "processes", "abc" },
        { "processes", "1025" },
        { "processes", "" },
        { "processes", "-1" },
        { "processes", " 2" },
        { "timeout_ms", "0" },
        { "timeout_ms", "-5" },
        { "timeout_ms", "99999999999999999999" },
        { "timeout_ms", "86400001" },
        { "timeout_ms", "1.5" },
        { "log_level", "loud" },
        { "log_level", "" },
        { "verify", "maybe" },
        { "verify", "" },
        { "data_checksums", "yes please" },
        { "wal_log_hints", "2" },
        { "debug_panic", "sometimes" },
        { "fast_path", "fast" },
        { "follow_caller_cpu", "2" },
        { "blocking_wait", "" },
        { "pg_bindir", "" },
        { "extension_path", "" },
        { "scratch_dir", "" },
        { "run_as_user", "" },
        { "pg_version", "13" },
        { "pg_version", "19" },
        { "pg_version", "17.2" },
        { "pg_version", "" },
    },
      good[] = {
        { "pg_bindir", "/usr/local/pgsql/bin" },
        { "extension_path", "/tmp/pg_walredo.so" },
        { "pg_version", "14" },
        { "pg_version", "15" },
        { "pg_version", "18" },
        { "processes", "1" },
        { "processes", "1024" },
        { "processes", "2" },
        { "timeout_ms", "1" },
        { "timeout_ms", "86400000" },
        { "timeout_ms", "10000" },
        { "run_as_user", "postgres" },
        { "scratch_dir", "/tmp/walredo-c-tests" },
        { "log_level", "error" },
        { "log_level", "warn" },
        { "log_level", "info" },
        { "log_level", "debug" },
        { "log_level", "trace" },
        { "log_level", "off" },
        { "verify", "on" },
        { "verify", "off" },
        { "data_checksums", "on" },
        { "data_checksums", "off" },
        { "wal_log_hints", "on" },
        { "wal_log_hints", "off" },
        { "debug_panic", "on" },
        { "debug_panic", "off" },
        { "fast_path", "on" },
        { "fast_path", "off" },
        { "follow_caller_cpu", "on" },
        { "follow_caller_cpu", "off" },
        { "blocking_wait", "on" },
        { "blocking_wait", "off" },
    };

    /* Nothing has failed on this thread yet. */
    err = walredo_last_error();
    CHECK(err != NULL && err[0] == '\0',
          "walredo_last_error() before any failure is \"%s\"",
          err ? err : "(null)");

    walredo_config_free(NULL);
    checks++;

    cfg = walredo_config_new();
    CHECK(cfg != NULL, "walredo_config_new returned NULL");
    cfg2 = walredo_config_new();
    CHECK(cfg2 != NULL && cfg2 != cfg,
          "second walredo_config_new returned %p (first %p)", (void *)cfg2,
          (void *)cfg);
    /* Still nothing failed: successful calls leave "" in place. */
    CHECK(walredo_last_error()[0] == '\0',
          "walredo_last_error() after successful calls is \"%s\"",
          walredo_last_error());

    CHECK_STATUS(walredo_config_set(NULL, "processes", "2"),
                 WALREDO_INVALID_ARGUMENT);
    err = walredo_last_error();
    CHECK(err != NULL && err[0] != '\0',
          "walredo_last_error() is empty after a failure");
    CHECK_STATUS(walredo_config_set(cfg, NULL, "2"),
                 WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_config_set(cfg, "processes", NULL),
                 WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_config_set(cfg, "no_such_key", "1"),
                 WALREDO_INVALID_ARGUMENT);
    CHECK(strstr(walredo_last_error(), "no_such_key") != NULL,
          "unknown key message does not name the key");
    CHECK_STATUS(walredo_config_set(cfg, "", "1"), WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_config_set(cfg, "Processes", "2"),
                 WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_config_set(cfg, "processes\xff", "2"),
                 WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_config_set(cfg, "pg_bindir", "/tmp/\xff\xfe"),
                 WALREDO_INVALID_ARGUMENT);

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = walredo_config_set(cfg, bad[i].key, bad[i].value);
        CHECK(rc == WALREDO_INVALID_ARGUMENT,
              "walredo_config_set(cfg, \"%s\", \"%s\") returned %s",
              bad[i].key, bad[i].value, walredo_status_name(rc));
        err = walredo_last_error();
        CHECK(err != NULL && err[0] != '\0',
              "no message after bad value \"%s\" for %s", bad[i].value,
              bad[i].key);
    }
    for (i = 0; i < sizeof good / sizeof good[0]; i++) {
        int rc = walredo_config_set(cfg2, good[i].key, good[i].value);
        CHECK(rc == WALREDO_OK,
              "walredo_config_set(cfg, \"%s\", \"%s\") returned %s",
              good[i].key, good[i].value, walredo_status_name(rc));
    }
    /* The last message is still a valid, readable string after successes. */
    err = walredo_last_error();
    CHECK(err != NULL && strlen(err) > 0,
          "walredo_last_error() lost its message after successful calls");

    walredo_config_free(cfg);
    walredo_config_free(cfg2);
    checks++;
}

/* walredo_pool_new(cfg) fails to start a process and leaves its out-pointer
 * NULL; returns the library's message. */
static const char *pool_new_spawn_failed(walredo_config *cfg)
{
    static char dummy;
    walredo_pool *p = (walredo_pool *)&dummy;

    CHECK_STATUS(walredo_pool_new(cfg, &p), WALREDO_SPAWN_FAILED);
    CHECK(p == NULL, "failed walredo_pool_new left p = %p", (void *)p);
    return walredo_last_error();
}

static void test_pool_new_errors(const char *extension)
{
    walredo_config *cfg;
    walredo_pool *p;
    static char dummy;
    const char *err;

    cfg = new_config();
    p = (walredo_pool *)&dummy;
    CHECK_STATUS(walredo_pool_new(NULL, &p), WALREDO_INVALID_ARGUMENT);
    CHECK(p == NULL, "walredo_pool_new(NULL, &p) left p = %p", (void *)p);
    CHECK_STATUS(walredo_pool_new(cfg, NULL), WALREDO_INVALID_ARGUMENT);

    /* Missing PostgreSQL: the message says what to install. A rejected
     * value afterwards leaves the configuration unchanged. */
    CHECK_STATUS(walredo_config_set(cfg, "extension_path", extension),
                 WALREDO_OK);
    CHECK_STATUS(walredo_config_set(cfg, "pg_bindir", "/nonexistent"),
                 WALREDO_OK);
    CHECK_STATUS(walredo_config_set(cfg, "pg_bindir", ""),
                 WALREDO_INVALID_ARGUMENT);
    err = pool_new_spawn_failed(cfg);
    CHECK(strstr(err, "apt-get install") != NULL,
          "missing PostgreSQL message does not say what to install: %s",
          err);
    CHECK(strstr(err, "/nonexistent") != NULL,
          "missing PostgreSQL message does not name the directory "
          "(a rejected pg_bindir changed the configuration?): %s",
          err);
    walredo_config_free(cfg);

    /* Missing extension. */
    cfg = new_config();
    CHECK_STATUS(
        walredo_config_set(cfg, "extension_path", "/nonexistent.so"),
        WALREDO_OK);
    err = pool_new_spawn_failed(cfg);
    CHECK(strstr(err, "make -C pg_walredo install") != NULL,
          "missing extension message does not say how to install it: %s",
          err);
    walredo_config_free(cfg);

    walredo_pool_free(NULL);
    walredo_pool_shutdown(NULL);
    checks++;
}

static void fill_pattern(uint8_t *page)
{
    size_t i;

    for (i = 0; i < WALREDO_PAGE_SIZE; i++)
        page[i] = (uint8_t)(i * 31u + 7u);
}

static int pattern_intact(const uint8_t *page)
{
    size_t i;

    for (i = 0; i < WALREDO_PAGE_SIZE; i++)
        if (page[i] != (uint8_t)(i * 31u + 7u))
            return 0;
    return 1;
}

/* Run walredo_redo on a patterned out page, expect `want` and an intact
 * out page. */
#define CHECK_REDO(want, pool, tag, base, recs, n)                           \
    do {                                                                     \
        int rc_;                                                             \
        fill_pattern(out);                                                   \
        rc_ = walredo_redo((pool), (tag), (base), (recs), (n), out);         \
        CHECK(rc_ == (want), "walredo_redo(%s, %s, %s, %s, %s) returned "    \
              "%s, expected %s", #pool, #tag, #base, #recs, #n,              \
              walredo_status_name(rc_), walredo_status_name(want));          \
        CHECK(pattern_intact(out),                                           \
              "out_page was written although walredo_redo failed");          \
        CHECK(walredo_last_error()[0] != '\0',                               \
              "no message after a failed walredo_redo");                     \
    } while (0)

/* A 24-byte XLogRecord header (little-endian). */
static void put_header(uint8_t *h, uint32_t tot_len)
{
    memset(h, 0, 24);
    h[0] = (uint8_t)tot_len;
    h[1] = (uint8_t)(tot_len >> 8);
    h[2] = (uint8_t)(tot_len >> 16);
    h[3] = (uint8_t)(tot_len >> 24);
    h[4] = 0x39; /* xl_xid */
    h[8] = 0x28; /* xl_prev */
    h[18] = 10;  /* xl_rmid: RM_HEAP_ID */
}

static void test_redo_arguments(const char *extension)
{
    walredo_config *cfg = new_config();
    walredo_pool *pool = NULL;
    walredo_page_tag tag = { 1663, 5, 16384, 0, 0 }, bad_tag;
    static uint8_t base[WALREDO_PAGE_SIZE], out[WALREDO_PAGE_SIZE];
    uint8_t garbage[40], header[24], small[16];
    walredo_record rec[2];
    char first_error[512];

    CHECK_STATUS(walredo_config_set(cfg, "extension_path", extension),
                 WALREDO_OK);
    CHECK_STATUS(walredo_config_set(cfg, "processes", "2"), WALREDO_OK);
    CHECK_STATUS(walredo_pool_new(cfg, &pool), WALREDO_OK);
    CHECK(pool != NULL, "walredo_pool_new succeeded with a NULL pool");
    /* Pools do not need their configuration any more. */
    walredo_config_free(cfg);

    memset(base, 0, sizeof base);
    memset(small, 0x11, sizeof small);

    CHECK_REDO(WALREDO_INVALID_ARGUMENT, NULL, &tag, base, NULL, 0);
    CHECK(strstr(walredo_last_error(), "pool") != NULL,
          "NULL pool message does not name it");
    snprintf(first_error, sizeof first_error, "%s", walredo_last_error());
    CHECK_REDO(WALREDO_INVALID_ARGUMENT, pool, NULL, base, NULL, 0);
    CHECK(strcmp(first_error, walredo_last_error()) != 0,
          "last error did not change with the next failure");
    {
        int rc = walredo_redo(pool, &tag, base, NULL, 0, NULL);
        CHECK(rc == WALREDO_INVALID_ARGUMENT,
              "walredo_redo(..., out_page NULL) returned %s",
              walredo_status_name(rc));
    }
    CHECK_REDO(WALREDO_INVALID_ARGUMENT, pool, &tag, base, NULL, 3);

    rec[0].end_lsn = 0x1000028;
    rec[0].data = NULL;
    rec[0].len = 10;
    CHECK_REDO(WALREDO_INVALID_ARGUMENT, pool, &tag, base, rec, 1);

    rec[0].data = small; /* never read: the length is refused first */
    rec[0].len = (size_t)1 << 31;
    CHECK_REDO(WALREDO_INVALID_ARGUMENT, pool, &tag, base, rec, 1);
    rec[0].len = ((size_t)1 << 30) + 1;
    CHECK_REDO(WALREDO_INVALID_ARGUMENT, pool, &tag, base, rec, 1);
    rec[0].len = SIZE_MAX;
    CHECK_REDO(WALREDO_INVALID_ARGUMENT, pool, &tag, base, rec, 1);

    /* A second record that is bad behind a first that is merely short. */
    rec[0].data = small;
    rec[0].len = sizeof small;
    rec[1].end_lsn = 0x2000000;
    rec[1].data = NULL;
    rec[1].len = 10;
    CHECK_REDO(WALREDO_INVALID_ARGUMENT, pool, &tag, base, rec, 2);

    bad_tag = tag;
    bad_tag.forknum = 7;
    CHECK_REDO(WALREDO_INVALID_ARGUMENT, pool, &bad_tag, base, NULL, 0);
    bad_tag.forknum = 255;
    CHECK_REDO(WALREDO_INVALID_ARGUMENT, pool, &bad_tag, base, NULL, 0);
    bad_tag = tag;
    bad_tag.blkno = 0xFFFFFFFFu;
    CHECK_REDO(WALREDO_INVALID_ARGUMENT, pool, &bad_tag, base, NULL, 0);

    CHECK_REDO(WALREDO_INVALID_ARGUMENT, pool, &tag, NULL, NULL, 0);

    /* Records that are not XLogRecords: refused before any process. */
    memset(garbage, 0xAB, sizeof garbage);
    rec[0].end_lsn = 0x1000028;
    rec[0].data = garbage;
    rec[0].len = sizeof garbage;
    CHECK_REDO(WALREDO_MALFORMED_RECORD, pool, &tag, base, rec, 1);
    CHECK_REDO(WALREDO_MALFORMED_RECORD, pool, &tag, NULL, rec, 1);

    put_header(header, 25); /* says 25 bytes, holds 24 */
    rec[0].data = header;
    rec[0].len = sizeof header;
    CHECK_REDO(WALREDO_MALFORMED_RECORD, pool, &tag, base, rec, 1);
    put_header(header, 4096);
    CHECK_REDO(WALREDO_MALFORMED_RECORD, pool, &tag, base, rec, 1);
    put_header(header, 24); /* right length, wrong (zero) CRC */
    CHECK_REDO(WALREDO_MALFORMED_RECORD, pool, &tag, base, rec, 1);
    rec[0].len = 10; /* shorter than the header */
    CHECK_REDO(WALREDO_MALFORMED_RECORD, pool, &tag, base, rec, 1);
    rec[0].len = 0;
    CHECK_REDO(WALREDO_MALFORMED_RECORD, pool, &tag, base, rec, 1);

    /* Shutdown: every further request is refused; freeing still works. */
    walredo_pool_shutdown(pool);
    walredo_pool_shutdown(pool); /* idempotent */
    CHECK_REDO(WALREDO_SHUTDOWN, pool, &tag, base, NULL, 0);
    rec[0].data = garbage;
    rec[0].len = sizeof garbage;
    CHECK_REDO(WALREDO_SHUTDOWN, pool, &tag, base, rec, 1);
    walredo_pool_free(pool);
    checks++;
}

static void test_panic_boundary(const char *extension)
{
    walredo_config *cfg = new_config();
    walredo_pool *pool = NULL;
    walredo_page_tag tag = { 1663, 5, 16384, 0, 0 };
    static uint8_t base[WALREDO_PAGE_SIZE], out[WALREDO_PAGE_SIZE];
    uint8_t garbage[40];
    walredo_record rec;
    int round;

    CHECK_STATUS(walredo_config_set(cfg, "extension_path", extension),
                 WALREDO_OK);
    CHECK_STATUS(walredo_config_set(cfg, "processes", "1"), WALREDO_OK);
    CHECK_STATUS(walredo_config_set(cfg, "debug_panic", "on"), WALREDO_OK);
    CHECK_STATUS(walredo_pool_new(cfg, &pool), WALREDO_OK);
    memset(base, 0, sizeof base);

    fprintf(stderr, "test_api: two deliberate panics follow "
                    "(debug_panic=on)\n");
    for (round = 0; round < 2; round++) {
        CHECK_REDO(WALREDO_INTERNAL, pool, &tag, base, NULL, 0);
        CHECK(strstr(walredo_last_error(), "panic") != NULL,
              "WALREDO_INTERNAL message does not mention the panic: %s",
              walredo_last_error());
    }
    walredo_pool_free(pool);

    /* The library is still usable: a fresh pool from the same config
     * (debug_panic off now) answers normally. */
    CHECK_STATUS(walredo_config_set(cfg, "debug_panic", "off"), WALREDO_OK);
    pool = NULL;
    CHECK_STATUS(walredo_pool_new(cfg, &pool), WALREDO_OK);
    memset(garbage, 0xAB, sizeof garbage);
    rec.end_lsn = 0x1000028;
    rec.data = garbage;
    rec.len = sizeof garbage;
    CHECK_REDO(WALREDO_MALFORMED_RECORD, pool, &tag, base, &rec, 1);
    CHECK(strstr(walredo_last_error(), "panic") == NULL,
          "message after the panics still mentions a panic: %s",
          walredo_last_error());
    walredo_pool_free(pool);
    walredo_config_free(cfg);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s EXTENSION_PATH\n", argv[0]);
        return 2;
    }
    test_names_and_version();
    test_config();
    test_pool_new_errors(argv[1]);
    test_redo_arguments(argv[1]);
    test_panic_boundary(argv[1]);
    printf("test_api: %d checks passed\n", checks);
    return 0;
}
