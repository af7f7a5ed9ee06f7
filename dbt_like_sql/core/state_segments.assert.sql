-- @assert: segments_do_not_overlap
-- An entity is in one state at a time.
SELECT home, entity_id, started_at, ended_at, next_started_at
FROM (
    SELECT *, lead(started_at) OVER (PARTITION BY home, entity_id ORDER BY started_at, ended_at) AS next_started_at
    FROM core.state_segments
)
WHERE next_started_at < ended_at
