-- @assert: one_row_per_state
-- A state is identified by (home, entity_id, last_updated); the lake holds each once.
SELECT home, entity_id, last_updated, count(*) AS copies
FROM core.fct_state_changes
GROUP BY home, entity_id, last_updated
HAVING count(*) > 1

-- @assert: changed_not_after_updated
-- Home Assistant never moves last_changed past last_updated.
SELECT home, entity_id, changed_at, last_updated
FROM core.fct_state_changes
WHERE changed_at > last_updated

-- @assert: changes_in_time_order
-- A state cannot begin before the one it replaced.
SELECT home, entity_id, previous_changed_at, changed_at
FROM core.fct_state_changes
WHERE changed_at < previous_changed_at
