"""The ``scriptorium`` command line (Typer + Rich)."""

from __future__ import annotations

import asyncio
import json
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
console = Console(stderr=True)
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
        stack.wait_healthy(timeout_s=120)
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
    """Start the whole stack on the embedded defaults, show it healthy, and stop it."""
    configure_logging(as_json=False)
    settings = _settings(base_port, data_dir)
    stack = Stack(settings)
    try:
        with console.status("starting Valkey, the registry and five agents ..."):
            stack.start()
            records = stack.wait_healthy(timeout_s=120)
        out.print(agents_table(records))
        out.print(f"discovery endpoint: {stack.registry_url}/agents")
        response = httpx.get(f"{stack.registry_url}/agents", params={"skill": "answer"}, timeout=5)
        names = [r["name"] for r in response.json()]
        out.print(f"who offers skill 'answer'? {', '.join(names) or 'nobody'}")
    except StackError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
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
) -> None:
    """Run one agent alone (for compose and Kubernetes)."""
    settings = CommonSettings()
    configure_logging(settings.log_level, as_json=settings.log_json)
    if name not in AGENT_NAMES:
        raise typer.BadParameter(f"unknown agent {name!r}; choose one of {', '.join(AGENT_NAMES)}")
    run_agent(name, settings.port_of(name) if port is None else port)


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
def bench(
    name: Annotated[str, typer.Argument(help="registry | a2a-hop")],
    as_json: Annotated[bool, typer.Option("--json", help="Only the JSON line.")] = False,
) -> None:
    """Run a benchmark; the last line printed is one JSON object."""
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
