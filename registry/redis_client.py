"""Small helpers around ``redis.asyncio``: cached Lua scripts and reply decoding."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import DataError, NoScriptError, RedisError

from protocol.settings import CommonSettings

log = logging.getLogger(__name__)

Arg = str | bytes | int | float
_DEFAULT_SOCKET_TIMEOUT = 5.0
#: Most scripts one pipeline carries. Small batches keep client and server both busy;
#: one big batch would make them take turns (measured best at 4 with 16 callers).
MAX_BATCH = 4


class Script:
    """A Lua script run with EVALSHA (SHA1 computed locally; loaded on the first miss).

    Calls made in the same event-loop tick on one client share a pipeline (one write, one
    read) — see :class:`AutoPipeline`. Each script still runs atomically on its own.
    """

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(
        self, client: aioredis.Redis, keys: Sequence[str], args: Sequence[Arg] = ()
    ) -> Any:
        return await auto_pipeline(client).submit(self, keys, args)

    async def run(
        self, client: aioredis.Redis, keys: Sequence[str], args: Sequence[Arg] = ()
    ) -> Any:
        """Run on its own round trip (no batching)."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


_Call = tuple[Script, Sequence[str], Sequence[Arg], "asyncio.Future[Any]"]


class AutoPipeline:
    """Batches the script calls issued in one event-loop tick into pipelines.

    redis.asyncio pays a fixed cost per command (connection checkout, timeout, retry
    wrapper) that exceeds the round trip itself; a pipeline pays it once per batch. With
    many concurrent callers this lifts throughput (about 2x for a trivial script with 16
    callers); a lone call goes out on its own, as usual. Batches hold at most
    :data:`MAX_BATCH` calls.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._queue: list[_Call] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(
        self, script: Script, keys: Sequence[str], args: Sequence[Arg]
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((script, keys, args, future))
        if len(self._queue) >= MAX_BATCH:
            self._flush()
        return future

    def _flush(self) -> None:
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        task = asyncio.ensure_future(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Call]) -> None:
        if len(batch) == 1:
            script, keys, args, future = batch[0]
            await _settle(future, script.run(self.client, keys, args))
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for script, keys, args, _ in batch:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                results = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (loop shutting down): so are the callers
            for *_, future in batch:
                future.cancel()
            raise
        unloaded: list[_Call] = []
        for call, result in zip(batch, results, strict=True):
            future = call[3]
            if isinstance(result, NoScriptError):
                unloaded.append(call)  # the server lost its scripts (restart, SCRIPT FLUSH)
            elif future.done():
                continue
            elif isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
        for script, keys, args, future in unloaded:
            await _settle(future, script.run(self.client, keys, args))


async def _settle(future: asyncio.Future[Any], call: Awaitable[Any]) -> None:
    """Resolve ``future`` with the outcome of ``call``."""
    try:
        result = await call
    except Exception as exc:
        if not future.done():
            future.set_exception(exc)
    except BaseException:
        future.cancel()
        raise
    else:
        if not future.done():
            future.set_result(result)


_PIPELINES: weakref.WeakKeyDictionary[aioredis.Redis, AutoPipeline] = weakref.WeakKeyDictionary()


def auto_pipeline(client: aioredis.Redis) -> AutoPipeline:
    """The client's :class:`AutoPipeline` (one per client, shared by every component)."""
    pipeline = _PIPELINES.get(client)
    if pipeline is None:
        pipeline = _PIPELINES[client] = AutoPipeline(client)
    return pipeline


class HiredisPackConnection(aioredis.Connection):
    """A connection that packs commands with hiredis (C), as redis-py's sync client does.

    redis.asyncio packs in pure Python, which costs more CPU than the round trip itself on
    the registry's hot paths. Replies are parsed as usual.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        if self.encoder.encoding.replace("-", "").lower() != "utf8":
            return super().pack_command(*args)
        first = args[0]
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise DataError(str(exc)) from exc


#: Connections one client's pool opens at most (redis-py's default).
MAX_CONNECTIONS = 100


def connect(url: str, *, pool_timeout_s: float | None = None, **options: Any) -> aioredis.Redis:
    """``redis.asyncio.from_url`` with :class:`HiredisPackConnection` for ``redis://`` URLs.

    With ``pool_timeout_s`` a command that finds every pooled connection busy waits up to
    that long for one (a blocking pool) instead of failing at once with "Too many
    connections".
    """
    if url.startswith("redis://"):
        options.setdefault("connection_class", HiredisPackConnection)
    if pool_timeout_s is not None:
        options.setdefault("max_connections", MAX_CONNECTIONS)
        pool = aioredis.BlockingConnectionPool.from_url(url, timeout=pool_timeout_s, **options)
        return aioredis.Redis.from_pool(pool)
    client: aioredis.Redis = aioredis.from_url(url, **options)
    return client


class RedisNotConfigured(ValueError):
    """No REDIS_URL: say how to get one."""


def redis_client(settings: CommonSettings, *, wait_for_connection: bool = False) -> aioredis.Redis:
    """The client every component uses: short timeouts, a couple of quick retries, hiredis.

    ``wait_for_connection``: when every pooled connection is busy, wait up to
    ``redis_timeout_s`` for one instead of failing at once (the registry API does).
    """
    if not settings.redis_url:
        raise RedisNotConfigured(
            "REDIS_URL is not set: start the whole stack with `scriptorium up` (it runs an "
            "embedded Valkey) or point REDIS_URL at a Redis/Valkey, e.g. redis://127.0.0.1:6379/0"
        )
    return connect(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
        health_check_interval=30,
        pool_timeout_s=settings.redis_timeout_s if wait_for_connection else None,
    )


def text(value: Any) -> str:
    """A reply value as ``str`` (works with and without ``decode_responses``)."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def opt_text(value: Any) -> str | None:
    """Like :func:`text`, but ``None`` (a missing field) stays ``None``."""
    return None if value is None else text(value)


def as_int(value: Any, default: int = 0) -> int:
    """A reply value as ``int`` (``default`` when missing or empty)."""
    if value is None or value in (b"", ""):
        return default
    return int(value)


def pairs(flat: Sequence[Any]) -> dict[str, Any]:
    """``[k1, v1, k2, v2]`` (an HGETALL-style reply from Lua) as a dict with str keys."""
    return {text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def hash_fields(raw: dict[Any, Any]) -> dict[str, Any]:
    """An HGETALL reply with ``str`` keys."""
    return {text(k): v for k, v in raw.items()}


def describe(client: aioredis.Redis) -> str:
    """Where a client connects, as a URL without credentials."""
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}"
    scheme = "rediss" if kwargs.get("ssl") else "redis"
    host = kwargs.get("host", "localhost")
    return f"{scheme}://{host}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def bounded_block_ms(client: aioredis.Redis, wanted_ms: int) -> int:
    """A BLOCK time that returns before the client's socket timeout fires."""
    kwargs = client.connection_pool.connection_kwargs
    # redis-py applies a 5 s default socket timeout when none was configured.
    timeout = kwargs.get("socket_timeout", _DEFAULT_SOCKET_TIMEOUT)
    if not timeout:
        return max(1, wanted_ms)
    return max(1, min(wanted_ms, int(timeout * 1000 * 0.8)))


async def listen(
    client: aioredis.Redis,
    channel: str,
    handle: Callable[[bytes], Awaitable[None]],
    *,
    retry_s: float = 1.0,
) -> None:
    """Run until cancelled: ``handle`` each message published on ``channel``.

    The subscription holds one connection of ``client``'s pool; when Redis goes away it is
    made again after ``retry_s`` (messages published meanwhile are missed, as pub/sub does).
    """
    while True:
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await handle(message["data"])
        except (RedisError, OSError) as exc:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                # Closing the subscription failed while it was being cancelled: stop anyway.
                raise asyncio.CancelledError from exc
            extra = {"channel": channel, "error": str(exc)}
            log.warning("subscription lost; subscribing again", extra=extra)
            await asyncio.sleep(retry_s)
