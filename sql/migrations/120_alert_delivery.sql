-- 120: notification steps delivered one (contact, channel) at a time, with fallback.
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
