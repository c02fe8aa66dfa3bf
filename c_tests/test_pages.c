/*
 * test_pages.c: walredo_record_pages against pg_waldump.  For every record of
 * real WAL (fixture of testkit's make-pages-fixture), the pages the library
 * names must be exactly the block references pg_waldump prints (in order,
 * with their images, applicable or for WAL verification only), followed by
 * the visibility-map pages computed here from pg_waldump's description: the
 * flags of heap insert, multi-insert, update, delete, lock and lock-updated
 * and the heap block numbers of their block references, and the new length
 * of a relation truncation.  Also: the too-small status and the count it
 * reports, malformed records and bad arguments.
 *
 * Usage: test_pages FIXTURE_DIR   (FIXTURE_DIR/records.bin, FIXTURE_DIR/waldump.txt)
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <walredo.h>

#include "check.h"

/* Heap blocks per visibility-map page: (BLCKSZ - page header) * 4. */
#define HEAPBLOCKS_PER_VM_PAGE ((8192 - 24) * 4)
#define MAX_PAGES 40

typedef struct rec {
    uint64_t lsn;
    uint32_t len;
    uint8_t *data;
} rec;

/* What pg_waldump says about one record, and the pages that follow from it. */
typedef struct dumped {
    uint64_t lsn;
    char rmgr[32];
    char type[32];
    int npages;
    walredo_record_page pages[MAX_PAGES];
} dumped;

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static rec *load_records(const char *dir, size_t *n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/records.bin", dir);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL, "cannot open %s", path);
    size_t cap = 1024;
    rec *recs = malloc(cap * sizeof *recs);
    CHECK(recs != NULL, "out of memory");
    *n = 0;
    uint8_t head[12];
    while (fread(head, 1, sizeof head, f) == sizeof head) {
        if (*n == cap) {
            cap *= 2;
            recs = realloc(recs, cap * sizeof *recs);
            CHECK(recs != NULL, "out of memory");
        }
        rec *r = &recs[(*n)++];
        r->lsn = le64(head);
        r->len = (uint32_t)le64((uint8_t[8]){head[8], head[9], head[10], head[11], 0, 0, 0, 0});
        CHECK(r->len >= 24 && r->len < (1u << 30), "record %zu: bad length %u", *n, r->len);
        r->data = malloc(r->len);
        CHECK(r->data != NULL, "out of memory");
        CHECK(fread(r->data, 1, r->len, f) == r->len, "%s: truncated", path);
    }
    fclose(f);
    CHECK(*n > 1000, "%s: only %zu records", path, *n);
    return recs;
}

static void add_vm_page(dumped *d, uint32_t spc, uint32_t db, uint32_t rel, uint32_t heapblk,
                        uint8_t change)
{
    walredo_page_tag tag = {spc, db, rel, 2, heapblk / HEAPBLOCKS_PER_VM_PAGE};
    for (int i = 0; i < d->npages; i++) {
        walredo_page_tag *t = &d->pages[i].tag;
        if (t->spcnode == tag.spcnode && t->dbnode == tag.dbnode && t->relnode == tag.relnode &&
            t->forknum == tag.forknum && t->blkno == tag.blkno)
            return;
    }
    CHECK(d->npages < MAX_PAGES, "too many pages");
    walredo_record_page *p = &d->pages[d->npages++];
    memset(p, 0, sizeof *p);
    p->tag = tag;
    p->change = change;
    p->block_id = WALREDO_NO_BLOCK_ID;
}

static int fork_number(const char *name)
{
    static const char *names[] = {"main", "fsm", "vm", "init"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

/*
 * The flags pg_waldump prints, -1 without: "flags 0x%02X" up to 15,
 * "flags: 0x%02X" from 16.
 */
static int desc_flags(const char *desc)
{
    const char *f = strstr(desc, "flags 0x");
    if (f != NULL)
        return (int)strtol(f + 8, NULL, 16);
    f = strstr(desc, "flags: 0x");
    return f ? (int)strtol(f + 9, NULL, 16) : -1;
}

/* Parse one line of pg_waldump's output. */
static void parse_line(char *line, dumped *d)
{
    memset(d, 0, sizeof *d);
    CHECK(sscanf(line, "rmgr: %31s", d->rmgr) == 1, "no rmgr in: %s", line);
    char *l = strstr(line, "lsn: ");
    CHECK(l != NULL, "no lsn in: %s", line);
    unsigned hi, lo;
    CHECK(sscanf(l, "lsn: %X/%X", &hi, &lo) == 2, "bad lsn in: %s", line);
    d->lsn = (uint64_t)hi << 32 | lo;
    char *desc = strstr(line, "desc: ");
    CHECK(desc != NULL, "no desc in: %s", line);
    desc += 6;
    sscanf(desc, "%31s", d->type);
    if (strcmp(d->type, "blkref") == 0 || d->type[0] == ',')
        d->type[0] = '\0';

    /* Block references, in order: ", blkref #N: rel S/D/R [fork F ]blk B[ FPW[ for WAL verification]]". */
    char *b = desc;
    while ((b = strstr(b, "blkref #")) != NULL) {
        unsigned id, spc, db, rel, blk;
        char fork[16] = "main";
        int used = 0;
        if (sscanf(b, "blkref #%u: rel %u/%u/%u fork %15s blk %u%n", &id, &spc, &db, &rel, fork,
                   &blk, &used) != 6) {
            strcpy(fork, "main");
            CHECK(sscanf(b, "blkref #%u: rel %u/%u/%u blk %u%n", &id, &spc, &db, &rel, &blk,
                         &used) == 5,
                  "bad block reference in: %s", line);
        }
        CHECK(d->npages < MAX_PAGES, "too many block references: %s", line);
        walredo_record_page *p = &d->pages[d->npages++];
        memset(p, 0, sizeof *p);
        p->tag = (walredo_page_tag){spc, db, rel, (uint8_t)fork_number(fork), blk};
        CHECK(fork_number(fork) >= 0, "bad fork %s in: %s", fork, line);
        p->change = WALREDO_CHANGE_BLOCK;
        p->block_id = (uint8_t)id;
        b += used;
        if (strncmp(b, " FPW for WAL verification", 25) == 0) {
            p->has_image = true;
        } else if (strncmp(b, " FPW", 4) == 0) {
            p->has_image = true;
            p->applies_image = true;
        }
    }

    /* The visibility-map pages heap redo clears, from the flags printed. */
    int flags = desc_flags(desc);
    int is_heap = strcmp(d->rmgr, "Heap") == 0, is_heap2 = strcmp(d->rmgr, "Heap2") == 0;
    walredo_record_page *b0 = NULL, *b1 = NULL;
    for (int i = 0; i < d->npages; i++) {
        if (d->pages[i].block_id == 0)
            b0 = &d->pages[i];
        if (d->pages[i].block_id == 1)
            b1 = &d->pages[i];
    }
#define VM_OF(p) add_vm_page(d, (p)->tag.spcnode, (p)->tag.dbnode, (p)->tag.relnode, (p)->tag.blkno, WALREDO_CHANGE_VM_CLEAR)
    if (flags >= 0 && b0 != NULL) {
        const char *t = d->type;
        if (is_heap && (strcmp(t, "UPDATE") == 0 || strcmp(t, "UPDATE+INIT") == 0 ||
                        strcmp(t, "HOT_UPDATE") == 0 || strcmp(t, "HOT_UPDATE+INIT") == 0)) {
            /* Old block: reference 1, or the new block without one; relation of block 0. */
            if (flags & 0x01)
                add_vm_page(d, b0->tag.spcnode, b0->tag.dbnode, b0->tag.relnode,
                            b1 ? b1->tag.blkno : b0->tag.blkno, WALREDO_CHANGE_VM_CLEAR);
            if (flags & 0x02)
                VM_OF(b0);
        } else if (((is_heap && (strcmp(t, "INSERT") == 0 || strcmp(t, "INSERT+INIT") == 0 ||
                                 strcmp(t, "DELETE") == 0 || strcmp(t, "LOCK") == 0)) ||
                    (is_heap2 && (strcmp(t, "MULTI_INSERT") == 0 ||
                                  strcmp(t, "MULTI_INSERT+INIT") == 0 ||
                                  strcmp(t, "LOCK_UPDATED") == 0))) &&
                   (flags & 0x01)) {
            VM_OF(b0);
        }
    }
#undef VM_OF
    /* "TRUNCATE base/D/R to N blocks flags F": SMGR_TRUNCATE_VM is 2. */
    unsigned db, rel, nblocks;
    int tflags;
    if (strcmp(d->rmgr, "Storage") == 0 && strcmp(d->type, "TRUNCATE") == 0) {
        CHECK(sscanf(desc, "TRUNCATE base/%u/%u to %u blocks flags %d", &db, &rel, &nblocks,
                     &tflags) == 4,
              "bad truncation in: %s", line);
        if ((tflags & 2) && nblocks % HEAPBLOCKS_PER_VM_PAGE != 0)
            add_vm_page(d, 1663, db, rel, nblocks, WALREDO_CHANGE_VM_TRUNCATE);
    }
}

/* The version whose WAL the fixture holds: WALREDO_PG_VERSION, 15 if unset. */
static uint32_t pg_version = 15;

/* walredo_record_pages of that version (14's image flags differ). */
static int record_pages(const rec *r, walredo_record_page *pages, size_t capacity,
                        size_t *count)
{
    return walredo_record_pages_for(r->data, r->len, pages, capacity, count, pg_version);
}

static int same_tag(const walredo_page_tag *a, const walredo_page_tag *b)
{
    return a->spcnode == b->spcnode && a->dbnode == b->dbnode && a->relnode == b->relnode &&
           a->forknum == b->forknum && a->blkno == b->blkno;
}

static void check_arguments(const rec *r)
{
    walredo_record_page pages[MAX_PAGES];
    size_t count = 12345;
    CHECK_STATUS(walredo_record_pages(NULL, r->len, pages, MAX_PAGES, &count),
                 WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_record_pages(r->data, r->len, pages, MAX_PAGES, NULL),
                 WALREDO_INVALID_ARGUMENT);
    CHECK_STATUS(walredo_record_pages(r->data, r->len, NULL, 3, &count),
                 WALREDO_INVALID_ARGUMENT);
    /* Wrong length, bad CRC, truncated: refused. */
    CHECK_STATUS(walredo_record_pages(r->data, r->len - 1, pages, MAX_PAGES, &count),
                 WALREDO_MALFORMED_RECORD);
    CHECK_STATUS(walredo_record_pages(r->data, 10, pages, MAX_PAGES, &count),
                 WALREDO_MALFORMED_RECORD);
    uint8_t *bad = malloc(r->len);
    CHECK(bad != NULL, "out of memory");
    memcpy(bad, r->data, r->len);
    bad[r->len - 1] ^= 0x5a;
    CHECK_STATUS(walredo_record_pages(bad, r->len, pages, MAX_PAGES, &count),
                 WALREDO_MALFORMED_RECORD);
    CHECK(strstr(walredo_last_error(), "CRC") != NULL, "message: %s", walredo_last_error());
    free(bad);
    /* A version not served. */
    CHECK_STATUS(walredo_record_pages_for(r->data, r->len, pages, MAX_PAGES, &count, 13),
                 WALREDO_INVALID_ARGUMENT);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_pages FIXTURE_DIR\n");
        return 2;
    }
    size_t nrecs;
    rec *recs = load_records(argv[1], &nrecs);
    if (getenv("WALREDO_PG_VERSION") != NULL)
        pg_version = (uint32_t)atoi(getenv("WALREDO_PG_VERSION"));

    char path[4096];
    snprintf(path, sizeof path, "%s/waldump.txt", argv[1]);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s", path);

    /* Per record type: records that change a visibility-map page, named or not. */
    struct { char name[64]; int records; } kinds[32];
    int nkinds = 0;
    size_t i = 0, blockrefs = 0, vm_pages = 0, too_small_checked = 0;
    char *line = NULL;
    size_t linecap = 0;
    while (getline(&line, &linecap, f) > 0) {
        if (strncmp(line, "rmgr: ", 6) != 0)
            continue;
        dumped d;
        parse_line(line, &d);
        CHECK(i < nrecs, "pg_waldump printed more records than the fixture holds");
        rec *r = &recs[i++];
        CHECK(r->lsn == d.lsn, "record %zu: pg_waldump at %" PRIX64 ", fixture at %" PRIX64, i,
              d.lsn, r->lsn);

        walredo_record_page got[MAX_PAGES];
        size_t count = 0;
        CHECK_STATUS(record_pages(r, got, MAX_PAGES, &count), WALREDO_OK);
        CHECK((int)count == d.npages, "record at %X/%X (%s %s): %zu pages, pg_waldump gives %d:\n%s",
              (unsigned)(r->lsn >> 32), (unsigned)r->lsn, d.rmgr, d.type, count, d.npages, line);
        for (int k = 0; k < d.npages; k++) {
            walredo_record_page *w = &d.pages[k], *g = &got[k];
            CHECK(same_tag(&w->tag, &g->tag) && w->change == g->change &&
                      w->block_id == g->block_id && w->has_image == g->has_image &&
                      w->applies_image == g->applies_image,
                  "record at %X/%X page %d: got %u/%u/%u fork %u blk %u change %u id %u image "
                  "%d/%d, pg_waldump: %u/%u/%u fork %u blk %u change %u id %u image %d/%d\n%s",
                  (unsigned)(r->lsn >> 32), (unsigned)r->lsn, k, g->tag.spcnode, g->tag.dbnode,
                  g->tag.relnode, g->tag.forknum, g->tag.blkno, g->change, g->block_id,
                  g->has_image, g->applies_image, w->tag.spcnode, w->tag.dbnode, w->tag.relnode,
                  w->tag.forknum, w->tag.blkno, w->change, w->block_id, w->has_image,
                  w->applies_image, line);
            CHECK(g->initializes == (g->will_init || g->applies_image), "initializes");
            CHECK(g->change == WALREDO_CHANGE_BLOCK || (!g->will_init && !g->initializes),
                  "a side-effect page never initializes");
            if (w->change == WALREDO_CHANGE_BLOCK)
                blockrefs++;
            else
                vm_pages++;
        }
        /* Heap "+INIT" records initialize their block 0. */
        if (strstr(d.type, "+INIT") != NULL)
            CHECK(count > 0 && got[0].block_id == 0 && got[0].will_init, "+INIT without will_init");
        if (count > 0 && too_small_checked < 200) {
            size_t need = 0;
            CHECK_STATUS(record_pages(r, NULL, 0, &need), WALREDO_BUFFER_TOO_SMALL);
            CHECK(need == count, "too small: count %zu, want %zu", need, count);
            CHECK_STATUS(record_pages(r, got, count - 1, &need), WALREDO_BUFFER_TOO_SMALL);
            CHECK(need == count, "too small: count %zu, want %zu", need, count);
            too_small_checked++;
        }
        for (int k = 0; k < d.npages; k++) {
            /* A visibility-map page, named without a block reference (up to
             * 15), or as one by a heap record (17.12 and 18 register the
             * page they clear bits of). */
            int heap_names_vm = d.pages[k].tag.forknum == 2 &&
                                (strcmp(d.rmgr, "Heap") == 0 ||
                                 (strcmp(d.rmgr, "Heap2") == 0 && strcmp(d.type, "VISIBLE") != 0));
            if (d.pages[k].change == WALREDO_CHANGE_BLOCK && !heap_names_vm)
                continue;
            char name[64];
            snprintf(name, sizeof name, "%s/%s", d.rmgr, d.type);
            int j = 0;
            while (j < nkinds && strcmp(kinds[j].name, name) != 0)
                j++;
            if (j == nkinds && nkinds < 32) {
                snprintf(kinds[nkinds].name, sizeof kinds[nkinds].name, "%s", name);
                kinds[nkinds++].records = 0;
            }
            if (j < 32)
                kinds[j].records++;
            break;
        }
    }
    free(line);
    fclose(f);
    CHECK(i == nrecs, "pg_waldump printed %zu records, the fixture holds %zu", i, nrecs);
    CHECK(blockrefs > 1000, "only %zu block references", blockrefs);

    /* Every kind of visibility-map change the workload makes was seen. */
    const char *want[] = {"Heap/INSERT", "Heap/DELETE", "Heap/UPDATE", "Heap/HOT_UPDATE",
                          "Heap/LOCK", "Heap2/MULTI_INSERT", "Storage/TRUNCATE"};
    for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
        int seen = 0;
        for (int j = 0; j < nkinds; j++)
            seen |= strcmp(kinds[j].name, want[w]) == 0;
        CHECK(seen, "no %s record names a visibility-map page", want[w]);
    }
    printf("test_pages: %zu records, %zu block references, %zu visibility-map pages named "
           "without a block reference; records that change a visibility-map page:",
           nrecs, blockrefs, vm_pages);
    for (int j = 0; j < nkinds; j++)
        printf(" %s %d", kinds[j].name, kinds[j].records);
    printf("\n");

    check_arguments(&recs[0]);
    for (size_t k = 0; k < nrecs; k++)
        free(recs[k].data);
    free(recs);
    printf("test_pages: all %d checks passed\n", checks);
    return 0;
}
