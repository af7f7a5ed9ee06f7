-- @assert: one_row_per_home
SELECT home, count(*) AS copies
FROM core.dim_homes
GROUP BY home
HAVING count(*) > 1

-- @assert: known_time_zone
-- Local days need a time zone DuckDB knows (a typo in HA's configuration would shift every day).
SELECT home, time_zone
FROM core.dim_homes
WHERE time_zone NOT IN (SELECT name FROM pg_timezone_names())
