"""The agent scaffold over the real A2A wire, with the a2a-sdk client and a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
from a2a.client import A2ACardResolver, Client
from a2a.types import CancelTaskRequest, GetTaskRequest, TaskState
from pydantic import SecretStr

from agents.scaffold.app import AgentParts
from agents.scaffold.executor import SkillCall, SkillError
from agents.scaffold.settings import AgentSettings
from protocol.cards import CARD_PATH, JSONRPC_PATH, CardSpec, Skill, card_to_dict
from protocol.client import SkillFailed, call_skill, open_client, skill_message, task_data
from protocol.payloads import SearchRequest, SearchResult
from registry.directory import Registry
from registry.keys import RedisKeys
from registry.settings import RegistrySettings
from scriptorium.testing import running_agent, wait_for
from tests.conftest import RestartableValkey

SLOW_STARTED = asyncio.Event()
SLOW_CANCELLED = asyncio.Event()


async def echo(call: SkillCall) -> None:
    await call.emit({"echo": call.data()})


async def slow(call: SkillCall) -> None:
    await call.progress("started", step=1)
    SLOW_STARTED.set()
    try:
        await asyncio.Event().wait()  # never set: only a cancel ends the stub
    except asyncio.CancelledError:
        SLOW_CANCELLED.set()
        raise


async def steps(call: SkillCall) -> None:
    for i in (1, 2, 3):
        await call.progress(f"step {i}", step=i)
    await call.emit({"done": 3})


async def crash(call: SkillCall) -> None:
    raise ValueError("boom")


async def refuse(call: SkillCall) -> None:
    raise SkillError("cannot do that; try the other skill")


async def typed(call: SkillCall) -> None:
    request = call.parse(SearchRequest)
    await call.emit(SearchResult(query=request.query, passages=[]))


TESTER = AgentParts(
    card=CardSpec(
        name="tester",
        description="Test agent.",
        capacity=3,
        skills=[
            Skill(id=name, name=name, description=name, tags=["test"])
            for name in ("echo", "slow", "steps", "crash", "refuse", "typed")
        ],
    ),
    handlers={
        "echo": echo,
        "slow": slow,
        "steps": steps,
        "crash": crash,
        "refuse": refuse,
        "typed": typed,
    },
)


@pytest.fixture
def settings(agent_settings: AgentSettings) -> AgentSettings:
    return agent_settings.model_copy(update={"max_request_bytes": 64 * 1024})


@pytest.fixture
async def tester(settings: AgentSettings) -> AsyncIterator[str]:
    async with running_agent(TESTER, settings) as url:
        yield url


@pytest.fixture
async def client(tester: str, a2a_http: httpx.AsyncClient) -> Client:
    return await open_client(tester, a2a_http)


async def test_card_is_served_and_fetched_by_the_sdk_client(
    tester: str, a2a_http: httpx.AsyncClient
) -> None:
    card = await A2ACardResolver(a2a_http, tester).get_agent_card()
    served = (await a2a_http.get(tester + CARD_PATH)).json()
    assert served["name"] == "tester"
    assert [s["id"] for s in served["skills"]] == [
        "echo",
        "slow",
        "steps",
        "crash",
        "refuse",
        "typed",
    ]
    bindings = {i["protocolBinding"]: i["url"] for i in served["supportedInterfaces"]}
    assert bindings["JSONRPC"] == tester + JSONRPC_PATH
    assert "HTTP+JSON" in bindings
    assert served["capabilities"]["streaming"] is True
    assert card_to_dict(card) == served


async def test_send_message_returns_completed_task_with_result(client: Client) -> None:
    task = await call_skill(client, "echo", {"hello": "world"})
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task_data(task) == [{"echo": {"hello": "world"}}]


async def test_send_message_without_streaming(tester: str, a2a_http: httpx.AsyncClient) -> None:
    client = await open_client(tester, a2a_http, streaming=False)
    task = await call_skill(client, "typed", SearchRequest(query="bees"))
    assert task_data(task) == [{"query": "bees", "passages": []}]


async def test_streaming_reports_progress_then_the_result(client: Client) -> None:
    seen: list[str] = []
    async for event in client.send_message(skill_message("steps", {})):
        if event.HasField("task"):
            seen.append("task")
        elif event.HasField("status_update"):
            status = event.status_update.status
            texts = [part.text for part in status.message.parts if part.text]
            seen.append(TaskState.Name(status.state) + (f":{texts[0]}" if texts else ""))
        elif event.HasField("artifact_update"):
            seen.append("artifact")
    progress = [s for s in seen if s.startswith("TASK_STATE_WORKING:")]
    assert progress == [f"TASK_STATE_WORKING:step {i}" for i in (1, 2, 3)]
    assert seen[-1] == "TASK_STATE_COMPLETED"
    assert seen.index("artifact") > seen.index("TASK_STATE_WORKING:step 3")


async def test_get_task_reads_it_back_from_redis(
    client: Client, redis: aioredis.Redis, redis_prefix: str
) -> None:
    task = await call_skill(client, "echo", "text in")
    fetched = await client.get_task(GetTaskRequest(id=task.id))
    assert fetched.status.state == TaskState.TASK_STATE_COMPLETED
    assert task_data(fetched) == [{"echo": "text in"}]
    assert await redis.exists(RedisKeys(redis_prefix).task("tester", task.id)) == 1


async def test_cancel_task_stops_the_handler(client: Client) -> None:
    SLOW_STARTED.clear()
    SLOW_CANCELLED.clear()
    task_id = ""

    async def run() -> None:
        nonlocal task_id
        async for event in client.send_message(skill_message("slow", {})):
            if event.HasField("task"):
                task_id = event.task.id

    runner = asyncio.create_task(run())
    await asyncio.wait_for(SLOW_STARTED.wait(), 10)
    await wait_for(lambda: bool(task_id), 10, "the client did not hear of the task")
    canceled = await client.cancel_task(CancelTaskRequest(id=task_id))
    assert canceled.status.state == TaskState.TASK_STATE_CANCELED
    await asyncio.wait_for(SLOW_CANCELLED.wait(), 5)
    await asyncio.wait_for(runner, 5)
    stored = await client.get_task(GetTaskRequest(id=task_id))
    assert stored.status.state == TaskState.TASK_STATE_CANCELED


@pytest.mark.parametrize(
    ("skill", "payload", "state", "says"),
    [
        ("nope", {}, TaskState.TASK_STATE_REJECTED, "unknown skill 'nope'"),
        ("typed", {"query": ""}, TaskState.TASK_STATE_REJECTED, "invalid SearchRequest: query"),
        ("typed", {"query": "x", "bogus": 1}, TaskState.TASK_STATE_REJECTED, "bogus"),
        ("crash", {}, TaskState.TASK_STATE_FAILED, "ValueError: boom"),
        ("refuse", {}, TaskState.TASK_STATE_FAILED, "try the other skill"),
    ],
)
async def test_bad_requests_and_failures_end_the_task_with_a_reason(
    client: Client, skill: str, payload: dict[str, object], state: int, says: str
) -> None:
    with pytest.raises(SkillFailed) as caught:
        await call_skill(client, skill, payload)
    assert caught.value.task.status.state == state
    assert says in str(caught.value)


async def _rpc(http: httpx.AsyncClient, url: str, body: bytes, **headers: str) -> dict[str, object]:
    response = await http.post(
        url + JSONRPC_PATH, content=body, headers={"Content-Type": "application/json", **headers}
    )
    result: dict[str, object] = response.json()
    return result


async def test_json_rpc_errors_for_malformed_input(
    tester: str, a2a_http: httpx.AsyncClient
) -> None:
    parse_error = await _rpc(a2a_http, tester, b"{not json")
    assert parse_error["error"]["code"] == -32700  # type: ignore[index]
    invalid = await _rpc(a2a_http, tester, b'{"jsonrpc": "2.0", "id": 1}')
    assert invalid["error"]["code"] == -32600  # type: ignore[index]
    unknown = await _rpc(
        a2a_http, tester, b'{"jsonrpc": "2.0", "id": 1, "method": "NoSuchMethod", "params": {}}'
    )
    assert unknown["error"]["code"] == -32601  # type: ignore[index]
    bad_params = await _rpc(
        a2a_http,
        tester,
        b'{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": 7}}',
    )
    assert bad_params["error"]["code"] in (-32602, -32600)  # type: ignore[index]


async def test_missing_a2a_version_header_is_refused(tester: str) -> None:
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}'
    async with httpx.AsyncClient(timeout=10) as bare:
        response = await bare.post(
            tester + JSONRPC_PATH, content=body, headers={"Content-Type": "application/json"}
        )
    error = response.json()["error"]
    assert "version" in error["message"].lower()


async def test_unknown_task_is_a_clear_error(client: Client) -> None:
    with pytest.raises(Exception, match=r"(?i)not found"):
        await client.get_task(GetTaskRequest(id="no-such-task"))


async def test_oversize_body_is_refused(tester: str, a2a_http: httpx.AsyncClient) -> None:
    response = await a2a_http.post(tester + JSONRPC_PATH, content=b"x" * (65 * 1024))
    assert response.status_code == 413
    assert "SCRIPTORIUM_MAX_REQUEST_BYTES" in response.json()["error"]["message"]


async def test_token_is_required_when_configured(
    settings: AgentSettings, a2a_http: httpx.AsyncClient
) -> None:
    secured = settings.model_copy(update={"token": SecretStr("s3cret")})
    async with running_agent(TESTER, secured) as url:
        assert (await a2a_http.get(url + CARD_PATH)).status_code == 200
        card = (await a2a_http.get(url + CARD_PATH)).json()
        assert "bearer" in card["securitySchemes"]
        denied = await a2a_http.post(url + JSONRPC_PATH, json={})
        assert denied.status_code == 401
        async with httpx.AsyncClient(
            headers={"Authorization": "Bearer s3cret", "A2A-Version": "1.0"}, timeout=10
        ) as authed:
            client = await open_client(url, authed)
            task = await call_skill(client, "echo", "ok")
            assert task_data(task) == [{"echo": "ok"}]


async def test_tasks_survive_a_restart_and_are_shared_by_replicas(
    settings: AgentSettings, a2a_http: httpx.AsyncClient
) -> None:
    async with running_agent(TESTER, settings) as first:
        task = await call_skill(await open_client(first, a2a_http), "echo", "kept")
    async with running_agent(TESTER, settings) as second:
        fetched = await (await open_client(second, a2a_http)).get_task(GetTaskRequest(id=task.id))
    assert task_data(fetched) == [{"echo": "kept"}]


async def test_agent_registers_itself_and_deregisters_on_stop(
    settings: AgentSettings, redis: aioredis.Redis, redis_prefix: str
) -> None:
    registry = Registry(
        redis, RegistrySettings(**settings.model_dump()), keys=RedisKeys(redis_prefix)
    )

    async def discovered() -> bool:
        return bool(await registry.discover(skill="echo"))

    async with running_agent(TESTER, settings) as url:
        await wait_for(discovered, 10, "the agent was not discovered")
        found = await registry.discover(skill="echo")
        assert [r.url for r in found] == [url]
        assert found[0].capacity == 3
    assert await registry.discover(skill="echo") == []


async def test_agent_survives_a_redis_outage_and_registers_again(
    own_valkey: RestartableValkey, a2a_http: httpx.AsyncClient
) -> None:
    settings = AgentSettings(
        redis_url=own_valkey.url,
        redis_prefix="outage",
        heartbeat_interval_s=0.2,
        heartbeat_ttl_s=1.0,
        redis_timeout_s=0.5,
    )
    keys = RedisKeys("outage")

    async def registered() -> bool:
        client = aioredis.from_url(own_valkey.url)
        registry = Registry(client, RegistrySettings(**settings.model_dump()), keys=keys)
        try:
            return [r.name for r in await registry.discover(skill="echo")] == ["tester"]
        finally:
            await client.aclose()

    async with running_agent(TESTER, settings) as url:
        await wait_for(registered, 10, "the agent did not register")
        own_valkey.stop()
        health = await a2a_http.get(url + "/healthz")
        assert health.status_code == 503
        own_valkey.start()
        await wait_for(registered, 10, "the agent did not register again after Redis came back")
        assert (await a2a_http.get(url + "/healthz")).status_code == 200
        task = await call_skill(await open_client(url, a2a_http), "echo", "after")
        assert task_data(task) == [{"echo": "after"}]


async def test_http_json_binding_works_too(tester: str) -> None:
    from a2a.client import ClientConfig, create_client

    async with httpx.AsyncClient(timeout=10, headers={"A2A-Version": "1.0"}) as http:
        config = ClientConfig(httpx_client=http, supported_protocol_bindings=["HTTP+JSON"])
        client = await create_client(tester, client_config=config)
        task = await call_skill(client, "echo", {"via": "rest"})
        assert task_data(task) == [{"echo": {"via": "rest"}}]
        fetched = await client.get_task(GetTaskRequest(id=task.id))
        assert fetched.status.state == TaskState.TASK_STATE_COMPLETED
        raw = await http.post(
            tester + "/a2a/rest/message:send",
            json={
                "message": {
                    "role": "ROLE_USER",
                    "messageId": "m1",
                    "parts": [{"text": "hi"}],
                    "metadata": {"skill": "echo"},
                }
            },
        )
        assert raw.status_code == 200
        assert raw.json()["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
