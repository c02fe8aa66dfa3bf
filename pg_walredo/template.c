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
 * the host from the scratch template) with three descriptors (SCM_RIGHTS)
 * for the new process's stdin, stdout and stderr.  The template forks; the
 * child takes the descriptors and the directory, and returns from the hook,
 * so PostgreSQL's start-up goes on in the child as in a process started from
 * scratch: its own shared memory and semaphores (created after the fork,
 * never shared with the template or a sibling), its own postmaster.pid, and
 * then walredo_main with its sandbox.  The answer is the child's pid (or
 * minus an errno) with two descriptors: a pidfd of the child, opened before
 * the template can have reaped it (so it names that child and no other), and
 * the read end of a pipe on which the template writes the child's wait
 * status when it reaps it, then closes it.
 *
 * What differs per child is set again in it: its pid (MyProcPid), start time
 * and random seed (InitProcessGlobals), the data directory and its lock file,
 * its process group, death with its parent (the template, which dies with
 * the host), and no descriptor but its three: the template's socket and the
 * status pipes of its siblings are closed.  The template itself handles no
 * WAL and never creates shared memory; it exits when its host closes the
 * socket.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

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

static shmem_request_hook_type prev_shmem_request_hook = NULL;

/* A child not reaped yet, and where its wait status goes. */
typedef struct TemplateChild
{
	pid_t		pid;
	int			status_fd;
} TemplateChild;

/* Set in a new child, whose fork_child returns into PostgreSQL's start-up. */
static bool is_child = false;

static TemplateChild *children = NULL;
static int	n_children = 0;
static int	max_children = 0;

static void template_request_hook(void);
static void template_serve(void);
static void reap_children(void);
static bool fork_child(int ctl);
static void become_child(const char *scratch, const int *fds, pid_t template_pid);
static void reply(int ctl, int32 pid, int pidfd, int status_fd);

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
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = template_request_hook;
}

static void
template_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
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
	sigset_t	chld;
	int			sfd;
	struct pollfd fds[2];

	/* The host may have ignored SIGCHLD: then nothing could be reaped. */
	pqsignal(SIGCHLD, SIG_DFL);
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		ereport(FATAL,
				(errmsg("template: could not create a signalfd: %m")));

	/*
	 * Confined before it takes its first request (sandbox.c), unless
	 * pg_walredo.sandbox is off (debugging: its processes are not confined
	 * either).
	 */
	if (strcmp(GetConfigOption("pg_walredo.sandbox", false, false), "on") == 0)
		walredo_confine_template();

	max_children = 64;
	children = MemoryContextAlloc(TopMemoryContext, max_children * sizeof(TemplateChild));

	for (;;)
	{
		fds[0].fd = STDIN_FILENO;
		fds[0].events = POLLIN;
		fds[0].revents = 0;
		fds[1].fd = sfd;
		fds[1].events = POLLIN;
		fds[1].revents = 0;
		if (poll(fds, 2, -1) < 0)
		{
			if (errno == EINTR)
				continue;
			ereport(FATAL,
					(errmsg("template: poll failed: %m")));
		}
		if (fds[1].revents != 0)
		{
			struct signalfd_siginfo si;

			while (read(sfd, &si, sizeof(si)) == sizeof(si))
				;
			reap_children();
		}
		if (fds[0].revents != 0)
		{
			if (!fork_child(STDIN_FILENO))
				break;
			if (is_child)
			{
				/* The new child: on with PostgreSQL's start-up. */
				close(sfd);
				return;
			}
		}
	}

	/*
	 * The host is gone or closed us.  Our children die with us
	 * (PR_SET_PDEATHSIG); our lock file goes with proc_exit.
	 */
	proc_exit(0);
}

/* Reap every child that has exited, and pass its status on. */
static void
reap_children(void)
{
	pid_t		pid;
	int			status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
	{
		for (int i = 0; i < n_children; i++)
		{
			if (children[i].pid != pid)
				continue;
			/*
			 * A host that stopped listening: EPIPE (SIGPIPE is blocked),
			 * and nobody to tell.
			 */
			if (write(children[i].status_fd, &status, sizeof(status)) != sizeof(status))
				errno = 0;
			close(children[i].status_fd);
			children[i] = children[--n_children];
			break;
		}
	}
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
		char		buf[CMSG_SPACE(3 * sizeof(int))];
		struct cmsghdr align;
	}			control;
	struct iovec iov = {.iov_base = path,.iov_len = sizeof(path) - 1};
	struct msghdr msg = {0};
	struct cmsghdr *cmsg;
	int			fds[3] = {-1, -1, -1};
	int			nfds = 0;
	int			status_pipe[2];
	ssize_t		n;
	pid_t		pid;
	pid_t		template_pid = getpid();
	int			pidfd;

	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control.buf;
	msg.msg_controllen = sizeof(control.buf);
	n = recvmsg(ctl, &msg, MSG_CMSG_CLOEXEC);
	if (n < 0 && errno == EINTR)
		return true;
	if (n <= 0)
		return false;
	path[n] = '\0';
	for (cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL; cmsg = CMSG_NXTHDR(&msg, cmsg))
	{
		if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
			continue;
		for (int i = 0; (char *) ((int *) CMSG_DATA(cmsg) + i) < (char *) cmsg + cmsg->cmsg_len; i++)
		{
			int			fd = ((int *) CMSG_DATA(cmsg))[i];

			if (nfds < 3)
				fds[nfds++] = fd;
			else
				close(fd);
		}
	}
	if (nfds != 3 || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || path[0] != '/')
	{
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		reply(ctl, -EINVAL, -1, -1);
		return true;
	}

	if (n_children == max_children)
	{
		max_children *= 2;
		children = repalloc(children, max_children * sizeof(TemplateChild));
	}
	if (pipe2(status_pipe, O_CLOEXEC) != 0)
	{
		int			err = errno;

		for (int i = 0; i < 3; i++)
			close(fds[i]);
		reply(ctl, -err, -1, -1);
		return true;
	}

	pid = fork();
	if (pid == 0)
	{
		become_child(path, fds, template_pid);
		return true;
	}
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	if (pid < 0)
	{
		int			err = errno;

		close(status_pipe[0]);
		close(status_pipe[1]);
		reply(ctl, -err, -1, -1);
		return true;
	}

	/* Not reaped before this: the pidfd names this child, nobody else. */
	pidfd = syscall(SYS_pidfd_open, pid, 0);
	children[n_children].pid = pid;
	children[n_children].status_fd = status_pipe[1];
	n_children++;
	reply(ctl, pid, pidfd, status_pipe[0]);
	if (pidfd >= 0)
		close(pidfd);
	close(status_pipe[0]);
	return true;
}

static void
reply(int ctl, int32 pid, int pidfd, int status_fd)
{
	union
	{
		char		buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	}			control;
	struct iovec iov = {.iov_base = &pid,.iov_len = sizeof(pid)};
	struct msghdr msg = {0};

	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (pidfd >= 0 && status_fd >= 0)
	{
		struct cmsghdr *cmsg;
		int			out[2] = {pidfd, status_fd};

		memset(control.buf, 0, sizeof(control.buf));
		msg.msg_control = control.buf;
		msg.msg_controllen = sizeof(control.buf);
		cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(sizeof(out));
		memcpy(CMSG_DATA(cmsg), out, sizeof(out));
	}
	else if (pid > 0)
	{
		/* No pidfd: the host cannot tell this child from a stranger. */
		kill(pid, SIGKILL);
		pid = -ENOSYS;
	}
	/* The host may be gone: EPIPE then, never SIGPIPE. */
	(void) sendmsg(ctl, &msg, MSG_NOSIGNAL);
}

/*
 * In the new child: what must differ from the template and from every
 * sibling, before PostgreSQL's start-up goes on.
 */
static void
become_child(const char *scratch, const int *fds, pid_t template_pid)
{
	is_child = true;
	MyProcPid = getpid();

	/* Die with the template, which dies with the host. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != template_pid)
		_exit(1);
	/* Its own group, as a directly started process has. */
	(void) setpgid(0, 0);

	/* Its pipes as stdio; nothing else of the template's or a sibling's. */
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
	n_children = 0;

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
