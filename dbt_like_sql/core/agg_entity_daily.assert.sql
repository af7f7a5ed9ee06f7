-- @assert: one_row_per_entity_day
SELECT home, entity_id, day, count(*) AS copies
FROM core.agg_entity_daily
GROUP BY home, entity_id, day
HAVING count(*) > 1

-- @assert: seconds_fit_in_the_day
-- 25 hours: the day daylight saving time ends.
SELECT home, entity_id, day, observed_seconds, numeric_seconds
FROM core.agg_entity_daily
WHERE observed_seconds > 25 * 3600 + 1e-6
   OR numeric_seconds > observed_seconds + 1e-6

-- @assert: mean_between_min_and_max
SELECT home, entity_id, day, min_value, time_weighted_mean, max_value
FROM core.agg_entity_daily
WHERE time_weighted_mean < min_value - 1e-9 * greatest(abs(min_value), 1)
   OR time_weighted_mean > max_value + 1e-9 * greatest(abs(max_value), 1)
