-- @assert: one_row_per_meter_day
SELECT home, entity_id, day, count(*) AS copies
FROM energy.energy_daily
GROUP BY home, entity_id, day
HAVING count(*) > 1

-- @assert: no_negative_energy
-- Resets and dips never count as negative energy; a negative reading from a meter does.
SELECT home, entity_id, day, energy_kwh, first_reading_kwh, last_reading_kwh
FROM energy.energy_daily
WHERE energy_kwh < 0
