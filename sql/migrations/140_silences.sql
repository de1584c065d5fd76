-- 140: silences, recurring maintenance windows, and breaches held back by them.
--
-- A silence (Alertmanager's model) matches alerts by compressor, site, rule and severity: each
-- matcher is a list of exact values, NULL matching everything. It holds back notifications
-- from starts_at to ends_at; expiring it early sets ends_at (and expired_by), never deletes it,
-- so the timeline can always say which silence held an alert back.
--
-- A maintenance window (001's table) may now recur: recurrence holds the validated rule
-- (altaviz/core/silences.py: weekday, every n weeks or the nth weekday of the month, local
-- start and end times), timezone the site's IANA zone; starts_at/ends_at then bound the
-- period in which it recurs.
--
-- held_breaches records each breach that a window or a unit stop kept from opening an alert
-- (one row per organization, compressor, rule and hour): the demo and operators count them.

CREATE TABLE silences (
    silence_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id          text NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    compressor_ids  text[],
    site_ids        text[],
    rule_ids        text[],
    severities      text[] CHECK (severities <@ ARRAY['warning', 'critical']::text[]),
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz NOT NULL CHECK (ends_at > starts_at),
    created_by      text NOT NULL,
    comment         text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expired_by      text,
    expired_at      timestamptz
);
CREATE INDEX silences_active_idx ON silences (org_id, ends_at);

ALTER TABLE silences ENABLE ROW LEVEL SECURITY;
ALTER TABLE silences FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON silences TO altaviz_app
    USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()));
GRANT SELECT, INSERT, UPDATE ON silences TO altaviz_app;

ALTER TABLE maintenance_windows
    ADD COLUMN recurrence jsonb,
    ADD COLUMN timezone text;

CREATE TABLE held_breaches (
    org_id          text NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    compressor_id   text NOT NULL,
    rule_id         text NOT NULL,
    hour            timestamptz NOT NULL,
    held_by         text NOT NULL CHECK (held_by IN ('maintenance', 'inhibited')),
    detail          text NOT NULL DEFAULT '',
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, compressor_id, rule_id, hour),
    FOREIGN KEY (org_id, compressor_id) REFERENCES compressors (org_id, compressor_id)
        ON DELETE CASCADE
);

ALTER TABLE held_breaches ENABLE ROW LEVEL SECURITY;
ALTER TABLE held_breaches FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON held_breaches TO altaviz_app
    USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()));
GRANT SELECT, INSERT ON held_breaches TO altaviz_app;

-- The owner works across organizations only outside a tenant transaction (as 100 set up).
DO $$
DECLARE
    owner_role text := (SELECT rolname FROM altaviz_roles WHERE kind = 'owner');
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['silences', 'held_breaches'] LOOP
        EXECUTE format('CREATE POLICY owner_access ON %I TO %I USING '
                       '((SELECT current_org()) IS NULL OR org_id = (SELECT current_org())) '
                       'WITH CHECK ((SELECT current_org()) IS NULL '
                       'OR org_id = (SELECT current_org()))', t, owner_role);
        IF current_user <> owner_role THEN
            EXECUTE format('ALTER TABLE %I OWNER TO %I', t, owner_role);
        END IF;
    END LOOP;
END $$;
