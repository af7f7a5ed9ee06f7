-- Energy per home, meter and local day (the home's time zone), in kWh, from the sensors Home
-- Assistant's energy dashboard reads: device_class energy, state_class total_increasing.
-- Meter resets: a reading below 90% of the previous one (Home Assistant's rule) means the meter
-- started again from zero, so the new reading is the energy used since the reset, never a negative
-- amount. A smaller dip is noise: nothing counts until the meter is above its highest reading again.
-- Each reading is converted to kWh from its own unit (Wh, kWh, MWh, GWh, MJ, GJ), so a unit change
-- mid-stream does not mix scales; readings in other units are left out. The energy used between two
-- readings is booked on the local day of the later one.
WITH readings AS (
    SELECT
        home,
        entity_id,
        last_updated AS read_at,
        state_num * CASE json_extract_string(attributes, '$.unit_of_measurement')
            WHEN 'Wh' THEN 0.001
            WHEN 'kWh' THEN 1.0
            WHEN 'MWh' THEN 1000.0
            WHEN 'GWh' THEN 1000000.0
            WHEN 'MJ' THEN 1.0 / 3.6
            WHEN 'GJ' THEN 1000.0 / 3.6
        END AS reading_kwh
    FROM states
    WHERE state_num IS NOT NULL
      AND json_extract_string(attributes, '$.device_class') = 'energy'
      AND json_extract_string(attributes, '$.state_class') = 'total_increasing'
),

flagged AS (
    SELECT
        *,
        lag(reading_kwh) OVER by_time AS previous_kwh,
        coalesce(reading_kwh < 0.9 * lag(reading_kwh) OVER by_time, false) AS is_reset
    FROM readings
    WHERE reading_kwh IS NOT NULL
    WINDOW by_time AS (PARTITION BY home, entity_id ORDER BY read_at)
),

cycles AS (
    SELECT
        *,
        sum(CAST(is_reset AS INTEGER)) OVER (
            PARTITION BY home, entity_id ORDER BY read_at ROWS UNBOUNDED PRECEDING
        ) AS cycle
    FROM flagged
),

used AS (
    SELECT
        *,
        CASE
            WHEN is_reset THEN reading_kwh
            WHEN previous_kwh IS NULL THEN 0.0
            ELSE greatest(reading_kwh - max(reading_kwh) OVER (
                PARTITION BY home, entity_id, cycle ORDER BY read_at
                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
            ), 0.0)
        END AS energy_kwh
    FROM cycles
)

SELECT
    u.home,
    u.entity_id,
    CAST(timezone(coalesce(h.time_zone, 'UTC'), u.read_at) AS DATE) AS day,
    coalesce(h.time_zone, 'UTC') AS time_zone,
    sum(u.energy_kwh ORDER BY u.read_at) AS energy_kwh,
    count(*) AS readings,
    count(*) FILTER (WHERE u.is_reset) AS resets,
    arg_min(u.reading_kwh, u.read_at) AS first_reading_kwh,
    arg_max(u.reading_kwh, u.read_at) AS last_reading_kwh
FROM used AS u
LEFT JOIN core.dim_homes AS h USING (home)
GROUP BY ALL
ORDER BY u.home, u.entity_id, day
