"""The Redis task store: durable settled states, coalesced intermediate ones, outages."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from a2a.server.context import ServerCallContext
from a2a.server.id_generator import IDGeneratorContext
from a2a.types import ListTasksRequest, Task, TaskState, TaskStatus

from agents.scaffold.task_store import RedisTaskStore
from registry.keys import RedisKeys
from tests.conftest import RestartableValkey

CTX = ServerCallContext()


def _task(task_id: str, state: int, context_id: str = "ctx") -> Task:
    task = Task(id=task_id, context_id=context_id, status=TaskStatus(state=state))
    task.status.timestamp.GetCurrentTime()
    return task


@pytest.fixture
def store(redis: aioredis.Redis, redis_prefix: str) -> RedisTaskStore:
    return RedisTaskStore(redis, "tester", keys=RedisKeys(redis_prefix))


async def test_settled_state_is_in_redis_when_save_returns(
    store: RedisTaskStore, redis_url: str, redis_prefix: str
) -> None:
    await store.save(_task("t1", TaskState.TASK_STATE_COMPLETED), CTX)
    other_replica = RedisTaskStore(
        aioredis.from_url(redis_url), "tester", keys=RedisKeys(redis_prefix)
    )
    found = await other_replica.get("t1", CTX)
    assert found is not None
    assert found.status.state == TaskState.TASK_STATE_COMPLETED


async def test_intermediate_states_are_coalesced_and_land_soon(
    store: RedisTaskStore, redis: aioredis.Redis, redis_prefix: str
) -> None:
    key = RedisKeys(redis_prefix).task("tester", "anonymous", "t2")
    await store.save(_task("t2", TaskState.TASK_STATE_SUBMITTED), CTX)
    await store.save(_task("t2", TaskState.TASK_STATE_WORKING), CTX)
    local = await store.get("t2", CTX)
    assert local is not None
    assert local.status.state == TaskState.TASK_STATE_WORKING
    for _ in range(100):
        raw = await redis.get(key)
        if raw is not None:
            break
        await asyncio.sleep(0.01)
    assert raw is not None
    assert Task.FromString(raw).status.state == TaskState.TASK_STATE_WORKING


async def test_fresh_ids_skip_lookups_and_unknown_ids_are_none(store: RedisTaskStore) -> None:
    fresh = store.id_generator().generate(IDGeneratorContext())
    assert await store.get(fresh, CTX) is None
    assert await store.get("never-saved", CTX) is None


async def test_list_filters_and_pages(store: RedisTaskStore) -> None:
    for i in range(5):
        state = TaskState.TASK_STATE_COMPLETED if i % 2 else TaskState.TASK_STATE_FAILED
        await store.save(_task(f"l{i}", state, context_id="a" if i < 3 else "b"), CTX)
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


async def test_delete_removes_the_task(store: RedisTaskStore) -> None:
    await store.save(_task("d1", TaskState.TASK_STATE_COMPLETED), CTX)
    await store.delete("d1", CTX)
    assert await store.get("d1", CTX) is None
    assert (await store.list(ListTasksRequest(), CTX)).total_size == 0


async def test_a_save_during_an_outage_lands_when_redis_returns(
    own_valkey: RestartableValkey,
) -> None:
    client = aioredis.from_url(own_valkey.url, socket_timeout=0.5)
    store = RedisTaskStore(client, "tester", keys=RedisKeys("outage"))
    own_valkey.stop()
    saving = asyncio.create_task(store.save(_task("o1", TaskState.TASK_STATE_COMPLETED), CTX))
    await asyncio.sleep(1.0)
    assert not saving.done(), "a settled save must wait for Redis, not drop the task"
    own_valkey.start()
    await asyncio.wait_for(saving, 10)
    raw = await aioredis.from_url(own_valkey.url).get(
        RedisKeys("outage").task("tester", "anonymous", "o1")
    )
    assert raw is not None
    assert Task.FromString(raw).status.state == TaskState.TASK_STATE_COMPLETED
