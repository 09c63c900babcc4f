"""The ``scriptorium`` command line (Typer + Rich): each command parses its options, calls the
module that does the work, and prints. Results go to stdout, progress and errors to stderr."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from protocol.settings import AGENT_NAMES, CommonSettings
from scriptorium.agents_view import agents_table, watch
from scriptorium.bench import help_text as bench_help
from scriptorium.launcher import (
    STACK_START_TIMEOUT_S,
    Stack,
    StackError,
    ignore_signals,
    interrupt_on_signals,
    run_agent,
    run_registry,
)
from scriptorium.logs import configure_logging
from scriptorium.model_commands import critic_app, model_app
from scriptorium.remote import in_process, on_stack, registry_of
from scriptorium.terminal import console, fail, out

if TYPE_CHECKING:
    from agents.scaffold.peers import Peers

app = typer.Typer(
    help="Scriptorium: A2A agents that answer questions with grounded, cited, checked text.",
    no_args_is_help=True,
    add_completion=False,
)
DIRECT_HELP = (
    "Open the store in this process (loads the embedding model; no stack needed) instead of "
    "asking the running retriever."
)
REGISTRY_HELP = "The running stack's discovery endpoint (default: SCRIPTORIUM_REGISTRY_URL)."


def _settings(base_port: int | None, data_dir: Path | None) -> CommonSettings:
    given: dict[str, Any] = {"base_port": base_port, "data_dir": data_dir}
    return CommonSettings(**{key: value for key, value in given.items() if value is not None})


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
    interrupt_on_signals()
    try:
        stack.start()
        console.print(f"registry: {stack.registry_url}   redis: {stack.redis_url}")
        console.print(stack.auth_summary())
        console.print(f"session viewer: {stack.viewer_url}")
        console.print(f"logs: {stack.log_dir}   (Ctrl-C stops everything)")
        healthy = stack.wait_healthy(timeout_s=STACK_START_TIMEOUT_S)
        console.print(f"{len(healthy)} agent(s) healthy; watching the registry")
        watch(stack, live=live)
    except KeyboardInterrupt:
        console.print("stopping ...")
    except StackError as exc:
        fail(str(exc), 1)
    finally:
        ignore_signals()
        stack.stop()
        console.print("stopped; nothing left running.")


@app.command()
def demo(
    base_port: Annotated[int | None, typer.Option(help="Shift every port (default 8700).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where Valkey and logs live.")] = None,
) -> None:
    """Start the stack on embedded defaults, ingest a demo corpus, ask two questions, stop."""
    from scriptorium.demo import run_demo

    configure_logging(as_json=False)
    stack = Stack(_settings(base_port, data_dir))
    try:
        run_demo(stack)
    except StackError as exc:
        fail(str(exc), 1)
    finally:
        stack.stop()
        out.print("stack stopped cleanly.")


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
    from agents.inference.settings import InferenceSettings
    from agents.scaffold.settings import AgentSettings

    settings = CommonSettings()
    configure_logging(settings.log_level, as_json=settings.log_json)
    if name not in AGENT_NAMES:
        raise typer.BadParameter(f"unknown agent {name!r}; choose one of {', '.join(AGENT_NAMES)}")
    if (model or inference_url) and name != "inference":
        raise typer.BadParameter("--model and --inference-url apply to the inference agent only")
    overrides: dict[str, Any] = {} if grpc_port is None else {"grpc_port": grpc_port}
    if model:
        overrides["model"] = model
    if inference_url:
        overrides["inference_url"] = inference_url
    agent_settings = (InferenceSettings if name == "inference" else AgentSettings)(**overrides)
    try:
        run_agent(name, settings.port_of(name) if port is None else port, agent_settings)
    except ModelError as exc:
        fail(str(exc), 2)


app.add_typer(model_app, name="model")
app.add_typer(critic_app, name="critic")


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
    from scriptorium.progress import answer_progress

    configure_logging("WARNING", as_json=False)
    try:
        request = AnswerRequest(question=question, k=k, max_rounds=rounds, collection=collection)
        if not question.strip():
            raise ValueError("empty question: ask something the documents might answer")
    except (ValidationError, ValueError) as exc:
        fail(str(exc), 2)
    with answer_progress(stream=stream, quiet=as_json) as (progress, tokens):
        answer = on_stack(
            registry_url,
            lambda peers: ask_stack(request, peers, on_progress=progress, on_tokens=tokens),
            request_timeout_s=ANSWER_TIMEOUT_S,
        )
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
    from scriptorium.evaluation.report import render
    from scriptorium.evaluation.run import EvalOptions
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
        fail(str(exc), 2 if isinstance(exc, ValueError) else 1)
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

    async def read(peers: Peers) -> list[dict[str, Any]]:
        found = await registry_of(peers).list(skill=skill, tag=tag)
        return [record.model_dump(mode="json") for record in found]

    records = on_stack(registry_url, read)
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
    from scriptorium.replay import sessions_table
    from scriptorium.sessions import parse_span, recent

    try:
        since_s = None if since is None else parse_span(since)
    except ValueError as exc:
        fail(str(exc), 2)
    summaries = on_stack(
        registry_url, lambda peers: recent(peers, state=state, since_s=since_s, limit=limit)
    )
    if as_json:
        out.print_json(json.dumps([summary.model_dump(mode="json") for summary in summaries]))
    else:
        out.print(sessions_table(summaries))


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
    from scriptorium.rerun import diff_view
    from scriptorium.sessions import follow as follow_session
    from scriptorium.sessions import open_recording, rerun_diff, show

    if (session_id is None) == (import_file is None):
        fail("give a session id or --import FILE (not both)", 2)
    if follow:
        if session_id is None:
            fail("--follow needs a session id", 2)
        if on_stack(registry_url, lambda peers: follow_session(peers, session_id)) == 0:
            fail(
                f"no session {session_id!r} in the registry (`scriptorium sessions` lists them)", 2
            )
        return
    recording = open_recording(session_id, import_file, registry_url)
    if rerun or from_step is not None:
        diff = rerun_diff(recording, from_step, registry_url, quiet=as_json)
        if as_json:
            print(diff.model_dump_json(indent=1))
        else:
            out.print(diff_view(diff))
    else:
        show(recording, as_json=as_json, as_jsonl=as_jsonl, speed=speed)


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
    from scriptorium.ingest import ingest_direct, ingest_through, show_totals

    configure_logging("WARNING", as_json=False)
    started = time.perf_counter()
    files = sum(1 for _ in iter_paths(paths))
    if direct:
        from agents.retriever.settings import RetrieverSettings

        totals = in_process(
            lambda settings: ingest_direct(settings, paths, collection, files=files)
        )
        where = f"stored in this process ({RetrieverSettings().store_backend})"
    else:
        from scriptorium.inline import INGEST_TIMEOUT_S

        max_bytes = CommonSettings().max_request_bytes
        totals, url = on_stack(
            registry_url,
            lambda peers: ingest_through(
                peers, paths, collection, files=files, max_bytes=max_bytes
            ),
            request_timeout_s=INGEST_TIMEOUT_S,
        )
        where = f"stored by the retriever at {url}"
    show_totals(totals, collection, time.perf_counter() - started, where)


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
    from scriptorium.search import search_direct, search_through, show_result

    configure_logging("WARNING", as_json=False)
    try:
        request = SearchRequest(query=query, k=k, alpha=alpha, collection=collection)
        if not query.strip():
            raise ValueError("empty query: give the words to search for")
    except (ValidationError, ValueError) as exc:
        fail(str(exc), 2)
    if direct:
        result, empty = in_process(lambda settings: search_direct(settings, request))
    else:
        result, empty = on_stack(registry_url, lambda peers: search_through(peers, request))
    show_result(result, collection, empty=empty, as_json=as_json)


@app.command(help=bench_help())
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
    from scriptorium.bench import BENCHMARKS

    benchmark = BENCHMARKS.get(name)
    if benchmark is None:
        raise typer.BadParameter(
            f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}"
        )
    given = {"questions": questions, "concurrency": concurrency, "registry_url": registry_url}
    options = {key: value for key, value in given.items() if value is not None}
    refused = benchmark.refused(options)
    if refused:
        flags = ", ".join("--" + key.replace("_", "-") for key in refused)
        raise typer.BadParameter(f"benchmark {name!r} takes no {flags}")
    configure_logging("WARNING", as_json=False)
    if not as_json:
        console.print(f"running benchmark {name!r} ...")
    print(json.dumps(asyncio.run(benchmark.run(**options))))


if __name__ == "__main__":
    app()
