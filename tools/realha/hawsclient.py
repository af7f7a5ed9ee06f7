"""Minimal Home Assistant WebSocket/REST client used by the realha tools.

Only depends on aiohttp (present in the Home Assistant venv), so every tool in
this folder is run with the HA venv's python.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp


def default_dir() -> str:
    """State dir: $REALHA_DIR, else ${XDG_CACHE_HOME:-~/.cache}/ha-ingestor/realha (as env.sh)."""
    if os.environ.get("REALHA_DIR"):
        return os.environ["REALHA_DIR"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "ha-ingestor", "realha")


def default_token_file() -> str:
    """$HA_TOKEN_FILE, else the name env.sh uses: token-$HA_PROFILE-$HA_PORT.json."""
    if os.environ.get("HA_TOKEN_FILE"):
        return os.environ["HA_TOKEN_FILE"]
    inst = os.environ.get("HA_INSTANCE") or "{}-{}".format(
        os.environ.get("HA_PROFILE", "fixture"), os.environ.get("HA_PORT", "18123")
    )
    return os.path.join(default_dir(), f"token-{inst}.json")


def load_token(path: str | None = None) -> dict[str, str]:
    """Read the token file written by onboard.py ({"url","ws_url","token","ha_version"})."""
    path = path or default_token_file()
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


class HAError(Exception):
    """A command returned success=false."""

    def __init__(self, msg: dict[str, Any]):
        super().__init__(json.dumps(msg.get("error"), ensure_ascii=False))
        self.msg = msg


class HAWS:
    """One authenticated WebSocket connection.

    * ``call()`` sends a command and awaits its ``result`` message.
    * ``send()`` sends without waiting (fire and forget; result is counted).
    * ``on_frame(t, dir, obj, raw)`` (optional) sees every frame in both
      directions: parsed object and the exact text sent/received (a received
      frame is a JSON list when coalesce_messages is enabled and HA batched it).
    * ``on_message(msg)`` (optional) sees every individual received message
      (coalesced lists are split).
    """

    def __init__(
        self,
        ws_url: str,
        token: str,
        *,
        coalesce: bool = False,
        on_frame: Callable[[float, str, Any, str], None] | None = None,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        max_msg_size: int = 0,
    ) -> None:
        self.ws_url = ws_url
        self.token = token
        self.coalesce = coalesce
        self.on_frame = on_frame
        self.on_message = on_message
        self.max_msg_size = max_msg_size
        self._id = 0
        self._pending: dict[int, asyncio.Future] = {}
        self._session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task | None = None
        self.ha_version: str | None = None
        self.closed = asyncio.Event()
        self.close_info: dict[str, Any] | None = None
        self.results_ok = 0
        self.results_err = 0
        self.errors: list[dict[str, Any]] = []

    # -- connection -------------------------------------------------------
    async def connect(self) -> HAWS:
        self._session = aiohttp.ClientSession()
        try:
            return await self._connect()
        except BaseException:
            if self.ws is not None:
                await self.ws.close()
            await self._session.close()
            raise

    async def _connect(self) -> HAWS:
        assert self._session is not None
        self.ws = await self._session.ws_connect(
            self.ws_url, max_msg_size=self.max_msg_size, autoping=True, heartbeat=None
        )
        first = await self._recv_raw()
        if first.get("type") != "auth_required":
            raise RuntimeError(f"unexpected first message {first}")
        await self._send_raw({"type": "auth", "access_token": self.token}, redact=True)
        second = await self._recv_raw()
        if second.get("type") != "auth_ok":
            raise RuntimeError(f"auth failed: {second}")
        self.ha_version = second.get("ha_version")
        self._reader = asyncio.create_task(self._read_loop())
        if self.coalesce:
            await self.call("supported_features", features={"coalesce_messages": 1})
        return self

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 5)
        if self._session is not None:
            await self._session.close()

    async def _send_raw(self, obj: Any, redact: bool = False) -> None:
        assert self.ws is not None
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        await self.ws.send_str(data)
        if self.on_frame is not None:
            if redact:
                obj = dict(obj, access_token="<redacted>")
                data = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
            self.on_frame(time.time(), "out", obj, data)

    async def _recv_raw(self) -> Any:
        assert self.ws is not None
        m = await self.ws.receive()
        if m.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"unexpected ws frame {m.type} {m.data!r}")
        obj = json.loads(m.data)
        if self.on_frame is not None:
            self.on_frame(time.time(), "in", obj, m.data)
        return obj

    async def _read_loop(self) -> None:
        assert self.ws is not None
        try:
            while True:
                m = await self.ws.receive()
                t = time.time()
                if m.type == aiohttp.WSMsgType.TEXT:
                    obj = json.loads(m.data)
                    if self.on_frame is not None:
                        self.on_frame(t, "in", obj, m.data)
                    for msg in obj if isinstance(obj, list) else (obj,):
                        self._dispatch(msg)
                elif m.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    self.close_info = {
                        "ws_type": str(m.type),
                        "code": self.ws.close_code,
                        "extra": str(m.extra) if m.extra else None,
                        "data": str(m.data) if m.data is not None else None,
                    }
                    break
        except Exception as exc:  # noqa: BLE001 - report any transport error
            self.close_info = {"exception": repr(exc)}
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("websocket closed"))
            self._pending.clear()
            self.closed.set()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if self.on_message is not None:
            self.on_message(msg)
        if msg.get("type") == "result":
            if msg.get("success"):
                self.results_ok += 1
            else:
                self.results_err += 1
                if len(self.errors) < 200:
                    self.errors.append(msg)
            fut = self._pending.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    # -- commands ---------------------------------------------------------
    def next_id(self) -> int:
        self._id += 1
        return self._id

    async def send(self, type_: str, want_result: bool = False, **payload: Any) -> asyncio.Future | int:
        """Send a command. Returns the id, or a future for the result message."""
        if self.closed.is_set():
            raise ConnectionError("websocket closed")
        mid = self.next_id()
        fut = None
        if want_result:
            fut = asyncio.get_running_loop().create_future()
            self._pending[mid] = fut
        await self._send_raw({"id": mid, "type": type_, **payload})
        return fut if want_result else mid

    async def call_raw(self, type_: str, timeout: float = 30, **payload: Any) -> dict[str, Any]:
        fut = await self.send(type_, want_result=True, **payload)
        return await asyncio.wait_for(fut, timeout)  # type: ignore[arg-type]

    async def call(self, type_: str, timeout: float = 30, **payload: Any) -> Any:
        msg = await self.call_raw(type_, timeout=timeout, **payload)
        if not msg.get("success"):
            raise HAError(msg)
        return msg.get("result")


async def wait_http(url: str, timeout: float = 300.0, path: str = "/api/onboarding") -> float:
    """Poll until the HTTP server answers (any status < 500). Returns seconds waited."""
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(url + path, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status < 500:
                        return time.monotonic() - t0
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{url} not up after {timeout}s")
            await asyncio.sleep(0.2)


async def wait_ws_auth(ws_url: str, token: str, timeout: float = 300.0) -> float:
    """Poll until the WebSocket API accepts auth. Returns seconds waited."""
    t0 = time.monotonic()
    while True:
        try:
            c = await HAWS(ws_url, token).connect()
            await c.close()
            return time.monotonic() - t0
        except Exception:  # noqa: BLE001
            if time.monotonic() - t0 > timeout:
                raise
            await asyncio.sleep(0.2)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]
