"""Home Assistant's WebSocket API as a typed resource, through the collector's own connection class."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import dagster as dg
import orjson

from ha_ingestor_live.client import HAConnection, HomeAssistantError


class HomeAssistantSession:
    """One authenticated connection with its reader running; ``call`` returns the decoded ``result``."""

    def __init__(self, connection: HAConnection, timeout_s: float) -> None:
        self.connection = connection
        self.timeout_s = timeout_s

    async def call(self, command: str, **params: Any) -> Any:
        return orjson.loads(await self.call_raw(command, **params))

    async def call_raw(self, command: str, **params: Any) -> bytes:
        try:
            return await self.connection.call(command, timeout=self.timeout_s, **params)
        except TimeoutError:
            raise HomeAssistantError(
                f"Home Assistant did not answer {command} within {self.timeout_s:.0f} s (command_timeout_s)"
            ) from None


class HomeAssistantResource(dg.ConfigurableResource):
    """The Home Assistant the collector records (``HA_URL``, ``HA_TOKEN``: a long-lived token of an admin user)."""

    url: str
    token: str
    max_frame_bytes: int = 256 << 20
    command_timeout_s: float = 300.0

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[HomeAssistantSession]:
        connection = await HAConnection.open(
            self.url,
            self.token,
            on_frame=lambda frame, at: None,
            on_command=lambda payload: None,
            max_frame_bytes=self.max_frame_bytes,
        )
        reader = asyncio.create_task(connection.read_forever())
        try:
            yield HomeAssistantSession(connection, self.command_timeout_s)
        finally:
            await connection.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await reader
