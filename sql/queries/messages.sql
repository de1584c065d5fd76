-- Queries of the notification messages (altaviz.core.messages).

-- name: running_trend
-- Hourly means of a metric over the hours the unit ran throughout (its slowest speed in the
-- hour at least running_share of rated): a stopping unit's last hour is not part of a trend.
SELECT a.hour, a.mean
FROM sensor_readings_agg a
JOIN compressors c ON c.org_id = a.org_id AND c.compressor_id = a.compressor_id
JOIN sensor_readings_agg s ON s.org_id = a.org_id AND s.compressor_id = a.compressor_id
                          AND s.hour = a.hour AND s.metric = 'speed_rpm'
WHERE a.compressor_id = %(compressor_id)s AND a.metric = %(metric)s
  AND a.hour <= %(until)s AND a.hour > %(until)s - make_interval(hours => %(hours)s)
  AND s.min >= %(running_share)s * c.rated_rpm
ORDER BY a.hour
