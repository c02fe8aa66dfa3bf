/* walredo_inspect--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION walredo_inspect UPDATE TO '1.1'" to load this file. \quit

--
-- repair_page(): rebuild a block from the WAL (and walredo_inspect.base_backup)
-- and install it, WAL-logged as a full-page image.
--
-- result: 'repaired', 'identical' (nothing to do: the page is what its WAL
-- makes it, hint bits and the like aside) or 'would repair' (dry_run).
-- old_*: the page as it was on disk.  rebuilt_lsn: the page LSN the WAL
-- gives it; new_lsn: the LSN of the full-page image written.  records: how
-- many were replayed, onto the base backup's copy (from_base_backup) or from
-- the record that ends at replayed_from (its image or initialization).
CREATE FUNCTION repair_page(rel regclass, blkno bigint,
                            fork text DEFAULT 'main',
                            dry_run boolean DEFAULT false,
                            OUT result text,
                            OUT old_page_valid boolean,
                            OUT old_checksum_ok boolean,
                            OUT old_lsn pg_lsn,
                            OUT rebuilt_lsn pg_lsn,
                            OUT new_lsn pg_lsn,
                            OUT records integer,
                            OUT replayed_from pg_lsn,
                            OUT from_base_backup boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'repair_page'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

-- It writes pages: superuser only (the function checks it too).
REVOKE EXECUTE ON FUNCTION repair_page(regclass, bigint, text, boolean) FROM PUBLIC;
