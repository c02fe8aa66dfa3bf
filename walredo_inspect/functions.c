/*
 * functions.c
 *		The SQL functions of inspection: page_at_lsn (two forms) and page_history.
 *
 * Arguments are checked here, with PostgreSQL's errors; the WAL lookup is
 * wal.c's, the redo pool.c's.
 */
#include "walredo_inspect.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xlog.h"
#include "catalog/pg_class.h"
#include "catalog/pg_database.h"
#include "catalog/pg_tablespace_d.h"
#include "common/relpath.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/bufpage.h"
#include "storage/checksum.h"
#include "storage/smgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(page_at_lsn_rel);
PG_FUNCTION_INFO_V1(page_at_lsn_node);
PG_FUNCTION_INFO_V1(page_history);

#if PG_VERSION_NUM < 150000
/*
 * 14 has no InitMaterializedSRF: what it does with no flags (a tuplestore
 * in the query's memory, the result type's descriptor), with its errors.
 */
static void
InitMaterializedSRF(FunctionCallInfo fcinfo, bits32 flags)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext oldcontext;
	TupleDesc	tupdesc;

	Assert(flags == 0);
	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("materialize mode required, but it is not allowed in this context")));

	oldcontext = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->setDesc = CreateTupleDescCopy(tupdesc);
	MemoryContextSwitchTo(oldcontext);
}
#endif

ForkNumber
inspect_fork_argument(text *fork)
{
	/* forkname_to_number reports an unknown name with a hint */
	return forkname_to_number(text_to_cstring(fork));
}

/* 0 to MaxBlockNumber (0xFFFFFFFE); InvalidBlockNumber is no block. */
BlockNumber
inspect_block_argument(int64 blkno)
{
	if (blkno < 0 || blkno > MaxBlockNumber)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid block number %lld", (long long) blkno)));
	return (BlockNumber) blkno;
}

static XLogRecPtr
lsn_argument(XLogRecPtr lsn)
{
	XLogRecPtr	limit = inspect_flush_limit();

	if (XLogRecPtrIsInvalid(lsn))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid LSN %X/%X", LSN_FORMAT_ARGS(lsn))));
	if (lsn > limit)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("LSN %X/%X is in the future", LSN_FORMAT_ARGS(lsn)),
				 errdetail("WAL is %s up to %X/%X.",
						   RecoveryInProgress() ? "replayed" : "flushed",
						   LSN_FORMAT_ARGS(limit))));
	return lsn;
}

/*
 * The tag of an existing block of a relation that has WAL.  Temporary and
 * unlogged relations have none (but an unlogged relation's init fork, which
 * is WAL-logged); a missing fork or a block past the end is an error here
 * (the relation-file form of page_at_lsn reaches blocks and files that are
 * gone).  *rewritten: the relation's file is not its first (its relfilenode
 * differs from its OID, after VACUUM FULL, CLUSTER, TRUNCATE or a rewriting
 * ALTER TABLE), so older pages live in an earlier file.
 */
void
inspect_relation_tag(Oid relid, ForkNumber forknum, BlockNumber blkno, walredo_page_tag *tag,
					 bool *rewritten, const char *verb)
{
	Relation	rel = relation_open(relid, AccessShareLock);
	BlockNumber nblocks;

	if (!RELKIND_HAS_STORAGE(rel->rd_rel->relkind))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("relation \"%s\" has no storage",
						RelationGetRelationName(rel))));
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot %s temporary relation \"%s\"",
						verb, RelationGetRelationName(rel)),
				 errdetail("Temporary relations are not WAL-logged.")));
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_UNLOGGED && forknum != INIT_FORKNUM)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot %s unlogged relation \"%s\"",
						verb, RelationGetRelationName(rel)),
				 errdetail("Unlogged relations are not WAL-logged, but for their init fork.")));
	if (!smgrexists(RelationGetSmgr(rel), forknum))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("relation \"%s\" has no %s fork",
						RelationGetRelationName(rel), forkNames[forknum])));
	nblocks = RelationGetNumberOfBlocksInFork(rel, forknum);
	if (blkno >= nblocks)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("block number %u is out of range for relation \"%s\"",
						blkno, RelationGetRelationName(rel)),
				 errdetail_plural("Its %s fork has %u block.",
								  "Its %s fork has %u blocks.",
								  nblocks, forkNames[forknum], nblocks),
				 errhint("For a block or relation file that is gone since, use "
						 "page_at_lsn(spcnode, dbnode, relnode, blkno, lsn, fork).")));

	tag->spcnode = relfile_spc_oid(relation_relfile(rel));
	tag->dbnode = relfile_db_oid(relation_relfile(rel));
	tag->relnode = relfile_number(relation_relfile(rel));
	tag->forknum = (uint8) forknum;
	tag->blkno = blkno;
	if (rewritten)
		*rewritten = tag->relnode != relid;
	relation_close(rel, AccessShareLock);
}

/* The page of tag as of lsn, as a bytea that pageinspect reads directly. */
static bytea *
page_at(const walredo_page_tag *tag, XLogRecPtr lsn, const char *not_found_hint)
{
	bytea	   *result = (bytea *) palloc(BLCKSZ + VARHDRSZ);
	Page		page = (Page) VARDATA(result);
	InspectRebuild what;

	SET_VARSIZE(result, BLCKSZ + VARHDRSZ);
	inspect_rebuild(tag, lsn, not_found_hint, (uint8 *) page, &what);

	/* As the buffer manager writes it: new pages carry no checksum. */
	if (DataChecksumsEnabled() && !PageIsNew(page))
		((PageHeader) page)->pd_checksum = pg_checksum_page((char *) page, tag->blkno);
	return result;
}

/* page_at_lsn(rel regclass, blkno bigint, lsn pg_lsn, fork text) */
Datum
page_at_lsn_rel(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	BlockNumber blkno = inspect_block_argument(PG_GETARG_INT64(1));
	XLogRecPtr	lsn = lsn_argument(PG_GETARG_LSN(2));
	ForkNumber	forknum = inspect_fork_argument(PG_GETARG_TEXT_PP(3));
	walredo_page_tag tag;
	bool		rewritten;
	char	   *hint = NULL;

	inspect_relation_tag(relid, forknum, blkno, &tag, &rewritten, "inspect");
	if (rewritten)
		hint = psprintf("Relation \"%s\" has been in file %u since it was rewritten (VACUUM FULL, "
						"CLUSTER, TRUNCATE, a rewriting ALTER TABLE); for an LSN before that, "
						"name its earlier file: page_at_lsn(spcnode, dbnode, relnode, blkno, "
						"lsn, fork).",
						get_rel_name(relid), tag.relnode);
	PG_RETURN_BYTEA_P(page_at(&tag, lsn, hint));
}

/*
 * The tablespace of spcnode 0 in the node form, as in pg_class.reltablespace:
 * the default tablespace of database dbnode.  dbnode 0 is the shared
 * catalogs' (pg_global); a database that does not exist (dropped) has none
 * to go by.
 */
static Oid
default_tablespace(Oid dbnode)
{
	HeapTuple	tuple;
	Oid			spcnode;

	if (!OidIsValid(dbnode))
		return GLOBALTABLESPACE_OID;
	if (dbnode == MyDatabaseId)
		return MyDatabaseTableSpace;
	tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dbnode));
	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_DATABASE),
				 errmsg("database %u does not exist, so spcnode 0 names no tablespace", dbnode),
				 errhint("Give the tablespace's OID as spcnode (pg_default is %u).",
						 DEFAULTTABLESPACE_OID)));
	spcnode = ((Form_pg_database) GETSTRUCT(tuple))->dattablespace;
	ReleaseSysCache(tuple);
	return spcnode;
}

/*
 * page_at_lsn(spcnode oid, dbnode oid, relnode oid, blkno bigint, lsn pg_lsn,
 * fork text): a relation file by its node, also one rewritten, truncated or
 * dropped since.  spcnode 0 is database dbnode's default tablespace, as in
 * pg_class.reltablespace (default_tablespace).
 */
Datum
page_at_lsn_node(PG_FUNCTION_ARGS)
{
	Oid			spcnode = PG_GETARG_OID(0);
	Oid			dbnode = PG_GETARG_OID(1);
	Oid			relnode = PG_GETARG_OID(2);
	BlockNumber blkno = inspect_block_argument(PG_GETARG_INT64(3));
	XLogRecPtr	lsn = lsn_argument(PG_GETARG_LSN(4));
	ForkNumber	forknum = inspect_fork_argument(PG_GETARG_TEXT_PP(5));
	walredo_page_tag tag;

	if (!OidIsValid(relnode))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid relation file node 0")));
	tag.spcnode = OidIsValid(spcnode) ? spcnode : default_tablespace(dbnode);
	tag.dbnode = dbnode;
	tag.relnode = relnode;
	tag.forknum = (uint8) forknum;
	tag.blkno = blkno;
	PG_RETURN_BYTEA_P(page_at(&tag, lsn, NULL));
}

/*
 * page_history(rel regclass, blkno bigint, fork text) RETURNS TABLE
 * (start_lsn, end_lsn, rmgr, record_type, xid, has_image, will_init)
 */
Datum
page_history(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	BlockNumber blkno = inspect_block_argument(PG_GETARG_INT64(1));
	ForkNumber	forknum = inspect_fork_argument(PG_GETARG_TEXT_PP(2));
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	walredo_page_tag tag;
	InspectHistory history = {0};

	inspect_relation_tag(relid, forknum, blkno, &tag, NULL, "inspect");
	InitMaterializedSRF(fcinfo, 0);
	inspect_history(&tag, inspect_flush_limit(), &history);

	for (size_t i = 0; i < history.n; i++)
	{
		InspectHistoryEntry *e = &history.entries[i];
		Datum		values[7];
		bool		nulls[7] = {0};

		values[0] = LSNGetDatum(e->start_lsn);
		values[1] = LSNGetDatum(e->end_lsn);
		values[2] = CStringGetTextDatum(e->rmgr);
		values[3] = CStringGetTextDatum(e->record_type);
		values[4] = TransactionIdGetDatum(e->xid);
		values[5] = BoolGetDatum(e->has_image);
		values[6] = BoolGetDatum(e->will_init);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
