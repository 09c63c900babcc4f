"""A2A v1.0 conformance over the real wire, with the a2a-sdk client.

Generic A2A clients send a plain text message that names no skill: every agent serves it
with its primary skill, or rejects it saying which data part it needs.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.client import Client
from a2a.types import Message, Part, Role, SendMessageRequest, Task, TaskState
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from agents.critic.agent import CriticSettings
from agents.critic.agent import parts as critic_parts
from agents.inference.agent import parts as inference_parts
from agents.inference.settings import InferenceSettings
from agents.orchestrator.agent import OrchestratorSettings
from agents.orchestrator.agent import parts as orchestrator_parts
from agents.retriever.agent import parts as retriever_parts
from agents.retriever.settings import RetrieverSettings
from agents.writer.agent import WriterSettings
from agents.writer.agent import parts as writer_parts
from protocol.client import open_client, task_data
from scriptorium.testing import running_agent, serve_app, wait_for


def text_message(text: str) -> SendMessageRequest:
    """What a generic A2A client sends: one text part, no metadata, no skill."""
    message = Message(role=Role.ROLE_USER, parts=[Part(text=text)], message_id=uuid.uuid4().hex)
    return SendMessageRequest(message=message)


async def send(client: Client, request: SendMessageRequest) -> Task:
    """SendMessage (the client must not stream): the task it answers with."""
    answers = [event async for event in client.send_message(request)]
    assert len(answers) == 1, answers
    assert answers[0].HasField("task"), answers
    return answers[0].task


def reason(task: Task) -> str:
    return " ".join(part.text for part in task.status.message.parts)


# --- the five agents' primary skills --------------------------------------------------------


def _echo_engine() -> Starlette:
    """An OpenAI-compatible engine whose completion is the JSON of the chat it was sent."""

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "echo", "object": "model"}]})

    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()
        chunk = {
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": json.dumps(body["messages"])},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        }

        async def stream() -> AsyncIterator[str]:
            yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )


@contextlib.asynccontextmanager
async def real_agent(name: str, common: dict[str, Any], tmp_path: Path) -> AsyncIterator[str]:
    """One of the five agents, in this process, on its own Redis keys; yields its URL."""
    if name == "retriever":
        retriever = RetrieverSettings(**common, data_dir=tmp_path)
        async with running_agent(retriever_parts(retriever), retriever) as url:
            yield url
    elif name == "inference":
        async with serve_app(_echo_engine()) as engine:
            inference = InferenceSettings(**common, inference_url=engine + "/v1")
            async with running_agent(inference_parts(inference), inference) as url:
                healthy = lambda: httpx.get(url + "/healthz").status_code == 200  # noqa: E731
                await wait_for(healthy, 10, "the inference agent did not see its engine")
                yield url
    elif name == "orchestrator":
        orchestrator = OrchestratorSettings(**common)
        async with running_agent(orchestrator_parts(orchestrator), orchestrator) as url:
            yield url
    elif name == "writer":
        writer = WriterSettings(**common)
        async with running_agent(writer_parts(writer), writer) as url:
            yield url
    else:
        critic = CriticSettings(**common)
        async with running_agent(critic_parts(critic), critic) as url:
            yield url


@pytest.fixture
def common(redis_url: str, redis_prefix: str) -> dict[str, Any]:
    return {"redis_url": redis_url, "redis_prefix": redis_prefix, "heartbeat_interval_s": 0.5}


async def test_text_searches_the_retriever(
    common: dict[str, Any], tmp_path: Path, a2a_http: httpx.AsyncClient
) -> None:
    async with real_agent("retriever", common, tmp_path) as url:
        task = await send(await open_client(url, a2a_http, streaming=False), text_message("bees"))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED, reason(task)
    assert task_data(task)[-1] == {"query": "bees", "passages": []}


async def test_text_is_one_user_turn_for_inference(
    common: dict[str, Any], tmp_path: Path, a2a_http: httpx.AsyncClient
) -> None:
    async with real_agent("inference", common, tmp_path) as url:
        task = await send(await open_client(url, a2a_http, streaming=False), text_message("Hi"))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED, reason(task)
    generation = task_data(task)[-1]
    assert json.loads(generation["text"]) == [{"role": "user", "content": "Hi"}]


async def test_text_is_the_orchestrators_question(
    common: dict[str, Any], tmp_path: Path, a2a_http: httpx.AsyncClient
) -> None:
    async with real_agent("orchestrator", common, tmp_path) as url:
        client = await open_client(url, a2a_http, streaming=False)
        task = await send(client, text_message("Who lays the eggs?"))
    # Taken as the question: the answer then fails for want of a team, not for its input.
    assert task.status.state == TaskState.TASK_STATE_FAILED, reason(task)
    assert "cannot start a session" in reason(task)


@pytest.mark.parametrize(
    ("agent", "skill", "needs"),
    [
        (
            "writer",
            "write",
            "skill 'write' takes a data part (application/json) holding a WriteRequest "
            '{"question": string, "passages": [Passage, ...]}',
        ),
        (
            "critic",
            "critique",
            "skill 'critique' takes a data part (application/json) holding a CritiqueRequest "
            '{"question": string, "draft": Draft, "passages": [Passage, ...]}',
        ),
    ],
)
async def test_text_to_writer_and_critic_is_rejected_naming_the_data_part(
    common: dict[str, Any],
    tmp_path: Path,
    a2a_http: httpx.AsyncClient,
    agent: str,
    skill: str,
    needs: str,
) -> None:
    async with real_agent(agent, common, tmp_path) as url:
        task = await send(await open_client(url, a2a_http, streaming=False), text_message("hi"))
    assert task.status.state == TaskState.TASK_STATE_REJECTED
    said = reason(task)
    assert said.startswith(needs), said
    assert 'Passage being {"chunk_id": string, "document_id": string' in said
    assert f'message metadata {{"skill": "{skill}"}}' in said
