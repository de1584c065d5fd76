-- Named queries of the failure forecasts (rules/forecast.py, altaviz/core/messages.py, the
-- supervisor console). Every one runs inside altaviz.core.db.tenant(), so row-level security
-- confines it to one organization.

-- name: delete_hour
DELETE FROM predictions WHERE hour = %(hour)s

-- name: insert_prediction
INSERT INTO predictions (
    org_id, compressor_id, rule_id, metric, hour, model, input_start, input_end,
    running_hours, level, slope, limit_value, limit_name, predicted_at, low_at, high_at,
    alerting, details)
VALUES (
    %(org_id)s, %(compressor_id)s, %(rule_id)s, %(metric)s, %(hour)s, %(model)s,
    %(input_start)s, %(input_end)s, %(running_hours)s, %(level)s, %(slope)s, %(limit_value)s,
    %(limit_name)s, %(predicted_at)s, %(low_at)s, %(high_at)s, %(alerting)s, %(details)s)
ON CONFLICT (org_id, compressor_id, rule_id, hour) DO UPDATE SET
    metric = EXCLUDED.metric, model = EXCLUDED.model, input_start = EXCLUDED.input_start,
    input_end = EXCLUDED.input_end, running_hours = EXCLUDED.running_hours,
    level = EXCLUDED.level, slope = EXCLUDED.slope, limit_value = EXCLUDED.limit_value,
    limit_name = EXCLUDED.limit_name, predicted_at = EXCLUDED.predicted_at,
    low_at = EXCLUDED.low_at, high_at = EXCLUDED.high_at, alerting = EXCLUDED.alerting,
    details = EXCLUDED.details

-- name: alerting_before
-- (compressor, rule) whose forecast warned at the latest stored hour before the given one.
SELECT compressor_id, rule_id
FROM predictions
WHERE alerting AND hour = (SELECT max(hour) FROM predictions WHERE hour < %(hour)s)

-- name: forecast_for_alert
-- The alert rule's forecast at the alert's latest breach hour (or the latest before it, within
-- a day): what the message quotes.
SELECT limit_value, limit_name, metric, predicted_at, low_at, high_at, hour
FROM predictions
WHERE compressor_id = %(compressor_id)s AND rule_id = %(rule_id)s
  AND hour <= %(until)s AND hour > %(until)s - interval '24 hours'
ORDER BY hour DESC
LIMIT 1

-- name: units_by_shortest_forecast
-- The supervisor console's list: each unit's earliest forecast limit at the latest forecast
-- hour, soonest first (units without a forecast are not listed).
SELECT * FROM (
    SELECT DISTINCT ON (p.compressor_id)
           p.compressor_id, c.site_id, p.rule_id, p.metric, p.limit_value, p.limit_name,
           p.predicted_at, p.low_at, p.high_at, p.model, p.hour,
           extract(epoch FROM p.predicted_at - p.hour) / 3600 AS hours
    FROM predictions p
    JOIN compressors c ON c.org_id = p.org_id AND c.compressor_id = p.compressor_id
    WHERE p.hour = (SELECT max(hour) FROM predictions)
    ORDER BY p.compressor_id, p.predicted_at
) AS soonest
ORDER BY predicted_at, compressor_id
LIMIT %(limit)s
