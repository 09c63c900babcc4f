"""Limits and bad input at an agent's A2A edge, over the real wire (docs/a2a.md#limits).

One agent built with the scaffold runs in process. Raw HTTP sends what a careless or hostile
client would (unknown part kinds, 5 MB bodies, 10,000-level nesting, megabyte ids, text/plain);
the SDK client (JSON-RPC, HTTP+JSON, gRPC) meets the concurrency limit. Each is refused with
a clear error of the binding's own shape, logged as one warning line. Then the task store's
limits: ListTasks pages in Redis, and the task index forgets what retention let go.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from a2a.server.cluster import TaskVersion
from a2a.server.context import ServerCallContext
from a2a.types import ListTasksRequest, Task, TaskState, TaskStatus
from pydantic import ValidationError

from agents.scaffold.app import AgentParts
from agents.scaffold.executor import SkillCall
from agents.scaffold.settings import AgentSettings
from agents.scaffold.tasks.store import RedisTaskStore
from protocol.cards import JSONRPC_PATH, REST_PATH, CardSpec, Skill
from protocol.client import A2A_VERSION_HEADER, call_skill, open_client, skill_message, task_data
from protocol.errors import AgentBusyError
from protocol.http import json_depth_exceeds
from protocol.payloads import AnswerRequest, GenerateRequest, WriteRequest
from registry.keys import RedisKeys
from scriptorium.testing import running_agent, wait_for
from tests.conftest import RestartableValkey

CAPACITY = 2
RELEASE = asyncio.Event()


async def echo(call: SkillCall) -> None:
    await call.emit({"echo": call.data()})


async def hold(call: SkillCall) -> None:
    await RELEASE.wait()
    await call.emit({"held": True})


LIMITED = AgentParts(
    card=CardSpec(
        name="limited",
        description="An agent with small limits.",
        capacity=CAPACITY,
        skills=[
            Skill(id="echo", name="echo", description="Echoes.", tags=["test"]),
            Skill(id="hold", name="hold", description="Holds until released.", tags=["test"]),
        ],
        primary_skill="echo",
    ),
    handlers={"echo": echo, "hold": hold},
)


@pytest.fixture
def settings(agent_settings: AgentSettings) -> AgentSettings:
    return agent_settings


@pytest.fixture
async def agent(settings: AgentSettings) -> AsyncIterator[str]:
    async with running_agent(LIMITED, settings) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, headers={A2A_VERSION_HEADER: "1.0"}) as client:
        yield client


def _send(message: dict[str, Any], *, id_: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": "SendMessage", "params": {"message": message}}


def _message(**fields: Any) -> dict[str, Any]:
    return {"role": "ROLE_USER", "messageId": "m-1", "parts": [{"text": "hi"}], **fields}


async def _rpc(http: httpx.AsyncClient, url: str, body: Any) -> httpx.Response:
    return await http.post(url + JSONRPC_PATH, json=body)


def _error(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


async def _task_keys(redis: aioredis.Redis, prefix: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=f"{prefix}:a2a:limited:task:*")]


# --- A2A edge cases ------------------------------------------------------------------------


async def test_limit_a_part_of_unknown_kind_is_invalid_params(
    agent: str, http: httpx.AsyncClient
) -> None:
    unknown = _message(parts=[{"kind": "file", "file": {"uri": "file:///etc/passwd"}}])
    error = _error(await _rpc(http, agent, _send(unknown)))
    assert error["code"] == -32602
    assert "parts[0] carries no content" in error["message"]
    rest = await http.post(agent + REST_PATH + "/message:send", json={"message": unknown})
    assert rest.status_code == 400
    assert "carries no content" in rest.json()["error"]["message"]


async def test_limit_too_many_parts_is_invalid_params(agent: str, http: httpx.AsyncClient) -> None:
    many = _message(parts=[{"text": str(i)} for i in range(33)])
    error = _error(await _rpc(http, agent, _send(many)))
    assert error["code"] == -32602
    assert "33 parts; at most 32" in error["message"]
    enough = _message(parts=[{"text": str(i)} for i in range(32)])
    assert "result" in (await _rpc(http, agent, _send(enough))).json()


async def test_limit_oversize_body_gets_a_json_rpc_error_object(
    agent: str, http: httpx.AsyncClient
) -> None:
    big = json.dumps(_send(_message(parts=[{"text": "x" * (5 * 1024 * 1024)}]))).encode()
    for sent in (big, _chunks(big)):  # declared, then streamed without a Content-Length
        response = await http.post(
            agent + JSONRPC_PATH, content=sent, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        body = response.json()
        assert body["jsonrpc"] == "2.0"
        assert body["id"] is None
        assert body["error"]["code"] == -32600
        assert "4194304 bytes" in body["error"]["message"]
        assert "SCRIPTORIUM_MAX_REQUEST_BYTES" in body["error"]["message"]
    rest = await http.post(
        agent + REST_PATH + "/message:send",
        content=big,
        headers={"Content-Type": "application/json"},
    )
    assert rest.status_code == 413
    assert "4194304 bytes" in rest.json()["error"]["message"]


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 256 * 1024):
        yield body[start : start + 256 * 1024]


async def test_limit_deep_json_is_refused_before_parsing(
    agent: str, http: httpx.AsyncClient
) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    body = (
        '{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": '
        '{"role": "ROLE_USER", "messageId": "m-1", "parts": [{"text": "hi"}], '
        f'"metadata": {{"deep": {deep}}}}}}}}}'
    )
    response = await http.post(
        agent + JSONRPC_PATH, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == -32600
    assert "deeper than 32 levels" in error["message"]
    assert "recursion" not in error["message"]
    rest = await http.post(
        agent + REST_PATH + "/message:send",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert rest.status_code == 400
    assert "deeper than 32 levels" in rest.json()["error"]["message"]
    # Nesting within the limit is served as usual (32 levels in all, the request's own 4
    # included; protobuf itself refuses Structs nested 33 deep).
    nested: Any = "leaf"
    for _ in range(28):
        nested = {"a": nested}
    fine = await _rpc(http, agent, _send(_message(metadata={"deep": nested})))
    assert "result" in fine.json()


def test_limit_depth_scan_agrees_with_the_parser() -> None:
    for text, depth in [
        ("1", 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('["[[[[", {"}": "]]]"}]', 2),
        ('["\\"[[[[", {"x": "\\\\"}]', 2),
        ("[" * 33 + "]" * 33, 33),
        ("[[]," * 40 + "1" + "]" * 40, 41),
    ]:
        json.loads(text)
        assert json_depth_exceeds(text.encode(), 32) == (depth > 32), text[:40]
        assert not json_depth_exceeds(text.encode(), depth)
        if depth:
            assert json_depth_exceeds(text.encode(), depth - 1)
    started = time.perf_counter()
    assert json_depth_exceeds(b"[[]," * 1_000_000, 32)
    assert time.perf_counter() - started < 2.0


async def test_limit_ids_are_bounded_and_nothing_is_stored(
    agent: str, http: httpx.AsyncClient, redis: aioredis.Redis, redis_prefix: str
) -> None:
    before = len(await _task_keys(redis, redis_prefix))
    for fields, named in [
        ({"messageId": "m" * (1024 * 1024)}, "messageId"),
        ({"contextId": "c" * 129}, "contextId"),
        ({"contextId": "../../etc/passwd"}, "contextId"),
        ({"taskId": "<script>"}, "taskId"),
        ({"referenceTaskIds": ["ok", "x" * 200]}, "referenceTaskIds[1]"),
    ]:
        response = await _rpc(http, agent, _send(_message(**fields)))
        error = _error(response)
        assert error["code"] == -32602, fields.keys()
        assert error["message"].startswith(named)
        assert len(response.content) < 4096, "the answer echoes the whole id back"
    assert len(await _task_keys(redis, redis_prefix)) == before
    ok = await _rpc(http, agent, _send(_message(contextId="session-1.a_b:c@d")))
    assert "result" in ok.json()


async def test_limit_requests_must_be_json(agent: str, http: httpx.AsyncClient) -> None:
    body = json.dumps(_send(_message()))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        response = await http.post(agent + JSONRPC_PATH, content=body, headers=headers)
        assert response.status_code == 415
        error = response.json()["error"]
        assert response.json()["id"] is None
        assert error["code"] == -32600
        assert "application/json" in error["message"]
    rest = await http.post(
        agent + REST_PATH + "/message:send",
        content=json.dumps({"message": _message()}),
        headers={"Content-Type": "text/plain"},
    )
    assert rest.status_code == 415
    charset = await http.post(
        agent + JSONRPC_PATH,
        content=body,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert "result" in charset.json()


async def test_limit_client_errors_are_logged_as_one_warning_line(
    agent: str, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        await _rpc(http, agent, {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": 7})
        await _rpc(http, agent, _send({"role": "ROLE_USER", "parts": 7}))
        await _rpc(http, agent, _send(_message(parts=[{"kind": "mystery"}])))
        await http.post(agent + REST_PATH + "/message:send", json={"message": {"parts": 7}})
    sdk = [r for r in caplog.records if r.name.startswith("a2a.")]
    assert len([r for r in sdk if r.levelno == logging.WARNING]) >= 3
    loud = [(r.name, r.levelname, r.getMessage()[:80]) for r in sdk if r.levelno >= logging.ERROR]
    assert loud == []
    assert [r.getMessage()[:80] for r in sdk if r.exc_info or r.exc_text] == []


# --- concurrency ---------------------------------------------------------------------------


async def test_limit_a_busy_agent_answers_with_a_retry_hint(
    agent: str, http: httpx.AsyncClient
) -> None:
    RELEASE.clear()
    unary = await open_client(agent, http, streaming=False)
    for _ in range(CAPACITY):
        request = skill_message("hold", {})
        request.configuration.return_immediately = True
        await unary.send_message(request).__anext__()

    async def full() -> bool:
        return bool((await http.get(agent + "/healthz")).json()["in_flight"] == CAPACITY)

    await wait_for(full, 10, f"{CAPACITY} held tasks did not start")
    try:
        with pytest.raises(AgentBusyError) as caught:
            await call_skill(unary, "echo", "one more")
        assert caught.value.message == f"busy: {CAPACITY} tasks in flight, retry in 2 s"
        assert caught.value.retry_after_s == 2
        rest = await http.post(
            agent + REST_PATH + "/message:send", json={"message": _message(messageId="m-2")}
        )
        assert rest.status_code == 503
        assert rest.headers["Retry-After"] == "2"
        grpc = await open_client(agent, http, transport="GRPC")
        with pytest.raises(AgentBusyError, match="busy: 2 tasks in flight"):
            await call_skill(grpc, "echo", "over gRPC")
    finally:
        RELEASE.set()
    await wait_for(
        lambda: httpx.get(agent + "/healthz").json()["in_flight"] == 0, 10, "held tasks ended"
    )
    assert task_data(await call_skill(unary, "echo", "after")) == [{"echo": "after"}]


def test_limit_payloads_bound_passages_tokens_and_messages() -> None:
    passage = {
        "chunk_id": "c",
        "document_id": "d",
        "source": "s",
        "text": "t",
        "score": 1.0,
    }
    with pytest.raises(ValidationError, match="at most 50"):
        WriteRequest.model_validate({"question": "q", "passages": [passage] * 51})
    with pytest.raises(ValidationError, match="less than or equal to 1024"):
        AnswerRequest(question="q", max_tokens=1025)
    with pytest.raises(ValidationError, match="at most 256"):
        GenerateRequest.model_validate(
            {"messages": [{"role": "user", "content": "hi"}] * 257, "max_tokens": 8}
        )
    with pytest.raises(ValidationError, match="at most 16"):
        GenerateRequest.model_validate(
            {"messages": [{"role": "user", "content": "hi"}], "stop": ["x"] * 17}
        )


# --- task store ----------------------------------------------------------------------------

CTX = ServerCallContext()


def _task(task_id: str, *, context_id: str = "ctx", age_s: float = 0.0) -> Task:
    task = Task(
        id=task_id,
        context_id=context_id,
        status=TaskStatus(state=TaskState.TASK_STATE_COMPLETED),
    )
    task.status.timestamp.FromMicroseconds(int((time.time() - age_s) * 1_000_000))
    return task


async def _calls(client: aioredis.Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def test_limit_list_tasks_pages_in_redis_without_reading_every_task(
    own_valkey: RestartableValkey,
) -> None:
    client = aioredis.from_url(own_valkey.url)
    store = RedisTaskStore(client, "lister", keys=RedisKeys("limits"))
    try:
        for i in range(300):
            context_id = "odd" if i % 2 else "even"
            task = _task(f"t{i:03}", context_id=context_id, age_s=(300 - i) / 1000)
            await store.save(task, prev_version=TaskVersion.MISSING, context=CTX)
        newest_first = [f"t{i:03}" for i in reversed(range(300))]
        await client.config_resetstat()

        seen: list[str] = []
        token = ""
        while True:
            page = await store.list(ListTasksRequest(page_size=25, page_token=token), CTX)
            assert page.total_size == 300
            seen.extend(t.id for t in page.tasks)
            token = page.next_page_token
            if not token:
                break
        assert seen == newest_first
        calls = await _calls(client)
        pages = 12
        assert calls.get("hmget", 0) <= 300 + pages, "a page read more tasks than it shows"
        assert calls.get("zrevrangebyscore", 0) <= 2 * pages
        assert "zrange" not in calls, "the whole index was read"
        assert "zrevrange" not in calls, "the whole index was read"

        await client.config_resetstat()
        odd = await store.list(ListTasksRequest(context_id="odd", page_size=10), CTX)
        assert [t.id for t in odd.tasks] == [i for i in newest_first if int(i[1:]) % 2][:10]
        assert odd.total_size == 150
        assert (await _calls(client)).get("hmget", 0) <= 10
        failed = await store.list(
            ListTasksRequest(status=TaskState.TASK_STATE_FAILED, page_size=10), CTX
        )
        assert (failed.total_size, list(failed.tasks)) == (0, [])
    finally:
        await client.aclose()


async def test_limit_task_index_forgets_entries_older_than_retention(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    keys = RedisKeys(redis_prefix)
    store = RedisTaskStore(redis, "lister", keys=keys, retention_s=3600)
    for i in range(5):  # written long after they ended (their status time is old)
        old = _task(f"old{i}", age_s=7200)
        await store.save(old, prev_version=TaskVersion.MISSING, context=CTX)
    await store.save(_task("fresh"), prev_version=TaskVersion.MISSING, context=CTX)
    index = keys.task_index("lister", "anonymous")
    assert [m.decode() for m in await redis.zrange(index, 0, -1)] == ["fresh"]
    assert await redis.zcard(index + ":context:ctx") == 1
    listed = await store.list(ListTasksRequest(), CTX)
    assert [t.id for t in listed.tasks] == ["fresh"]
    assert listed.total_size == 1
    assert 0 < await redis.pttl(keys.task("lister", "fresh")) <= 3600 * 1000
