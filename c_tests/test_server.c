/*
 * test_server.c: the library used the way a page server uses it, on real
 * WAL (fixture of testkit's make-server-fixture).  Every record is indexed
 * under the pages it changes: relation pages (walredo_record_pages_for) and
 * SLRU pages and relation maps (walredo_record_slru_changes, commit
 * timestamps followed through WALREDO_COMMIT_TS_SETTING), each page keeping
 * its records in LSN order in a hash table.  Then every page is rebuilt as
 * of the end of the WAL, from its last initializing record or from the base
 * data directory, relation pages through a pool (walredo_redo), SLRU pages
 * in the library (walredo_redo_slru), maps from their last update
 * (walredo_relmap_from_record), and compared byte for byte with what
 * PostgreSQL's archive recovery of the same WAL left.  Negative controls: a
 * pg_xact page rebuilt without a commit differs; a record that does not
 * change the page is refused, a damaged one too.
 *
 * Usage: test_server EXTENSION_PATH FIXTURE_DIR
 *   (FIXTURE_DIR/info.txt, records.bin, base/, expected/)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <walredo.h>

#include "check.h"
#include "clock.h"
#include "pools.h"

#define PAGE WALREDO_PAGE_SIZE
#define RELSEG_BLOCKS 131072u /* blocks of a 1 GB relation segment */
#define SLRU_PAGES_PER_SEGMENT 32u
#define GLOBAL_TABLESPACE 1664u
#define DEFAULT_TABLESPACE 1663u
#define MAP_MAX 1024          /* a relation map file: 512 or 524 bytes */
#define SHOW_MAX 10           /* differences and errors printed */

/* What a page is: a relation fork (its number), an SLRU or a map. */
enum kind {
    K_MAIN,
    K_FSM,
    K_VM,
    K_INIT,
    K_XACT,
    K_OFFSETS,
    K_MEMBERS,
    K_COMMIT_TS,
    K_RELMAP,
    N_KINDS
};
static const char *kind_names[N_KINDS] = {
    "main", "fsm", "vm", "init", "pg_xact", "pg_multixact/offsets", "pg_multixact/members",
    "pg_commit_ts", "pg_filenode.map",
};
/* The directory of each SLRU kind (K_XACT + code - WALREDO_SLRU_XACT). */
static const char *slru_dirs[N_KINDS] = {
    [K_XACT] = "pg_xact",
    [K_OFFSETS] = "pg_multixact/offsets",
    [K_MEMBERS] = "pg_multixact/members",
    [K_COMMIT_TS] = "pg_commit_ts",
};

typedef struct rec {
    uint64_t start_lsn, end_lsn;
    uint32_t len;
    const uint8_t *data; /* in the file's buffer */
} rec;

/* A page's identity: relation pages spc/db/rel/blkno, SLRU pages pageno in
 * `no`, maps spc/db. No padding, so keys compare field by field. */
typedef struct key {
    uint32_t kind, spc, db, rel;
    uint64_t no;
} key;

/* A page and the records that change it, in LSN order. */
typedef struct entry {
    key k;
    bool used;
    bool initialized; /* recs[start] initializes it: replay needs no base */
    uint32_t start;
    uint32_t n, cap;
    uint32_t *recs; /* indexes into the record array */
} entry;

/* Open addressing, linear probing, a power of two of slots, at most half full. */
typedef struct table {
    entry *slots;
    size_t cap, n;
} table;

static uint32_t pg_version;

static uint64_t le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t hash_key(const key *k)
{
    uint64_t h = k->kind;
    h = h * 0x9E3779B97F4A7C15ull ^ k->spc;
    h = h * 0x9E3779B97F4A7C15ull ^ k->db;
    h = h * 0x9E3779B97F4A7C15ull ^ k->rel;
    h = h * 0x9E3779B97F4A7C15ull ^ k->no;
    /* splitmix64's finalizer */
    h ^= h >> 30;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 27;
    h *= 0x94D049BB133111EBull;
    return h ^ (h >> 31);
}

static bool same_key(const key *a, const key *b)
{
    return a->kind == b->kind && a->spc == b->spc && a->db == b->db && a->rel == b->rel &&
           a->no == b->no;
}

static entry *probe(entry *slots, size_t cap, const key *k)
{
    size_t i = (size_t)hash_key(k) & (cap - 1);
    while (slots[i].used && !same_key(&slots[i].k, k))
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

/* The entry of `k`, or NULL. */
static entry *find(const table *t, const key *k)
{
    entry *e = probe(t->slots, t->cap, k);
    return e->used ? e : NULL;
}

/* The entry of `k`, made empty when new. */
static entry *lookup(table *t, const key *k)
{
    if ((t->n + 1) * 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        entry *slots = calloc(cap, sizeof *slots);
        CHECK(slots != NULL, "out of memory");
        for (size_t i = 0; i < t->cap; i++)
            if (t->slots[i].used)
                *probe(slots, cap, &t->slots[i].k) = t->slots[i];
        free(t->slots);
        t->slots = slots;
        t->cap = cap;
    }
    entry *e = probe(t->slots, t->cap, k);
    if (!e->used) {
        e->used = true;
        e->k = *k;
        t->n++;
    }
    return e;
}

static void append(entry *e, uint32_t record, bool initializes)
{
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 4;
        e->recs = realloc(e->recs, e->cap * sizeof *e->recs);
        CHECK(e->recs != NULL, "out of memory");
    }
    if (initializes) {
        e->initialized = true;
        e->start = e->n;
    }
    e->recs[e->n++] = record;
}

static int compare_entries(const void *a, const void *b)
{
    const key *x = &(*(entry *const *)a)->k, *y = &(*(entry *const *)b)->k;
    uint64_t fx[5] = {x->kind, x->spc, x->db, x->rel, x->no};
    uint64_t fy[5] = {y->kind, y->spc, y->db, y->rel, y->no};
    for (int i = 0; i < 5; i++)
        if (fx[i] != fy[i])
            return fx[i] < fy[i] ? -1 : 1;
    return 0;
}

/* The whole of a file, or NULL when it does not exist. */
static uint8_t *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    struct stat st;
    CHECK(fstat(fileno(f), &st) == 0, "stat %s", path);
    *size = (size_t)st.st_size;
    uint8_t *buf = malloc(*size ? *size : 1);
    CHECK(buf != NULL, "out of memory");
    CHECK(fread(buf, 1, *size, f) == *size, "%s: short read", path);
    fclose(f);
    return buf;
}

/* Page `pageno` of the file at `path` (8192 bytes at pageno * 8192): false
 * when the file or the page is not there. */
static bool read_page(const char *path, uint64_t pageno, uint8_t *out)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return false;
    ssize_t got = pread(fd, out, PAGE, (off_t)(pageno * PAGE));
    close(fd);
    CHECK(got >= 0, "%s: read failed", path);
    CHECK(got == 0 || got == PAGE, "%s: a partial page %" PRIu64 " (%zd bytes)", path, pageno,
          got);
    return got == PAGE;
}

/* A relation page's file and the page's number in it. */
static uint64_t rel_path(char *path, size_t size, const char *datadir, const key *k)
{
    static const char *fork_suffix[4] = {"", "_fsm", "_vm", "_init"};
    uint32_t segment = (uint32_t)(k->no / RELSEG_BLOCKS);
    char seg[16] = "";
    if (segment > 0)
        snprintf(seg, sizeof seg, ".%u", segment);
    if (k->spc == GLOBAL_TABLESPACE)
        snprintf(path, size, "%s/global/%u%s%s", datadir, k->rel, fork_suffix[k->kind], seg);
    else {
        CHECK(k->spc == DEFAULT_TABLESPACE, "tablespace %u: the fixture has none", k->spc);
        snprintf(path, size, "%s/base/%u/%u%s%s", datadir, k->db, k->rel, fork_suffix[k->kind],
                 seg);
    }
    return k->no % RELSEG_BLOCKS;
}

/* An SLRU page's segment file and the page's number in it. */
static uint64_t slru_path(char *path, size_t size, const char *datadir, const key *k)
{
    snprintf(path, size, "%s/%s/%04" PRIX64, datadir, slru_dirs[k->kind],
             k->no / SLRU_PAGES_PER_SEGMENT);
    return k->no % SLRU_PAGES_PER_SEGMENT;
}

static void map_path(char *path, size_t size, const char *datadir, const key *k)
{
    if (k->spc == GLOBAL_TABLESPACE)
        snprintf(path, size, "%s/global/pg_filenode.map", datadir);
    else {
        CHECK(k->spc == DEFAULT_TABLESPACE, "tablespace %u: the fixture has none", k->spc);
        snprintf(path, size, "%s/base/%u/pg_filenode.map", datadir, k->db);
    }
}

static void describe(char *out, size_t size, const key *k)
{
    if (k->kind <= K_INIT)
        snprintf(out, size, "%s %u/%u/%u blk %" PRIu64, kind_names[k->kind], k->spc, k->db,
                 k->rel, k->no);
    else if (k->kind == K_RELMAP)
        snprintf(out, size, "pg_filenode.map of %u/%u", k->spc, k->db);
    else
        snprintf(out, size, "%s page %" PRIu64, kind_names[k->kind], k->no);
}

static void lsn_text(char *out, uint64_t lsn)
{
    sprintf(out, "%X/%X", (unsigned)(lsn >> 32), (unsigned)lsn);
}

/* Per kind: pages compared, identical, different, gone; errors. */
typedef struct counts {
    size_t compared, identical, different, gone, errors;
} counts;

typedef struct state {
    char base_dir[2048], expected_dir[2048]; /* FIXTURE_DIR/base, FIXTURE_DIR/expected */
    rec *recs;
    size_t nrecs;
    walredo_record *batch; /* room for the longest list */
    counts c[N_KINDS];
    int shown; /* differences and errors printed */
} state;

/* The records of `e` from `from` on, as walredo_records. */
static size_t batch_of(state *s, const entry *e, uint32_t from, uint32_t leave_out)
{
    size_t n = 0;
    for (uint32_t i = from; i < e->n; i++) {
        if (e->recs[i] == leave_out)
            continue;
        const rec *r = &s->recs[e->recs[i]];
        s->batch[n++] = (walredo_record){r->end_lsn, r->data, r->len};
    }
    return n;
}

static void report_error(state *s, const entry *e, const char *what)
{
    char name[128];
    describe(name, sizeof name, &e->k);
    s->c[e->k.kind].errors++;
    if (s->shown++ < SHOW_MAX)
        fprintf(stderr, "test_server: ERROR %s: %s\n", name, what);
}

static void tally(state *s, const entry *e, const uint8_t *got, const uint8_t *want, size_t size,
                  uint32_t from, bool from_base)
{
    counts *c = &s->c[e->k.kind];
    c->compared++;
    if (memcmp(got, want, size) == 0) {
        c->identical++;
        return;
    }
    c->different++;
    if (s->shown++ >= SHOW_MAX)
        return;
    size_t off = 0;
    while (got[off] == want[off])
        off++;
    char name[128], first[32], last[32];
    describe(name, sizeof name, &e->k);
    lsn_text(first, s->recs[e->recs[from]].start_lsn);
    lsn_text(last, s->recs[e->recs[e->n - 1]].start_lsn);
    fprintf(stderr,
            "test_server: DIFFERENT %s: first at byte %zu (rebuilt 0x%02x, recovery 0x%02x); "
            "%u records from %s to %s, from %s\n",
            name, off, got[off], want[off], e->n - from, first, last,
            from_base ? "the base page" : "the first one (initializing)");
}

static void rebuild_relation_page(state *s, walredo_pool *pool, const entry *e)
{
    char path[4096], why[4200];
    uint8_t want[PAGE], base[PAGE], got[PAGE];
    uint64_t pageno = rel_path(path, sizeof path, s->expected_dir, &e->k);
    if (!read_page(path, pageno, want)) {
        /* Dropped (the files VACUUM FULL replaced) or truncated. */
        s->c[e->k.kind].gone++;
        return;
    }
    const uint8_t *start = NULL;
    uint32_t from = 0;
    if (e->initialized) {
        from = e->start;
    } else {
        rel_path(path, sizeof path, s->base_dir, &e->k);
        if (read_page(path, pageno, base)) {
            start = base;
        } else if (e->k.kind == K_VM) {
            /* Recovery extends the visibility map with zero pages. */
            memset(base, 0, PAGE);
            start = base;
        } else {
            report_error(s, e, "no starting point: not in the base and no record initializes it");
            return;
        }
    }
    size_t n = batch_of(s, e, from, UINT32_MAX);
    walredo_page_tag tag = {e->k.spc, e->k.db, e->k.rel, (uint8_t)e->k.kind, (uint32_t)e->k.no};
    int status = walredo_redo(pool, &tag, start, s->batch, n, got);
    if (status != WALREDO_OK) {
        snprintf(why, sizeof why, "walredo_redo: %s: %s", walredo_status_name(status),
                 walredo_last_error());
        report_error(s, e, why);
        return;
    }
    tally(s, e, got, want, PAGE, from, start != NULL);
}

/* Rebuild an SLRU page leaving out record `leave_out` (UINT32_MAX: none):
 * the status, the page in `got`, the starting point in *from_base. */
static int redo_slru_page(state *s, const entry *e, uint32_t leave_out, uint8_t *got,
                          bool *from_base)
{
    char path[4096];
    uint8_t base[PAGE];
    const uint8_t *start = NULL;
    uint32_t from = 0;
    if (e->initialized) {
        from = e->start;
    } else {
        uint64_t pageno = slru_path(path, sizeof path, s->base_dir, &e->k);
        /* No file or no page: recovery reads zeros (so does NULL). */
        if (read_page(path, pageno, base))
            start = base;
    }
    *from_base = !e->initialized;
    size_t n = batch_of(s, e, from, leave_out);
    walredo_slru_page page = {(uint8_t)(e->k.kind - K_XACT + WALREDO_SLRU_XACT), e->k.no};
    return walredo_redo_slru(&page, pg_version, start, s->batch, n, got);
}

static bool expected_slru_page(state *s, const entry *e, uint8_t *want)
{
    char path[4096];
    uint64_t pageno = slru_path(path, sizeof path, s->expected_dir, &e->k);
    return read_page(path, pageno, want);
}

static void rebuild_slru_page(state *s, const entry *e)
{
    uint8_t want[PAGE], got[PAGE];
    char why[4200];
    if (!expected_slru_page(s, e, want)) {
        report_error(s, e, "not in EXPECTED");
        return;
    }
    bool from_base;
    int status = redo_slru_page(s, e, UINT32_MAX, got, &from_base);
    if (status != WALREDO_OK) {
        snprintf(why, sizeof why, "walredo_redo_slru: %s: %s", walredo_status_name(status),
                 walredo_last_error());
        report_error(s, e, why);
        return;
    }
    tally(s, e, got, want, PAGE, e->initialized ? e->start : 0, from_base);
}

static void rebuild_map(state *s, const entry *e)
{
    char path[4096], why[4200];
    uint8_t got[MAP_MAX];
    size_t size = 0, want_size = 0;
    const rec *r = &s->recs[e->recs[e->n - 1]];
    walredo_relmap which = {0, 0};
    int status = walredo_relmap_from_record(r->data, r->len, pg_version, &which, got,
                                            sizeof got, &size);
    if (status != WALREDO_OK) {
        snprintf(why, sizeof why, "walredo_relmap_from_record: %s: %s",
                 walredo_status_name(status), walredo_last_error());
        report_error(s, e, why);
        return;
    }
    CHECK(which.spcnode == e->k.spc && which.dbnode == e->k.db,
          "the map of %u/%u from a record routed to %u/%u", which.spcnode, which.dbnode, e->k.spc,
          e->k.db);
    map_path(path, sizeof path, s->expected_dir, &e->k);
    uint8_t *want = read_file(path, &want_size);
    if (want == NULL) {
        report_error(s, e, "not in EXPECTED");
        return;
    }
    if (want_size != size) {
        snprintf(why, sizeof why, "%zu bytes, EXPECTED's file %zu", size, want_size);
        report_error(s, e, why);
    } else {
        tally(s, e, got, want, size, e->n - 1, false);
    }
    free(want);
}

static rec *load_records(const char *dir, size_t *n, uint8_t **buf)
{
    char path[4096];
    size_t size = 0;
    snprintf(path, sizeof path, "%s/records.bin", dir);
    *buf = read_file(path, &size);
    CHECK(*buf != NULL, "cannot open %s", path);
    size_t cap = 1024;
    rec *recs = malloc(cap * sizeof *recs);
    CHECK(recs != NULL, "out of memory");
    *n = 0;
    for (size_t at = 0; at < size;) {
        CHECK(size - at >= 20, "%s: truncated at %zu", path, at);
        if (*n == cap) {
            cap *= 2;
            recs = realloc(recs, cap * sizeof *recs);
            CHECK(recs != NULL, "out of memory");
        }
        rec *r = &recs[(*n)++];
        r->start_lsn = le(*buf + at, 8);
        r->end_lsn = le(*buf + at + 8, 8);
        r->len = (uint32_t)le(*buf + at + 16, 4);
        at += 20;
        CHECK(r->len >= 24 && r->len <= size - at, "record %zu: bad length %u", *n, r->len);
        CHECK(r->end_lsn > r->start_lsn, "record %zu: end before start", *n);
        CHECK(*n == 1 || r->start_lsn >= recs[*n - 2].end_lsn, "record %zu: out of order", *n);
        r->data = *buf + at;
        at += r->len;
    }
    CHECK(*n > 1000, "%s: only %zu records", path, *n);
    return recs;
}

static bool read_info(const char *dir)
{
    char path[4096], line[256], value[64];
    bool commit_ts = false, have_version = false, have_commit_ts = false;
    snprintf(path, sizeof path, "%s/info.txt", dir);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s", path);
    while (fgets(line, sizeof line, f) != NULL) {
        if (sscanf(line, "pg_version %" SCNu32, &pg_version) == 1)
            have_version = true;
        else if (sscanf(line, "commit_ts %63s", value) == 1) {
            CHECK(strcmp(value, "on") == 0 || strcmp(value, "off") == 0, "commit_ts %s", value);
            commit_ts = strcmp(value, "on") == 0;
            have_commit_ts = true;
        }
    }
    fclose(f);
    CHECK(have_version && have_commit_ts, "%s: pg_version or commit_ts missing", path);
    const char *env = getenv("WALREDO_PG_VERSION");
    uint32_t served = env && env[0] ? (uint32_t)atoi(env) : 15;
    CHECK(served == pg_version, "the fixture is of PostgreSQL %u, the pool runs %u", pg_version,
          served);
    return commit_ts;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_server EXTENSION_PATH FIXTURE_DIR\n");
        return 2;
    }
    state s;
    memset(&s, 0, sizeof s);
    CHECK(strlen(argv[2]) < 1000, "FIXTURE_DIR too long");
    snprintf(s.base_dir, sizeof s.base_dir, "%s/base", argv[2]);
    snprintf(s.expected_dir, sizeof s.expected_dir, "%s/expected", argv[2]);
    bool commit_ts = read_info(argv[2]);
    bool commit_ts_at_start = commit_ts;
    uint8_t *file;
    s.recs = load_records(argv[2], &s.nrecs, &file);

    /* 1. Index: every record under each page it changes. */
    double t0 = now_s();
    table t = {NULL, 0, 0};
    size_t pages_cap = 4, changes_cap = 4, count;
    walredo_record_page *pages = malloc(pages_cap * sizeof *pages);
    walredo_slru_change *changes = malloc(changes_cap * sizeof *changes);
    CHECK(pages != NULL && changes != NULL, "out of memory");
    size_t named = 0, truncations = 0, deletions = 0, settings = 0, widest = 0;
    uint32_t widest_commit = UINT32_MAX, other_record = UINT32_MAX;
    for (size_t i = 0; i < s.nrecs; i++) {
        const rec *r = &s.recs[i];
        int status;
        while ((status = walredo_record_pages_for(r->data, r->len, pages, pages_cap, &count,
                                                  pg_version)) == WALREDO_BUFFER_TOO_SMALL) {
            CHECK(count > pages_cap, "too small for %zu pages, room for %zu", count, pages_cap);
            pages_cap = count;
            pages = realloc(pages, pages_cap * sizeof *pages);
            CHECK(pages != NULL, "out of memory");
        }
        CHECK(status == WALREDO_OK, "record %zu at %X/%X: walredo_record_pages_for: %s", i,
              (unsigned)(r->start_lsn >> 32), (unsigned)r->start_lsn, walredo_status_name(status));
        size_t n_pages = count;
        for (size_t p = 0; p < n_pages; p++) {
            const walredo_page_tag *tag = &pages[p].tag;
            CHECK(tag->forknum <= 3 && tag->forknum != 1, "fork %u named", tag->forknum);
            key k = {tag->forknum, tag->spcnode, tag->dbnode, tag->relnode, tag->blkno};
            append(lookup(&t, &k), (uint32_t)i, pages[p].initializes);
            named++;
        }

        uint32_t flags = commit_ts ? WALREDO_ROUTE_COMMIT_TS : 0;
        while ((status = walredo_record_slru_changes(r->data, r->len, pg_version, flags, changes,
                                                     changes_cap, &count)) ==
               WALREDO_BUFFER_TOO_SMALL) {
            CHECK(count > changes_cap, "too small for %zu changes, room for %zu", count,
                  changes_cap);
            changes_cap = count;
            changes = realloc(changes, changes_cap * sizeof *changes);
            CHECK(changes != NULL, "out of memory");
        }
        CHECK(status == WALREDO_OK, "record %zu at %X/%X: walredo_record_slru_changes: %s", i,
              (unsigned)(r->start_lsn >> 32), (unsigned)r->start_lsn, walredo_status_name(status));
        size_t xact_pages = 0;
        for (size_t c = 0; c < count; c++) {
            const walredo_slru_change *ch = &changes[c];
            key k = {0, 0, 0, 0, 0};
            switch (ch->change) {
            case WALREDO_SLRU_SET:
            case WALREDO_SLRU_ZERO:
                CHECK(ch->page.slru >= WALREDO_SLRU_XACT && ch->page.slru <= WALREDO_SLRU_COMMIT_TS,
                      "slru %u", ch->page.slru);
                k.kind = K_XACT + ch->page.slru - WALREDO_SLRU_XACT;
                k.no = ch->page.pageno;
                append(lookup(&t, &k), (uint32_t)i, ch->change == WALREDO_SLRU_ZERO);
                if (k.kind == K_XACT && ch->change == WALREDO_SLRU_SET)
                    xact_pages++;
                named++;
                break;
            case WALREDO_RELMAP_WRITE:
                k.kind = K_RELMAP;
                k.spc = ch->relmap.spcnode;
                k.db = ch->relmap.dbnode;
                append(lookup(&t, &k), (uint32_t)i, true);
                named++;
                break;
            case WALREDO_COMMIT_TS_SETTING:
                commit_ts = ch->commit_ts_active;
                settings++;
                break;
            case WALREDO_SLRU_TRUNCATE:
                truncations++;
                break;
            case WALREDO_SLRU_DELETE_SEGMENTS:
                deletions++;
                break;
            default:
                FAIL("record %zu: change %u", i, ch->change);
            }
        }
        if (xact_pages > widest) {
            widest = xact_pages;
            widest_commit = (uint32_t)i;
        }
        if (other_record == UINT32_MAX && n_pages > 0 && count == 0)
            other_record = (uint32_t)i;
    }
    double t1 = now_s();
    printf("test_server: PostgreSQL %u, commit timestamps %s; %zu records indexed under %zu "
           "pages and maps (%zu names) in %.2f s; %zu SLRU truncations, %zu segment deletions, "
           "%zu commit_ts settings\n",
           pg_version, commit_ts_at_start ? "on" : "off", s.nrecs, t.n, named, t1 - t0,
           truncations, deletions, settings);

    /* 2. Rebuild every page as of the end of the WAL; compare. */
    entry **all = malloc(t.n * sizeof *all);
    CHECK(all != NULL, "out of memory");
    size_t n_all = 0, longest = 0;
    for (size_t i = 0; i < t.cap; i++)
        if (t.slots[i].used) {
            all[n_all++] = &t.slots[i];
            if (t.slots[i].n > longest)
                longest = t.slots[i].n;
        }
    qsort(all, n_all, sizeof *all, compare_entries);
    s.batch = malloc(longest * sizeof *s.batch);
    CHECK(s.batch != NULL, "out of memory");
    walredo_pool *pool = make_test_pool(argv[1], NULL);
    for (size_t i = 0; i < n_all; i++) {
        const entry *e = all[i];
        if (e->k.kind <= K_INIT)
            rebuild_relation_page(&s, pool, e);
        else if (e->k.kind == K_RELMAP)
            rebuild_map(&s, e);
        else
            rebuild_slru_page(&s, e);
    }
    double t2 = now_s();
    size_t different = 0, errors = 0;
    for (int k = 0; k < N_KINDS; k++) {
        const counts *c = &s.c[k];
        different += c->different;
        errors += c->errors;
        if (c->compared + c->gone + c->errors == 0 && (k == K_FSM || k == K_INIT))
            continue;
        printf("test_server: %-21s %6zu compared, %6zu identical, %zu different, %zu gone%s",
               kind_names[k], c->compared, c->identical, c->different, c->gone,
               c->errors ? "" : "\n");
        if (c->errors)
            printf(", %zu errors\n", c->errors);
    }
    walredo_stats st;
    CHECK_STATUS(walredo_pool_stats(pool, &st), WALREDO_OK);
    printf("test_server: %zu pages and maps rebuilt in %.2f s (longest list: %zu records); "
           "pool: %" PRIu64 " requests, %" PRIu64 " from an image without a process, %" PRIu64
           " failed, %" PRIu64 " processes started\n",
           n_all, t2 - t1, longest, st.requests, st.fast_path_pages, st.failures, st.spawns);
    CHECK(different == 0 && errors == 0, "%zu pages differ from PostgreSQL's recovery, %zu errors",
          different, errors);

    /* Not vacuous. */
    CHECK(s.c[K_MAIN].compared >= 100, "only %zu main pages", s.c[K_MAIN].compared);
    CHECK(s.c[K_XACT].compared >= 2, "only %zu pg_xact pages", s.c[K_XACT].compared);
    CHECK(s.c[K_OFFSETS].compared >= 2, "only %zu offsets pages", s.c[K_OFFSETS].compared);
    CHECK(s.c[K_MEMBERS].compared >= 2, "only %zu members pages", s.c[K_MEMBERS].compared);
    CHECK(s.c[K_COMMIT_TS].compared >= 1, "only %zu commit_ts pages", s.c[K_COMMIT_TS].compared);
    CHECK(s.c[K_RELMAP].compared >= 2, "only %zu maps", s.c[K_RELMAP].compared);
    CHECK(widest >= 2, "no commit spans two pg_xact pages (widest: %zu)", widest);

    /* 3. Negative controls on the pg_xact page of the widest commit's last
     * subtransactions: without that commit, the page differs; a record that
     * does not change the page is refused, a damaged one too. */
    const rec *wide = &s.recs[widest_commit];
    CHECK_STATUS(walredo_record_slru_changes(wide->data, wide->len, pg_version, 0, changes,
                                             changes_cap, &count),
                 WALREDO_OK);
    uint64_t last_xact_page = 0;
    for (size_t c = 0; c < count; c++)
        if (changes[c].change == WALREDO_SLRU_SET && changes[c].page.slru == WALREDO_SLRU_XACT &&
            changes[c].page.pageno >= last_xact_page)
            last_xact_page = changes[c].page.pageno;
    key xk = {K_XACT, 0, 0, 0, last_xact_page};
    const entry *xe = find(&t, &xk);
    CHECK(xe != NULL, "pg_xact page %" PRIu64 " has no records", last_xact_page);
    uint8_t want[PAGE], got[PAGE];
    bool from_base;
    CHECK(expected_slru_page(&s, xe, want), "pg_xact page %" PRIu64 " not in EXPECTED",
          last_xact_page);
    CHECK_STATUS(redo_slru_page(&s, xe, widest_commit, got, &from_base), WALREDO_OK);
    CHECK(memcmp(got, want, PAGE) != 0,
          "pg_xact page %" PRIu64 " rebuilt without the commit of %zu pg_xact pages is "
          "PostgreSQL's",
          last_xact_page, widest);
    CHECK_STATUS(redo_slru_page(&s, xe, UINT32_MAX, got, &from_base), WALREDO_OK);
    CHECK(memcmp(got, want, PAGE) == 0, "with it, it is");

    walredo_slru_page xpage = {WALREDO_SLRU_XACT, last_xact_page};
    CHECK(other_record != UINT32_MAX, "no record of relation pages only");
    const rec *other = &s.recs[other_record];
    walredo_record bad[2] = {{wide->end_lsn, wide->data, wide->len},
                             {other->end_lsn, other->data, other->len}};
    CHECK_STATUS(walredo_redo_slru(&xpage, pg_version, NULL, bad, 2, got),
                 WALREDO_INVALID_ARGUMENT);
    CHECK(strstr(walredo_last_error(), "record #1") != NULL, "message: %s",
          walredo_last_error());
    uint8_t *flipped = malloc(wide->len);
    CHECK(flipped != NULL, "out of memory");
    memcpy(flipped, wide->data, wide->len);
    flipped[wide->len - 1] ^= 0x5a;
    bad[0].data = flipped;
    CHECK_STATUS(walredo_redo_slru(&xpage, pg_version, NULL, bad, 1, got),
                 WALREDO_MALFORMED_RECORD);
    free(flipped);
    printf("test_server: negative controls: pg_xact page %" PRIu64 " without the commit of %zu "
           "pg_xact pages differs; a heap record and a damaged commit are refused\n",
           last_xact_page, widest);

    walredo_pool_free(pool);
    for (size_t i = 0; i < t.cap; i++)
        free(t.slots[i].recs);
    free(t.slots);
    free(all);
    free(s.batch);
    free(pages);
    free(changes);
    free(s.recs);
    free(file);
    printf("test_server: all %d checks passed\n", checks);
    return 0;
}
