"""One control WebSocket per client: cancel, pace and feedback, each answered by its ``ack``."""

from __future__ import annotations

import asyncio
import itertools
from contextlib import suppress
from typing import Any

import aiohttp
import msgspec

from libs.client.http import StreamRefused

ACK_TIMEOUT_S = 10.0
_json = msgspec.json.Encoder()


class ControlError(Exception):
    """The gateway answered a control frame with ``error`` (or not at all)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.type, self.message = kind, message


class ControlSocket:
    """``/v1/control``, opened on first use and reopened when it closed."""

    def __init__(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
        self._session, self._url, self._headers = session, url, headers
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._refs = itertools.count(1)
        self._lock = asyncio.Lock()

    async def cancel(self, stream_id: str) -> dict[str, Any]:
        return await self.send("cancel", stream_id=stream_id)

    async def pace(self, stream_id: str, max_events_per_s: float) -> dict[str, Any]:
        return await self.send("pace", stream_id=stream_id, max_events_per_s=max_events_per_s)

    async def feedback(self, stream_id: str, rating: int, comment: str = "") -> dict[str, Any]:
        return await self.send("feedback", stream_id=stream_id, rating=rating, comment=comment)

    async def send(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Send one frame and return its ``ack``; raise :class:`ControlError` on ``error``."""
        ws = await self._open()
        ref = f"c{next(self._refs)}"
        answer = self._pending[ref] = asyncio.get_running_loop().create_future()
        try:
            await ws.send_bytes(_json.encode({"type": kind, "ref": ref, **fields}))
            async with asyncio.timeout(ACK_TIMEOUT_S):
                frame = await answer
        except TimeoutError:
            raise ControlError("timeout", f"no answer to {kind} within {ACK_TIMEOUT_S} s") from None
        finally:
            self._pending.pop(ref, None)
        if frame.get("type") == "error":
            error = frame.get("error") or {}
            raise ControlError(str(error.get("type")), str(error.get("message")))
        return dict(frame)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with suppress(asyncio.CancelledError):
                await self._reader

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        async with self._lock:
            if self._ws is None or self._ws.closed:
                try:
                    self._ws = await self._session.ws_connect(self._url, headers=self._headers)
                except aiohttp.WSServerHandshakeError as exc:
                    raise StreamRefused(exc.status, str(exc.message).encode(), {}) from None
                self._reader = asyncio.create_task(self._read(self._ws))
            return self._ws

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = msgspec.json.decode(message.data)
            waiter = self._pending.get(str(frame.get("ref")))
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(ControlError("closed", "the control socket closed"))
