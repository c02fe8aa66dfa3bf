/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  The differences between PostgreSQL 14, 15, 16, 17 and 18 that
 *	  pg_walredo and walredo_inspect meet, in one place, so that their code
 *	  reads the same on every version and builds with each version's PGXS.
 *
 * Both extensions include it as "pg_common/compat.h" (their Makefiles put
 * the repository's root on the include path).
 *
 * Where a whole type, function or constant was renamed, the code uses the
 * newest name and this file defines it for the older versions
 * (RelFileLocator, RelFileLocatorEquals, InitBufferTag, BufferTagsEqual,
 * DropRelationBuffers, INVALID_PROC_NUMBER).  Where struct fields were
 * renamed, the code reads them through the named accessors below
 * (relfile_spc_oid(rlocator), decoded_block_relfile(blk), ...): a macro
 * renaming a field would rename every identifier of that name.
 *
 * Include it after postgres.h: none of the names it defines is in any of
 * these versions' headers, so it may come before or after the others.  Each
 * group says which release changed what.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WALREDO_COMPAT_H
#define WALREDO_COMPAT_H

#if PG_VERSION_NUM < 140000 || PG_VERSION_NUM >= 190000
#error "pg_walredo builds for PostgreSQL 14, 15, 16, 17 and 18"
#endif

#if PG_VERSION_NUM >= 160000
#include "storage/relfilelocator.h"
#else
#include "storage/relfilenode.h"
#endif

/*
 * 16: RelFileNode became RelFileLocator (spcNode, dbNode, relNode became
 * spcOid, dbOid, relNumber), DecodedBkpBlock.rnode and
 * xl_smgr_truncate.rnode became rlocator, and Relation.rd_node rd_locator.
 * The buffer manager's functions and buffer tags followed.  The fields keep
 * their order and types.
 */
#if PG_VERSION_NUM < 160000
typedef RelFileNode RelFileLocator;

#define RelFileLocatorEquals(a, b) RelFileNodeEquals(a, b)
#define DropRelationBuffers(smgr, forks, nforks, firstblocks) \
	DropRelFileNodeBuffers(smgr, forks, nforks, firstblocks)
#define InitBufferTag(tag, rlocator, forknum, blkno) \
	INIT_BUFFERTAG(*(tag), *(rlocator), (forknum), (blkno))
#define BufferTagsEqual(a, b) BUFFERTAGS_EQUAL(*(a), *(b))

/* The three numbers that name a relation's files (lvalues). */
#define relfile_spc_oid(rlocator)	((rlocator).spcNode)
#define relfile_db_oid(rlocator)	((rlocator).dbNode)
#define relfile_number(rlocator)	((rlocator).relNode)

/* The relation of a decoded block reference, a truncation, a relcache entry. */
#define decoded_block_relfile(blk)	((blk)->rnode)
#define smgr_truncate_relfile(xlrec) ((xlrec)->rnode)
#define relation_relfile(rel)		((rel)->rd_node)
#else
#define relfile_spc_oid(rlocator)	((rlocator).spcOid)
#define relfile_db_oid(rlocator)	((rlocator).dbOid)
#define relfile_number(rlocator)	((rlocator).relNumber)

#define decoded_block_relfile(blk)	((blk)->rlocator)
#define smgr_truncate_relfile(xlrec) ((xlrec)->rlocator)
#define relation_relfile(rel)		((rel)->rd_locator)
#endif

/* A RelFileLocator from its three numbers, on every version. */
static inline RelFileLocator
make_relfile_locator(Oid spc_oid, Oid db_oid, Oid rel_number)
{
	RelFileLocator rlocator;

	relfile_spc_oid(rlocator) = spc_oid;
	relfile_db_oid(rlocator) = db_oid;
	relfile_number(rlocator) = rel_number;
	return rlocator;
}

/*
 * 15: a decoded record became a DecodedXLogRecord of its own; 14 decodes
 * into the XLogReaderState, which holds the same fields (blocks,
 * max_block_id, main_data, main_data_len) and a pointer to the header.
 * The record's resource manager and info are read through the accessors.
 * (14's DecodeXLogRecord also has no buffer argument: see redo.c.)
 */
#if PG_VERSION_NUM < 150000
#include "access/xlogreader.h"

typedef XLogReaderState DecodedXLogRecord;

#define decoded_rmid(decoded)	((decoded)->decoded_record->xl_rmid)
#define decoded_info(decoded)	((decoded)->decoded_record->xl_info)
#else
#define decoded_rmid(decoded)	((decoded)->header.xl_rmid)
#define decoded_info(decoded)	((decoded)->header.xl_info)
#endif

/*
 * 15: a decoded block reference names the buffer already holding its page
 * (prefetch_buffer, which redo tries first).  14 has no such hint; the
 * buffer is still evaluated (made).
 */
#if PG_VERSION_NUM < 150000
#define set_block_buffer(blk, buffer)	((void) (buffer))
#else
#define set_block_buffer(blk, buffer)	((blk)->prefetch_buffer = (buffer))
#endif

/*
 * 15: resource managers can be custom (RmgrIdIsValid; RM_MAX_ID is 255);
 * 14's RmgrTable has the built-in ones only.
 */
#if PG_VERSION_NUM < 150000
#define RmgrIdIsValid(rmid)		((rmid) <= RM_MAX_ID)
#endif

/*
 * 15: ReadBufferWithoutRelcache takes whether the relation is permanent.
 * Every relation redo touches here is.
 */
#if PG_VERSION_NUM < 150000
#define ReadPermanentBufferWithoutRelcache(rlocator, forknum, blkno, mode, strategy) \
	ReadBufferWithoutRelcache((rlocator), (forknum), (blkno), (mode), (strategy))
#else
#define ReadPermanentBufferWithoutRelcache(rlocator, forknum, blkno, mode, strategy) \
	ReadBufferWithoutRelcache((rlocator), (forknum), (blkno), (mode), (strategy), true)
#endif

/* 15: EmitWarningsOnPlaceholders became MarkGUCPrefixReserved. */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

/* 17: backend ids became process numbers (smgropen's second argument). */
#if PG_VERSION_NUM < 170000
#define INVALID_PROC_NUMBER InvalidBackendId
#endif

/*
 * 18: relpath functions return a RelPathStr by value instead of a palloc'd
 * string.  relpathperm_palloc is a palloc'd string on every version, for
 * the caller to pfree.
 */
#if PG_VERSION_NUM >= 180000
#define relpathperm_palloc(rlocator, forknum) \
	pstrdup(relpathbackend((rlocator), INVALID_PROC_NUMBER, (forknum)).str)
#else
#define relpathperm_palloc(rlocator, forknum) relpathperm((rlocator), (forknum))
#endif

/* 18: pg_attribute_noreturn() gave way to pg_noreturn, written in front. */
#if PG_VERSION_NUM >= 180000 && !defined(pg_attribute_noreturn)
#define pg_attribute_noreturn() __attribute__((noreturn))
#endif

#endif							/* WALREDO_COMPAT_H */
