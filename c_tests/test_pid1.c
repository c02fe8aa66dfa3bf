/*
 * test_pid1.c: a host that is PID 1 of its PID namespace (a page server in
 * a container often is) inherits every orphan in it, and nothing but the
 * host reaps them there. The pool must leave none: not when its template
 * is killed while its processes run (they must not become orphans), not
 * when a process is killed, not at free.
 *
 * As root, the test runs itself again as PID 1 of a new PID namespace
 * (`unshare --pid --fork --mount-proc`): there every process but PID 1 is
 * the pool's. It makes requests, kills the template, makes requests, kills
 * a wal-redo process, makes requests, frees the pool, and then waits (at
 * most 10 s) until no other process is left, not even a zombie: the test
 * itself never reaps anything. Elsewhere (not root) it says so and passes.
 *
 *   test_pid1 EXTENSION_PATH FIXTURE_DIR
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <walredo.h>

#include "check.h"
#include "children.h"
#include "fixture.h"
#include "pools.h"

#define MAX_CASES 256
#define INNER_ENV "WALREDO_TEST_PID1_INNER"

static fixture cases[MAX_CASES];

/* The parent of a process, from /proc/PID/stat; 0 if it is gone. */
static pid_t
parent_of(pid_t pid)
{
    char path[64], buf[1024], *paren;
    FILE *fp;
    size_t len;
    char state;
    int ppid;

    snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
    fp = fopen(path, "r");
    if (fp == NULL)
        return 0;
    len = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[len] = '\0';
    paren = strrchr(buf, ')');
    return paren != NULL && sscanf(paren + 1, " %c %d", &state, &ppid) == 2 ? ppid : 0;
}

/* Processes in our namespace other than us, listed into out (state too). */
static int
others(char *out, size_t outlen)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;
    size_t used = 0;

    if (d == NULL)
        FAIL("cannot read /proc");
    out[0] = '\0';
    while ((e = readdir(d)) != NULL)
    {
        pid_t pid = (pid_t) atoi(e->d_name);
        char state;

        if (pid <= 1)
            continue;
        state = child_state(pid);
        if (state == 0)
            continue;
        n++;
        if (used < outlen)
            used += snprintf(out + used, outlen - used, " %d (%c, parent %d)", (int) pid,
                             state, (int) parent_of(pid));
    }
    closedir(d);
    return n;
}

/* Our template process (its name is walredo-tmpl), or 0. */
static pid_t
template_pid(void)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    pid_t found = 0;

    while (d != NULL && (e = readdir(d)) != NULL)
    {
        char path[300], comm[64] = "";
        FILE *fp;
        pid_t pid = (pid_t) atoi(e->d_name);

        if (pid <= 1)
            continue;
        snprintf(path, sizeof path, "/proc/%d/comm", (int) pid);
        fp = fopen(path, "r");
        if (fp == NULL)
            continue;
        if (fgets(comm, sizeof comm, fp) == NULL)
            comm[0] = '\0';
        fclose(fp);
        if (strncmp(comm, "walredo-tmpl", 12) == 0 && child_state(pid) != 'Z')
            found = pid;
    }
    if (d != NULL)
        closedir(d);
    return found;
}

static void
requests(walredo_pool *pool, const fixture *ok, int n)
{
    uint8_t page[WALREDO_PAGE_SIZE];

    for (int i = 0; i < n; i++)
        if (walredo_redo(pool, &ok->tag, ok->base_page, ok->records, ok->n_records,
                         page) != WALREDO_OK)
            FAIL("request %d: %s", i, walredo_last_error());
}

int
main(int argc, char **argv)
{
    char left[4096];
    const fixture *ok;
    walredo_pool *pool;
    pid_t victims[16];
    int n_cases, n;

    if (argc != 3)
    {
        fprintf(stderr, "usage: test_pid1 EXTENSION_PATH FIXTURE_DIR\n");
        return 2;
    }
    if (getpid() != 1)
    {
        if (geteuid() != 0 || getenv(INNER_ENV) != NULL)
        {
            printf("test_pid1: skipped (a PID namespace needs root)\n");
            return 0;
        }
        setenv(INNER_ENV, "1", 1);
        execlp("unshare", "unshare", "--pid", "--fork", "--mount-proc", argv[0], argv[1],
               argv[2], (char *) NULL);
        FAIL("cannot run unshare: %m");
    }

    n_cases = fixture_load_args(argc, argv, cases, MAX_CASES);
    ok = fixture_first_ok(cases, n_cases, 1);

    pool = make_test_pool(argv[1], "processes", "2", NULL);
    requests(pool, ok, 20);
    /* Its spare too (spare_process is on by default), then the template. */
    children_wait_running(2, 5);
    if (template_pid() != 0)
    {
        if (kill(template_pid(), SIGKILL) != 0)
            FAIL("kill the template: %m");
    }
    else
        printf("test_pid1: no template (direct mode)\n");
    usleep(200 * 1000);
    requests(pool, ok, 20);
    n = children_list(victims, 16, 0, NULL);
    if (n > 0 && kill(victims[0], SIGKILL) != 0)
        FAIL("kill a wal-redo process: %m");
    usleep(200 * 1000);
    requests(pool, ok, 20);
    walredo_pool_free(pool);

    for (int waited = 0; others(left, sizeof left) > 0 && waited < 1000; waited++)
        usleep(10 * 1000);
    if (others(left, sizeof left) > 0)
        FAIL("10 s after walredo_pool_free, processes are left in the namespace "
             "(pid (state); Z: a zombie only PID 1 could reap):%s", left);
    for (int i = 0; i < n_cases; i++)
        fixture_free(&cases[i]);
    printf("test_pid1: OK (no process left in the PID namespace)\n");
    return 0;
}
