-- 090: data_quality_checks is keyed by what identifies a check, (run_id, org_id,
-- compressor_id, check_type), instead of by a generated check_id.
--
-- check_id was read by one statement only (prune_quality_checks, which now deletes by the
-- key), yet every hourly run paid for it on ~18,000 rows: drawing an identity value and
-- maintaining a second unique index beside the natural key. On a scratch copy of the table,
-- the identity key added ~20 ms to each organization's insert (5,716 checks: 112-141 ms in
-- all), in the run's last stage. The natural key keeps refusing a check recorded twice, and
-- its index serves the insert's NOT EXISTS probe as before.

ALTER TABLE data_quality_checks
    DROP CONSTRAINT data_quality_checks_pkey,
    DROP CONSTRAINT data_quality_checks_run_id_org_id_compressor_id_check_type_key,
    DROP COLUMN check_id,
    ADD CONSTRAINT data_quality_checks_pkey PRIMARY KEY (run_id, org_id, compressor_id, check_type);
