-- 002: tenant isolation.
--
-- The application works as the role altaviz_app (NOLOGIN, no BYPASSRLS); every tenant
-- transaction runs `SET LOCAL ROLE altaviz_app` and `SET LOCAL altaviz.org_id = '<org>'`
-- (see altaviz/db.py). Policies compare org_id with that setting, so a transaction sees and
-- writes only its own organization's rows. With the setting unset, current_setting(..., true)
-- is NULL and no row matches: forgetting the tenant shows nothing rather than everything.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'altaviz_app') THEN
        CREATE ROLE altaviz_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END $$;

-- The migrating role may switch to the application role.
DO $$
BEGIN
    EXECUTE format('GRANT altaviz_app TO %I', current_user);
EXCEPTION WHEN OTHERS THEN
    -- Already a member, or a superuser (who may SET ROLE to anyone).
    NULL;
END $$;

GRANT USAGE ON SCHEMA public TO altaviz_app;

CREATE FUNCTION current_org() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('altaviz.org_id', true), '')
$$;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['organizations', 'sites', 'compressors', 'sensor_readings_agg',
                             'alert_history', 'alert_events', 'contacts', 'notifications',
                             'data_quality_checks', 'etl_watermarks', 'maintenance_windows']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I TO altaviz_app '
            'USING (org_id = current_org()) WITH CHECK (org_id = current_org())', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I TO altaviz_app', t);
    END LOOP;
END $$;

-- Partitions are reached through the parent (where RLS applies); direct access is refused.
REVOKE ALL ON sensor_readings_agg_default FROM altaviz_app;

GRANT DELETE ON contacts, maintenance_windows, sensor_readings_agg TO altaviz_app;
-- alert_events is append-only for everyone; the trigger also refuses UPDATE for owners.
REVOKE UPDATE ON alert_events FROM altaviz_app;

-- Rule sets: the default set (org_id NULL) is readable by every tenant, writable by none.
ALTER TABLE alert_rule_sets ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON alert_rule_sets FOR SELECT TO altaviz_app
    USING (org_id IS NULL OR org_id = current_org());
CREATE POLICY tenant_write ON alert_rule_sets FOR INSERT TO altaviz_app
    WITH CHECK (org_id = current_org());
GRANT SELECT, INSERT ON alert_rule_sets TO altaviz_app;

ALTER TABLE alert_rules ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_via_rule_set ON alert_rules TO altaviz_app
    USING (EXISTS (SELECT 1 FROM alert_rule_sets s WHERE s.rule_set_id = alert_rules.rule_set_id))
    WITH CHECK (EXISTS (SELECT 1 FROM alert_rule_sets s
                        WHERE s.rule_set_id = alert_rules.rule_set_id AND s.org_id = current_org()));
GRANT SELECT, INSERT ON alert_rules TO altaviz_app;

-- Operational, not tenant, data: run counters only, no readings.
GRANT SELECT ON etl_runs TO altaviz_app;

GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO altaviz_app;
GRANT EXECUTE ON FUNCTION current_org() TO altaviz_app;

-- Org-aware views. security_invoker makes them apply the caller's RLS policies; a plain view
-- would run as its owner and show every tenant.
CREATE VIEW open_alerts WITH (security_invoker = true) AS
SELECT a.alert_id, a.org_id, s.site_id, s.name AS site_name, s.basin, a.compressor_id, c.model,
       a.rule_id, a.metric, a.value, a.threshold, a.severity, a.state, a.condition_state,
       a.ack_state, a.opened_at, a.escalated_at, a.acknowledged_at, a.acknowledged_by,
       a.workflow_id
FROM alert_history a
JOIN compressors c ON c.org_id = a.org_id AND c.compressor_id = a.compressor_id
JOIN sites s ON s.org_id = c.org_id AND s.site_id = c.site_id
WHERE a.state <> 'resolved';

CREATE VIEW fleet_health_by_site WITH (security_invoker = true) AS
SELECT s.org_id, s.site_id, s.name AS site_name, s.basin,
       count(DISTINCT c.compressor_id) AS compressors,
       count(a.alert_id) FILTER (WHERE a.severity = 'critical') AS open_critical,
       count(a.alert_id) FILTER (WHERE a.severity = 'warning') AS open_warning,
       count(a.alert_id) FILTER (WHERE a.ack_state = 'unacknowledged') AS unacknowledged,
       max(w.last_reading_at) AS last_reading_at
FROM sites s
LEFT JOIN compressors c ON c.org_id = s.org_id AND c.site_id = s.site_id
LEFT JOIN alert_history a ON a.org_id = c.org_id AND a.compressor_id = c.compressor_id
                         AND a.state <> 'resolved'
LEFT JOIN etl_watermarks w ON w.org_id = c.org_id AND w.compressor_id = c.compressor_id
GROUP BY s.org_id, s.site_id, s.name, s.basin;

CREATE VIEW data_quality_summary WITH (security_invoker = true) AS
SELECT DISTINCT ON (org_id, compressor_id, check_type)
       org_id, compressor_id, check_type, measured, threshold, passed, details, checked_at, run_id
FROM data_quality_checks
ORDER BY org_id, compressor_id, check_type, checked_at DESC;

GRANT SELECT ON open_alerts, fleet_health_by_site, data_quality_summary TO altaviz_app;
