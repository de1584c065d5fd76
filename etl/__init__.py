"""Altaviz's medallion ETL: landing files -> Delta bronze/silver/gold -> PostgreSQL aggregates.

Public API (see each module for the details):

* :func:`etl.pipeline.run_pipeline` ``(settings, db_url, *, landing=None, progress=None,
  after_stage=None, run_id=None, as_of=None, thresholds=DEFAULT_THRESHOLDS) -> EtlRunReport``:
  the whole run (CLI: ``altaviz etl run``). ``EtlRunReport.changed`` lists
  ``ChangedRange(org_id, compressor_id, first_hour, last_hour, rows)`` for rule evaluation.
  Parallelism and memory come from ``settings`` (``etl_*``); :class:`etl.thresholds.Thresholds`
  holds the sizes at which stages change method.
* :func:`etl.pipeline.run_stage` ``(stage, settings, db_url, *, landing=None, run_id=None,
  as_of=None, thresholds=DEFAULT_THRESHOLDS)``: one stage, for Temporal activities; stages are
  ``bronze``, ``silver``, ``gold``, ``aggregates``, ``quality``, each idempotent and catching up
  on its own.
* Stage functions taking explicit connections: :func:`etl.bronze.bronze_ingest`,
  :func:`etl.silver.silver_transform`, :func:`etl.gold.gold_features`,
  :func:`etl.aggregates.upsert_aggregates`, :func:`etl.quality.quality_checks`.
* :func:`etl.maintenance.maintain` ``(lake_path, retention_hours=168)``: compaction, checkpoint
  and vacuum (CLI: ``altaviz etl maintain``).
"""
