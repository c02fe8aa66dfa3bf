/*
 * fixture.h: load one WAL redo fixture file ("WRFIXT01") for the C tests.
 *
 * File format, every integer little-endian:
 *   char magic[8] = "WRFIXT01"
 *   u32 spcnode, dbnode, relnode, forknum, blkno
 *   u32 has_base; then WALREDO_PAGE_SIZE bytes of base page if has_base != 0
 *   u32 n_records; then per record: u64 end_lsn, u32 len, len bytes
 *   u32 expect_status
 *   WALREDO_PAGE_SIZE bytes of expected page, only if expect_status == 0
 *
 * The loader is strict: a bad magic, a truncated file, trailing bytes or an
 * out-of-range field is an error with a message, never a crash.
 */
#ifndef WALREDO_C_TESTS_FIXTURE_H
#define WALREDO_C_TESTS_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include <walredo.h>

typedef struct fixture {
    char *path;                /* copy of the file name */
    walredo_page_tag tag;
    const uint8_t *base_page;  /* NULL, or WALREDO_PAGE_SIZE bytes in buf */
    size_t n_records;
    walredo_record *records;   /* n_records entries, data points into buf */
    int expect_status;         /* WALREDO_OK or a WALREDO_* error code */
    const uint8_t *expected;   /* WALREDO_PAGE_SIZE bytes in buf, or NULL */
    uint8_t *buf;              /* the whole file */
    size_t buf_len;
} fixture;

/*
 * Load `path` into *f. Returns 0 on success; on failure returns -1, writes a
 * message to err (errlen bytes, may be 0), and leaves *f empty (safe to pass
 * to fixture_free).
 */
int fixture_load(const char *path, fixture *f, char *err, size_t errlen);

/* Parse an in-memory image (the buffer is copied). Same contract. */
int fixture_parse(const char *name, const uint8_t *data, size_t len,
                  fixture *f, char *err, size_t errlen);

/*
 * Load dir/case-000.bin, case-001.bin, ... up to the first missing one (at
 * most max files) into cases[0..]. Returns how many were loaded, or -1 with
 * a message in err (the ones loaded before are freed).
 */
int fixture_load_dir(const char *dir, fixture *cases, int max,
                     char *err, size_t errlen);

/* Free what fixture_load allocated; *f is then empty. NULL is allowed. */
void fixture_free(fixture *f);

/* fixture_load_dir, or the test ends (exit 1) with the message. */
int fixture_load_or_fail(const char *dir, fixture *cases, int max);

/*
 * The opening of a test run as PROGRAM EXTENSION_PATH FIXTURE_DIR: the usage
 * (exit 2) unless argc is 3, then fixture_load_or_fail(FIXTURE_DIR).
 */
int fixture_load_args(int argc, char **argv, fixture *cases, int max);

/* The indexes of the cases of cases[0..n) that succeed, into ok[0..n); the
 * test ends (exit 1) when there are fewer than min. Returns how many. */
int fixture_ok_indexes(const fixture *cases, int n, int *ok, int min);

/* The first of cases[0..n) that succeeds with at least min_records records;
 * the test ends (exit 1) when there is none. */
const fixture *fixture_first_ok(const fixture *cases, int n, size_t min_records);

#endif
