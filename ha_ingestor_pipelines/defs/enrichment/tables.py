"""The registry dimensions as the enrichment reads them back."""

from __future__ import annotations

import polars as pl

from ..common.lake_resource import LakeResource
from .logic import RegistryDims
from .registry_history import DIMENSIONS, dimension_schema


def load_dimensions(lake: LakeResource) -> RegistryDims:
    """The six registry dimensions as ``registry_dimensions`` wrote them (empty where none exist yet)."""
    frames = {}
    for kind, spec in DIMENSIONS.items():
        frame = lake.scan_derived(spec.table)
        frames[kind] = frame if frame is not None else pl.LazyFrame(schema=dimension_schema(spec))
    return RegistryDims(**frames)
