"""Reading the warehouse while the pipelines write it: the published snapshot, never the working file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.sql_models.project import default_models_dir, load_project
from ha_ingestor_pipelines.defs.sql_models.warehouse import (
    WarehouseBusyError,
    build_model,
    connect_snapshot,
    publish_snapshot,
    refresh_source_views,
    snapshot_path,
    writer_connection,
)

PROJECT = load_project(default_models_dir())


def _build_everything(lake: Path, database: Path) -> None:
    with writer_connection(database) as connection:
        refresh_source_views(connection, PROJECT.sources.values(), LakeResource(root=str(lake)).store)
        for name in PROJECT.order:
            build_model(connection, PROJECT.models[name])
        publish_snapshot(connection, database)


def _read_in_another_process(path: Path, sql: str) -> subprocess.CompletedProcess:
    code = f"import duckdb; print(duckdb.connect({str(path)!r}, read_only=True).execute({sql!r}).fetchall()[0][0])"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.fixture
def built(fixture_lake, tmp_path) -> Path:
    database = tmp_path / "warehouse.duckdb"
    _build_everything(fixture_lake, database)
    return database


def test_the_snapshot_is_readable_while_a_writer_holds_the_working_file(built):
    with duckdb.connect(str(snapshot_path(built)), read_only=True) as reader:
        runs = reader.execute("SELECT count(*) FROM automation.automation_runs").fetchall()[0][0]
        events = reader.execute("SELECT count(*) FROM events").fetchall()[0][0]
    with writer_connection(built) as writer:
        writer.execute("BEGIN TRANSACTION")
        writer.execute("CREATE OR REPLACE TABLE automation.automation_runs AS SELECT * FROM events LIMIT 0")
        # the working file is locked: DuckDB refuses even a read-only connection from another process
        blocked = _read_in_another_process(built, "SELECT count(*) FROM automation.automation_runs")
        assert blocked.returncode != 0 and "Could not set lock" in blocked.stderr
        # the snapshot answers, with the model tables and the live views over the lake
        snapshot = snapshot_path(built)
        assert (
            _read_in_another_process(snapshot, "SELECT count(*) FROM automation.automation_runs").stdout.strip()
            == str(runs)
            == "684"
        )
        assert _read_in_another_process(snapshot, "SELECT count(*) FROM events").stdout.strip() == str(events)
        writer.execute("ROLLBACK")


def test_a_new_snapshot_replaces_the_old_one_under_open_readers(built):
    reader = connect_snapshot(built)
    before = reader.execute("SELECT count(*) FROM core.dim_entities").fetchall()[0][0]
    with writer_connection(built) as writer:
        writer.execute("CREATE OR REPLACE TABLE core.dim_entities AS SELECT * FROM core.dim_entities LIMIT 3")
        publish_snapshot(writer, built)
    assert reader.execute("SELECT count(*) FROM core.dim_entities").fetchall()[0][0] == before > 3
    assert (
        _read_in_another_process(snapshot_path(built), "SELECT count(*) FROM core.dim_entities").stdout.strip() == "3"
    )
    reader.close()
    assert sorted(p.name for p in built.parent.iterdir()) == [
        "warehouse.duckdb",
        "warehouse.duckdb.writer.lock",
        "warehouse.snapshot.duckdb",
    ]


def test_writers_take_turns_and_a_foreign_holder_gets_a_clear_error(built):
    with writer_connection(built) as first:
        first.execute("CREATE OR REPLACE TABLE core.scratch AS SELECT 1 AS x")
        # a second writer in this process waits on the lock file like one in another process would
        with pytest.raises(WarehouseBusyError, match="writer lock"), writer_connection(built, timeout_s=0.3):
            pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import duckdb, sys, time
        connection = duckdb.connect({str(built)!r})
        print("holding", flush=True)
        sys.stdin.readline()
    """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(WarehouseBusyError, match="snapshot.duckdb instead"), writer_connection(built, timeout_s=1):
            pass
    finally:
        holder.communicate("\n", timeout=30)


def test_a_reader_queries_the_snapshot_throughout_a_pipeline_run(built, fixture_lake):
    """The real thing: the model assets materialise in another process while this one keeps reading."""
    code = textwrap.dedent(f"""
        import dagster as dg
        from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource, WarehouseResource
        from ha_ingestor_pipelines.defs.sql_models.assets import build_assets
        from ha_ingestor_pipelines.defs.sql_models.checks import build_checks
        from ha_ingestor_pipelines.defs.sql_models.project import default_models_dir, load_project
        project = load_project(default_models_dir())
        result = dg.materialize([*build_assets(project), *build_checks(project)], resources={{
            "lake": LakeResource(root={str(fixture_lake)!r}),
            "warehouse": WarehouseResource(database={str(built)!r})}})
        raise SystemExit(0 if result.success else 1)
    """)
    writer = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    reads = while_locked = 0
    deadline, next_probe = time.monotonic() + 300, 0.0
    while writer.poll() is None and time.monotonic() < deadline:
        with duckdb.connect(str(snapshot_path(built)), read_only=True) as reader:
            assert reader.execute("SELECT count(*) FROM automation.automation_runs").fetchall()[0][0] == 684
        reads += 1
        if time.monotonic() > next_probe:
            # now and then, evidence that the writer is at work: the working file refuses a reader
            next_probe = time.monotonic() + 0.3
            try:
                duckdb.connect(str(built), read_only=True).close()
            except duckdb.IOException as error:
                assert "lock" in str(error)
                while_locked += 1
        time.sleep(0.01)
    _, stderr = writer.communicate(timeout=60)
    assert writer.returncode == 0, stderr[-3000:]
    assert reads > 10 and while_locked > 0, (reads, while_locked)
