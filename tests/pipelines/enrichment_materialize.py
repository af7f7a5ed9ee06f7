"""Materialising the enrichment assets on a test lake (shared by the enrichment and graph tests)."""

from pathlib import Path

import dagster as dg

from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.enrichment.assets import enriched_states, peak_hours_by_day, registry_dimensions
from ha_ingestor_pipelines.defs.quality.assets import validation


def materialize_enrichment(root: Path, day: str) -> dg.ExecuteInProcessResult:
    """Validation (the input), the registry dimensions, then the day's enriched states and peak hours."""
    resources = {"lake": LakeResource(root=str(root))}
    assert dg.materialize([validation], resources=resources, partition_key=day).success
    assert dg.materialize([registry_dimensions], resources=resources).success
    result = dg.materialize([enriched_states, peak_hours_by_day], resources=resources, partition_key=day)
    assert result.success
    return result
