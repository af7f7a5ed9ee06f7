"""The raw Delta tables loaded from the landing zone: idempotent days, bad files set aside, retention, a killed
load, and readers during optimize."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import time_machine
from deltalake import write_deltalake
from polars.testing import assert_frame_equal

from ha_ingestor_lake.files import part_files, part_name
from ha_ingestor_lake.schema import COLLECTOR_SESSIONS, DATE_COLUMN, IDENTITY, STATES, table_schema
from ha_ingestor_lake.tables import TableStore
from ha_ingestor_pipelines.defs.common.asset_keys import RAW_TABLE_KEYS
from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.lake.assets import LANDING_FILES_CHECK, lake_tables
from ha_ingestor_pipelines.defs.lake.load import PRUNED_MARKER, RAW_TABLES, SET_ASIDE_STAGE
from ha_ingestor_pipelines.defs.sql_models.project import Source, default_models_dir, load_project
from ha_ingestor_pipelines.defs.sql_models.warehouse import refresh_source_views

PROJECT = load_project(default_models_dir())


@pytest.fixture
def lake_root(fixture_lake, tmp_path) -> Path:
    root = tmp_path / "lake"
    shutil.copytree(fixture_lake, root)
    return root


def load(root: Path, day: str, **settings) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [lake_tables], partition_key=day, resources={"lake": LakeResource(root=str(root), **settings)}
    )


def table(lake: LakeResource, name: str, day: str) -> pl.DataFrame:
    return lake.store.scan(name).filter(pl.col(DATE_COLUMN) == dt.date.fromisoformat(day)).collect()


def landed(root: Path, location: str, day: str) -> pl.DataFrame:
    return pl.read_parquet(root / location / f"date={day}" / "part-*.parquet", missing_columns="insert")


def test_a_rerun_of_a_day_gives_the_same_tables(lake_root):
    lake = LakeResource(root=str(lake_root))
    [day] = lake.raw_dates("states")
    before = {name: table(lake, name, day) for name in RAW_TABLES}
    versions = {name: lake.store.table(name).version() for name in RAW_TABLES if lake.store.exists(name)}
    assert load(lake_root, day).success
    for name in RAW_TABLES:
        assert_frame_equal(table(lake, name, day), before[name], check_row_order=False)
    # exactly one transaction per table replaced the day
    assert {name: lake.store.table(name).version() for name in versions} == {n: v + 1 for n, v in versions.items()}
    # each landed row once, with the collector that wrote it
    states = before["states"]
    assert states.height == landed(lake_root, "states", day).height > 5000
    assert states.select(IDENTITY["states"]).is_unique().all()
    assert (
        states["collector_id"].n_unique() == 1
        and states["collector_id"][0] in part_files(lake_root / "states" / f"date={day}")[0].path.name
    )


def _hostile_files(root: Path, day: str) -> dict[str, Path]:
    """Files a person or a broken tool could leave in a landing day: each must be set aside whole."""
    states_dir = root / "states" / f"date={day}"
    good = part_files(states_dir)[0].path
    data = good.read_bytes()
    wrong_schema = states_dir / part_name(900_000_000_001, 900_000_000_001, "hostile")
    rows = pq.read_table(good)
    pq.write_table(rows.set_column(rows.schema.get_field_index("state_num"), "state_num", rows["state"]), wrong_schema)
    truncated = states_dir / part_name(900_000_000_002, 900_000_000_002, "hostile")
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = states_dir / part_name(900_000_000_003, 900_000_000_003, "hostile")
    middle = len(data) // 4
    corrupt.write_bytes(data[:middle] + b"\x00" * (len(data) // 2) + data[middle + len(data) // 2 :])
    stray = states_dir / "states-export.parquet"
    shutil.copy(good, stray)
    sessions_dir = next((root / "collector_sessions").glob("date=*"))
    misnamed = sessions_dir / part_name(1, 1, "hostile")
    shutil.copy(next(sessions_dir.glob("session-*.parquet")), misnamed)
    return {
        "wrong_schema": wrong_schema,
        "truncated": truncated,
        "corrupt": corrupt,
        "stray": stray,
        "misnamed": misnamed,
    }


def test_bad_landing_files_are_set_aside_and_the_day_still_loads(lake_root):
    lake = LakeResource(root=str(lake_root))
    [day] = lake.raw_dates("states")
    expected_states = table(lake, "states", day)
    # an older collector's file, without the spool_seq column the contract gained since: it loads, null there
    older = lake_root / "states" / f"date={day}" / part_name(900_000_000_010, 900_000_000_010, "older")
    extra = expected_states.head(3).with_columns(pl.col("last_updated") + dt.timedelta(microseconds=7))
    pq.write_table(extra.select([n for n in STATES.names if n != "spool_seq"]).to_arrow(), older)
    # a tool that writes times without a zone: taken as UTC
    naive = lake_root / "states" / f"date={day}" / part_name(900_000_000_011, 900_000_000_011, "naive")
    shifted = expected_states.head(2).with_columns(pl.col("last_updated") + dt.timedelta(microseconds=9))
    pq.write_table(
        shifted.select(STATES.names).with_columns(pl.col("last_updated").dt.replace_time_zone(None)).to_arrow(), naive
    )
    hostile = _hostile_files(lake_root, day)

    result = load(lake_root, day)
    assert result.success  # bad files never stop the day
    states = table(lake, "states", day)
    assert states.height == expected_states.height + 3 + 2
    assert states.filter(pl.col("collector_id") == "older")["spool_seq"].is_null().all()
    assert sorted(states.filter(pl.col("collector_id") == "naive")["last_updated"]) == sorted(shifted["last_updated"])
    assert states.select(IDENTITY["states"]).is_unique().all()

    quarantined = table(lake, "quarantine", day).filter(pl.col("stage") == SET_ASIDE_STAGE)
    reasons = dict(quarantined.select("raw", "reason").iter_rows())
    relative = {what: str(path.relative_to(lake_root)) for what, path in hostile.items()}
    assert set(reasons) == set(relative.values())
    assert "schema does not match the states contract: column state_num is string" in reasons[relative["wrong_schema"]]
    assert "unreadable Parquet" in reasons[relative["truncated"]]
    assert "unreadable Parquet" in reasons[relative["corrupt"]]
    assert "not a committed states file" in reasons[relative["stray"]]
    assert "not a committed collector_sessions file (a landing file is named session-*" in reasons[relative["misnamed"]]
    assert all(path.exists() for path in hostile.values())  # set aside in the table, kept in landing for a person

    evaluations = {e.asset_key: e for e in result.get_asset_check_evaluations()}
    states_check = evaluations[RAW_TABLE_KEYS["states"]]
    assert states_check.check_name == LANDING_FILES_CHECK
    assert not states_check.passed and states_check.severity == dg.AssetCheckSeverity.WARN
    assert {item["path"] for item in states_check.metadata["set_aside"].value} == {
        relative[w] for w in ("wrong_schema", "truncated", "corrupt", "stray")
    }
    assert not evaluations[RAW_TABLE_KEYS["collector_sessions"]].passed
    assert evaluations[RAW_TABLE_KEYS["events"]].passed

    # every reader sees the same rows: polars on the table, and DuckDB through the warehouse's views
    with duckdb.connect() as connection:
        refresh_source_views(connection, PROJECT.sources.values(), lake.store)
        assert connection.execute("SELECT count(*) FROM states").fetchall()[0][0] == states.height
        assert connection.execute("SELECT count(*) FROM quarantine WHERE stage = 'landing_file'").fetchall() == [(5,)]
        assert connection.execute("SELECT count(*) FROM states WHERE spool_seq IS NULL").fetchall() == [(3,)]


def test_a_session_keeps_its_newest_version(lake_root):
    lake = LakeResource(root=str(lake_root))
    [session_file] = lake_root.glob("collector_sessions/date=*/session-*.parquet")
    day = session_file.parent.name.removeprefix("date=")
    newest = pl.read_parquet(session_file)
    older = newest.with_columns(
        pl.col("updated_at") - dt.timedelta(minutes=5), pl.lit(None, pl.Datetime("us", "UTC")).alias("disconnected_at")
    )
    other_collector = session_file.with_name(session_file.name.replace("-", "-0", 1))  # session-0<id>-<collector>
    pq.write_table(older.to_arrow().cast(COLLECTOR_SESSIONS), other_collector)
    assert load(lake_root, day).success
    [row] = table(lake, "collector_sessions", day).to_dicts()
    assert row["updated_at"] == newest["updated_at"][0] and row["disconnected_at"] is not None


def test_landing_retention_keeps_the_rows_of_deleted_files(lake_root):
    lake = LakeResource(root=str(lake_root), landing_retention_days=2)
    [day] = lake.raw_dates("states")
    before = table(lake, "states", day)
    states_dir = lake_root / "states" / f"date={day}"
    with time_machine.travel(dt.datetime.fromisoformat(f"{day}T12:00:00+00:00") + dt.timedelta(days=2)):
        assert load(lake_root, day, landing_retention_days=2).success  # not older than 2 days yet: kept
    assert part_files(states_dir)
    with time_machine.travel(dt.datetime.fromisoformat(f"{day}T12:00:00+00:00") + dt.timedelta(days=3)):
        assert load(lake_root, day, landing_retention_days=2).success
    assert not part_files(states_dir) and (states_dir / PRUNED_MARKER).exists()
    assert_frame_equal(table(lake, "states", day), before, check_row_order=False)

    # a late backfill lands for that day (with a copy of a row the table has): the table keeps what it had
    late = before.head(2).with_columns(pl.col("last_updated") + dt.timedelta(microseconds=3)).vstack(before.tail(1))
    pq.write_table(
        late.select(STATES.names).to_arrow().cast(STATES),
        states_dir / part_name(900_000_000_020, 900_000_000_021, "late"),
    )
    assert load(lake_root, day).success
    after = table(lake, "states", day)
    assert after.height == before.height + 2 and after.select(IDENTITY["states"]).is_unique().all()


def _big_day(root: Path, day: str, copies: int) -> int:
    """Land ``copies`` shifted copies of the day's states as one more file; returns the rows the day then holds."""
    states = landed(root, "states", day)
    big = pl.concat(
        [states.with_columns(pl.col("last_updated") + dt.timedelta(microseconds=n)) for n in range(1, copies + 1)]
    )
    pq.write_table(
        big.to_arrow().cast(STATES), root / "states" / f"date={day}" / part_name(9 * 10**11, 9 * 10**11, "big")
    )
    return states.height + big.height


def _kill_when(process: subprocess.Popen, directory: Path, known: set[str], timeout: float) -> None:
    """kill -9 ``process`` as soon as a data file that is not in ``known`` appears in ``directory``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if directory.is_dir() and {p.name for p in directory.iterdir()} - known:
            process.kill()
            process.wait()
            return
        assert process.poll() is None, "the load ended before a new file appeared"
        time.sleep(0.001)
    process.kill()
    raise AssertionError("no new data file appeared")


def test_a_load_killed_mid_write_leaves_the_previous_version_whole(lake_root):
    lake = LakeResource(root=str(lake_root))
    [day] = lake.raw_dates("states")
    before = table(lake, "states", day)
    version = lake.store.table("states").version()
    rows = _big_day(lake_root, day, copies=60)
    partition = Path(lake.store.uri("states")) / f"{DATE_COLUMN}={day}"
    known = {p.name for p in partition.iterdir()}
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            from pathlib import Path
            from ha_ingestor_lake.tables import TableStore
            from ha_ingestor_pipelines.defs.lake.load import load_day
            loaded = load_day(Path({str(lake_root)!r}), "states", {day!r})
            TableStore({lake.store.root!r}).write("states", loaded.rows, day={day!r})
            """),
        ]
    )
    _kill_when(child, partition, known, timeout=120)

    assert child.returncode == -9
    assert lake.store.table("states").version() == version  # the commit never happened
    assert_frame_equal(table(lake, "states", day), before, check_row_order=False)
    assert pl.scan_delta(lake.store.uri("states")).select(pl.len()).collect().item() == before.height
    with duckdb.connect() as connection:
        refresh_source_views(connection, PROJECT.sources.values(), lake.store)
        assert connection.execute("SELECT count(*) FROM states").fetchall() == [(before.height,)]

    assert load(lake_root, day).success  # the next run loads the day whole
    assert table(lake, "states", day).height == rows


def test_readers_never_see_a_row_twice_during_or_after_optimize(lake_root):
    lake = LakeResource(root=str(lake_root))
    [day] = lake.raw_dates("states")
    rows = table(lake, "states", day)
    # a day in many small files, as a table written in many small appends holds it
    uri = lake.store.uri("scratch_states")
    for start in range(0, rows.height, 100):
        write_deltalake(uri, rows.slice(start, 100).to_arrow(), mode="append", partition_by=[DATE_COLUMN])
    files_before = len(lake.store.table("scratch_states").file_uris())
    source = Source(name="main.scratch", location="scratch_states", asset_key=("x",), description="", contract="states")
    stale = duckdb.connect()
    refresh_source_views(stale, [source], lake.store)  # a warehouse view made before the optimize

    def check(counts: tuple[int, int]) -> None:
        assert counts == (rows.height, rows.height)

    def polars_counts() -> tuple[int, int]:
        frame = pl.scan_delta(uri).select(pl.len(), pl.struct(*IDENTITY["states"]).n_unique()).collect()
        return frame.row(0)

    unique = "count(DISTINCT (home, entity_id, last_updated))"
    optimizer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json; from ha_ingestor_lake.tables import TableStore; "
            f"print(json.dumps(TableStore({lake.store.root!r}).optimize('scratch_states', {day!r})))",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    reads = 0
    while optimizer.poll() is None or reads < 3:
        check(polars_counts())
        fresh = duckdb.connect()
        refresh_source_views(fresh, [source], lake.store)
        check(fresh.execute(f"SELECT count(*), {unique} FROM scratch").fetchall()[0])
        check(stale.execute(f"SELECT count(*), {unique} FROM scratch").fetchall()[0])
        reads += 1
    assert optimizer.returncode == 0
    metrics = json.loads(optimizer.stdout.read())
    assert metrics["numFilesRemoved"] == files_before > 10 and metrics["numFilesAdded"] == 1
    assert len(lake.store.table("scratch_states").file_uris()) == 1
    check(polars_counts())
    # until vacuum, the files an older view reads stay; after it, a refreshed view reads the new ones
    check(stale.execute(f"SELECT count(*), {unique} FROM scratch").fetchall()[0])
    assert len(lake.store.vacuum("scratch_states", retention_hours=0)) == files_before
    after = duckdb.connect()
    refresh_source_views(after, [source], lake.store)
    check(after.execute(f"SELECT count(*), {unique} FROM scratch").fetchall()[0])
    # the table's history records what happened to it
    history = [commit["operation"] for commit in lake.store.table("scratch_states").history()]
    assert history[:3] == ["VACUUM END", "VACUUM START", "OPTIMIZE"]


def test_schema_evolution_merges_a_new_column(tmp_path):
    """A table written before the contract gained spool_seq takes the column on the next load of a day."""
    store = TableStore(str(tmp_path / "tables"))
    old_schema = table_schema("states").remove(table_schema("states").get_field_index("spool_seq"))
    old_day = pa.Table.from_pylist(
        [
            {
                "home": "h",
                "entity_id": "sensor.a",
                "last_updated": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                "date": dt.date(2026, 1, 1),
            }
        ],
        schema=old_schema,
    )
    store.write("states", old_day, day="2026-01-01")
    new_day = pa.Table.from_pylist(
        [
            {
                "home": "h",
                "entity_id": "sensor.a",
                "last_updated": dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
                "spool_seq": 7,
                "date": dt.date(2026, 1, 2),
            }
        ],
        schema=table_schema("states"),
    )
    store.write("states", new_day, day="2026-01-02")
    rows = store.scan("states").sort("last_updated").collect()
    assert rows["spool_seq"].to_list() == [None, 7]
    assert "spool_seq" not in store.scan("states", version=0).collect_schema()  # the old version as it was
