"""The documented PostgreSQL instance (dagster-postgres.yaml) against the real PostgreSQL on this machine: a
throwaway database per test run, materialisations, run and sensor storage, then the database is dropped."""

import os
import shutil
import uuid
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from ha_ingestor_pipelines.defs.common.asset_keys import LAKE_STATES, RAW_TABLE_KEYS
from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.lake.assets import lake_tables
from ha_ingestor_pipelines.defs.platform.sensors import lake_commits_sensor

REPO = Path(__file__).resolve().parents[2]
PG = {
    "host": os.environ.get("DAGSTER_TEST_PG_HOST", "127.0.0.1"),
    "port": int(os.environ.get("DAGSTER_TEST_PG_PORT", "5432")),
    "user": os.environ.get("DAGSTER_TEST_PG_USER", "postgres"),
    "password": os.environ.get("DAGSTER_TEST_PG_PASSWORD", ""),
}


def admin_connection():
    connection = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    connection.autocommit = True
    return connection


@pytest.fixture
def postgres_database():
    try:
        admin = admin_connection()
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {PG['host']}:{PG['port']}: {exc}")
    name = f"hai_dagster_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def postgres_instance(postgres_database, tmp_path, monkeypatch):
    """A Dagster instance configured by the repository's dagster-postgres.yaml, as a user would deploy it."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster-postgres.yaml", home / "dagster.yaml")
    for key, value in {
        "HOST": PG["host"],
        "PORT": str(PG["port"]),
        "USER": PG["user"],
        "PASSWORD": PG["password"],
        "DB": postgres_database,
    }.items():
        monkeypatch.setenv(f"DAGSTER_PG_{key}", value)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        instance.dispose()


def test_materialisations_runs_and_sensor_state_live_in_postgresql(
    postgres_instance, postgres_database, fixture_lake, tmp_path
):
    lake = tmp_path / "lake"
    shutil.copytree(fixture_lake, lake)
    [date] = LakeResource(root=str(lake)).raw_dates("states")
    resources = {"lake": LakeResource(root=str(lake))}
    rows = []
    for _ in range(2):
        result = dg.materialize([lake_tables], partition_key=date, resources=resources, instance=postgres_instance)
        assert result.success
        rows.append(postgres_instance.get_latest_materialization_event(LAKE_STATES).asset_materialization.metadata)

    assert postgres_instance.get_materialized_partitions(LAKE_STATES) == {date}
    latest = postgres_instance.get_latest_materialization_event(LAKE_STATES)
    assert latest.asset_materialization.partition == date
    # the second load of the day replaced it with the same rows, one Delta version later
    assert rows[1]["dagster/row_count"].value == rows[0]["dagster/row_count"].value > 0
    assert rows[1]["delta_version"].value == rows[0]["delta_version"].value + 1
    assert len(postgres_instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))) == 2

    context = dg.build_sensor_context(instance=postgres_instance, resources=resources)
    [request] = lake_commits_sensor(context).run_requests  # its unfinished-runs query runs against PostgreSQL
    assert request.partition_key == date

    with psycopg2.connect(dbname=postgres_database, **PG) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
        assert cursor.fetchone()[0] == 2
        cursor.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
        assert cursor.fetchone()[0] == 2 * len(RAW_TABLE_KEYS)
