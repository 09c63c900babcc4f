"""``scriptorium bench e2e``: whole answers through the whole team, at 1, 4 and 8 at once.

A stack of its own (the five agents, vLLM CPU with SmolLM2-135M) ingests the demo corpus
(:func:`scriptorium.corpora.demo_documents`, 48 space-exploration extracts) over A2A; then
:data:`QUESTIONS` are asked through the orchestrator (skill ``answer``, answers capped at
:data:`MAX_TOKENS` tokens) with 1, 4 and 8 requests in flight. Per level: latency
percentiles, throughput, errors, and how much of an answer's time is spent outside the
engine (``(total - engine) / total`` from ``Answer.timings_ms``).

Then each entry of :data:`FIGURES` measures one more figure on the same stack and adds it
under its own key: ``tracing_cost`` (:mod:`scriptorium.bench.tracing`) compares throughput
with tracing on and off, ``replay_ms`` times reading and rendering the longest session's
timeline from the registry (what ``scriptorium replay ID`` does). The stack runs with
tracing set up in every process but records only requests that arrive sampled
(:data:`~scriptorium.bench.tracing.STACK_ENV`), so the levels above are measured untraced.
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from agents.scaffold.peers import Peers
from protocol.payloads import Answer, AnswerRequest
from protocol.settings import CommonSettings
from registry.client import RegistryClient
from scriptorium.bench import tracing
from scriptorium.corpora import DEMO_QUESTIONS, demo_documents
from scriptorium.evaluation.devset import DevQuestion, answer_matches
from scriptorium.evaluation.report import Outcome
from scriptorium.evaluation.run import TIMEOUT_S, ask_all, ingest_corpus, own_stack
from scriptorium.evaluation.scoring import TOP_K, percentile
from scriptorium.replay import read_recording, timeline_table

COLLECTION = "demo"
MAX_TOKENS = 64
ROUNDS = 3
LEVELS = (1, 4, 8)
#: Requests per level: every question once at c = 1, twice at 4 and 8 (enough to fill them).
REPEATS = {1: 1, 4: 2, 8: 2}

#: Demo-corpus questions and a short answer each (to report how many answers hold it).
QUESTIONS: tuple[tuple[str, str], ...] = (
    (DEMO_QUESTIONS[0], "1957"),
    (DEMO_QUESTIONS[1], "Tereshkova"),
    ("Where is the headquarters of the European Space Agency?", "Paris"),
    ("In which year was the Hubble Space Telescope launched?", "1990"),
    ("Who was the commander of the Apollo 11 mission?", "Armstrong"),
    ("When did Robert H. Goddard launch the first liquid-fueled rocket?", "1926"),
    ("How many years does Neptune take to orbit the Sun?", "164.8"),
    ("From which cosmodrome was Yuri Gagarin launched?", "Baikonur"),
)


@dataclass
class E2EStack:
    """What a figure of :data:`FIGURES` works with: the running stack (corpus ingested, warmed
    up), a client of it, and the benchmark's questions."""

    settings: CommonSettings
    registry_url: str
    log_dir: Path
    peers: Peers
    questions: list[DevQuestion]
    progress: Callable[[str], None]

    def request(self, question: DevQuestion) -> AnswerRequest:
        """The request every figure asks ``question`` with (the levels' settings)."""
        return AnswerRequest(
            question=question.question,
            k=TOP_K,
            max_rounds=ROUNDS,
            max_tokens=MAX_TOKENS,
            collection=COLLECTION,
        )


Figure = Callable[[E2EStack], Awaitable[dict[str, Any]]]


async def tracing_cost(stack: E2EStack) -> dict[str, Any]:
    """Answers per minute with tracing on against off, interleaved (``tracing_cost``)."""
    return await tracing.tracing_cost(
        stack.peers, stack.questions, request=stack.request, progress=stack.progress
    )


async def replay_ms(stack: E2EStack) -> dict[str, Any]:
    """How long ``scriptorium replay ID`` takes to read a session with the most rounds the
    questions give (3 when a question needs every round) from the registry and render its
    timeline: p50/p95 over :data:`REPLAY_REPEATS` reads (``replay_ms``; target <= 200 ms)."""
    directory = stack.peers.directory
    if not isinstance(directory, RegistryClient):
        raise TypeError("replay_ms reads through the registry's HTTP API")
    longest: Answer | None = None
    for question in stack.questions[:REPLAY_CANDIDATES]:
        answer = await stack.peers.call("answer", stack.request(question), result=Answer)
        if longest is None or answer.rounds > longest.rounds:
            longest = answer
        if longest.rounds >= ROUNDS:
            break
    assert longest is not None
    timings: list[float] = []
    events = 0
    for _ in range(REPLAY_REPEATS):
        started = time.perf_counter()
        recording = await read_recording(directory, longest.session_id)
        assert recording is not None
        Console(file=io.StringIO(), width=200).print(timeline_table(recording))
        timings.append((time.perf_counter() - started) * 1000)
        events = len(recording.events)
    return {
        "rounds": longest.rounds,
        "events": events,
        "p50_ms": _round(percentile(timings, 50), 1),
        "p95_ms": _round(percentile(timings, 95), 1),
        "target_ms": 200,
    }


#: Figures measured on the stack after the levels, each under its key in the JSON. To add one,
#: write ``async def figure(stack: E2EStack) -> dict`` and list it here.
FIGURES: dict[str, Figure] = {"tracing_cost": tracing_cost, "replay_ms": replay_ms}
#: Questions tried for a session with every round, and reads of it timed.
REPLAY_CANDIDATES = 4
REPLAY_REPEATS = 20


def _overhead(answer: Answer) -> float | None:
    total = answer.timings_ms.get("total", 0.0)
    engine = answer.timings_ms.get("engine", 0.0)
    return (total - engine) / total if total > 0 else None


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


async def run() -> dict[str, Any]:
    """Run the benchmark and return its figures."""
    devset = [
        DevQuestion(id=f"e2e-{n}", question=q, kind="single", gold_documents=["-"], answers=[a])
        for n, (q, a) in enumerate(QUESTIONS, start=1)
    ]
    levels: dict[str, dict[str, Any]] = {}
    every: list[Answer] = []
    errors = requests = 0
    log_dir = ""
    figures: dict[str, dict[str, Any]] = {}

    def quiet(line: str) -> None:
        if "ERROR" in line or line.startswith(("starting", "stack")):
            print(line, file=sys.stderr, flush=True)

    async with (
        own_stack("bench-e2e", env=tracing.STACK_ENV, progress=quiet) as (
            settings,
            registry_url,
            logs,
        ),
        Peers.over_http(
            settings, caller="bench", registry_url=registry_url, request_timeout_s=TIMEOUT_S
        ) as peers,
    ):
        log_dir = str(logs)
        await ingest_corpus(peers, demo_documents(), COLLECTION, settings, quiet)

        async def ask(questions: list[DevQuestion], level: int) -> list[Outcome]:
            return await ask_all(
                questions,
                peers,
                rounds=ROUNDS,
                concurrency=level,
                progress=quiet,
                max_tokens=MAX_TOKENS,
                collection=COLLECTION,
            )

        await ask(devset[:2], 2)  # warm-up, not counted
        for level in LEVELS:
            batch = devset * REPEATS[level]
            started = time.perf_counter()
            outcomes = await ask(batch, level)
            wall = time.perf_counter() - started
            answers = [o.answer for o in outcomes if o.answer is not None]
            latencies = [o.seconds for o in outcomes if o.answer is not None]
            overheads = [r for r in map(_overhead, answers) if r is not None]
            timings = {
                part: _round(
                    statistics.median(a.timings_ms.get(part, 0.0) for a in answers) / 1000, 2
                )
                if answers
                else None
                for part in ("retrieve", "write", "critique", "engine", "total")
            }
            levels[str(level)] = {
                "requests": len(outcomes),
                "errors": len(outcomes) - len(answers),
                "error_details": [o.error for o in outcomes if o.answer is None][:5],
                "p50_s": _round(percentile(latencies, 50), 2),
                "p95_s": _round(percentile(latencies, 95), 2),
                "answers_per_min": round(len(answers) / wall * 60, 2),
                "overhead_ratio_p50": _round(percentile(overheads, 50)),
                "timings_p50_s": timings,
                "rounds_mean": _round(statistics.mean(a.rounds for a in answers))
                if answers
                else None,
                "answer_holds_expected": sum(
                    answer_matches(o.answer.text, o.question)
                    for o in outcomes
                    if o.answer is not None and not o.answer.abstained
                ),
            }
            every.extend(answers)
            errors += len(outcomes) - len(answers)
            requests += len(outcomes)
        stack = E2EStack(settings, registry_url, logs, peers, devset, quiet)
        for name, figure in FIGURES.items():
            figures[name] = await figure(stack)
    if "tracing_cost" in figures:  # the agents log what they exported as they stop
        tracing.finish(figures["tracing_cost"], Path(log_dir))
    overheads = [r for r in map(_overhead, every) if r is not None]
    return {
        "model": "SmolLM2-135M-Instruct",
        "questions": len(QUESTIONS),
        "max_tokens": MAX_TOKENS,
        "max_rounds": ROUNDS,
        "p50_s": {k: v["p50_s"] for k, v in levels.items()},
        "p95_s": {k: v["p95_s"] for k, v in levels.items()},
        "answers_per_min": {k: v["answers_per_min"] for k, v in levels.items()},
        "requests": requests,
        "errors": errors,
        "error_rate": round(errors / requests, 4) if requests else None,
        "overhead_ratio_p50": {
            **{k: v["overhead_ratio_p50"] for k, v in levels.items()},
            "all": _round(percentile(overheads, 50)),
        },
        "rounds_mean": _round(statistics.mean(a.rounds for a in every)) if every else None,
        "accepted_rate": _round(sum(a.verdict == "accept" for a in every) / len(every))
        if every
        else None,
        "extractive_rate": _round(sum(a.extractive for a in every) / len(every)) if every else None,
        "levels": levels,
        **figures,
        "log_dir": log_dir,
        "targets": {
            "error_rate": 0.01,
            "overhead_ratio_p50": 0.05,
            "tracing_cost": tracing.TARGET_COST,
        },
    }
