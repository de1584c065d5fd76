-- 062: a month loaded as a plain table (migration 061) has its ownership checked once, over
-- the whole table, when it is attached, instead of by a trigger at the end of every COPY.
--
-- The statement-level trigger of migration 060 keeps every row a statement wrote in a
-- transition table; a bulk COPY of millions of rows spills it to a temporary file and reads it
-- back. Measured on the embedded server, 6.8 M aggregate rows: 17.7 s into a table with the
-- trigger, 9.8 s without it plus 1.3 s for one check query over the table.
--
-- Nothing is given up: the loading table is not part of sensor_readings_agg (no tenant and no
-- query can see its rows) and only the owner can write it; finish_agg_month_load refuses to
-- attach it while any of its rows names a compressor its organization does not own (the same
-- 23503 error as the trigger), and gives it the ownership triggers before attaching, so the
-- partition checks every later write like any other.

CREATE OR REPLACE FUNCTION begin_agg_month_load(ts timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    b record;
    loading text;
BEGIN
    b := agg_month_bounds(ts);
    loading := b.part_name || '_loading';
    IF to_regclass(b.part_name) IS NOT NULL
       OR EXISTS (SELECT 1 FROM sensor_readings_agg_default WHERE hour >= b.lo AND hour < b.hi)
    THEN
        RETURN NULL;
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS %I', loading);
    EXECUTE format('CREATE TABLE %I (LIKE sensor_readings_agg INCLUDING DEFAULTS '
                   'INCLUDING CONSTRAINTS, CONSTRAINT month_bounds CHECK '
                   '(hour >= %L AND hour < %L))', loading, b.lo, b.hi);
    RETURN loading;
END $$;

CREATE OR REPLACE FUNCTION finish_agg_month_load(ts timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    b record;
    bad record;
BEGIN
    b := agg_month_bounds(ts);
    EXECUTE format(
        'SELECT w.org_id, w.compressor_id '
        'FROM (SELECT DISTINCT org_id, compressor_id FROM %I) w '
        'WHERE NOT EXISTS (SELECT 1 FROM compressors c '
        '                  WHERE c.org_id = w.org_id AND c.compressor_id = w.compressor_id) '
        'LIMIT 1', b.part_name || '_loading') INTO bad;
    IF bad.compressor_id IS NOT NULL THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('%s: compressor %L is not a compressor of organization %L',
                             b.part_name || '_loading', bad.compressor_id, bad.org_id),
            HINT = 'aggregate rows must belong to a compressor the organization owns';
    END IF;
    EXECUTE format('ALTER TABLE %I RENAME TO %I', b.part_name || '_loading', b.part_name);
    PERFORM add_agg_owner_triggers(b.part_name::regclass);
    EXECUTE format('ALTER TABLE sensor_readings_agg ATTACH PARTITION %I '
                   'FOR VALUES FROM (%L) TO (%L)', b.part_name, b.lo, b.hi);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT month_bounds', b.part_name);
    RETURN b.part_name;
END $$;
