"""Engine supervision: a crashed vLLM server is restarted (this module runs last: it restarts
the session's engine, about 40 s)."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import psutil
import pytest
from a2a.types import TaskState

from protocol.client import SkillFailed, call_skill, http_client, open_client
from protocol.client import task_data as data_of
from protocol.payloads import Generation
from scriptorium.testing import wait_for
from tests.inference.conftest import gauge


@pytest.mark.slow
async def test_a_crashed_engine_is_restarted(agent_url: str) -> None:
    engine = httpx.get(f"{agent_url}/healthz", timeout=5).json()["engine"]
    async with http_client(request_timeout_s=60) as http:
        client = await open_client(agent_url, http)
        long = {"messages": [{"role": "user", "content": "Tell a story."}], "max_tokens": 1800}
        in_flight = call_skill(client, "generate", {**long, "ignore_eos": True})
        stream = asyncio.ensure_future(in_flight)
        await wait_for(
            lambda: gauge(agent_url, "vllm:num_requests_running") == 1,
            30,
            "the long generation did not start",
        )
        os.killpg(engine["pid"], signal.SIGKILL)
        with pytest.raises(SkillFailed) as caught:
            await stream
    assert caught.value.task.status.state == TaskState.TASK_STATE_FAILED
    assert "the inference engine failed" in str(caught.value)
    assert "restarted automatically" in str(caught.value)
    await wait_for(
        lambda: httpx.get(f"{agent_url}/healthz", timeout=5).status_code == 503,
        10,
        "the agent did not notice its engine died",
    )
    assert not psutil.pid_exists(engine["pid"]) or psutil.Process(engine["pid"]).status() == (
        psutil.STATUS_ZOMBIE
    )
    await wait_for(
        lambda: httpx.get(f"{agent_url}/healthz", timeout=5).status_code == 200,
        300,
        "the engine did not come back",
    )
    after = httpx.get(f"{agent_url}/healthz", timeout=5).json()["engine"]
    assert after["restarts"] == 1
    assert after["pid"] != engine["pid"]
    async with http_client(request_timeout_s=60) as http:
        client = await open_client(agent_url, http)
        task = await call_skill(
            client, "generate", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        )
    assert Generation.model_validate(data_of(task)[-1]).text
