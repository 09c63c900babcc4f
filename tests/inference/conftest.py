"""Fixtures of the inference tests: the session's real vLLM engine behind one inference agent."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from a2a.client import Client

from agents.inference.agent import parts
from agents.inference.settings import InferenceSettings
from protocol.client import http_client, open_client
from scriptorium.launcher import Stack
from scriptorium.testing import metric_value, running_agent, wait_for

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="session")
def agent_url(inference_stack: Stack) -> str:
    """Base URL of the inference agent that runs the session's engine."""
    return inference_stack.url_of("inference")


@pytest.fixture
async def client(agent_url: str) -> AsyncIterator[Client]:
    """An A2A client (streaming) of the inference agent."""
    async with http_client(request_timeout_s=120) as http:
        yield await open_client(agent_url, http)


def gauge(agent_url: str, name: str) -> float:
    """A vLLM gauge or counter on the agent's /metrics, summed across its label sets."""
    return metric_value(httpx.get(f"{agent_url}/metrics", timeout=5).text, name)


@pytest.fixture
def agent_on_session_engine(
    inference_url: str, redis_url: str, redis_prefix: str
) -> Callable[..., contextlib.AbstractAsyncContextManager[str]]:
    """Run an inference agent in this process, with its own settings, on the session's engine.

    ``async with agent_on_session_engine(token="t") as url:`` yields once it is ready.
    """

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[str]:
        settings = InferenceSettings(
            redis_url=redis_url, redis_prefix=redis_prefix, inference_url=inference_url, **overrides
        )
        async with running_agent(parts(settings), settings) as url:
            await wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, 10, "not ready")
            yield url

    return start
