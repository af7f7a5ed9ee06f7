"""Collector throughput benchmark: the live collector against a minimal reference pipeline, same run.

What it measures (see bench/README.md):

* ``wire``       a client that only receives frames: what the load server and loopback can deliver.
* ``reference``  a minimal, honest pipeline written below: websockets client, ``orjson.loads`` per
                 frame, events flattened to columns, zstd Parquet per date every 100k rows, fsync.
* ``collector``  ``ha_ingestor_live.collector.Collector``: spool (fsync per batch), shape validation,
                 full-fidelity rows, atomic lake commits.

Both pipelines are timed the same way: first event received -> last row committed to a durable file.
The collector is also run paced (default 10k events/s for 30 s) while its RSS is sampled.

The load server runs in a separate process (pinned to the other core) and speaks enough of Home
Assistant's WebSocket protocol for the collector; it serves real event shapes from the bundled
recording, each event made unique (own time_fired / last_updated / context id), pre-encoded before
the clock starts.

    .venv/bin/python bench/collector_throughput.py            # defaults: about 2 minutes
    .venv/bin/python bench/collector_throughput.py --help
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import multiprocessing as mp
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

from ha_ingestor.cli import refuse_pandas

TOKEN = "bench-token"
HA_VERSION = "2025.4.4"
EVENT_DATE_BASE = dt.datetime(2026, 11, 26, 8, 0, 0, tzinfo=dt.UTC)  # N µs apart: all on one UTC date
REFERENCE_FLUSH_ROWS = 100_000
ENTITY_COMMANDS = ("automation/config", "script/config")
RESULTS_DIR = Path(__file__).resolve().parent / "results"

log = logging.getLogger("bench")


# --------------------------------------------------------------------------------------------
# Load server (runs in its own process)
# --------------------------------------------------------------------------------------------


def _iso(i: int) -> str:
    return (EVENT_DATE_BASE + dt.timedelta(microseconds=i)).isoformat()


def build_event_pool(templates: list[dict[str, Any]], count: int) -> list[bytes]:
    """``count`` encoded events cycling through the recorded ones, each made unique."""
    pool: list[bytes] = []
    dumps = orjson.dumps
    for i in range(count):
        template = templates[i % len(templates)]
        when = _iso(i)
        context = dict(template.get("context") or {})
        context["id"] = f"01BENCH{i:019d}"  # 26 characters, like a ULID
        event = dict(template)
        event["time_fired"] = when
        event["context"] = context
        if template["event_type"] == "state_changed":
            data = dict(template["data"])
            new = data.get("new_state")
            if new:
                new = dict(new)
                new["last_changed"] = new["last_updated"] = when
                if "last_reported" in new:
                    new["last_reported"] = when
                new["context"] = context
                data["new_state"] = new
            old = data.get("old_state")
            if old:
                before = _iso(i - 1)
                old = dict(old)
                old["last_changed"] = old["last_updated"] = before
                if "last_reported" in old:
                    old["last_reported"] = before
                data["old_state"] = old
            event["data"] = data
        pool.append(dumps(event))
    return pool


class LoadServer:
    """Answers the collector's commands from the recording and blasts the event pool after subscribe.

    The URL path carries the run's parameters: ``/n<events>/r<rate>/f<frame size>/api/websocket``
    (rate 0 = as fast as the client reads). Per-connection send statistics go to ``stats_queue``.
    """

    def __init__(self, recording: Any, pool: list[bytes], stats_queue: Any) -> None:
        self.pool = pool
        self.stats_queue = stats_queue
        self.results = {key: orjson.dumps(value) for key, value in recording.results.items()}
        self.results["get_states"] = orjson.dumps(recording.initial_states)
        self.results["history/history_during_period"] = b"{}"

    async def handle(self, ws: Any) -> None:
        import websockets

        match = re.match(r"/n(\d+)/r(\d+(?:\.\d+)?)/f(\d+)/", ws.request.path)
        if match is None:
            await ws.close(1008, "bad path")
            return
        n, rate, frame_size = int(match[1]), float(match[2]), int(match[3])
        await ws.send(b'{"type":"auth_required","ha_version":"%s"}' % HA_VERSION.encode(), text=True)
        auth = orjson.loads(await ws.recv(decode=False))
        if auth.get("type") != "auth" or auth.get("access_token") != TOKEN:
            await ws.send(b'{"type":"auth_invalid","message":"Invalid access token or password"}', text=True)
            await ws.close()
            return
        await ws.send(b'{"type":"auth_ok","ha_version":"%s"}' % HA_VERSION.encode(), text=True)
        coalesce = False
        blaster: asyncio.Task[None] | None = None
        commands: dict[str, int] = {}
        try:
            async for text in ws:
                command = orjson.loads(text)
                kind, message_id = command.get("type"), command.get("id")
                commands[kind] = commands.get(kind, 0) + 1
                if kind == "ping":
                    await ws.send(b'{"id":%d,"type":"pong"}' % message_id, text=True)
                    continue
                if kind == "supported_features":
                    coalesce = bool(command.get("features", {}).get("coalesce_messages"))
                    result: bytes | None = b"null"
                elif kind == "subscribe_events":
                    frames = self._frames(message_id, n, frame_size if coalesce else 1, coalesce)
                    await ws.send(b'{"id":%d,"type":"result","success":true,"result":null}' % message_id, text=True)
                    blaster = asyncio.create_task(self._blast(ws, frames, n, rate, commands))
                    continue
                elif kind in ENTITY_COMMANDS:
                    result = self.results.get(f"{kind} {command.get('entity_id')}")
                else:
                    result = self.results.get(kind)
                if result is None:
                    code = b"not_found" if kind in ENTITY_COMMANDS else b"unknown_command"
                    await ws.send(
                        b'{"id":%d,"type":"result","success":false,"error":{"code":"%s",'
                        b'"message":"not in this recording"}}' % (message_id, code),
                        text=True,
                    )
                else:
                    await ws.send(
                        b'{"id":%d,"type":"result","success":true,"result":%s}' % (message_id, result), text=True
                    )
        except websockets.ConnectionClosed:
            pass
        finally:
            if blaster is not None and not blaster.done():
                blaster.cancel()

    def _frames(self, subscription: int, n: int, frame_size: int, coalesce: bool) -> list[bytes]:
        prefix = b'{"id":%d,"type":"event","event":' % subscription
        messages = [prefix + event + b"}" for event in self.pool[:n]]
        if not coalesce:
            return messages
        return [b"[" + b",".join(messages[i : i + frame_size]) + b"]" for i in range(0, n, frame_size)]

    async def _blast(self, ws: Any, frames: list[bytes], n: int, rate: float, commands: dict[str, int]) -> None:
        import websockets

        per_frame = n / len(frames)
        cpu0 = time.process_time()
        started = time.time()
        t0 = time.monotonic()
        sent_bytes = 0
        lag_max = 0.0
        try:
            for k, frame in enumerate(frames):
                if rate > 0:
                    due = t0 + k * per_frame / rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    else:
                        lag_max = max(lag_max, -delay)
                await ws.send(frame, text=True)
                sent_bytes += len(frame)
        except websockets.ConnectionClosed:
            return
        finished = time.time()
        elapsed = finished - started
        self.stats_queue.put(
            {
                "kind": "blast",
                "events": n,
                "frames": len(frames),
                "bytes": sent_bytes,
                "first_send": started,
                "last_send": finished,
                "seconds": elapsed,
                "events_per_s": n / elapsed if elapsed > 0 else float("inf"),
                "server_cpu_s": time.process_time() - cpu0,
                "rate_target": rate,
                "max_behind_schedule_s": lag_max,
                "commands_before_end": dict(commands),
            }
        )


def server_main(pool_size: int, core: int | None, queue: Any, stop: Any) -> None:
    from websockets.asyncio.server import serve

    from ha_ingestor.replay_server import Recording, bundled_capture

    if core is not None:
        os.sched_setaffinity(0, {core})
    started = time.perf_counter()
    recording = Recording.load(bundled_capture())
    templates = [event for _, event in recording.events]
    pool = build_event_pool(templates, pool_size)
    server = LoadServer(recording, pool, queue)
    prepared = time.perf_counter() - started

    async def main() -> None:
        async with serve(
            server.handle, "127.0.0.1", 0, max_size=None, compression=None, ping_interval=None, write_limit=1 << 20
        ) as ws_server:
            port = ws_server.sockets[0].getsockname()[1]
            queue.put(
                {
                    "kind": "ready",
                    "port": port,
                    "prepare_s": prepared,
                    "pool": len(pool),
                    "templates": len(templates),
                    "pool_bytes": sum(map(len, pool)),
                    "affinity": sorted(os.sched_getaffinity(0)),
                }
            )
            while not stop.is_set():
                await asyncio.sleep(0.1)

    asyncio.run(main())


# --------------------------------------------------------------------------------------------
# Helpers shared by the client-side pipelines
# --------------------------------------------------------------------------------------------


class CpuClock:
    """Process CPU seconds and wall seconds over a span."""

    def __init__(self) -> None:
        self.cpu0 = time.process_time()
        self.wall0 = time.perf_counter()

    def stop(self) -> dict[str, float]:
        cpu, wall = time.process_time() - self.cpu0, time.perf_counter() - self.wall0
        return {"cpu_s": cpu, "wall_s": wall, "cpu_util": cpu / wall if wall else 0.0}


async def _handshake(ws: Any) -> None:
    hello = orjson.loads(await ws.recv(decode=False))
    assert hello["type"] == "auth_required", hello
    await ws.send(orjson.dumps({"type": "auth", "access_token": TOKEN}), text=True)
    assert orjson.loads(await ws.recv(decode=False))["type"] == "auth_ok"
    await ws.send(
        orjson.dumps({"id": 1, "type": "supported_features", "features": {"coalesce_messages": 1}}), text=True
    )
    await ws.recv(decode=False)
    await ws.send(orjson.dumps({"id": 2, "type": "subscribe_events"}), text=True)
    reply = orjson.loads(await ws.recv(decode=False))
    assert reply.get("success"), reply


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of each live thread of this process, by thread name."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    cpu: dict[str, float] = {}
    for thread in psutil.Process().threads():
        name = names.get(thread.id, f"tid-{thread.id}")
        cpu[name] = cpu.get(name, 0.0) + thread.user_time + thread.system_time
    return cpu


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# --------------------------------------------------------------------------------------------
# Wire ceiling: receive frames, count them, nothing else
# --------------------------------------------------------------------------------------------


async def run_wire(url: str, n: int, frame_size: int) -> dict[str, Any]:
    import websockets

    frames_expected = -(-n // frame_size)
    async with websockets.connect(url, max_size=None, compression=None, ping_interval=None) as ws:
        await _handshake(ws)
        clock = CpuClock()
        first = await ws.recv(decode=False)
        t_first, cpu_first = time.time(), time.process_time()
        for _ in range(frames_expected - 1):
            await ws.recv(decode=False)
        t_end, cpu_end = time.time(), time.process_time()
    seconds = t_end - t_first
    return {
        "events": n,
        "seconds": seconds,
        "events_per_s": n / seconds,
        "first_frame_bytes": len(first),
        "cpu_us_per_event": (cpu_end - cpu_first) / n * 1e6,
        **clock.stop(),
    }


# --------------------------------------------------------------------------------------------
# Reference pipeline: the minimal honest client the collector is held against
# --------------------------------------------------------------------------------------------

REFERENCE_COLUMNS = (
    "event_type",
    "time_fired",
    "entity_id",
    "state",
    "attributes",
    "last_updated",
    "context_id",
    "data",
)


def _reference_write(lake: Path, columns: dict[str, list[Any]], part: int) -> int:
    """Write buffered rows as one zstd Parquet file per date, fsynced; returns files written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    timestamp = pa.timestamp("us", tz="UTC")
    by_date: dict[str, list[int]] = {}
    for index, fired in enumerate(columns["time_fired"]):
        by_date.setdefault(fired[:10], []).append(index)
    single = len(by_date) == 1
    for date, indices in by_date.items():
        arrays = {}
        for name, values in columns.items():
            chosen = values if single else [values[i] for i in indices]
            array = pa.array(chosen, pa.string())
            arrays[name] = array.cast(timestamp) if name in ("time_fired", "last_updated") else array
        directory = lake / f"date={date}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"part-{part:06d}.parquet"
        pq.write_table(pa.table(arrays), path, compression="zstd")
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return len(by_date)


async def run_reference(url: str, n: int, lake: Path) -> dict[str, Any]:
    import websockets

    loads, dumps = orjson.loads, orjson.dumps
    columns: dict[str, list[Any]] = {name: [] for name in REFERENCE_COLUMNS}
    (event_type, time_fired, entity_id, state, attributes, last_updated, context_id, data) = (
        columns[name].append for name in REFERENCE_COLUMNS
    )
    received = buffered = part = files = 0
    t_first: float | None = None
    async with websockets.connect(url, max_size=None, compression=None, ping_interval=None) as ws:
        await _handshake(ws)
        clock = CpuClock()
        recv = ws.recv
        while received < n:
            frame = await recv(decode=False)
            now = time.time()
            messages = loads(frame)
            for message in messages if isinstance(messages, list) else (messages,):
                if message.get("type") != "event":
                    continue
                if t_first is None:
                    t_first, cpu_first = now, time.process_time()
                event = message["event"]
                payload = event.get("data") or {}
                new = payload.get("new_state") if event["event_type"] == "state_changed" else None
                event_type(event["event_type"])
                time_fired(event["time_fired"])
                entity_id(payload.get("entity_id") if isinstance(payload.get("entity_id"), str) else None)
                if new:
                    state(new.get("state"))
                    attributes(dumps(new.get("attributes")).decode())
                    last_updated(new.get("last_updated"))
                else:
                    state(None)
                    attributes(None)
                    last_updated(None)
                context_id((event.get("context") or {}).get("id"))
                data(dumps(payload).decode())
                received += 1
                buffered += 1
            if buffered >= REFERENCE_FLUSH_ROWS:
                part += 1
                files += _reference_write(lake, columns, part)
                for values in columns.values():
                    values.clear()
                buffered = 0
        if buffered:
            part += 1
            files += _reference_write(lake, columns, part)
        t_end, cpu_end = time.time(), time.process_time()
        cpu = clock.stop()
    seconds = t_end - (t_first or t_end)
    return {
        "events": received,
        "seconds": seconds,
        "events_per_s": received / seconds,
        "files": files,
        "cpu_us_per_event": (cpu_end - cpu_first) / received * 1e6,
        **cpu,
    }


# --------------------------------------------------------------------------------------------
# The collector
# --------------------------------------------------------------------------------------------


class RssSampler(threading.Thread):
    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.process = psutil.Process()
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.time(), self.process.memory_info().rss))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.samples.append((time.time(), self.process.memory_info().rss))


async def run_collector(
    url: str, n: int, work: Path, *, sample_rss: bool = False, flush_rows: int = 100_000, flush_mb: float | None = None
) -> dict[str, Any]:
    from ha_ingestor_live.collector import Collector, CollectorSettings
    from ha_ingestor_live.spool import INBOUND

    sampler = RssSampler() if sample_rss else None
    me = psutil.Process()
    rss_before = me.memory_info().rss
    uss_before = me.memory_full_info().uss if sample_rss else 0
    if sampler:
        sampler.start()
    settings = CollectorSettings(
        ha_url=url,
        token=TOKEN,
        lake=work / "lake",
        state_dir=work / "state",
        metrics_port=None,
        backfill_delay_s=0,
        flush_rows=flush_rows,
        **({"flush_bytes": int(flush_mb * (1 << 20))} if flush_mb else {}),
        flush_interval_s=10,
    )
    collector = Collector(settings)
    # Instrumentation: remember when the first event frame was received (the read loop's own
    # timestamp). One attribute test per frame; the collector binds sink.submit at session start.
    first_event_at: list[float] = []
    submit = collector.sink.submit

    def timed_submit(kind: bytes, conn: int, received_at: float, payload: bytes) -> None:
        if not first_event_at and kind == INBOUND and b'"type":"event"' in payload[:64]:
            first_event_at.append(received_at)
            first_event_at.append(time.process_time())
        submit(kind, conn, received_at, payload)

    collector.sink.submit = timed_submit
    clock = CpuClock()
    threads_before = thread_cpu()
    task = asyncio.create_task(collector.run(), name="collector")
    processor = collector.processor
    stats = collector.sink.stats
    t_processed = None
    try:
        while processor.events_seen < n:
            if task.done():
                task.result()
                raise RuntimeError("collector stopped before all events were processed")
            await asyncio.sleep(0.01)
        t_processed = time.time()
        threads = thread_cpu()  # before stop, while the spool and processor threads are alive
        collector.sink.request_commit()  # do not wait for the 10 s flush interval for the tail
        while stats.rows_committed.get("events", 0) < n:
            if task.done():
                task.result()
                raise RuntimeError("collector stopped before all rows were committed")
            await asyncio.sleep(0.005)
        t_end, cpu_end = time.time(), time.process_time()
    finally:
        collector.request_stop()
        await task
        loop = asyncio.get_running_loop()
        for signum in (2, 15):  # Collector.run leaves its SIGINT/SIGTERM handlers installed
            loop.remove_signal_handler(signum)
    cpu = clock.stop()
    if sampler:
        sampler.stop()
        uss_final = me.memory_full_info().uss
    t_first, cpu_first = first_event_at
    seconds = t_end - t_first
    latencies = list(stats.spool_latency)
    counts = processor.counts
    result: dict[str, Any] = {
        "events": counts["events"],
        "states": counts["states"],
        "quarantined": counts["quarantined"],
        "command_errors": counts["command_errors"],
        "reconnects": collector.reconnects,
        "seconds": seconds,
        "events_per_s": n / seconds,
        "processed_s": t_processed - t_first,
        "frames": stats.frames_submitted,
        "commits": stats.commits,
        "rows_committed": dict(stats.rows_committed),
        "spool_latency_p50_ms": _percentile(latencies, 0.50) * 1000,
        "spool_latency_p99_ms": _percentile(latencies, 0.99) * 1000,
        "spool_latency_max_ms": max(latencies) * 1000 if latencies else float("nan"),
        "latency_samples": len(latencies),
        "cpu_us_per_event": (cpu_end - cpu_first) / n * 1e6,
        **cpu,
        # CPU seconds per thread from start to the last event processed (main = read loop)
        "thread_cpu_s": {
            name: round(seconds - threads_before.get(name, 0.0), 3)
            for name, seconds in threads.items()
            if name in ("MainThread", "spool", "processor", "committer")
        },
    }
    if sampler:
        rss = [value for at, value in sampler.samples]
        steady = [value for at, value in sampler.samples if at >= t_first]
        result.update(
            {
                "uss_before_mb": uss_before / 2**20,
                "uss_final_mb": uss_final / 2**20,
                "rss_before_mb": rss_before / 2**20,
                "rss_peak_mb": max(rss) / 2**20,
                "rss_final_mb": rss[-1] / 2**20,
                "rss_samples": len(rss),
                "rss_median_streaming_mb": statistics.median(steady) / 2**20 if steady else None,
                "rss_series_mb": [(round(at - t_first, 2), round(value / 2**20, 1)) for at, value in sampler.samples],
            }
        )
    return result


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


def verify_collector(lake: Path, n: int) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect()
    events, distinct = con.execute(
        f"select count(*), count(distinct event_id) from read_parquet('{lake}/events/**/*.parquet')"
    ).fetchone()
    states = con.execute(f"select count(*) from read_parquet('{lake}/states/**/*.parquet')").fetchone()[0]
    tmp = [str(p) for p in lake.rglob("*.tmp")]
    ok = events == n and distinct == n and not tmp
    return {
        "ok": ok,
        "events_rows": events,
        "distinct_event_ids": distinct,
        "states_rows": states,
        "stray_tmp_files": tmp,
    }


def verify_reference(lake: Path, n: int) -> dict[str, Any]:
    import duckdb

    rows, distinct = (
        duckdb.connect()
        .execute(f"select count(*), count(distinct context_id) from read_parquet('{lake}/**/*.parquet')")
        .fetchone()
    )
    return {"ok": rows == n and distinct == n, "rows": rows, "distinct_context_ids": distinct}


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------


def pin_self() -> tuple[int | None, int | None]:
    """Pin this process to one core and return (our core, the server's core)."""
    if not hasattr(os, "sched_setaffinity"):
        return None, None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    os.sched_setaffinity(0, {cores[0]})
    return cores[0], cores[1]


def next_stat(queue: Any, kind: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        item = queue.get(timeout=max(0.1, deadline - time.monotonic()))
        if item.get("kind") == kind:
            return item


def drain(queue: Any) -> None:
    import queue as queue_module

    while True:
        try:
            queue.get_nowait()
        except queue_module.Empty:
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--events", type=int, default=300_000, help="events per throughput run")
    parser.add_argument("--frame-size", type=int, default=50, help="messages per coalesced frame")
    parser.add_argument(
        "--repeat", type=int, default=3, help="reference and collector runs (alternating); medians are reported"
    )
    parser.add_argument("--rate-for-rss", type=float, default=10_000, help="paced events/s for the RSS run")
    parser.add_argument("--rss-seconds", type=float, default=30, help="length of the paced RSS run (0: skip)")
    parser.add_argument("--min-ratio", type=float, default=0.80, help="required collector/reference ratio")
    parser.add_argument("--max-rss-mb", type=float, default=200, help="required peak RSS at the paced rate")
    parser.add_argument(
        "--flush-rows",
        type=int,
        default=100_000,
        help="what-if: the collector's flush_rows (the issue's setting is 100000)",
    )
    parser.add_argument(
        "--flush-mb",
        type=float,
        default=None,
        help="what-if: the collector's flush_bytes in MB (default: the collector's own)",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="what-if: sys.setswitchinterval for this process (Python's default is 0.005 s)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where lakes and spools go (a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the lakes and spools")
    parser.add_argument("--no-pin", action="store_true", help="do not pin client and server to cores")
    parser.add_argument("--only", choices=("reference", "collector"), help="skip the other pipeline")
    parser.add_argument("--json", type=Path, default=None, help="result file (default bench/results/<timestamp>.json)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )

    refuse_pandas()  # as `ha-ingestor collect` does in its own process
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    client_core, server_core = (None, None) if args.no_pin else pin_self()
    rss_events = int(args.rate_for_rss * args.rss_seconds) if args.rss_seconds > 0 else 0
    pool_size = max(args.events, rss_events)
    work = Path(tempfile.mkdtemp(prefix="hai-bench-", dir=args.workdir))
    ctx = mp.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(
        target=server_main, args=(pool_size, server_core, queue, stop), name="load-server", daemon=True
    )
    print(f"preparing {pool_size:,} unique events in the load server ...", flush=True)
    server.start()
    server_ps = psutil.Process(server.pid)
    report: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "client_core": client_core,
            "server_core": server_core,
            "client_affinity": sorted(os.sched_getaffinity(0)),
            "loadavg_at_start": os.getloadavg(),
        },
        "wire": [],
        "reference": [],
        "collector": [],
        "rss": None,
    }
    try:
        ready = next_stat(queue, "ready", timeout=300)
        report["server"] = ready
        port = ready["port"]
        print(
            f"load server pid {server.pid} on 127.0.0.1:{port}, affinity {ready['affinity']}, "
            f"{ready['pool']:,} events ({ready['pool_bytes'] / ready['pool']:.0f} B avg) from "
            f"{ready['templates']:,} recorded, prepared in {ready['prepare_s']:.1f} s; "
            f"client affinity {report['machine']['client_affinity']}",
            flush=True,
        )
        monitor = ContentionMonitor(client_core, server_core, server_ps)

        def url(n: int, rate: float = 0) -> str:
            """The run's parameters travel in the path: the collector appends /api/websocket itself."""
            return f"ws://127.0.0.1:{port}/n{n}/r{rate:g}/f{args.frame_size}"

        def measured(kind: str, coroutine: Any) -> dict[str, Any]:
            drain(queue)
            monitor.start()
            result = asyncio.run(coroutine)
            result["contention"] = monitor.stop()
            result["server"] = next_stat(queue, "blast")
            if kind == "rss":
                report["rss"] = result
            else:
                report[kind].append(result)
            return result

        def describe(result: dict[str, Any]) -> str:
            other = result["contention"]["other_on_client_core"]
            verified = (
                "" if "verify" not in result else (", verify ok" if result["verify"]["ok"] else ", verify FAILED")
            )
            return (
                f"{result['events_per_s']:,.0f} events/s in {result['seconds']:.2f} s, "
                f"{result['cpu_us_per_event']:.1f} CPU us/event"
                + ("" if other is None else f", other processes on the client core {other:.0%}")
                + verified
            )

        # RSS first, in a fresh process heap (nothing else has allocated yet).
        if rss_events and args.only != "reference":
            print(
                f"rss: collector paced at {args.rate_for_rss:,.0f} events/s for {args.rss_seconds:g} s ...", flush=True
            )
            run_dir = work / "rss"
            result = measured(
                "rss",
                run_collector(
                    url(rss_events, args.rate_for_rss),
                    rss_events,
                    run_dir,
                    sample_rss=True,
                    flush_rows=args.flush_rows,
                    flush_mb=args.flush_mb,
                ),
            )
            result["verify"] = verify_collector(run_dir / "lake", rss_events)
            print(
                f"  peak RSS {result['rss_peak_mb']:.0f} MB, final {result['rss_final_mb']:.0f} MB, spool "
                f"latency p50 {result['spool_latency_p50_ms']:.2f} ms "
                f"p99 {result['spool_latency_p99_ms']:.2f} ms, "
                f"server sent {result['server']['events_per_s']:,.0f} ev/s, "
                f"verify {'ok' if result['verify']['ok'] else 'FAILED'}",
                flush=True,
            )
            _cleanup(run_dir, args.keep)

        # One-time lazy imports (pyarrow pulls in pandas on its first pa.array call) stay out of the timed runs.
        import pyarrow as pa

        pa.array([""], pa.string())
        result = measured("wire", run_wire(url(args.events) + "/api/websocket", args.events, args.frame_size))
        print(f"wire: {describe(result)} (receive only)", flush=True)

        for round_ in range(1, args.repeat + 1):
            if args.only != "collector":
                run_dir = work / f"reference-{round_}"
                result = measured("reference", run_reference(url(args.events) + "/api/websocket", args.events, run_dir))
                result["verify"] = verify_reference(run_dir, args.events)
                print(f"reference #{round_}: {describe(result)}", flush=True)
                _cleanup(run_dir, args.keep)
            if args.only != "reference":
                run_dir = work / f"collector-{round_}"
                result = measured(
                    "collector",
                    run_collector(
                        url(args.events), args.events, run_dir, flush_rows=args.flush_rows, flush_mb=args.flush_mb
                    ),
                )
                result["verify"] = verify_collector(run_dir / "lake", args.events)
                print(
                    f"collector #{round_}: {describe(result)}, spool latency p50 "
                    f"{result['spool_latency_p50_ms']:.1f} ms p99 {result['spool_latency_p99_ms']:.1f} ms",
                    flush=True,
                )
                _cleanup(run_dir, args.keep)
        report["machine"]["loadavg_at_end"] = os.getloadavg()
    finally:
        stop.set()
        server.join(5)
        if server.is_alive():
            server.terminate()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    summary = summarize(report, args)
    report["summary"] = summary
    print_table(report, summary, args)
    path = args.json or RESULTS_DIR / f"{dt.datetime.now().strftime('%Y%m%dT%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults written to {path}")
    return 0 if summary["pass"] else 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


class ContentionMonitor:
    """How busy each pinned core was with *other* processes during a run (from /proc/stat).

    The machine may be shared: a run during which something else used the client's core measures
    the neighbour as much as the pipeline. Reported per run and flagged in the summary."""

    def __init__(self, client_core: int | None, server_core: int | None, server: psutil.Process) -> None:
        self.cores = (client_core, server_core)
        self.me = psutil.Process()
        self.server = server
        self.tick = os.sysconf("SC_CLK_TCK")

    def _busy(self) -> dict[int, float]:
        busy = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                values = [int(v) for v in fields]
                busy[int(name[3:])] = (sum(values[:8]) - values[3] - values[4]) / self.tick  # not idle/iowait
        return busy

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    def start(self) -> None:
        self.wall0 = time.perf_counter()
        self.busy0 = self._busy()
        self.me0, self.server0 = self._cpu(self.me), self._cpu(self.server)

    def stop(self) -> dict[str, float | None]:
        wall = time.perf_counter() - self.wall0
        busy = self._busy()
        me, server = self._cpu(self.me) - self.me0, self._cpu(self.server) - self.server0
        client_core, server_core = self.cores

        def other(core: int | None, own: float) -> float | None:
            if core is None:
                return None
            return max(0.0, (busy[core] - self.busy0[core] - own) / wall)

        return {
            "wall_s": wall,
            "client_cpu_s": me,
            "server_cpu_s": server,
            "other_on_client_core": other(client_core, me),
            "other_on_server_core": other(server_core, server),
        }


def _cleanup(path: Path, keep: bool) -> None:
    if not keep:
        shutil.rmtree(path, ignore_errors=True)


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if key in run]
    return statistics.median(values) if values else None


def summarize(report: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    ref = _median(report["reference"], "events_per_s")
    col = _median(report["collector"], "events_per_s")
    ratio = col / ref if ref and col else None
    ref_cpu = _median(report["reference"], "cpu_us_per_event")
    col_cpu = _median(report["collector"], "cpu_us_per_event")
    rss = report["rss"]
    verified = all(run["verify"]["ok"] for key in ("reference", "collector") for run in report[key]) and (
        rss is None or rss["verify"]["ok"]
    )
    throughput_ok = ratio is None or ratio >= args.min_ratio
    rss_ok = rss is None or rss["rss_peak_mb"] < args.max_rss_mb
    return {
        "wire_events_per_s": _median(report["wire"], "events_per_s"),
        "reference_events_per_s": ref,
        "collector_events_per_s": col,
        "ratio": ratio,
        "reference_cpu_us_per_event": ref_cpu,
        "collector_cpu_us_per_event": col_cpu,
        "cpu_ratio": ref_cpu / col_cpu if ref_cpu and col_cpu else None,
        "collector_spool_latency_p50_ms": _median(report["collector"], "spool_latency_p50_ms"),
        "collector_spool_latency_p99_ms": _median(report["collector"], "spool_latency_p99_ms"),
        "paced_spool_latency_p50_ms": rss and rss["spool_latency_p50_ms"],
        "paced_spool_latency_p99_ms": rss and rss["spool_latency_p99_ms"],
        "rss_peak_mb": rss and rss["rss_peak_mb"],
        "rss_final_mb": rss and rss["rss_final_mb"],
        "max_other_load_on_client_core": max(
            (
                run["contention"]["other_on_client_core"] or 0.0
                for key in ("reference", "collector")
                for run in report[key]
            ),
            default=None,
        ),
        "verified": verified,
        "throughput_ok": throughput_ok,
        "rss_ok": rss_ok,
        "pass": verified and throughput_ok and rss_ok,
    }


def print_table(report: dict[str, Any], summary: dict[str, Any], args: argparse.Namespace) -> None:
    machine = report["machine"]
    rounds = max(len(report["collector"]), len(report["reference"]))
    print()
    print(
        f"== collector throughput: {args.events:,} events, frames of {args.frame_size} messages, "
        f"{rounds} round(s), medians =="
    )
    pinned = (
        f"client pinned to core {machine['client_core']}, load server to core {machine['server_core']}"
        if machine["client_core"] is not None
        else "not pinned"
    )
    print(
        f"machine: {machine['cpu_model']}, {machine['cpus']} cpus, Python {machine['python']}; {pinned}; "
        f"load average at start {machine['loadavg_at_start'][0]:.2f}"
    )
    rows = [("", "events/s", "each run", "CPU us/event", "client CPU")]
    for key in ("wire", "reference", "collector"):
        if report[key]:
            cpu = _median(report[key], "cpu_us_per_event")
            rows.append(
                (
                    key,
                    f"{_median(report[key], 'events_per_s'):,.0f}",
                    " ".join(f"{run['events_per_s']:,.0f}" for run in report[key]),
                    f"{cpu:.1f}" if cpu else "-",
                    f"{_median(report[key], 'cpu_util'):.0%}",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  "
            + "  ".join(cell.ljust(widths[i]) if i in (0, 2) else cell.rjust(widths[i]) for i, cell in enumerate(row))
        )
    print()
    if summary["ratio"] is not None:
        verdict = "ok" if summary["throughput_ok"] else "BELOW TARGET"
        print(
            f"  collector / reference             {summary['ratio']:.2f}  "
            f"(target >= {args.min_ratio:.2f}: {verdict}; by CPU per event {summary['cpu_ratio']:.2f})"
        )
    if report["collector"]:
        print(
            f"  spool latency, full speed         p50 {summary['collector_spool_latency_p50_ms']:.1f} ms, "
            f"p99 {summary['collector_spool_latency_p99_ms']:.1f} ms  "
            f"(receipt -> durable spool, per frame)"
        )
    rss = report["rss"]
    if rss:
        rate = f"{args.rate_for_rss:,.0f} ev/s"
        verdict = "ok" if summary["rss_ok"] else "ABOVE LIMIT"
        print(
            f"  spool latency, {rate:<19}p50 {rss['spool_latency_p50_ms']:.2f} ms, "
            f"p99 {rss['spool_latency_p99_ms']:.2f} ms"
        )
        print(
            f"  RSS at {rate} for {args.rss_seconds:g} s{'':<{max(0, 7 - len(f'{args.rss_seconds:g}'))}}"
            f"peak {rss['rss_peak_mb']:.0f} MB, final {rss['rss_final_mb']:.0f} MB, "
            f"after imports {rss['rss_before_mb']:.0f} MB  (limit < {args.max_rss_mb:g} MB: {verdict})"
        )
        print(
            f"  paced run                         server kept {rss['server']['events_per_s']:,.0f} ev/s, "
            f"collector CPU {rss['cpu_util']:.0%} of a core, {rss['cpu_us_per_event']:.1f} us/event, "
            f"USS {rss['uss_before_mb']:.0f} -> {rss['uss_final_mb']:.0f} MB"
        )
    if report["collector"]:
        last = report["collector"][-1]
        threads = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in last["thread_cpu_s"].items())
        print(f"  collector threads (last run)      CPU {threads}")
        print(
            f"  collector lake (last run)         {last['events']:,} events, {last['states']:,} states, "
            f"{last['commits']} commits, {last['quarantined']} quarantined, "
            f"{last['reconnects']} reconnects"
        )
    sends = ", ".join(
        f"{key} {_median([r['server'] for r in report[key]], 'events_per_s'):,.0f}"
        for key in ("wire", "reference", "collector")
        if report[key]
    )
    print(f"  load server send rate (ev/s)      {sends}  (bounded by the reader)")
    print(
        f"  verification (duckdb)             {'ok' if summary['verified'] else 'FAILED'}  "
        f"(rows == N, ids distinct, no stray temp files)"
    )
    print(f"  overall                           {'PASS' if summary['pass'] else 'FAIL'}")
    other = summary["max_other_load_on_client_core"]
    if other is not None and other > 0.05:
        print(
            f"\nWARNING: other processes used up to {other:.0%} of the client's core during a run "
            f"(load average {machine['loadavg_at_start'][0]:.1f} at start): events/s and the ratio measure "
            "the neighbours too. CPU us/event is less affected; rerun on a quiet machine for the "
            "wall-clock ratio."
        )


if __name__ == "__main__":
    sys.exit(main())
