"""A real lake for pipeline tests: the real collector run once against the bundled recording."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
import time_machine

from ha_ingestor.demo import collect_recording
from ha_ingestor.replay_server import Recording, bundled_capture

from .lake_tables import load_tables


def recording_start() -> dt.datetime:
    """When the bundled recording's first event fired (HA's clock)."""
    first = Recording.load(bundled_capture()).events[0][1]["time_fired"]
    return dt.datetime.fromisoformat(first)


def collect_at(lake: Path, state: Path, collector_clock: dt.datetime) -> None:
    """Collect the bundled recording with the collector's wall clock (receive times, snapshot times, session
    records) starting at ``collector_clock``, so the lake is the same whatever day the suite runs on."""
    with time_machine.travel(collector_clock, tick=True):
        asyncio.run(collect_recording(lake, state))


@pytest.fixture(scope="session")
def fixture_lake(tmp_path_factory) -> Path:
    """Lake root holding events, states, registry snapshots of the recorded Maple House, collected as if live
    while it was recorded, and loaded into the raw Delta tables (``<lake>/tables``) (read-only: copy it with
    shutil.copytree if a test writes derived tables into it)."""
    root = tmp_path_factory.mktemp("fixture_lake")
    collect_at(root / "lake", root / "state", recording_start())
    load_tables(root / "lake")
    return root / "lake"
