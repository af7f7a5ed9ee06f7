-- @assert: one_row_per_entity_hour
SELECT home, entity_id, hour, count(*) AS copies
FROM core.agg_entity_hourly
GROUP BY home, entity_id, hour
HAVING count(*) > 1

-- @assert: seconds_fit_in_the_hour
SELECT home, entity_id, hour, observed_seconds, numeric_seconds, unavailable_seconds
FROM core.agg_entity_hourly
WHERE observed_seconds > 3600 + 1e-6
   OR numeric_seconds > observed_seconds + 1e-6
   OR unavailable_seconds > observed_seconds + 1e-6

-- @assert: mean_between_min_and_max
SELECT home, entity_id, hour, min_value, time_weighted_mean, max_value
FROM core.agg_entity_hourly
WHERE time_weighted_mean < min_value - 1e-9 * greatest(abs(min_value), 1)
   OR time_weighted_mean > max_value + 1e-9 * greatest(abs(max_value), 1)
