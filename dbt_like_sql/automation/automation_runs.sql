-- One row per automation run (an `automation_triggered` event) with what the run did, found
-- through Home Assistant's context: the run's actions, and the scripts they start, carry the run's
-- context id. updated_entities are the entities whose state the run wrote, changed_entities those
-- whose state it changed (core.fct_state_changes); the automation's own entity (its last_triggered
-- attribute) is left out. A run caused by another run's effects (a chain A -> script -> counter ->
-- B, or a loop such as ping <-> pong) names that run in parent_run_event_id.
WITH runs AS (
    SELECT
        home,
        event_id,
        time_fired AS triggered_at,
        context_id,
        context_parent_id,
        context_user_id,
        coalesce(entity_id, json_extract_string(data, '$.entity_id')) AS automation_entity_id,
        json_extract_string(data, '$.name') AS automation_name,
        json_extract_string(data, '$.source') AS trigger_description
    FROM events
    WHERE event_type = 'automation_triggered'
),

written AS (
    SELECT
        r.event_id,
        count(*) AS state_rows,
        list_sort(list_distinct(list(s.entity_id))) AS updated_entities
    FROM runs AS r
    JOIN states AS s
        ON s.home = r.home AND s.context_id = r.context_id AND s.entity_id <> r.automation_entity_id
    GROUP BY r.event_id
),

changed AS (
    SELECT
        r.event_id,
        count(*) AS state_changes,
        list_sort(list_distinct(list(c.entity_id))) AS changed_entities
    FROM runs AS r
    JOIN core.fct_state_changes AS c
        ON c.home = r.home AND c.context_id = r.context_id AND c.entity_id <> r.automation_entity_id
    GROUP BY r.event_id
),

effects AS (
    SELECT
        r.event_id,
        count(*) FILTER (WHERE e.event_type = 'call_service') AS service_calls,
        list_sort(list_distinct(
            list(json_extract_string(e.data, '$.domain') || '.' || json_extract_string(e.data, '$.service'))
                FILTER (WHERE e.event_type = 'call_service')
        )) AS services,
        list_sort(list_distinct(
            list(coalesce(e.entity_id, json_extract_string(e.data, '$.entity_id')))
                FILTER (WHERE e.event_type = 'script_started')
        )) AS scripts_started
    FROM runs AS r
    JOIN events AS e
        ON e.home = r.home AND e.context_id = r.context_id AND e.event_type IN ('call_service', 'script_started')
    GROUP BY r.event_id
)

SELECT
    r.home,
    r.event_id,
    r.triggered_at,
    r.automation_entity_id,
    r.automation_name,
    r.trigger_description,
    r.context_id,
    r.context_parent_id,
    r.context_user_id,
    parent.event_id AS parent_run_event_id,
    parent.automation_entity_id AS parent_automation_entity_id,
    coalesce(w.state_rows, 0) AS state_rows,
    coalesce(c.state_changes, 0) AS state_changes,
    coalesce(w.updated_entities, []) AS updated_entities,
    coalesce(c.changed_entities, []) AS changed_entities,
    coalesce(x.service_calls, 0) AS service_calls,
    coalesce(x.services, []) AS services,
    coalesce(x.scripts_started, []) AS scripts_started
FROM runs AS r
LEFT JOIN runs AS parent
    ON parent.home = r.home AND parent.context_id = r.context_parent_id
LEFT JOIN written AS w ON w.event_id = r.event_id
LEFT JOIN changed AS c ON c.event_id = r.event_id
LEFT JOIN effects AS x ON x.event_id = r.event_id
ORDER BY r.home, r.triggered_at, r.event_id
