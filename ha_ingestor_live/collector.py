"""The collector: connect, snapshot, subscribe, backfill, and reconnect until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import random
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import websockets

from .client import AuthenticationFailed, CommandFailed, HAConnection, HomeAssistantError
from .lake_writer import LakeWriter
from .messages import entity_ids_decoder
from .metrics import serve_metrics
from .processor import REGISTRY_COMMANDS, Processor
from .session_log import SessionCounters, SessionLog, SessionRecord, parse_time
from .sink import DurableSink
from .spool import INBOUND, OUTBOUND, FsyncPolicy, Spool

log = logging.getLogger(__name__)

REGISTRY_LIST_COMMANDS = {kind: command for command, kind in REGISTRY_COMMANDS.items() if command.startswith("config")}


@dataclass(frozen=True)
class CollectorSettings:
    ha_url: str
    token: str
    lake: Path
    state_dir: Path
    home: str | None = None
    fsync: FsyncPolicy = FsyncPolicy.BATCH
    flush_interval_s: float = 10.0
    flush_rows: int = 100_000
    flush_bytes: int = 4 << 20
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9464
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 60.0
    ping_interval_s: float = 30.0
    ping_timeout_s: float = 10.0
    backfill_margin_s: float = 60.0
    backfill_delay_s: float = 5.0
    history_days: float = 10.0
    history_chunk_hours: float = 6.0
    backfill_repeat_after_s: float = 30.0
    startup_wait_s: float = 120.0
    max_message_bytes: int = 4 << 20
    max_frame_bytes: int = 256 << 20
    session_record_interval_s: float = 60.0


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat()


def _collector_id(state_dir: Path) -> str:
    """A stable id for this collector's files, so several collectors can share one lake."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "collector_id"
    if not path.exists():
        path.write_text(secrets.token_hex(4))
    return path.read_text().strip()


class Collector:
    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        collector_id = _collector_id(settings.state_dir)
        self.lake = LakeWriter(settings.lake, settings.state_dir, collector_id)
        self.sessions = SessionLog(settings.lake, collector_id)
        self.spool = Spool(settings.state_dir / "spool", settings.fsync)
        self.processor = Processor(
            self.lake,
            home=settings.home,
            max_message_bytes=settings.max_message_bytes,
            on_registry_stale=self._registry_stale_from_thread,
        )
        self.sink = DurableSink(
            self.spool,
            self.processor,
            self.lake,
            flush_rows=settings.flush_rows,
            flush_bytes=settings.flush_bytes,
            flush_interval_s=settings.flush_interval_s,
        )
        self.reconnects = 0
        self.connected = False
        self._conn_id = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stale: set[str] = set()
        self._stale_event: asyncio.Event | None = None
        self._entity_ids: list[str] = []
        self._commands_sent = 0
        self._current_session: SessionRecord | None = None
        self._session_baseline = SessionCounters()
        self._session_writes = asyncio.Lock()
        self.metrics_server = None

    def recover(self) -> int:
        """Finish any interrupted commit and replay the spool past the last checkpoint."""
        self.processor.restore(self.lake.recover())
        self.processor.processed_seq = self.lake.committed_seq
        damage: list = []
        replayed = 0
        for record in self.spool.read(self.lake.committed_seq, damage):
            self.processor.process(record)
            replayed += 1
        now = _iso(dt.datetime.now(dt.UTC))
        for part in damage:
            self.processor.quarantine(
                now, None, "spool", f"{part.reason} in {part.segment.name} at byte {part.offset}", part.raw
            )
        self.spool.next_seq = max(self.spool.next_seq, self.lake.committed_seq + 1)
        if replayed or damage:
            self.processor.processed_seq = max(self.processor.processed_seq, self.spool.next_seq - 1)
            self.lake.commit(self.processor.processed_seq, self.processor.state())
        self.spool.open_new_segment()
        self.spool.release_through(self.lake.committed_seq)
        self._conn_id = self.processor.current_conn
        if replayed:
            log.info("recovered %d spooled records (%d quarantined as damaged)", replayed, len(damage))
        return replayed

    def snapshot(self) -> dict[str, Any]:
        counts = self.processor.counts
        latencies = sorted(list(self.sink.stats.spool_latency)[-10_000:])
        last = self.processor.last_event_time
        lag = (time.time() - dt.datetime.fromisoformat(last).timestamp()) if last else 0.0
        return {
            "connected": self.connected,
            "events": counts["events"],
            "states": counts["states"],
            "quarantined": counts["quarantined"],
            "backfilled": counts["backfilled"],
            "command_errors": counts["command_errors"],
            "reconnects": self.reconnects,
            "frames": self.sink.stats.frames_submitted,
            "rows_committed": dict(self.sink.stats.rows_committed),
            "spool_depth": self.spool.depth(self.lake.committed_seq),
            "lag_seconds": lag,
            "home": self.processor.home,
            "last_event_time": last,
            "spool_latency_p99": latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
        }

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> None:
        """Run until ``request_stop`` (or SIGTERM/SIGINT); raises ``AuthenticationFailed`` at once."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._stale_event = asyncio.Event()
        self.recover()
        self.sink.start()
        server = None
        if self.settings.metrics_port is not None:
            server = self.metrics_server = serve_metrics(
                self.snapshot, self.sink.alive, self.settings.metrics_host, self.settings.metrics_port
            )
            log.info("metrics on http://%s:%d/metrics", self.settings.metrics_host, server.server_port)
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self._loop.add_signal_handler(signum, self.request_stop)
        attempt = 0
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    await self._session()
                except AuthenticationFailed:
                    raise
                except (OSError, TimeoutError, HomeAssistantError, websockets.WebSocketException) as exc:
                    log.warning("connection to Home Assistant lost: %s", exc)
                if self._stop.is_set():
                    break
                if not self.sink.alive():
                    raise RuntimeError("the spool or lake writer failed; stopping") from self.sink.failure
                attempt = 0 if time.monotonic() - started > 60 else attempt + 1
                self.reconnects += 1
                delay = random.uniform(0.5, 1.0) * min(
                    self.settings.backoff_max_s, self.settings.backoff_initial_s * 2 ** min(attempt, 16)
                )
                log.info("reconnecting in %.1f s", delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
        finally:
            self.connected = False
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    self._loop.remove_signal_handler(signum)
            await asyncio.to_thread(self.sink.stop)
            if server is not None:
                server.shutdown()
        if self.sink.failure is not None:
            raise RuntimeError("the spool or lake writer failed") from self.sink.failure

    async def _wait_caught_up(self) -> None:
        while not self.sink.caught_up() and self.sink.alive():
            await asyncio.sleep(0.02)

    async def _wait_processed(self, frames: int) -> None:
        while self.sink.stats.records_processed < frames and self.sink.alive():
            await asyncio.sleep(0.02)

    async def _settle(self) -> None:
        """Process and commit everything submitted (between sessions, when nothing new arrives)."""
        await self._wait_caught_up()
        self.sink.request_commit()
        while self.lake.committed_seq < self.processor.processed_seq and self.sink.alive():
            await asyncio.sleep(0.02)

    def _counters(self) -> SessionCounters:
        counts = self.processor.counts
        stats = self.sink.stats
        return SessionCounters(
            events_received=counts["events"],
            events_committed=stats.rows_committed.get("events", 0),
            quarantined=counts["quarantined"],
            backfill_rows=counts["backfilled"],
            frames_received=stats.frames_submitted - self._commands_sent,
        )

    async def _record_session(self) -> None:
        """Rewrite the current session's lake row with its figures so far (a failure is logged, not raised:
        the record must never stop the collection)."""
        session = self._current_session
        if session is None:
            return
        session.counters = self._counters() - self._session_baseline
        session.home = self.processor.home
        last = parse_time(self.processor.last_event_time)
        first = session.first_event_at
        session.last_event_time = last if first is not None and last is not None and last >= first else None
        snapshot = dataclasses.replace(session)
        async with self._session_writes:
            try:
                await asyncio.to_thread(self.sessions.write, snapshot)
            except Exception:
                log.exception("could not write the record of session %d", snapshot.session_id)

    async def _record_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.session_record_interval_s)
            await self._record_session()

    async def _session(self) -> None:
        await self._settle()
        since = self.processor.last_event_time
        self._conn_id = conn = max(self._conn_id + 1, time.time_ns() // 1_000_000)
        submit = self.sink.submit
        # everything before this session is processed and committed: its figures count from here
        self._session_baseline = self._counters()
        session = SessionRecord(
            collector_id=self.lake.writer_id,
            session_id=conn,
            home=self.processor.home,
            reconnects=self.reconnects,
            gap_start=parse_time(since),
        )

        def on_frame(frame: bytes, at: float) -> None:
            submit(INBOUND, conn, at, frame)
            if session.first_event_at is None:  # a plain attribute test: this runs for every frame
                session.note_frame(frame)

        def on_command(payload: bytes) -> None:
            self._commands_sent += 1
            submit(OUTBOUND, conn, time.time(), payload)

        connection = await HAConnection.open(
            self.settings.ha_url,
            self.settings.token,
            on_frame=on_frame,
            on_command=on_command,
            max_frame_bytes=self.settings.max_frame_bytes,
        )
        log.info("connected to Home Assistant %s", connection.ha_version)
        self.connected = True
        session.connected_at = dt.datetime.now(dt.UTC)
        session.ha_version = connection.ha_version
        self._current_session = session
        await self._record_session()
        tasks = [
            asyncio.create_task(connection.read_forever(), name="reader"),
            asyncio.create_task(self._converse(connection, since), name="converse"),
            asyncio.create_task(self._keepalive(connection), name="keepalive"),
            asyncio.create_task(self._watch_sink(), name="sink-watch"),
            asyncio.create_task(self._record_periodically(), name="session-record"),
            asyncio.create_task(self._stop.wait(), name="stop"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            failures = [task.exception() for task in done if task.exception() is not None]
            session.disconnect_reason = (
                f"{type(failures[0]).__name__}: {failures[0]}"
                if failures
                else "stop requested"
                if self._stop.is_set()
                else "connection closed"
            )
            if failures:
                raise failures[0]
        finally:
            self.connected = False
            for task in tasks:
                task.cancel()
            await connection.close()
            await asyncio.gather(*tasks, return_exceptions=True)
            session.disconnected_at = dt.datetime.now(dt.UTC)
            session.disconnect_reason = session.disconnect_reason or "interrupted"
            await self._settle()
            await self._record_session()
            self._current_session = None

    async def _watch_sink(self) -> None:
        while self.sink.alive():
            await asyncio.sleep(0.5)
        raise RuntimeError("the spool or lake writer stopped") from self.sink.failure

    async def _keepalive(self, connection: HAConnection) -> None:
        while True:
            await asyncio.sleep(self.settings.ping_interval_s)
            await connection.ping(self.settings.ping_timeout_s)

    async def _converse(self, connection: HAConnection, since: str | None) -> None:
        await self._snapshot(connection)
        await self._record_session()
        await self._backfill(connection, since)
        while True:
            await self._stale_event.wait()
            await asyncio.sleep(1.0)  # let a burst of registry edits settle into one re-fetch
            self._stale_event.clear()
            kinds, self._stale = self._stale, set()
            await self._refetch(connection, kinds)

    async def _snapshot(self, connection: HAConnection) -> None:
        """Subscribe first, so no state change falls between the snapshot and the stream; snapshot the states
        only once HA is RUNNING (while it starts, it holds states its recorder never stores)."""
        await connection.call("supported_features", features={"coalesce_messages": 1})
        config = await connection.call("get_config")  # before any event: it names the home
        await connection.call("subscribe_events")
        await self._wait_until_running(connection, config)
        commands = ["get_states", "get_services", *REGISTRY_LIST_COMMANDS.values()]
        results = dict(
            zip(
                commands,
                await asyncio.gather(*(connection.call(c, timeout=300) for c in commands), return_exceptions=True),
                strict=True,
            )
        )
        for command, result in results.items():
            if isinstance(result, CommandFailed):
                log.warning("snapshot command %s failed: %s", command, result.error)
            elif isinstance(result, BaseException):
                raise result
        entity_ids: set[str] = set()
        for command in ("get_states", REGISTRY_LIST_COMMANDS["entities"]):
            if isinstance(results[command], bytes):
                with contextlib.suppress(msgspec.DecodeError):
                    entity_ids.update(item.entity_id for item in entity_ids_decoder.decode(results[command]))
        self._entity_ids = sorted(entity_ids)
        await self._fetch_configs(connection, ("automation", "script"))

    async def _wait_until_running(self, connection: HAConnection, config: bytes) -> None:
        deadline = time.monotonic() + self.settings.startup_wait_s
        while (state := msgspec.json.decode(config).get("state", "RUNNING")) != "RUNNING":
            if time.monotonic() > deadline:
                log.warning(
                    "Home Assistant is still %s after %.0f s; taking the snapshot anyway",
                    state,
                    self.settings.startup_wait_s,
                )
                return
            log.info("Home Assistant is %s; waiting for it to run before the state snapshot", state)
            await asyncio.sleep(1.0)
            config = await connection.call("get_config")

    async def _fetch_configs(self, connection: HAConnection, domains: tuple[str, ...]) -> None:
        calls = [
            connection.call(f"{eid.partition('.')[0]}/config", entity_id=eid)
            for eid in self._entity_ids
            if eid.partition(".")[0] in domains
        ]
        for result in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(result, BaseException) and not isinstance(result, CommandFailed):
                raise result

    async def _refetch(self, connection: HAConnection, kinds: set[str]) -> None:
        for kind in sorted(kinds):
            if kind in REGISTRY_LIST_COMMANDS:
                result = await connection.call(REGISTRY_LIST_COMMANDS[kind])
                if kind == "entities":
                    ids = {item.entity_id for item in entity_ids_decoder.decode(result)}
                    self._entity_ids = sorted(ids | set(self._entity_ids))
            elif kind in ("automations", "scripts"):
                await self._fetch_configs(connection, (kind[:-1],))

    async def _request_history(self, connection: HAConnection, start: dt.datetime, end: dt.datetime) -> None:
        chunk = dt.timedelta(hours=self.settings.history_chunk_hours)
        window_start = start
        while window_start < end:
            window_end = min(end, window_start + chunk)
            await connection.call(
                "history/history_during_period",
                timeout=600,
                start_time=_iso(window_start),
                end_time=_iso(window_end),
                entity_ids=self._entity_ids,
                significant_changes_only=False,
                minimal_response=False,
                no_attributes=False,
                include_start_time_state=False,
            )
            window_start = window_end
        self.sink.request_commit()

    def _registry_stale_from_thread(self, kind: str) -> None:
        loop = self._loop
        if loop is not None and self.connected:
            loop.call_soon_threadsafe(self._mark_stale, kind)

    def _mark_stale(self, kind: str) -> None:
        self._stale.add(kind)
        if kind == "entities":
            self._stale.add("devices")  # entity edits often move devices too; both are cheap
        self._stale_event.set()

    async def _backfill(self, connection: HAConnection, since: str | None) -> None:
        """Land the state changes HA recorded while no live stream reached us.

        With no event seen yet for this home, import all the history HA still holds."""
        if not self._entity_ids:
            return
        await asyncio.sleep(self.settings.backfill_delay_s)  # the recorder commits in batches
        end = dt.datetime.now(dt.UTC)
        if since is None:
            start = end - dt.timedelta(days=self.settings.history_days)
            log.info("first start against this home: importing history since %s", _iso(start))
        else:
            start = dt.datetime.fromisoformat(since) - dt.timedelta(seconds=self.settings.backfill_margin_s)
        if self._current_session is not None:
            self._current_session.backfill_from = start
        await self._request_history(connection, start, end)
        await self._record_backfill()
        if since is not None and self.settings.backfill_repeat_after_s > 0:
            # HA's recorder commits in batches and lags while HA starts: ask once more for the same gap
            await asyncio.sleep(self.settings.backfill_repeat_after_s)
            await self._request_history(connection, start, end)
            await self._record_backfill()
        self.sink.request_commit()

    async def _record_backfill(self) -> None:
        """Record the session once the history answers received so far are processed (and so counted)."""
        await self._wait_processed(self.sink.stats.frames_submitted)
        await self._record_session()
