-- One row per state change: the rows of `states` whose state differs from the entity's previous
-- row (attribute-only updates are left out), with the previous state and how long it lasted.
-- An entity's first row in the lake is a change from nothing (previous_state NULL); a removal
-- (state NULL, e.g. the old entity_id after a rename) is a change to nothing. changed_at is HA's
-- last_changed: for a connect snapshot it is when the state really began, before the collector saw it.
WITH ordered AS (
    SELECT
        *,
        lag(state) OVER by_time AS state_before,
        row_number() OVER by_time AS row_in_entity
    FROM states
    WINDOW by_time AS (PARTITION BY home, entity_id ORDER BY last_updated)
),

changes AS (
    SELECT *
    FROM ordered
    WHERE row_in_entity = 1 OR state IS DISTINCT FROM state_before
)

SELECT
    home,
    entity_id,
    domain,
    coalesce(last_changed, last_updated) AS changed_at,
    last_updated,
    state,
    state_num,
    lag(state) OVER by_time AS previous_state,
    lag(state_num) OVER by_time AS previous_state_num,
    lag(coalesce(last_changed, last_updated)) OVER by_time AS previous_changed_at,
    date_diff('microsecond', previous_changed_at, changed_at) / 1e6 AS seconds_in_previous_state,
    state IS NULL AS is_removal,
    context_id,
    context_parent_id,
    context_user_id,
    source,
    event_id
FROM changes
WINDOW by_time AS (PARTITION BY home, entity_id ORDER BY last_updated)
ORDER BY home, entity_id, last_updated
