-- A pgbench script of make demo (run by three clients at once, after
-- pgbench's own run): transactions share-lock overlapping rows at the same
-- time, so rows get multixacts with several members (pg_multixact).
\set first random(1, 900)
BEGIN;
SELECT count(*) FROM (SELECT 1 FROM pgbench_accounts WHERE aid BETWEEN :first AND :first + 99 FOR SHARE) l;
SELECT pg_sleep(0.002);
COMMIT;
