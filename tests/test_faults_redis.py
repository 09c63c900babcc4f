"""Redis down during a request: a clear, retryable error within the timeout, never a hang.

An agent built with the scaffold runs in process against a Valkey of the test's own, which
the test stops and starts again. The client waits at most 8 s, as a careless one would.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
from a2a.client import Client
from a2a.types import GetTaskRequest, TaskState

from agents.scaffold.app import AgentParts
from agents.scaffold.executor import SkillCall
from agents.scaffold.settings import AgentSettings
from agents.scaffold.tasks.writer import STORE_UNREACHABLE
from protocol.cards import JSONRPC_PATH, REST_PATH, CardSpec, Skill
from protocol.client import A2A_VERSION_HEADER, call_skill, open_client, skill_message, task_data
from protocol.errors import TaskStoreUnavailableError
from registry.redis_client import listen
from scriptorium.testing import running_agent, wait_for
from tests.conftest import RestartableValkey

CLIENT_TIMEOUT_S = 8.0
STORE_TIMEOUT_S = 2.0


async def echo(call: SkillCall) -> None:
    await call.emit({"echo": call.data()})


ECHO = AgentParts(
    card=CardSpec(
        name="echoer",
        description="Echoes.",
        skills=[Skill(id="echo", name="echo", description="Echoes.", tags=["test"])],
    ),
    handlers={"echo": echo},
)


@pytest.fixture
async def agent(own_valkey: RestartableValkey, agent_settings: AgentSettings) -> AsyncIterator[str]:
    settings = agent_settings.model_copy(
        update={
            "redis_url": own_valkey.url,
            "redis_timeout_s": 0.5,
            "task_store_timeout_s": STORE_TIMEOUT_S,
        }
    )
    async with running_agent(ECHO, settings) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        timeout=CLIENT_TIMEOUT_S, headers={A2A_VERSION_HEADER: "1.0"}
    ) as client:
        yield client


async def _works(client: Client) -> bool:
    try:
        task = await call_skill(client, "echo", "again")
    except TaskStoreUnavailableError:
        return False
    return task_data(task) == [{"echo": "again"}]


async def test_fault_redis_down_answers_a_clear_error_in_time_then_recovers(
    agent: str, http: httpx.AsyncClient, own_valkey: RestartableValkey
) -> None:
    client = await open_client(agent, http, streaming=False)
    assert task_data(await call_skill(client, "echo", "before")) == [{"echo": "before"}]
    own_valkey.stop()

    started = time.monotonic()
    with pytest.raises(TaskStoreUnavailableError) as caught:
        await call_skill(client, "echo", "during")
    assert time.monotonic() - started < STORE_TIMEOUT_S + 2.0
    assert "Redis" in caught.value.message
    assert "retry" in caught.value.message
    assert caught.value.retry_after_s is not None

    rpc = await http.post(
        agent + JSONRPC_PATH,
        json={
            "jsonrpc": "2.0",
            "id": 7,
            "method": "SendMessage",
            "params": {
                "message": {"role": "ROLE_USER", "messageId": "m-7", "parts": [{"text": "x"}]}
            },
        },
    )
    error = rpc.json()["error"]
    assert error["code"] == -32051
    assert error["data"][0]["reason"] == "TASK_STORE_UNAVAILABLE"

    rest = await http.post(
        agent + REST_PATH + "/message:send",
        json={"message": {"role": "ROLE_USER", "messageId": "m-8", "parts": [{"text": "x"}]}},
    )
    assert rest.status_code == 503
    assert int(rest.headers["Retry-After"]) >= 1
    assert "retry" in rest.json()["error"]["message"]

    own_valkey.start()
    assert await _works(client), "the first request after Redis came back failed"


async def test_fault_a_task_cut_off_by_the_outage_ends_failed_when_redis_returns(
    agent: str, http: httpx.AsyncClient, own_valkey: RestartableValkey
) -> None:
    streaming = await open_client(agent, http)
    own_valkey.stop()
    seen: list[str] = []

    async def stream() -> None:
        async for event in streaming.send_message(skill_message("echo", "cut off")):
            if event.HasField("task"):
                seen.append(event.task.id)

    with pytest.raises(TaskStoreUnavailableError):
        await stream()
    assert seen, "the stream did not name its task before failing"
    task_id = seen[0]

    own_valkey.start()
    unary = await open_client(agent, http, streaming=False)

    async def failed_in_redis() -> bool:
        try:
            task = await unary.get_task(GetTaskRequest(id=task_id))
        except Exception:
            return False
        return task.status.state == TaskState.TASK_STATE_FAILED

    await wait_for(failed_in_redis, 15, "the cut-off task was not recorded FAILED")
    task = await unary.get_task(GetTaskRequest(id=task_id))
    assert STORE_UNREACHABLE in task.status.message.parts[0].text


async def test_fault_redis_down_is_logged_as_one_warning_line(
    agent: str,
    http: httpx.AsyncClient,
    own_valkey: RestartableValkey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await open_client(agent, http, streaming=False)
    own_valkey.stop()
    with caplog.at_level(logging.INFO), pytest.raises(TaskStoreUnavailableError):
        await call_skill(client, "echo", "during")
    own_valkey.start()

    # Not a fixed pause: what the failed request left behind (its task, written or failed over
    # once Redis is back) has had its turn once the agent answers a request again.
    async def answers_again() -> bool:
        return await _works(client)

    await wait_for(answers_again, 15, "the agent answers again after Redis returned")
    sdk = [r for r in caplog.records if r.name.startswith("a2a.")]
    assert sdk, "the SDK logged nothing about the failed request"
    assert all(r.levelno < logging.ERROR and r.exc_info is None for r in sdk), [
        (r.name, r.levelname, r.getMessage()) for r in sdk if r.levelno >= logging.ERROR
    ]


async def test_a_subscription_ends_when_cancelled_even_while_redis_is_away(
    own_valkey: RestartableValkey, caplog: pytest.LogCaptureFixture
) -> None:
    client = aioredis.from_url(own_valkey.url)
    heard: list[bytes] = []

    async def note(message: bytes) -> None:
        heard.append(message)

    listener = asyncio.create_task(listen(client, "news", note, retry_s=0.001))
    try:

        async def subscribed() -> bool:
            counts = await client.pubsub_numsub("news")
            return bool(counts and counts[0][1] == 1)

        await wait_for(subscribed, 10, "the listener subscribed")
        await client.publish("news", b"first")
        await wait_for(lambda: heard == [b"first"], 10, "the message was handled")
        with caplog.at_level(logging.WARNING, logger="registry.redis_client"):
            own_valkey.stop()
            await wait_for(
                lambda: sum("subscription lost" in r.message for r in caplog.records) > 2,
                10,
                "the listener retried against the stopped Valkey",
            )
        listener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(listener, 5)  # stops: not one more retry
    finally:
        listener.cancel()
        await client.aclose()
