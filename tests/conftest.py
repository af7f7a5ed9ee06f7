from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from ha_ingestor.replay_server import Recording, ReplayServer, bundled_capture

TOKEN = "test-token"


@pytest.fixture(scope="session")
def recording() -> Recording:
    return Recording.load(bundled_capture())


class ThreadedReplayServer:
    """A ReplayServer on its own event loop thread, so a collector process can be killed beside it."""

    def __init__(self, recording: Recording, speed: float) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = ReplayServer(recording, token=TOKEN, speed=speed)
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.__aenter__())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        started.wait(10)

    def call(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_finished(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.server.finished.is_set():
            assert time.monotonic() < deadline, "the replay did not finish in time"
            time.sleep(0.1)

    def close(self) -> None:
        self.call(self.server.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def replay_server(recording: Recording, request) -> Iterator[ThreadedReplayServer]:
    server = ThreadedReplayServer(recording, speed=getattr(request, "param", 20.0))
    yield server
    server.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def collector_command(url: str, lake: Path, state: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ha_ingestor",
        "collect",
        "--ha-url",
        url,
        "--token",
        TOKEN,
        "--lake",
        str(lake),
        "--state-dir",
        str(state),
        "--metrics-port",
        "-1",
        "--backfill-delay",
        "0.2",
        *extra,
    ]


def start_collector(url: str, lake: Path, state: Path, *extra: str, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        collector_command(url, lake, state, *extra),
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def lake_query(lake: Path, table: str, sql: str) -> list[tuple]:
    """Run ``sql`` with ``t`` bound to the lake table (empty result when the table has no files)."""
    if not list((lake / table).rglob("*.parquet")):
        return []
    con = duckdb.connect()
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{lake}/{table}/**/*.parquet', hive_partitioning=true)")
    return con.execute(sql).fetchall()


def fired_state_keys(events) -> set[tuple[str, str]]:
    """(entity_id, last_updated ISO) of every state a list of HA events carries, removals at time_fired."""
    keys = set()
    for event in events:
        if event["event_type"] != "state_changed":
            continue
        new = event["data"].get("new_state")
        keys.add((event["data"]["entity_id"], new["last_updated"] if new else event["time_fired"]))
    return keys
