/*-------------------------------------------------------------------------
 *
 * template.c
 *	  A template process that forks ready wal-redo processes on demand.
 *
 * With pg_walredo.template = on, the single-user backend stops in the
 * shmem_request_hook, after PostgreSQL's start-up has parsed the settings,
 * read pg_control and loaded this library, and before any shared memory
 * exists.  It then serves its host on stdin, a SOCK_SEQPACKET socket: each
 * message is the absolute path of a new, empty scratch directory (made by
 * the host from the scratch template).  The template makes the new
 * process's three pipes and forks; the child takes its ends of them and the
 * directory, and returns from the hook, so PostgreSQL's start-up goes on in
 * the child as in a process started from scratch: its own shared memory and
 * semaphores (created after the fork, never shared with the template or a
 * sibling), its own postmaster.pid, and then walredo_main with its sandbox.
 * The answer is the child's pid (or minus an errno) with five descriptors
 * (SCM_RIGHTS): a pidfd of the child, the write and read ends of its stdin,
 * and the read ends of its stdout and stderr.
 *
 * The child is the host's, not the template's (CLONE_PARENT): the host
 * reaps it and learns how it ended, as for a process it started itself, and
 * the child neither dies with the template nor is left an orphan when the
 * template dies first (with a host that is PID 1 of its namespace, an
 * orphan would be the host's zombie, never reaped).  Its ends of the pipes
 * never exist in the host: a fork made by another thread of the host (no
 * exec) cannot hold them, and so cannot hide the child's death (EOF on its
 * stdout) from the host.
 *
 * What differs per child is set again in it: its pid (MyProcPid), start time
 * and random seed (InitProcessGlobals), the data directory and its lock file,
 * its process group, death with its parent (the host's thread that started
 * the template), and no descriptor but its three: the template's socket is
 * closed.  The template itself handles no WAL, never creates shared memory
 * and has no children to reap; it exits when its host closes the socket.
 *
 * PostgreSQL 14 has no shmem_request_hook, and no other point where a
 * loaded module runs after the settings and before shared memory (its
 * module is loaded by LD_PRELOAD, see pg_walredo.c, and first runs in the
 * shmem_startup_hook): a fork there would share the template's shared
 * memory.  The library starts every 14 process directly instead, and
 * pg_walredo.template = on is refused.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "sandbox.h"
#include "template.h"

/* GUC: be a template process instead of a wal-redo process. */
static bool walredo_template = false;

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

/* Set in a new child, whose fork_child returns into PostgreSQL's start-up. */
static bool is_child = false;

/* The host: the parent of the template and of every child. */
static pid_t host_pid = 0;

static void template_request_hook(void) pg_attribute_unused();
static void template_serve(void);
static bool fork_child(int ctl);
static pid_t clone_for_host(int *pidfd);
static void become_child(const char *scratch, const int *fds);
static void reply(int ctl, int32 pid, const int *fds, int nfds);

void
walredo_template_init(void)
{
	DefineCustomBoolVariable("pg_walredo.template",
							 "Runs as a template process that forks wal-redo processes.",
							 "Set by the walredo library on the process it starts as a template.",
							 &walredo_template,
							 false,
							 PGC_POSTMASTER,
							 0,
							 NULL, NULL, NULL);
#if PG_VERSION_NUM < 150000
	if (walredo_template && !IsPostmasterEnvironment)
		ereport(FATAL,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("pg_walredo.template needs PostgreSQL 15 or later"),
				 errdetail("PostgreSQL 14 has no shmem_request_hook to fork at; start every process directly.")));
#else
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = template_request_hook;
#endif
}

/* Unused on 14 (see the top of this file). */
static void
template_request_hook(void)
{
#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	/* Returns only in a child, which then starts like any wal-redo process. */
	if (walredo_template && !IsPostmasterEnvironment)
		template_serve();
}

/*
 * Serve fork requests on stdin until the host closes it.  Returns in each
 * new child; the template itself never returns.
 */
static void
template_serve(void)
{
	host_pid = getppid();
	/* Told from its children, which are the host's too, by its name. */
	(void) prctl(PR_SET_NAME, "walredo-tmpl");

	/*
	 * Confined before it takes its first request (sandbox.c), unless
	 * pg_walredo.sandbox is off (debugging: its processes are not confined
	 * either).
	 */
	if (strcmp(GetConfigOption("pg_walredo.sandbox", false, false), "on") == 0)
		walredo_confine_template();

	for (;;)
	{
		struct pollfd pfd = {.fd = STDIN_FILENO,.events = POLLIN};

		if (poll(&pfd, 1, -1) < 0)
		{
			if (errno == EINTR)
				continue;
			ereport(FATAL,
					(errmsg("template: poll failed: %m")));
		}
		if (!fork_child(STDIN_FILENO))
			break;
		if (is_child)
			return;				/* on with PostgreSQL's start-up */
	}

	/* The host is gone or closed us.  Our lock file goes with proc_exit. */
	proc_exit(0);
}

/*
 * Take one request from the socket and fork its child.  Returns false when
 * the host has closed the socket.  In the child it returns true after
 * become_child.
 */
static bool
fork_child(int ctl)
{
	char		path[MAXPGPATH];
	union
	{
		char		buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	}			control;
	struct iovec iov = {.iov_base = path,.iov_len = sizeof(path) - 1};
	struct msghdr msg = {0};
	struct cmsghdr *cmsg;
	int			pipes[3][2];	/* stdin, stdout, stderr */
	int			made = 0;
	int			child_fds[3];
	int			host_fds[5];
	ssize_t		n;
	pid_t		pid;
	int			pidfd = -1;

	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control.buf;
	msg.msg_controllen = sizeof(control.buf);
	n = recvmsg(ctl, &msg, MSG_CMSG_CLOEXEC);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return true;
	if (n <= 0)
		return false;
	path[n] = '\0';
	/* Nothing but the path is expected: close whatever came with it. */
	for (cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL; cmsg = CMSG_NXTHDR(&msg, cmsg))
	{
		if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
			continue;
		for (int i = 0; (char *) ((int *) CMSG_DATA(cmsg) + i) < (char *) cmsg + cmsg->cmsg_len; i++)
			close(((int *) CMSG_DATA(cmsg))[i]);
	}
	if ((msg.msg_flags & MSG_TRUNC) || path[0] != '/')
	{
		reply(ctl, -EINVAL, NULL, 0);
		return true;
	}

	for (; made < 3; made++)
	{
		if (pipe2(pipes[made], O_CLOEXEC) != 0)
			break;
	}
	if (made < 3)
	{
		int			err = errno;

		for (int i = 0; i < made; i++)
		{
			close(pipes[i][0]);
			close(pipes[i][1]);
		}
		reply(ctl, -err, NULL, 0);
		return true;
	}
	child_fds[0] = pipes[0][0];
	child_fds[1] = pipes[1][1];
	child_fds[2] = pipes[2][1];

	pid = clone_for_host(&pidfd);
	if (pid == 0)
	{
		become_child(path, child_fds);
		return true;
	}
	host_fds[0] = pidfd;
	host_fds[1] = pipes[0][1];	/* stdin, to write */
	host_fds[2] = pipes[0][0];	/* stdin, the host's never-read copy */
	host_fds[3] = pipes[1][0];	/* stdout */
	host_fds[4] = pipes[2][0];	/* stderr */
	if (pid < 0)
		reply(ctl, -errno, NULL, 0);
	else
		reply(ctl, pid, host_fds, 5);
	/* The host and the child have theirs: none stays here. */
	if (pidfd >= 0)
		close(pidfd);
	for (int i = 0; i < 3; i++)
	{
		close(pipes[i][0]);
		close(pipes[i][1]);
	}
	return true;
}

/*
 * fork(), except that the child is the host's (CLONE_PARENT), not ours, and
 * *pidfd gets a pidfd of it (CLONE_PIDFD: it names this child even if the
 * host reaps it at once).  The raw system call, as glibc has no wrapper
 * with flags: the template is single-threaded, so nothing that glibc's
 * fork() resets in the child (locks held by other threads, atfork
 * handlers, of which this process registers none) needs resetting.
 */
static pid_t
clone_for_host(int *pidfd)
{
	/*
	 * x86_64 and aarch64 (the architectures the sandbox knows) both take
	 * the flags, the new stack (0: a copy of ours, as fork), and then where
	 * CLONE_PIDFD puts the pidfd.
	 */
	return (pid_t) syscall(SYS_clone, (unsigned long) (CLONE_PARENT | CLONE_PIDFD),
						   (void *) NULL, pidfd, (void *) NULL, (void *) NULL);
}

static void
reply(int ctl, int32 pid, const int *fds, int nfds)
{
	union
	{
		char		buf[CMSG_SPACE(5 * sizeof(int))];
		struct cmsghdr align;
	}			control;
	struct iovec iov = {.iov_base = &pid,.iov_len = sizeof(pid)};
	struct msghdr msg = {0};

	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (nfds > 0)
	{
		struct cmsghdr *cmsg;

		memset(control.buf, 0, sizeof(control.buf));
		msg.msg_control = control.buf;
		msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cmsg), fds, nfds * sizeof(int));
	}
	/* The host may be gone: EPIPE then, never SIGPIPE. */
	(void) sendmsg(ctl, &msg, MSG_NOSIGNAL);
}

/*
 * In the new child: what must differ from the template and from every
 * sibling, before PostgreSQL's start-up goes on.
 */
static void
become_child(const char *scratch, const int *fds)
{
	is_child = true;
	MyProcPid = getpid();

	/*
	 * Die with the host's thread that started the template (our parent, as
	 * the template's), as a process the host starts itself does.
	 */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != host_pid)
		_exit(1);
	/* Its own group and name, as a directly started process has. */
	(void) setpgid(0, 0);
	(void) prctl(PR_SET_NAME, "postgres");

	/* Its pipes as stdio; nothing else of the template's. */
	for (int i = 0; i < 3; i++)
	{
		if (dup2(fds[i], i) != i)
			_exit(1);
	}
	if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
	{
		long		max = sysconf(_SC_OPEN_MAX);

		for (int fd = 3; fd < max && fd < 65536; fd++)
			close(fd);
	}

	/* Its own start time and random seed. */
	InitProcessGlobals();
	InitLatch(MyLatch);

	/* Its own data directory and lock file (postmaster.pid, relative). */
	SetDataDir(scratch);
	checkDataDir();
	ChangeToDataDir();
	SetConfigOption("data_directory", DataDir, PGC_POSTMASTER, PGC_S_OVERRIDE);
	CreateDataDirLockFile(false);
}
