/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  The differences between PostgreSQL 15, 16, 17 and 18 that pg_walredo
 *	  and walredo_inspect meet, in one place, so that their code is written
 *	  once, in PostgreSQL 15's terms, and builds with each version's PGXS.
 *
 * Include it after every PostgreSQL header: some of these names are macros
 * that rename PostgreSQL 15's identifiers (types, struct fields, functions)
 * to the later versions' ones, and they must not reach PostgreSQL's own
 * headers.  Each group says which release changed what.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WALREDO_COMPAT_H
#define WALREDO_COMPAT_H

#if PG_VERSION_NUM < 150000 || PG_VERSION_NUM >= 190000
#error "pg_walredo builds for PostgreSQL 15, 16, 17 and 18"
#endif

#if PG_VERSION_NUM >= 160000
/*
 * 16: RelFileNode became RelFileLocator (spcNode, dbNode, relNode became
 * spcOid, dbOid, relNumber), DecodedBkpBlock.rnode became rlocator and
 * Relation.rd_node rd_locator.  The fields keep their order and types, so a
 * rename is all it takes.  Renaming the identifier rnode also renames our
 * variables of that name, consistently, which is harmless.
 */
typedef RelFileLocator RelFileNode;
#define spcNode spcOid
#define dbNode dbOid
#define relNode relNumber
#define rnode rlocator
#define rd_node rd_locator
#define RelFileNodeEquals(a, b) RelFileLocatorEquals(a, b)

/* 16: the buffer manager's functions and buffer tags followed the rename. */
#define DropRelFileNodeBuffers(smgr, forks, nforks, firstblocks) \
	DropRelationBuffers(smgr, forks, nforks, firstblocks)
#define INIT_BUFFERTAG(tag, rlocator_, forknum, blkno) \
	InitBufferTag(&(tag), &(rlocator_), (forknum), (blkno))
#define BUFFERTAGS_EQUAL(a, b) BufferTagsEqual(&(a), &(b))
#endif

#if PG_VERSION_NUM >= 170000
/* 17: backend ids became process numbers (smgropen's second argument). */
#define InvalidBackendId INVALID_PROC_NUMBER
#endif

#if PG_VERSION_NUM >= 180000
/*
 * 18: relpath functions return a RelPathStr by value instead of a palloc'd
 * string; our callers pfree what they get, so give them a copy.
 */
#undef relpathperm
#define relpathperm(rlocator_, forknum) \
	pstrdup(relpathbackend((rlocator_), INVALID_PROC_NUMBER, (forknum)).str)

/* 18: pg_attribute_noreturn() gave way to pg_noreturn, written in front. */
#ifndef pg_attribute_noreturn
#define pg_attribute_noreturn() __attribute__((noreturn))
#endif
#endif

#endif							/* WALREDO_COMPAT_H */
