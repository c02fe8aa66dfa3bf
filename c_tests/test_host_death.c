/*
 * test_host_death.c: a host killed with SIGKILL leaves nothing behind: no
 * process and no System V segment at once, no scratch directory once a new
 * pool has started.
 *
 * A forked child (the host) makes a pool of 2 real wal-redo processes, uses
 * both, and is killed with SIGKILL once its spare (spare_process is on by
 * default) has started too. Its processes (the template and the three it
 * forked) die with it (PR_SET_PDEATHSIG), and their segments with them
 * (each was marked for removal in its start-up); nobody is left to remove
 * their scratch directories, which the next pool made on the machine (here,
 * by the test itself) must remove.
 *
 * Not covered here: a process killed in its start-up between creating its
 * segment and marking it (PostgreSQL initializes its shared memory in
 * between) leaves the segment until the next pool on the same scratch root
 * removes it with the dead host's directories (found by the directory's
 * inode, also before postmaster.pid names it: unit tests in
 * src/process/mod.rs); the host is killed when none is starting.
 *
 * As root the test runs in a System V IPC namespace of its own, so it counts
 * only segments of its own processes.
 *
 *   test_host_death EXTENSION_PATH FIXTURE_DIR
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <walredo.h>

#include "check.h"
#include "fixture.h"
#include "pools.h"

#define MAX_CASES 256

static fixture cases[MAX_CASES];

/* Segments of live processes: marked for removal (their key is then
 * IPC_PRIVATE, shown as 0) or not yet (a process in its start-up). */
static void
live_segments(int *marked, int *unmarked)
{
    FILE *f = fopen("/proc/sysvipc/shm", "r");
    char line[512];

    *marked = *unmarked = 0;
    while (f && fgets(line, sizeof line, f))
    {
        long key, id, perms, size, cpid, lpid, nattch;

        if (sscanf(line, "%ld %ld %lo %ld %ld %ld %ld", &key, &id, &perms, &size, &cpid,
                   &lpid, &nattch) == 7 && nattch > 0)
            (*(key == 0 ? marked : unmarked))++;
    }
    if (f)
        fclose(f);
}

/* Segments nobody is attached to. */
static int
orphaned_segments(void)
{
    FILE *f = fopen("/proc/sysvipc/shm", "r");
    char line[512];
    int n = 0;

    while (f && fgets(line, sizeof line, f))
    {
        long key, id, perms, size, cpid, lpid, nattch;

        if (sscanf(line, "%ld %ld %lo %ld %ld %ld %ld", &key, &id, &perms, &size, &cpid,
                   &lpid, &nattch) == 7 && nattch == 0)
            n++;
    }
    if (f)
        fclose(f);
    return n;
}

/* The library's default scratch root (walredo::config::default_scratch_root):
 * $TMPDIR when set, else /dev/shm when it is a tmpfs, else /tmp. */
static void
scratch_root(char *root, size_t size)
{
    const char *tmp = getenv("TMPDIR");
    struct statfs fs;

    if (!(tmp && *tmp))
        tmp = (statfs("/dev/shm", &fs) == 0 && fs.f_type == TMPFS_MAGIC) ? "/dev/shm" : "/tmp";
    snprintf(root, size, "%s/walredo-%d", tmp, (int) geteuid());
}

/* Scratch directories of process `pid` in the default scratch root, in use
 * (proc-) or being removed (trash-). */
static int
scratch_dirs_of(pid_t pid)
{
    char root[256], prefix[64], trash[64];
    DIR *d;
    struct dirent *e;
    int n = 0;

    scratch_root(root, sizeof root);
    snprintf(prefix, sizeof prefix, "proc-%d-", (int) pid);
    snprintf(trash, sizeof trash, "trash-%d-", (int) pid);
    if ((d = opendir(root)) == NULL)
        return 0;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0 ||
            strncmp(e->d_name, trash, strlen(trash)) == 0)
            n++;
    closedir(d);
    return n;
}

/* Live processes (not zombies) working in a scratch directory of host
 * `pid`: its template and wal-redo processes. */
static int
processes_of(pid_t pid)
{
    char root[256], prefix[320], path[300], cwd[512], stat[512];
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    scratch_root(root, sizeof root);
    snprintf(prefix, sizeof prefix, "%s/proc-%d-", root, (int) pid);
    while (d && (e = readdir(d)) != NULL)
    {
        ssize_t len;
        FILE *f;
        char *paren;

        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/cwd", e->d_name);
        len = readlink(path, cwd, sizeof cwd - 1);
        if (len <= 0)
            continue;
        cwd[len] = '\0';
        if (strncmp(cwd, prefix, strlen(prefix)) != 0)
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        if ((f = fopen(path, "r")) == NULL)
            continue;
        if (fgets(stat, sizeof stat, f) != NULL && (paren = strrchr(stat, ')')) != NULL &&
            paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X')
            n++;
        fclose(f);
    }
    if (d)
        closedir(d);
    return n;
}

static walredo_pool *
make_pool(const char *extension, const char *processes)
{
    return make_test_pool(extension, "processes", processes, "fast_path", "off",
                          "log_level", "off", NULL);
}

static void
ignore_page(void *userdata, int status, const uint8_t *page, const char *message)
{
    (void) userdata;
    (void) status;
    (void) page;
    (void) message;
}

/* The host: a pool with two busy processes, then it waits to be killed. */
static void
host(const char *extension, const fixture *ok, int ready_fd)
{
    walredo_pool *pool = make_pool(extension, "2");
    walredo_stats stats;

    /* Until both slots have a process: requests queued for the workers while
     * this thread drives one itself (for up to 60 s: under valgrind the two
     * rarely overlap, and 200 rounds were not always enough). */
    time_t until = time(NULL) + 60;

    while (time(NULL) < until)
    {
        uint8_t page[WALREDO_PAGE_SIZE];

        for (int j = 0; j < 16; j++)
            (void) walredo_submit(pool, &ok->tag, ok->base_page, ok->records,
                                  ok->n_records, ignore_page, NULL);
        if (walredo_redo(pool, &ok->tag, ok->base_page, ok->records, ok->n_records,
                         page) != WALREDO_OK)
            _exit(2);
        if (walredo_pool_stats(pool, &stats) == WALREDO_OK && stats.live_processes >= 2)
            break;
    }
    if (write(ready_fd, "r", 1) != 1)
        _exit(3);
    for (;;)
        pause();
}

int
main(int argc, char **argv)
{
    const fixture *ok;
    char byte;
    int n, fds[2], status, orphans_before, orphans_dead, orphans_after, procs;
    int own_ipc, marked = 0, unmarked = 0;
    pid_t child;
    walredo_pool *pool;

    n = fixture_load_args(argc, argv, cases, MAX_CASES);
    ok = fixture_first_ok(cases, n, 1);
    /* Still single-threaded: the host forked below is in it too. */
    own_ipc = unshare(CLONE_NEWIPC) == 0;

    orphans_before = orphaned_segments();
    if (pipe(fds) != 0)
        FAIL("pipe: %s", strerror(errno));
    child = fork();
    if (child < 0)
        FAIL("fork: %s", strerror(errno));
    if (child == 0)
    {
        close(fds[0]);
        host(argv[1], ok, fds[1]);
    }
    close(fds[1]);
    if (read(fds[0], &byte, 1) != 1)
        FAIL("the host did not get ready");
    if (scratch_dirs_of(child) < 1)
        FAIL("the host has no scratch directory: wrong scratch root?");
    /* Its two slots' processes and the spare, started 5 ms after the second
     * of them, each with its segment marked, and none starting (only in a
     * namespace of our own are all segments the host's). */
    for (int i = 0; own_ipc && i < 3000 && (marked != 3 || unmarked != 0); i++)
    {
        usleep(20000);
        live_segments(&marked, &unmarked);
    }
    if (own_ipc && (marked != 3 || unmarked != 0))
        FAIL("after 60 s the host's processes have %d marked segments and %d unmarked, "
             "not 3 (two slots, the spare) and 0", marked, unmarked);
    procs = processes_of(child);
    if (procs < 2)
        FAIL("the host has %d processes, not 2 or more: is the test still testing?", procs);
    kill(child, SIGKILL);
    if (waitpid(child, &status, 0) != child)
        FAIL("waitpid: %s", strerror(errno));
    /* Its processes die with it; give the kernel time to tear them down (up to
     * 10 s). */
    for (int i = 0; i < 500 && processes_of(child) > 0; i++)
        usleep(20000);
    if (processes_of(child) > 0)
        FAIL("%d processes of the killed host still run after 10 s", processes_of(child));
    orphans_dead = orphaned_segments();
    printf("test_host_death: host %d killed: its %d processes gone, %d orphaned segments, "
           "%d scratch directories left\n", (int) child, procs, orphans_dead - orphans_before,
           scratch_dirs_of(child));
    if (orphans_dead != orphans_before)
        FAIL("%d segments of the dead host's processes outlived them",
             orphans_dead - orphans_before);

    /* The next pool cleans up after the dead host. */
    pool = make_pool(argv[1], "1");
    orphans_after = orphaned_segments();
    printf("test_host_death: after a new pool: %d orphaned segments, %d scratch "
           "directories of the dead host\n", orphans_after - orphans_before,
           scratch_dirs_of(child));
    if (orphans_after != orphans_before)
        FAIL("%d segments of the dead host's processes were left behind",
             orphans_after - orphans_before);
    if (scratch_dirs_of(child) != 0)
        FAIL("scratch directories of the dead host were left behind");
    walredo_pool_free(pool);
    for (int i = 0; i < n; i++)
        fixture_free(&cases[i]);
    printf("test_host_death: all passed\n");
    return 0;
}
