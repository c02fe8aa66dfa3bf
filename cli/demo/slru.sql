-- The part of make demo's workload for the pages besides relation pages
-- (docs/slru.md), run after pgbench and before the SQL workload:
-- transaction status (pg_xact), multixacts, commit timestamps (with
-- DEMO_CONF='track_commit_timestamp=on') and the relation maps.

-- One transaction with 40,000 subtransactions, an xid each: its commit
-- spans two pg_xact pages (32,768 transactions a page).
CREATE TABLE demo_sx (i int);
DO $$ BEGIN FOR i IN 1..40000 LOOP
  BEGIN INSERT INTO demo_sx VALUES (i); EXCEPTION WHEN others THEN NULL; END;
END LOOP; END $$;

-- Aborts: a transaction, a subtransaction rolled back to its savepoint.
BEGIN; INSERT INTO demo_sx VALUES (-1); ROLLBACK;
BEGIN; INSERT INTO demo_sx VALUES (-2); SAVEPOINT a; INSERT INTO demo_sx VALUES (-3);
  ROLLBACK TO a; INSERT INTO demo_sx VALUES (-4); COMMIT;

-- Prepared transactions with a subtransaction, committed and rolled back
-- (the demo's server has max_prepared_transactions = 10).
BEGIN; INSERT INTO demo_sx VALUES (-5); SAVEPOINT b; INSERT INTO demo_sx VALUES (-6);
  PREPARE TRANSACTION 'demo_p1';
COMMIT PREPARED 'demo_p1';
BEGIN; INSERT INTO demo_sx VALUES (-7); PREPARE TRANSACTION 'demo_p2';
ROLLBACK PREPARED 'demo_p2';

-- Multixacts of a transaction and its subtransactions: a row key-share
-- locked by the transaction, then share locked by a subtransaction, 3,000
-- times (more than an offsets page, 2,048).
CREATE TABLE demo_mx (id int PRIMARY KEY, v int);
INSERT INTO demo_mx SELECT g, 0 FROM generate_series(1, 3000) g;
DO $$ BEGIN FOR i IN 1..3000 LOOP
  PERFORM 1 FROM demo_mx WHERE id = i FOR KEY SHARE;
  BEGIN PERFORM 1 FROM demo_mx WHERE id = i FOR SHARE; EXCEPTION WHEN others THEN NULL; END;
END LOOP; END $$;

-- The relation maps: a database's (pg_class) and the global one (pg_database).
VACUUM FULL pg_class;
VACUUM FULL pg_database;
