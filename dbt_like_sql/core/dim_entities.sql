-- One row per entity a home has or had. Registry facts come from the latest entity registry
-- snapshot joined with the latest device, area and floor snapshots (an entity's own area wins over
-- its device's, as in Home Assistant). Entities that only appear in `states` (no unique id, or
-- renamed or removed since) are kept too, with in_registry = false. `name` is what HA displays:
-- the latest friendly_name, else the registry's name, else the integration's original name, else
-- (for an entity that takes its device's name) the device's name, else the entity_id.
WITH entities AS (
    SELECT home, item_id AS entity_id, data
    FROM registry.entities
    QUALIFY dense_rank() OVER (PARTITION BY home ORDER BY snapshot_at DESC, snapshot_seq DESC) = 1
),

devices AS (
    SELECT home, item_id AS device_id, data
    FROM registry.devices
    QUALIFY dense_rank() OVER (PARTITION BY home ORDER BY snapshot_at DESC, snapshot_seq DESC) = 1
),

areas AS (
    SELECT home, item_id AS area_id, data
    FROM registry.areas
    QUALIFY dense_rank() OVER (PARTITION BY home ORDER BY snapshot_at DESC, snapshot_seq DESC) = 1
),

floors AS (
    SELECT home, item_id AS floor_id, data
    FROM registry.floors
    QUALIFY dense_rank() OVER (PARTITION BY home ORDER BY snapshot_at DESC, snapshot_seq DESC) = 1
),

latest_states AS (
    SELECT
        home,
        entity_id,
        state,
        last_updated,
        json_extract_string(attributes, '$.friendly_name') AS friendly_name,
        json_extract_string(attributes, '$.unit_of_measurement') AS unit_of_measurement,
        json_extract_string(attributes, '$.device_class') AS device_class,
        json_extract_string(attributes, '$.state_class') AS state_class
    FROM states
    QUALIFY row_number() OVER (PARTITION BY home, entity_id ORDER BY last_updated DESC) = 1
),

registered AS (
    SELECT
        e.home,
        e.entity_id,
        json_extract_string(e.data, '$.id') AS registry_id,
        json_extract_string(e.data, '$.unique_id') AS unique_id,
        json_extract_string(e.data, '$.name') AS registry_name,
        json_extract_string(e.data, '$.original_name') AS original_name,
        coalesce(TRY_CAST(json_extract(e.data, '$.has_entity_name') AS BOOLEAN), false) AS has_entity_name,
        json_extract_string(e.data, '$.platform') AS platform,
        json_extract_string(e.data, '$.entity_category') AS entity_category,
        json_extract_string(e.data, '$.disabled_by') AS disabled_by,
        json_extract_string(e.data, '$.hidden_by') AS hidden_by,
        list_sort(CAST(json_extract(e.data, '$.labels') AS VARCHAR[])) AS labels,
        d.device_id,
        coalesce(json_extract_string(d.data, '$.name_by_user'), json_extract_string(d.data, '$.name')) AS device_name,
        json_extract_string(d.data, '$.manufacturer') AS manufacturer,
        json_extract_string(d.data, '$.model') AS model,
        coalesce(json_extract_string(e.data, '$.area_id'), json_extract_string(d.data, '$.area_id')) AS area_id
    FROM entities AS e
    LEFT JOIN devices AS d
        ON d.home = e.home AND d.device_id = json_extract_string(e.data, '$.device_id')
)

SELECT
    coalesce(r.home, s.home) AS home,
    coalesce(r.entity_id, s.entity_id) AS entity_id,
    split_part(coalesce(r.entity_id, s.entity_id), '.', 1) AS domain,
    coalesce(
        s.friendly_name,
        r.registry_name,
        r.original_name,
        CASE WHEN r.has_entity_name THEN r.device_name END,
        coalesce(r.entity_id, s.entity_id)
    ) AS name,
    r.registry_id,
    r.unique_id,
    r.platform,
    r.device_id,
    r.device_name,
    r.manufacturer,
    r.model,
    r.area_id,
    json_extract_string(a.data, '$.name') AS area_name,
    json_extract_string(a.data, '$.floor_id') AS floor_id,
    json_extract_string(f.data, '$.name') AS floor_name,
    coalesce(r.labels, []) AS labels,
    r.entity_category,
    r.disabled_by,
    r.hidden_by,
    s.unit_of_measurement,
    s.device_class,
    s.state_class,
    r.entity_id IS NOT NULL AS in_registry,
    s.state AS last_state,
    s.last_updated AS last_seen_at,
    s.entity_id IS NOT NULL AND s.state IS NULL AS is_removed
FROM registered AS r
FULL OUTER JOIN latest_states AS s
    ON s.home = r.home AND s.entity_id = r.entity_id
LEFT JOIN areas AS a
    ON a.home = coalesce(r.home, s.home) AND a.area_id = r.area_id
LEFT JOIN floors AS f
    ON f.home = coalesce(r.home, s.home) AND f.floor_id = json_extract_string(a.data, '$.floor_id')
ORDER BY home, entity_id
