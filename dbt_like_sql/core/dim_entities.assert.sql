-- @assert: one_row_per_entity
SELECT home, entity_id, count(*) AS copies
FROM core.dim_entities
GROUP BY home, entity_id
HAVING count(*) > 1

-- @assert: every_state_entity_known
-- The dimension covers every entity the facts mention.
SELECT DISTINCT s.home, s.entity_id
FROM states AS s
ANTI JOIN core.dim_entities AS d
    ON d.home = s.home AND d.entity_id = s.entity_id
