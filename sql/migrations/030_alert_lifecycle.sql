-- 030: what the alert workflows need beyond 001's alert_history.
--
-- seq orders an alert's transitions: each write carries the workflow's transition number and
-- the upsert only moves forward (a late retry of an older transition never overwrites a newer
-- state). last_breach_hour lets a re-run of an old hour be recognised as already covered by an
-- alert, so re-evaluating an hour never opens a duplicate. rule_version (with 001's
-- rule_set_id) pins the rule version the alert started with for its whole life.

ALTER TABLE alert_history
    ADD COLUMN site_id                 text,
    ADD COLUMN rule_version            integer,
    ADD COLUMN last_breach_hour        timestamptz,
    ADD COLUMN escalation_delay_hours  double precision,
    ADD COLUMN diagnosis               text,
    ADD COLUMN run_id                  text,
    ADD COLUMN seq                     integer NOT NULL DEFAULT 0 CHECK (seq >= 0);

-- The latest alert of a workflow id (org, compressor, rule): the staleness check of a breach.
CREATE INDEX alert_history_workflow_idx ON alert_history (workflow_id, breach_hour DESC);
