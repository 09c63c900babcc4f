"""Push notification delivery: per task and webhook, in order, at least once, in the background.

The SDK calls :class:`PushSender` inline in the task's event consumer, so it only queues: per
task, then per (task, webhook), each drained in order by a background task. Each update is
POSTed as the SDK's ``StreamResponse`` JSON with a stable ``X-A2A-Event-Id`` (the same on
every retry: receivers drop duplicates), retried with exponential backoff and jitter on
timeouts, transport errors, 408/425/429 and 5xx, until the attempts or the time run out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

import httpx
from a2a.server.tasks.push_notification_sender import (
    PushNotificationEvent,
    PushNotificationSender,
)
from a2a.types import (
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskStatusUpdateEvent,
)
from a2a.utils.proto_utils import to_stream_response
from google.protobuf.json_format import MessageToDict
from prometheus_client import Counter
from redis.exceptions import RedisError

from agents.scaffold.push.configs import RedisPushConfigStore
from agents.scaffold.push.urls import PushUrlPolicy, redact_url

#: The header the SDK's ``BasePushNotificationSender`` puts the config's token in.
TOKEN_HEADER = "X-A2A-Notification-Token"  # noqa: S105 (a header name)
#: One id per task update, the same on every retry: a receiver drops ids it has seen.
EVENT_ID_HEADER = "X-A2A-Event-Id"
MAX_ANSWER_BYTES = 64 * 1024
RETRYABLE_STATUSES = frozenset({408, 425, 429})
DELIVERIES = Counter(
    "scriptorium_agent_push_deliveries_total",
    "Push notification updates by outcome (delivered, gave_up, dropped).",
    ["agent", "outcome"],
)
RETRIES = Counter(
    "scriptorium_agent_push_retries_total", "Push delivery attempts that failed.", ["agent"]
)
log = logging.getLogger(__name__)
_EVENT_TYPES: dict[str, type[Task | TaskStatusUpdateEvent | TaskArtifactUpdateEvent]] = {
    "task": Task,
    "status_update": TaskStatusUpdateEvent,
    "artifact_update": TaskArtifactUpdateEvent,
}


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long one update is tried against one webhook."""

    max_attempts: int = 8
    first_delay_s: float = 0.5
    max_delay_s: float = 60.0
    give_up_s: float = 300.0
    timeout_s: float = 10.0

    def delay(self, failures: int, retry_after_s: float | None = None) -> float:
        """Wait after the ``failures``-th failure: doubling, capped, jittered in [d/2, d]."""
        ceiling = min(self.max_delay_s, self.first_delay_s * 2 ** (failures - 1))
        wait: float = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, self.max_delay_s))
        return wait


class _Update(NamedTuple):
    """One task update as it was when it happened (serialized: later changes do not leak)."""

    event_id: str
    kind: str
    raw: bytes


@dataclass(frozen=True)
class _Failure:
    """Why one delivery attempt failed, and whether (and when) to try again."""

    reason: str
    retryable: bool
    retry_after_s: float | None = None


@dataclass
class _Lane:
    """Work waiting for one background task, done in order."""

    items: deque[tuple[_Update, TaskPushNotificationConfig | None]] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None
    dropped: int = 0


class PushSender(PushNotificationSender):
    """Queues each task update for each webhook of the task; delivers in the background.

    ``send_notification`` never waits on the network or Redis: per task a lane looks the
    configs up (one read for every update queued meanwhile), then per (task, config) a lane
    POSTs the updates in order, each until delivered or given up.
    """

    def __init__(
        self,
        store: RedisPushConfigStore,
        policy: PushUrlPolicy,
        http: httpx.AsyncClient,
        *,
        agent: str,
        retry: RetryPolicy | None = None,
        max_queued: int = 1000,
        drain_s: float = 10.0,
    ) -> None:
        self._store = store
        self._policy = policy
        self._http = http
        self._agent = agent
        self._retry = retry or RetryPolicy()
        self._max_queued = max_queued
        self._drain_s = drain_s
        self._tasks: dict[str, _Lane] = {}
        self._hooks: dict[tuple[str, str], _Lane] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def pending(self) -> int:
        """Updates not yet delivered or given up (queued or in flight)."""
        lanes = [*self._tasks.values(), *self._hooks.values()]
        return sum(len(lane.items) + (lane.worker is not None) for lane in lanes)

    async def send_notification(self, task_id: str, event: PushNotificationEvent) -> None:
        """Queue ``event`` for every webhook of ``task_id``; returns at once."""
        if self._closed:
            DELIVERIES.labels(self._agent, "dropped").inc()
            log.warning("push notification dropped: the agent is stopping", extra=_ids(task_id))
            return
        if not self._store.note_update(task_id, event):
            return
        update = _Update(uuid.uuid4().hex, _kind(event), event.SerializeToString())
        lane = self._tasks.setdefault(task_id, _Lane())
        self._enqueue(lane, (update, None), task_id, "")
        if lane.worker is None:
            lane.worker = self._spawn(self._dispatch(task_id, lane))

    def _enqueue(
        self,
        lane: _Lane,
        item: tuple[_Update, TaskPushNotificationConfig | None],
        task_id: str,
        config_id: str,
    ) -> None:
        if len(lane.items) >= self._max_queued:
            lane.items.popleft()
            lane.dropped += 1
            DELIVERIES.labels(self._agent, "dropped").inc()
            if lane.dropped == 1:  # once per lane: a flood must not flood the log too
                log.warning(
                    "push notifications of task %s dropped: more than %d updates waiting; "
                    "the oldest go first",
                    task_id,
                    self._max_queued,
                    extra=_ids(task_id, config_id),
                )
        lane.items.append(item)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        worker = asyncio.create_task(work)
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)
        return worker

    async def _dispatch(self, task_id: str, lane: _Lane) -> None:
        """Fan the task's queued updates out to its webhooks' lanes, in order."""
        try:
            while lane.items:
                batch = [update for update, _ in lane.items]
                lane.items.clear()
                configs = await self._configs(task_id)
                for update in batch:
                    for config in configs:
                        self._to_hook(task_id, config, update)
        finally:
            lane.worker = None
            if self._tasks.get(task_id) is lane:
                del self._tasks[task_id]

    async def _configs(self, task_id: str) -> list[TaskPushNotificationConfig]:
        """The task's configs; a Redis error is retried like a delivery, then given up."""
        failures = 0
        started = time.monotonic()
        while True:
            try:
                return await self._store.get_info_for_dispatch(task_id)
            except (RedisError, OSError) as exc:
                failures += 1
                delay = self._retry.delay(failures)
                if (
                    failures >= self._retry.max_attempts
                    or time.monotonic() - started + delay > self._retry.give_up_s
                ):
                    DELIVERIES.labels(self._agent, "gave_up").inc()
                    log.warning(
                        "push notifications of task %s given up: configs unreadable: %s",
                        task_id,
                        exc,
                        extra=_ids(task_id),
                    )
                    return []
                await asyncio.sleep(delay)

    def _to_hook(self, task_id: str, config: TaskPushNotificationConfig, update: _Update) -> None:
        key = (task_id, config.id)
        lane = self._hooks.setdefault(key, _Lane())
        self._enqueue(lane, (update, config), task_id, config.id)
        if lane.worker is None:
            lane.worker = self._spawn(self._deliver_lane(key, lane))

    async def _deliver_lane(self, key: tuple[str, str], lane: _Lane) -> None:
        try:
            while lane.items:
                update, config = lane.items.popleft()
                if config is not None:
                    await self._deliver(key[0], config, update)
        finally:
            lane.worker = None
            if self._hooks.get(key) is lane:
                del self._hooks[key]

    async def _deliver(
        self, task_id: str, config: TaskPushNotificationConfig, update: _Update
    ) -> None:
        """POST one update to one webhook until it is accepted or the retry budget is spent."""
        body = _body(update)
        started = time.monotonic()
        failures = 0
        while True:
            failure = await self._attempt(config, update, body)
            if failure is None:
                DELIVERIES.labels(self._agent, "delivered").inc()
                log.debug("push notification delivered", extra=_ids(task_id, config.id))
                return
            failures += 1
            RETRIES.labels(self._agent).inc()
            delay = self._retry.delay(failures, failure.retry_after_s)
            if (
                not failure.retryable
                or failures >= self._retry.max_attempts
                or time.monotonic() - started + delay > self._retry.give_up_s
            ):
                break
            await asyncio.sleep(delay)
        DELIVERIES.labels(self._agent, "gave_up").inc()
        log.warning(
            "push notification given up after %d attempt(s): task %s, config %s, %s %s: %s",
            failures,
            task_id,
            config.id,
            update.kind,
            redact_url(config.url),
            failure.reason,
            extra={**_ids(task_id, config.id), "event_id": update.event_id},
        )

    async def _attempt(
        self, config: TaskPushNotificationConfig, update: _Update, body: bytes
    ) -> _Failure | None:
        """One delivery attempt (URL check and DNS included), bounded by the timeout."""
        headers = {"Content-Type": "application/json", EVENT_ID_HEADER: update.event_id}
        if config.token:
            headers[TOKEN_HEADER] = config.token
        auth = config.authentication
        if config.HasField("authentication") and auth.scheme and auth.credentials:
            headers["Authorization"] = f"{auth.scheme} {auth.credentials}"
        try:
            async with asyncio.timeout(self._retry.timeout_s):
                refusal = await self._policy.check(config.url)
                if refusal is not None:
                    return _Failure(f"URL refused: {refusal.reason}", refusal.transient)
                async with self._http.stream(
                    "POST", config.url, content=body, headers=headers
                ) as response:
                    read = 0  # a little of the answer is read, so the connection can be reused
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read > MAX_ANSWER_BYTES:
                            break
        except TimeoutError:
            return _Failure(f"no answer within {self._retry.timeout_s:g}s", retryable=True)
        except httpx.HTTPError as exc:
            return _Failure(f"{type(exc).__name__}: {exc}".rstrip(": "), retryable=True)
        status = response.status_code
        if 200 <= status < 300:
            return None
        retryable = status >= 500 or status in RETRYABLE_STATUSES
        return _Failure(f"HTTP {status}", retryable, _retry_after(response))

    async def aclose(self) -> None:
        """Wait up to ``drain_s`` for queued deliveries, drop the rest, close the client."""
        deadline = time.monotonic() + self._drain_s
        while self._workers and (remaining := deadline - time.monotonic()) > 0:
            await asyncio.wait(set(self._workers), timeout=remaining)
        self._closed = True
        left = self.pending
        for worker in list(self._workers):
            worker.cancel()
        if self._workers:
            await asyncio.wait(set(self._workers))
        if left:
            DELIVERIES.labels(self._agent, "dropped").inc(left)
            log.warning(
                "push notifications dropped at shutdown: %d not delivered within %gs",
                left,
                self._drain_s,
                extra={"agent": self._agent},
            )
        await self._http.aclose()


def _kind(event: PushNotificationEvent) -> str:
    if isinstance(event, TaskStatusUpdateEvent):
        return "status_update"
    if isinstance(event, TaskArtifactUpdateEvent):
        return "artifact_update"
    return "task"


def _ids(task_id: str, config_id: str = "") -> dict[str, str]:
    return {"task_id": task_id, "config_id": config_id} if config_id else {"task_id": task_id}


def _body(update: _Update) -> bytes:
    """The update as the SDK's ``StreamResponse`` JSON (what a streaming client would see)."""
    event = _EVENT_TYPES[update.kind].FromString(update.raw)
    return json.dumps(MessageToDict(to_stream_response(event))).encode()


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (seconds or HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
