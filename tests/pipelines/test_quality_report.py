"""The daily quality report: its figures against counts made with DuckDB SQL on the raw lake, its page,
and its schedule."""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.graphs.assets import automation_graph_tables
from ha_ingestor_pipelines.defs.quality import assets
from ha_ingestor_pipelines.defs.quality.schedules import daily_quality_report

from . import quality_scenario
from .lake_tables import load_tables

SILENT_AFTER_HOURS = 5.0
GAP_MINUTES = 6.0


@pytest.fixture(scope="module")
def scenario(fixture_lake, tmp_path_factory) -> quality_scenario.Scenario:
    return quality_scenario.build(fixture_lake, tmp_path_factory.mktemp("quality_report") / "lake")


@pytest.fixture(scope="module")
def report(scenario) -> dict:
    graph = dg.materialize([automation_graph_tables], resources={"lake": LakeResource(root=str(scenario.lake))})
    assert graph.success
    config = assets.QualityReportConfig(silent_after_hours=SILENT_AFTER_HOURS, gap_minutes=GAP_MINUTES)
    result = dg.materialize(
        [assets.validation, assets.quality_report],
        partition_key=scenario.date,
        resources={"lake": LakeResource(root=str(scenario.lake))},
        run_config=dg.RunConfig(ops={"derived__quality_report": config}),
    )
    assert result.success
    directory = scenario.lake / "reports" / "quality" / f"date={scenario.date}"
    return json.loads((directory / "report.json").read_text())


@pytest.fixture(scope="module")
def sql(scenario) -> duckdb.DuckDBPyConnection:
    """The raw tables' day (as every reader sees it: one row per identity), and the rows that pass the rules,
    written here in SQL."""
    lake = LakeResource(root=str(scenario.lake))
    con = duckdb.connect()
    con.register("events", lake.scan_raw("events", scenario.date).collect().to_arrow())
    con.register("states", lake.scan_raw("states", scenario.date).collect().to_arrow())
    con.register("earlier_states", lake.scan_raw("states", scenario.previous_date).collect().to_arrow())
    con.execute("""
        CREATE VIEW state_checks AS SELECT *,
            NOT regexp_full_match(entity_id, '[a-z0-9_]+\\.[a-z0-9_]+') AS bad_entity_id_format,
            split_part(entity_id, '.', 1) <> domain AS bad_domain_matches_entity_id,
            last_changed > last_updated AS bad_last_changed_not_after_last_updated,
            last_updated > received_at + INTERVAL 1 HOUR AS bad_last_updated_plausible,
            attributes IS NOT NULL AND NOT (json_valid(attributes) AND starts_with(attributes, '{'))
                AS bad_attributes_json_object,
            source NOT IN ('live', 'snapshot', 'backfill') AS bad_source_known,
            coalesce(isinf(state_num) OR isnan(state_num), false) AS bad_state_num_finite,
            state_num IS NOT NULL AND try_cast(state AS DOUBLE) IS DISTINCT FROM state_num
                AS bad_state_num_matches_state,
            source = 'live' AND event_id IS NULL AS bad_live_row_has_event_id,
            coalesce(length(state) > 255, false) AS bad_state_length
        FROM states;
        CREATE VIEW valid_states AS SELECT * EXCLUDE (rank) FROM (
            SELECT *, row_number() OVER (PARTITION BY home, entity_id, last_updated
                ORDER BY CASE source WHEN 'live' THEN 0 WHEN 'snapshot' THEN 1 ELSE 2 END, received_at) AS rank
            FROM state_checks
            WHERE NOT (bad_entity_id_format OR bad_domain_matches_entity_id OR bad_last_changed_not_after_last_updated
                OR bad_last_updated_plausible OR bad_attributes_json_object OR bad_source_known
                OR bad_state_num_finite OR bad_state_num_matches_state OR bad_live_row_has_event_id
                OR bad_state_length))
        WHERE rank = 1;
        CREATE VIEW event_checks AS SELECT *,
            origin NOT IN ('LOCAL', 'REMOTE') AS bad_origin_known,
            length(event_type) > 64 AS bad_event_type_length,
            NOT json_valid(data) AS bad_data_json_object,
            event_type = 'state_changed' AND entity_id IS NULL AS bad_state_changed_has_entity_id
        FROM events;
    """)
    return con


def _one(con: duckdb.DuckDBPyConnection, query: str):
    return con.execute(query).fetchall()[0][0]


def test_events_per_type(report, sql):
    expected = dict(sql.execute("SELECT event_type, count(*) FROM events GROUP BY 1").fetchall())
    assert {row["event_type"]: row["count"] for row in report["events"]["by_type"]} == expected
    # the scenario's copy of an event is one event: the table keeps one row per event_id
    assert report["events"]["total"] == _one(sql, "SELECT count(*) FROM events") == 10056


def test_completeness(report, sql, scenario):
    c = report["completeness"]
    assert c["state_changed_events"] == _one(sql, "SELECT count(*) FROM events WHERE event_type = 'state_changed'")
    assert c["live_state_rows"] == _one(sql, "SELECT count(*) FROM states WHERE source = 'live'")
    matched = _one(
        sql,
        "SELECT count(*) FROM events e JOIN states s USING (event_id) "
        "WHERE e.event_type = 'state_changed' AND s.source = 'live'",
    )
    assert c["state_changed_with_live_row"] == matched == 5306
    # the scenario's state_changed event without entity and live row without event_id
    assert (c["state_changed_without_live_row"], c["live_rows_without_event"]) == (1, 1)
    assert c["state_rows_by_source"] == dict(
        sql.execute(
            "SELECT source, count(*) FROM states WHERE source IN ('live', 'snapshot', 'backfill') GROUP BY 1"
        ).fetchall()
    )
    core_config = f"{scenario.lake}/registry/core_config/date={scenario.date}/*.parquet"
    assert c["connects"] == _one(sql, f"SELECT count(*) FROM read_parquet('{core_config}')") == 1
    quarantine = f"{scenario.lake}/quarantine/date={scenario.date}/*.parquet"
    assert c["collector_quarantine_by_stage"] == dict(
        sql.execute(f"SELECT stage, count(*) FROM read_parquet('{quarantine}') GROUP BY 1").fetchall()
    )

    gaps = sql.execute(f"""
        WITH times AS (
            SELECT time_fired AS t FROM events
            UNION ALL SELECT TIMESTAMPTZ '{scenario.date} 00:00:00+00'
            UNION ALL SELECT TIMESTAMPTZ '{scenario.date} 00:00:00+00' + INTERVAL 1 DAY),
        spans AS (SELECT t AS start, lead(t) OVER (ORDER BY t) AS stop FROM times)
        SELECT start, stop, epoch(stop) - epoch(start) AS seconds,
               (SELECT count(*) FROM valid_states WHERE source = 'backfill'
                AND last_updated > start AND last_updated < stop) AS backfill
        FROM spans WHERE stop - start > INTERVAL {int(GAP_MINUTES * 60)} SECOND ORDER BY start""").fetchall()
    assert [(g["start"], g["end"], g["backfill_rows"]) for g in c["gaps"]] == [
        (start.isoformat(), stop.isoformat(), backfill) for start, stop, _, backfill in gaps
    ]
    assert [g["seconds"] for g in c["gaps"]] == pytest.approx([seconds for *_, seconds, _ in gaps])
    # the scenario's backfilled changes after the capture: 3 °F readings, 3 unavailable/recovered, 2 late
    assert c["gaps"][-1]["backfill_rows"] == 8
    assert c["coverage_share"] == pytest.approx(1 - sum(g[2] for g in gaps) / 86400, abs=1e-6)


def test_completeness_against_the_collectors_own_counters(report, sql, scenario):
    c = report["completeness"]["collector"]
    lake, date = scenario.lake, scenario.date
    [(collector_id, connected_at, disconnected_at)] = sql.execute(
        "SELECT collector_id, connected_at, disconnected_at "
        f"FROM read_parquet('{lake}/collector_sessions/*/*.parquet') WHERE collector_id <> 'scenario'"
    ).fetchall()

    def received(table: str, collector: str, start, end, where: str = "true") -> int:
        return _one(
            sql,
            f"SELECT count(*) FROM read_parquet('{lake}/{table}/*/part-*-{collector}.parquet') "
            f"WHERE received_at BETWEEN '{start}' AND '{end}' AND {where}",
        )

    sessions = {s["collector_id"]: s for s in c["sessions"]}
    assert list(sessions) == [collector_id, "scenario"] and c["sessions_recorded"]
    # the real collector's session: everything it counted is in the lake, the whole recording on this day
    real = sessions[collector_id]
    events = received("events", collector_id, connected_at, disconnected_at)
    assert real["events_received"] == real["events_committed"] == real["events_in_lake"] == events == 10052
    assert (real["events_not_in_lake"], real["day_events"], real["closed"]) == (0, 10052, True)
    assert real["quarantined"] == real["quarantine_rows_in_lake"] == 0
    assert (
        real["backfill_rows"]
        == real["backfill_rows_in_lake"]
        == received("states", collector_id, connected_at, disconnected_at, "source = 'backfill'")
    )
    # the scenario's session: its 9 backfilled rows are in the lake, the 2 events it claims are not
    claimed = sessions["scenario"]
    assert (claimed["events_received"], claimed["events_in_lake"], claimed["events_not_in_lake"]) == (2, 0, 2)
    window = scenario.session["connected_at"], scenario.session["disconnected_at"]
    assert (
        claimed["backfill_rows"]
        == claimed["backfill_rows_in_lake"]
        == received("states", "scenario", *window, "source = 'backfill'")
        == 9
    )
    assert claimed["day_events"] == received("events", "scenario", *window) == 0
    assert c["totals"]["events_received"] - c["totals"]["events_in_lake"] == 2
    # the day's events from no session: the broken ones (a writer without sessions); the scenario's copy of
    # the first event is the collector's event, which the table keeps once
    assert c["day_events_without_session"] == [
        {"collector_id": "broken", "events": 4, "collector_has_sessions": False},
    ]
    # the one recorded gap (the real session was a first start: no gap), with the validated backfilled rows in it
    gap_start = scenario.session["gap_start"]
    inside = _one(
        sql,
        f"SELECT count(*) FROM valid_states WHERE source = 'backfill' AND last_updated > "
        f"'{gap_start.isoformat()}' AND last_updated < '{date} 23:30:00+00'",
    )
    assert c["gaps"] == [
        {
            "collector_id": "scenario",
            "session_id": 1,
            "start": gap_start.isoformat(),
            "end": f"{date}T23:30:00+00:00",
            "seconds": pytest.approx((dt.datetime.fromisoformat(f"{date}T23:30:00+00:00") - gap_start).total_seconds()),
            "backfill_from": (gap_start - dt.timedelta(seconds=60)).isoformat(),
            "backfill_rows": 9,
            "backfill_rows_validated_in_day": inside,
        }
    ]
    assert inside == 8  # 3 °F readings, 3 unavailable/recovered, 2 late: the out-of-order row is before the gap


STATE_RULES_IN_SQL = (
    "entity_id_format",
    "domain_matches_entity_id",
    "last_changed_not_after_last_updated",
    "last_updated_plausible",
    "attributes_json_object",
    "source_known",
    "state_num_finite",
    "state_num_matches_state",
    "live_row_has_event_id",
    "state_length",
)
EVENT_RULES_IN_SQL = ("origin_known", "event_type_length", "data_json_object", "state_changed_has_entity_id")


def test_validation_pass_rate_per_rule(report, sql):
    states = report["validation"]["states"]
    input_rows = _one(sql, "SELECT count(*) FROM states")
    assert states["input_rows"] == input_rows
    assert states["validated_rows"] == _one(sql, "SELECT count(*) FROM valid_states")
    per_rule = {r["rule"]: r for r in states["rules"]}
    for rule in STATE_RULES_IN_SQL:
        failed = _one(sql, f"SELECT count(*) FROM state_checks WHERE bad_{rule}")
        assert per_rule[rule]["failed_rows"] == failed, rule
        assert per_rule[rule]["pass_rate"] == pytest.approx(1 - failed / input_rows, abs=1e-6)
    assert sum(per_rule[rule]["failed_rows"] for rule in STATE_RULES_IN_SQL) == 12  # 11 rows, one breaks two
    assert all(
        r["failed_rows"] == 0 for name, r in per_rule.items() if name not in STATE_RULES_IN_SQL and name != "duplicate"
    )

    events = report["validation"]["events"]
    per_rule = {r["rule"]: r for r in events["rules"]}
    for rule in EVENT_RULES_IN_SQL:
        assert per_rule[rule]["failed_rows"] == _one(sql, f"SELECT count(*) FROM event_checks WHERE bad_{rule}") == 1
    assert events["input_rows"] == events["validated_rows"] + events["quarantined_rows"]


def test_duplicates_removed(report, sql):
    expected = _one(
        sql,
        """
        SELECT count(*) - count(DISTINCT (home, entity_id, last_updated)) FROM state_checks
        WHERE source IN ('live', 'snapshot', 'backfill') AND NOT (bad_entity_id_format OR bad_last_updated_plausible
            OR bad_attributes_json_object OR bad_state_num_finite OR bad_state_num_matches_state
            OR bad_live_row_has_event_id OR bad_state_length OR bad_last_changed_not_after_last_updated
            OR bad_domain_matches_entity_id)""",
    )
    # the scenario's 4 copies of states and 1 of an event: the table loader kept one row per identity, so
    # none reaches validation
    dups = report["duplicates_removed"]
    assert dups["states"] == expected == 0
    assert dups["states_by_source"] == {}
    assert dups["events"] == _one(sql, "SELECT count(*) - count(DISTINCT event_id) FROM events") == 0
    assert report["validation"]["states"]["rules"][-1] == {
        "rule": "duplicate",
        "description": report["validation"]["states"]["rules"][-1]["description"],
        "failed_rows": 0,
        "pass_rate": 1.0,
    }


def test_late_rows(report, sql):
    late = _one(
        sql,
        """
        WITH lags AS (SELECT *, epoch(received_at) - epoch(last_updated) AS lag FROM valid_states),
             usual AS (SELECT median(lag) AS m FROM lags WHERE source = 'live')
        SELECT count(*) FROM lags, usual WHERE lag - m > 600""",
    )
    assert report["late"]["states"]["late"] == late == 3
    assert report["late"]["states"]["out_of_order"] == 1


def test_entities_gone_silent(report, sql, scenario):
    cutoff = dt.datetime.fromisoformat(scenario.date).replace(tzinfo=dt.UTC) + dt.timedelta(
        days=1, hours=-SILENT_AFTER_HOURS
    )
    expected = sql.execute(f"""
        WITH history AS (SELECT entity_id, last_updated, state FROM valid_states
                         UNION ALL SELECT entity_id, last_updated, state FROM earlier_states),
             newest AS (SELECT entity_id, max(last_updated) AS last, arg_max_null(state, last_updated) AS state
                        FROM history GROUP BY 1)
        SELECT entity_id FROM newest WHERE state IS NOT NULL AND last < TIMESTAMPTZ '{cutoff.isoformat()}'
        ORDER BY 1""").fetchall()
    silent = report["silence"]["silent"]
    assert sorted(row["entity_id"] for row in silent) == [e for (e,) in expected]
    # 19:00 is the cutoff: the scenario's later changes keep these entities out of the list
    names = {row["entity_id"] for row in silent}
    assert {"light.bed_light", "input_boolean.guest_mode"}.isdisjoint(names)
    assert {"sensor.house_power", "sensor.living_room_temperature", "person.paulus"} <= names
    assert [r["entity_id"] for r in report["silence"]["removed"]] == ["sensor.carbon_dioxide"]
    assert report["silence"]["entities_seen"] == _one(
        sql,
        """
        SELECT count(DISTINCT entity_id) FROM (SELECT entity_id FROM valid_states
                                               UNION ALL SELECT entity_id FROM earlier_states)""",
    )


def test_unavailable_time_per_entity(report, sql, scenario):
    day = f"TIMESTAMPTZ '{scenario.date} 00:00:00+00'"
    expected = sql.execute(f"""
        WITH carried AS (SELECT entity_id, {day} AS last_updated, arg_max_null(state, last_updated) AS state
                         FROM earlier_states GROUP BY 1),
             rows AS (SELECT entity_id, last_updated, state FROM valid_states
                      UNION ALL SELECT * FROM carried),
             spans AS (SELECT entity_id, state, last_updated,
                              coalesce(lead(last_updated) OVER (PARTITION BY entity_id ORDER BY last_updated),
                                       {day} + INTERVAL 1 DAY) AS until FROM rows)
        SELECT entity_id, sum(epoch(until) - epoch(last_updated)) FROM spans WHERE state = 'unavailable'
        GROUP BY 1 ORDER BY 1""").fetchall()
    got = {row["entity_id"]: row["unavailable_seconds"] for row in report["unavailable"]}
    assert got == pytest.approx(dict(expected), abs=1e-3)
    # by hand: 18:00-18:30, 23:00-24:00, and from midnight until the state the collector saw at 17:22:58.054737
    assert got == pytest.approx(
        {
            "sensor.house_power": 1800.0,
            "light.bed_light": 3600.0,
            "sensor.outside_temperature": 17 * 3600 + 22 * 60 + 58.054737,
        },
        abs=1e-3,
    )
    power = next(r for r in report["unavailable"] if r["entity_id"] == "sensor.house_power")
    assert (power["became_unavailable"], power["share_of_day"]) == (1, pytest.approx(1800 / 86400, abs=1e-6))
    carried = next(r for r in report["unavailable"] if r["entity_id"] == quality_scenario.CARRIED_IN_UNAVAILABLE)
    assert carried["became_unavailable"] == 0  # it already was when the day began


def test_the_page_reads_well(report, scenario):
    page = (scenario.lake / "reports" / "quality" / f"date={scenario.date}" / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page
    for text in (
        "Data quality · maple_house · 2026-11-26",
        "Events per type",
        "Completeness",
        "Validation",
        "Duplicates and late data",
        "Entities gone silent",
        "Unavailable time per entity",
        "<code>attributes_json_object</code>",
        "sensor.outside_temperature",
        "17 h 22 min",
        "10,056",
        "The collector's own counters",
        "10,052 / 10,052 / 10,052",
        "2 / 2 / 0",
        "9 / 9",
        "Gaps the collector recorded",
        "<code>broken</code>",
        "Automation graph",
    ):
        assert text in page, text


def test_the_page_embeds_the_automation_graph(report, scenario):
    page = (scenario.lake / "reports" / "quality" / f"date={scenario.date}" / "report.html").read_text()
    picture = scenario.lake / "reports" / "automation_graph.png"
    assert report["automation_graph"]["png"] == "reports/automation_graph.png"
    assert report["automation_graph"]["exists"] is True
    embedded = page.split('<img alt="automation graph" src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    assert base64.b64decode(embedded) == picture.read_bytes()
    assert picture.read_bytes().startswith(b"\x89PNG")


def test_a_lake_without_session_records_or_graph_says_so(fixture_lake, tmp_path):
    """A lake written by a collector older than collector_sessions, with no automation graph drawn yet."""
    lake = tmp_path / "lake"
    shutil.copytree(fixture_lake, lake)
    shutil.rmtree(lake / "collector_sessions")
    load_tables(lake)
    [date] = LakeResource(root=str(lake)).raw_dates("events")
    result = dg.materialize(
        [assets.validation, assets.quality_report], partition_key=date, resources={"lake": LakeResource(root=str(lake))}
    )
    assert result.success
    directory = lake / "reports" / "quality" / f"date={date}"
    figures = json.loads((directory / "report.json").read_text())
    collector = figures["completeness"]["collector"]
    assert (collector["sessions_recorded"], collector["sessions"], collector["gaps"]) == (False, [], [])
    [writer] = collector["day_events_without_session"]
    assert (writer["events"], writer["collector_has_sessions"]) == (10052, False)
    assert figures["automation_graph"]["exists"] is False
    page = (directory / "report.html").read_text()
    assert "No session record exists for this day" in page
    assert "The picture does not exist yet" in page and "<img" not in page


def test_a_rerun_writes_the_same_report(report, scenario):
    result = dg.materialize(
        [assets.validation, assets.quality_report],
        partition_key=scenario.date,
        resources={"lake": LakeResource(root=str(scenario.lake))},
        run_config=dg.RunConfig(
            ops={
                "derived__quality_report": assets.QualityReportConfig(
                    silent_after_hours=SILENT_AFTER_HOURS, gap_minutes=GAP_MINUTES
                )
            }
        ),
    )
    assert result.success
    again = json.loads((scenario.lake / "reports" / "quality" / f"date={scenario.date}" / "report.json").read_text())
    assert again == report


def test_the_schedule_reports_the_day_that_just_ended(tmp_path: Path):
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 27, 0, 30, tzinfo=dt.UTC))
    request = daily_quality_report(context)
    assert (request.partition_key, request.run_key) == ("2026-11-26", "quality-report-2026-11-26")
    definitions = dg.Definitions(
        assets=[assets.validation, assets.quality_report],
        schedules=[daily_quality_report],
        resources={"lake": LakeResource(root=str(tmp_path))},
    )
    job = definitions.resolve_job_def(daily_quality_report.job_name)
    assert job.asset_layer.executable_asset_keys == {
        assets.VALIDATED_EVENTS,
        assets.VALIDATED_STATES,
        assets.VALIDATION_QUARANTINE,
        assets.QUALITY_REPORT,
    }
    assert daily_quality_report.default_status == dg.DefaultScheduleStatus.RUNNING


def test_the_report_needs_the_validation_of_its_day(fixture_lake):
    lake = LakeResource(root=str(fixture_lake))
    [date] = lake.raw_dates("states")
    with pytest.raises(dg.Failure, match="materialise the validation assets first"):
        assets.report_inputs(lake, date, 1)


def test_a_day_with_one_state_and_no_events(report, scenario):
    day = scenario.previous_date
    result = dg.materialize(
        [assets.validation, assets.quality_report],
        partition_key=day,
        resources={"lake": LakeResource(root=str(scenario.lake))},
    )
    assert result.success
    figures = json.loads((scenario.lake / "reports" / "quality" / f"date={day}" / "report.json").read_text())
    assert figures["events"] == {"total": 0, "by_type": []}
    assert [g["seconds"] for g in figures["completeness"]["gaps"]] == [86400.0]
    assert figures["validation"]["states"]["input_rows"] == figures["validation"]["states"]["validated_rows"] == 1
    # the scenario's one state of that day: unavailable from 23:00 until the day ended
    assert figures["unavailable"] == [
        {
            "home": "maple_house",
            "entity_id": quality_scenario.CARRIED_IN_UNAVAILABLE,
            "unavailable_seconds": 3600.0,
            "became_unavailable": 1,
            "share_of_day": round(3600 / 86400, 6),
        }
    ]
    assert figures["silence"]["entities_seen"] == 1
    # no collector session touched that day: the report says so
    assert figures["completeness"]["collector"]["sessions_recorded"] is False
    assert figures["completeness"]["collector"]["totals"]["events_received"] == 0
