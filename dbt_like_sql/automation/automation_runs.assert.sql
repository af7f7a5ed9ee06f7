-- @assert: one_row_per_run
SELECT event_id, count(*) AS copies
FROM automation.automation_runs
GROUP BY event_id
HAVING count(*) > 1

-- @assert: every_trigger_has_a_run
-- Each automation_triggered event in the lake is a run.
SELECT e.home, e.event_id, e.time_fired, e.entity_id
FROM events AS e
ANTI JOIN automation.automation_runs AS r
    ON r.event_id = e.event_id
WHERE e.event_type = 'automation_triggered'
