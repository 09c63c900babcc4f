"""Where the command line prints: results on stdout, everything else on stderr; and how it fails."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

#: Progress, warnings and errors (stderr), so that stdout carries only results.
console = Console(stderr=True, soft_wrap=True)
#: Results: tables, answers, JSON (stdout).
out = Console()


def fail(message: str, code: int) -> NoReturn:
    """Print one error line and exit with ``code`` (2: the request was refused, 1: otherwise)."""
    console.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)
