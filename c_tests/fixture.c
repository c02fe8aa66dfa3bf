/* fixture.c: strict loader of WRFIXT01 fixture files, and the opening the
 * tests that use them share; see fixture.h. */
#define _GNU_SOURCE
#include "fixture.h"
#include "check.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE_MAGIC "WRFIXT01"
#define FIXTURE_MAX_FILE ((size_t)1 << 31)

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* A bounds-checked little-endian reader over the file image. */
typedef struct cursor {
    const uint8_t *p;
    size_t len;
    size_t pos;
} cursor;

static int take(cursor *c, size_t n, const uint8_t **out)
{
    if (n > c->len - c->pos)
        return -1;
    *out = c->p + c->pos;
    c->pos += n;
    return 0;
}

static int take_u32(cursor *c, uint32_t *v)
{
    const uint8_t *b;

    if (take(c, 4, &b) != 0)
        return -1;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
         (uint32_t)b[3] << 24;
    return 0;
}

static int take_u64(cursor *c, uint64_t *v)
{
    uint32_t lo, hi;

    if (take_u32(c, &lo) != 0 || take_u32(c, &hi) != 0)
        return -1;
    *v = (uint64_t)hi << 32 | lo;
    return 0;
}

void fixture_free(fixture *f)
{
    if (f == NULL)
        return;
    free(f->path);
    free(f->records);
    free(f->buf);
    memset(f, 0, sizeof *f);
}

/* Parse f->buf (already owned by f). */
static int parse_owned(fixture *f, char *err, size_t errlen)
{
    cursor c = { f->buf, f->buf_len, 0 };
    const uint8_t *magic, *page;
    uint32_t fields[5], has_base, n_records, status;
    const char *names[5] = { "spcnode", "dbnode", "relnode", "forknum",
                             "blkno" };
    size_t i;

#define TRUNC(what)                                                          \
    do {                                                                     \
        set_err(err, errlen, "%s: truncated at offset %zu (reading %s)",    \
                f->path, c.pos, what);                                       \
        return -1;                                                           \
    } while (0)

    if (take(&c, 8, &magic) != 0)
        TRUNC("magic");
    if (memcmp(magic, FIXTURE_MAGIC, 8) != 0) {
        set_err(err, errlen, "%s: bad magic (not a WRFIXT01 file)", f->path);
        return -1;
    }
    for (i = 0; i < 5; i++)
        if (take_u32(&c, &fields[i]) != 0)
            TRUNC(names[i]);
    if (fields[3] > UINT8_MAX) {
        set_err(err, errlen, "%s: forknum %u does not fit the tag", f->path,
                fields[3]);
        return -1;
    }
    f->tag.spcnode = fields[0];
    f->tag.dbnode = fields[1];
    f->tag.relnode = fields[2];
    f->tag.forknum = (uint8_t)fields[3];
    f->tag.blkno = fields[4];

    if (take_u32(&c, &has_base) != 0)
        TRUNC("has_base");
    if (has_base != 0) {
        if (take(&c, WALREDO_PAGE_SIZE, &page) != 0)
            TRUNC("base page");
        f->base_page = page;
    }

    if (take_u32(&c, &n_records) != 0)
        TRUNC("n_records");
    /* Each record takes at least 12 bytes: refuse absurd counts before
     * allocating anything. */
    if (n_records > (c.len - c.pos) / 12) {
        set_err(err, errlen,
                "%s: n_records %u cannot fit in the %zu bytes left "
                "(truncated?)",
                f->path, n_records, c.len - c.pos);
        return -1;
    }
    if (n_records > 0) {
        f->records = calloc(n_records, sizeof *f->records);
        if (f->records == NULL) {
            set_err(err, errlen, "%s: out of memory", f->path);
            return -1;
        }
    }
    f->n_records = n_records;
    for (i = 0; i < n_records; i++) {
        uint64_t end_lsn;
        uint32_t len;
        const uint8_t *data;
        char what[64];

        snprintf(what, sizeof what, "record #%zu header", i);
        if (take_u64(&c, &end_lsn) != 0 || take_u32(&c, &len) != 0)
            TRUNC(what);
        snprintf(what, sizeof what, "record #%zu (%u bytes)", i, len);
        if (take(&c, len, &data) != 0)
            TRUNC(what);
        f->records[i].end_lsn = end_lsn;
        f->records[i].data = data;
        f->records[i].len = len;
    }

    if (take_u32(&c, &status) != 0)
        TRUNC("expect_status");
    if (status > (uint32_t)WALREDO_INTERNAL) {
        set_err(err, errlen, "%s: expect_status %u is not a WALREDO_* code",
                f->path, status);
        return -1;
    }
    f->expect_status = (int)status;
    if (status == WALREDO_OK) {
        if (take(&c, WALREDO_PAGE_SIZE, &page) != 0)
            TRUNC("expected page");
        f->expected = page;
    }
    if (c.pos != c.len) {
        set_err(err, errlen, "%s: %zu trailing bytes after offset %zu",
                f->path, c.len - c.pos, c.pos);
        return -1;
    }
#undef TRUNC
    return 0;
}

int fixture_parse(const char *name, const uint8_t *data, size_t len,
                  fixture *f, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    f->path = strdup(name != NULL ? name : "(memory)");
    /* malloc(0) may return NULL: always allocate at least one byte. */
    f->buf = malloc(len > 0 ? len : 1);
    if (f->path == NULL || f->buf == NULL) {
        fixture_free(f);
        set_err(err, errlen, "out of memory");
        return -1;
    }
    if (len > 0)
        memcpy(f->buf, data, len);
    f->buf_len = len;
    if (parse_owned(f, err, errlen) != 0) {
        fixture_free(f);
        return -1;
    }
    return 0;
}

int fixture_load(const char *path, fixture *f, char *err, size_t errlen)
{
    FILE *fp;
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;

    memset(f, 0, sizeof *f);
    fp = fopen(path, "rb");
    if (fp == NULL) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    for (;;) {
        size_t n;

        if (len == cap) {
            uint8_t *bigger;

            if (cap >= FIXTURE_MAX_FILE) {
                set_err(err, errlen, "%s: larger than %zu bytes", path,
                        FIXTURE_MAX_FILE);
                goto fail;
            }
            cap = cap ? cap * 2 : 65536;
            bigger = realloc(buf, cap);
            if (bigger == NULL) {
                set_err(err, errlen, "%s: out of memory", path);
                goto fail;
            }
            buf = bigger;
        }
        n = fread(buf + len, 1, cap - len, fp);
        len += n;
        if (n == 0) {
            if (ferror(fp)) {
                set_err(err, errlen, "%s: read error", path);
                goto fail;
            }
            break;
        }
    }
    fclose(fp);
    fp = NULL;

    f->path = strdup(path);
    if (f->path == NULL) {
        set_err(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    f->buf = buf;
    f->buf_len = len;
    buf = NULL;
    if (f->buf == NULL) {
        /* Empty file: keep a valid (1-byte) buffer for the parser. */
        f->buf = malloc(1);
        if (f->buf == NULL) {
            set_err(err, errlen, "%s: out of memory", path);
            goto fail;
        }
    }
    if (parse_owned(f, err, errlen) != 0)
        goto fail;
    return 0;

fail:
    if (fp != NULL)
        fclose(fp);
    free(buf);
    fixture_free(f);
    return -1;
}

int fixture_load_dir(const char *dir, fixture *cases, int max,
                     char *err, size_t errlen)
{
    int n;

    for (n = 0; n < max; n++) {
        char path[4096];
        FILE *probe;

        snprintf(path, sizeof path, "%s/case-%03d.bin", dir, n);
        probe = fopen(path, "rb");
        if (probe == NULL)
            break;
        fclose(probe);
        if (fixture_load(path, &cases[n], err, errlen) != 0) {
            while (n-- > 0)
                fixture_free(&cases[n]);
            return -1;
        }
    }
    return n;
}

int fixture_load_or_fail(const char *dir, fixture *cases, int max)
{
    char err[512];
    int n = fixture_load_dir(dir, cases, max, err, sizeof err);

    if (n < 0)
        FAIL("fixtures: %s", err);
    return n;
}

int fixture_load_args(int argc, char **argv, fixture *cases, int max)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s EXTENSION_PATH FIXTURE_DIR\n", argv[0]);
        exit(2);
    }
    return fixture_load_or_fail(argv[2], cases, max);
}

int fixture_ok_indexes(const fixture *cases, int n, int *ok, int min)
{
    int n_ok = 0;

    for (int i = 0; i < n; i++)
        if (cases[i].expect_status == WALREDO_OK)
            ok[n_ok++] = i;
    if (n_ok < min)
        FAIL("only %d usable fixtures (of %d)", n_ok, n);
    return n_ok;
}

const fixture *fixture_first_ok(const fixture *cases, int n, size_t min_records)
{
    for (int i = 0; i < n; i++)
        if (cases[i].expect_status == WALREDO_OK && cases[i].n_records >= min_records)
            return &cases[i];
    FAIL("no fixture that succeeds with %zu or more records", min_records);
}
