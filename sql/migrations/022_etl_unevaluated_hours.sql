-- 022: the hours the ETL changed that the rules have not evaluated yet (an outbox).
--
-- The aggregates stage records, in the transaction that advances its mark, each organization's
-- range of changed hours; the scheduled pipeline takes (deletes) them when it runs the ETL
-- and evaluates them. Without it, hours changed by a run outside the schedule (`altaviz etl
-- run`, a run killed after its aggregates committed) were never evaluated by the rules: the
-- next scheduled run found nothing new to load and reported no change.
CREATE TABLE etl_unevaluated_hours (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id      text NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    first_hour  timestamptz NOT NULL,
    last_hour   timestamptz NOT NULL CHECK (last_hour >= first_hour),
    run_id      text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE etl_unevaluated_hours ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON etl_unevaluated_hours TO altaviz_app
    USING (org_id = current_org()) WITH CHECK (org_id = current_org());
GRANT SELECT ON etl_unevaluated_hours TO altaviz_app;
