"""The report of a run: every metric in one JSON object, its table, and the answers saved."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.payloads import Answer, Critique
from scriptorium.evaluation.devset import DevQuestion
from scriptorium.evaluation.probes import Probe, critic_metrics
from scriptorium.evaluation.scoring import (
    answer_metrics,
    final_view,
    percentile,
    retrieval_metrics,
    round_view,
)


@dataclass
class Outcome:
    """One question asked: its answer, or the error that ended it."""

    question: DevQuestion
    answer: Answer | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class RunInfo:
    """What the report says about the run itself."""

    options: dict[str, Any] = field(default_factory=dict)
    ingest: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    log_dir: str | None = None


def report(
    outcomes: Sequence[Outcome],
    probes: Sequence[tuple[Probe, Critique | None]],
    rounds: int,
    info: RunInfo | None = None,
) -> dict[str, Any]:
    """Every metric of a run (see docs/evaluation.md for the definitions)."""
    answered = [(o.question, o.answer) for o in outcomes if o.answer is not None]
    final = answer_metrics([(q, final_view(a)) for q, a in answered])
    per_round: dict[str, dict[str, Any]] = {
        str(r): answer_metrics([(q, round_view(a, r)) for q, a in answered])
        for r in range(1, rounds + 1)
    }
    per_round["final"] = final
    latencies = [o.seconds for o in outcomes if o.answer is not None]
    p50 = percentile(latencies, 50)
    p90 = percentile(latencies, 90)
    failed = [o for o in outcomes if o.answer is None]
    result: dict[str, Any] = {
        "questions": len(outcomes),
        "questions_by_kind": dict(Counter(o.question.kind for o in outcomes)),
        "answered": len(answered),
        "errors": len(failed),
        "error_details": [{"id": o.question.id, "error": o.error} for o in failed],
        **retrieval_metrics(answered),
        **{k: v for k, v in final.items() if k != "questions"},
        **critic_metrics(probes),
        "rounds_mean": round(statistics.mean(a.rounds for _, a in answered), 3)
        if answered
        else None,
        "latency_p50_s": round(p50, 2) if p50 is not None else None,
        "latency_p90_s": round(p90, 2) if p90 is not None else None,
        "per_round": per_round,
    }
    if info is not None:
        result.update(
            options=info.options,
            ingest=info.ingest,
            seconds=round(info.seconds, 1),
            log_dir=info.log_dir,
        )
    return result


def save_outcomes(outcomes: Sequence[Outcome], path: Path) -> None:
    """One JSON line per question: its id, kind, seconds, and the answer or the error."""
    with path.open("w", encoding="utf-8") as file:
        for o in outcomes:
            record = {
                "id": o.question.id,
                "kind": o.question.kind,
                "seconds": round(o.seconds, 2),
                "error": o.error,
                "answer": o.answer.model_dump(mode="json") if o.answer is not None else None,
            }
            file.write(json.dumps(record) + "\n")


def render(result: dict[str, Any], console: Any) -> None:
    """The headline figures and the per-round table (Rich)."""
    from rich.table import Table

    def show(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    headline = Table(title="evaluation", expand=False)
    headline.add_column("metric")
    headline.add_column("value", justify="right")
    for key, value in result.items():
        if not isinstance(value, dict | list):
            headline.add_row(key, show(value))
    console.print(headline)
    rounds = Table(title="per round (the draft each question had after round r)", expand=False)
    columns = [
        "answer_contains_gold",
        "citation_precision",
        "citation_recall",
        "supported_sentence_rate",
        "accepted_rate",
        "false_abstention_rate",
        "abstained_on_unanswerable",
        "extractive_rate",
    ]
    rounds.add_column("round")
    for column in columns:
        rounds.add_column(column.replace("_", " "), justify="right")
    for name, metrics in result["per_round"].items():
        rounds.add_row(name, *(show(metrics[c]) for c in columns))
    console.print(rounds)
