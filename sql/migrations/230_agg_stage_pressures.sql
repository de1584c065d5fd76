-- 230: the per-stage suction and discharge pressures become aggregated metrics, appended to
-- agg_metric_names() after the stage ratios (the order of altaviz.core.telemetry.METRICS).
--
-- The rules judge a stage through its pressure ratio, computed per reading from the two
-- pressures; a transmitter frozen on one value leaves the ratio moving with the other
-- pressure, so the frozen one was invisible in the aggregates. With each pressure's own
-- statistics, its 4-hour standard deviation is exactly zero while it is frozen: the ratio
-- rules then have no expectation and a stuck-sensor notice goes to the technician.
--
-- Rows written before this migration have 24-element arrays; the new positions read as NULL
-- there (no aggregate of that metric in that hour), so no row needs rewriting (see 070).

CREATE OR REPLACE FUNCTION agg_metric_names() RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ARRAY[
    'vibration_frame_mm_s',
    'vibration_cylinder_mm_s',
    'vibration_skid_mm_s',
    'stage1_discharge_temp_f',
    'stage2_discharge_temp_f',
    'stage3_discharge_temp_f',
    'stage4_discharge_temp_f',
    'suction_temp_f',
    'flow_mmscfd',
    'speed_rpm',
    'oil_pressure_psig',
    'oil_temp_f',
    'oil_filter_dp_psid',
    'bearing_temp_max_f',
    'bearing_temp_min_f',
    'jacket_water_temp_f',
    'ambient_temp_f',
    'discharge_temp_max_f',
    'avg_suction_discharge_temp_f',
    'bearing_spread_f',
    'stage1_ratio',
    'stage2_ratio',
    'stage3_ratio',
    'stage4_ratio',
    'stage1_suction_psig',
    'stage1_discharge_psig',
    'stage2_suction_psig',
    'stage2_discharge_psig',
    'stage3_suction_psig',
    'stage3_discharge_psig',
    'stage4_suction_psig',
    'stage4_discharge_psig'
    ]::text[]
$$;
