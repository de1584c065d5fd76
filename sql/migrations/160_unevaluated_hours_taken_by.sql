-- 160: changed hours are taken by one attempt's key and stay readable by its retries.
--
-- The pipeline used to delete the recorded ranges as it read them, so an attempt that died
-- after reading them lost them, and a retry re-evaluated a fixed 24-hour window instead;
-- hours older than that window were loaded but never evaluated. Now a reader marks the rows
-- with its key (the workflow run and activity, the same for every retry of one activity); a
-- retry with that key reads them again, and they are deleted when the next reader comes.
ALTER TABLE etl_unevaluated_hours ADD COLUMN taken_by text;

-- Each run's quarantined rows by reason (the metrics endpoint sums them per reason).
ALTER TABLE etl_runs ADD COLUMN quarantined_by_reason jsonb NOT NULL DEFAULT '{}'::jsonb;
