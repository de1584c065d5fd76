-- 070: hourly aggregates stored one row per compressor-hour, each statistic an array over
-- the metrics; sensor_readings_agg becomes a view with the old long shape on top of it.
--
-- A week of 4,500 compressors is 15.7 M (compressor, metric, hour) rows but only 756,000
-- compressor-hours. PostgreSQL's cost of writing them is mostly per row (tuple header, text
-- keys, one B-tree entry each), not per value. Measured on this machine (2 cores, binary COPY
-- from DuckDB in two streams, a quarter of the week): the long table 11.2 s COPY + 8.2 s
-- primary key; one row per compressor-hour with a column per metric and statistic (456
-- columns) 6.9 s + 0.6 s; with an array per statistic 8.9 s + 0.5 s, and 4.7 s + 0.7 s with
-- the arrays stored PLAIN (the default EXTENDED storage tries to compress each ~3.7 kB row).
--
-- agg_compressor_hours: element i of every array is metric i of agg_metric_names() (the
-- order of altaviz.telemetry.METRICS, checked by a test); NULL in ``n`` where the hour has
-- no reading of that metric (a two-stage unit's stage 3, a channel that was down). A new
-- metric is appended to the list by a later migration; older rows' shorter arrays read as
-- NULL there (unnest pads), so no row needs rewriting.
--
-- sensor_readings_agg keeps every reader working unchanged (rules, notifications, backtests,
-- reports): a security_invoker view, so RLS of the base table applies to whoever reads it,
-- with one row per metric present. INSERT, UPDATE and DELETE through the view (fixtures, a
-- person at psql) act on one metric of a compressor-hour; INSERT refuses a metric that is
-- already there (23505), as the table's primary key did. The ETL writes the base table.
--
-- Ownership (migration 060's statement triggers), row-level security, monthly partitions and
-- the month bulk load (061/062) carry over to the base table. Existing rows are converted.

CREATE FUNCTION agg_metric_names() RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY[
    'vibration_frame_mm_s',
    'vibration_cylinder_mm_s',
    'vibration_skid_mm_s',
    'stage1_discharge_temp_f',
    'stage2_discharge_temp_f',
    'stage3_discharge_temp_f',
    'stage4_discharge_temp_f',
    'suction_temp_f',
    'flow_mmscfd',
    'speed_rpm',
    'oil_pressure_psig',
    'oil_temp_f',
    'oil_filter_dp_psid',
    'bearing_temp_max_f',
    'bearing_temp_min_f',
    'jacket_water_temp_f',
    'ambient_temp_f',
    'discharge_temp_max_f',
    'avg_suction_discharge_temp_f',
    'bearing_spread_f',
    'stage1_ratio',
    'stage2_ratio',
    'stage3_ratio',
    'stage4_ratio'
    ]::text[]
$$;

CREATE TABLE agg_compressor_hours (
    org_id          text NOT NULL,
    compressor_id   text NOT NULL,
    hour            timestamptz NOT NULL,
    n               integer[] NOT NULL CHECK (0 <= ALL (n)),
    mean            double precision[],
    min             double precision[],
    max             double precision[],
    stddev          double precision[],
    mean_4h         double precision[],
    min_4h          double precision[],
    max_4h          double precision[],
    stddev_4h       double precision[],
    mean_24h        double precision[],
    min_24h         double precision[],
    max_24h         double precision[],
    stddev_24h      double precision[],
    rate_of_change  double precision[],
    outliers        integer[] NOT NULL,
    late            integer[] NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, hour, compressor_id)
) PARTITION BY RANGE (hour);
-- PLAIN: no compression attempt and no out-of-line storage (~3.7 kB a row with 24 metrics;
-- a row must stay under a page, ~8 kB, which leaves room for twice as many metrics).
ALTER TABLE agg_compressor_hours
    ALTER COLUMN n SET STORAGE PLAIN,
    ALTER COLUMN mean SET STORAGE PLAIN,
    ALTER COLUMN min SET STORAGE PLAIN,
    ALTER COLUMN max SET STORAGE PLAIN,
    ALTER COLUMN stddev SET STORAGE PLAIN,
    ALTER COLUMN mean_4h SET STORAGE PLAIN,
    ALTER COLUMN min_4h SET STORAGE PLAIN,
    ALTER COLUMN max_4h SET STORAGE PLAIN,
    ALTER COLUMN stddev_4h SET STORAGE PLAIN,
    ALTER COLUMN mean_24h SET STORAGE PLAIN,
    ALTER COLUMN min_24h SET STORAGE PLAIN,
    ALTER COLUMN max_24h SET STORAGE PLAIN,
    ALTER COLUMN stddev_24h SET STORAGE PLAIN,
    ALTER COLUMN rate_of_change SET STORAGE PLAIN,
    ALTER COLUMN outliers SET STORAGE PLAIN,
    ALTER COLUMN late SET STORAGE PLAIN;
CREATE TABLE agg_compressor_hours_default PARTITION OF agg_compressor_hours DEFAULT;
SELECT add_agg_owner_triggers('agg_compressor_hours');
SELECT add_agg_owner_triggers('agg_compressor_hours_default');
CREATE TRIGGER agg_compressor_hours_touch_updated_at BEFORE UPDATE ON agg_compressor_hours
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

ALTER TABLE agg_compressor_hours ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agg_compressor_hours TO altaviz_app
    USING (org_id = current_org()) WITH CHECK (org_id = current_org());
GRANT SELECT, INSERT, UPDATE, DELETE ON agg_compressor_hours TO altaviz_app;
REVOKE ALL ON agg_compressor_hours_default FROM altaviz_app;

-- every aggregate there is, converted: a metric outside the list would be lost, so refuse
DO $$
DECLARE
    stray text;
BEGIN
    SELECT metric INTO stray FROM sensor_readings_agg
    WHERE metric <> ALL (agg_metric_names()) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'sensor_readings_agg holds metric %, which agg_metric_names() lacks', stray;
    END IF;
END $$;

INSERT INTO agg_compressor_hours (org_id, compressor_id, hour, n, mean, min, max, stddev, mean_4h, min_4h, max_4h, stddev_4h, mean_24h, min_24h, max_24h, stddev_24h, rate_of_change, outliers, late, updated_at)
SELECT k.org_id, k.compressor_id, k.hour,
       array_agg(o.n ORDER BY m.pos),
       array_agg(o.mean ORDER BY m.pos),
       array_agg(o.min ORDER BY m.pos),
       array_agg(o.max ORDER BY m.pos),
       array_agg(o.stddev ORDER BY m.pos),
       array_agg(o.mean_4h ORDER BY m.pos),
       array_agg(o.min_4h ORDER BY m.pos),
       array_agg(o.max_4h ORDER BY m.pos),
       array_agg(o.stddev_4h ORDER BY m.pos),
       array_agg(o.mean_24h ORDER BY m.pos),
       array_agg(o.min_24h ORDER BY m.pos),
       array_agg(o.max_24h ORDER BY m.pos),
       array_agg(o.stddev_24h ORDER BY m.pos),
       array_agg(o.rate_of_change ORDER BY m.pos),
       array_agg(o.outliers ORDER BY m.pos),
       array_agg(o.late ORDER BY m.pos),
       max(o.updated_at)
FROM (SELECT DISTINCT org_id, compressor_id, hour FROM sensor_readings_agg) k
CROSS JOIN unnest(agg_metric_names()) WITH ORDINALITY AS m(metric, pos)
LEFT JOIN sensor_readings_agg o ON o.org_id = k.org_id AND o.compressor_id = k.compressor_id
     AND o.hour = k.hour AND o.metric = m.metric
GROUP BY k.org_id, k.compressor_id, k.hour;

DROP TABLE sensor_readings_agg;
DROP TABLE IF EXISTS etl_agg_staging;

CREATE VIEW sensor_readings_agg WITH (security_invoker = true) AS
SELECT a.org_id, a.compressor_id, u.metric, a.hour, u.n, u.mean, u.min, u.max, u.stddev, u.mean_4h, u.min_4h, u.max_4h, u.stddev_4h, u.mean_24h, u.min_24h, u.max_24h, u.stddev_24h, u.rate_of_change, u.outliers, u.late, a.updated_at
FROM agg_compressor_hours a
CROSS JOIN LATERAL unnest(agg_metric_names(), a.n, a.mean, a.min, a.max, a.stddev, a.mean_4h, a.min_4h, a.max_4h, a.stddev_4h, a.mean_24h, a.min_24h, a.max_24h, a.stddev_24h, a.rate_of_change, a.outliers, a.late)
     AS u(metric, n, mean, min, max, stddev, mean_4h, min_4h, max_4h, stddev_4h, mean_24h, min_24h, max_24h, stddev_24h, rate_of_change, outliers, late)
WHERE u.n IS NOT NULL;
GRANT SELECT, INSERT ON sensor_readings_agg TO altaviz_app;

-- Writes through the view go through two helpers. agg_put sets one element of an array
-- whose lower bound stays 1, padding with NULLs: assigning arr[pos] directly to a NULL array
-- (a column written without it) would give it the bounds [pos:pos], and the view's unnest
-- would then show that value under the first metric.
CREATE FUNCTION agg_put(arr anycompatiblearray, pos integer, value anycompatible)
RETURNS anycompatiblearray LANGUAGE sql IMMUTABLE AS $$
    SELECT array_agg(CASE WHEN i = pos THEN value ELSE arr[i] END ORDER BY i)
    FROM generate_series(1, greatest(pos, coalesce(array_upper(arr, 1), 0))) AS i
$$;

-- agg_put_metric sets metric k.metric of compressor-hour k to the statistics of v (NULL:
-- clears them); with if_absent only where that metric has no row yet. True if a row changed.
CREATE FUNCTION agg_put_metric(k sensor_readings_agg, v sensor_readings_agg, if_absent boolean)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    pos integer := array_position(agg_metric_names(), k.metric);
BEGIN
    IF pos IS NULL THEN
        RAISE check_violation USING
            MESSAGE = format('unknown metric %L (agg_metric_names() lists the metrics)', k.metric);
    END IF;
    UPDATE agg_compressor_hours a SET
        n = agg_put(a.n, pos, v.n),
        mean = agg_put(a.mean, pos, v.mean),
        min = agg_put(a.min, pos, v.min),
        max = agg_put(a.max, pos, v.max),
        stddev = agg_put(a.stddev, pos, v.stddev),
        mean_4h = agg_put(a.mean_4h, pos, v.mean_4h),
        min_4h = agg_put(a.min_4h, pos, v.min_4h),
        max_4h = agg_put(a.max_4h, pos, v.max_4h),
        stddev_4h = agg_put(a.stddev_4h, pos, v.stddev_4h),
        mean_24h = agg_put(a.mean_24h, pos, v.mean_24h),
        min_24h = agg_put(a.min_24h, pos, v.min_24h),
        max_24h = agg_put(a.max_24h, pos, v.max_24h),
        stddev_24h = agg_put(a.stddev_24h, pos, v.stddev_24h),
        rate_of_change = agg_put(a.rate_of_change, pos, v.rate_of_change),
        outliers = agg_put(a.outliers, pos, v.outliers),
        late = agg_put(a.late, pos, v.late)
    WHERE a.org_id = k.org_id AND a.compressor_id = k.compressor_id AND a.hour = k.hour
      AND (NOT if_absent OR a.n[pos] IS NULL);
    RETURN FOUND;
END $$;

-- INSERT through the view: one metric of one compressor-hour
CREATE FUNCTION sensor_readings_agg_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.n IS NULL THEN
        RAISE not_null_violation USING MESSAGE = 'sensor_readings_agg: n must not be null';
    END IF;
    NEW.outliers := coalesce(NEW.outliers, 0);
    NEW.late := coalesce(NEW.late, 0);
    INSERT INTO agg_compressor_hours (org_id, compressor_id, hour, n, outliers, late)
    VALUES (NEW.org_id, NEW.compressor_id, NEW.hour, '{}', '{}', '{}')
    ON CONFLICT (org_id, hour, compressor_id) DO NOTHING;
    IF NOT agg_put_metric(NEW, NEW, true) THEN
        RAISE unique_violation USING
            MESSAGE = format('sensor_readings_agg: %s %s %s already has metric %s',
                             NEW.org_id, NEW.compressor_id, NEW.hour, NEW.metric);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER sensor_readings_agg_insert INSTEAD OF INSERT ON sensor_readings_agg
    FOR EACH ROW EXECUTE FUNCTION sensor_readings_agg_insert();

-- UPDATE through the view: the statistics of one metric of a compressor-hour; the key
-- (organization, compressor, metric, hour) cannot change there (write the base table).
CREATE FUNCTION sensor_readings_agg_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.org_id, NEW.compressor_id, NEW.metric, NEW.hour)
       IS DISTINCT FROM (OLD.org_id, OLD.compressor_id, OLD.metric, OLD.hour) THEN
        RAISE feature_not_supported USING
            MESSAGE = 'sensor_readings_agg: the key of a row (org_id, compressor_id, metric, '
                      'hour) cannot be updated through the view; update agg_compressor_hours';
    END IF;
    IF NEW.n IS NULL THEN
        RAISE not_null_violation USING MESSAGE = 'sensor_readings_agg: n must not be null';
    END IF;
    PERFORM agg_put_metric(OLD, NEW, false);
    RETURN NEW;
END $$;
CREATE TRIGGER sensor_readings_agg_update INSTEAD OF UPDATE ON sensor_readings_agg
    FOR EACH ROW EXECUTE FUNCTION sensor_readings_agg_update();

-- DELETE through the view: one metric of a compressor-hour (the row goes with its last one)
CREATE FUNCTION sensor_readings_agg_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM agg_put_metric(OLD, NULL, false);
    DELETE FROM agg_compressor_hours
    WHERE org_id = OLD.org_id AND compressor_id = OLD.compressor_id AND hour = OLD.hour
      AND cardinality(array_remove(n, NULL)) = 0;
    RETURN OLD;
END $$;
CREATE TRIGGER sensor_readings_agg_delete INSTEAD OF DELETE ON sensor_readings_agg
    FOR EACH ROW EXECUTE FUNCTION sensor_readings_agg_delete();
GRANT UPDATE, DELETE ON sensor_readings_agg TO altaviz_app;

-- staging of the ETL's guarded upsert, in the base table's shape
CREATE UNLOGGED TABLE etl_agg_staging (LIKE agg_compressor_hours INCLUDING STORAGE);
ALTER TABLE etl_agg_staging DROP COLUMN updated_at;
ALTER TABLE etl_agg_staging ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON etl_agg_staging TO altaviz_app
    USING (org_id = current_org()) WITH CHECK (org_id = current_org());
GRANT SELECT ON etl_agg_staging TO altaviz_app;

-- partitions, the month bulk load and the compressor-side ownership check, on the base table
CREATE OR REPLACE FUNCTION agg_month_bounds(ts timestamptz, OUT part_name text,
                                            OUT lo timestamptz, OUT hi timestamptz)
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('agg_compressor_hours_%s',
                  to_char(date_trunc('month', ts AT TIME ZONE 'UTC'), 'YYYY_MM')),
           date_trunc('month', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           (date_trunc('month', ts AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC'
$$;

CREATE OR REPLACE FUNCTION ensure_agg_partition(ts timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    b record;
BEGIN
    b := agg_month_bounds(ts);
    IF to_regclass(b.part_name) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF agg_compressor_hours '
                       'FOR VALUES FROM (%L) TO (%L)', b.part_name, b.lo, b.hi);
        PERFORM add_agg_owner_triggers(b.part_name::regclass);
        EXECUTE format('REVOKE ALL ON %I FROM altaviz_app', b.part_name);
    END IF;
    RETURN b.part_name;
END $$;

CREATE OR REPLACE FUNCTION begin_agg_month_load(ts timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    b record;
    loading text;
BEGIN
    b := agg_month_bounds(ts);
    loading := b.part_name || '_loading';
    IF to_regclass(b.part_name) IS NOT NULL
       OR EXISTS (SELECT 1 FROM agg_compressor_hours_default WHERE hour >= b.lo AND hour < b.hi)
    THEN
        RETURN NULL;
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS %I', loading);
    EXECUTE format('CREATE TABLE %I (LIKE agg_compressor_hours INCLUDING DEFAULTS '
                   'INCLUDING CONSTRAINTS INCLUDING STORAGE, CONSTRAINT month_bounds CHECK '
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
    EXECUTE format('ALTER TABLE agg_compressor_hours ATTACH PARTITION %I '
                   'FOR VALUES FROM (%L) TO (%L)', b.part_name, b.lo, b.hi);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT month_bounds', b.part_name);
    EXECUTE format('REVOKE ALL ON %I FROM altaviz_app', b.part_name);
    RETURN b.part_name;
END $$;

CREATE OR REPLACE FUNCTION compressor_keeps_aggregates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.org_id, NEW.compressor_id) = (OLD.org_id, OLD.compressor_id)
    THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM agg_compressor_hours
               WHERE org_id = OLD.org_id AND compressor_id = OLD.compressor_id) THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('compressor %L of organization %L still has hourly aggregates',
                             OLD.compressor_id, OLD.org_id);
    END IF;
    RETURN NULL;
END $$;
