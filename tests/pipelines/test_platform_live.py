"""The whole platform as the README's main command starts it: the collector replaying the bundled recording,
Dagster's webserver and daemon, and the lake sensor launching runs that succeed; then a clean stop.

About 2 minutes (Dagster's processes start in ~10 s; a run of every derived asset in its own process
takes most of the rest). Marked ``slow``: deselect with ``-m 'not slow'``.
"""

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# the Python one-liner in README.md that queries the states table with DuckDB
README_QUERY = re.search(
    r'python -c "(import duckdb, deltalake.*?)"\n', (Path(__file__).resolve().parents[2] / "README.md").read_text()
)[1].replace('\\"', '"')
RUNS = """{ runsOrError(limit: 50) { ... on Runs { results { runId status tags { key value } } } } }"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())["data"]


def wait_for(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout:.0f} s; platform output:\n{log.read_text()[-3000:]}")


def test_the_platform_collects_and_runs_the_pipelines_on_its_own(tmp_path):
    log = tmp_path / "platform.log"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DAGSTER_HOME", "HA_URL", "HA_TOKEN", "HA_INGESTOR_LAKE", "HA_INGESTOR_WAREHOUSE")
    }
    env.update(HA_INGESTOR_DAGSTER_PORT=str(free_port()), HA_INGESTOR_METRICS_PORT="-1")
    with open(log, "wb") as output:
        platform = subprocess.Popen(
            [sys.executable, "-m", "ha_ingestor", "run", "--platform", "--speed", "40"],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        line = wait_for(
            lambda: next((x for x in log.read_text().splitlines() if x.startswith("Dagster UI: ")), None),
            180,
            "the Dagster UI answered",
            log,
        )
        url = line.split()[2]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/server_info", timeout=10) as reply:
            assert json.loads(reply.read())["dagster_version"]

        def sensor_runs() -> list[dict]:
            runs = graphql(url, RUNS)["runsOrError"]["results"]
            return [r for r in runs if {"key": "dagster/sensor_name", "value": "lake_commits_sensor"} in r["tags"]]

        def a_finished_run() -> dict | None:
            runs = sensor_runs()
            failed = [r["runId"] for r in runs if r["status"] in ("FAILURE", "CANCELED")]
            assert not failed, f"sensor runs failed: {failed}"
            return next((r for r in runs if r["status"] == "SUCCESS"), None)

        run = wait_for(a_finished_run, 420, "a run launched by the lake sensor succeeded", log)
        partition = next(t["value"] for t in run["tags"] if t["key"] == "dagster/partition")
        assert (tmp_path / "data" / "lake" / "states" / f"date={partition}").is_dir()
        # the run loaded the day into the Delta tables, which the README's query reads
        lake = tmp_path / "data" / "lake"
        states = pl.scan_delta(str(lake / "tables" / "states")).filter(
            pl.col("date") == dt.date.fromisoformat(partition)
        )
        assert states.select(pl.len()).collect().item() > 0
        query = subprocess.run(
            [sys.executable, "-c", README_QUERY], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert query.returncode == 0 and "sensor." in query.stdout, query.stderr
        assert "The recording has been collected" in log.read_text()

        children = psutil.Process(platform.pid).children(recursive=True)
        assert len(children) >= 2
        platform.send_signal(signal.SIGTERM)
        assert platform.wait(90) == 0
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        if platform.poll() is None:
            platform.kill()
            platform.wait()
