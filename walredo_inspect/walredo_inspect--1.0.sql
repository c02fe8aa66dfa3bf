/* walredo_inspect--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION walredo_inspect" to load this file. \quit

--
-- page_at_lsn(): the page after every record that ends at or before lsn
--
CREATE FUNCTION page_at_lsn(rel regclass, blkno bigint, lsn pg_lsn,
                            fork text DEFAULT 'main')
RETURNS bytea
AS 'MODULE_PATHNAME', 'page_at_lsn_rel'
LANGUAGE C STRICT PARALLEL RESTRICTED;

-- The same for a relation file named by its node: also one rewritten,
-- truncated or dropped since.
CREATE FUNCTION page_at_lsn(spcnode oid, dbnode oid, relnode oid, blkno bigint,
                            lsn pg_lsn, fork text DEFAULT 'main')
RETURNS bytea
AS 'MODULE_PATHNAME', 'page_at_lsn_node'
LANGUAGE C STRICT PARALLEL RESTRICTED;

--
-- page_history(): every record of the readable WAL that references the block
--
CREATE FUNCTION page_history(rel regclass, blkno bigint,
                             fork text DEFAULT 'main',
                             OUT start_lsn pg_lsn,
                             OUT end_lsn pg_lsn,
                             OUT rmgr text,
                             OUT record_type text,
                             OUT xid xid,
                             OUT has_image boolean,
                             OUT will_init boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'page_history'
LANGUAGE C STRICT PARALLEL RESTRICTED;

-- WAL holds the rows of every database (shared catalogs included), past
-- table privileges and row security: as pg_walinspect, only for roles that
-- may read server files.
REVOKE EXECUTE ON FUNCTION page_at_lsn(regclass, bigint, pg_lsn, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION page_at_lsn(regclass, bigint, pg_lsn, text) TO pg_read_server_files;
REVOKE EXECUTE ON FUNCTION page_at_lsn(oid, oid, oid, bigint, pg_lsn, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION page_at_lsn(oid, oid, oid, bigint, pg_lsn, text) TO pg_read_server_files;
REVOKE EXECUTE ON FUNCTION page_history(regclass, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION page_history(regclass, bigint, text) TO pg_read_server_files;
