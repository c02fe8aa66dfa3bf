/*
 * test_wal.c: WAL sources through the C ABI: argument checks, plans redone
 * through a pool equal to the pages PostgreSQL's recovery made (fixture of
 * testkit's make-wal-fixture), histories, bounds, NOT_FOUND and CANCELLED.
 *
 * Usage: test_wal EXTENSION_PATH FIXTURE_DIR   (FIXTURE_DIR/wal, FIXTURE_DIR/expected.bin)
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <walredo.h>

#include "check.h"
#include "pools.h"

typedef struct expected_page {
    walredo_page_tag tag;
    uint64_t lsn;
    uint8_t page[WALREDO_PAGE_SIZE];
} expected_page;

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static expected_page *load_expected(const char *dir, uint32_t *n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/expected.bin", dir);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL, "cannot open %s", path);
    uint8_t head[4];
    CHECK(fread(head, 1, 4, f) == 4, "%s: truncated", path);
    *n = le32(head);
    CHECK(*n > 0 && *n < 1000, "%s: bad count %u", path, *n);
    expected_page *pages = calloc(*n, sizeof *pages);
    CHECK(pages != NULL, "out of memory");
    for (uint32_t i = 0; i < *n; i++) {
        uint8_t h[28];
        CHECK(fread(h, 1, sizeof h, f) == sizeof h, "%s: truncated", path);
        pages[i].tag.spcnode = le32(h);
        pages[i].tag.dbnode = le32(h + 4);
        pages[i].tag.relnode = le32(h + 8);
        pages[i].tag.forknum = (uint8_t)le32(h + 12);
        pages[i].tag.blkno = le32(h + 16);
        pages[i].lsn = (uint64_t)le32(h + 20) | (uint64_t)le32(h + 24) << 32;
        CHECK(fread(pages[i].page, 1, WALREDO_PAGE_SIZE, f) == WALREDO_PAGE_SIZE,
              "%s: truncated", path);
    }
    fclose(f);
    return pages;
}

static int interrupt_calls;
static int interrupt_now(void *userdata)
{
    interrupt_calls++;
    return *(int *)userdata;
}

typedef struct history {
    int n;
    int first_starts; /* the first entry has an image or initializes */
    int sorted;
    uint64_t last_start;
    int stop_after;   /* 0: never stop */
} history;

static int each_entry(void *userdata, const walredo_history_entry *e)
{
    history *h = userdata;
    CHECK(e->rmgr != NULL && e->record_type != NULL && e->rmgr[0] && e->record_type[0],
          "names missing");
    CHECK(e->end_lsn > e->start_lsn, "end %llx <= start %llx",
          (unsigned long long)e->end_lsn, (unsigned long long)e->start_lsn);
    if (h->n == 0)
        h->first_starts = e->has_image || e->will_init;
    else if (e->start_lsn <= h->last_start)
        h->sorted = 0;
    h->last_start = e->start_lsn;
    h->n++;
    return h->stop_after && h->n >= h->stop_after;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_wal EXTENSION_PATH FIXTURE_DIR\n");
        return 2;
    }
    char wal_dir[4096];
    snprintf(wal_dir, sizeof wal_dir, "%s/wal", argv[2]);
    uint32_t n_pages;
    expected_page *pages = load_expected(argv[2], &n_pages);

    /* Status names. */
    CHECK(strcmp(walredo_status_name(WALREDO_CANCELLED), "WALREDO_CANCELLED") == 0, "name");
    CHECK(strcmp(walredo_status_name(WALREDO_NOT_FOUND), "WALREDO_NOT_FOUND") == 0, "name");
    CHECK(WALREDO_CANCELLED == 11 && WALREDO_NOT_FOUND == 12, "values");

    /* walredo_wal_open argument checks. */
    walredo_wal *wal = (walredo_wal *)1;
    const char *dirs[] = {wal_dir, "/nonexistent/walredo-archive"};
    const char *null_dir[] = {NULL};
    CHECK_STATUS(walredo_wal_open(dirs, 1, 0, NULL), WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_wal_open(NULL, 1, 0, &wal), WALREDO_INVALID_ARGUMENT);
    CHECK(wal == NULL, "out not cleared on failure");
    CHECK_STATUS(walredo_wal_open(dirs, 0, 0, &wal), WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_wal_open(null_dir, 1, 0, &wal), WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_wal_open(dirs, 2, 0, &wal), WALREDO_INVALID_ARGUMENT);
    CHECK(strstr(walredo_last_error(), "/nonexistent/walredo-archive") != NULL, "message");
    walredo_wal_free(NULL);
    walredo_plan_free(NULL);
    CHECK(walredo_plan_n_records(NULL) == 0 && walredo_plan_records(NULL) == NULL, "NULL plan");

    /* A timeline that is not there: NOT_FOUND on first use. */
    CHECK_STATUS(walredo_wal_open(dirs, 1, 77, &wal), WALREDO_OK);
    uint64_t oldest = 0, newest = 0;
    CHECK_STATUS(walredo_wal_bounds(wal, UINT64_MAX, &oldest, &newest), WALREDO_NOT_FOUND);
    CHECK(strstr(walredo_last_error(), "timeline 77") != NULL, "message");
    walredo_wal_free(wal);

    CHECK_STATUS(walredo_wal_open(dirs, 1, 0, &wal), WALREDO_OK);
    CHECK(wal != NULL, "no source");

    /* Bounds. */
    CHECK_STATUS(walredo_wal_bounds(NULL, UINT64_MAX, &oldest, &newest), WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_wal_bounds(wal, UINT64_MAX, NULL, &newest), WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_wal_bounds(wal, pages[0].lsn, &oldest, &newest), WALREDO_OK);
    CHECK(oldest < newest && newest <= pages[0].lsn, "bounds %llx %llx",
          (unsigned long long)oldest, (unsigned long long)newest);

    /* Plan argument checks. */
    walredo_plan *plan = (walredo_plan *)1;
    walredo_page_tag bad_fork = pages[0].tag;
    bad_fork.forknum = 4;
    CHECK_STATUS(walredo_wal_plan(wal, &pages[0].tag, pages[0].lsn, NULL, NULL, NULL),
                 WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_wal_plan(NULL, &pages[0].tag, pages[0].lsn, NULL, NULL, &plan),
                 WALREDO_INVALID_ARGUMENT);
    CHECK(plan == NULL, "out not cleared on failure");
    CHECK_STATUS(walredo_wal_plan(wal, NULL, pages[0].lsn, NULL, NULL, &plan),
                 WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_wal_plan(wal, &bad_fork, pages[0].lsn, NULL, NULL, &plan),
                 WALREDO_INVALID_ARGUMENT);

    /* NOT_FOUND: before the oldest, after the newest, never written. */
    CHECK_STATUS(walredo_wal_plan(wal, &pages[0].tag, 0x100, NULL, NULL, &plan), WALREDO_NOT_FOUND);
    CHECK(strstr(walredo_last_error(), "before the oldest readable WAL record") != NULL, "message");
    CHECK_STATUS(walredo_wal_plan(wal, &pages[0].tag, newest + ((uint64_t)64 << 20), NULL, NULL, &plan),
                 WALREDO_NOT_FOUND);
    CHECK(strstr(walredo_last_error(), "after the newest") != NULL, "message");
    walredo_page_tag never = pages[0].tag;
    never.relnode = 4000000000u;
    CHECK_STATUS(walredo_wal_plan(wal, &never, pages[0].lsn, NULL, NULL, &plan), WALREDO_NOT_FOUND);
    CHECK(strstr(walredo_last_error(), "references") != NULL, "message");

    /* CANCELLED: on a fresh source, the interrupt is asked before reading. */
    walredo_wal *fresh;
    CHECK_STATUS(walredo_wal_open(dirs, 1, 0, &fresh), WALREDO_OK);
    int stop = 1;
    CHECK_STATUS(walredo_wal_plan(fresh, &never, pages[0].lsn, interrupt_now, &stop, &plan),
                 WALREDO_CANCELLED);
    CHECK(interrupt_calls > 0 && plan == NULL, "interrupt not called");
    history h = {0, 0, 1, 0, 0};
    CHECK_STATUS(walredo_wal_history(fresh, &pages[0].tag, pages[0].lsn, each_entry, &h,
                                     interrupt_now, &stop),
                 WALREDO_CANCELLED);
    walredo_wal_free(fresh);

    /* Plans redone through a pool give PostgreSQL's pages. */
    walredo_config *cfg = walredo_config_new();
    CHECK_STATUS(walredo_config_set(cfg, "extension_path", argv[1]), WALREDO_OK);
    CHECK_STATUS(walredo_config_set(cfg, "processes", "1"), WALREDO_OK);
    set_test_server(cfg);
    walredo_pool *pool;
    CHECK_STATUS(walredo_pool_new(cfg, &pool), WALREDO_OK);
    walredo_config_free(cfg);
    stop = 0;
    for (uint32_t i = 0; i < n_pages; i++) {
        CHECK_STATUS(walredo_wal_plan(wal, &pages[i].tag, pages[i].lsn, interrupt_now, &stop, &plan),
                     WALREDO_OK);
        size_t n = walredo_plan_n_records(plan);
        const walredo_record *recs = walredo_plan_records(plan);
        CHECK(n >= 2 && recs != NULL, "plan of %zu records", n);
        for (size_t r = 0; r < n; r++)
            CHECK(recs[r].end_lsn <= pages[i].lsn && recs[r].len >= 24, "record %zu", r);
        uint8_t page[WALREDO_PAGE_SIZE];
        CHECK_STATUS(walredo_redo(pool, &pages[i].tag, NULL, recs, n, page), WALREDO_OK);
        CHECK(memcmp(page, pages[i].page, WALREDO_PAGE_SIZE) == 0,
              "page %u/%u/%u blk %u differs from PostgreSQL's recovery", pages[i].tag.spcnode,
              pages[i].tag.dbnode, pages[i].tag.relnode, pages[i].tag.blkno);
        /* Without its last record, it does not. */
        CHECK_STATUS(walredo_redo(pool, &pages[i].tag, NULL, recs, n - 1, page), WALREDO_OK);
        CHECK(memcmp(page, pages[i].page, WALREDO_PAGE_SIZE) != 0, "negative control");

        /*
         * On a base: from the end of the plan's first record, the base is the
         * page after it, and the plan the records after it.
         */
        walredo_plan *on_base;
        uint8_t base[WALREDO_PAGE_SIZE];
        CHECK_STATUS(walredo_redo(pool, &pages[i].tag, NULL, recs, 1, base), WALREDO_OK);
        CHECK_STATUS(walredo_wal_plan_on_base(wal, &pages[i].tag, pages[i].lsn, recs[0].end_lsn,
                                              NULL, NULL, &on_base), WALREDO_OK);
        CHECK(walredo_plan_on_base(on_base) == 1 && walredo_plan_n_records(on_base) == n - 1,
              "plan on a base: %d, %zu records", walredo_plan_on_base(on_base),
              walredo_plan_n_records(on_base));
        CHECK_STATUS(walredo_redo(pool, &pages[i].tag, base, walredo_plan_records(on_base),
                                  n - 1, page), WALREDO_OK);
        CHECK(memcmp(page, pages[i].page, WALREDO_PAGE_SIZE) == 0, "page on a base differs");
        walredo_plan_free(on_base);
        /* A base older than the page's starting point: the plain plan. */
        CHECK_STATUS(walredo_wal_plan_on_base(wal, &pages[i].tag, pages[i].lsn, oldest, NULL,
                                              NULL, &on_base), WALREDO_OK);
        CHECK(walredo_plan_on_base(on_base) == 0 && walredo_plan_n_records(on_base) == n,
              "plan on an older base");
        walredo_plan_free(on_base);

        /*
         * What redo made matches PostgreSQL's page, also with another LSN (it
         * is masked); another block's page does not.
         */
        int matches = -1;
        CHECK_STATUS(walredo_pages_match(&pages[i].tag, page, pages[i].page, &matches), WALREDO_OK);
        CHECK(matches == 1, "pages_match of identical pages");
        page[0] ^= 1;
        CHECK_STATUS(walredo_pages_match(&pages[i].tag, page, pages[i].page, &matches), WALREDO_OK);
        CHECK(matches == 1, "pages_match of another LSN");
        if (n_pages > 1) {
            const uint8_t *other = pages[(i + 1) % n_pages].page;
            CHECK_STATUS(walredo_pages_match(&pages[i].tag, page, other, &matches), WALREDO_OK);
            CHECK(matches == 0, "pages_match of another block's page");
        }
        uint64_t first_end = recs[0].end_lsn;
        walredo_plan_free(plan);

        /* The history: oldest first, the plan's records among them. */
        history hh = {0, 0, 1, 0, 0};
        CHECK_STATUS(walredo_wal_history(wal, &pages[i].tag, pages[i].lsn, each_entry, &hh, NULL, NULL),
                     WALREDO_OK);
        CHECK(hh.n >= (int)n && hh.sorted && hh.first_starts, "history of %d entries", hh.n);
        /* Since an LSN after the first entry's start: that one is left out. */
        history since0 = {0, 0, 1, 0, 0}, later = {0, 0, 1, 0, 0};
        CHECK_STATUS(walredo_wal_history_since(wal, &pages[i].tag, 0, pages[i].lsn, each_entry,
                                               &since0, NULL, NULL), WALREDO_OK);
        CHECK(since0.n == hh.n, "history since 0: %d, not %d", since0.n, hh.n);
        CHECK_STATUS(walredo_wal_history_since(wal, &pages[i].tag, first_end, pages[i].lsn,
                                               each_entry, &later, NULL, NULL), WALREDO_OK);
        CHECK(later.n < hh.n && later.n >= (int)n - 1, "history since the first record: %d of %d",
              later.n, hh.n);
        history one = {0, 0, 1, 0, 1};
        CHECK_STATUS(walredo_wal_history(wal, &pages[i].tag, pages[i].lsn, each_entry, &one, NULL, NULL),
                     WALREDO_OK);
        CHECK(one.n == 1, "the walk did not stop");
    }
    CHECK_STATUS(walredo_wal_history(wal, &pages[0].tag, pages[0].lsn, NULL, NULL, NULL, NULL),
                 WALREDO_INVALID_ARGUMENT);

    /* Plans on a base: arguments, a base of 0 or after the LSN. */
    CHECK(walredo_plan_on_base(NULL) == 0, "NULL plan on a base");
    CHECK_STATUS(walredo_wal_plan_on_base(NULL, &pages[0].tag, pages[0].lsn, oldest, NULL, NULL,
                                          &plan), WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_wal_plan_on_base(wal, &pages[0].tag, pages[0].lsn, 0, NULL, NULL, &plan),
                 WALREDO_NOT_FOUND);
    CHECK_STATUS(walredo_wal_plan_on_base(wal, &pages[0].tag, pages[0].lsn, pages[0].lsn + 8,
                                          NULL, NULL, &plan), WALREDO_NOT_FOUND);
    CHECK(plan == NULL && strstr(walredo_last_error(), "base backup") != NULL, "message");

    /* Page comparison: arguments. */
    int matches;
    CHECK_STATUS(walredo_pages_match(NULL, pages[0].page, pages[0].page, &matches),
                 WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_pages_match(&pages[0].tag, NULL, pages[0].page, &matches),
                 WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_pages_match(&pages[0].tag, pages[0].page, pages[0].page, NULL),
                 WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_pages_match(&bad_fork, pages[0].page, pages[0].page, &matches),
                 WALREDO_INVALID_ARGUMENT);

    /* Another cluster's system identifier: its WAL is not read. */
    walredo_wal *other;
    int rc_other;
    CHECK_STATUS(walredo_wal_expect_system(NULL, 1), WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_wal_open(dirs, 1, 0, &other), WALREDO_OK);
    CHECK_STATUS(walredo_wal_expect_system(other, 0), WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_wal_expect_system(other, 12345), WALREDO_OK);
    rc_other = walredo_wal_plan(other, &pages[0].tag, pages[0].lsn, NULL, NULL, &plan);
    CHECK(rc_other != WALREDO_OK && plan == NULL, "another cluster's WAL was read");
    CHECK(strstr(walredo_last_error(), "another cluster") != NULL, "message: %s",
          walredo_last_error());
    walredo_wal_free(other);
    walredo_pool_free(pool);
    walredo_wal_free(wal);
    free(pages);
    printf("test_wal: %d checks passed (%u pages)\n", checks, n_pages);
    return 0;
}
