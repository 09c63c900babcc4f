"""The OpenAI-compatible endpoint with the real clients: openai, and ADK through LiteLLM."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import httpx
import openai
import pytest

from scriptorium.testing import wait_for
from tests.inference.conftest import MODEL, gauge

MESSAGES = [{"role": "user", "content": "What is a library?"}]


@pytest.fixture
async def oai(agent_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{agent_url}/v1", api_key="unused", max_retries=0)


async def test_openai_client_round_trip(oai: openai.AsyncOpenAI) -> None:
    models = await oai.models.list()
    assert [m.id for m in models.data] == [MODEL]

    whole = await oai.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=24,
        temperature=0,  # type: ignore[arg-type]
    )
    assert whole.choices[0].message.content
    assert whole.usage is not None
    assert whole.usage.completion_tokens <= 24

    stream = await oai.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=24,
        temperature=0,
        stream=True,
    )
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert len(pieces) > 5
    assert "".join(pieces) == whole.choices[0].message.content


async def test_openai_errors_come_through_typed(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        await oai.chat.completions.create(model="gpt-17", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="max_model_len"):
        await oai.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=5000,  # type: ignore[arg-type]
        )
    with pytest.raises(openai.BadRequestError, match="empty conversation"):
        await oai.chat.completions.create(model=MODEL, messages=[])


async def test_a_stream_reader_that_disconnects_aborts_its_request(agent_url: str) -> None:
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": 1800,
        "ignore_eos": True,
        "stream": True,
    }
    async with (
        httpx.AsyncClient(timeout=60) as http,
        http.stream("POST", f"{agent_url}/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        lines = 0
        async for line in response.aiter_lines():
            lines += bool(line)
            if lines == 5:
                break
        assert gauge(agent_url, "vllm:num_requests_running") == 1
    await wait_for(
        lambda: gauge(agent_url, "vllm:num_requests_running") == 0,
        5,
        "vLLM went on generating for a client that left",
    )
    assert httpx.get(f"{agent_url}/healthz", timeout=5).json()["status"] == "ok"


async def test_a_client_that_gives_up_on_a_whole_completion_aborts_it(agent_url: str) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 1800, "ignore_eos": True}
    async with httpx.AsyncClient(timeout=httpx.Timeout(2.0)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"{agent_url}/v1/chat/completions", json=body)
    await wait_for(
        lambda: gauge(agent_url, "vllm:num_requests_running") == 0,
        5,
        "vLLM went on with a completion nobody waits for",
    )


async def test_adk_llm_agent_answers_through_litellm(agent_url: str) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from google.adk.agents import LlmAgent
    from google.adk.models.lite_llm import LiteLlm
    from google.adk.runners import InMemoryRunner
    from google.genai import types

    served_before = gauge(agent_url, "vllm:e2e_request_latency_seconds_count")
    agent = LlmAgent(
        name="librarian",
        model=LiteLlm(
            model=f"hosted_vllm/{MODEL}",
            api_base=f"{agent_url}/v1",
            api_key="unused",
            max_tokens=32,
        ),
        instruction="Answer in one short sentence.",
    )
    runner = InMemoryRunner(agent=agent, app_name="scriptorium-test")
    session = await runner.session_service.create_session(
        app_name="scriptorium-test", user_id="tester"
    )
    answer = ""
    async for event in runner.run_async(
        user_id="tester",
        session_id=session.id,
        new_message=types.Content(role="user", parts=[types.Part(text="What is a library?")]),
    ):
        if event.is_final_response() and event.content and event.content.parts:
            answer += "".join(part.text or "" for part in event.content.parts)
    assert answer.strip()
    assert gauge(agent_url, "vllm:e2e_request_latency_seconds_count") > served_before


async def test_with_a_token_the_endpoint_wants_it_as_the_api_key(
    agent_on_session_engine: Callable[..., contextlib.AbstractAsyncContextManager[str]],
) -> None:
    async with agent_on_session_engine(token="s3cret") as url:
        anonymous = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await anonymous.models.list()
        member = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in (await member.models.list()).data] == [MODEL]
