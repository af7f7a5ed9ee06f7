"""A copy of the fixture lake plus hand-made rows built from real ones, for the quality tests.

Everything added is written as extra landing files next to the collector's, then the raw Delta tables
are loaded again; the rows keep their file's collector (named like collector parts, so the loader takes
them): ``*-scenario.parquet``
holds rows that are valid, ``*-broken.parquet``
rows that each break known rules. The collector ``scenario`` also has a session record of its own
(``collector_sessions/.../session-1-scenario.parquet``): a reconnect after the capture whose gap its
backfilled rows fill, and whose counters claim two events the lake does not hold.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from ha_ingestor_lake.schema import COLLECTOR_SESSIONS, EVENTS, QUARANTINE, STATES
from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource

from .lake_tables import load_tables

# named like collector part files, which is what lake readers take
SCENARIO_FILE = "part-900000000001-900000000001-scenario.parquet"
BROKEN_FILE = "part-900000000002-900000000002-broken.parquet"

# (entity, state changes added on the fixture day as (HH:MM:SS, state)); states are real HA states
UNIT_CHANGE_ENTITY = "sensor.living_room_temperature"
FAHRENHEIT_READINGS = (("18:00:00", "70.7"), ("18:10:00", "71.6"), ("18:20:00", "72.5"))
UNAVAILABLE_CHANGES = {
    "sensor.house_power": (("18:00:00", "unavailable"), ("18:30:00", "1000.0")),
    "light.bed_light": (("23:00:00", "unavailable"),),
}
CARRIED_IN_UNAVAILABLE = "sensor.outside_temperature"  # unavailable since 23:00 the day before
LATE_ENTITY = "input_boolean.guest_mode"
LATE_TIMES = ("20:05:00", "20:06:00")
OUT_OF_ORDER_ENTITY = "input_boolean.night_mode"
DUPLICATED_LIVE_ROWS = 3
DUPLICATED_SNAPSHOT_ROWS = 1
SESSION_ID = 1
SESSION_GAP_END = "23:30:00"  # the first event the scenario's session received, on HA's clock
SESSION_EVENTS_RECEIVED = 2  # none of them is in the lake
SESSION_BACKFILL_ROWS = 9  # the scenario's valid state rows: all received within the session


@dataclass(frozen=True)
class Scenario:
    lake: Path
    date: str
    previous_date: str
    lag: dt.timedelta  # the fixture's typical received_at - last_updated of live rows
    session: dict  # the scenario collector's session record


def _write(frame: pl.DataFrame, schema, directory: Path, name: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(frame.to_arrow().select(schema.names).cast(schema), directory / name, compression="zstd")


def _at(date: str, hms: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{date}T{hms}+00:00")


def _state_row(template: dict, when: dt.datetime, state: str | None, lag: dt.timedelta, **changes) -> dict:
    row = dict(template)
    num = None
    if state is not None:
        try:
            num = float(state)
        except ValueError:
            num = None
    row.update(
        state=state,
        state_num=num,
        last_changed=when,
        last_updated=when,
        last_reported=None,
        source="backfill",
        event_id=None,
        context_id=None,
        context_parent_id=None,
        context_user_id=None,
        old_state=None,
        received_at=when + lag,
    )
    row.update(changes)
    return row


def build(fixture_lake: Path, destination: Path) -> Scenario:
    shutil.copytree(fixture_lake, destination)
    lake = LakeResource(root=str(destination))
    [date] = lake.raw_dates("states")
    previous = (dt.date.fromisoformat(date) - dt.timedelta(days=1)).isoformat()
    states = lake.scan_raw("states", date).collect()
    events = lake.scan_raw("events", date).collect()
    live = states.filter(pl.col("source") == "live")
    lag = (live["received_at"] - live["last_updated"]).median()

    def latest(entity_id: str) -> dict:
        return states.filter(pl.col("entity_id") == entity_id).sort("last_updated").row(-1, named=True)

    valid: list[dict] = []
    template = latest(UNIT_CHANGE_ENTITY)
    for hms, value in FAHRENHEIT_READINGS:
        valid.append(
            _state_row(template, _at(date, hms), value, lag, attributes=template["attributes"].replace('"°C"', '"°F"'))
        )
    for entity_id, changes in UNAVAILABLE_CHANGES.items():
        template = latest(entity_id)
        valid += [_state_row(template, _at(date, hms), state, lag) for hms, state in changes]
    template = latest(LATE_ENTITY)
    valid += [_state_row(template, _at(date, hms), "on", lag + dt.timedelta(minutes=45)) for hms in LATE_TIMES]
    template = latest(OUT_OF_ORDER_ENTITY)
    between = live.filter(pl.col("entity_id") == OUT_OF_ORDER_ENTITY).sort("last_updated")["last_updated"][0]
    valid.append(
        _state_row(
            template,
            between + dt.timedelta(microseconds=1),
            template["state"],
            states["received_at"].max() - between + dt.timedelta(hours=1),
        )
    )
    duplicates = pl.concat(
        [
            live.filter(pl.col("domain") == "sensor").head(DUPLICATED_LIVE_ROWS),
            states.filter(pl.col("source") == "snapshot").head(DUPLICATED_SNAPSHOT_ROWS),
        ]
    ).with_columns(
        pl.lit("backfill").alias("source"),
        pl.lit(None, pl.String).alias("event_id"),
        pl.lit(None, pl.String).alias("context_id"),
        (pl.col("received_at") + dt.timedelta(minutes=1)).alias("received_at"),
    )
    scenario_states = pl.concat([pl.DataFrame(valid, schema=states.schema), duplicates])
    assert len(valid) == SESSION_BACKFILL_ROWS
    gap_start = events["time_fired"].max()
    session = {
        "home": template["home"],
        "collector_id": "scenario",
        "session_id": SESSION_ID,
        "connected_at": min(row["received_at"] for row in valid) - dt.timedelta(seconds=1),
        "ha_version": "2025.4.4",
        "disconnected_at": max(row["received_at"] for row in valid) + dt.timedelta(seconds=1),
        "disconnect_reason": "stop requested",
        "gap_start": gap_start,
        "gap_end": _at(date, SESSION_GAP_END),
        "backfill_from": gap_start - dt.timedelta(seconds=60),
        "backfill_rows": SESSION_BACKFILL_ROWS,
        "last_event_time": _at(date, SESSION_GAP_END) + dt.timedelta(seconds=1),
        "events_received": SESSION_EVENTS_RECEIVED,
        "events_committed": SESSION_EVENTS_RECEIVED,
        "quarantined": 0,
        "frames_received": 40,
        "reconnects": 1,
    }
    session["updated_at"] = session["disconnected_at"]
    _write(
        pl.DataFrame([session]),
        COLLECTOR_SESSIONS,
        destination / "collector_sessions" / f"date={session['connected_at']:%Y-%m-%d}",
        f"session-{SESSION_ID}-scenario.parquet",
    )
    _write(scenario_states, STATES, destination / "states" / f"date={date}", SCENARIO_FILE)

    base = states.filter(pl.col("entity_id") == "sensor.house_power").row(0, named=True)
    t = _at(date, "17:24:00")

    def broken(offset_s: int, **changes) -> dict:
        row = _state_row(base, t + dt.timedelta(seconds=offset_s), "100.0", lag)
        row.update(changes)
        return row

    broken_states = [
        broken(1, entity_id="Sensor.Bad_Case"),
        broken(2, entity_id="sensor.mismatched_domain", domain="binary_sensor"),
        broken(3, last_changed=t + dt.timedelta(seconds=4)),
        broken(
            5, last_updated=_at(date, "21:00:00"), last_changed=_at(date, "21:00:00"), received_at=_at(date, "18:00:00")
        ),
        broken(6, attributes='{"unit_of_measurement": W}'),
        broken(7, attributes='{"friendly_name": "cut off'),
        broken(8, source="manual"),
        broken(9, state="inf", state_num=float("inf")),
        broken(10, state="6", state_num=5.0),
        broken(11, source="live"),
        broken(12, state="x" * 300, state_num=None),
    ]
    _write(
        pl.DataFrame(broken_states, schema=states.schema), STATES, destination / "states" / f"date={date}", BROKEN_FILE
    )

    earlier = latest(CARRIED_IN_UNAVAILABLE)
    carried = _state_row(earlier, _at(previous, "23:00:00"), "unavailable", lag)
    _write(
        pl.DataFrame([carried], schema=states.schema),
        STATES,
        destination / "states" / f"date={previous}",
        SCENARIO_FILE,
    )

    event = events.filter(pl.col("event_type") == "call_service").row(0, named=True)
    broken_events = [
        {**event, "event_id": "e" * 32, "origin": "ELSEWHERE"},
        {**event, "event_id": "f" * 32, "event_type": "x" * 70},
        {**event, "event_id": "a" * 32, "data": '{"service": turn_on}'},
        {**event, "event_id": "b" * 32, "event_type": "state_changed", "entity_id": None},
    ]
    _write(
        pl.DataFrame(broken_events, schema=events.schema), EVENTS, destination / "events" / f"date={date}", BROKEN_FILE
    )
    _write(events.head(1), EVENTS, destination / "events" / f"date={date}", SCENARIO_FILE)

    quarantine = pl.DataFrame(
        [
            {
                "home": base["home"],
                "received_at": _at(date, "17:25:00"),
                "stage": "frame",
                "reason": "not JSON",
                "raw": "{not json",
                "spool_seq": 1,
            }
        ]
    )
    _write(quarantine, QUARANTINE, destination / "quarantine" / f"date={date}", SCENARIO_FILE)
    load_tables(destination)
    return Scenario(lake=destination, date=date, previous_date=previous, lag=lag, session=session)
