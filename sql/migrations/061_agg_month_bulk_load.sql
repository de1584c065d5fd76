-- 061: a month of aggregates that has no partition yet is loaded as a plain table, then
-- attached as the partition.
--
-- A week's first load COPYs 15.7 M rows into one monthly partition. Into the keyed partition
-- every row is a B-tree insertion; into a table without the key, then the key built by one
-- sort, the same 5.2 M rows took 11.9 + 10.1 s instead of 32.8 s (embedded server, one stream).
--
-- begin_agg_month_load(ts) creates <partition>_loading (the table's columns, defaults and
-- checks, the ownership triggers of migration 060, and a CHECK on the month's bounds, so the
-- ATTACH needs no validating scan) and returns its name; NULL when the month already has its
-- partition or the default partition holds rows of that month (the ordinary path then applies).
-- A table left by a crashed load is dropped first: its rows were never visible and the ETL's
-- stage mark did not move, so the re-run copies them again.
-- finish_agg_month_load(ts) renames it to the partition's name and attaches it; ATTACH builds
-- the primary key's index on it. Both run as the table owner (the ETL's admin connection).

CREATE FUNCTION agg_month_bounds(ts timestamptz, OUT part_name text, OUT lo timestamptz,
                                 OUT hi timestamptz) LANGUAGE sql IMMUTABLE AS $$
    SELECT format('sensor_readings_agg_%s',
                  to_char(date_trunc('month', ts AT TIME ZONE 'UTC'), 'YYYY_MM')),
           date_trunc('month', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           (date_trunc('month', ts AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC'
$$;

CREATE FUNCTION begin_agg_month_load(ts timestamptz) RETURNS text LANGUAGE plpgsql AS $$
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
    PERFORM add_agg_owner_triggers(loading::regclass);
    RETURN loading;
END $$;

CREATE FUNCTION finish_agg_month_load(ts timestamptz) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    b record;
BEGIN
    b := agg_month_bounds(ts);
    EXECUTE format('ALTER TABLE %I RENAME TO %I', b.part_name || '_loading', b.part_name);
    EXECUTE format('ALTER TABLE sensor_readings_agg ATTACH PARTITION %I '
                   'FOR VALUES FROM (%L) TO (%L)', b.part_name, b.lo, b.hi);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT month_bounds', b.part_name);
    RETURN b.part_name;
END $$;
