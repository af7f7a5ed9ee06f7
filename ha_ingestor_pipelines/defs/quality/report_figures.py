"""The figures of the daily quality report, computed from the lake (pure polars, JSON-ready output).

Where each figure comes from:

- events per type: the raw ``events`` table of the day (what the collector landed).
- completeness, from the lake: ``state_changed`` events against the live state rows that carry
  their ``event_id``; connections from the ``registry/core_config`` snapshots (one per connect);
  ``snapshot`` and ``backfill`` state rows (backfill rows are what HA's history gave back for a
  gap); the collector's own ``quarantine`` rows by stage; and gaps, i.e. silences in the event
  stream longer than ``gap_minutes`` (HA fires ``recorder_5min_statistics_generated`` every 5
  minutes, so a live subscription is never silent much longer than that), with the validated
  backfilled state rows that fall inside each gap.
- completeness against the collector's own counters: its ``collector_sessions`` rows. The day's
  sessions are those connected during the day (collector clock) and those that received any of the
  day's event, state or quarantine rows (so a session that reconnected the next day and backfilled
  this one counts too). A row belongs to a session when the file it is in was written by the
  session's collector and its ``received_at`` lies between the session's ``connected_at`` and its end
  (``disconnected_at``; for a session never closed, the next session's ``connected_at``). Per session:
  events received and committed against its ``events`` rows in the lake, ``quarantined`` against its
  ``quarantine`` rows, ``backfill_rows`` against its ``source = 'backfill'`` state rows, over every
  day its rows fall in; the day's events that no session record accounts for, per collector (lakes
  written by collectors older than ``collector_sessions``); and the gap records (``gap_start`` to
  ``gap_end``, on HA's clock) that overlap the day, with the backfilled state rows of the day validated
  inside each.
- validation: input, validated and quarantined rows per table, and failing rows and pass rate per
  rule, from ``derived/validation_quarantine``.
- duplicates removed: quarantined rows whose rule is ``duplicate``.
- late and out-of-order rows: ``is_late`` / ``is_out_of_order`` of the validated tables.
- entities gone silent: entities seen in the day or the ``lookback_days`` before it whose newest
  state is older than ``silent_after_hours`` at the end of the day (removed entities are listed
  apart).
- unavailable time: per entity, the time within the day spent in the ``unavailable`` state, from
  the intervals between consecutive validated states (the state before midnight carries into the
  day; the last state lasts until the day ends).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import polars as pl

from .rules import DUPLICATE_RULE, EVENT_RULES, STATE_RULES

UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class ReportInputs:
    """One day of the lake, as lazy frames (see the module docstring for what each is)."""

    date: str
    raw_events: pl.LazyFrame
    raw_states: pl.LazyFrame
    collector_quarantine: pl.LazyFrame
    core_config_snapshots: pl.LazyFrame
    validated_events: pl.LazyFrame
    validated_states: pl.LazyFrame
    validation_quarantine: pl.LazyFrame
    # (home, entity_id, last_updated, state) rows of the days before ``date`` within the lookback
    earlier_states: pl.LazyFrame
    # every collector_sessions row, and (table, collector_id, received_at) of the day's events, states and
    # quarantine rows
    collector_sessions: pl.LazyFrame
    day_receipts: pl.LazyFrame
    # (collector_id, received_at) of the rows the day's sessions may account for, over the days given by
    # ``session_days``: events, quarantine rows, and states with source = 'backfill'
    session_events: pl.LazyFrame
    session_quarantine: pl.LazyFrame
    session_backfill: pl.LazyFrame


@dataclass(frozen=True)
class ReportParameters:
    silent_after_hours: float = 6.0
    gap_minutes: float = 6.0
    lookback_days: int = 7


def day_bounds(date: str) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [{k: _iso(v) if isinstance(v, dt.datetime) else v for k, v in row.items()} for row in frame.to_dicts()]


def events_per_type(raw_events: pl.LazyFrame) -> list[dict[str, Any]]:
    counts = (
        raw_events.group_by("event_type")
        .agg(pl.len().alias("count"))
        .sort(["count", "event_type"], descending=[True, False])
    )
    return _rows(counts.collect())


def validated_backfill_times(validated_states: pl.LazyFrame) -> pl.Series:
    return validated_states.filter(pl.col("source") == "backfill").select("last_updated").collect().to_series()


def event_stream_gaps(
    raw_events: pl.LazyFrame, validated_states: pl.LazyFrame, date: str, gap_minutes: float
) -> list[dict[str, Any]]:
    """Silences longer than ``gap_minutes`` between consecutive events of the day, day edges included, with
    the number of validated backfilled state rows inside each."""
    start, end = day_bounds(date)
    times = pl.concat(
        [
            pl.LazyFrame({"t": [start]}, schema={"t": pl.Datetime("us", "UTC")}),
            raw_events.select(pl.col("time_fired").alias("t")).drop_nulls(),
            pl.LazyFrame({"t": [end]}, schema={"t": pl.Datetime("us", "UTC")}),
        ]
    ).sort("t")
    gaps = (
        times.select(pl.col("t").alias("start"), pl.col("t").shift(-1).alias("end"))
        .filter((pl.col("end") - pl.col("start")) > dt.timedelta(minutes=gap_minutes))
        .collect()
    )
    backfill_times = validated_backfill_times(validated_states)
    return [
        {
            "start": _iso(gap_start),
            "end": _iso(gap_end),
            "seconds": round((gap_end - gap_start).total_seconds(), 6),
            "backfill_rows": int(((backfill_times > gap_start) & (backfill_times < gap_end)).sum()),
        }
        for gap_start, gap_end in gaps.iter_rows()
    ]


def completeness(inputs: ReportInputs, gap_minutes: float) -> dict[str, Any]:
    state_changed = inputs.raw_events.filter(pl.col("event_type") == "state_changed").select("event_id")
    live_rows = inputs.raw_states.filter(pl.col("source") == "live").select("event_id")
    matched = state_changed.join(live_rows, on="event_id", how="inner").select(pl.len()).collect().item()
    n_events = state_changed.select(pl.len()).collect().item()
    n_live = live_rows.select(pl.len()).collect().item()
    by_source = dict(inputs.raw_states.group_by("source").agg(pl.len()).collect().iter_rows())
    collector_quarantine = dict(
        inputs.collector_quarantine.group_by("stage").agg(pl.len()).sort("stage").collect().iter_rows()
    )
    gaps = event_stream_gaps(inputs.raw_events, inputs.validated_states, inputs.date, gap_minutes)
    gap_seconds = sum(gap["seconds"] for gap in gaps)
    return {
        "state_changed_events": n_events,
        "live_state_rows": n_live,
        "state_changed_with_live_row": matched,
        "state_changed_without_live_row": n_events - matched,
        "live_rows_without_event": n_live - matched,
        "state_rows_by_source": {source: by_source.get(source, 0) for source in ("live", "snapshot", "backfill")},
        "connects": inputs.core_config_snapshots.select(pl.len()).collect().item(),
        "collector_quarantine_by_stage": collector_quarantine,
        "collector_quarantine_rows": sum(collector_quarantine.values()),
        "gap_threshold_minutes": gap_minutes,
        "gaps": gaps,
        "gap_seconds_total": round(gap_seconds, 6),
        "coverage_share": round(1 - gap_seconds / 86400, 6),
        "backfill_rows_in_gaps": sum(gap["backfill_rows"] for gap in gaps),
        "collector": collector_counters(inputs, validated_backfill_times(inputs.validated_states)),
    }


def _with_windows(sessions: pl.LazyFrame) -> pl.LazyFrame:
    """Sessions with ``window_end``: when their rows stop (``disconnected_at``, or for a session never closed
    the next session of its collector; null for the newest open one)."""
    return sessions.sort("connected_at").with_columns(
        pl.coalesce(pl.col("disconnected_at"), pl.col("connected_at").shift(-1).over("collector_id")).alias(
            "window_end"
        )
    )


def attribute_to_sessions(rows: pl.LazyFrame, sessions: pl.LazyFrame) -> pl.LazyFrame:
    """``rows`` (with ``collector_id``, ``received_at``) plus the ``session_id`` of the session that received
    each: same collector, received between ``connected_at`` and ``window_end`` (null when none did)."""
    windows = sessions.select("collector_id", "session_id", "connected_at", "window_end").sort("connected_at")
    in_window = pl.col("window_end").is_null() | (pl.col("received_at") <= pl.col("window_end"))
    return (
        rows.sort("received_at")
        .join_asof(
            windows,
            left_on="received_at",
            right_on="connected_at",
            by="collector_id",
            strategy="backward",
            check_sortedness=False,
        )  # both sorted just above
        .with_columns(pl.when(in_window).then(pl.col("session_id")).alias("session_id"))
        .drop("connected_at", "window_end")
    )


def sessions_of_day(collector_sessions: pl.LazyFrame, day_receipts: pl.LazyFrame, date: str) -> pl.LazyFrame:
    """The sessions that concern the day (module docstring), with their ``window_end``, in connect order."""
    start, end = day_bounds(date)
    sessions = _with_windows(collector_sessions)
    delivered = (
        attribute_to_sessions(day_receipts.select("collector_id", "received_at"), sessions)
        .filter(pl.col("session_id").is_not_null())
        .select("collector_id", "session_id")
        .unique()
        .with_columns(pl.lit(True).alias("delivered"))
    )
    connected_that_day = (pl.col("connected_at") < end) & (pl.coalesce("disconnected_at", "updated_at") >= start)
    return (
        sessions.join(delivered, on=["collector_id", "session_id"], how="left")
        .filter(connected_that_day | pl.col("delivered").fill_null(False))
        .drop("delivered")
        .sort("connected_at")
    )


def _days(first: dt.datetime, last: dt.datetime) -> list[str]:
    first_day, last_day = first.date() - dt.timedelta(days=1), last.date() + dt.timedelta(days=1)
    return [(first_day + dt.timedelta(days=n)).isoformat() for n in range((last_day - first_day).days + 1)]


def session_days(sessions: pl.DataFrame, date: str) -> dict[str, list[str]]:
    """The days (``date=`` partitions, a day of margin each side) that may hold the sessions' rows: events by
    HA's ``time_fired`` (first to last event), quarantine by ``received_at`` (connect to end), backfilled
    states by ``last_updated`` (backfill start to the newest event)."""
    days: dict[str, set[str]] = {"events": {date}, "quarantine": {date}, "states": {date}}
    for s in sessions.iter_rows(named=True):
        first_event = s["gap_end"] or s["connected_at"]
        newest = max(t for t in (first_event, s["last_event_time"]) if t is not None)
        if s["last_event_time"] is not None:
            days["events"].update(_days(first_event, s["last_event_time"]))
        days["quarantine"].update(_days(s["connected_at"], s["window_end"] or s["updated_at"]))
        if s["backfill_from"] is not None:
            days["states"].update(_days(s["backfill_from"], max(newest, s["backfill_from"])))
    return {table: sorted(dates) for table, dates in days.items()}


def _rows_per_session(rows: pl.LazyFrame, sessions: pl.LazyFrame, name: str) -> pl.LazyFrame:
    return (
        attribute_to_sessions(rows.select("collector_id", "received_at"), sessions)
        .filter(pl.col("session_id").is_not_null())
        .group_by("collector_id", "session_id")
        .agg(pl.len().cast(pl.Int64).alias(name))
    )


SESSION_TOTALS = (
    "events_received",
    "events_committed",
    "events_in_lake",
    "quarantined",
    "quarantine_rows_in_lake",
    "backfill_rows",
    "backfill_rows_in_lake",
    "day_events",
)


def collector_counters(inputs: ReportInputs, validated_backfill: pl.Series) -> dict[str, Any]:
    """The collector's own counters of the day's sessions against the lake, and its gap records."""
    start, end = day_bounds(inputs.date)
    sessions = sessions_of_day(inputs.collector_sessions, inputs.day_receipts, inputs.date)
    keys = ["collector_id", "session_id"]
    day_events = inputs.day_receipts.filter(pl.col("table") == "events")
    per_session = sessions
    lake_rows = {
        "events_in_lake": inputs.session_events,
        "quarantine_rows_in_lake": inputs.session_quarantine,
        "backfill_rows_in_lake": inputs.session_backfill,
        "day_events": day_events,
    }
    for name, rows in lake_rows.items():
        per_session = per_session.join(_rows_per_session(rows, sessions, name), on=keys, how="left")
    per_session = (
        per_session.with_columns(
            pl.col(*lake_rows).fill_null(0), pl.col("disconnected_at").is_not_null().alias("closed")
        )
        .with_columns((pl.col("events_received") - pl.col("events_in_lake")).alias("events_not_in_lake"))
        .select(
            "collector_id",
            "session_id",
            "home",
            "ha_version",
            "connected_at",
            "disconnected_at",
            "disconnect_reason",
            "closed",
            "updated_at",
            "events_received",
            "events_committed",
            "events_in_lake",
            "events_not_in_lake",
            "quarantined",
            "quarantine_rows_in_lake",
            "backfill_rows",
            "backfill_rows_in_lake",
            "frames_received",
            "reconnects",
            "day_events",
            "gap_start",
            "gap_end",
            "backfill_from",
        )
        .sort("connected_at")
        .collect()
    )
    known_collectors = set(inputs.collector_sessions.select("collector_id").unique().collect().to_series().to_list())
    unaccounted = (
        attribute_to_sessions(
            day_events.select("collector_id", "received_at"), _with_windows(inputs.collector_sessions)
        )
        .filter(pl.col("session_id").is_null())
        .group_by("collector_id")
        .agg(pl.len().alias("events"))
        .sort("collector_id")
        .collect()
    )
    gaps = per_session.filter(
        pl.col("gap_start").is_not_null() & (pl.col("gap_start") < end) & (pl.col("gap_end") > start)
    )
    return {
        "sessions_recorded": per_session.height > 0,
        "sessions": _rows(per_session.drop("gap_start", "gap_end", "backfill_from")),
        "totals": {name: int(per_session[name].sum()) for name in SESSION_TOTALS},
        "day_events_without_session": [
            {"collector_id": collector_id, "events": n, "collector_has_sessions": collector_id in known_collectors}
            for collector_id, n in unaccounted.iter_rows()
        ],
        "gaps": [
            {
                "collector_id": g["collector_id"],
                "session_id": g["session_id"],
                "start": _iso(g["gap_start"]),
                "end": _iso(g["gap_end"]),
                "seconds": round((g["gap_end"] - g["gap_start"]).total_seconds(), 6),
                "backfill_from": _iso(g["backfill_from"]),
                "backfill_rows": g["backfill_rows"],
                "backfill_rows_validated_in_day": int(
                    ((validated_backfill > g["gap_start"]) & (validated_backfill < g["gap_end"])).sum()
                ),
            }
            for g in gaps.iter_rows(named=True)
        ],
    }


def validation_summary(
    table: str, raw: pl.LazyFrame, validated: pl.LazyFrame, quarantine: pl.LazyFrame
) -> dict[str, Any]:
    rules = (STATE_RULES if table == "states" else EVENT_RULES) + (DUPLICATE_RULE,)
    input_rows = raw.select(pl.len()).collect().item()
    mine = quarantine.filter(pl.col("table") == table)
    failed = dict(
        mine.select(pl.col("failed_rules").explode().alias("rule")).group_by("rule").agg(pl.len()).collect().iter_rows()
    )
    per_rule = [
        {
            "rule": rule.name,
            "description": rule.description,
            "failed_rows": failed.get(rule.name, 0),
            "pass_rate": 1.0 if input_rows == 0 else round(1 - failed.get(rule.name, 0) / input_rows, 6),
        }
        for rule in rules
    ]
    validated_rows = validated.select(pl.len()).collect().item()
    quarantined = mine.select(pl.len()).collect().item()
    return {
        "input_rows": input_rows,
        "validated_rows": validated_rows,
        "quarantined_rows": quarantined,
        "pass_rate": 1.0 if input_rows == 0 else round(validated_rows / input_rows, 6),
        "rules": per_rule,
        "sample_quarantined": _rows(
            mine.select("row_key", "failed_rules", "row_json")
            .head(5)
            .collect()
            .with_columns(pl.col("failed_rules").list.join(", "))
        ),
    }


def duplicates(quarantine: pl.LazyFrame) -> dict[str, Any]:
    dup = quarantine.filter(pl.col("failed_rules").list.contains(DUPLICATE_RULE.name))
    per_table = dict(dup.group_by("table").agg(pl.len()).collect().iter_rows())
    per_source = dict(
        dup.filter(pl.col("table") == "states")
        .select(pl.col("row_json").str.json_path_match("$.source").alias("source"))
        .group_by("source")
        .agg(pl.len())
        .collect()
        .iter_rows()
    )
    return {"events": per_table.get("events", 0), "states": per_table.get("states", 0), "states_by_source": per_source}


def lateness(validated: pl.LazyFrame) -> dict[str, Any]:
    row = (
        validated.select(
            pl.len().alias("rows"),
            pl.col("is_late").sum().alias("late"),
            pl.col("is_out_of_order").sum().alias("out_of_order"),
            pl.col("arrival_lag_s").median().alias("median_arrival_lag_s"),
        )
        .collect()
        .row(0, named=True)
    )
    return {
        "rows": row["rows"],
        "late": row["late"] or 0,
        "out_of_order": row["out_of_order"] or 0,
        "median_arrival_lag_s": row["median_arrival_lag_s"],
    }


def _state_history(inputs: ReportInputs) -> pl.LazyFrame:
    columns = ["home", "entity_id", "last_updated", "state"]
    return pl.concat([inputs.earlier_states.select(columns), inputs.validated_states.select(columns)])


def silent_entities(inputs: ReportInputs, silent_after_hours: float) -> dict[str, Any]:
    _, end = day_bounds(inputs.date)
    newest = (
        _state_history(inputs)
        .group_by("home", "entity_id")
        .agg(pl.col("last_updated").max(), pl.col("state").sort_by("last_updated").last())
        .with_columns(((pl.lit(end) - pl.col("last_updated")).dt.total_seconds() / 3600).round(2).alias("silent_hours"))
        .collect()
    )
    removed = newest.filter(pl.col("state").is_null()).sort("entity_id")
    silent = (
        newest.filter(pl.col("state").is_not_null() & (pl.col("silent_hours") > silent_after_hours))
        .sort(["silent_hours", "entity_id"], descending=[True, False])
        .rename({"state": "last_state"})
    )
    return {
        "silent_after_hours": silent_after_hours,
        "entities_seen": newest.height,
        "silent": _rows(silent),
        "removed": _rows(removed.select("home", "entity_id", "last_updated")),
    }


def unavailable_time(inputs: ReportInputs) -> list[dict[str, Any]]:
    """Seconds each entity spent ``unavailable`` within the day (entities with none are left out)."""
    start, end = day_bounds(inputs.date)
    carried_in = (
        inputs.earlier_states.group_by("home", "entity_id")
        .agg(pl.col("state").sort_by("last_updated").last())
        .with_columns(pl.lit(start).alias("last_updated"))
    )
    day = inputs.validated_states.select("home", "entity_id", "last_updated", "state")
    entity = ["home", "entity_id"]
    intervals = (
        pl.concat([carried_in.select("home", "entity_id", "last_updated", "state"), day])
        .sort("last_updated")
        .with_columns(
            pl.col("last_updated").shift(-1).over(entity).fill_null(end).alias("until"),
            pl.col("state").shift(1).over(entity).alias("previous"),
        )
        .filter(pl.col("state") == UNAVAILABLE)
        .with_columns(((pl.col("until") - pl.col("last_updated")).dt.total_microseconds() / 1e6).alias("seconds"))
    )
    became = (
        intervals.filter((pl.col("last_updated") > start) & pl.col("previous").ne_missing(UNAVAILABLE))
        .group_by(entity)
        .agg(pl.len().alias("became_unavailable"))
    )
    per_entity = (
        intervals.group_by(entity)
        .agg(pl.col("seconds").sum().alias("unavailable_seconds"))
        .join(became, on=entity, how="left")
        .with_columns(
            pl.col("became_unavailable").fill_null(0),
            (pl.col("unavailable_seconds") / 86400).round(6).alias("share_of_day"),
            pl.col("unavailable_seconds").round(3),
        )
        .sort(["unavailable_seconds", "entity_id"], descending=[True, False])
    )
    return _rows(per_entity.collect())


def quality_figures(inputs: ReportInputs, parameters: ReportParameters) -> dict[str, Any]:
    """Everything the report shows, as plain JSON values."""
    homes = sorted(
        inputs.raw_states.select("home").unique().collect().to_series().drop_nulls().to_list()
        + inputs.raw_events.select("home").unique().collect().to_series().drop_nulls().to_list()
    )
    events = events_per_type(inputs.raw_events)
    return {
        "date": inputs.date,
        "homes": sorted(set(homes)),
        "parameters": {
            "silent_after_hours": parameters.silent_after_hours,
            "gap_minutes": parameters.gap_minutes,
            "lookback_days": parameters.lookback_days,
        },
        "events": {"total": sum(row["count"] for row in events), "by_type": events},
        "completeness": completeness(inputs, parameters.gap_minutes),
        "validation": {
            "events": validation_summary(
                "events", inputs.raw_events, inputs.validated_events, inputs.validation_quarantine
            ),
            "states": validation_summary(
                "states", inputs.raw_states, inputs.validated_states, inputs.validation_quarantine
            ),
        },
        "duplicates_removed": duplicates(inputs.validation_quarantine),
        "late": {"events": lateness(inputs.validated_events), "states": lateness(inputs.validated_states)},
        "silence": silent_entities(inputs, parameters.silent_after_hours),
        "unavailable": unavailable_time(inputs),
    }
