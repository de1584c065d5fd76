-- 060: sensor_readings_agg checks compressor ownership once per statement, not once per row.
--
-- The composite foreign key (org_id, compressor_id) -> compressors made PostgreSQL look up and
-- lock (FOR KEY SHARE) the compressor row for every aggregate row written. A week's first load
-- writes 15.7 M rows for 4,500 compressors: measured on 5.2 M rows (one COPY stream, embedded
-- server), 60.9 s with the key, 24.5 s without, 32.2 s with the statement-level check below.
--
-- The guarantee is the same, still enforced by the database for every writer (the ETL's COPY
-- as owner, the tenant upsert, a person at psql): after each INSERT or UPDATE statement, one
-- query checks the distinct (org_id, compressor_id) pairs of the rows it wrote against
-- compressors, and a pair that is not there fails the statement with the foreign-key error
-- code (23503), naming the pair. The other direction (a compressor that still has aggregates
-- cannot be deleted or re-keyed) is a row trigger on compressors; both raise 23503.
--
-- A statement-level trigger fires for the table the statement names: on the partitioned table
-- it sees the rows of every partition, but a statement naming a partition (the ETL's COPY of
-- new hours does) fires only that partition's triggers. So every partition gets them too,
-- existing ones here and new ones in ensure_agg_partition.

ALTER TABLE sensor_readings_agg
    DROP CONSTRAINT sensor_readings_agg_org_id_compressor_id_fkey;

CREATE FUNCTION agg_rows_owned() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT w.org_id, w.compressor_id INTO bad
    FROM (SELECT DISTINCT org_id, compressor_id FROM written) w
    WHERE NOT EXISTS (SELECT 1 FROM compressors c
                      WHERE c.org_id = w.org_id AND c.compressor_id = w.compressor_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('%s: compressor %L is not a compressor of organization %L',
                             TG_TABLE_NAME, bad.compressor_id, bad.org_id),
            HINT = 'aggregate rows must belong to a compressor the organization owns';
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION add_agg_owner_triggers(part regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER agg_owned_insert AFTER INSERT ON %s '
                   'REFERENCING NEW TABLE AS written FOR EACH STATEMENT '
                   'EXECUTE FUNCTION agg_rows_owned()', part);
    EXECUTE format('CREATE TRIGGER agg_owned_update AFTER UPDATE ON %s '
                   'REFERENCING NEW TABLE AS written FOR EACH STATEMENT '
                   'EXECUTE FUNCTION agg_rows_owned()', part);
END $$;

SELECT add_agg_owner_triggers('sensor_readings_agg');
SELECT add_agg_owner_triggers(inhrelid::regclass)
FROM pg_inherits WHERE inhparent = 'sensor_readings_agg'::regclass;

CREATE OR REPLACE FUNCTION ensure_agg_partition(ts timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    start_month date := date_trunc('month', ts AT TIME ZONE 'UTC')::date;
    part_name text := format('sensor_readings_agg_%s', to_char(start_month, 'YYYY_MM'));
BEGIN
    IF to_regclass(part_name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF sensor_readings_agg FOR VALUES FROM (%L) TO (%L)',
            part_name,
            (start_month::timestamp AT TIME ZONE 'UTC'),
            ((start_month + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
        PERFORM add_agg_owner_triggers(part_name::regclass);
    END IF;
    RETURN part_name;
END $$;

CREATE FUNCTION compressor_keeps_aggregates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.org_id, NEW.compressor_id) = (OLD.org_id, OLD.compressor_id)
    THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM sensor_readings_agg
               WHERE org_id = OLD.org_id AND compressor_id = OLD.compressor_id) THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('compressor %L of organization %L still has hourly aggregates',
                             OLD.compressor_id, OLD.org_id);
    END IF;
    RETURN NULL;
END $$;

-- AFTER, as the foreign key's own check was: row-level security judges the new row first
CREATE TRIGGER compressor_keeps_aggregates AFTER DELETE OR UPDATE OF org_id, compressor_id
    ON compressors FOR EACH ROW EXECUTE FUNCTION compressor_keeps_aggregates();
