-- Who may call walredo_inspect's functions: as pg_walinspect, only roles
-- that may read server files (WAL holds the rows of every database, shared
-- catalogs included, past table privileges and row security), and what
-- such a role then reads that PostgreSQL does not otherwise give it.
CREATE EXTENSION walredo_inspect;
\set VERBOSITY terse

CREATE ROLE regress_walredo_nobody LOGIN;
CREATE ROLE regress_walredo_reader LOGIN;
GRANT pg_read_server_files TO regress_walredo_reader;

-- EXECUTE is revoked from PUBLIC and granted to pg_read_server_files.
SELECT r.rolname, p.oid::regprocedure AS function,
       has_function_privilege(r.rolname, p.oid, 'EXECUTE') AS may_execute
  FROM pg_proc p, pg_roles r
  WHERE p.proname IN ('page_at_lsn', 'page_history', 'repair_page') AND
    r.rolname IN ('regress_walredo_nobody', 'regress_walredo_reader', 'pg_read_server_files')
  ORDER BY r.rolname COLLATE "C", p.oid::regprocedure::text COLLATE "C";

CREATE TABLE fresh (id int);
INSERT INTO fresh VALUES (1);
CREATE DATABASE regression_walredo_other;
\c regression_walredo_other
CREATE TABLE secret (v text);
INSERT INTO secret VALUES ('hidden');
SELECT oid AS other_db FROM pg_database WHERE datname = current_database() \gset
SELECT pg_relation_filenode('secret') AS secret_node \gset
\c contrib_regression
-- The module's settings exist once it is loaded (before, SET makes a
-- placeholder that anyone may set).
LOAD 'walredo_inspect';
-- A row of pg_authid written after a checkpoint: its page is in the WAL.
CHECKPOINT;
CREATE ROLE regress_walredo_someone;
SELECT (ctid::text::point)[0]::int AS authid_blk
  FROM pg_authid WHERE rolname = 'regress_walredo_someone' \gset

-- Without the grant: refused, every function.
SET ROLE regress_walredo_nobody;
SELECT length(page_at_lsn('fresh', 0, pg_current_wal_flush_lsn()));
SELECT length(page_at_lsn(0, 0, 1260, 0, pg_current_wal_flush_lsn()));
SELECT count(*) FROM page_history('fresh', 0);
-- Nor may it point the extension at an archive: the setting is a superuser's.
SET walredo_inspect.archive_dir = '/tmp';
RESET ROLE;

-- With pg_read_server_files: allowed. pg_read_binary_file is still denied
-- by default, yet page_at_lsn gives another database's rows and a shared
-- catalog's page (the README's policy).
SET ROLE regress_walredo_reader;
SELECT length(page_at_lsn('fresh', 0, pg_current_wal_flush_lsn())) AS page_size;
SELECT count(*) > 0 AS has_history FROM page_history('fresh', 0);
SELECT length(pg_read_binary_file('global/pg_control'));
SELECT length(pg_read_file('postgresql.conf'));
SELECT position('hidden' IN encode(page_at_lsn(1663, :other_db, :secret_node, 0,
                                               pg_current_wal_flush_lsn()), 'escape')) > 0
       AS other_databases_row;
SELECT position('regress_walredo_someone' IN
                encode(page_at_lsn(1664, 0, 1260, :authid_blk, pg_current_wal_flush_lsn()),
                       'escape')) > 0
       AS pg_authid_row;
SET walredo_inspect.archive_dir = '/tmp';
-- Nor run a shell command as the server's user.
SET walredo_inspect.restore_command = 'cp /tmp/%f %p';
-- Nor name a base backup, nor repair a page (superuser only).
SET walredo_inspect.base_backup = '/tmp';
SELECT result FROM repair_page('fresh', 0, dry_run => true);
RESET ROLE;
-- A grant is not enough: the function checks for a superuser itself.
GRANT EXECUTE ON FUNCTION repair_page(regclass, bigint, text, boolean) TO regress_walredo_reader;
SET ROLE regress_walredo_reader;
SELECT result FROM repair_page('fresh', 0, dry_run => true);
RESET ROLE;
REVOKE EXECUTE ON FUNCTION repair_page(regclass, bigint, text, boolean) FROM regress_walredo_reader;

DROP TABLE fresh;
DROP DATABASE regression_walredo_other;
DROP ROLE regress_walredo_nobody, regress_walredo_reader, regress_walredo_someone;
DROP EXTENSION walredo_inspect;
