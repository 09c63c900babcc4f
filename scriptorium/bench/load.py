"""``scriptorium bench load``: hundreds of whole answers, many in flight, against one stack.

By default a stack of its own (:func:`~scriptorium.evaluation.run.own_stack`: the five
agents, vLLM CPU with SmolLM2-135M) on a Valkey this benchmark starts, so it can count the
stack's keys; ``--registry-url`` asks an already-running stack instead (its keys are
counted when ``REDIS_URL`` and ``SCRIPTORIUM_REDIS_PREFIX`` name its Redis). The demo corpus
is ingested over A2A, then :data:`DEFAULT_QUESTIONS` questions (the e2e benchmark's
:data:`~scriptorium.bench.e2e.QUESTIONS` in turn, answers capped at
:data:`~scriptorium.bench.e2e.MAX_TOKENS` tokens) go through the orchestrator with
:data:`DEFAULT_CONCURRENCY` in flight.

Reported: ``error_rate`` (target < 1 %) with the first errors, latency percentiles, answers
per minute, and the stack's Redis keys before and after (``redis_keys_before`` /
``redis_keys_after``, the growth per question, and how many keys carry no TTL: what a run
leaves behind must be bounded by the retention settings, not grow for ever).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from agents.scaffold.peers import Peers
from agents.scaffold.settings import AgentSettings
from protocol.settings import CommonSettings
from registry.settings import RegistrySettings
from scriptorium.bench.e2e import COLLECTION, MAX_TOKENS, QUESTIONS, ROUNDS
from scriptorium.corpora import demo_documents
from scriptorium.evaluation.devset import DevQuestion, answer_matches
from scriptorium.evaluation.run import TIMEOUT_S, Progress, ask_all, ingest_corpus, own_stack
from scriptorium.evaluation.scoring import percentile
from scriptorium.valkey import start_valkey

DEFAULT_QUESTIONS = 500
DEFAULT_CONCURRENCY = 16
TARGET_ERROR_RATE = 0.01
#: Errors quoted in full (the rest are counted by kind).
ERRORS_SHOWN = 5
#: A progress line every this many answers (errors are always shown, the first few).
PROGRESS_EVERY = 50
WARM_UP = 2


def questions_for(count: int) -> list[DevQuestion]:
    """``count`` questions: the e2e benchmark's, in turn."""
    return [
        DevQuestion(
            id=f"load-{n}",
            question=QUESTIONS[n % len(QUESTIONS)][0],
            kind="single",
            gold_documents=["-"],
            answers=[QUESTIONS[n % len(QUESTIONS)][1]],
        )
        for n in range(count)
    ]


async def redis_census(url: str, prefix: str) -> dict[str, Any]:
    """The keys under ``prefix``: how many, how many without a TTL, the longest TTL, by
    kind (``{p}:a2a:{agent}:task:{id}`` counts as ``a2a:task``), and Valkey's used memory."""
    client = aioredis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        ttls: list[int] = []
        for start in range(0, len(keys), 1000):
            async with client.pipeline(transaction=False) as pipe:
                for key in keys[start : start + 1000]:
                    pipe.pttl(key)
                ttls.extend(await pipe.execute())
        memory = await client.info("memory")
    finally:
        await client.aclose()
    kinds = Counter(_kind(key.decode(errors="replace"), prefix) for key in keys)
    return {
        "keys": len(keys),
        "without_ttl": sum(ttl < 0 for ttl in ttls),
        "max_ttl_s": round(max(ttls) / 1000) if ttls and max(ttls) > 0 else None,
        "by_kind": dict(sorted(kinds.items())),
        "used_memory_bytes": int(memory.get("used_memory", 0)),
    }


def _kind(key: str, prefix: str) -> str:
    parts = key[len(prefix) + 1 :].split(":")
    if parts[0] == "a2a" and len(parts) >= 3:
        return f"a2a:{parts[2]}"
    if parts[0] == "session" and len(parts) >= 3:
        return f"session:{parts[2]}"
    return parts[0]


@contextlib.asynccontextmanager
async def _stack(
    progress: Progress, env: dict[str, str]
) -> AsyncIterator[tuple[CommonSettings, str, str, Path]]:
    """:func:`own_stack` on ``REDIS_URL`` when set, else on a Valkey started here; yields
    its settings, registry URL, Redis URL and log folder."""
    server = None
    url = CommonSettings().redis_url
    if url is None:
        server = start_valkey()
        url = server.connection_url
    previous = os.environ.get("REDIS_URL")
    os.environ["REDIS_URL"] = url  # own_stack's settings read it; its processes get it
    try:
        async with own_stack("bench-load", env=env, progress=progress) as (
            settings,
            registry_url,
            logs,
        ):
            yield settings, registry_url, url, logs
    finally:
        if previous is None:
            os.environ.pop("REDIS_URL", None)
        else:
            os.environ["REDIS_URL"] = previous
        if server is not None:
            server.stop()


async def run(
    *,
    questions: int = DEFAULT_QUESTIONS,
    concurrency: int = DEFAULT_CONCURRENCY,
    registry_url: str | None = None,
    capacity: bool = True,
) -> dict[str, Any]:
    """Run the benchmark (on a stack of its own unless ``registry_url``); its figures.

    ``capacity``: the own stack's agents each accept ``concurrency`` sessions (otherwise
    their cards' capacities hold).
    """
    shown = 0

    def progress(line: str) -> None:
        nonlocal shown
        if " ERROR " in line and shown < 2 * ERRORS_SHOWN:
            shown += 1
            print(line, file=sys.stderr, flush=True)
        elif line.startswith(("starting", "stack", "ingest")):
            print(line, file=sys.stderr, flush=True)
        elif line.startswith("["):
            done = line[1:].partition("/")[0]
            if done.isdigit() and int(done) % PROGRESS_EVERY == 0:
                print(line[:120], file=sys.stderr, flush=True)

    if registry_url is not None:
        settings = CommonSettings()
        redis_url = settings.redis_url
        return await _measure(
            settings,
            registry_url,
            redis_url,
            settings.redis_prefix,
            questions,
            concurrency,
            progress,
            log_dir=None,
        )
    # Every agent takes as many sessions as there are questions in flight: at their card's
    # capacity (writer and critic: 8) the sessions beyond it fail at once ("no healthy
    # instance with free capacity"), which measures the capacity, not the stack under load.
    env = {"SCRIPTORIUM_CAPACITY": str(concurrency)} if capacity else {}
    async with _stack(progress, env) as (settings, url, redis_url, logs):
        result = await _measure(
            settings,
            url,
            redis_url,
            settings.redis_prefix,
            questions,
            concurrency,
            progress,
            log_dir=str(logs),
        )
    result["agent_capacity"] = concurrency if capacity else "as on the cards"
    return result


async def _measure(
    settings: CommonSettings,
    registry_url: str,
    redis_url: str | None,
    prefix: str,
    count: int,
    concurrency: int,
    progress: Progress,
    *,
    log_dir: str | None,
) -> dict[str, Any]:
    async with Peers.over_http(
        settings, caller="bench", registry_url=registry_url, request_timeout_s=TIMEOUT_S
    ) as peers:
        await ingest_corpus(peers, demo_documents(), COLLECTION, settings, progress)

        async def ask(batch: list[DevQuestion], level: int) -> list[Any]:
            return await ask_all(
                batch,
                peers,
                rounds=ROUNDS,
                concurrency=level,
                progress=progress,
                max_tokens=MAX_TOKENS,
                collection=COLLECTION,
            )

        await ask(questions_for(WARM_UP), WARM_UP)  # not counted
        before = await redis_census(redis_url, prefix) if redis_url else None
        load_before = os.getloadavg()
        started = time.perf_counter()
        outcomes = await ask(questions_for(count), concurrency)
        wall = time.perf_counter() - started
        load_after = os.getloadavg()
        after = await redis_census(redis_url, prefix) if redis_url else None

    answers = [o.answer for o in outcomes if o.answer is not None]
    latencies = [o.seconds for o in outcomes if o.answer is not None]
    failed = [o for o in outcomes if o.answer is None]
    p50, p95, p99 = (percentile(latencies, q) for q in (50, 95, 99))
    return {
        "model": "SmolLM2-135M-Instruct",
        "questions": len(outcomes),
        "concurrency": concurrency,
        "max_tokens": MAX_TOKENS,
        "max_rounds": ROUNDS,
        "answered": len(answers),
        "errors": len(failed),
        "error_rate": round(len(failed) / len(outcomes), 4) if outcomes else None,
        "error_details": [o.error for o in failed][:ERRORS_SHOWN],
        "error_kinds": dict(Counter((o.error or "").partition(":")[0] for o in failed)),
        "p50_s": None if p50 is None else round(p50, 2),
        "p95_s": None if p95 is None else round(p95, 2),
        "p99_s": None if p99 is None else round(p99, 2),
        "max_s": round(max(latencies), 2) if latencies else None,
        "answers_per_min": round(len(answers) / wall * 60, 2) if wall > 0 else None,
        "wall_s": round(wall, 1),
        "answer_holds_expected": sum(
            answer_matches(o.answer.text, o.question)
            for o in outcomes
            if o.answer is not None and not o.answer.abstained
        ),
        "redis_keys_before": before["keys"] if before else None,
        "redis_keys_after": after["keys"] if after else None,
        "redis_keys_per_question": round((after["keys"] - before["keys"]) / len(outcomes), 2)
        if before and after and outcomes
        else None,
        "redis": {"before": before, "after": after},
        "retention_s": {
            "task": AgentSettings().task_retention_s,
            "session": RegistrySettings().session_retention_s,
        },
        "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
        "registry_url": registry_url,
        "log_dir": log_dir,
        "targets": {"error_rate": TARGET_ERROR_RATE},
    }
