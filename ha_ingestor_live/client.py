"""One authenticated WebSocket connection to Home Assistant.

Every frame received is handed to ``on_frame`` as raw bytes before anything else looks at
it, and every command is handed to ``on_command`` before it is sent: the spool sees the
whole conversation in order. Results resolve futures keyed by message id.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection

from .messages import Envelope, frame_decoder

FrameSink = Callable[[bytes, float], None]


def _libc_memmem() -> Callable[[bytes, bytes], bool] | None:
    try:
        memmem = ctypes.CDLL(None).memmem
    except (OSError, AttributeError):
        return None
    memmem.restype = ctypes.c_void_p
    memmem.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    return lambda haystack, needle: memmem(haystack, len(haystack), needle, len(needle)) is not None


# While a reply is awaited every frame is searched for it. Python's own search (``in``) crawls through
# JSON (every '"' is a partial match) at about 100 MB/s; glibc's vectorised memmem is three to four times
# faster, which matters when a burst of events queues ahead of a reply.
contains: Callable[[bytes, bytes], bool] = _libc_memmem() or (lambda haystack, needle: needle in haystack)


class HomeAssistantError(Exception):
    """Base of the collector's errors about talking to Home Assistant."""


class AuthenticationFailed(HomeAssistantError):
    """The token was refused: fatal, retrying cannot help."""


class CommandFailed(HomeAssistantError):
    def __init__(self, command: str, error: dict[str, Any] | None) -> None:
        super().__init__(f"{command} failed: {error}")
        self.command = command
        self.error = error or {}


class ConnectionLost(HomeAssistantError):
    """The connection closed or stopped answering."""


def websocket_url(base: str) -> str:
    """``http://host:8123`` or ``ws://host:8123[/api/websocket]`` -> the WebSocket API URL."""
    parts = urlsplit(base.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s) or ws(s) URL: {base!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/api/websocket"):
        path += "/api/websocket"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class _PromptClosingConnection(ClientConnection):
    """Treats HA's close frame as the end of the connection.

    A stopping Home Assistant sends its close frame at once but keeps the TCP connection open until
    its HTTP server's 10 s shutdown timeout; waiting for TCP would hold HA's restart back by 10 s
    and delay the reconnect and backfill by as much.
    """

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.protocol.close_rcvd is not None and not self.transport.is_closing():
            self.transport.close()


class HAConnection:
    def __init__(self, ws: ClientConnection, on_frame: FrameSink, on_command: Callable[[bytes], None]) -> None:
        self.ws = ws
        self.on_frame = on_frame
        self.on_command = on_command
        self.ha_version: str | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._pong: asyncio.Future[None] | None = None
        self._ping_id: int | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        token: str,
        on_frame: FrameSink,
        on_command: Callable[[bytes], None],
        *,
        max_frame_bytes: int,
        open_timeout: float = 10.0,
    ) -> HAConnection:
        ws = await websockets.connect(
            websocket_url(url),
            max_size=max_frame_bytes,
            compression=None,
            ping_interval=None,
            open_timeout=open_timeout,
            close_timeout=2,
            create_connection=_PromptClosingConnection,
        )
        connection = cls(ws, on_frame, on_command)
        try:
            await asyncio.wait_for(connection._authenticate(token), open_timeout)
        except BaseException:
            await ws.close()
            raise
        return connection

    async def _authenticate(self, token: str) -> None:
        hello = msgspec.json.decode(await self.ws.recv(decode=False))
        if hello.get("type") != "auth_required":
            raise HomeAssistantError(f"expected auth_required, got {hello.get('type')!r}")
        await self.ws.send(msgspec.json.encode({"type": "auth", "access_token": token}).decode())
        reply = msgspec.json.decode(await self.ws.recv(decode=False))
        if reply.get("type") == "auth_invalid":
            raise AuthenticationFailed(f"Home Assistant rejected the access token: {reply.get('message')}")
        if reply.get("type") != "auth_ok":
            raise HomeAssistantError(f"unexpected reply to auth: {reply!r}")
        self.ha_version = reply.get("ha_version")

    async def read_forever(self) -> None:
        """Hand every frame to the spool, then route results; returns when the connection closes."""
        recv = self.ws.recv
        on_frame = self.on_frame
        try:
            while True:
                frame = await recv(decode=False)
                on_frame(frame, time.time())
                # only frames holding an awaited reply need routing (every reply has one of these values)
                if (self._pending and contains(frame, b'"result"')) or (
                    self._pong is not None and contains(frame, b'"pong"')
                ):
                    self._route(frame)
        except websockets.ConnectionClosed as exc:
            raise ConnectionLost(f"connection closed (code {exc.rcvd.code if exc.rcvd else 'none'})") from exc
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionLost("connection closed before the reply"))
            self._pending.clear()

    def _route(self, frame: bytes) -> None:
        try:
            decoded = frame_decoder.decode(frame)
        except msgspec.DecodeError:
            return  # the processor quarantines it from the spool
        for message in decoded if isinstance(decoded, list) else (decoded,):
            self._resolve(message)

    def _resolve(self, message: Envelope) -> None:
        if message.type == "pong" and message.id == self._ping_id and self._pong and not self._pong.done():
            self._pong.set_result(None)
            return
        if message.type != "result":
            return
        future = self._pending.pop(message.id, None)
        if future is None or future.done():
            return
        if message.success:
            future.set_result(bytes(message.result))
        else:
            future.set_exception(CommandFailed(str(message.id), message.error))

    def _send(self, payload: dict[str, Any]) -> tuple[int, bytes]:
        message_id = next(self._ids)
        encoded = msgspec.json.encode({"id": message_id, **payload})
        self.on_command(encoded)
        return message_id, encoded

    async def call(self, command: str, timeout: float = 60.0, **params: Any) -> bytes:
        """Send a command and return its raw ``result`` JSON."""
        message_id, encoded = self._send({"type": command, **params})
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self.ws.send(encoded.decode())
        try:
            return await asyncio.wait_for(future, timeout)
        except CommandFailed as exc:
            raise CommandFailed(command, exc.error) from None
        finally:
            self._pending.pop(message_id, None)

    async def ping(self, timeout: float) -> None:
        """Application-level ping; ``ConnectionLost`` when no pong arrives in time."""
        self._ping_id, encoded = self._send({"type": "ping"})
        self._pong = asyncio.get_running_loop().create_future()
        await self.ws.send(encoded.decode())
        try:
            await asyncio.wait_for(self._pong, timeout)
        except TimeoutError as exc:
            raise ConnectionLost(f"no pong within {timeout} s") from exc
        finally:
            self._pong = None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
