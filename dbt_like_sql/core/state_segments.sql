-- The time each entity spent in each state: from one change (core.fct_state_changes) to the next.
-- The last state of an entity stays open until the home's horizon, the latest event or state time
-- in the lake, so an entity that stopped changing still counts for the hours it kept its value.
-- value_num is the state as a number, NULL for non-numeric states (on, unavailable, unknown...).
WITH horizon AS (
    SELECT home, max(seen_at) AS horizon
    FROM (
        SELECT home, time_fired AS seen_at FROM events
        UNION ALL
        SELECT home, last_updated AS seen_at FROM states
    )
    GROUP BY home
)

SELECT
    c.home,
    c.entity_id,
    c.domain,
    c.state,
    c.state_num AS value_num,
    c.changed_at AS started_at,
    greatest(coalesce(lead(c.changed_at) OVER by_time, h.horizon), c.changed_at) AS ended_at,
    lead(c.changed_at) OVER by_time IS NULL AS is_open,
    date_diff('microsecond', started_at, ended_at) / 1e6 AS seconds
FROM core.fct_state_changes AS c
JOIN horizon AS h USING (home)
WINDOW by_time AS (PARTITION BY c.home, c.entity_id ORDER BY c.last_updated)
ORDER BY c.home, c.entity_id, started_at
