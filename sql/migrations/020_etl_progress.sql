-- 020: ETL bookkeeping in PostgreSQL.
--
-- The Delta tables record which bronze batch each of them has incorporated (delta-rs app
-- transactions, in the same commit as the data). PostgreSQL stages record theirs here, so a
-- run that crashed after gold but before the upsert knows which gold batches it still owes.
-- Operational data (spans every organization): no RLS, not granted to the application role.
CREATE TABLE etl_stage_progress (
    stage       text PRIMARY KEY CHECK (stage IN ('aggregates', 'quality')),
    batch_id    bigint NOT NULL CHECK (batch_id >= 0),
    run_id      text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Staging for the aggregates upsert: filled with binary COPY (DuckDB's postgres extension),
-- then moved per organization inside a tenant transaction with INSERT ... ON CONFLICT.
-- UNLOGGED: its content is rebuilt by every run, crash safety comes from the Delta tables.
-- RLS applies, so a tenant transaction reads only its own organization's staged rows.
CREATE UNLOGGED TABLE etl_agg_staging (
    org_id          text NOT NULL,
    compressor_id   text NOT NULL,
    metric          text NOT NULL,
    hour            timestamptz NOT NULL,
    n               integer NOT NULL,
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
    rate_of_change  double precision,
    outliers        integer NOT NULL,
    late            integer NOT NULL
);
ALTER TABLE etl_agg_staging ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON etl_agg_staging TO altaviz_app
    USING (org_id = current_org()) WITH CHECK (org_id = current_org());
GRANT SELECT ON etl_agg_staging TO altaviz_app;
