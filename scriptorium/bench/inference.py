"""``scriptorium bench inference``: completion tokens/s through the A2A agent vs raw vLLM.

One inference agent runs in managed mode (its own vLLM server, the default). The benchmark
measures the *same engine* two ways, alternating round by round in one run:

* ``raw``   streaming ``/v1/chat/completions`` straight to the vLLM server's Unix socket;
* ``agent`` the A2A ``generate`` skill over SendStreamingMessage (JSON-RPC), tokens streamed.

Each round starts ``c`` requests at once (c = 1, 4, 16) for 128 tokens each (greedy,
``ignore_eos``) and divides the completion tokens by the round's wall time. Time to first
token is then sampled one request at a time, after a pause, alternating the two paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from agents.inference.upstream import Upstream
from protocol.client import call_skill, http_client, open_client, task_data
from protocol.payloads import ChatMessage, GenerateRequest, Generation
from protocol.settings import CommonSettings
from scriptorium.launcher import Stack

CONCURRENCY = (1, 4, 16)
ROUNDS = 4
MAX_TOKENS = 128
MAX_TOKENS_TTFT = 8
TTFT_SAMPLES = 10
TTFT_PAUSE_S = 0.3
PROMPT = "Write a long story about a library that keeps every book ever written."
MODEL = "SmolLM2-135M-Instruct"


def _request(max_tokens: int = MAX_TOKENS) -> GenerateRequest:
    return GenerateRequest(
        messages=[ChatMessage(role="user", content=PROMPT)],
        max_tokens=max_tokens,
        temperature=0.0,
        ignore_eos=True,
    )


async def _raw_one(upstream: Upstream, max_tokens: int) -> tuple[int, float]:
    """One streamed completion straight from vLLM: (completion tokens, ttft ms)."""
    body = {
        "model": MODEL,
        **_request(max_tokens).model_dump(exclude={"model", "stop", "seed"}),
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    ttft = 0.0
    tokens = 0
    async for chunk in upstream.stream_chat(body):
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        if not ttft and any(c["delta"].get("content") for c in chunk["choices"]):
            ttft = (time.perf_counter() - started) * 1000
    return tokens, ttft


async def _round(c: int, one: Any, max_tokens: int = MAX_TOKENS) -> tuple[float, list[float]]:
    started = time.perf_counter()
    results = await asyncio.gather(*(one(max_tokens) for _ in range(c)))
    wall = time.perf_counter() - started
    return sum(tokens for tokens, _ in results) / wall, [ttft for _, ttft in results]


def _start(stack: Stack) -> tuple[str, str]:
    """Start the agent (and its engine); its URL and the engine's Unix socket."""
    stack.start()
    stack.wait_healthy(600)
    agent_url = stack.url_of("inference")
    health = httpx.get(f"{agent_url}/healthz", timeout=5).json()
    return agent_url, str(health["engine"]["socket"])


async def run() -> dict[str, Any]:
    """Run the benchmark and return its figures."""
    data_dir = Path(tempfile.mkdtemp(prefix="scriptorium-bench-inference-"))
    stack = Stack(
        CommonSettings(data_dir=data_dir, redis_prefix="bench-inference"),
        agents=["inference"],
        ephemeral=True,
        persist=False,
    )
    try:
        agent_url, socket_path = await asyncio.to_thread(_start, stack)
        engine = Upstream("http://vllm/v1", uds=socket_path)
        async with (
            contextlib.aclosing(engine),
            http_client(request_timeout_s=600, headers=stack.settings.auth_headers()) as a2a_http,
        ):
            client = await open_client(agent_url, a2a_http)

            async def agent_one(max_tokens: int) -> tuple[int, float]:
                started = time.perf_counter()
                ttft = 0.0

                async def on_update(event: Any, task: Any) -> None:
                    nonlocal ttft
                    if not ttft and event.HasField("artifact_update"):
                        ttft = (time.perf_counter() - started) * 1000

                request = _request(max_tokens)
                task = await call_skill(client, "generate", request, on_update=on_update)
                generation = Generation.model_validate(task_data(task)[-1])
                return generation.usage.completion_tokens, ttft

            async def raw_one(max_tokens: int) -> tuple[int, float]:
                return await _raw_one(engine, max_tokens)

            kinds = {"raw": raw_one, "agent": agent_one}
            for one in kinds.values():  # warm up both paths
                await _round(2, one)
            rates: dict[str, dict[int, list[float]]] = {
                k: {c: [] for c in CONCURRENCY} for k in kinds
            }
            for c in CONCURRENCY:
                for i in range(ROUNDS):
                    order = list(kinds) if i % 2 == 0 else list(kinds)[::-1]
                    for kind in order:
                        rate, _ = await _round(c, kinds[kind])
                        rates[kind][c].append(rate)
            # Time to first token, one request at a time after a pause: vLLM's CPU build
            # answers a request that follows another back to back ~20 ms later, which would
            # blur what the agent adds.
            ttfts: dict[str, list[float]] = {k: [] for k in kinds}
            for i in range(TTFT_SAMPLES):
                for kind in list(kinds) if i % 2 == 0 else list(kinds)[::-1]:
                    await asyncio.sleep(TTFT_PAUSE_S)
                    ttfts[kind].extend((await _round(1, kinds[kind], MAX_TOKENS_TTFT))[1])
    finally:
        await asyncio.to_thread(stack.stop)
    agent = {str(c): round(statistics.mean(rates["agent"][c]), 1) for c in CONCURRENCY}
    raw = {str(c): round(statistics.mean(rates["raw"][c]), 1) for c in CONCURRENCY}
    return {
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "rounds": ROUNDS,
        "agent_tok_s": agent,
        "raw_tok_s": raw,
        "ratio_vs_raw": {c: round(agent[c] / raw[c], 3) for c in agent},
        "ratio_vs_raw_at_16": round(agent["16"] / raw["16"], 3),
        "batching_gain_16_vs_1": round(agent["16"] / agent["1"], 2),
        "raw_batching_gain_16_vs_1": round(raw["16"] / raw["1"], 2),
        "ttft_p50_ms": round(statistics.median(ttfts["agent"]), 1),
        "raw_ttft_p50_ms": round(statistics.median(ttfts["raw"]), 1),
        "targets": {"ratio_vs_raw_at_16": 0.95, "batching_gain_16_vs_1": 6},
    }
