"""The table of registered agents (``up``, ``demo``, ``agents``) and ``up``'s live view of it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from scriptorium.terminal import console, out

if TYPE_CHECKING:
    from scriptorium.launcher import Stack


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
        """Read the records again; the table to show."""
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


def watch(stack: Stack, *, live: bool) -> NoReturn:
    """Show ``stack``'s agents, refreshed every second (redrawn only when ``live``), until
    interrupted; raises :class:`~scriptorium.launcher.StackError` when a component exits."""
    view = AgentsView(stack.agents_json)
    with Live(view.refresh(), console=out, auto_refresh=False) as shown:
        while True:
            time.sleep(1.0)
            stack.check_alive()
            table = view.refresh()
            if live:
                shown.update(table, refresh=True)


def _http_reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        body = " ".join(exc.response.text.split())[:160]
        return f"HTTP {exc.response.status_code}: {body}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _epoch_s(value: float) -> float:
    return value / 1000 if value > 1e11 else value
