"""Following Redis Streams for many readers at once, without a connection per reader.

A blocking ``XREAD`` holds its connection for as long as it waits. One per open event stream
(SSE) would let a hundred idle readers take every connection of the pool, and with them
every other request and the sweeper. :class:`StreamHub` instead runs **one** reader, on a
connection of its own outside the shared pool, that blocks on every followed stream at
once and hands each new entry to the subscribers of its stream (in memory, bounded).
Subscribers catch up with short ``XRANGE`` reads, at most ``parallel_reads`` at a time.

:class:`StreamSlots` caps how many streams are open in all and per client address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from registry.redis_client import bounded_block_ms, text

log = logging.getLogger(__name__)

T = TypeVar("T")
#: One stream entry: its id and its fields, decoded.
Entry = tuple[str, dict[str, str]]
_PAGE = 500
_RETRY_S = 0.5


class StreamEnded(Exception):
    """The hub stopped delivering to a subscriber (Redis failed, or the subscriber fell
    more than ``buffer`` batches behind); the reader should reconnect and resume."""


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair (``ms`` alone counts as ``ms-0``)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class _Feed:
    """The subscribers of one stream key and the last id the hub has read of it."""

    tail: str
    queues: set[asyncio.Queue[list[Entry] | StreamEnded]] = field(default_factory=set)


class StreamHub:
    """One blocking reader for every followed stream, fanned out to its subscribers."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        block_ms: int = 200,
        buffer: int = 256,
        parallel_reads: int = 8,
    ) -> None:
        self.redis = redis
        self.buffer = buffer
        self._reader = _private_client(redis)
        self._block_ms = bounded_block_ms(self._reader, block_ms)
        self._feeds: dict[str, _Feed] = {}
        self._wake = asyncio.Event()
        self._reads = asyncio.Semaphore(parallel_reads)
        self._task: asyncio.Task[None] | None = None

    @property
    def subscribers(self) -> int:
        """Subscriptions currently served."""
        return sum(len(feed.queues) for feed in self._feeds.values())

    def tail(self, key: str) -> str | None:
        """The last entry id the hub has read of ``key`` (None: nobody follows it)."""
        feed = self._feeds.get(key)
        return None if feed is None else feed.tail

    async def aclose(self) -> None:
        """Stop the reader and close its connection; subscribers see :class:`StreamEnded`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._end_all(StreamEnded("the registry is shutting down"))
        await self._reader.aclose()

    async def read(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run a short command on the shared pool, at most ``parallel_reads`` at a time (so
        a crowd of subscribers catching up never takes every pooled connection)."""
        async with self._reads:
            return await call()

    async def entries(
        self, key: str, after: str, *, idle_ms: int = 5000
    ) -> AsyncGenerator[list[Entry], None]:
        """Batches of entries of ``key`` strictly after ``after`` (a concrete id), in order,
        each entry once. An empty batch once caught up, and after each ``idle_ms`` without
        entries, so the caller may check whether to go on. Raises :class:`StreamEnded` when
        delivery stops."""
        last = after
        async for page in self._range(key, last):
            last = page[-1][0]
            yield page
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = _Feed(tail=last)
            self._start()
        queue: asyncio.Queue[list[Entry] | StreamEnded] = asyncio.Queue(self.buffer)
        feed.queues.add(queue)
        try:
            if stream_id_key(feed.tail) > stream_id_key(last):
                # The hub read past `last` before this subscriber joined: read the gap.
                end = feed.tail
                async for page in self._range(key, last, end):
                    last = page[-1][0]
                    yield page
            yield []  # caught up
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), idle_ms / 1000)
                except TimeoutError:
                    yield []
                    continue
                if isinstance(item, StreamEnded):
                    raise item
                mark = stream_id_key(last)
                fresh = [entry for entry in item if stream_id_key(entry[0]) > mark]
                if fresh:
                    last = fresh[-1][0]
                    yield fresh
        finally:
            feed.queues.discard(queue)
            if not feed.queues and self._feeds.get(key) is feed:
                del self._feeds[key]

    async def _range(
        self, key: str, after: str, end: str = "+"
    ) -> AsyncGenerator[list[Entry], None]:
        """Entries in ``(after, end]``, page by page."""
        while True:
            raw: Any = await self.read(partial(self.redis.xrange, key, f"({after}", end, _PAGE))
            page = [(text(i), _decoded(f)) for i, f in raw]
            if page:
                after = page[-1][0]
                yield page
            if len(page) < _PAGE:
                return

    def _start(self) -> None:
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="stream-hub")

    async def _run(self) -> None:
        while True:
            if not self._feeds:
                self._wake.clear()
                await self._wake.wait()
                continue
            streams: dict[Any, Any] = {key: feed.tail for key, feed in self._feeds.items()}
            try:
                reply = await self._reader.xread(streams, count=_PAGE, block=self._block_ms)
            except (RedisError, OSError) as exc:
                log.warning("stream reader failed; ending open streams", extra={"error": str(exc)})
                self._end_all(StreamEnded(f"Redis failed: {exc}"))
                await asyncio.sleep(_RETRY_S)
                continue
            except Exception:  # never leave subscribers waiting on a dead reader
                log.exception("stream reader failed unexpectedly; ending open streams")
                self._end_all(StreamEnded("the stream reader failed"))
                await asyncio.sleep(_RETRY_S)
                continue
            for key, entries in _by_stream(reply):
                feed = self._feeds.get(key)
                if feed is None or not entries:
                    continue
                feed.tail = entries[-1][0]
                for queue in list(feed.queues):
                    try:
                        queue.put_nowait(entries)
                    except asyncio.QueueFull:
                        feed.queues.discard(queue)
                        _replace_with_end(queue, StreamEnded("the reader fell too far behind"))

    def _end_all(self, error: StreamEnded) -> None:
        feeds, self._feeds = self._feeds, {}
        for feed in feeds.values():
            for queue in feed.queues:
                _replace_with_end(queue, error)


def _replace_with_end(queue: asyncio.Queue[list[Entry] | StreamEnded], error: StreamEnded) -> None:
    """Make ``error`` the next thing ``queue`` delivers (dropping what it held)."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(error)


def _private_client(redis: aioredis.Redis) -> aioredis.Redis:
    """A client like ``redis`` on a one-connection pool of its own (for blocking reads)."""
    pool = redis.connection_pool
    own = aioredis.ConnectionPool(
        connection_class=pool.connection_class, max_connections=1, **pool.connection_kwargs
    )
    return aioredis.Redis.from_pool(own)  # closing the client closes its pool


def _decoded(fields: dict[Any, Any]) -> dict[str, str]:
    return {text(k): text(v) for k, v in fields.items()}


def _by_stream(reply: Any) -> list[tuple[str, list[Entry]]]:
    """An XREAD reply (RESP2 list or RESP3 dict) as (key, entries) pairs, decoded."""
    if not reply:
        return []
    pairs = reply.items() if isinstance(reply, dict) else reply
    return [(text(key), [(text(i), _decoded(f)) for i, f in entries]) for key, entries in pairs]


def stream_entries(reply: Any) -> list[Entry]:
    """The entries of an XREAD reply (RESP2 or RESP3 shape) of every stream read, decoded."""
    return [entry for _, entries in _by_stream(reply) for entry in entries]


class StreamSlots:
    """Caps open streams: ``total`` in all, ``per_client`` for one client address."""

    def __init__(self, *, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._open: dict[str, int] = {}

    @property
    def open(self) -> int:
        return sum(self._open.values())

    def refusal(self, client: str) -> str | None:
        """Why another stream for ``client`` is refused, or None (then :meth:`take` it)."""
        if self.open >= self.total:
            return f"the registry serves {self.total} event streams already"
        if self._open.get(client, 0) >= self.per_client:
            return f"{client} holds {self.per_client} event streams already"
        return None

    def take(self, client: str) -> Callable[[], None]:
        """Count a stream for ``client``; returns the function that gives it back (once)."""
        self._open[client] = self._open.get(client, 0) + 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if given_back:
                return
            given_back = True
            left = self._open[client] - 1
            if left:
                self._open[client] = left
            else:
                del self._open[client]

        return give_back
