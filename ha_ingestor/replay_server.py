"""A local WebSocket server that speaks Home Assistant's protocol from a recording.

It serves a capture of a real Home Assistant (one JSON line per frame, as ``tools/realha``
records them): the recorded answers to snapshot commands, the recorded events re-fired on
the recording's own clock (optionally faster), ``get_states`` and
``history/history_during_period`` computed from what has fired so far. Tests use its fault
hooks (drop every connection, send a malformed frame) to exercise the collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import websockets
from websockets.asyncio.server import Server, ServerConnection, serve

log = logging.getLogger(__name__)

BUNDLED_CAPTURE = "maple_house_capture.jsonl.gz"
ENTITY_COMMANDS = ("automation/config", "script/config")


def bundled_capture() -> Path:
    return Path(str(resources.files("ha_ingestor") / "data" / BUNDLED_CAPTURE))


_STATE_TIMES = ("last_changed", "last_updated", "last_reported")


def _iso_to_unix(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _shift_iso(value: str, seconds: float) -> str:
    return (datetime.fromisoformat(value) + timedelta(seconds=seconds)).isoformat()


@dataclass
class Recording:
    ha_version: str
    results: dict[str, Any]
    initial_states: list[dict[str, Any]]
    events: list[tuple[float, dict[str, Any]]]  # (seconds after the subscription, event)

    @classmethod
    def load(cls, path: Path) -> Recording:
        opener = gzip.open if path.suffix == ".gz" else open
        commands: dict[int, dict[str, Any]] = {}
        results: dict[str, Any] = {}
        events: list[tuple[float, dict[str, Any]]] = []
        subscription: int | None = None
        t_subscribed: float | None = None
        ha_version = "unknown"
        with opener(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                if record["dir"] == "out":
                    msg = record["msg"]
                    if "id" in msg:
                        commands[msg["id"]] = msg
                    continue
                if record["dir"] != "in" or record.get("conn", 1) != 1:
                    continue
                frame = record["msg"]
                for msg in frame if isinstance(frame, list) else [frame]:
                    if msg.get("type") == "auth_required":
                        ha_version = msg.get("ha_version", ha_version)
                    elif msg.get("type") == "result" and msg.get("success"):
                        command = commands.get(msg["id"], {})
                        if command.get("type") == "subscribe_events":
                            subscription, t_subscribed = msg["id"], record["t"]
                        results[_command_key(command)] = msg.get("result")
                    elif msg.get("type") == "event" and msg.get("id") == subscription:
                        events.append((record["t"] - t_subscribed, msg["event"]))
        return cls(ha_version, results, results.pop("get_states", []) or [], events)

    def shifted(self, seconds: float) -> Recording:
        """The same recording with every HA timestamp moved by ``seconds`` (a replay that looks live)."""

        def state(value: dict[str, Any] | None) -> dict[str, Any] | None:
            if value is None:
                return None
            return {**value, **{k: _shift_iso(value[k], seconds) for k in _STATE_TIMES if value.get(k)}}

        def event(value: dict[str, Any]) -> dict[str, Any]:
            shifted = {**value, "time_fired": _shift_iso(value["time_fired"], seconds)}
            if value["event_type"] == "state_changed":
                data = value["data"]
                shifted["data"] = {
                    **data,
                    "old_state": state(data.get("old_state")),
                    "new_state": state(data.get("new_state")),
                }
            return shifted

        return Recording(
            self.ha_version,
            self.results,
            [state(s) for s in self.initial_states],
            [(offset, event(e)) for offset, e in self.events],
        )


def _command_key(command: dict[str, Any]) -> str:
    kind = command.get("type", "")
    return f"{kind} {command['entity_id']}" if kind in ENTITY_COMMANDS else kind


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    coalesce: bool = False
    subscription: int | None = None
    queue: list[dict[str, Any]] = field(default_factory=list)
    # (monotonic time, event) of every event written to this client's socket
    sent: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


class ReplayServer:
    """``async with ReplayServer(...) as server:`` serves on ``server.url``."""

    def __init__(
        self, recording: Recording, *, token: str, speed: float = 1.0, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.recording = recording
        self.token = token
        self.speed = speed
        self.host = host
        self.port = port
        self.clients: set[_Client] = set()
        self.all_clients: list[_Client] = []
        self.refuse_until = 0.0
        self.answer_pings = True
        self.fired: list[dict[str, Any]] = []
        self.states: dict[str, dict[str, Any]] = {s["entity_id"]: s for s in recording.initial_states}
        self.finished = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._server: Server | None = None
        self._clock: asyncio.Task[None] | None = None
        self.started_at = 0.0

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/api/websocket"

    async def __aenter__(self) -> ReplayServer:
        self._server = await serve(self._serve, self.host, self.port, max_size=None, compression=None)
        self.port = self._server.sockets[0].getsockname()[1]
        self._clock = asyncio.create_task(self._fire_events())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._clock:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
        self._server.close()
        await self._server.wait_closed()

    async def drop_connections(self, refuse_for: float = 0.0) -> None:
        """Close every client the way a Home Assistant restart does (close code 1000), and refuse
        new connections for ``refuse_for`` seconds while the recording keeps firing."""
        self.refuse_until = time.monotonic() + refuse_for
        for client in list(self.clients):
            await client.ws.close(1000)

    async def send_raw(self, text: str) -> None:
        """Send a frame as is to every subscribed client (malformed-input tests)."""
        for client in list(self.clients):
            if client.subscription is not None:
                with contextlib.suppress(websockets.ConnectionClosed):
                    await client.ws.send(text)

    async def _fire_events(self) -> None:
        await self._subscribed.wait()  # the recording's clock starts with the first subscriber
        self.started_at = time.monotonic()
        for offset, event in self.recording.events:
            delay = self.started_at + offset / self.speed - time.monotonic()
            if delay > 0:
                await self._flush_queues()
                await asyncio.sleep(delay)
            self._apply(event)
            for client in self.clients:
                if client.subscription is not None:
                    client.queue.append({"id": client.subscription, "type": "event", "event": event})
        await self._flush_queues()
        self.finished.set()

    def _apply(self, event: dict[str, Any]) -> None:
        self.fired.append(event)
        if event["event_type"] == "state_changed":
            data = event["data"]
            if data.get("new_state") is None:
                self.states.pop(data["entity_id"], None)
            else:
                self.states[data["entity_id"]] = data["new_state"]

    async def _flush_queues(self) -> None:
        for client in list(self.clients):
            pending, client.queue = client.queue, []
            if not pending:
                continue
            try:
                if client.coalesce:
                    await client.ws.send(msgspec.json.encode(pending).decode())
                else:
                    for message in pending:
                        await client.ws.send(msgspec.json.encode(message).decode())
                now = time.monotonic()
                client.sent.extend((now, message["event"]) for message in pending)
            except websockets.ConnectionClosed:
                self.clients.discard(client)

    async def _serve(self, ws: ServerConnection) -> None:
        if time.monotonic() < self.refuse_until:
            await ws.close(1013, "restarting")
            return
        await ws.send(json.dumps({"type": "auth_required", "ha_version": self.recording.ha_version}))
        try:
            auth = json.loads(await asyncio.wait_for(ws.recv(), 10))
        except (TimeoutError, ValueError, websockets.ConnectionClosed):
            return
        if auth.get("type") != "auth" or auth.get("access_token") != self.token:
            await ws.send(json.dumps({"type": "auth_invalid", "message": "Invalid access token or password"}))
            await ws.close()
            return
        await ws.send(json.dumps({"type": "auth_ok", "ha_version": self.recording.ha_version}))
        client = _Client(ws)
        self.clients.add(client)
        self.all_clients.append(client)
        try:
            async for text in ws:
                for message in self._answer(client, json.loads(text)):
                    await ws.send(msgspec.json.encode(message).decode())
        except websockets.ConnectionClosed:
            pass
        finally:
            self.clients.discard(client)

    def _answer(self, client: _Client, command: dict[str, Any]) -> Iterator[dict[str, Any]]:
        kind, message_id = command.get("type"), command.get("id")
        if kind == "ping":
            if self.answer_pings:
                yield {"id": message_id, "type": "pong"}
            return
        if kind == "supported_features":
            client.coalesce = bool(command.get("features", {}).get("coalesce_messages"))
            result: Any = None
        elif kind == "subscribe_events":
            client.subscription = message_id
            self._subscribed.set()
            result = None
        elif kind == "get_states":
            result = list(self.states.values())
        elif kind == "history/history_during_period":
            result = self._history(command)
        elif _command_key(command) in self.recording.results:
            result = self.recording.results[_command_key(command)]
        else:
            code = "not_found" if kind in ENTITY_COMMANDS else "unknown_command"
            yield {
                "id": message_id,
                "type": "result",
                "success": False,
                "error": {"code": code, "message": f"{kind} is not in this recording"},
            }
            return
        yield {"id": message_id, "type": "result", "success": True, "result": result}

    def _history(self, command: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """What HA's recorder would answer: compressed rows with unix float times."""
        start = _iso_to_unix(command["start_time"])
        end = _iso_to_unix(command["end_time"]) if command.get("end_time") else float("inf")
        wanted = set(command["entity_ids"])
        history: dict[str, list[dict[str, Any]]] = {}
        before_start: dict[str, dict[str, Any]] = {}
        for state in itertools.chain(
            self.recording.initial_states,
            (
                e["data"]["new_state"]
                for e in self.fired
                if e["event_type"] == "state_changed" and e["data"].get("new_state")
            ),
        ):
            if state["entity_id"] not in wanted:
                continue
            updated = _iso_to_unix(state["last_updated"])
            if updated < start:
                before_start[state["entity_id"]] = state
            elif updated <= end:
                history.setdefault(state["entity_id"], []).append(_compressed(state))
        if command.get("include_start_time_state", True):
            for entity_id, state in before_start.items():  # HA reports it at start_time, without lc
                row = {"s": state["state"], "a": state.get("attributes", {}), "lu": start}
                history.setdefault(entity_id, []).insert(0, row)
        return history


def _compressed(state: dict[str, Any]) -> dict[str, Any]:
    row = {"s": state["state"], "a": state.get("attributes", {}), "lu": _iso_to_unix(state["last_updated"])}
    if state["last_changed"] != state["last_updated"]:
        row["lc"] = _iso_to_unix(state["last_changed"])
    return row
