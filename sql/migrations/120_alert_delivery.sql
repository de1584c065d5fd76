-- 120: notification steps delivered one (contact, channel) at a time, with fallback; alerts
-- identified by the runs of their workflow.
--
-- The escalation chain goes technician -> supervisor -> manager (altaviz/core/policy.py), so a
-- contact may now be a manager. Delivery failures are alert_events of type delivery_failed
-- (one per alert and step, keyed '{alert_id}:delivery:{step}'); the index finds them for
-- `altaviz alerts list`.

ALTER TABLE contacts DROP CONSTRAINT contacts_role_check;
ALTER TABLE contacts ADD CONSTRAINT contacts_role_check
    CHECK (role IN ('technician', 'supervisor', 'manager'));

CREATE INDEX alert_events_delivery_failed_idx ON alert_events (alert_id)
    WHERE event_type = 'delivery_failed';

-- Every run of the alert's workflow chain (continue-as-new makes several; a later alert of the
-- same workflow id has runs of its own): history pages, the CLI and Temporal UI links read
-- these runs only, never "the latest run of the workflow id".
ALTER TABLE alert_history ADD COLUMN run_ids text[] NOT NULL DEFAULT '{}';
UPDATE alert_history SET run_ids = ARRAY[run_id] WHERE run_id IS NOT NULL;
