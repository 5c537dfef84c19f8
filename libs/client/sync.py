"""A blocking face on :class:`~libs.client.stream.Client`, for scripts without an event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
from types import TracebackType
from typing import Any

from libs.client.events import StreamEvent
from libs.client.stream import Client


class SyncClient:
    """Runs a :class:`Client` on a private event loop; close it (or use ``with``) when done."""

    def __init__(self, gateway: str, api_key: str | None = None, **options: Any) -> None:
        self._runner = asyncio.Runner()
        self._client: Client = self._runner.run(_make(gateway, api_key, options))

    def ask(self, prompt: str, **request: Any) -> str:
        """The whole answer to ``prompt``."""
        return self._runner.run(self._client.ask(prompt, **request))

    def events(self, prompt: str, **request: Any) -> Iterator[StreamEvent]:
        """Start a stream and yield its events as they come (resuming as the async one does)."""
        stream = self._runner.run(self._client.create(prompt, **request))
        source = stream.events()
        try:
            while True:
                try:
                    yield self._runner.run(_next(source))
                except StopAsyncIteration:
                    return
        finally:
            self._runner.run(source.aclose())

    def close(self) -> None:
        self._runner.run(self._client.close())
        self._runner.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


async def _next(source: AsyncGenerator[StreamEvent, None]) -> StreamEvent:
    return await anext(source)


async def _make(gateway: str, api_key: str | None, options: dict[str, Any]) -> Client:
    """The client is built inside the loop, where its HTTP session must live."""
    return Client(gateway, api_key, **options)
