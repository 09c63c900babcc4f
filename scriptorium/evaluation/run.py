"""``scriptorium eval``: the dev set asked through a running team.

What a run does, in order:

1. start a stack of its own (free ports, a temporary data dir, nothing persisted), or use
   the one at ``--registry-url``;
2. ingest :func:`~scriptorium.corpora.eval_documents` (the dev set's gold and related
   articles plus seeded distractors) into collection ``eval`` through the retriever over A2A,
   in batches under the request size limit (idempotent: a second run adds nothing);
3. ask every question through the orchestrator (skill ``answer``), a few at a time;
4. probe the critic with planted errors (:mod:`scriptorium.evaluation.probes`);
5. score (:mod:`scriptorium.evaluation.scoring`) and report
   (:mod:`scriptorium.evaluation.report`): retrieval, answers, citations, abstention, the
   critic, per round and final.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.retriever.readers import SourceDocument
from agents.scaffold.peers import Peers
from protocol.payloads import AnswerRequest, Critique, IngestReport
from protocol.settings import CommonSettings
from scriptorium.evaluation.devset import DevQuestion, load_devset
from scriptorium.evaluation.probes import Probe, critic_probes, probe_request
from scriptorium.evaluation.report import Outcome, RunInfo, report, save_outcomes
from scriptorium.evaluation.scoring import TOP_K, contains_gold, final_view

#: The collection the dev-set corpus is ingested into.
EVAL_COLLECTION = "eval"
#: Longest wait for the next event of a call (an answer's rounds on a busy CPU).
TIMEOUT_S = 900.0

Progress = Callable[[str], None]


def _stderr(line: str) -> None:
    """The default progress: a line on standard error."""
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class EvalOptions:
    """The options of ``scriptorium eval``."""

    limit: int | None = None
    concurrency: int = 2
    rounds: int = 3
    registry_url: str | None = None
    structured: bool = False
    seed: int = 0
    save_answers: Path | None = None


def select(devset: Sequence[DevQuestion], limit: int | None) -> list[DevQuestion]:
    """The first ``limit`` questions with the kinds in the dev set's proportions.

    Questions are interleaved by their relative position within their kind, so any prefix
    samples every kind in proportion; the dev set order is kept within a kind.
    """
    if limit is None or limit >= len(devset):
        return list(devset)
    sizes = Counter(q.kind for q in devset)
    seen: Counter[str] = Counter()
    keyed = []
    for index, q in enumerate(devset):
        keyed.append(((seen[q.kind] + 0.5) / sizes[q.kind], index, q))
        seen[q.kind] += 1
    return [q for _, _, q in sorted(keyed, key=lambda t: (t[0], t[1]))][: max(0, limit)]


async def ingest_corpus(
    peers: Peers,
    documents: Sequence[SourceDocument],
    collection: str,
    settings: CommonSettings,
    progress: Progress = _stderr,
) -> IngestReport:
    """Ingest ``documents`` inline through the retriever (skill ``ingest``) over A2A."""
    from agents.retriever.library import document_payload
    from scriptorium.inline import ingest_documents

    def batch_done(number: int, batches: int, got: IngestReport) -> None:
        progress(
            f"ingest {number}/{batches}: into {collection!r} ({got.ingested} new, "
            f"{got.unchanged} unchanged, {got.chunks} chunks)"
        )

    return await ingest_documents(
        peers,
        [document_payload(doc) for doc in documents],
        collection,
        max_bytes=settings.max_request_bytes,
        on_batch=batch_done,
    )


@contextlib.asynccontextmanager
async def own_stack(
    name: str, env: dict[str, str] | None = None, progress: Progress = _stderr
) -> AsyncIterator[tuple[CommonSettings, str, Path]]:
    """A whole stack on free ports with a temporary data dir; yields settings, URL, log dir.

    Nothing is persisted; afterwards only the logs are left (their folder is yielded).
    """
    from scriptorium.launcher import Stack

    data_dir = Path(tempfile.mkdtemp(prefix=f"scriptorium-{name}-"))
    settings = CommonSettings(data_dir=data_dir, redis_prefix=f"scriptorium-{name}")
    stack = Stack(settings, ephemeral=True, persist=False, env=env)
    progress(f"starting a stack (vLLM takes ~35 s to load); logs in {stack.log_dir}")
    started = time.perf_counter()
    try:
        await asyncio.to_thread(stack.start)
        await asyncio.to_thread(stack.wait_healthy, 600)
        progress(f"stack healthy after {time.perf_counter() - started:.0f}s: {stack.registry_url}")
        yield stack.settings, stack.registry_url, stack.log_dir  # with its token, if made
    finally:
        await asyncio.to_thread(stack.stop)
        await asyncio.to_thread(_keep_only, data_dir, stack.log_dir)


def _keep_only(folder: Path, kept: Path) -> None:
    """Delete everything in ``folder`` but ``kept``."""
    for child in folder.iterdir():
        if child == kept:
            continue
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


async def ask_all(
    questions: Sequence[DevQuestion],
    peers: Peers,
    *,
    rounds: int,
    concurrency: int,
    progress: Progress = _stderr,
    max_tokens: int = 160,
    collection: str = EVAL_COLLECTION,
) -> list[Outcome]:
    """Ask every question (at most ``concurrency`` at once); failures become outcomes too."""
    from scriptorium.ask import ask

    gate = asyncio.Semaphore(max(1, concurrency))
    done = 0

    async def one(q: DevQuestion) -> Outcome:
        nonlocal done
        request = AnswerRequest(
            question=q.question,
            k=TOP_K,
            max_rounds=rounds,
            max_tokens=max_tokens,
            collection=collection,
        )
        async with gate:
            started = time.perf_counter()
            try:
                answer = await ask(request, peers)
                outcome = Outcome(q, answer=answer, seconds=time.perf_counter() - started)
            except Exception as exc:  # a failed task is a result to count, not a crash
                error = f"{type(exc).__name__}: {exc}"
                outcome = Outcome(q, error=error, seconds=time.perf_counter() - started)
        done += 1
        progress(f"[{done}/{len(questions)}] {_summary(outcome)}")
        return outcome

    return list(await asyncio.gather(*(one(q) for q in questions)))


def _summary(outcome: Outcome) -> str:
    q, answer = outcome.question, outcome.answer
    head = f"{q.id} ({q.kind}) {outcome.seconds:.1f}s"
    if answer is None:
        return f"{head} ERROR {outcome.error}"
    view = final_view(answer)
    state = "abstained" if answer.abstained else "extractive" if answer.extractive else "written"
    match = "-" if q.kind == "unanswerable" else ("gold" if contains_gold(view, q) else "miss")
    return f"{head} {answer.verdict} r{answer.rounds} {state} {match}: {answer.text[:90]!r}"


async def probe_critic(
    outcomes: Sequence[Outcome],
    peers: Peers,
    options: EvalOptions,
    progress: Progress = _stderr,
) -> list[tuple[Probe, Critique | None]]:
    """Send every probe of every answered, answerable question to the critic over A2A
    (``options.concurrency`` at once, probes seeded with ``options.seed``)."""
    probes = [
        probe
        for o in outcomes
        if o.answer is not None and o.question.kind != "unanswerable"
        for probe in critic_probes(o.answer, o.question, options.seed)
    ]
    progress(f"critic: {len(probes)} probes from {len({p.question.id for p in probes})} questions")
    gate = asyncio.Semaphore(max(1, options.concurrency))

    async def one(probe: Probe) -> tuple[Probe, Critique | None]:
        async with gate:
            try:
                critique = await peers.call("critique", probe_request(probe), result=Critique)
            except Exception as exc:  # counted as critic_errors
                progress(f"critic probe {probe.question.id}/{probe.kind} failed: {exc}")
                return probe, None
        return probe, critique

    return list(await asyncio.gather(*(one(p) for p in probes)))


def critic_model() -> dict[str, Any]:
    """When the critic's grounding model in the model cache was trained, and its threshold."""
    from agents.common.grounding.model import model_dir, read_manifest
    from agents.scaffold.settings import AgentSettings

    manifest = read_manifest(model_dir(AgentSettings().resolved_model_cache_dir)) or {}
    return {"created": manifest.get("created"), "threshold": manifest.get("threshold")}


async def evaluate(options: EvalOptions, progress: Progress = _stderr) -> dict[str, Any]:
    """Run the evaluation and return its report."""
    from scriptorium.corpora import eval_documents

    if options.structured and options.registry_url:
        raise ValueError(
            "--structured sets the writer's environment, so it needs a stack of its own: "
            "drop --registry-url (or start that stack with SCRIPTORIUM_WRITER_STRUCTURED=true)"
        )
    started = time.perf_counter()
    devset = load_devset()
    questions = select(devset, options.limit)
    documents = eval_documents(devset)
    info = RunInfo(
        options={
            "limit": options.limit,
            "concurrency": options.concurrency,
            "rounds": options.rounds,
            "structured": options.structured,
            "own_stack": options.registry_url is None,
            "corpus_documents": len(documents),
        }
    )
    async with contextlib.AsyncExitStack() as scope:
        if options.registry_url is None:
            env = {"SCRIPTORIUM_WRITER_STRUCTURED": "true"} if options.structured else {}
            settings, registry_url, log_dir = await scope.enter_async_context(
                own_stack("eval", env, progress)
            )
            info.log_dir = str(log_dir)
            info.options["critic_model"] = critic_model()
        else:
            settings, registry_url = CommonSettings(), options.registry_url
        peers = await scope.enter_async_context(
            Peers.over_http(
                settings, caller="eval", registry_url=registry_url, request_timeout_s=TIMEOUT_S
            )
        )
        ingested = await ingest_corpus(peers, documents, EVAL_COLLECTION, settings, progress)
        info.ingest = ingested.model_dump(exclude={"skipped"}) | {"skipped": len(ingested.skipped)}
        progress(f"asking {len(questions)} questions, {options.concurrency} at a time")
        outcomes = await ask_all(
            questions,
            peers,
            rounds=options.rounds,
            concurrency=options.concurrency,
            progress=progress,
        )
        if options.save_answers is not None:
            await asyncio.to_thread(save_outcomes, outcomes, options.save_answers)
        probes = await probe_critic(outcomes, peers, options, progress)
    info.seconds = time.perf_counter() - started
    return report(outcomes, probes, options.rounds, info)
