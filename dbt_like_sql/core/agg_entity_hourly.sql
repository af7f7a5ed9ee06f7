-- Per entity and UTC hour: how many state rows and state changes arrived, and statistics of the
-- numeric value over the hour the way Home Assistant's long-term statistics see a sensor: a value
-- holds until the next change (core.state_segments), so min_value / max_value cover every value
-- the entity had during the hour (including the one carried in from before) and
-- time_weighted_mean weighs each by how long it held, over numeric_seconds (time spent numeric).
-- sample_mean is the plain mean of the numeric changes that arrived in the hour. An hour without
-- a change still has a row while the entity holds a value.
WITH pieces AS (
    SELECT
        home,
        entity_id,
        state,
        value_num,
        started_at,
        ended_at,
        unnest(generate_series(date_trunc('hour', started_at), ended_at, INTERVAL 1 HOUR)) AS hour
    FROM core.state_segments
),

timed AS (
    SELECT
        *,
        date_diff('microsecond', greatest(started_at, hour), least(ended_at, hour + INTERVAL 1 HOUR)) / 1e6 AS seconds
    FROM pieces
),

over_time AS (
    SELECT
        home,
        entity_id,
        hour,
        sum(seconds ORDER BY started_at) AS observed_seconds,
        sum(seconds ORDER BY started_at) FILTER (WHERE value_num IS NOT NULL) AS numeric_seconds,
        sum(seconds ORDER BY started_at) FILTER (WHERE state = 'unavailable') AS unavailable_seconds,
        min(value_num) AS min_value,
        max(value_num) AS max_value,
        sum(value_num * seconds ORDER BY started_at) FILTER (WHERE value_num IS NOT NULL)
            / sum(seconds ORDER BY started_at) FILTER (WHERE value_num IS NOT NULL) AS time_weighted_mean
    FROM timed
    WHERE seconds > 0
    GROUP BY home, entity_id, hour
),

changes AS (
    SELECT
        home,
        entity_id,
        date_trunc('hour', changed_at) AS hour,
        count(*) AS changes,
        count(state_num) AS numeric_changes,
        avg(state_num ORDER BY last_updated) AS sample_mean
    FROM core.fct_state_changes
    GROUP BY ALL
),

updates AS (
    SELECT home, entity_id, date_trunc('hour', last_updated) AS hour, count(*) AS updates
    FROM states
    GROUP BY ALL
)

SELECT
    home,
    entity_id,
    hour,
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
FULL OUTER JOIN changes AS c USING (home, entity_id, hour)
FULL OUTER JOIN updates AS u USING (home, entity_id, hour)
ORDER BY home, entity_id, hour
