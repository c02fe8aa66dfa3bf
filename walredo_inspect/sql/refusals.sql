-- Every argument and relation walredo_inspect refuses, and errors that say
-- what happened. Messages with LSNs or OIDs in them are checked through
-- error_of(), which returns the error's parts for LIKE tests.
CREATE EXTENSION walredo_inspect;
\set VERBOSITY terse

CREATE FUNCTION error_of(query text, OUT state text, OUT message text,
                         OUT detail text, OUT hint text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE query;
    state := 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
        detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
END $$;

CREATE TABLE t (id int);
INSERT INTO t SELECT generate_series(1, 1000);
VACUUM t;
CREATE TABLE vf (id int, v text);
INSERT INTO vf SELECT g, 'v' || g FROM generate_series(1, 100) g;
CREATE UNLOGGED TABLE u (id int PRIMARY KEY);
INSERT INTO u VALUES (1);
CREATE TEMP TABLE tmp (id int);
INSERT INTO tmp VALUES (1);
CREATE VIEW v AS SELECT 1 AS one;
CHECKPOINT;
-- A row of pg_authid written after the checkpoint: its page is in the WAL.
CREATE ROLE regress_walredo_someone;
SELECT (ctid::text::point)[0]::int AS authid_blk
  FROM pg_authid WHERE rolname = 'regress_walredo_someone' \gset
SELECT pg_current_wal_insert_lsn() AS before_rewrite \gset
VACUUM FULL vf;
SELECT pg_current_wal_flush_lsn() AS lsn \gset

-- ===================================================================
-- Block numbers: 0 to 0xFFFFFFFE (0xFFFFFFFF is InvalidBlockNumber)
-- ===================================================================
SELECT page_at_lsn('t', -1, :'lsn');
SELECT page_at_lsn(1663, 5, 16384, -1, :'lsn');
SELECT page_at_lsn(1663, 5, 16384, 4294967295, :'lsn');
SELECT * FROM page_history('t', -1);
SELECT * FROM page_history('t', 4294967295);
-- The highest valid one is asked for, not refused (no such block in WAL).
SELECT state <> '22023' AND message NOT LIKE 'invalid block number%' AS highest_is_a_block
  FROM error_of(format('SELECT page_at_lsn(1663, 5, 16384, 4294967294, %L)', :'lsn'));
-- Beyond the relation's end: an error, with the relation-file form as hint.
SELECT page_at_lsn('t', 999, :'lsn');
SELECT * FROM page_history('t', 999);
SELECT hint LIKE '%page_at_lsn(spcnode, dbnode, relnode, blkno, lsn, fork)%' AS hint_node_form
  FROM error_of(format('SELECT page_at_lsn(%L, 999, %L)', 't', :'lsn'));

-- ===================================================================
-- LSNs: not 0/0, not past what is flushed
-- ===================================================================
SELECT page_at_lsn('t', 0, '0/0');
SELECT page_at_lsn(1663, 5, 16384, 0, '0/0');
SELECT page_at_lsn('t', 0, 'FFFFFFFF/0');
SELECT page_at_lsn(1663, 5, 16384, 0, 'FFFFFFFF/FFFFFFFF');
SELECT detail LIKE 'WAL is flushed up to %' AS detail_says_how_far
  FROM error_of($$SELECT page_at_lsn('t', 0, 'FFFFFFFF/0')$$);

-- ===================================================================
-- Forks
-- ===================================================================
SELECT page_at_lsn('t', 0, :'lsn', 'nope');
SELECT * FROM page_history('t', 0, 'nope');
SELECT page_at_lsn(1663, 5, 16384, 0, :'lsn', 'nope');
SELECT page_at_lsn('t', 0, :'lsn', 'init');
SELECT * FROM page_history('t', 0, 'init');
-- The free-space map is not WAL-logged: said so, with no archive hint.
SELECT message LIKE '%not WAL-logged%' AS fsm_not_logged,
       coalesce(hint, '') NOT LIKE '%archive_dir%' AND
       coalesce(hint, '') NOT LIKE '%wal_keep_size%' AS no_archive_hint
  FROM error_of(format('SELECT page_at_lsn(%L, 0, %L, %L)', 't', :'lsn', 'fsm'));

-- ===================================================================
-- Relations: missing, without storage, not WAL-logged
-- ===================================================================
SELECT page_at_lsn('no_such_table', 0, :'lsn');
SELECT page_at_lsn(4000000000::oid::regclass, 0, :'lsn');
SELECT * FROM page_history(4000000000::oid::regclass, 0);
SELECT page_at_lsn('v', 0, :'lsn');
SELECT * FROM page_history('v', 0);
SELECT page_at_lsn('tmp', 0, :'lsn');
SELECT * FROM page_history('tmp', 0);
SELECT page_at_lsn('u', 0, :'lsn');
SELECT * FROM page_history('u', 0);
-- An unlogged relation's init fork is WAL-logged (a heap's is empty, its
-- index's holds the metapage): both forms give it.
SELECT page_at_lsn('u_pkey', 0, :'lsn', 'init') =
       page_at_lsn(0, (SELECT oid FROM pg_database WHERE datname = current_database()),
                   pg_relation_filenode('u_pkey'), 0, :'lsn', 'init') AS init_fork_both_forms;
SELECT count(*) > 0 AS init_fork_history FROM page_history('u_pkey', 0, 'init');

-- ===================================================================
-- Relation files (the node form)
-- ===================================================================
SELECT page_at_lsn(1663, 5, 0, 0, :'lsn');
-- spcnode 0 with database 0: the shared catalogs' tablespace (1664).
SELECT page_at_lsn(0, 0, 1260, :authid_blk, :'lsn') =
       page_at_lsn(1664, 0, 1260, :authid_blk, :'lsn') AS spcnode_0_is_pg_global;
-- spcnode 0 with another database: its default tablespace; with one that
-- does not exist, an error that says so.
SELECT dattablespace FROM pg_database WHERE datname = 'template1';
SELECT page_at_lsn(0, 4000000000, 16384, 0, :'lsn');
-- A relation rewritten since: its current file did not hold the page at
-- that LSN. The hint is the node form, not an archive.
SELECT hint LIKE '%rewritten%' AND
       hint LIKE '%page_at_lsn(spcnode, dbnode, relnode%' AS hint_names_earlier_file,
       hint NOT LIKE '%walredo_inspect.archive_dir%' AS no_archive_hint
  FROM error_of(format('SELECT page_at_lsn(%L, 0, %L)', 'vf', :'before_rewrite'));

-- ===================================================================
-- repair_page: what it refuses, and pages that need no repair
-- ===================================================================
SELECT result FROM repair_page('tmp', 0);
SELECT result FROM repair_page('u', 0);
SELECT result FROM repair_page('v', 0);
SELECT result FROM repair_page('t', 999, dry_run => true);
SELECT result FROM repair_page('t', -1);
SELECT result FROM repair_page('t', 0, 'nosuchfork');
-- Pages as their WAL makes them (hint bits and command ids aside) are left
-- alone; with dry_run too.
SELECT result, old_page_valid, records > 0 AS replayed, from_base_backup, new_lsn IS NULL AS unchanged
  FROM repair_page('t', 0, dry_run => true);
SELECT result, old_page_valid, records > 0 AS replayed, from_base_backup, new_lsn IS NULL AS unchanged
  FROM repair_page('vf', 0);

-- ===================================================================
-- Settings
-- ===================================================================
\set VERBOSITY default
SET walredo_inspect.archive_dir = 'relative/dir';
SET walredo_inspect.base_backup = 'relative/dir';
-- archive_dir is a list: every directory absolute.
SET walredo_inspect.archive_dir = '/tmp, relative/dir';
SET walredo_inspect.archive_dir = '/tmp, "/tmp/with, a comma"';
SHOW walredo_inspect.archive_dir;
RESET walredo_inspect.archive_dir;
\set VERBOSITY terse
-- A base backup that is not one: no such directory; a data directory
-- without backup_label.
SET walredo_inspect.base_backup = '/nonexistent/walredo-base';
SELECT length(page_at_lsn('t', 1, pg_current_wal_flush_lsn()));
SELECT current_setting('data_directory') AS datadir \gset
SET walredo_inspect.base_backup = :'datadir';
SELECT state, replace(message, :'datadir', 'DATADIR') AS message
  FROM error_of($$SELECT length(page_at_lsn('t', 1, pg_current_wal_flush_lsn()))$$);
RESET walredo_inspect.base_backup;
-- (The range's wording changed in PostgreSQL 17.)
SELECT message LIKE '%outside the valid range for parameter "walredo_inspect.timeout"%'
       AS timeout_range
  FROM error_of('SET walredo_inspect.timeout = -1');
-- A deadline too short to start a wal-redo process: a timeout, not a
-- failure to start one (a new backend: a new pool, no process yet).
\c
SET walredo_inspect.timeout = 1;
SELECT state <> 'no error' AS failed,
       concat_ws(' ', message, detail, hint) LIKE '%timed out%' AS says_timed_out,
       concat_ws(' ', message, detail, hint) LIKE '%WALREDO_TIMEOUT%' AS names_the_status,
       concat_ws(' ', message, detail, hint) NOT LIKE '%WALREDO_SPAWN_FAILED%' AND
       concat_ws(' ', message, detail, hint) NOT LIKE '%no process from the template%'
         AS not_a_spawn_failure
  FROM error_of($$SELECT length(page_at_lsn('t', 1, pg_current_wal_flush_lsn()))$$);
RESET walredo_inspect.timeout;

DROP FUNCTION error_of;
DROP VIEW v;
DROP TABLE t, vf, u;
DROP ROLE regress_walredo_someone;
DROP EXTENSION walredo_inspect;
