-- One row per home: its name, time zone, units and Home Assistant version from the latest core
-- configuration snapshot (registry.core_config). Every home that has events or states gets a row;
-- one without a configuration snapshot falls back to UTC. The time zone turns UTC timestamps into
-- the home's local days (core.agg_entity_daily, energy.energy_daily).
WITH homes AS (
    SELECT DISTINCT home FROM states
    UNION
    SELECT DISTINCT home FROM events
    UNION
    SELECT DISTINCT home FROM registry.core_config
),

latest_config AS (
    SELECT home, snapshot_at, data
    FROM registry.core_config
    QUALIFY row_number() OVER (PARTITION BY home ORDER BY snapshot_at DESC, snapshot_seq DESC) = 1
)

SELECT
    homes.home,
    json_extract_string(c.data, '$.location_name') AS location_name,
    coalesce(json_extract_string(c.data, '$.time_zone'), 'UTC') AS time_zone,
    json_extract_string(c.data, '$.country') AS country,
    json_extract_string(c.data, '$.currency') AS currency,
    json_extract_string(c.data, '$.unit_system.temperature') AS temperature_unit,
    TRY_CAST(json_extract(c.data, '$.latitude') AS DOUBLE) AS latitude,
    TRY_CAST(json_extract(c.data, '$.longitude') AS DOUBLE) AS longitude,
    json_extract_string(c.data, '$.version') AS ha_version,
    c.snapshot_at AS config_snapshot_at
FROM homes
LEFT JOIN latest_config AS c USING (home)
ORDER BY homes.home
