-- name: compressor_orgs
-- compressor_id -> org_id, for files of the flat (legacy) landing layout, which carry no
-- organization: an id held by two organizations cannot be attributed and is left out (its
-- rows there are quarantined as ambiguous_compressor).
SELECT compressor_id, min(org_id) AS org_id
FROM compressors
GROUP BY compressor_id
HAVING count(*) = 1

-- name: fleet_compressors
-- (org_id, compressor_id) of every compressor: a reading under an organization's landing
-- prefix is attributed to that organization's compressor of that id, or to none.
SELECT org_id, compressor_id FROM compressors

-- name: get_stage_mark
SELECT batch_id FROM etl_stage_progress WHERE stage = %(stage)s

-- name: set_stage_mark
INSERT INTO etl_stage_progress (stage, batch_id, run_id) VALUES (%(stage)s, %(batch_id)s, %(run_id)s)
ON CONFLICT (stage) DO UPDATE SET batch_id = EXCLUDED.batch_id, run_id = EXCLUDED.run_id,
                                  updated_at = now()
WHERE etl_stage_progress.batch_id < EXCLUDED.batch_id

-- name: truncate_staging
TRUNCATE etl_agg_staging

-- name: staging_has_rows
-- Whether etl_agg_staging needs a TRUNCATE: truncating an unlogged table syncs its new init
-- fork to disk at commit, which took up to 0.2 s of the hourly run on a busy disk, and the
-- table is empty in nearly every run (only hours PostgreSQL already has are staged).
SELECT EXISTS (SELECT 1 FROM etl_agg_staging)

-- name: staged_orgs
SELECT DISTINCT org_id FROM etl_agg_staging ORDER BY org_id

-- name: staged_months
SELECT DISTINCT date_trunc('month', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS month
FROM etl_agg_staging

-- name: ensure_agg_partition
SELECT ensure_agg_partition(%(ts)s)

-- name: begin_agg_month_load
-- A month without a partition yet: the name of the plain table to COPY it into (migration 061),
-- or NULL for the ordinary path.
SELECT begin_agg_month_load(%(ts)s)

-- name: finish_agg_month_load
SELECT finish_agg_month_load(%(ts)s)

-- name: upsert_aggregates
-- Runs in a tenant transaction: RLS limits the staged rows read to the current organization
-- and WITH CHECK refuses any row of another; the ownership check (migration 060) refuses
-- a compressor the organization does not own.
-- The IS DISTINCT FROM guard leaves identical rows untouched (no dead tuples, no updated_at
-- churn), so only real changes are returned and reported to rule evaluation, counted in
-- (metric, hour) aggregates: the metrics present in the row.
WITH up AS (
    INSERT INTO agg_compressor_hours AS a (
        org_id, compressor_id, hour, n, mean, min, max, stddev, mean_4h, min_4h, max_4h,
        stddev_4h, mean_24h, min_24h, max_24h, stddev_24h, rate_of_change, outliers, late)
    SELECT org_id, compressor_id, hour, n, mean, min, max, stddev, mean_4h, min_4h, max_4h,
           stddev_4h, mean_24h, min_24h, max_24h, stddev_24h, rate_of_change, outliers, late
    FROM etl_agg_staging
    WHERE org_id = current_org()
    ON CONFLICT (org_id, hour, compressor_id) DO UPDATE SET
        n = EXCLUDED.n, mean = EXCLUDED.mean, min = EXCLUDED.min, max = EXCLUDED.max,
        stddev = EXCLUDED.stddev, mean_4h = EXCLUDED.mean_4h, min_4h = EXCLUDED.min_4h,
        max_4h = EXCLUDED.max_4h, stddev_4h = EXCLUDED.stddev_4h, mean_24h = EXCLUDED.mean_24h,
        min_24h = EXCLUDED.min_24h, max_24h = EXCLUDED.max_24h,
        stddev_24h = EXCLUDED.stddev_24h, rate_of_change = EXCLUDED.rate_of_change,
        outliers = EXCLUDED.outliers, late = EXCLUDED.late
    WHERE (a.n, a.mean, a.min, a.max, a.stddev, a.mean_4h, a.min_4h, a.max_4h, a.stddev_4h,
           a.mean_24h, a.min_24h, a.max_24h, a.stddev_24h, a.rate_of_change, a.outliers, a.late)
          IS DISTINCT FROM
          (EXCLUDED.n, EXCLUDED.mean, EXCLUDED.min, EXCLUDED.max, EXCLUDED.stddev,
           EXCLUDED.mean_4h, EXCLUDED.min_4h, EXCLUDED.max_4h, EXCLUDED.stddev_4h,
           EXCLUDED.mean_24h, EXCLUDED.min_24h, EXCLUDED.max_24h, EXCLUDED.stddev_24h,
           EXCLUDED.rate_of_change, EXCLUDED.outliers, EXCLUDED.late)
    RETURNING a.compressor_id, a.hour, cardinality(array_remove(a.n, NULL)) AS metrics
)
SELECT compressor_id, min(hour), max(hour), sum(metrics)::bigint FROM up GROUP BY compressor_id
ORDER BY compressor_id

-- name: staged_rows
-- (metric, hour) aggregates waiting in the staging table
SELECT coalesce(sum(cardinality(array_remove(n, NULL))), 0) FROM etl_agg_staging

-- name: upsert_watermark
-- One organization's watermarks in one statement (arrays of compressor ids and their latest
-- reading, in microseconds since the epoch: exact, and cheap to build in Python): one round
-- trip instead of one per compressor.
INSERT INTO etl_watermarks (org_id, compressor_id, last_reading_at, last_loaded_at)
SELECT current_org(), t.compressor_id,
       'epoch'::timestamptz + t.last_reading_us * interval '1 microsecond', %(last_loaded_at)s
FROM unnest(%(compressor_ids)s::text[], %(last_reading_us)s::bigint[])
     AS t(compressor_id, last_reading_us)
ON CONFLICT (org_id, compressor_id) DO UPDATE SET
    last_reading_at = greatest(etl_watermarks.last_reading_at, EXCLUDED.last_reading_at),
    last_loaded_at = greatest(etl_watermarks.last_loaded_at, EXCLUDED.last_loaded_at)
WHERE etl_watermarks.last_reading_at < EXCLUDED.last_reading_at
   OR etl_watermarks.last_loaded_at < EXCLUDED.last_loaded_at

-- name: close_interrupted_runs
-- Runs still 'running' when a new run holds the lake's writer lock were cut off (process
-- killed, database gone before the failure could be written): only one run per lake can hold
-- the lock. Marked failed so the run history does not show them running forever.
UPDATE etl_runs
SET status = 'failed', finished_at = now(),
    error = 'interrupted: the run ended without finishing (process killed or database '
            || 'unreachable); found by run ' || %(run_id)s
WHERE status = 'running' AND run_id <> %(run_id)s
RETURNING run_id

-- name: start_run
INSERT INTO etl_runs (run_id, status) VALUES (%(run_id)s, 'running')

-- name: begin_run
-- A run of the scheduled pipeline, whose stages are activities: a retried first activity
-- finds its run already there.
INSERT INTO etl_runs (run_id, status) VALUES (%(run_id)s, 'running')
ON CONFLICT (run_id) DO NOTHING

-- name: finish_run
UPDATE etl_runs SET finished_at = now(), status = %(status)s, files = %(files)s,
    rows_in = %(rows_in)s, rows_quarantined = %(rows_quarantined)s, rows_late = %(rows_late)s,
    hours_upserted = %(hours_upserted)s, error = %(error)s
WHERE run_id = %(run_id)s

-- name: record_quarantine_reasons
-- A finished run's quarantined rows by reason ({"unknown_compressor": 3, ...}).
UPDATE etl_runs SET quarantined_by_reason = %(reasons)s WHERE run_id = %(run_id)s

-- name: create_quality_stage
-- One organization's checks of a run on their way in (etl.quality.record_checks): COPY cannot
-- write to a table under row-level security, so they are copied here first. Temporary, and
-- dropped with the tenant transaction that fills it.
CREATE TEMP TABLE dq_stage (
    compressor_id text NOT NULL,
    check_type    text NOT NULL,
    measured      double precision NOT NULL,
    threshold     double precision NOT NULL,
    passed        boolean NOT NULL,
    details       text NOT NULL
) ON COMMIT DROP

-- name: copy_quality_stage
COPY dq_stage (compressor_id, check_type, measured, threshold, passed, details)
FROM STDIN (FORMAT csv)

-- name: insert_quality_check
-- One organization's checks of a run, from dq_stage. They used to come as one JSON document
-- (jsonb_to_recordset): the largest organization of a 4,500-unit fleet (5,716 checks) took
-- 150-200 ms on a slow machine, ~80 ms of it parsing the document; CSV through COPY is parsed
-- far cheaper. A check the run already recorded (a retried stage) is skipped by the
-- NOT EXISTS probe of the unique key (ON CONFLICT DO NOTHING did the same through
-- speculative insertion, slower). Only one run writes a lake's checks at a time (its writer
-- lock); were two to race, the unique key still refuses the second row.
INSERT INTO data_quality_checks (org_id, compressor_id, run_id, check_type, measured, threshold,
                                 passed, details)
SELECT current_org(), t.compressor_id, %(run_id)s, t.check_type, t.measured, t.threshold,
       t.passed, t.details::jsonb
FROM dq_stage t
WHERE NOT EXISTS (SELECT 1 FROM data_quality_checks d
                  WHERE d.run_id = %(run_id)s AND d.org_id = current_org()
                    AND d.compressor_id = t.compressor_id AND d.check_type = t.check_type)

-- name: watermarks_of_org
SELECT compressor_id, last_reading_at FROM etl_watermarks ORDER BY compressor_id

-- name: quality_summary
SELECT org_id, compressor_id, check_type, measured, threshold, passed, details, checked_at
FROM data_quality_summary
ORDER BY org_id, compressor_id, check_type

-- name: existing_agg_hours
-- Which of the (org_id, hour) pairs a run is about to write already have aggregate rows (one
-- probe each on the primary key's (org_id, hour) prefix). Pairs not returned take the
-- plain-COPY path: no row of theirs can conflict. Runs as the owner: it spans organizations.
SELECT t.org_id, t.hour
FROM unnest(%(orgs)s::text[], %(hours)s::timestamptz[]) AS t(org_id, hour)
WHERE EXISTS (SELECT 1 FROM agg_compressor_hours a WHERE a.org_id = t.org_id AND a.hour = t.hour)

-- name: record_unevaluated_hours
-- Each organization's changed hours of one aggregates run (parallel arrays), for the rules.
INSERT INTO etl_unevaluated_hours (org_id, first_hour, last_hour, run_id)
SELECT t.org_id, t.first_hour, t.last_hour, %(run_id)s
FROM unnest(%(orgs)s::text[], %(firsts)s::timestamptz[], %(lasts)s::timestamptz[])
    AS t(org_id, first_hour, last_hour)

-- name: take_unevaluated_hours
-- Every recorded range not taken yet, or taken by this reader's key %(taken_by)s (a retry
-- of the same activity reads them again), marked as taken by it; ranges an earlier reader
-- took are deleted (migration 160). The caller evaluates them.
WITH done AS (
    DELETE FROM etl_unevaluated_hours
    WHERE taken_by IS NOT NULL AND taken_by <> %(taken_by)s
), taken AS (
    UPDATE etl_unevaluated_hours SET taken_by = %(taken_by)s
    WHERE taken_by IS NULL OR taken_by = %(taken_by)s
    RETURNING org_id, first_hour, last_hour
)
SELECT org_id, first_hour, last_hour FROM taken

-- name: prune_quality_checks
-- Up to %(batch)s data-quality rows checked before %(before)s, except each (organization,
-- compressor, check type)'s latest: a compressor that went silent keeps its last accuracy,
-- completeness and consistency results however old (its freshness is re-checked every run).
-- Runs as the owner (an operational, cross-tenant task), in batches so a year of history is
-- not one transaction.
-- Rows are picked by their primary key (migration 090).
WITH doomed AS (
    SELECT d.run_id, d.org_id, d.compressor_id, d.check_type FROM data_quality_checks d
    WHERE d.checked_at < %(before)s
      AND EXISTS (SELECT 1 FROM data_quality_checks n
                  WHERE n.org_id = d.org_id AND n.compressor_id = d.compressor_id
                    AND n.check_type = d.check_type AND n.checked_at > d.checked_at)
    LIMIT %(batch)s
)
DELETE FROM data_quality_checks q USING doomed x
WHERE (q.run_id, q.org_id, q.compressor_id, q.check_type)
    = (x.run_id, x.org_id, x.compressor_id, x.check_type)

-- name: unit_channels
-- The channels each compressor carries (null: registered before the catalog, see 095).
SELECT org_id, compressor_id, channels, stages, driver IS NOT NULL AS has_driver
FROM compressors
WHERE compressor_id = ANY(%(compressors)s::text[])

-- name: upload_cadence_of_org
SELECT upload_cadence_minutes FROM organizations WHERE org_id = %(org_id)s
