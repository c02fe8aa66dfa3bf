/*
 * children.c: see children.h.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "children.h"

/* State and parent of one process; 0 if it is gone or unreadable. */
static int
read_proc_stat(const char *pid, char *state, int *ppid)
{
    char path[300], buf[1024], *close_paren;
    FILE *fp;
    size_t len;

    snprintf(path, sizeof path, "/proc/%s/stat", pid);
    fp = fopen(path, "r");
    if (fp == NULL)
        return 0; /* gone meanwhile */
    len = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[len] = '\0';
    /* "pid (comm) state ppid ...": comm may contain spaces and parentheses,
     * so parse after the last ')'. */
    close_paren = strrchr(buf, ')');
    return close_paren != NULL &&
           sscanf(close_paren + 1, " %c %d", state, ppid) == 2;
}

/* Whether a process's name (/proc/PID/comm) starts with prefix; 0 if it is
 * gone. */
static int
comm_starts_with(const char *pid, const char *prefix)
{
    char path[300], comm[64] = "";
    FILE *fp;

    snprintf(path, sizeof path, "/proc/%s/comm", pid);
    fp = fopen(path, "r");
    if (fp == NULL)
        return 0;
    if (fgets(comm, sizeof comm, fp) == NULL)
        comm[0] = '\0';
    fclose(fp);
    return strncmp(comm, prefix, strlen(prefix)) == 0;
}

/*
 * Whether a process is a template process: pg_walredo/template.c names
 * itself walredo-tmpl (the processes it forks, our children too, are
 * postgres).
 */
static int
is_template(const char *pid)
{
    return comm_starts_with(pid, "walredo-tmpl");
}

int
children_list(pid_t *out, int max, int with_zombies, int *zombies)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    pid_t self = getpid();
    int n = 0;

    if (zombies != NULL)
        *zombies = 0;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
    {
        char state;
        int ppid;

        if (e->d_name[0] < '0' || e->d_name[0] > '9' ||
            !read_proc_stat(e->d_name, &state, &ppid) || ppid != self ||
            (state != 'Z' && is_template(e->d_name)))
            continue;
        if (state == 'Z' && zombies != NULL)
            (*zombies)++;
        if (state == 'Z' && !with_zombies)
            continue;
        if (n < max)
            out[n] = (pid_t) atoi(e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

char
child_state(pid_t pid)
{
    char name[32], state;
    int ppid;

    snprintf(name, sizeof name, "%d", (int) pid);
    return read_proc_stat(name, &state, &ppid) ? state : 0;
}

int
child_is_postgres(pid_t pid)
{
    char name[32];

    snprintf(name, sizeof name, "%d", (int) pid);
    return comm_starts_with(name, "postgres");
}

static int
running_postgres(void)
{
    pid_t pids[256];
    int n = children_list(pids, 256, 0, NULL), running = 0;

    for (int i = 0; i < n && i < 256; i++)
        running += child_is_postgres(pids[i]);
    return running;
}

int
children_wait_running(int n, double seconds)
{
    struct timespec tick = {0, 5 * 1000 * 1000};
    int running = running_postgres();

    for (double waited = 0; running != n && waited < seconds; waited += 0.005)
    {
        nanosleep(&tick, NULL);
        running = running_postgres();
    }
    return running;
}
