"""``tracing_cost`` of ``scriptorium bench e2e``: answers per minute with tracing on and off.

The e2e stack runs with :data:`STACK_ENV`: every process has a tracer provider whose spans go
through a ``BatchSpanProcessor`` to the ``discard`` exporter (each batch encoded as OTLP
protobuf, as a real exporter does before sending, then dropped), and samples only requests
that arrive with a sampled ``traceparent``. So, on the same stack and interleaved batch by
batch (off, on, on, off, ...: the machine is shared and noisy):

* ``off``: questions asked without a trace context; no agent records a span;
* ``on``: each question asked under a fresh sampled ``traceparent``; every agent records and
  exports its spans (the whole trace of :mod:`protocol.telemetry`).

Per arm: answers per minute (the figure), and the CPU time the stack's processes (agents,
registry, vLLM, Valkey: this process's descendants) spent per answer, which other jobs on the
machine disturb far less than wall time. ``span_overhead_us`` measures tracing's work per A2A
hop in this process with no provider, unsampled, and recorded and exported. When the stack has
stopped, :func:`finish` adds the spans the agents exported (from their logs) and what they
should cost by that microbenchmark (``estimated_cost``).

``off`` still runs the SDK's sampler for each span: slightly more than a process without a
provider (compare ``no_provider`` and ``unsampled``).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, Tracer

from agents.scaffold.peers import Peers
from protocol import telemetry
from protocol.payloads import AnswerRequest
from scriptorium.evaluation.devset import DevQuestion
from scriptorium.evaluation.scoring import percentile

#: The bench stack's environment: tracing set up everywhere, recording only sampled requests.
STACK_ENV = {"OTEL_TRACES_EXPORTER": "discard", "OTEL_TRACES_SAMPLER": "parentbased_always_off"}
CONCURRENCY = 4
#: Batches per arm (each batch asks every question once), in ABBA order.
BATCHES = 8
TARGET_COST = 0.05
HOPS = 1000  # two spans each: within the batch processor's queue (2048)
REPEATS = 5


async def tracing_cost(
    peers: Peers,
    questions: Sequence[DevQuestion],
    *,
    request: Callable[[DevQuestion], AnswerRequest],
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Throughput (and stack CPU) of the same questions with tracing off and on, interleaved."""
    from scriptorium.ask import ask

    async def batch(traced: bool) -> dict[str, Any]:
        gate = asyncio.Semaphore(CONCURRENCY)
        latencies: list[float] = []

        async def one(question: DevQuestion) -> bool:
            async with gate:
                parent = telemetry.remote_parent(sampled=True) if traced else None
                token = otel_context.attach(parent) if parent is not None else None
                started = time.perf_counter()
                try:
                    await ask(request(question), peers)
                except Exception as exc:  # counted, not fatal
                    progress(f"tracing_cost: {type(exc).__name__}: {exc}")
                    return False
                finally:
                    if token is not None:
                        otel_context.detach(token)
                latencies.append(time.perf_counter() - started)
                return True

        cpu_before = stack_cpu_s()
        started = time.perf_counter()
        done = await asyncio.gather(*(one(q) for q in questions))
        wall = time.perf_counter() - started
        cpu_after = stack_cpu_s()
        cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
        return {"answers": sum(done), "wall": wall, "cpu": cpu, "latencies": latencies}

    batches: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    order = (["off", "on", "on", "off"] * BATCHES)[: 2 * BATCHES]
    for number, arm in enumerate(order, start=1):
        got = await batch(arm == "on")
        batches[arm].append(got)
        progress(
            f"tracing_cost {number}/{len(order)}: {arm}, "
            f"{got['answers'] / got['wall'] * 60:.1f} answers/min"
        )
    return summary(batches, len(questions))


def summary(batches: dict[str, list[dict[str, Any]]], asked: int) -> dict[str, Any]:
    """The figures of both arms' batches."""

    def total(arm: str, key: str) -> float:
        return float(sum(b[key] for b in batches[arm]))

    rate = {arm: total(arm, "answers") / total(arm, "wall") * 60 for arm in batches}
    per_batch = {arm: [b["answers"] / b["wall"] * 60 for b in batches[arm]] for arm in batches}
    pairs = [on / off for off, on in zip(per_batch["off"], per_batch["on"], strict=True)]
    figures: dict[str, Any] = {
        "concurrency": CONCURRENCY,
        "batches_per_arm": BATCHES,
        "answers": {arm: int(total(arm, "answers")) for arm in batches},
        "errors": {arm: asked * len(batches[arm]) - int(total(arm, "answers")) for arm in batches},
        "answers_per_min": {arm: round(r, 2) for arm, r in rate.items()},
        "batch_answers_per_min": {
            arm: [round(r, 1) for r in rates] for arm, rates in per_batch.items()
        },
        "p50_s": {
            arm: _round(percentile([s for b in batches[arm] for s in b["latencies"]], 50))
            for arm in batches
        },
        "ratio": round(rate["on"] / rate["off"], 4),
        "cost": round(1 - rate["on"] / rate["off"], 4),
        "pair_ratios_median_min_max": [
            round(statistics.median(pairs), 4),
            round(min(pairs), 4),
            round(max(pairs), 4),
        ],
        "target_cost": TARGET_COST,
    }
    if all(b["cpu"] is not None for arm in batches for b in batches[arm]):
        cpu = {arm: total(arm, "cpu") / total(arm, "answers") for arm in batches}
        figures["stack_cpu_s_per_answer"] = {arm: round(c, 3) for arm, c in cpu.items()}
        figures["cpu_cost"] = round(cpu["on"] / cpu["off"] - 1, 4)
    figures["span_overhead_us"] = span_overhead_us()
    return figures


def finish(figures: dict[str, Any], log_dir: Path) -> None:
    """Once the stack has stopped: the spans its processes exported, per traced answer, and
    the cost those spans should have by :func:`span_overhead_us` (``estimated_cost``)."""
    spans = exported_spans(log_dir)
    traced = figures["answers"]["on"]
    figures["spans_exported"] = spans
    per_answer = spans / traced if spans and traced else None
    figures["spans_per_traced_answer"] = round(per_answer, 1) if per_answer else None
    overhead = figures["span_overhead_us"]
    cpu = figures.get("stack_cpu_s_per_answer")
    if per_answer and cpu:
        per_span_s = (overhead["recorded"] - overhead["unsampled"]) / 2 / 1e6
        figures["estimated_cost"] = round(per_answer * per_span_s / cpu["off"], 5)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def stack_cpu_s() -> float | None:
    """CPU seconds (user + system) this process's descendants (the stack) have used; None
    without psutil (a dev dependency)."""
    try:
        import psutil
    except ImportError:
        return None
    used = 0.0
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:  # gone meanwhile
            continue
        used += times.user + times.system
    return used


def span_overhead_us(hops: int = HOPS, repeats: int = REPEATS) -> dict[str, float]:
    """Microseconds of tracing work per A2A hop in this process (a client span, the context
    injected and extracted, a server span with a few attributes): with no provider, with a
    provider that samples nothing, and recorded, batched and exported (encoded, dropped).
    The three are measured in turn ``repeats`` times; the least of each is kept."""

    def per_hop(tracer: Tracer, flush: Callable[[], object]) -> float:
        started = time.perf_counter()
        for _ in range(hops):
            with tracer.start_as_current_span(
                "invoke_agent x", kind=SpanKind.CLIENT, attributes={telemetry.SKILL: "x"}
            ):
                carrier = telemetry.inject()
            with tracer.start_as_current_span(
                "invoke_agent x",
                context=telemetry.extract(carrier),
                kind=SpanKind.SERVER,
                attributes={
                    telemetry.SKILL: "x",
                    telemetry.TASK_ID: "t",
                    telemetry.AGENT_NAME: "x",
                },
            ) as span:
                telemetry.annotate({telemetry.TASK_STATE: "TASK_STATE_COMPLETED"}, span)
        flush()
        return (time.perf_counter() - started) / hops * 1e6

    providers = {
        name: TracerProvider(sampler=sampler, shutdown_on_exit=False)
        for name, sampler in (
            ("unsampled", ParentBased(ALWAYS_OFF)),
            ("recorded", ParentBased(ALWAYS_ON)),
        )
    }
    for provider in providers.values():
        provider.add_span_processor(BatchSpanProcessor(telemetry.DiscardExporter()))
    cases: dict[str, tuple[Tracer, Callable[[], object]]] = {
        "no_provider": (telemetry.tracer(), lambda: None),
        **{
            name: (p.get_tracer(telemetry.INSTRUMENTATION), p.force_flush)
            for name, p in providers.items()
        },
    }
    best = {name: float("inf") for name in cases}
    for _ in range(repeats):
        for name, (tracer, flush) in cases.items():
            best[name] = min(best[name], per_hop(tracer, flush))
    for provider in providers.values():
        provider.shutdown()
    return {name: round(us, 2) for name, us in best.items()}


def exported_spans(log_dir: Path) -> int | None:
    """Spans the stack's processes exported, from their ``traces discarded`` log lines."""
    total, found = 0, False
    for log_file in sorted(log_dir.glob("*.log")):
        for line in log_file.read_text(errors="replace").splitlines():
            if '"traces discarded"' not in line:
                continue
            try:
                total += int(json.loads(line)["spans"])
                found = True
            except (ValueError, KeyError, TypeError):
                continue
    return total if found else None
