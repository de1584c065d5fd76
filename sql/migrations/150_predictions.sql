-- 150: failure forecasts of the hourly run (rules/forecast.py), one row per unit, rule and
-- evaluated hour, under the organization's row-level security like every tenant table.
--
-- A row says: at the evaluated hour, the trend of the rule's metric (model 'linear' or
-- 'exponential', fitted over the running hours input_start .. input_end) reaches the rule's
-- limit (limit_value, named limit_name, e.g. 'shutdown') at predicted_at, with the 80% band
-- low_at .. high_at (high_at NULL: open-ended). Units without a significant trend toward a
-- limit have no row: an absent row is "no forecast", never "no risk known". alerting: the
-- forecast was under the rule's forecast.warn_within_hours (a forecast-driven warning).

CREATE TABLE predictions (
    org_id         text NOT NULL,
    compressor_id  text NOT NULL,
    rule_id        text NOT NULL,
    metric         text NOT NULL,
    hour           timestamptz NOT NULL,
    model          text NOT NULL CHECK (model IN ('linear', 'exponential')),
    input_start    timestamptz NOT NULL,
    input_end      timestamptz NOT NULL,
    running_hours  integer NOT NULL CHECK (running_hours > 0),
    level          double precision NOT NULL,
    slope          double precision NOT NULL,
    limit_value    double precision NOT NULL,
    limit_name     text NOT NULL,
    predicted_at   timestamptz NOT NULL,
    low_at         timestamptz NOT NULL,
    high_at        timestamptz,
    alerting       boolean NOT NULL DEFAULT false,
    details        jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, compressor_id, rule_id, hour),
    FOREIGN KEY (org_id, compressor_id) REFERENCES compressors (org_id, compressor_id)
        ON DELETE CASCADE,
    CHECK (input_start <= input_end AND low_at <= predicted_at
           AND (high_at IS NULL OR predicted_at <= high_at))
);
CREATE INDEX predictions_hour_idx ON predictions (org_id, hour, predicted_at);

ALTER TABLE predictions ENABLE ROW LEVEL SECURITY;
ALTER TABLE predictions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON predictions TO altaviz_app
    USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()));
GRANT SELECT, INSERT, UPDATE, DELETE ON predictions TO altaviz_app;

-- The owner works across organizations only outside a tenant transaction (migration 100).
DO $$
DECLARE
    owner_role text := (SELECT rolname FROM altaviz_roles WHERE kind = 'owner');
BEGIN
    IF owner_role IS NOT NULL THEN
        EXECUTE format('CREATE POLICY owner_access ON predictions TO %I USING '
                       '((SELECT current_org()) IS NULL OR org_id = (SELECT current_org())) '
                       'WITH CHECK ((SELECT current_org()) IS NULL '
                       'OR org_id = (SELECT current_org()))', owner_role);
    END IF;
END $$;
