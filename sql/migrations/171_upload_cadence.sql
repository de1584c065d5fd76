-- 171: each organization's gateway upload cadence.
--
-- Gateways buffer readings and upload them in batches, hourly unless an organization's
-- gateways are set otherwise. Data-quality freshness is judged against this cadence plus a
-- grace (ALTAVIZ_FRESHNESS_GRACE_MINUTES): a fixed SLA shorter than the cadence failed every
-- healthy unit between two uploads.

ALTER TABLE organizations ADD COLUMN upload_cadence_minutes integer NOT NULL DEFAULT 60
    CHECK (upload_cadence_minutes BETWEEN 1 AND 1440);
