/*-------------------------------------------------------------------------
 *
 * sandbox.c
 *	  Confine a wal-redo process before it reads its first request.
 *
 * WAL comes from tenants and from disks: a record crafted to exploit a redo
 * routine must not be able to read other files, open a socket, or run
 * anything.  Three layers, applied in this order once start-up is done:
 *
 * 1. Every file descriptor above 2 is closed (PostgreSQL's latch signalfd and
 *    epoll descriptor included: redo never waits on a latch).
 * 2. Landlock confines the file system to the scratch directory (the data
 *    directory): stock PostgreSQL creates relation files there during
 *    redo (smgrcreate, visibility-map and free-space-map extension, evicted
 *    buffers), so file system calls cannot simply be forbidden.  TCP is
 *    denied, and so are signals and abstract sockets beyond the process.
 * 3. A seccomp filter allows only the system calls the request loop and its
 *    exits make, and kills the process on anything else.  The list was taken
 *    from strace of the tests' wal-redo processes after their first read of
 *    stdin (the loop, FATAL and PANIC exits, clean exits), plus the memory
 *    calls malloc makes for large requests.  Three of them are allowed only
 *    with the arguments those paths use, because Landlock's signal scoping
 *    (Linux 6.12) is not everywhere and Landlock does not cover System V
 *    IPC at all: tgkill only to this process (abort() on PANIC), shmctl only
 *    IPC_RMID of this process's own segment (proc_exit), and mmap never with
 *    PROT_EXEC.
 *
 * Without Landlock (kernels before 5.13, or with Landlock left out of the LSM
 * list) seccomp still allows openat, unlinkat and mkdirat on any path: a
 * hijacked process could read and write other processes' scratch
 * directories, or, when the host does not run as root, the extension copy
 * every later process loads.  So the process refuses to serve unless
 * pg_walredo.require_landlock = off accepts that weaker sandbox.
 *
 * Before all of that, as the extension loads and before any WAL, the process
 * makes itself non-dumpable (walredo_make_undumpable).
 *
 * walredo_sandbox_test misbehaves on purpose when the tests ask it to
 * (pg_walredo.test_on_ping), to show that the sandbox stops each attempt.
 *
 * pg_walredo.sandbox = off turns all of this off, for debugging only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <stddef.h>
#include <unistd.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/pg_shmem.h"

#include "sandbox.h"

/*
 * Landlock's ABI, spelled out here: the system headers of Debian 12 know only
 * its first versions.  Fields and bits are from the kernel's uapi
 * (include/uapi/linux/landlock.h).
 */
#define LL_CREATE_RULESET_VERSION	(1U << 0)
#define LL_RULE_PATH_BENEATH		1

#define LL_FS_EXECUTE		(1ULL << 0)
#define LL_FS_WRITE_FILE	(1ULL << 1)
#define LL_FS_READ_FILE		(1ULL << 2)
#define LL_FS_READ_DIR		(1ULL << 3)
#define LL_FS_REMOVE_DIR	(1ULL << 4)
#define LL_FS_REMOVE_FILE	(1ULL << 5)
#define LL_FS_MAKE_DIR		(1ULL << 7)
#define LL_FS_MAKE_REG		(1ULL << 8)
#define LL_FS_MAKE_SYM		(1ULL << 12)	/* last right of ABI 1 */
#define LL_FS_REFER			(1ULL << 13)	/* ABI 2 */
#define LL_FS_TRUNCATE		(1ULL << 14)	/* ABI 3 */
#define LL_FS_IOCTL_DEV		(1ULL << 15)	/* ABI 5 */
#define LL_NET_BIND_TCP		(1ULL << 0) /* ABI 4 */
#define LL_NET_CONNECT_TCP	(1ULL << 1)
#define LL_SCOPE_ABSTRACT_UNIX_SOCKET	(1ULL << 0) /* ABI 6 */
#define LL_SCOPE_SIGNAL		(1ULL << 1)

struct ll_ruleset_attr
{
	uint64		handled_access_fs;
	uint64		handled_access_net;
	uint64		scoped;
};

struct ll_path_beneath_attr
{
	uint64		allowed_access;
	int32		parent_fd;
} __attribute__((packed));

static void close_inherited_fds(void);
static void confine_filesystem(bool require_landlock);
static void enter_seccomp(void);
static bool enter_seccomp_filter(struct sock_filter *filter, unsigned short len);
static void quiet_segment_removal(ErrorData *edata);
static int	landlock_ruleset(int abi, uint64 *allowed);

void
walredo_enter_sandbox(bool require_landlock)
{
	close_inherited_fds();
	confine_filesystem(require_landlock);
	enter_seccomp();
}

static void
close_inherited_fds(void)
{
	if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
	{
		long		max = sysconf(_SC_OPEN_MAX);

		for (int fd = 3; fd < max && fd < 65536; fd++)
			close(fd);
	}
}

static void
confine_filesystem(bool require_landlock)
{
	struct ll_path_beneath_attr beneath = {0};
	uint64		allowed;
	int			abi;
	int			ruleset;

	abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
	if (abi < 1)
	{
		if (require_landlock)
			ereport(FATAL,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("Landlock is not available (%m): refusing to serve without confining the file system to the scratch directory"),
					 errdetail("Seccomp alone lets a hijacked wal-redo process open, create and remove files wherever its user can, such as other processes' scratch directories."),
					 errhint("Use a kernel with Landlock enabled (Linux 5.13 or later, with \"landlock\" among the LSMs), or set pg_walredo.require_landlock = off to accept the weaker sandbox.")));
		/* Accepted: seccomp still applies; say once that the file system is open. */
		ereport(WARNING,
				(errmsg("Landlock is not available (%m): the wal-redo process is not confined to its scratch directory (pg_walredo.require_landlock is off)")));
		return;
	}

	ruleset = landlock_ruleset(abi, &allowed);
	beneath.allowed_access = allowed;
	beneath.parent_fd = open(DataDir, O_PATH | O_CLOEXEC);
	if (beneath.parent_fd < 0)
		ereport(FATAL,
				(errmsg("could not open scratch directory \"%s\": %m", DataDir)));
	if (syscall(SYS_landlock_add_rule, ruleset, LL_RULE_PATH_BENEATH, &beneath, 0) != 0)
		ereport(FATAL,
				(errmsg("could not add a Landlock rule for \"%s\": %m", DataDir)));
	close(beneath.parent_fd);

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		ereport(FATAL,
				(errmsg("could not set no_new_privs: %m")));
	if (syscall(SYS_landlock_restrict_self, ruleset, 0) != 0)
		ereport(FATAL,
				(errmsg("could not enforce the Landlock ruleset: %m")));
	close(ruleset);
}

#if defined(__x86_64__)
#define SANDBOX_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SANDBOX_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "pg_walredo's seccomp filter knows x86_64 and aarch64 only"
#endif

/*
 * Pieces of the seccomp filters below, each one or two BPF instructions.
 * A filter holds the system call number in its accumulator until an
 * argument is loaded.
 */
#define RETURN(action)		BPF_STMT(BPF_RET | BPF_K, (action))

/* The system call name returns action; others go on to the next test. */
#define SYSCALL_RETURNS(name, action) \
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_##name, 0, 1), \
	RETURN(action)
#define ALLOW(name)		SYSCALL_RETURNS(name, SECCOMP_RET_ALLOW)

/* The next n instructions test the system call name; others skip them. */
#define IF_SYSCALL(name, n)	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_##name, 0, (n))

/* Load the low 32 bits of argument n (see ARG_LOW). */
#define LOAD_ARG(n)			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LOW(n))

/* Kill the process unless what was loaded equals value. */
#define KILL_UNLESS_EQUAL(value) \
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (value), 1, 0), \
	RETURN(SECCOMP_RET_KILL_PROCESS)

/*
 * How every filter starts: kill a process that makes system calls of
 * another architecture (their numbers differ), then load the number.
 */
#define CHECK_ARCH_LOAD_SYSCALL \
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)), \
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SANDBOX_AUDIT_ARCH, 1, 0), \
	RETURN(SECCOMP_RET_KILL_PROCESS), \
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))

/*
 * Offset of the low 32 bits of a system call argument.  The kernel reads
 * int arguments (pids, ids, commands, flags) from those bits only, whatever
 * the caller left in the high ones, so that is what the filter compares.
 */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG_LOW(n)	(offsetof(struct seccomp_data, args[n]))
#else
#define ARG_LOW(n)	(offsetof(struct seccomp_data, args[n]) + sizeof(uint32))
#endif

/* glibc may add IPC_64 to shmctl's command; the kernel ignores it. */
#define SANDBOX_IPC_64	0x0100

/*
 * The id of this process's System V segment (PostgreSQL's interlock beside
 * its anonymous shared memory), found by walredo_release_segment while its
 * key still names it; an id no segment has (ids are non-negative ints) when
 * there is none.
 */
static uint32 own_shmid = PG_UINT32_MAX;

static emit_log_hook_type prev_emit_log_hook = NULL;

/*
 * PostgreSQL removes its segment only on a clean exit: one killed by a
 * signal, or whose host was killed, would leave it in the kernel for ever.
 * So it is marked for removal (IPC_RMID) as soon as it exists: the kernel
 * frees it with the last process attached, this one, however it dies.
 * PostgreSQL's own IPC_RMID at exit then finds it gone and logs that; that
 * one line, and only it, is kept out of stderr, so that a healthy process
 * stays silent.
 */
void
walredo_release_segment(void)
{
	int			shmid;

	if (UsedShmemSegID == 0)
		return;
	/* PostgreSQL maps the key back the same way (PGSharedMemoryReAttach). */
	shmid = shmget((key_t) UsedShmemSegID, sizeof(PGShmemHeader), 0);
	if (shmid < 0)
		ereport(FATAL,
				(errmsg("could not find this process's shared memory segment (key %lu): %m",
						UsedShmemSegID)));
	if (shmctl(shmid, IPC_RMID, NULL) != 0)
		ereport(FATAL,
				(errmsg("could not mark this process's shared memory segment %d for removal: %m",
						shmid)));
	own_shmid = (uint32) shmid;
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = quiet_segment_removal;
}

static void
quiet_segment_removal(ErrorData *edata)
{
	/* IpcMemoryDelete's message, at exit, for the segment already gone. */
	if (edata->elevel == LOG && proc_exit_inprogress &&
		edata->saved_errno == EINVAL && edata->message_id != NULL &&
		strcmp(edata->message_id, "shmctl(%d, %d, 0) failed: %m") == 0)
		edata->output_to_server = false;
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/*
 * Enter a seccomp filter, after no_new_privs (which seccomp demands of a
 * process without CAP_SYS_ADMIN).  False on failure, with errno set.
 */
static bool
enter_seccomp_filter(struct sock_filter *filter, unsigned short len)
{
	struct sock_fprog prog = {
		.len = len,
		.filter = filter,
	};

	return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
		syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
}

static void
enter_seccomp(void)
{
	uint32		own_pid = (uint32) getpid();
	struct sock_filter filter[] = {
		/* The syscall numbers below are those of this architecture only. */
		CHECK_ARCH_LOAD_SYSCALL,

		/*
		 * tgkill(tgid, tid, sig) only within this process: abort() on PANIC
		 * signals itself.  Any other pid could be a sibling of the same
		 * user, or the host.
		 */
		IF_SYSCALL(tgkill, 4),
		LOAD_ARG(0),
		KILL_UNLESS_EQUAL(own_pid),
		RETURN(SECCOMP_RET_ALLOW),

		/*
		 * shmctl(shmid, cmd, buf) only as proc_exit calls it: IPC_RMID of
		 * our own segment.  Siblings' segments belong to the same user.
		 */
		IF_SYSCALL(shmctl, 8),
		LOAD_ARG(0),
		KILL_UNLESS_EQUAL(own_shmid),
		LOAD_ARG(1),
		BPF_STMT(BPF_ALU | BPF_AND | BPF_K, ~(uint32) SANDBOX_IPC_64),
		KILL_UNLESS_EQUAL(IPC_RMID),
		RETURN(SECCOMP_RET_ALLOW),

		/* mmap(addr, len, prot, ...), never executable. */
		IF_SYSCALL(mmap, 4),
		LOAD_ARG(2),
		BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, PROT_EXEC, 1, 0),
		RETURN(SECCOMP_RET_ALLOW),
		RETURN(SECCOMP_RET_KILL_PROCESS),

		/* The request loop: pipes, and the scratch files of smgr. */
		ALLOW(read),
		ALLOW(write),
		ALLOW(openat),
		ALLOW(close),
		ALLOW(lseek),
		ALLOW(pread64),
		ALLOW(pwrite64),
		ALLOW(newfstatat),
		ALLOW(fstat),
		ALLOW(umask),
		ALLOW(mkdirat),
#ifdef __NR_mkdir
		ALLOW(mkdir),
#endif
		/* Memory (mmap above). */
		ALLOW(brk),
		ALLOW(munmap),
		ALLOW(mremap),
		ALLOW(madvise),
		/* Exits: FATAL (proc_exit cleanup), PANIC (abort), end of input. */
		ALLOW(unlinkat),
#ifdef __NR_unlink
		ALLOW(unlink),
#endif
		ALLOW(shmdt),
		ALLOW(futex),
		ALLOW(getpid),
		ALLOW(gettid),
		ALLOW(rt_sigprocmask),
		ALLOW(rt_sigreturn),
		ALLOW(restart_syscall),
		ALLOW(exit),
		ALLOW(exit_group),

		RETURN(SECCOMP_RET_KILL_PROCESS),
	};

	if (!enter_seccomp_filter(filter, lengthof(filter)))
		ereport(FATAL,
				(errmsg("could not enter the seccomp filter: %m")));
}

/*
 * Every wal-redo process and the template run as one account.  Without
 * Landlock nothing else would keep a hijacked process from opening
 * /proc/<pid>/mem of its siblings or of the template (and from its
 * environ, fd, cwd, maps) and taking them over: those need ptrace access,
 * which the same uid has unless the target is non-dumpable (then only
 * CAP_SYS_PTRACE has it, so a root host still sees everything).  It also
 * means no core dumps, which would hold tenants' pages.
 *
 * Inherited across fork (the template's children), but reset by execve and
 * by credential changes: called in _PG_init, after the last of those (the
 * host changed the account before the exec; PostgreSQL changes nothing),
 * before the template forks or any WAL is read.  The moments between exec
 * and here remain: the process handles nothing yet, but a hijacked process
 * could open its memory then and keep the descriptor.
 */
void
walredo_make_undumpable(void)
{
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		ereport(FATAL,
				(errmsg("could not make the process non-dumpable: %m")));
}

/*
 * The template process (template.c) handles no WAL, but it is long-lived
 * and every wal-redo process is forked from it: it gets a sandbox of its own,
 * which its children inherit until they enter theirs, as wide as their
 * start-up needs and no wider.  Landlock: the scratch root (the parent of its
 * own scratch directory, where its children's are made) and /proc/meminfo
 * (PostgreSQL reads the huge page size there), no TCP, no signals or
 * abstract sockets beyond the process and its children.  Seccomp: no exec,
 * no new sockets, no debugging of other processes, no namespaces, mounts,
 * kernel modules, keys, BPF or io_uring.  Without Landlock only the seccomp
 * part applies; the children decide themselves whether that is acceptable.
 */
void
walredo_confine_template(void)
{
	char		root[MAXPGPATH];
	int			abi;

	strlcpy(root, DataDir, sizeof(root));
	get_parent_directory(root);

	abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
	if (abi >= 1)
	{
		struct ll_path_beneath_attr beneath = {0};
		uint64		allowed;
		int			ruleset = landlock_ruleset(abi, &allowed);

		beneath.allowed_access = allowed;
		beneath.parent_fd = open(root, O_PATH | O_CLOEXEC);
		if (beneath.parent_fd < 0 ||
			syscall(SYS_landlock_add_rule, ruleset, LL_RULE_PATH_BENEATH, &beneath, 0) != 0)
			ereport(FATAL,
					(errmsg("template: could not allow the scratch root \"%s\": %m", root)));
		close(beneath.parent_fd);
		beneath.allowed_access = LL_FS_READ_FILE;
		beneath.parent_fd = open("/proc/meminfo", O_PATH | O_CLOEXEC);
		if (beneath.parent_fd >= 0)
		{
			if (syscall(SYS_landlock_add_rule, ruleset, LL_RULE_PATH_BENEATH, &beneath, 0) != 0)
				ereport(FATAL,
						(errmsg("template: could not allow /proc/meminfo: %m")));
			close(beneath.parent_fd);
		}
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
			syscall(SYS_landlock_restrict_self, ruleset, 0) != 0)
			ereport(FATAL,
					(errmsg("template: could not enforce the Landlock ruleset: %m")));
		close(ruleset);
	}

	{
#define DENY(name) SYSCALL_RETURNS(name, SECCOMP_RET_KILL_PROCESS)
		struct sock_filter filter[] = {
			CHECK_ARCH_LOAD_SYSCALL,
			/* No exec, no new sockets. */
			DENY(execve), DENY(execveat),
			DENY(socket), DENY(connect), DENY(bind), DENY(listen), DENY(accept),
			DENY(accept4),
			/* No debugging of other processes. */
			DENY(ptrace), DENY(process_vm_readv), DENY(process_vm_writev),
			/* No namespaces, mounts, kernel modules. */
			DENY(unshare), DENY(setns), DENY(mount), DENY(umount2),
			DENY(pivot_root), DENY(chroot),
			DENY(init_module), DENY(finit_module), DENY(delete_module),
			DENY(kexec_load),
			/* No BPF, perf events, userfaultfd, keys or io_uring. */
			DENY(bpf), DENY(perf_event_open), DENY(userfaultfd),
			DENY(keyctl), DENY(add_key), DENY(request_key),
			DENY(io_uring_setup),
			RETURN(SECCOMP_RET_ALLOW),
		};
#undef DENY

		if (!enter_seccomp_filter(filter, lengthof(filter)))
			ereport(FATAL,
					(errmsg("template: could not enter the seccomp filter: %m")));
	}
}

/*
 * A Landlock ruleset handling every file system right of this ABI, TCP and
 * the scopes, and in *allowed the rights a scratch area needs.
 */
static int
landlock_ruleset(int abi, uint64 *allowed)
{
	struct ll_ruleset_attr attr = {0};
	size_t		attr_size = offsetof(struct ll_ruleset_attr, handled_access_net);
	int			ruleset;

	attr.handled_access_fs = (LL_FS_MAKE_SYM << 1) - 1;
	*allowed = LL_FS_READ_FILE | LL_FS_WRITE_FILE | LL_FS_READ_DIR |
		LL_FS_REMOVE_DIR | LL_FS_REMOVE_FILE | LL_FS_MAKE_DIR | LL_FS_MAKE_REG;
	if (abi >= 2)
		attr.handled_access_fs |= LL_FS_REFER;
	if (abi >= 3)
	{
		attr.handled_access_fs |= LL_FS_TRUNCATE;
		*allowed |= LL_FS_TRUNCATE;
	}
	if (abi >= 4)
	{
		attr.handled_access_net = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP;
		attr_size = offsetof(struct ll_ruleset_attr, scoped);
	}
	if (abi >= 5)
		attr.handled_access_fs |= LL_FS_IOCTL_DEV;
	if (abi >= 6)
	{
		attr.scoped = LL_SCOPE_ABSTRACT_UNIX_SOCKET | LL_SCOPE_SIGNAL;
		attr_size = sizeof(attr);
	}
	ruleset = syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
	if (ruleset < 0)
		ereport(FATAL,
				(errmsg("could not create a Landlock ruleset: %m")));
	return ruleset;
}

/*
 * pg_walredo.test_on_ping: misbehave on purpose, to show that the sandbox
 * stops it.  Each action reports a FATAL "sandbox breach" if what it tries
 * works; the sandbox's answer is to kill the process (SIGSYS), or to make the
 * call fail, after which the ping is answered as usual.
 */
void
walredo_sandbox_test(const char *what)
{
	if (strcmp(what, "getppid") == 0)
		(void) syscall(SYS_getppid);	/* not allowed: the filter kills us */
	else if (strncmp(what, "open:", 5) == 0)
	{
		int			fd = open(what + 5, O_RDONLY);

		if (fd >= 0)
			ereport(FATAL,
					(errmsg("sandbox breach: opened \"%s\"", what + 5)));
	}
	else if (strncmp(what, "tgkill:", 7) == 0)
	{
		/* Signal 0 only checks that the signal could be delivered. */
		pid_t		pid = (pid_t) atoi(what + 7);

		if (syscall(SYS_tgkill, pid, pid, 0) == 0)
			ereport(FATAL,
					(errmsg("sandbox breach: could signal process %d", (int) pid)));
	}
	else if (strncmp(what, "shmctl:", 7) == 0)
	{
		int			shmid = atoi(what + 7);

		if (shmctl(shmid, IPC_RMID, NULL) == 0)
			ereport(FATAL,
					(errmsg("sandbox breach: removed shared memory segment %d", shmid)));
	}
	else if (strcmp(what, "mmap-exec") == 0)
	{
		void	   *p = mmap(NULL, 4096, PROT_READ | PROT_EXEC,
							 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p != MAP_FAILED)
			ereport(FATAL,
					(errmsg("sandbox breach: mapped executable memory")));
	}
	else if (strcmp(what, "fsize") == 0)
	{
		/*
		 * One byte at the file size limit, in a file of the scratch
		 * directory: must fail with EFBIG (SIGXFSZ being ignored).
		 * (getrlimit is not among the allowed system calls.)
		 */
		int			fd;
		ssize_t		n;
		int			save_errno;

		fd = open("pg_walredo_fsize_probe", O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0)
			ereport(FATAL,
					(errmsg("could not create the file size probe: %m")));
		n = pwrite(fd, "x", 1, (off_t) SCRATCH_FILE_LIMIT);
		save_errno = errno;
		close(fd);
		unlink("pg_walredo_fsize_probe");
		if (n >= 0 || save_errno != EFBIG)
		{
			errno = save_errno;
			ereport(FATAL,
					(errmsg("sandbox breach: a write at the file size limit did not fail with EFBIG: %m")));
		}
	}
}
