"""The embedded default: a recording of a real Home Assistant, collected into the lake."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from pathlib import Path

import duckdb

from ha_ingestor_live.collector import Collector, CollectorSettings

from .replay_server import Recording, ReplayServer, bundled_capture

log = logging.getLogger(__name__)


async def run_demo(settings: CollectorSettings, *, speed: float, capture: Path | None = None) -> int:
    recording = Recording.load(capture or bundled_capture())
    if recording.events:  # replay as if it were happening now, so every run is new data for today
        first = dt.datetime.fromisoformat(recording.events[0][1]["time_fired"])
        recording = recording.shifted(round((dt.datetime.now(dt.UTC) - first).total_seconds()))
    duration = recording.events[-1][0] / speed if recording.events else 0
    log.info(
        "replaying %d recorded events of a real Home Assistant %s at %gx (%.0f s)",
        len(recording.events),
        recording.ha_version,
        speed,
        duration,
    )
    async with ReplayServer(recording, token=settings.token, speed=speed) as server:
        collector = Collector(dataclasses.replace(settings, ha_url=server.url, backfill_delay_s=0.5))
        task = asyncio.create_task(collector.run())
        stop = asyncio.create_task(server.finished.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.sleep(1.0)
            collector.request_stop()
        await task
    print(summary(settings.lake))
    return 0


async def collect_recording(lake: Path, state_dir: Path, *, speed: float = 40.0, token: str = "replay") -> None:
    """Collect the whole bundled recording into ``lake`` with the real collector, then stop (test and
    benchmark lakes)."""
    async with ReplayServer(Recording.load(bundled_capture()), token=token, speed=speed) as server:
        collector = Collector(
            CollectorSettings(
                ha_url=server.url,
                token=token,
                lake=lake,
                state_dir=state_dir,
                metrics_port=None,
                backfill_delay_s=0.1,
                flush_interval_s=2.0,
            )
        )
        task = asyncio.create_task(collector.run())
        await asyncio.wait_for(server.finished.wait(), 120)
        while not collector.sink.caught_up():
            await asyncio.sleep(0.05)
        collector.request_stop()
        await task


def summary(lake: Path) -> str:
    """What landed, queried the way a user would: DuckDB over the hive-partitioned Parquet."""
    con = duckdb.connect()
    lines = [f"\nLake at {lake.resolve()}:"]
    for table in ("events", "states", "quarantine", "collector_sessions"):
        files = list((lake / table).rglob("*.parquet"))
        count = (
            con.execute(
                f"SELECT count(*) FROM read_parquet('{lake}/{table}/**/*.parquet', hive_partitioning=true)"
            ).fetchone()[0]
            if files
            else 0
        )
        lines.append(f"  {table:<18} {count:>8} rows in {len(files)} files")
    registry = sorted(p.name for p in (lake / "registry").iterdir()) if (lake / "registry").exists() else []
    lines.append(f"  {'registry':<18} {', '.join(registry)}")
    if list((lake / "states").rglob("*.parquet")):
        lines.append("\nState rows by source:")
        for source, n in con.execute(
            f"SELECT source, count(*) FROM read_parquet('{lake}/states/**/*.parquet', "
            "hive_partitioning=true) GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall():
            lines.append(f"  {source:<10} {n:>8}")
        lines.append("\nQuery it with DuckDB:")
        lines.append(
            f"  SELECT entity_id, count(*) FROM read_parquet('{lake}/states/**/*.parquet', "
            "hive_partitioning=true) GROUP BY 1 ORDER BY 2 DESC LIMIT 10;"
        )
    return "\n".join(lines)


async def serve_recording(capture: Path | None, token: str, speed: float, port: int) -> int:
    recording = Recording.load(capture or bundled_capture())
    async with ReplayServer(recording, token=token, speed=speed, port=port) as server:
        print(f"serving {len(recording.events)} recorded events on {server.url} (token {token!r})", flush=True)
        await asyncio.Event().wait()
    return 0
