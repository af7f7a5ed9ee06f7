"""A real lake for pipeline tests: the real collector run once against the bundled recording."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ha_ingestor_live.collector import Collector, CollectorSettings
from ha_ingestor_live.replay_server import Recording, ReplayServer, bundled_capture

TOKEN = "pipeline-tests"


async def _collect(lake: Path, state: Path) -> None:
    async with ReplayServer(Recording.load(bundled_capture()), token=TOKEN, speed=40) as server:
        collector = Collector(CollectorSettings(ha_url=server.url, token=TOKEN, lake=lake, state_dir=state,
                                                metrics_port=None, backfill_delay_s=0.1, flush_interval_s=2.0))
        task = asyncio.create_task(collector.run())
        await asyncio.wait_for(server.finished.wait(), 120)
        while not collector.sink.caught_up():
            await asyncio.sleep(0.05)
        collector.request_stop()
        await task


@pytest.fixture(scope="session")
def fixture_lake(tmp_path_factory) -> Path:
    """Lake root holding events, states, registry snapshots of the recorded Maple House (read-only: copy it
    with shutil.copytree if a test writes derived tables into it)."""
    root = tmp_path_factory.mktemp("fixture_lake")
    asyncio.run(_collect(root / "lake", root / "state"))
    return root / "lake"
