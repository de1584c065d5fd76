-- Named queries of the rules area (rules/store.py, rules/sources.py).

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

-- name: units
-- The units of an evaluation (rules/sources.py), read through row-level security.
SELECT compressor_id, site_id, model, rated_rpm, channels FROM compressors
WHERE org_id = %(org_id)s
  AND (%(compressors)s::text[] IS NULL OR compressor_id = ANY(%(compressors)s::text[]))

-- name: stored_baselines
-- Stored baselines of the evaluated units and days as binary arrays for numpy, one row per
-- day: need index, day index, unit index, median (NaN: none), running hours behind it;
-- needs as parallel arrays.
COPY (
    SELECT array_agg((k.i - 1)::int4), array_agg((b.day - %(first)s::date)::int4),
           array_agg((u.idx - 1)::int4), array_agg(coalesce(b.median, 'NaN')),
           array_agg(b.n)
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
