"""A real lake for pipeline tests: the real collector run once against the bundled recording."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ha_ingestor_live.demo import collect_recording


@pytest.fixture(scope="session")
def fixture_lake(tmp_path_factory) -> Path:
    """Lake root holding events, states, registry snapshots of the recorded Maple House (read-only: copy it
    with shutil.copytree if a test writes derived tables into it)."""
    root = tmp_path_factory.mktemp("fixture_lake")
    asyncio.run(collect_recording(root / "lake", root / "state"))
    return root / "lake"
