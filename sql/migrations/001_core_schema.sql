-- 001: core multi-tenant schema.
--
-- Every tenant row carries org_id. Child tables reference their parents with composite keys
-- (org_id, ...) so that a row of organization A can never point at a compressor or site of
-- organization B: the database itself refuses it, not only the application.

CREATE TABLE organizations (
    org_id      text PRIMARY KEY CHECK (org_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sites (
    org_id      text NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    site_id     text NOT NULL CHECK (length(site_id) BETWEEN 1 AND 100),
    name        text NOT NULL,
    basin       text NOT NULL CHECK (basin IN ('Permian', 'Eagle Ford', 'Haynesville')),
    latitude    double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude   double precision CHECK (longitude BETWEEN -180 AND 180),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, site_id)
);

CREATE TABLE compressors (
    org_id          text NOT NULL,
    compressor_id   text NOT NULL CHECK (length(compressor_id) BETWEEN 1 AND 100),
    site_id         text NOT NULL,
    model           text NOT NULL,
    driver          text,
    rated_hp        integer NOT NULL CHECK (rated_hp > 0),
    rated_rpm       integer NOT NULL CHECK (rated_rpm > 0),
    stages          smallint NOT NULL CHECK (stages BETWEEN 1 AND 6),
    installed_on    date,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, compressor_id),
    FOREIGN KEY (org_id, site_id) REFERENCES sites (org_id, site_id)
);
CREATE INDEX compressors_site_idx ON compressors (org_id, site_id);

-- Hourly aggregates, one row per compressor, metric and hour, partitioned by month.
-- The primary key makes the ETL's INSERT ... ON CONFLICT upsert idempotent.
CREATE TABLE sensor_readings_agg (
    org_id          text NOT NULL,
    compressor_id   text NOT NULL,
    metric          text NOT NULL,
    hour            timestamptz NOT NULL,
    n               integer NOT NULL CHECK (n >= 0),
    mean            double precision,
    min             double precision,
    max             double precision,
    stddev          double precision,
    mean_4h         double precision,
    min_4h          double precision,
    max_4h          double precision,
    stddev_4h       double precision,
    mean_24h        double precision,
    min_24h         double precision,
    max_24h         double precision,
    stddev_24h      double precision,
    rate_of_change  double precision,   -- change of the 1h mean per hour vs the previous hour
    outliers        integer NOT NULL DEFAULT 0,
    late            integer NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, compressor_id, metric, hour),
    FOREIGN KEY (org_id, compressor_id) REFERENCES compressors (org_id, compressor_id)
) PARTITION BY RANGE (hour);
CREATE TABLE sensor_readings_agg_default PARTITION OF sensor_readings_agg DEFAULT;
CREATE INDEX sensor_readings_agg_hour_idx ON sensor_readings_agg (org_id, hour);

-- Creates the monthly partition holding ts if it does not exist yet. Rows that arrive before
-- their partition exists land in the default partition, so nothing is ever refused.
CREATE FUNCTION ensure_agg_partition(ts timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    start_month date := date_trunc('month', ts AT TIME ZONE 'UTC')::date;
    part_name text := format('sensor_readings_agg_%s', to_char(start_month, 'YYYY_MM'));
BEGIN
    IF to_regclass(part_name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF sensor_readings_agg FOR VALUES FROM (%L) TO (%L)',
            part_name,
            (start_month::timestamp AT TIME ZONE 'UTC'),
            ((start_month + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
    END IF;
    RETURN part_name;
END $$;

-- Each loaded rule-set version, with the hash of its canonical content.
CREATE TABLE alert_rule_sets (
    org_id        text REFERENCES organizations (org_id) ON DELETE CASCADE,  -- NULL: the default set
    version       integer NOT NULL CHECK (version > 0),
    content_hash  text NOT NULL,
    source        text NOT NULL,
    content       jsonb NOT NULL,
    loaded_at     timestamptz NOT NULL DEFAULT now(),
    rule_set_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    UNIQUE NULLS NOT DISTINCT (org_id, content_hash),
    UNIQUE NULLS NOT DISTINCT (org_id, version)
);

CREATE TABLE alert_rules (
    rule_set_id   bigint NOT NULL REFERENCES alert_rule_sets (rule_set_id) ON DELETE CASCADE,
    rule_id       text NOT NULL,
    metric        text NOT NULL,
    kind          text NOT NULL,
    definition    jsonb NOT NULL,
    PRIMARY KEY (rule_set_id, rule_id)
);

-- One row per alert: its current state. alert_events holds how it got there.
CREATE TABLE alert_history (
    alert_id          text PRIMARY KEY,                     -- the alert workflow id + run
    org_id            text NOT NULL,
    compressor_id     text NOT NULL,
    rule_id           text NOT NULL,
    rule_set_id       bigint REFERENCES alert_rule_sets (rule_set_id),
    metric            text NOT NULL,
    value             double precision,
    threshold         double precision,
    severity          text NOT NULL CHECK (severity IN ('warning', 'critical')),
    condition_state   text NOT NULL CHECK (condition_state IN ('active', 'cleared')),
    ack_state         text NOT NULL CHECK (ack_state IN ('unacknowledged', 'acknowledged')),
    state             text NOT NULL CHECK (state IN ('open', 'acknowledged', 'cleared_unacknowledged', 'resolved')),
    breach_hour       timestamptz NOT NULL,
    opened_at         timestamptz NOT NULL,
    escalated_at      timestamptz,
    acknowledged_at   timestamptz,
    acknowledged_by   text,
    ack_channel       text,
    ack_comment       text,
    cleared_at        timestamptz,
    resolved_at       timestamptz,
    resolved_by       text,
    resolve_reason    text,
    workflow_id       text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, compressor_id) REFERENCES compressors (org_id, compressor_id)
);
CREATE INDEX alert_history_open_idx ON alert_history (org_id, state) WHERE state <> 'resolved';
CREATE INDEX alert_history_compressor_idx ON alert_history (org_id, compressor_id, opened_at DESC);

-- Append-only lifecycle log. event_key makes every write idempotent: a retried activity
-- inserts the same key and ON CONFLICT DO NOTHING keeps the first.
CREATE TABLE alert_events (
    event_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_key     text NOT NULL UNIQUE,
    alert_id      text NOT NULL REFERENCES alert_history (alert_id),
    org_id        text NOT NULL REFERENCES organizations (org_id),
    event_type    text NOT NULL,
    occurred_at   timestamptz NOT NULL,
    actor         text,
    details       jsonb NOT NULL DEFAULT '{}'::jsonb,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_events_alert_idx ON alert_events (alert_id, occurred_at);

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER alert_events_append_only
    BEFORE UPDATE OR DELETE ON alert_events
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER alert_events_no_truncate
    BEFORE TRUNCATE ON alert_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

CREATE TABLE contacts (
    org_id        text NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    contact_id    text NOT NULL,
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('technician', 'supervisor')),
    site_ids      text[] NOT NULL DEFAULT '{}',           -- empty: every site of the org
    apprise_urls  text[] NOT NULL CHECK (cardinality(apprise_urls) > 0),
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, contact_id)
);

-- Delivery log: one row per attempt; (alert_id, step, contact_id, channel) delivered at most once.
CREATE TABLE notifications (
    notification_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id           text NOT NULL REFERENCES organizations (org_id),
    alert_id         text NOT NULL REFERENCES alert_history (alert_id),
    step             text NOT NULL,
    contact_id       text NOT NULL,
    channel          text NOT NULL,      -- the URL scheme only: never the URL (it may hold secrets)
    attempt          integer NOT NULL CHECK (attempt > 0),
    status           text NOT NULL CHECK (status IN ('sent', 'failed')),
    error            text,
    title            text,
    attempted_at     timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, contact_id) REFERENCES contacts (org_id, contact_id)
);
CREATE UNIQUE INDEX notifications_delivered_once
    ON notifications (alert_id, step, contact_id, channel) WHERE status = 'sent';
CREATE INDEX notifications_alert_idx ON notifications (alert_id, attempted_at);

CREATE TABLE data_quality_checks (
    check_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id         text NOT NULL,
    compressor_id  text NOT NULL,
    run_id         text NOT NULL,
    check_type     text NOT NULL CHECK (check_type IN ('freshness', 'completeness', 'consistency', 'accuracy')),
    measured       double precision NOT NULL,
    threshold      double precision NOT NULL,
    passed         boolean NOT NULL,
    details        jsonb NOT NULL DEFAULT '{}'::jsonb,
    checked_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, org_id, compressor_id, check_type),
    FOREIGN KEY (org_id, compressor_id) REFERENCES compressors (org_id, compressor_id)
);
CREATE INDEX data_quality_checks_latest_idx ON data_quality_checks (org_id, compressor_id, check_type, checked_at DESC);

-- ETL runs are operational (not tenant) data: they span every organization's files.
CREATE TABLE etl_runs (
    run_id          text PRIMARY KEY,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    status          text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    files           integer NOT NULL DEFAULT 0,
    rows_in         bigint NOT NULL DEFAULT 0,
    rows_quarantined bigint NOT NULL DEFAULT 0,
    rows_late       bigint NOT NULL DEFAULT 0,
    hours_upserted  bigint NOT NULL DEFAULT 0,
    error           text
);

CREATE TABLE etl_watermarks (
    org_id          text NOT NULL,
    compressor_id   text NOT NULL,
    last_reading_at timestamptz NOT NULL,
    last_loaded_at  timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, compressor_id),
    FOREIGN KEY (org_id, compressor_id) REFERENCES compressors (org_id, compressor_id)
);

CREATE TABLE maintenance_windows (
    window_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id         text NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    compressor_id  text,                 -- NULL: every compressor of site_id (or the org)
    site_id        text,
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL CHECK (ends_at > starts_at),
    reason         text NOT NULL,
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, compressor_id) REFERENCES compressors (org_id, compressor_id),
    FOREIGN KEY (org_id, site_id) REFERENCES sites (org_id, site_id)
);
CREATE INDEX maintenance_windows_lookup_idx ON maintenance_windows (org_id, starts_at, ends_at);

-- updated_at maintained by the database, so no code path can forget it.
CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['organizations', 'sites', 'compressors', 'sensor_readings_agg',
                             'alert_history', 'contacts', 'etl_watermarks', 'maintenance_windows']
    LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION touch_updated_at()',
                       t || '_touch_updated_at', t);
    END LOOP;
END $$;
