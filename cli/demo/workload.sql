-- The SQL part of `make demo`'s default workload (pgbench runs before it):
-- every index access method, sequences, TOAST, HOT updates, VACUUM,
-- CREATE INDEX and CLUSTER, partitions and the visibility map. Replace it with `make demo WORKLOAD=file.sql`.

CREATE TABLE docs (
    id serial PRIMARY KEY,
    title text,
    body text,
    tags text[],
    pos point,
    span int4range,
    created date
) WITH (fillfactor = 80);

INSERT INTO docs (title, body, tags, pos, span, created)
SELECT 'doc ' || g,
       repeat(md5(g::text), 1 + g % 20),
       ARRAY['t' || (g % 10), 'u' || (g % 7)],
       point(g % 100, g / 100),
       int4range(g, g + 1 + g % 50),
       date '2020-01-01' + g / 10
FROM generate_series(1, 20000) g;

-- TOAST: incompressible bodies stored out of line.
UPDATE docs SET body = (SELECT string_agg(md5(random()::text || i), '') FROM generate_series(1, 80) i)
WHERE id % 50 = 0;

CREATE INDEX docs_title_hash ON docs USING hash (title);
CREATE INDEX docs_tags_gin ON docs USING gin (tags);
CREATE INDEX docs_pos_gist ON docs USING gist (pos);
CREATE INDEX docs_span_gist ON docs USING gist (span);
CREATE INDEX docs_pos_spgist ON docs USING spgist (pos);
CREATE INDEX docs_created_brin ON docs USING brin (created) WITH (pages_per_range = 4);

-- Index inserts into every access method.
INSERT INTO docs (title, body, tags, pos, span, created)
SELECT 'late ' || g, md5(g::text), ARRAY['t' || (g % 3)], point(g, g), int4range(g, g + 5),
       date '2021-01-01' + g
FROM generate_series(1, 3000) g;

-- HOT updates (unindexed column, room on the page), then non-HOT ones.
UPDATE docs SET body = body || '.' WHERE id % 7 = 0 AND id % 50 <> 0;
UPDATE docs SET title = title || '!', tags = tags || 'x'::text WHERE id % 11 = 0;

DELETE FROM docs WHERE id % 9 = 0;
VACUUM docs;

-- Sequences.
CREATE SEQUENCE demo_seq;
SELECT count(nextval('demo_seq')) FROM generate_series(1, 500);

-- Whole relations logged as images.
CLUSTER docs USING docs_pkey;
CREATE INDEX docs_created_btree ON docs (created);
VACUUM ANALYZE docs;

-- The visibility map. VACUUM sets the bits of all-visible pages (FREEZE: and
-- all-frozen ones); heap inserts, COPY (multi-insert), updates, deletes and
-- row locks clear them again as a side effect of their redo, without a block
-- reference to the visibility-map page; a VACUUM that cuts a table's tail
-- clears the bits of the removed blocks. Twelve partitions: twelve maps.
CREATE TABLE events (id int, kind int, note text) PARTITION BY HASH (id);
DO $$
BEGIN
    FOR i IN 0..11 LOOP
        EXECUTE format('CREATE TABLE events_%s PARTITION OF events
                        FOR VALUES WITH (MODULUS 12, REMAINDER %s)', i, i);
    END LOOP;
END $$;
INSERT INTO events SELECT g, g % 5, repeat('e', 40) FROM generate_series(1, 24000) g;
DELETE FROM events WHERE id % 40 = 0;
VACUUM FREEZE events;
UPDATE events SET note = note || '+' WHERE id % 97 = 1;
DELETE FROM events WHERE id % 89 = 2;
INSERT INTO events SELECT g, 9, 'late' FROM generate_series(40, 24000, 400) g;
COPY events FROM STDIN;
80	7	copied
120	7	copied
160	7	copied
200	7	copied
240	7	copied
280	7	copied
320	7	copied
360	7	copied
440	7	copied
480	7	copied
520	7	copied
560	7	copied
600	7	copied
640	7	copied
680	7	copied
720	7	copied
\.
SELECT count(*) FROM (SELECT id FROM events WHERE id % 83 = 3 FOR KEY SHARE) l;
DELETE FROM events WHERE id > 20000;
VACUUM events;
