"""The A2A ``generate`` skill against the real vLLM engine: streaming, batching, cancel, errors."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import httpx
import pytest
from a2a.client import Client
from a2a.types import CancelTaskRequest, GetTaskRequest, TaskState

from protocol.client import SkillFailed, call_skill, http_client, open_client, skill_message
from protocol.client import task_data as data_of
from protocol.payloads import ChatMessage, GenerateRequest, Generation
from scriptorium.testing import wait_for
from tests.inference.conftest import MODEL, gauge

QUESTION = [ChatMessage(role="user", content="Name three colours.")]


def _request(max_tokens: int, *, ignore_eos: bool = True) -> GenerateRequest:
    return GenerateRequest(messages=QUESTION, max_tokens=max_tokens, ignore_eos=ignore_eos)


async def test_tokens_stream_in_order_and_join_to_the_final_text(
    client: Client, agent_url: str
) -> None:
    chunks: list[tuple[float, str, bool, bool]] = []
    started = time.perf_counter()

    async def on_update(event: object, task: object) -> None:
        update = getattr(event, "artifact_update", None)
        if event.HasField("artifact_update") and update.artifact.artifact_id == "tokens":  # type: ignore[attr-defined]
            text = "".join(p.text for p in update.artifact.parts)
            chunks.append((time.perf_counter() - started, text, update.append, update.last_chunk))

    task = await call_skill(client, "generate", _request(48), on_update=on_update)
    generation = Generation.model_validate(data_of(task)[-1])

    assert len(chunks) > 10, "tokens arrived in one piece, not streamed"
    assert [append for _, _, append, _ in chunks] == [False] + [True] * (len(chunks) - 1)
    assert [last for _, _, _, last in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-2][0] - chunks[0][0] > 0.1, "chunks were not spread over the generation"
    assert "".join(text for _, text, _, _ in chunks) == generation.text
    assert generation.model == MODEL
    assert generation.finish_reason == "length"
    assert generation.usage.completion_tokens == 48
    assert generation.usage.prompt_tokens > 5
    assert 0 < generation.usage.ttft_ms < generation.usage.duration_ms

    # The same greedy request through the OpenAI endpoint yields the same text.
    body = {
        "model": MODEL,
        "messages": [m.model_dump() for m in QUESTION],
        "max_tokens": 48,
        "temperature": 0,
        "ignore_eos": True,
    }
    answer = httpx.post(f"{agent_url}/v1/chat/completions", json=body, timeout=60).json()
    assert answer["choices"][0]["message"]["content"] == generation.text


async def test_a_non_streaming_client_gets_the_completed_task(agent_url: str) -> None:
    async with http_client(request_timeout_s=60) as http:
        client = await open_client(agent_url, http, streaming=False)
        task = await call_skill(client, "generate", _request(12))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    tokens = next(a for a in task.artifacts if a.artifact_id == "tokens")
    generation = Generation.model_validate(data_of(task)[-1])
    assert "".join(p.text for p in tokens.parts) == generation.text
    assert generation.usage.completion_tokens == 12


async def test_concurrent_tasks_share_one_engine_batch(client: Client, agent_url: str) -> None:
    both = asyncio.gather(*(call_skill(client, "generate", _request(160)) for _ in range(2)))
    try:  # the two generations take seconds: the engine runs both at some point of them
        await wait_for(
            lambda: gauge(agent_url, "vllm:num_requests_running") == 2,
            30,
            "the two tasks in the engine's batch together",
        )
    except BaseException:
        both.cancel()
        raise
    tasks = await both
    for task in tasks:
        assert Generation.model_validate(data_of(task)[-1]).usage.completion_tokens == 160


async def test_cancel_aborts_the_request_inside_vllm(client: Client, agent_url: str) -> None:
    task_id = ""
    tokens = 0
    async for event in client.send_message(skill_message("generate", _request(1800))):
        if event.HasField("task"):
            task_id = event.task.id
        if event.HasField("artifact_update"):
            tokens += 1
            if tokens == 3:
                break
    assert task_id
    assert gauge(agent_url, "vllm:num_requests_running") == 1
    canceled = await client.cancel_task(CancelTaskRequest(id=task_id))
    assert canceled.status.state == TaskState.TASK_STATE_CANCELED
    await wait_for(
        lambda: gauge(agent_url, "vllm:num_requests_running") == 0,
        5,
        "vLLM kept generating after the cancel",
    )
    generated = gauge(agent_url, "vllm:generation_tokens_total")
    # The slot is free: the next request is served at once, and the engine's token count
    # grows by its 8 tokens only (a request still generating would add its own).
    task = await call_skill(client, "generate", _request(8))
    assert Generation.model_validate(data_of(task)[-1]).usage.completion_tokens == 8
    await wait_for(
        lambda: gauge(agent_url, "vllm:generation_tokens_total") >= generated + 8,
        10,
        "the engine did not count the next request's tokens",
    )
    assert gauge(agent_url, "vllm:generation_tokens_total") == generated + 8, "tokens still flowing"


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ({"messages": [], "max_tokens": 8}, "messages: List should have at least 1 item"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000},
            "cannot be greater than max_model_len=2048",
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "model": "gpt-17"},
            "The model `gpt-17` does not exist",
        ),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, "temperature"),
    ],
)
async def test_bad_parameters_are_rejected_with_a_clear_reason(
    client: Client, payload: dict[str, object], says: str
) -> None:
    with pytest.raises(SkillFailed) as caught:
        await call_skill(client, "generate", payload)
    assert caught.value.task.status.state == TaskState.TASK_STATE_REJECTED
    assert says in str(caught.value)


async def test_a_stream_client_that_disconnects_does_not_lose_the_task(agent_url: str) -> None:
    task_id = ""
    async with http_client(request_timeout_s=60) as http:
        client = await open_client(agent_url, http)
        async for event in client.send_message(skill_message("generate", _request(64))):
            if event.HasField("task"):
                task_id = event.task.id
            if event.HasField("artifact_update"):
                break  # and the connection closes with the client
    assert task_id
    async with http_client(request_timeout_s=60) as http:
        client = await open_client(agent_url, http)

        async def completed() -> bool:
            task = await client.get_task(GetTaskRequest(id=task_id))
            return task.status.state == TaskState.TASK_STATE_COMPLETED

        await wait_for(completed, 30, "the task completed without its stream client")
        task = await client.get_task(GetTaskRequest(id=task_id))
        assert Generation.model_validate(data_of(task)[-1]).usage.completion_tokens == 64
        again = await call_skill(client, "generate", _request(4))
        assert Generation.model_validate(data_of(again)[-1]).usage.completion_tokens == 4


async def test_stream_interval_joins_tokens_into_fewer_chunks(
    agent_on_session_engine: Callable[..., contextlib.AbstractAsyncContextManager[str]],
) -> None:
    chunks: list[str] = []

    async def on_update(event: object, task: object) -> None:
        if event.HasField("artifact_update"):  # type: ignore[attr-defined]
            artifact = event.artifact_update.artifact  # type: ignore[attr-defined]
            if artifact.artifact_id == "tokens":
                chunks.append("".join(p.text for p in artifact.parts))

    async with (
        agent_on_session_engine(stream_interval_ms=250) as url,
        http_client(request_timeout_s=60) as http,
    ):
        client = await open_client(url, http)
        task = await call_skill(client, "generate", _request(40), on_update=on_update)
    generation = Generation.model_validate(data_of(task)[-1])
    assert generation.usage.completion_tokens == 40
    assert 2 <= len(chunks) <= 15, f"{len(chunks)} chunks for 40 tokens at 250 ms"
    assert "".join(chunks) == generation.text
