-- Queries of the Prometheus endpoint (altaviz/app/metrics.py), run as the schema owner at each
-- scrape: every organization's figures, outside any tenant transaction.

-- name: open_alerts
SELECT org_id, severity, count(*) FROM alert_history
WHERE state <> 'resolved' GROUP BY org_id, severity ORDER BY 1, 2

-- name: notifications_by_channel
SELECT channel, status, count(*) FROM notifications GROUP BY channel, status ORDER BY 1, 2

-- name: deliveries_waiting
-- Deliveries (alert, step, contact, channel) whose attempts have all failed, the latest within
-- the last day: waiting for a retry, or for an operator to fix the channel.
SELECT count(*) FROM (
    SELECT 1 FROM notifications
    GROUP BY alert_id, step, contact_id, channel
    HAVING bool_and(status = 'failed') AND max(attempted_at) > now() - interval '1 day'
) waiting

-- name: last_runs
-- The latest finished run (its duration) and the latest successful one.
SELECT
    (SELECT extract(epoch FROM finished_at - started_at) FROM etl_runs
     WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1),
    (SELECT extract(epoch FROM max(finished_at)) FROM etl_runs WHERE status = 'succeeded'),
    (SELECT extract(epoch FROM max(started_at)) FROM etl_runs WHERE status = 'succeeded')

-- name: quarantined_by_reason
SELECT r.key, sum(r.value::bigint) FROM etl_runs, jsonb_each_text(quarantined_by_reason) r
GROUP BY r.key ORDER BY 1
