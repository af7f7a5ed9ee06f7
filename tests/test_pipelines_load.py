from __future__ import annotations

import dagster as dg

from ha_ingestor_lake.schema import STATES, table_schema
from ha_ingestor_pipelines.definitions import defs


def test_definitions_load_with_the_lake_contract():
    definitions = defs()
    specs = {spec.key: spec for spec in definitions.resolve_all_asset_specs()}
    assert set(specs) >= {
        dg.AssetKey(["lake", t]) for t in ("events", "states", "registry", "quarantine", "collector_sessions")
    }
    columns = specs[dg.AssetKey(["lake", "states"])].metadata["dagster/column_schema"].columns
    assert [c.name for c in columns] == table_schema("states").names
    landing = specs[dg.AssetKey(["landing", "states"])].metadata["dagster/column_schema"].columns
    assert [c.name for c in landing] == STATES.names
