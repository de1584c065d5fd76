-- 130: the channels each compressor carries, and data-quality checks per channel.
--
-- A channel a unit does not carry (a stage it lacks, the jacket water of an integral
-- engine-compressor) is absent; a channel it carries that arrives null, NaN or out of range
-- is missing, and a carried channel that stops reporting while the unit runs is a sensor
-- offline. The fleet loader fills channels from the model catalog; rows loaded before this
-- migration get the catalog's rule for the built-in models: the frame's channels, those of
-- each of the unit's stages and, with a separate driver, its jacket water.

ALTER TABLE compressors ADD COLUMN channels text[];

UPDATE compressors SET channels =
    ARRAY['vibration_frame_mm_s', 'vibration_cylinder_mm_s', 'vibration_skid_mm_s']
    || ARRAY(SELECT format('stage%s_%s', s, c)
             FROM generate_series(1, stages) AS s,
                  unnest(ARRAY['suction_psig', 'discharge_psig', 'discharge_temp_f'])
                      WITH ORDINALITY AS u(c, i)
             ORDER BY s, i)
    || ARRAY['suction_temp_f', 'flow_mmscfd', 'speed_rpm', 'oil_pressure_psig', 'oil_temp_f',
             'oil_filter_dp_psid', 'bearing_temp_max_f', 'bearing_temp_min_f']
    || CASE WHEN driver IS NOT NULL THEN ARRAY['jacket_water_temp_f'] ELSE ARRAY[]::text[] END
    || ARRAY['ambient_temp_f']
WHERE channels IS NULL;

-- 'channels': the worst carried channel's missing share; 'sensor_offline': carried channels
-- with no value in any reading while the unit ran. Existing rows hold the older four types,
-- which the new list keeps, so the check is added without a scan and validated after.
ALTER TABLE data_quality_checks DROP CONSTRAINT data_quality_checks_check_type_check;
ALTER TABLE data_quality_checks ADD CONSTRAINT data_quality_checks_check_type_check
    CHECK (check_type IN ('freshness', 'completeness', 'consistency', 'accuracy', 'channels',
                          'sensor_offline')) NOT VALID;
ALTER TABLE data_quality_checks VALIDATE CONSTRAINT data_quality_checks_check_type_check;
