"""Fault injection for tests and benchmarks: event streams that break off at random points.

:class:`DroppingTransport` is an httpx transport that passes requests through and, while
its budget lasts, cuts server-sent-event responses after a random number of received chunks
by raising :class:`httpx.ReadError` — to the A2A client exactly what a dropped connection
looks like; closing the response closes the connection, so the server sees it go too.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import httpx


class DroppingTransport(httpx.AsyncBaseTransport):
    """Cut up to ``drops`` event streams, each after 1..``max_chunks`` chunks."""

    def __init__(
        self,
        drops: int,
        *,
        seed: int = 0,
        max_chunks: int = 30,
        inner: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.remaining = drops
        self.dropped = 0
        self._rng = random.Random(seed)
        self._max_chunks = max_chunks
        self._inner = inner or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50)
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        is_stream = response.headers.get("content-type", "").startswith("text/event-stream")
        if is_stream and self.remaining > 0 and isinstance(response.stream, httpx.AsyncByteStream):
            self.remaining -= 1
            cut = self._rng.randint(1, self._max_chunks)
            response.stream = _CutStream(response.stream, cut, self)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CutStream(httpx.AsyncByteStream):
    """A response body that fails after ``cut`` chunks (if it gets that far).

    A stream that ends or is closed before its cut gives the drop back to the transport.
    """

    def __init__(self, inner: httpx.AsyncByteStream, cut: int, owner: DroppingTransport) -> None:
        self._inner = inner
        self._cut = cut
        self._owner = owner
        self._settled = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            yield chunk
            seen += 1
            if seen >= self._cut:
                self._settled = True
                self._owner.dropped += 1
                await self._inner.aclose()
                raise httpx.ReadError("connection dropped (injected fault)")
        self._give_back()

    def _give_back(self) -> None:
        if not self._settled:
            self._settled = True
            self._owner.remaining += 1

    async def aclose(self) -> None:
        self._give_back()
        await self._inner.aclose()
