"""``scriptorium bench e2e``: whole answers through the whole team, at 1, 4 and 8 at once.

A stack of its own (the five agents, vLLM CPU with SmolLM2-135M) ingests the demo corpus
(:func:`scriptorium.corpora.demo_documents`, 48 space-exploration extracts) over A2A; then
:data:`QUESTIONS` are asked through the orchestrator (skill ``answer``, answers capped at
:data:`MAX_TOKENS` tokens) with 1, 4 and 8 requests in flight. Per level: latency
percentiles, throughput, errors, and how much of an answer's time is spent outside the
engine (``(total - engine) / total`` from ``Answer.timings_ms``).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from agents.scaffold.peers import Peers
from protocol.payloads import Answer
from scriptorium.corpora import DEMO_QUESTIONS, demo_documents
from scriptorium.evaluation.devset import DevQuestion, answer_matches
from scriptorium.evaluation.run import (
    TIMEOUT_S,
    Outcome,
    ask_all,
    ingest_corpus,
    own_stack,
    percentile,
)

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

    def quiet(line: str) -> None:
        if "ERROR" in line or line.startswith(("starting", "stack")):
            print(line, file=sys.stderr, flush=True)

    async with (
        own_stack("bench-e2e", progress=quiet) as (settings, registry_url, logs),
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
        "log_dir": log_dir,
        "targets": {"error_rate": 0.01, "overhead_ratio_p50": 0.05},
    }
