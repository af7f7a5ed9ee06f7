"""The Delta tables on an S3-compatible object store: moto's S3 server (with IAM authentication) on a local port."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import dagster as dg
import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ha_ingestor_lake.files import part_files
from ha_ingestor_lake.tables import TableAccessError
from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.lake.assets import lake_tables
from ha_ingestor_pipelines.defs.lake.load import RAW_TABLES
from ha_ingestor_pipelines.defs.platform.assets import table_maintenance
from ha_ingestor_pipelines.defs.quality.assets import validation
from ha_ingestor_pipelines.defs.sql_models.project import default_models_dir, load_project
from ha_ingestor_pipelines.defs.sql_models.warehouse import refresh_source_views

PROJECT = load_project(default_models_dir())
BUCKET = "lake"
COPIES = 80  # shifted copies of the day's states in the large file whose upload is cut


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key_id: str
    secret_access_key: str

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name="us-east-1",
        )

    def lake(self, root: Path, prefix: str, **overrides) -> LakeResource:
        settings = {
            "root": str(root),
            "tables": f"s3://{BUCKET}/{prefix}",
            "s3_endpoint_url": self.endpoint,
            "s3_access_key_id": self.access_key_id,
            "s3_secret_access_key": self.secret_access_key,
        }
        return LakeResource(**(settings | overrides))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[S3Server]:
    """moto in server mode; after the first three unauthenticated calls (an IAM user, its policy, its key) every
    request must be signed with a key moto knows, as on a real store."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, log.read_text()
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client(
            "iam", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
        )
        iam.create_user(UserName="lake")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="lake", PolicyName="all", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="lake")["AccessKey"]
        running = S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
        running.client().create_bucket(Bucket=BUCKET)
        yield running
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def landing(fixture_lake, tmp_path) -> Path:
    """A copy of the fixture's landing zone (its local tables left behind)."""
    root = tmp_path / "lake"
    shutil.copytree(fixture_lake, root, ignore=shutil.ignore_patterns("tables"))
    return root


def _objects(s3: S3Server, prefix: str) -> set[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def test_round_trip_through_the_object_store(s3, landing, fixture_lake):
    lake = s3.lake(landing, "round-trip")
    local = LakeResource(root=str(fixture_lake))
    [day] = local.raw_dates("states")
    assert dg.materialize([lake_tables], partition_key=day, resources={"lake": lake}).success
    assert dg.materialize([validation], partition_key=day, resources={"lake": lake}).success

    for name in RAW_TABLES:
        assert_frame_equal(
            lake.scan_raw_days(name).collect(), local.scan_raw_days(name).collect(), check_row_order=False
        )
    assert lake.raw_dates("states") == [day]
    assert lake.scan_day("validated_states", day).collect().height > 5000
    assert not (landing / "tables").exists()  # nothing of the tables on local disk
    assert any(key.startswith(f"round-trip/states/date={day}/") for key in _objects(s3, "round-trip/"))
    assert lake.store.names() == sorted([*RAW_TABLES, "validated_events", "validated_states", "validation_quarantine"])

    # the warehouse copies each table's current version in, once per version
    with duckdb.connect() as connection:
        refresh_source_views(connection, PROJECT.sources.values(), lake.store)
        states = connection.execute("SELECT count(*) FROM states").fetchall()[0][0]
        assert states == local.scan_raw("states", day).collect().height
        versions = dict(connection.execute("SELECT source, version FROM main._lake_versions").fetchall())
        assert versions["main.states"] == lake.store.table("states").version()
        assert connection.execute("SELECT count(*) FROM registry.entities").fetchall()[0][0] > 0

    # upkeep works there too: optimize and vacuum list and rewrite objects
    result = dg.materialize([table_maintenance], partition_key=day, resources={"lake": lake})
    assert result.success
    assert lake.scan_raw("states", day).collect().height == states


def test_an_upload_killed_mid_write_leaves_the_previous_version_whole(s3, landing):
    lake = s3.lake(landing, "killed")
    [day] = [d.name.removeprefix("date=") for d in (landing / "states").glob("date=*")]
    assert dg.materialize([lake_tables], partition_key=day, resources={"lake": lake}).success
    before = lake.scan_raw("states", day).collect()
    version = lake.store.table("states").version()
    # one more, large, landing file for the day: its upload takes long enough to be cut
    source = part_files(landing / "states" / f"date={day}")[0].path
    big = landing / "states" / f"date={day}" / "part-900000000000-900000000000-big.parquet"
    rows = pl.read_parquet(landing / "states" / f"date={day}" / "part-*.parquet")
    pl.concat(
        [rows.with_columns(pl.col("last_updated") + pl.duration(microseconds=n)) for n in range(1, COPIES + 1)]
    ).write_parquet(big)
    assert source.exists()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            from pathlib import Path
            from ha_ingestor_lake.tables import TableStore
            from ha_ingestor_pipelines.defs.lake.load import load_day
            loaded = load_day(Path({str(landing)!r}), "states", {day!r})
            store = TableStore({lake.store.root!r}, {lake.store.storage_options!r}, target_file_bytes=1_000_000)
            store.write("states", loaded.rows, day={day!r})
            """),
        ]
    )
    deadline = time.monotonic() + 120
    # the day is cut into several data files, uploaded one after the other: kill the writer once the first is up
    known = _objects(s3, f"killed/states/date={day}/")
    while not _objects(s3, f"killed/states/date={day}/") - known:
        assert child.poll() is None, "the load finished before an object appeared"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    child.kill()
    child.wait()

    assert child.returncode == -9
    assert lake.store.table("states").version() == version
    # objects of the cut write are on the store, and no version refers to them
    orphans = {f"s3://{BUCKET}/{key}" for key in _objects(s3, f"killed/states/date={day}/") - known}
    assert orphans and not orphans & set(lake.store.table("states").file_uris())
    assert_frame_equal(lake.scan_raw("states", day).collect(), before, check_row_order=False)
    assert dg.materialize([lake_tables], partition_key=day, resources={"lake": lake}).success
    assert lake.scan_raw("states", day).collect().height == before.height + COPIES * rows.height


def test_wrong_credentials_give_a_clear_error(s3, landing):
    lake = s3.lake(landing, "credentials", s3_secret_access_key="not-the-secret")
    [day] = [d.name.removeprefix("date=") for d in (landing / "states").glob("date=*")]
    with pytest.raises(TableAccessError, match="refused the request .403.: check the access key and secret"):
        lake.store.table("states")
    result = dg.materialize([lake_tables], partition_key=day, resources={"lake": lake}, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "HA_INGESTOR_S3_SECRET_ACCESS_KEY" in failure.step_failure_data.error.cause.message
    unknown = s3.lake(landing, "credentials", s3_access_key_id="AKIAUNKNOWN")
    with pytest.raises(TableAccessError, match="refused"):
        unknown.store.write("states", lake.scan_raw("states", day).collect(), day=day)
