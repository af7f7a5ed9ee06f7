"""The statistics assets against a real Home Assistant 2025.4.4 (tools/realha) holding two years of hourly
statistics, seeded with `recorder/import_statistics`: a temperature (a real sensor's id), an energy meter
whose reading resets while HA's `sum` absorbs it, and a gas meter whose importer copied the reading into `sum`
(so it drops at the reset). All series share a 45-day gap, as if HA had been switched off.

The first run of the hourly asset must import every hour HA holds, consumption must match what each meter
really consumed (never negative), later runs must reproduce the same days exactly, and the 5-minute asset
must hold what HA's short-term table holds.
"""

import asyncio
import datetime as dt
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.statistics.assets import statistics_5minute, statistics_hourly
from ha_ingestor_pipelines.defs.statistics.ha_resource import HomeAssistantResource, HomeAssistantSession

pytestmark = [pytest.mark.realha, pytest.mark.timeout(900)]

REALHA = Path(__file__).resolve().parents[2] / "tools" / "realha"
HOURS = 2 * 365 * 24
GAP = range(300 * 24, 345 * 24)  # hour indexes HA has nothing for
GRID_RESET, GAS_RESET = 12_000, 9_001  # hour indexes at which the meters restart from zero
IMPORT_BATCH = 3_000  # rows per import_statistics message (HA reads at most 4 MiB)


def free_port() -> int:
    for port in range(18150, 18200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18150-18199")


@pytest.fixture(scope="module")
def home_assistant() -> HomeAssistantResource:
    env = {**os.environ, "HA_PORT": str(free_port())}
    paths = subprocess.run(
        ["bash", "-c", f'source "{REALHA}/env.sh" && echo "$HA_VENV" && echo "$HA_TOKEN_FILE"'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not Path(paths[0], "bin", "hass").exists():
        pytest.skip(f"no real Home Assistant venv at {paths[0]} (run tools/realha/install.sh)")
    subprocess.run([str(REALHA / "ha_start.sh"), "--fresh"], env=env, check=True, capture_output=True, timeout=300)
    try:
        token = json.loads(Path(paths[1]).read_text())
        yield HomeAssistantResource(url=token["url"], token=token["token"])
    finally:
        subprocess.run([str(REALHA / "ha_stop.sh")], env=env, check=False, capture_output=True, timeout=120)


def hourly_consumption(i: int) -> float:
    return round(0.15 + 0.05 * (i % 24) + 0.01 * (i % 7), 4)


def seeded(first_hour: dt.datetime) -> dict[str, pl.DataFrame]:
    """The three series as HA will hold them, with what each meter consumed per hour."""
    hours = [i for i in range(HOURS) if i not in GAP]
    starts = [first_hour + dt.timedelta(hours=i) for i in hours]
    used = [hourly_consumption(i) for i in hours]
    total, grid_reading, gas_reading, sums, grid, gas = 0.0, 0.0, 0.0, [], [], []
    for i, amount in zip(hours, used, strict=True):
        total += amount
        grid_reading = amount if i == GRID_RESET else grid_reading + amount
        gas_reading = amount if i == GAS_RESET else gas_reading + amount
        sums.append(round(total, 4))
        grid.append(round(grid_reading, 4))
        gas.append(round(gas_reading, 4))
    temperature = [round(10 + 8 * ((i % 24) / 24) - 5 * ((i // 24 % 365) / 365), 3) for i in hours]
    return {
        "sensor.outside_temperature": pl.DataFrame(
            {
                "start": starts,
                "mean": temperature,
                "min": [t - 0.5 for t in temperature],
                "max": [t + 0.5 for t in temperature],
            }
        ),
        "demo:grid_import": pl.DataFrame({"start": starts, "state": grid, "sum": sums, "used": used}),
        "demo:gas_meter": pl.DataFrame({"start": starts, "state": gas, "sum": gas, "used": used}),
    }


async def seed(home_assistant: HomeAssistantResource, series: dict[str, pl.DataFrame]) -> None:
    units = {"sensor.outside_temperature": "°C", "demo:grid_import": "kWh", "demo:gas_meter": "m³"}
    async with home_assistant.session() as session:
        for statistic_id, frame in series.items():
            has_sum = "sum" in frame.columns
            metadata = {
                "has_mean": not has_sum,
                "has_sum": has_sum,
                "name": statistic_id,
                "source": statistic_id.split(":")[0] if ":" in statistic_id else "recorder",
                "statistic_id": statistic_id,
                "unit_of_measurement": units[statistic_id],
            }
            rows = frame.drop("used", strict=False).with_columns(pl.col("start").dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"))
            for offset in range(0, rows.height, IMPORT_BATCH):
                await session.call(
                    "recorder/import_statistics", metadata=metadata, stats=rows.slice(offset, IMPORT_BATCH).to_dicts()
                )
        await wait_until_imported(session, series)


async def wait_until_imported(session: HomeAssistantSession, series: dict[str, pl.DataFrame]) -> None:
    """HA imports in its recorder thread, in order: the newest hour of each series arriving means all did."""
    deadline = time.monotonic() + 120
    for statistic_id, frame in series.items():
        last = frame["start"].max()
        while True:
            answer = await session.call(
                "recorder/statistics_during_period",
                start_time=last.isoformat(),
                statistic_ids=[statistic_id],
                period="hour",
                types=["state", "mean"],
            )
            if answer.get(statistic_id):
                break
            assert time.monotonic() < deadline, f"HA did not import {statistic_id}"
            await asyncio.sleep(0.5)


async def wait_for_short_term_statistics(home_assistant: HomeAssistantResource, since: dt.datetime) -> None:
    """HA compiles 5-minute statistics of its own sensors every 5 minutes (import_statistics cannot seed them)."""
    deadline = time.monotonic() + 360
    async with home_assistant.session() as session:
        ids = [entry["statistic_id"] for entry in await session.call("recorder/list_statistic_ids")]
        while not await session.call(
            "recorder/statistics_during_period",
            start_time=since.isoformat(),
            statistic_ids=ids,
            period="5minute",
            types=["mean"],
        ):
            assert time.monotonic() < deadline, "HA compiled no 5-minute statistics in 6 minutes"
            await asyncio.sleep(5)


async def ha_answer(home_assistant: HomeAssistantResource, period: str, start: dt.datetime, end: dt.datetime) -> dict:
    """HA's own answer for every statistic id it lists."""
    async with home_assistant.session() as session:
        statistic_ids = [entry["statistic_id"] for entry in await session.call("recorder/list_statistic_ids")]
        return await session.call(
            "recorder/statistics_during_period",
            start_time=start.isoformat(),
            end_time=end.isoformat(),
            statistic_ids=statistic_ids,
            period=period,
            types=["mean", "sum"],
        )


def run_metadata(result: dg.ExecuteInProcessResult) -> dict:
    """The run's own MaterializeResult (the first run also logs one materialisation per imported day)."""
    [metadata] = [
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if "imported_by_run" not in e.materialization.metadata
    ]
    return metadata


def materialize(
    asset: dg.AssetsDefinition, lake: LakeResource, home_assistant: HomeAssistantResource, day: str
) -> dg.ExecuteInProcessResult:
    # a minute is ample for every call here: a hang fails fast, naming the command
    home_assistant = home_assistant.model_copy(update={"command_timeout_s": 60.0})
    result = dg.materialize([asset], partition_key=day, resources={"lake": lake, "home_assistant": home_assistant})
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 2 and all(check.passed for check in checks)
    return result


def test_the_first_run_imports_years_of_hourly_statistics_with_meter_resets(home_assistant, tmp_path):
    now = dt.datetime.now(dt.UTC)
    first_hour = (now - dt.timedelta(hours=HOURS + 1)).replace(minute=0, second=0, microsecond=0)
    series = seeded(first_hour)
    started = time.monotonic()
    asyncio.run(seed(home_assistant, series))
    print(f"seeded {sum(f.height for f in series.values())} hourly rows in {time.monotonic() - started:.1f} s")
    lake = LakeResource(root=str(tmp_path / "lake"))
    today, yesterday = now.strftime("%Y-%m-%d"), (now - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    # Once HA has compiled 5-minute statistics of its own sensors, `recorder/statistic_during_period` reports
    # values for them before any end_time: the first run must still find where the history starts.
    asyncio.run(wait_for_short_term_statistics(home_assistant, now - dt.timedelta(hours=1)))

    started = time.monotonic()
    result = materialize(statistics_hourly, lake, home_assistant, today)
    print(f"first run of statistics_hourly: {time.monotonic() - started:.1f} s")
    stored = lake.scan_derived("statistics_hourly").collect()
    for statistic_id, expected in series.items():
        rows = stored.filter(pl.col("statistic_id") == statistic_id).sort("start")
        assert rows.height == len(expected) == HOURS - len(GAP), statistic_id
        assert rows["start"].to_list() == expected["start"].to_list()
        for column in ("mean", "min", "max", "state", "sum"):
            if column in expected.columns:
                assert (rows[column] - expected[column]).abs().max() < 1e-6, (statistic_id, column)
        if "used" in expected.columns:
            assert rows["consumption"][0] is None  # the first hour HA ever recorded
            assert (rows["consumption"][1:] - expected["used"][1:]).abs().max() < 1e-6, statistic_id
            assert rows["consumption"].drop_nulls().min() >= 0
    gas = stored.filter(pl.col("statistic_id") == "demo:gas_meter")
    assert gas.filter(pl.col("meter_reset"))["start"].to_list() == [first_hour + dt.timedelta(hours=GAS_RESET)]
    assert stored.filter(pl.col("statistic_id") == "demo:grid_import")["meter_reset"].sum() == 0
    assert stored.filter(pl.col("statistic_id") == "demo:grid_import")["change"].min() >= 0
    assert gas["change"].min() < 0  # HA's signed change shows the drop; consumption does not

    # everything HA holds, for every statistic id (HA's own compiled ones too), is in the lake
    answer = asyncio.run(
        ha_answer(
            home_assistant,
            "hour",
            first_hour - dt.timedelta(days=30),
            dt.datetime.fromisoformat(today).replace(tzinfo=dt.UTC) + dt.timedelta(days=1),
        )
    )
    assert {sid: len(rows) for sid, rows in answer.items()} == dict(stored.group_by("statistic_id").len().iter_rows())

    metadata = run_metadata(result)
    assert metadata["history_imported_rows"].value == stored.height - metadata["rows"].value
    assert metadata["history_first_day"].value == first_hour.strftime("%Y-%m-%d")
    # each imported day inside the partitions is reported as materialised; older days are in the lake only
    reported = {e.materialization.partition for e in result.get_asset_materialization_events()}
    days_with_rows = set(stored["start"].dt.strftime("%Y-%m-%d").unique())
    assert reported == {day for day in days_with_rows if day >= "2025-01-01"} | {today}
    assert yesterday in reported and min(days_with_rows) < "2025-01-01"

    # later runs pull only their day, and reproduce what the first run wrote for it
    first_import = lake.scan_day("statistics_hourly", yesterday).collect()
    again = materialize(statistics_hourly, lake, home_assistant, yesterday)
    assert run_metadata(again)["history_imported_rows"].value == 0
    assert_frame_equal(lake.scan_day("statistics_hourly", yesterday).collect(), first_import, check_row_order=False)
    assert first_import.height >= 2 * 24

    five_minute = materialize(statistics_5minute, lake, home_assistant, today)
    stored_5 = lake.scan_derived("statistics_5minute").collect()
    answer_5 = asyncio.run(
        ha_answer(home_assistant, "5minute", now - dt.timedelta(days=31), now + dt.timedelta(hours=1))
    )
    newest = int(stored_5["start"].max().timestamp() * 1000)  # HA may compile another 5 minutes meanwhile
    assert stored_5.height == sum(1 for rows in answer_5.values() for row in rows if row["start"] <= newest) > 0
    assert run_metadata(five_minute)["rows"].value == stored_5.height
