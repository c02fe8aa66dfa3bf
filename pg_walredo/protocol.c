/*-------------------------------------------------------------------------
 *
 * protocol.c
 *	  The wal-redo pipe protocol: reading the host's messages from stdin,
 *	  writing pages to stdout.  The messages are listed in protocol.h.
 *
 * Input is read with raw read() on stdin, no stdio, into a buffer that grows
 * to hold the largest message and shrinks back after it.  Every tag and
 * length is checked before its payload is read, so a message that no tag
 * allows is refused at once instead of waited for (and allocated).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <unistd.h>

#include "access/xlogrecord.h"
#include "port/pg_bswap.h"
#include "utils/memutils.h"

#include "protocol.h"

#define MSG_HEADER_SIZE		5	/* tag byte + big-endian u32 length */
#define MSG_LEN_PAGE_TAG	(4 + PAGE_TAG_SIZE)	/* B and G */
#define MSG_LEN_PUSH_PAGE	(4 + PAGE_TAG_SIZE + BLCKSZ)	/* P */
#define MSG_LEN_PING		4	/* H */
#define MSG_LEN_RECORD_MIN	(4 + sizeof(uint64) + SizeOfXLogRecord)	/* A */
#define MSG_LEN_RECORD_MAX	(4 + sizeof(uint64) + MAX_RECORD_LEN)

/*
 * The input buffer starts at INBUF_INITIAL_SIZE and grows to hold the
 * largest message seen; past INBUF_KEEP_SIZE it is shrunk back once that
 * message is done, so one large record does not pin its memory for the rest
 * of the process's life.
 */
#define INBUF_INITIAL_SIZE	(64 * 1024)
#define INBUF_KEEP_SIZE		(1024 * 1024)

/* Input buffering: raw read() on stdin, no stdio. */
static char *inbuf;
static size_t inbuf_size = 0;
static size_t inbuf_len = 0;
static size_t inbuf_pos = 0;

void
protocol_init(void)
{
	inbuf_size = INBUF_INITIAL_SIZE;
	inbuf = MemoryContextAlloc(TopMemoryContext, inbuf_size);
}

/*
 * After a read or write of a pipe that returned n: whether to try again (a
 * signal interrupted it).  FATAL on any other failure: "could not <what>".
 */
static bool
must_retry(ssize_t n, const char *what)
{
	if (n >= 0)
		return false;
	if (errno == EINTR)
		return true;
	ereport(FATAL,
			(errcode_for_socket_access(),
			 errmsg("could not %s: %m", what)));
	return false;				/* keep the compiler quiet */
}

/*
 * Read from stdin until the input buffer holds "want" bytes past inbuf_pos.
 * Returns false on EOF before the first byte when at_boundary; EOF anywhere
 * else is a protocol error.
 */
static bool
fill_input(size_t want, bool at_boundary)
{
	while (inbuf_len - inbuf_pos < want)
	{
		ssize_t		n;

		/* Make room: compact first, then grow. */
		if (inbuf_pos > 0)
		{
			memmove(inbuf, inbuf + inbuf_pos, inbuf_len - inbuf_pos);
			inbuf_len -= inbuf_pos;
			inbuf_pos = 0;
		}
		if (inbuf_size < want)
		{
			size_t		newsize = inbuf_size;

			while (newsize < want)
				newsize *= 2;
			inbuf = repalloc_huge(inbuf, newsize);
			inbuf_size = newsize;
		}

		n = read(STDIN_FILENO, inbuf + inbuf_len, inbuf_size - inbuf_len);
		if (must_retry(n, "read from stdin"))
			continue;
		if (n == 0)
		{
			if (at_boundary && inbuf_len == inbuf_pos)
				return false;
			ereport(FATAL,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("unexpected EOF on stdin in the middle of a wal-redo message")));
		}
		inbuf_len += n;
	}
	return true;
}

/*
 * Read the next message.  *payload points into the input buffer and stays
 * valid until the next call.  Returns false at a clean EOF.
 *
 * The tag and the length are checked before the payload is read: a length
 * no message of that tag can have is refused at once, instead of being
 * waited for (and allocated).
 */
bool
read_message(char *tag, char **payload, uint32 *payload_len)
{
	uint32		len;
	bool		valid;

	/*
	 * The previous message is done with: if it was a large one, give its
	 * memory back (keeping whatever was read past it).
	 */
	if (inbuf_size > INBUF_KEEP_SIZE && inbuf_len - inbuf_pos <= INBUF_INITIAL_SIZE)
	{
		memmove(inbuf, inbuf + inbuf_pos, inbuf_len - inbuf_pos);
		inbuf_len -= inbuf_pos;
		inbuf_pos = 0;
		inbuf = repalloc(inbuf, INBUF_INITIAL_SIZE);
		inbuf_size = INBUF_INITIAL_SIZE;
	}

	/* Mostly the message is in the buffer already: no call then. */
	if (inbuf_len - inbuf_pos < MSG_HEADER_SIZE &&
		!fill_input(MSG_HEADER_SIZE, true))
		return false;

	*tag = inbuf[inbuf_pos];
	memcpy(&len, inbuf + inbuf_pos + 1, sizeof(len));
	len = pg_ntoh32(len);

	switch (*tag)
	{
		case 'B':
		case 'G':
			valid = (len == MSG_LEN_PAGE_TAG);
			break;
		case 'P':
			valid = (len == MSG_LEN_PUSH_PAGE);
			break;
		case 'H':
			valid = (len == MSG_LEN_PING);
			break;
		case 'A':
			if (len > MSG_LEN_RECORD_MAX)
				ereport(FATAL,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("wal-redo record message of %u bytes is longer than the largest record PostgreSQL 15 can read (%u bytes)",
								len, MAX_RECORD_LEN)));
			valid = (len >= MSG_LEN_RECORD_MIN);
			break;
		default:
			ereport(FATAL,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("invalid wal-redo message tag 0x%02x",
							(unsigned char) *tag)));
			valid = false;		/* keep the compiler quiet */
	}
	if (!valid)
		ereport(FATAL,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid length %u for wal-redo message '%c'", len, *tag)));
	inbuf_pos += MSG_HEADER_SIZE;

	*payload_len = len - 4;
	if (inbuf_len - inbuf_pos < *payload_len)
		fill_input(*payload_len, false);
	*payload = inbuf + inbuf_pos;
	inbuf_pos += *payload_len;
	return true;
}

static uint32
get_be32(const char *p)
{
	uint32		v;

	memcpy(&v, p, sizeof(v));
	return pg_ntoh32(v);
}

void
parse_page_tag(const char *p, RelFileLocator *rlocator, ForkNumber *forknum,
			   BlockNumber *blkno)
{
	uint8		fork = (uint8) p[0];

	if (fork > MAX_FORKNUM)
		ereport(FATAL,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid fork number %u in wal-redo page tag", fork)));
	*forknum = (ForkNumber) fork;
	*rlocator = make_relfile_locator(get_be32(p + 1), get_be32(p + 5),
									 get_be32(p + 9));
	*blkno = get_be32(p + 13);
	if (*blkno >= MaxBlockNumber)
		ereport(FATAL,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid block number %u in wal-redo page tag", *blkno)));
}

void
write_page(const char *page)
{
	size_t		done = 0;

	while (done < BLCKSZ)
	{
		ssize_t		n = write(STDOUT_FILENO, page + done, BLCKSZ - done);

		if (must_retry(n, "write page to stdout"))
			continue;
		done += n;
	}
}
