-- walredo_inspect: what it defines, NULL arguments, and pages and histories
-- of a small table. Deterministic output only: no LSN, OID or page bytes,
-- but booleans, counts and record names.
CREATE EXTENSION walredo_inspect;
\set VERBOSITY terse

-- What the extension defines, in a locale-independent order.
SELECT pg_describe_object(classid, objid, 0) AS obj
  FROM pg_depend
  WHERE refclassid = 'pg_extension'::regclass AND
    refobjid = (SELECT oid FROM pg_extension WHERE extname = 'walredo_inspect') AND
    deptype = 'e'
  ORDER BY pg_describe_object(classid, objid, 0) COLLATE "C";

CREATE TABLE sample_tbl (id int, v text);
INSERT INTO sample_tbl VALUES (1, 'one');
INSERT INTO sample_tbl VALUES (2, 'two');
SELECT pg_current_wal_flush_lsn() AS lsn_two \gset
UPDATE sample_tbl SET v = 'TWO' WHERE id = 2;
DELETE FROM sample_tbl WHERE id = 1;
SELECT pg_current_wal_flush_lsn() AS lsn_now \gset

-- ===================================================================
-- NULL arguments: the functions are STRICT, so NULL in, NULL out
-- ===================================================================
SELECT page_at_lsn(NULL::regclass, 0, :'lsn_now') IS NULL AS rel_null;
SELECT page_at_lsn('sample_tbl', NULL, :'lsn_now') IS NULL AS blkno_null;
SELECT page_at_lsn('sample_tbl', 0, NULL) IS NULL AS lsn_null;
SELECT page_at_lsn('sample_tbl', 0, :'lsn_now', NULL) IS NULL AS fork_null;
SELECT page_at_lsn(NULL, 0, 1, 0, :'lsn_now') IS NULL AS spcnode_null;
SELECT page_at_lsn(0, NULL, 1, 0, :'lsn_now') IS NULL AS dbnode_null;
SELECT page_at_lsn(0, 0, NULL, 0, :'lsn_now') IS NULL AS relnode_null;
SELECT page_at_lsn(0, 0, 1, NULL, :'lsn_now') IS NULL AS node_blkno_null;
SELECT page_at_lsn(0, 0, 1, 0, NULL) IS NULL AS node_lsn_null;
SELECT page_at_lsn(0, 0, 1, 0, :'lsn_now', NULL) IS NULL AS node_fork_null;
SELECT count(*) AS history_rel_null FROM page_history(NULL, 0);
SELECT count(*) AS history_blkno_null FROM page_history('sample_tbl', NULL);
SELECT count(*) AS history_fork_null FROM page_history('sample_tbl', 0, NULL);

-- ===================================================================
-- Pages: the table's page at two LSNs, by relation and by relation file
-- ===================================================================
SELECT length(page_at_lsn('sample_tbl', 0, :'lsn_now')) AS page_size;
-- At lsn_two both rows are there as inserted; by lsn_now row 2 is updated
-- (its new version 'TWO' beside the old one) and row 1 deleted.
SELECT length(page_at_lsn('sample_tbl', 0, :'lsn_two')) = 8192 AS old_page,
       page_at_lsn('sample_tbl', 0, :'lsn_two') <> page_at_lsn('sample_tbl', 0, :'lsn_now')
         AS pages_differ;
SELECT position('one' IN encode(page_at_lsn('sample_tbl', 0, :'lsn_two'), 'escape')) > 0
         AS old_page_has_one,
       position('TWO' IN encode(page_at_lsn('sample_tbl', 0, :'lsn_two'), 'escape')) = 0
         AS old_page_lacks_TWO,
       position('TWO' IN encode(page_at_lsn('sample_tbl', 0, :'lsn_now'), 'escape')) > 0
         AS new_page_has_TWO;
-- The relation-file form gives the same page; fork 'main' is the default.
SELECT page_at_lsn(0, (SELECT oid FROM pg_database WHERE datname = current_database()),
                   pg_relation_filenode('sample_tbl'), 0, :'lsn_now', 'main')
       = page_at_lsn('sample_tbl', 0, :'lsn_now') AS node_form_same;
SELECT page_at_lsn('sample_tbl', 0, :'lsn_now', 'main')
       = page_at_lsn('sample_tbl', 0, :'lsn_now') AS main_is_default;

-- ===================================================================
-- History: every record that touched the block, oldest first
-- ===================================================================
SELECT rmgr, record_type, will_init
  FROM page_history('sample_tbl', 0)
  ORDER BY start_lsn;
SELECT bool_and(start_lsn < end_lsn) AS ordered,
       bool_and(end_lsn <= pg_current_wal_flush_lsn()) AS flushed,
       count(DISTINCT xid::text) AS transactions
  FROM page_history('sample_tbl', 0);

DROP TABLE sample_tbl;
DROP EXTENSION walredo_inspect;
