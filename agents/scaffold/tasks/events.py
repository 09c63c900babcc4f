"""Task events across replicas: a2a-sdk's ``TaskEventStream`` on Redis Streams, and resume.

The store (:mod:`agents.scaffold.tasks.store`) appends each event to its task's stream in the
same script that writes the task, so ``publish`` has nothing left to do. ``subscribe`` blocks
on XREAD — no polling loop — on a connection pool of its own, so waiting subscribers never
starve the agent's other Redis work. When a read times out it checks that the task's runner
is alive; a task orphaned by a crash is recorded FAILED, which ends every subscription.

:class:`ResumableRequestHandler` is the SDK's request handler plus the resume-cursor
extension (:mod:`protocol.streams`): SubscribeToTask with a cursor is served from the stream.
It also refuses, before a task exists, messages over the limits and new work while the agent
runs as many tasks as it takes (:mod:`agents.scaffold.limits`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any, cast

import redis.asyncio as aioredis
from a2a.server.agent_execution import AgentExecutor
from a2a.server.cluster import TaskEventStream, TaskVersion, VersionedEvent
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.request_handler import validate, validate_request_params
from a2a.server.routes.common import StarletteUser
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    Message,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
)
from a2a.utils.errors import InvalidParamsError, TaskNotFoundError
from a2a.utils.proto_utils import to_stream_response
from redis.exceptions import RedisError
from starlette.authentication import SimpleUser

from agents.scaffold.limits import Admission, AdmittedExecutor, RequestLimits, check_message
from agents.scaffold.tasks.records import ANONYMOUS, reaching_redis, version_number
from agents.scaffold.tasks.store import ANNOUNCE_NEW_TASKS, RedisTaskStore
from agents.scaffold.tasks.writer import RETRY_DELAY_S
from protocol.errors import task_store_unavailable
from protocol.streams import TERMINAL_STATES, is_final, requested_cursor
from registry.redis_client import listen, text

#: How long one XREAD waits before checking that the task's runner is still alive.
BLOCK_MS = 2_000
BATCH = 256
_XReadReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]
MAX_WAITING_SUBSCRIBERS = 512
log = logging.getLogger(__name__)


class RedisTaskEventStream(TaskEventStream):
    """Each task's events, in order, from its Redis Stream."""

    def __init__(self, store: RedisTaskStore, *, block_ms: int = BLOCK_MS) -> None:
        self._store = store
        self._block_ms = block_ms
        kwargs = dict(store.records.redis.connection_pool.connection_kwargs)
        kwargs["socket_timeout"] = None  # a blocked XREAD is not a stuck socket
        self._reader = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool(
                connection_class=store.records.redis.connection_pool.connection_class,
                max_connections=MAX_WAITING_SUBSCRIBERS,
                **kwargs,
            )
        )

    async def publish(self, task_id: str, event: VersionedEvent) -> None:
        """Nothing to do: the store logged the event with the write that produced it."""
        del task_id, event

    async def subscribe(
        self, task_id: str, *, after: TaskVersion
    ) -> AsyncGenerator[VersionedEvent, None]:
        """Events of ``task_id`` after version ``after``, live, until the task is gone."""
        key = self._store.records.events(task_id)
        cursor = f"0-{version_number(after)}"
        while True:
            reply = await self._read(key, cursor)
            if not reply:
                if not await self._still_running(task_id):
                    return
                continue
            for _stream, entries in reply:
                for entry_id, fields in entries:
                    cursor = text(entry_id)
                    response = StreamResponse.FromString(fields[b"e"])
                    seq = int(cursor.split("-", 1)[1])
                    yield VersionedEvent(event=_event(response), version=TaskVersion(seq))

    async def _read(self, key: str, cursor: str) -> _XReadReply:
        """One blocking XREAD; while Redis is away it is tried again for the store's
        ``timeout_s``, then TaskStoreUnavailableError ends the subscription."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._store.timeout_s
        while True:
            try:
                # The connection has no socket timeout (a blocked XREAD is not a stuck
                # socket): this bounds the wait for a peer that vanished without a word.
                async with asyncio.timeout(self._block_ms / 1000 + self._store.timeout_s):
                    reply = await self._reader.xread(
                        {key: cursor}, count=BATCH, block=self._block_ms
                    )
                return cast(_XReadReply, reply)
            except (RedisError, OSError, TimeoutError) as exc:
                if loop.time() + RETRY_DELAY_S >= give_up_at:
                    raise task_store_unavailable(
                        self._store.timeout_s, self._store.timeout_s
                    ) from exc
                await asyncio.sleep(RETRY_DELAY_S)

    async def _still_running(self, task_id: str) -> bool:
        """False when the task is gone; an orphaned task is failed (its event follows)."""
        key = self._store.records.task(task_id)
        async with reaching_redis(self._store.timeout_s):
            exists = await self._store.records.redis.exists(key)
        if not exists:
            return False
        await self._store.fail_orphan(task_id)
        return True

    async def destroy(self, task_id: str) -> None:
        """Nothing to release: streams expire with their task."""
        del task_id

    @property
    def reader(self) -> aioredis.Redis:
        """The client of blocking reads (XREAD, pub/sub), apart from the agent's own pool."""
        return self._reader

    async def aclose(self) -> None:
        """Close the subscribers' connection pool."""
        await self._reader.aclose()


class ResumableRequestHandler(DefaultRequestHandler):
    """The SDK's request handler, with SubscribeToTask resuming after a client's cursor."""

    def __init__(
        self,
        executor: AgentExecutor,
        task_store: RedisTaskStore,
        card: AgentCard,
        *,
        event_stream: RedisTaskEventStream,
        limits: RequestLimits | None = None,
        **kwargs: Any,
    ) -> None:
        self.limits = limits or RequestLimits()
        self.admission = Admission(self.limits.max_in_flight, self.limits.retry_after_s)
        admitted = AdmittedExecutor(executor, self.admission)
        super().__init__(admitted, task_store, card, event_stream=event_stream, **kwargs)
        self._events = event_stream
        self._store = task_store
        records = task_store.records
        self._channel = records.keys.task_cancels(records.agent)

    def _admit(self, params: SendMessageRequest, context: ServerCallContext) -> None:
        """Refuse a message over the limits, or any message when the agent is full."""
        check_message(params.message, self.limits)
        self.admission.admit(context)

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        """The SDK's, with the new task stored at once: the client hears of it at once."""
        self._admit(params, context)
        context.state[ANNOUNCE_NEW_TASKS] = True
        try:
            async for event in super().on_message_send_stream(params, context):
                yield event
        finally:
            self.admission.release(context)

    async def on_message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Task | Message:
        """The SDK's; a request answered before its task ends has the task stored at once."""
        self._admit(params, context)
        if params.configuration.return_immediately:
            context.state[ANNOUNCE_NEW_TASKS] = True
        try:
            result: Task | Message = await super().on_message_send(params, context)
        finally:
            self.admission.release(context)
        return result

    async def on_cancel_task(
        self, params: CancelTaskRequest, context: ServerCallContext
    ) -> Task | None:
        """Cancel, and tell the replica running the task to stop it (it may be another)."""
        task: Task | None = await super().on_cancel_task(params, context)
        owner = self._store.owner_of(context)
        message = json.dumps({"task": params.id, "owner": owner})
        try:
            await self._store.records.redis.publish(self._channel, message)
        except (RedisError, OSError) as exc:
            log.warning(
                "could not announce a cancel", extra={"task_id": params.id, "error": str(exc)}
            )
        return task

    async def stop_cancelled_tasks(self) -> None:
        """Run until cancelled: stop tasks running here that another replica cancelled."""
        await listen(self._events.reader, self._channel, self._stop_if_running)

    async def _stop_if_running(self, message: bytes) -> None:
        cancelled: dict[str, str] = json.loads(message)
        active = await self._active_task_registry.get(cancelled["task"])
        if active is None or active.is_finished:
            return
        log.info(
            "stopping a task cancelled on another replica", extra={"task_id": cancelled["task"]}
        )
        try:
            await active.cancel(owner_context(cancelled["owner"]))
        except Exception as exc:  # already over, or the stop raced the task's own end
            log.info(
                "cancelled task ended", extra={"task_id": cancelled["task"], "error": str(exc)}
            )

    @validate_request_params
    @validate(
        lambda self: self._agent_card.capabilities.streaming,
        "Streaming is not supported by the agent",
    )
    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        """With a resume cursor: exactly the events after it; otherwise as the spec says."""
        try:
            cursor = requested_cursor(context.requested_extensions, _headers(context))
        except ValueError as exc:
            raise InvalidParamsError(message=str(exc)) from None
        if cursor is None:
            async for event in super().on_subscribe_to_task(params, context):
                yield event
            return
        stored = await self._versioned_store.get(params.id, context)
        if stored is None:
            raise TaskNotFoundError
        finished = stored.task.status.state in TERMINAL_STATES
        if finished and version_number(stored.version) <= cursor:
            return  # finished, and the client has seen everything
        after = TaskVersion(cursor) if cursor else TaskVersion.MISSING
        async for versioned in self._events.subscribe(params.id, after=after):
            yield versioned.event
            if is_final(to_stream_response(versioned.event)):
                return


def owner_context(owner: str) -> ServerCallContext:
    """A call context that the store resolves to ``owner``."""
    if owner == ANONYMOUS:
        return ServerCallContext()
    return ServerCallContext(user=StarletteUser(SimpleUser(owner)))


def _headers(context: ServerCallContext) -> Mapping[str, Any]:
    """The request's HTTP headers (gRPC metadata too: the gRPC context builder puts it there)."""
    headers = context.state.get("headers")
    return headers if isinstance(headers, Mapping) else {}


def _event(response: StreamResponse) -> Event:
    kind = response.WhichOneof("payload")
    if kind == "task":
        return response.task
    if kind == "message":
        return response.message
    if kind == "status_update":
        return response.status_update
    if kind == "artifact_update":
        return response.artifact_update
    raise ValueError(f"stream entry without a payload: {kind!r}")
