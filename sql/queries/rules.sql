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
-- The window bounds are materialized per key so they become index conditions (computed
-- inline they ended up as a join filter over every hour of the unit's history).
WITH missing AS MATERIALIZED (
    SELECT c.compressor_id, c.rated_rpm, m.metric, d.day,
           ((d.day - (%(days)s + 1))::timestamp AT TIME ZONE 'UTC') AS lo,
           ((d.day - 1)::timestamp AT TIME ZONE 'UTC') AS hi
    FROM compressors c
    CROSS JOIN unnest(%(metrics)s::text[]) AS m(metric)
    CROSS JOIN unnest(%(days_list)s::date[]) AS d(day)
    WHERE c.org_id = %(org_id)s
      AND (%(compressors)s::text[] IS NULL OR c.compressor_id = ANY(%(compressors)s::text[]))
      AND NOT EXISTS (
        SELECT 1 FROM rule_baselines b
        WHERE b.org_id = %(org_id)s AND b.compressor_id = c.compressor_id
          AND b.metric = m.metric AND b.days = %(days)s AND b.day = d.day)
)
INSERT INTO rule_baselines (org_id, compressor_id, metric, days, day, median, n)
SELECT %(org_id)s, x.compressor_id, x.metric, %(days)s, x.day,
       CASE WHEN count(a.mean) >= 24
            THEN percentile_cont(0.5) WITHIN GROUP (ORDER BY a.mean) END,
       count(a.mean)
FROM missing x
JOIN sensor_readings_agg a
  ON a.org_id = %(org_id)s AND a.compressor_id = x.compressor_id AND a.metric = x.metric
 AND a.hour >= x.lo AND a.hour < x.hi AND a.mean IS NOT NULL
JOIN sensor_readings_agg sp
  ON sp.org_id = %(org_id)s AND sp.compressor_id = x.compressor_id AND sp.metric = 'speed_rpm'
 AND sp.hour = a.hour AND sp.min_4h >= %(running_share)s * x.rated_rpm
GROUP BY x.compressor_id, x.metric, x.day
ON CONFLICT DO NOTHING
