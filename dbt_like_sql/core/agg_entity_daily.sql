-- Per entity and local day (the home's time zone, from core.dim_homes, so a day is 23 or 25 hours
-- long when daylight saving time starts or ends): the same figures as core.agg_entity_hourly,
-- computed from the state segments cut at local midnights rather than summed from UTC hours, so
-- they are exact in every time zone.
WITH segments AS (
    SELECT s.*, coalesce(h.time_zone, 'UTC') AS time_zone
    FROM core.state_segments AS s
    LEFT JOIN core.dim_homes AS h USING (home)
),

pieces AS (
    SELECT
        *,
        CAST(unnest(generate_series(
            CAST(timezone(time_zone, started_at) AS DATE),
            CAST(timezone(time_zone, ended_at) AS DATE),
            INTERVAL 1 DAY
        )) AS DATE) AS day
    FROM segments
),

timed AS (
    SELECT
        *,
        date_diff(
            'microsecond',
            greatest(started_at, timezone(time_zone, CAST(day AS TIMESTAMP))),
            least(ended_at, timezone(time_zone, CAST(day + 1 AS TIMESTAMP)))
        ) / 1e6 AS seconds
    FROM pieces
),

over_time AS (
    SELECT
        home,
        entity_id,
        day,
        sum(seconds ORDER BY started_at) AS observed_seconds,
        sum(seconds ORDER BY started_at) FILTER (WHERE value_num IS NOT NULL) AS numeric_seconds,
        sum(seconds ORDER BY started_at) FILTER (WHERE state = 'unavailable') AS unavailable_seconds,
        min(value_num) AS min_value,
        max(value_num) AS max_value,
        sum(value_num * seconds ORDER BY started_at) FILTER (WHERE value_num IS NOT NULL)
            / sum(seconds ORDER BY started_at) FILTER (WHERE value_num IS NOT NULL) AS time_weighted_mean
    FROM timed
    WHERE seconds > 0
    GROUP BY home, entity_id, day
),

homes AS (
    SELECT home, time_zone FROM core.dim_homes
),

changes AS (
    SELECT
        c.home,
        c.entity_id,
        CAST(timezone(coalesce(h.time_zone, 'UTC'), c.changed_at) AS DATE) AS day,
        count(*) AS changes,
        count(c.state_num) AS numeric_changes,
        avg(c.state_num ORDER BY c.last_updated) AS sample_mean
    FROM core.fct_state_changes AS c
    LEFT JOIN homes AS h USING (home)
    GROUP BY ALL
),

updates AS (
    SELECT
        s.home,
        s.entity_id,
        CAST(timezone(coalesce(h.time_zone, 'UTC'), s.last_updated) AS DATE) AS day,
        count(*) AS updates
    FROM states AS s
    LEFT JOIN homes AS h USING (home)
    GROUP BY ALL
)

SELECT
    home,
    entity_id,
    day,
    coalesce(h.time_zone, 'UTC') AS time_zone,
    coalesce(u.updates, 0) AS updates,
    coalesce(c.changes, 0) AS changes,
    coalesce(c.numeric_changes, 0) AS numeric_changes,
    c.sample_mean,
    t.min_value,
    t.max_value,
    t.time_weighted_mean,
    coalesce(t.numeric_seconds, 0) AS numeric_seconds,
    coalesce(t.unavailable_seconds, 0) AS unavailable_seconds,
    coalesce(t.observed_seconds, 0) AS observed_seconds
FROM over_time AS t
FULL OUTER JOIN changes AS c USING (home, entity_id, day)
FULL OUTER JOIN updates AS u USING (home, entity_id, day)
LEFT JOIN homes AS h USING (home)
ORDER BY home, entity_id, day
