-- 010: per-unit baselines for relative rules.
--
-- A relative rule compares a unit with its own normal: the median of its 1h means over
-- `days` full UTC days ending one full day before the evaluated day (so the most recent 24-48
-- hours, which may already carry the fault, never count). One row per compressor, metric,
-- baseline length and day, computed once per day by rule evaluation and then reused, so
-- evaluating the latest hour costs an index lookup instead of a median over a week of rows.

CREATE TABLE rule_baselines (
    org_id         text NOT NULL,
    compressor_id  text NOT NULL,
    metric         text NOT NULL,
    days           smallint NOT NULL CHECK (days BETWEEN 1 AND 30),
    day            date NOT NULL,
    median         double precision,          -- NULL: fewer than 24 hours of data in the window
    n              integer NOT NULL CHECK (n >= 0),
    computed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, compressor_id, metric, days, day),
    FOREIGN KEY (org_id, compressor_id) REFERENCES compressors (org_id, compressor_id)
        ON DELETE CASCADE
);

ALTER TABLE rule_baselines ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rule_baselines TO altaviz_app
    USING (org_id = current_org()) WITH CHECK (org_id = current_org());
GRANT SELECT, INSERT, DELETE ON rule_baselines TO altaviz_app;
