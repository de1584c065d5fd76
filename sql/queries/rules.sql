-- Named queries of the rules area (rules/store.py, rules/evaluate.py).

-- name: find_rule_set
SELECT rule_set_id, version FROM alert_rule_sets
WHERE org_id IS NOT DISTINCT FROM %(org_id)s AND content_hash = %(content_hash)s

-- name: next_version
SELECT coalesce(max(version), 0) + 1 FROM alert_rule_sets
WHERE org_id IS NOT DISTINCT FROM %(org_id)s

-- name: insert_rule_set
INSERT INTO alert_rule_sets (org_id, version, content_hash, source, content)
VALUES (%(org_id)s, %(version)s, %(content_hash)s, %(source)s, %(content)s)
ON CONFLICT DO NOTHING
RETURNING rule_set_id, version

-- name: insert_rule
INSERT INTO alert_rules (rule_set_id, rule_id, metric, kind, definition)
VALUES (%(rule_set_id)s, %(rule_id)s, %(metric)s, %(kind)s, %(definition)s)

-- name: get_rule_set
SELECT rule_set_id, org_id, version, source, content FROM alert_rule_sets
WHERE rule_set_id = %(rule_set_id)s

-- name: latest_rule_set
SELECT rule_set_id, org_id, version, source, content FROM alert_rule_sets
WHERE org_id IS NOT DISTINCT FROM %(org_id)s
ORDER BY version DESC LIMIT 1

-- name: fill_baselines
-- Computes the missing baselines of (compressor, metric, day) from hours the unit ran the
-- last 4 hours (speed_rpm min_4h >= running_share x rated rpm); existing baselines are reused.
-- The hours are read once for all missing days (one range scan of the unit-hour rows, instead
-- of an index probe per hour and day), and each hour is handed to the days whose window holds
-- it: day D's window is the UTC days D-(days+1) .. D-2.
-- Every missing baseline gets a row, also one with no such hour in its window (n = 0, NULL
-- median, as with fewer than 24 hours): a metric the unit does not have (stage 3 of a
-- two-stage unit) or a unit shut in all week would otherwise stay missing, and every hourly
-- evaluation read the whole window again for it (0.9-2.9 s per organization of 1,125 units).
WITH missing AS MATERIALIZED (
    SELECT c.compressor_id, m.metric, d.day
    FROM compressors c
    CROSS JOIN unnest(%(metrics)s::text[]) AS m(metric)
    CROSS JOIN unnest(%(days_list)s::date[]) AS d(day)
    WHERE c.org_id = %(org_id)s
      AND (%(compressors)s::text[] IS NULL OR c.compressor_id = ANY(%(compressors)s::text[]))
      AND NOT EXISTS (
        SELECT 1 FROM rule_baselines b
        WHERE b.org_id = %(org_id)s AND b.compressor_id = c.compressor_id
          AND b.metric = m.metric AND b.days = %(days)s AND b.day = d.day)
), span AS MATERIALIZED (
    SELECT min(day) AS first_day, max(day) AS last_day,
           ((min(day) - (%(days)s + 1))::timestamp AT TIME ZONE 'UTC') AS lo,
           ((max(day) - 1)::timestamp AT TIME ZONE 'UTC') AS hi
    FROM missing
), hours AS MATERIALIZED (
    -- agg_compressor_hours (migration 070): one row per unit-hour, so the running gate (the
    -- speed element) and the metrics' means are read from the same row in one pass.
    -- MATERIALIZED: inlined, the planner joined the missing baselines first and sorted 5 M
    -- rows still carrying the rows' arrays (2.5 GB on disk for 1,500 units)
    SELECT a.compressor_id, m.metric, t.day, a.mean[m.pos] AS mean
    FROM span, agg_compressor_hours a
    JOIN compressors c ON c.org_id = %(org_id)s AND c.compressor_id = a.compressor_id
    CROSS JOIN (SELECT metric, array_position(agg_metric_names(), metric) AS pos
                FROM unnest(%(metrics)s::text[]) AS metric) m
    CROSS JOIN LATERAL generate_series(
        greatest((a.hour AT TIME ZONE 'UTC')::date + 2, span.first_day),
        least((a.hour AT TIME ZONE 'UTC')::date + %(days)s + 1, span.last_day),
        interval '1 day') AS t(day)
    WHERE a.org_id = %(org_id)s
      AND a.hour >= span.lo AND a.hour < span.hi
      AND (%(compressors)s::text[] IS NULL OR a.compressor_id = ANY(%(compressors)s::text[]))
      AND a.min_4h[array_position(agg_metric_names(), 'speed_rpm')]
          >= %(running_share)s * c.rated_rpm
      AND a.mean[m.pos] IS NOT NULL
)
INSERT INTO rule_baselines (org_id, compressor_id, metric, days, day, median, n)
SELECT %(org_id)s, x.compressor_id, x.metric, %(days)s, x.day,
       CASE WHEN count(a.mean) >= 24
            THEN percentile_cont(0.5) WITHIN GROUP (ORDER BY a.mean) END,
       count(a.mean)
FROM missing x
LEFT JOIN hours a ON a.compressor_id = x.compressor_id AND a.metric = x.metric
     AND a.day = x.day
GROUP BY x.compressor_id, x.metric, x.day
ON CONFLICT DO NOTHING

-- name: no_data_candidates
-- The one-hour path's pre-check for no-data rules: only a unit without data at the evaluated
-- hour or the hour before can be silent or come back at that hour; every other unit has a gap
-- of 0 now and before. Two index probes per unit instead of reading a day of aggregates.
WITH p AS (
    SELECT * FROM jsonb_to_recordset(%(rules)s::jsonb) AS p(
        rule_id text, metric text, models text[], sites text[], orgs text[],
        warn int, crit int)
)
SELECT DISTINCT c.compressor_id
FROM p JOIN compressors c
  ON c.org_id = %(org_id)s
 AND (%(compressors)s::text[] IS NULL OR c.compressor_id = ANY(%(compressors)s::text[]))
 AND (p.models IS NULL OR c.model = ANY(p.models))
 AND (p.sites IS NULL OR c.site_id = ANY(p.sites))
 AND (p.orgs IS NULL OR c.org_id = ANY(p.orgs))
CROSS JOIN (VALUES (%(end)s::timestamptz), (%(end)s::timestamptz - interval '1 hour')) AS g(hour)
WHERE NOT EXISTS (
    SELECT 1 FROM agg_compressor_hours a
    CROSS JOIN LATERAL unnest(agg_metric_names(), a.n) AS u(metric, n)
    WHERE a.org_id = %(org_id)s AND a.hour = g.hour AND a.compressor_id = c.compressor_id
      AND u.metric = ANY(CASE WHEN p.metric IS NULL THEN %(all_metrics)s::text[]
                              ELSE ARRAY[p.metric] END)
      AND u.n > 0)

-- name: org_units
-- Every unit of the tenant (row-level security), in id order: the latest-hour evaluation
-- splits them into contiguous chunks, one per connection.
SELECT compressor_id FROM compressors ORDER BY compressor_id;

-- name: units
-- The units of an evaluation (rules/sources.py), read through row-level security.
SELECT compressor_id, site_id, model, rated_rpm FROM compressors
WHERE org_id = %(org_id)s
  AND (%(compressors)s::text[] IS NULL OR compressor_id = ANY(%(compressors)s::text[]))

-- name: stored_baselines
-- Stored baselines of the evaluated units and days as binary arrays for numpy, one row per
-- day: need index, day index, unit index, median (NaN: none); needs as parallel arrays.
COPY (
    SELECT array_agg((k.i - 1)::int4), array_agg((b.day - %(first)s::date)::int4),
           array_agg((u.idx - 1)::int4), array_agg(coalesce(b.median, 'NaN'))
    FROM rule_baselines b
    JOIN unnest(%(units)s::text[]) WITH ORDINALITY AS u(compressor_id, idx)
      ON u.compressor_id = b.compressor_id
    JOIN unnest(%(metrics)s::text[], %(days)s::int[]) WITH ORDINALITY AS k(metric, days, i)
      ON k.metric = b.metric AND k.days = b.days
    WHERE b.org_id = %(org_id)s AND b.day >= %(first)s AND b.day <= %(last)s
    GROUP BY b.day
) TO STDOUT (FORMAT binary)

-- name: store_baselines
-- Newly computed baselines (parallel arrays); a concurrent evaluation may have stored some.
INSERT INTO rule_baselines (org_id, compressor_id, metric, days, day, median, n)
SELECT %(org_id)s, x.compressor_id, x.metric, x.days, x.day, x.median, x.n
FROM unnest(%(ids)s::text[], %(metrics)s::text[], %(days)s::int[], %(day)s::date[],
            %(median)s::float8[], %(n)s::int[]) AS x(compressor_id, metric, days, day, median, n)
ON CONFLICT DO NOTHING
