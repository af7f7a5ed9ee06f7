"""Pulling Home Assistant's statistics over its WebSocket API: a window, or all of the history before one."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from itertools import groupby

import polars as pl

from ha_ingestor_lake.schema import home_from_config

from .ha_resource import HomeAssistantSession
from .transform import empty_frame, from_millis, rows_frame, to_utc, with_consumption

TYPES = ["mean", "min", "max", "last_reset", "state", "sum", "change"]
IDS_PER_CALL = 100
EPOCH = "1970-01-01T00:00:00+00:00"


@dataclass(frozen=True)
class Period:
    """One of HA's statistics tables as the WebSocket API names it, with how to page through it."""

    name: str
    chunk: dt.timedelta  # time span per call (times IDS_PER_CALL statistics: the size of one answer)
    lookback: dt.timedelta  # rows fetched before a window so its first rows know their predecessor
    history_limit: dt.timedelta | None  # how far back the first run looks; None: until HA has nothing older


HOUR = Period("hour", dt.timedelta(days=30), dt.timedelta(days=1), None)
FIVE_MINUTE = Period("5minute", dt.timedelta(days=1), dt.timedelta(hours=2), dt.timedelta(days=31))


@dataclass(frozen=True)
class Home:
    name: str
    metadata: dict[str, dict]  # statistic_id -> recorder/list_statistic_ids entry


async def describe_home(session: HomeAssistantSession) -> Home:
    """HA's home name (the lake's ``home``, as the collector derives it) and every statistic id with its metadata."""
    home = home_from_config(await session.call_raw("get_config")) or "home"
    listed = await session.call("recorder/list_statistic_ids")
    return Home(home, {entry["statistic_id"]: entry for entry in listed})


async def fetch(
    session: HomeAssistantSession, home: Home, period: Period, start: dt.datetime, end: dt.datetime
) -> pl.DataFrame:
    """Every statistic's rows with ``start`` in [start, end), values in the unit HA stores them in."""

    def unit_group(statistic_id: str) -> tuple[str, str]:
        meta = home.metadata[statistic_id]
        return meta.get("unit_class") or "", meta.get("statistics_unit_of_measurement") or ""

    frames = []
    for (unit_class, unit), ids in groupby(sorted(home.metadata, key=unit_group), key=unit_group):
        ids = list(ids)
        # without `units`, HA converts to the entity's current display unit, which can change over the years
        units = {"units": {unit_class: unit}} if unit_class and unit else {}
        for offset in range(0, len(ids), IDS_PER_CALL):
            result = await session.call_raw(
                "recorder/statistics_during_period",
                start_time=to_utc(start),
                end_time=to_utc(end),
                statistic_ids=ids[offset : offset + IDS_PER_CALL],
                period=period.name,
                types=TYPES,
                **units,
            )
            frames.append(rows_frame(result, home.name, home.metadata))
    frames = [f for f in frames if f.height]
    return pl.concat(frames) if frames else empty_frame().drop("consumption", "meter_reset")


async def months_before(
    session: HomeAssistantSession, statistic_ids: list[str], moment: dt.datetime
) -> dict[str, list[dt.datetime]]:
    """For each statistic with hourly rows before ``moment``, the starts of its months that have rows, newest
    first: one small answer however many years HA holds.

    HA rounds a ``month`` query to whole months of its own time zone, so a month listed here may hold rows
    only after ``moment``. (``recorder/statistic_during_period`` cannot answer this: for a statistic that HA
    compiles itself it also counts the short-term rows after ``end_time``, whatever ``end_time`` is.)
    """
    if not statistic_ids:
        return {}
    answer = await session.call(
        "recorder/statistics_during_period",
        start_time=EPOCH,
        end_time=to_utc(moment),
        statistic_ids=statistic_ids,
        period="month",
        types=["mean", "sum", "state"],
    )
    return {
        statistic_id: sorted((from_millis(row["start"]) for row in rows), reverse=True)
        for statistic_id, rows in answer.items()
        if rows
    }


async def ids_with_rows_before(
    session: HomeAssistantSession, statistic_ids: list[str], moment: dt.datetime
) -> set[str]:
    """Which statistics HA holds any hourly row for before ``moment``: the month query narrows it down,
    an hourly query of the newest such month up to ``moment`` settles it."""
    found = set()
    for statistic_id, months in (await months_before(session, statistic_ids, moment)).items():
        for month in months:
            rows = await session.call(
                "recorder/statistics_during_period",
                start_time=to_utc(month),
                end_time=to_utc(moment),
                statistic_ids=[statistic_id],
                period="hour",
                types=["mean", "sum", "state"],
            )
            if rows.get(statistic_id):
                found.add(statistic_id)
                break
    return found


async def window(
    session: HomeAssistantSession, home: Home, period: Period, start: dt.datetime, end: dt.datetime
) -> pl.DataFrame:
    """Rows with ``start`` in [start, end), with consumption computed from the rows before them."""
    rows = await fetch(session, home, period, start - period.lookback, end)
    if not rows.height:
        return empty_frame()
    firsts = rows.sort("start").group_by("statistic_id", maintain_order=True).first()
    ambiguous = firsts.filter(pl.col("sum").is_not_null() & (pl.col("change") == pl.col("sum")))["statistic_id"]
    known_prior = (
        await ids_with_rows_before(session, ambiguous.to_list(), start - period.lookback) if ambiguous.len() else set()
    )
    return with_consumption(rows, known_prior).filter(pl.col("start") >= start)


async def windows(
    session: HomeAssistantSession, home: Home, period: Period, start: dt.datetime, end: dt.datetime
) -> AsyncIterator[pl.DataFrame]:
    """[start, end) in chunks of ``period.chunk``, oldest first."""
    while start < end:
        stop = min(start + period.chunk, end)
        yield await window(session, home, period, start, stop)
        start = stop


async def history_before(
    session: HomeAssistantSession, home: Home, period: Period, before: dt.datetime
) -> AsyncIterator[pl.DataFrame]:
    """All the rows HA holds before ``before``, newest chunk first: years of hourly statistics.

    Walks back one chunk at a time down to the oldest month HA has rows in (asked once, up front), so a
    gap (HA switched off for a month) neither ends the import nor keeps it walking back for ever.
    """
    if period.history_limit is not None:
        oldest = before - period.history_limit
    else:
        months = await months_before(session, list(home.metadata), before)
        if not months:
            return
        oldest = min(min(starts) for starts in months.values())
    end = before
    while end > oldest:
        start = max(end - period.chunk, oldest)
        rows = await window(session, home, period, start, end)
        if rows.height:
            yield rows
        end = start
