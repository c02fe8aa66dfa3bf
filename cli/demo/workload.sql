-- The SQL part of `make demo`'s default workload (pgbench runs before it):
-- every index access method, sequences, TOAST, HOT updates, VACUUM,
-- CREATE INDEX and CLUSTER. Replace it with `make demo WORKLOAD=file.sql`.

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
