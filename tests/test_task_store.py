"""The Redis task store and event stream: versions, coalescing, cross-replica writes, orphans."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from a2a.server.cluster import ConcurrentTaskModificationError, TaskVersion
from a2a.server.context import ServerCallContext
from a2a.server.id_generator import IDGeneratorContext
from a2a.types import (
    ListTasksRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)

from agents.scaffold.tasks.events import RedisTaskEventStream, owner_context
from agents.scaffold.tasks.records import FOREIGN_STRIDE
from agents.scaffold.tasks.store import ANNOUNCE_NEW_TASKS, RedisTaskStore
from protocol.streams import ORPHANED, sequence_of
from registry.keys import RedisKeys
from scriptorium.testing import wait_for
from tests.conftest import RestartableValkey

CTX = ServerCallContext()
#: A request whose client hears of the task before it ends (a stream).
STREAMING = ServerCallContext(state={ANNOUNCE_NEW_TASKS: True})
M = TaskVersion.MISSING


def _task(task_id: str, state: TaskState, context_id: str = "ctx") -> Task:
    task = Task(id=task_id, context_id=context_id, status=TaskStatus(state=state))
    task.status.timestamp.GetCurrentTime()
    return task


def _status(task: Task) -> TaskStatusUpdateEvent:
    return TaskStatusUpdateEvent(task_id=task.id, context_id=task.context_id, status=task.status)


def _chunk(task: Task, text: str) -> TaskArtifactUpdateEvent:
    event = TaskArtifactUpdateEvent(task_id=task.id, context_id=task.context_id, append=True)
    event.artifact.artifact_id = "answer"
    event.artifact.parts.add().text = text
    return event


@pytest.fixture
def keys(redis_prefix: str) -> RedisKeys:
    return RedisKeys(redis_prefix)


@pytest.fixture
def store(redis: aioredis.Redis, keys: RedisKeys) -> RedisTaskStore:
    return RedisTaskStore(redis, "tester", keys=keys)


@pytest.fixture
def replica(redis_url: str, keys: RedisKeys) -> RedisTaskStore:
    """A second replica of the same agent, on its own connection."""
    return RedisTaskStore(aioredis.from_url(redis_url), "tester", keys=keys)


async def _streamed_new_task(
    store: RedisTaskStore, redis: aioredis.Redis, keys: RedisKeys, task_id: str
) -> tuple[Task, TaskVersion]:
    """A working task saved as a stream's first event: stored straight away (waited for)."""
    task = _task(task_id, TaskState.TASK_STATE_WORKING)
    version = await store.save(task, event=task, prev_version=M, context=STREAMING)

    async def created() -> bool:
        return bool(await redis.hget(keys.task("tester", task_id), "v") == b"1")

    await wait_for(created, 5, "a new task was not stored straight away")
    return task, version


async def _stored_state(redis: aioredis.Redis, keys: RedisKeys, task_id: str) -> int | None:
    raw = await redis.hget(keys.task("tester", task_id), "t")
    return None if raw is None else Task.FromString(raw).status.state


async def test_settled_state_is_in_redis_when_save_returns(
    store: RedisTaskStore, replica: RedisTaskStore
) -> None:
    version = await store.save(
        _task("t1", TaskState.TASK_STATE_COMPLETED), prev_version=M, context=CTX
    )
    found = await replica.get("t1", CTX)
    assert found is not None
    assert found.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert found.version == version


async def test_intermediate_writes_are_coalesced_into_one_and_keep_every_event(
    store: RedisTaskStore, redis: aioredis.Redis, keys: RedisKeys
) -> None:
    task, v = await _streamed_new_task(store, redis, keys, "t2")
    for word in ("one", "two", "three"):
        v = await store.save(task, event=_chunk(task, word), prev_version=v, context=CTX)
    assert await redis.hget(keys.task("tester", "t2"), "v") == b"1", "updates wait to be coalesced"
    local = await store.get("t2", CTX)
    assert local is not None
    assert local.version == v

    async def landed() -> bool:
        return bool(await redis.hget(keys.task("tester", "t2"), "v") == b"4")

    await wait_for(landed, 5, "the coalesced write landed")
    entries = await redis.xrange(keys.task_events("tester", "t2")) or []
    assert [entry_id for entry_id, _ in entries] == [b"0-1", b"0-2", b"0-3", b"0-4"]
    assert v == TaskVersion(4)


async def test_a_task_answered_only_at_its_end_is_written_once(
    store: RedisTaskStore, redis: aioredis.Redis, keys: RedisKeys
) -> None:
    task = _task("t8", TaskState.TASK_STATE_WORKING)
    v = await store.save(task, event=task, prev_version=M, context=CTX)
    v = await store.save(task, event=_chunk(task, "x"), prev_version=v, context=CTX)
    assert await redis.exists(keys.task("tester", "t8")) == 0, "nothing written before the end"
    done = _task("t8", TaskState.TASK_STATE_COMPLETED)
    await store.save(done, event=_status(done), prev_version=v, context=CTX)
    entries = await redis.xrange(keys.task_events("tester", "t8")) or []
    assert [entry_id for entry_id, _ in entries] == [b"0-1", b"0-2", b"0-3"], "in one write"


async def test_a_new_task_already_settled_is_durable_even_on_a_stream(
    store: RedisTaskStore, replica: RedisTaskStore
) -> None:
    failed = _task("t9", TaskState.TASK_STATE_FAILED)
    await store.save(failed, event=failed, prev_version=M, context=STREAMING)
    found = await replica.get("t9", CTX)
    assert found is not None, "a final state is in Redis when save returns"
    assert found.task.status.state == TaskState.TASK_STATE_FAILED


async def test_a_stale_version_is_refused(store: RedisTaskStore, replica: RedisTaskStore) -> None:
    task = _task("t3", TaskState.TASK_STATE_INPUT_REQUIRED)
    v1 = await store.save(task, event=task, prev_version=M, context=CTX)
    await replica.save(task, event=_status(task), prev_version=v1, context=CTX)
    with pytest.raises(ConcurrentTaskModificationError):
        await store.save(task, event=_status(task), prev_version=v1, context=CTX)
    with pytest.raises(ConcurrentTaskModificationError):  # a first write of an existing task
        await replica.save(_task("t3", TaskState.TASK_STATE_SUBMITTED), prev_version=M, context=CTX)


async def test_a_cancel_on_another_replica_wins_over_the_running_replicas_pending_writes(
    store: RedisTaskStore, replica: RedisTaskStore, redis: aioredis.Redis, keys: RedisKeys
) -> None:
    working, v = await _streamed_new_task(store, redis, keys, "t4")
    unstored = _chunk(working, "not yet stored")
    v = await store.save(working, event=unstored, prev_version=v, context=CTX)
    seen = await replica.get("t4", CTX)
    assert seen is not None
    cancelled = _task("t4", TaskState.TASK_STATE_CANCELED)
    cancel_version = await replica.save(
        cancelled, event=_status(cancelled), prev_version=seen.version, context=CTX
    )
    assert cancel_version.is_after(v), "the cancel is numbered after anything streamed live"
    await store.flush()  # the running replica's coalesced write finds the task changed
    with pytest.raises(ConcurrentTaskModificationError):
        await store.save(working, event=_chunk(working, "more"), prev_version=v, context=CTX)
    reread = await store.get("t4", CTX)
    assert reread is not None
    assert reread.task.status.state == TaskState.TASK_STATE_CANCELED
    assert await _stored_state(redis, keys, "t4") == TaskState.TASK_STATE_CANCELED
    with pytest.raises(ConcurrentTaskModificationError):  # a final task cannot be cancelled
        await replica.save(cancelled, event=_status(cancelled), prev_version=M, context=CTX)


async def test_subscribers_get_the_events_after_a_version_live_with_their_sequence(
    store: RedisTaskStore, replica: RedisTaskStore
) -> None:
    events = RedisTaskEventStream(replica, block_ms=200)
    task = _task("t5", TaskState.TASK_STATE_WORKING)
    v = await store.save(task, event=task, prev_version=M, context=CTX)
    v = await store.save(task, event=_chunk(task, "a"), prev_version=v, context=CTX)
    await store.flush()
    received: list[tuple[TaskVersion, object]] = []

    async def follow() -> None:
        async for versioned in events.subscribe("t5", after=TaskVersion(1)):
            received.append((versioned.version, versioned.event))
            if len(received) == 3:
                return

    follower = asyncio.create_task(follow())
    v = await store.save(task, event=_chunk(task, "b"), prev_version=v, context=CTX)
    done = _task("t5", TaskState.TASK_STATE_COMPLETED)
    await store.save(done, event=_status(done), prev_version=v, context=CTX)
    await asyncio.wait_for(follower, 10)
    await events.aclose()
    assert [version for version, _ in received] == [TaskVersion(n) for n in (2, 3, 4)]
    chunks = [e for _, e in received if isinstance(e, TaskArtifactUpdateEvent)]
    assert [c.artifact.parts[0].text for c in chunks] == ["a", "b"]
    assert [sequence_of(c.metadata) for c in chunks] == [2, 3]


async def test_a_task_whose_runner_died_is_failed_for_its_subscribers(
    redis: aioredis.Redis, keys: RedisKeys, replica: RedisTaskStore
) -> None:
    crashed = RedisTaskStore(redis, "tester", keys=keys)
    await crashed.start()
    task = _task("t6", TaskState.TASK_STATE_WORKING)
    await crashed.save(task, event=task, prev_version=M, context=CTX)
    await crashed.flush()
    await crashed.aclose()  # its runner key is withdrawn, as a crash lets it expire
    await replica.start()
    events = RedisTaskEventStream(replica, block_ms=100)
    last = None
    async for versioned in events.subscribe("t6", after=TaskVersion(1)):
        last = versioned
        break
    await events.aclose()
    await replica.aclose()
    assert last is not None
    assert isinstance(last.event, TaskStatusUpdateEvent)
    assert last.event.status.state == TaskState.TASK_STATE_FAILED
    assert ORPHANED in last.event.status.message.parts[0].text
    assert last.version == TaskVersion(FOREIGN_STRIDE)


async def test_tasks_are_scoped_by_owner(store: RedisTaskStore) -> None:
    alice = owner_context("alice")
    await store.save(_task("t7", TaskState.TASK_STATE_COMPLETED), prev_version=M, context=alice)
    assert await store.get("t7", alice) is not None
    assert await store.get("t7", CTX) is None
    assert (await store.list(ListTasksRequest(), CTX)).total_size == 0


async def test_fresh_ids_skip_lookups_and_unknown_ids_are_none(store: RedisTaskStore) -> None:
    fresh = store.id_generator().generate(IDGeneratorContext())
    assert await store.get(fresh, CTX) is None
    assert await store.get("never-saved", CTX) is None


async def test_list_filters_and_pages(store: RedisTaskStore) -> None:
    for i in range(5):
        state = TaskState.TASK_STATE_COMPLETED if i % 2 else TaskState.TASK_STATE_FAILED
        task = _task(f"l{i}", state, context_id="a" if i < 3 else "b")
        await store.save(task, prev_version=M, context=CTX)
    everything = await store.list(ListTasksRequest(), CTX)
    assert everything.total_size == 5
    in_a = await store.list(ListTasksRequest(context_id="a"), CTX)
    assert sorted(t.id for t in in_a.tasks) == ["l0", "l1", "l2"]
    failed = await store.list(ListTasksRequest(status=TaskState.TASK_STATE_FAILED), CTX)
    assert sorted(t.id for t in failed.tasks) == ["l0", "l2", "l4"]
    first = await store.list(ListTasksRequest(page_size=2), CTX)
    second = await store.list(ListTasksRequest(page_size=2, page_token=first.next_page_token), CTX)
    assert len(first.tasks) == 2
    assert not {t.id for t in first.tasks} & {t.id for t in second.tasks}


async def test_delete_removes_the_task_and_its_events(
    store: RedisTaskStore, redis: aioredis.Redis, keys: RedisKeys
) -> None:
    task = _task("d1", TaskState.TASK_STATE_COMPLETED)
    await store.save(task, event=task, prev_version=M, context=CTX)
    await store.delete("d1", CTX)
    assert await store.get("d1", CTX) is None
    assert (await store.list(ListTasksRequest(), CTX)).total_size == 0
    assert await redis.exists(keys.task_events("tester", "d1")) == 0


async def test_a_save_during_an_outage_lands_when_redis_returns(
    own_valkey: RestartableValkey,
) -> None:
    client = aioredis.from_url(own_valkey.url, socket_timeout=0.5)
    store = RedisTaskStore(client, "tester", keys=RedisKeys("outage"))
    own_valkey.stop()
    task = _task("o1", TaskState.TASK_STATE_COMPLETED)
    saving = asyncio.create_task(store.save(task, prev_version=M, context=CTX))
    own_valkey.start()
    await asyncio.wait_for(saving, 10)
    reader = aioredis.from_url(own_valkey.url)
    raw = await reader.hget(RedisKeys("outage").task("tester", "o1"), "t")
    assert raw is not None
    assert Task.FromString(raw).status.state == TaskState.TASK_STATE_COMPLETED


async def test_drain_waits_for_every_running_task_to_settle(store: RedisTaskStore) -> None:
    task = _task("s1", TaskState.TASK_STATE_WORKING)
    v = await store.save(task, event=task, prev_version=M, context=CTX)
    assert not await store.drain(0.05), "a working task is not settled"
    draining = asyncio.create_task(store.drain(5))
    done = _task("s1", TaskState.TASK_STATE_COMPLETED)
    await store.save(done, event=_status(done), prev_version=v, context=CTX)
    assert await draining
