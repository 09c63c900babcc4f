"""The change feed: what happened to agents and sessions, in order (one Redis Stream).

The Lua scripts append to it (``registry.lua``); :class:`ChangeFeed` reads it back and
follows it. Entries are :class:`~registry.records.Change`s; see "Change feed" in
docs/registry.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import redis.asyncio as aioredis

from registry.keys import RedisKeys
from registry.limits import check_count, check_stream_id
from registry.records import Change
from registry.redis_client import bounded_block_ms, text
from registry.streams import StreamHub, stream_entries


class ChangeFeed:
    """Reads and follows the change feed (``RedisKeys.changes``)."""

    def __init__(self, redis: aioredis.Redis, keys: RedisKeys) -> None:
        self.redis = redis
        self.keys = keys

    async def watch(
        self, last_id: str = "$", *, block_ms: int = 5000, hub: StreamHub | None = None
    ) -> AsyncGenerator[Change, None]:
        """Follow the change feed after ``last_id`` (``$``: only changes from now on).

        Without ``hub`` this holds one pooled connection in a blocking read for as long as
        it follows; with a :class:`~registry.streams.StreamHub` (the HTTP API) it holds none.
        """
        if last_id == "$":
            last_id = await self._last_id()
        else:
            check_stream_id(last_id)
        if hub is not None:
            batches = hub.entries(self.keys.changes, last_id, idle_ms=block_ms)
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    for entry_id, fields in batch:
                        yield _change(entry_id, fields)
            return
        while True:
            reply = await self.redis.xread(
                {self.keys.changes: last_id},
                count=500,
                block=bounded_block_ms(self.redis, block_ms),
            )
            for entry_id, fields in stream_entries(reply):
                last_id = entry_id
                yield _change(entry_id, fields)

    async def read(self, *, after: str = "-", count: int = 1000) -> list[Change]:
        """Entries after ``after`` (exclusive; ``-`` from the start)."""
        check_count(count)
        if after != "-":
            check_stream_id(after)
        start = "-" if after == "-" else f"({after}"
        entries: Any = await self.redis.xrange(self.keys.changes, min=start, count=count)
        return [_change(text(i), f) for i, f in entries]

    async def _last_id(self) -> str:
        last = await self.redis.xrevrange(self.keys.changes, count=1)
        return text(last[0][0]) if last else "0-0"


def _change(entry_id: str, raw: dict[Any, Any]) -> Change:
    fields = {text(k): text(v) for k, v in raw.items()}
    return Change(
        id=entry_id,
        kind=fields.pop("kind", ""),
        instance_id=fields.pop("instance_id", None),
        session_id=fields.pop("session_id", None),
        fields=fields,
    )
