-- 021: key sensor_readings_agg hour-major: (org_id, hour, compressor_id, metric).
--
-- With the old key (org_id, compressor_id, metric, hour) every new hour's rows were inserted
-- at one B-tree leaf per (compressor, metric): the hourly run for 4,500 compressors touched
-- ~100,000 leaf pages scattered over the whole index, each written to the WAL in full after
-- a checkpoint. Hour-major, a new hour appends to the right edge of the index. The key also
-- serves every (org_id, hour range) scan (rules, the ETL's existence probe), so the separate
-- (org_id, hour) index is redundant and one fewer index to maintain on every insert.
-- ON CONFLICT (org_id, compressor_id, metric, hour) still infers this key (same columns).
ALTER TABLE sensor_readings_agg DROP CONSTRAINT sensor_readings_agg_pkey;
ALTER TABLE sensor_readings_agg ADD PRIMARY KEY (org_id, hour, compressor_id, metric);
DROP INDEX sensor_readings_agg_hour_idx;
